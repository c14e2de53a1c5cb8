"""The architectures, each written once as a :class:`sw.nn.graph.Graph`.

* :func:`bert_encoder`: BERT-style post-LN encoder layers (MiniLM, bert-tiny) from
  embeddings made on the host, with a padding mask;
* :func:`gpt_decoder`: GPT-style pre-LN decoder layers (gpt-tiny), causal, with a KV cache;
* :func:`llama`: Llama-style decoders (SmolLM2, llama-tiny): token embedding, RMSNorm,
  rotary embeddings, grouped-query attention with a KV cache, SwiGLU, the LM head.

Each ``*_params`` function names a model's weights as its graph does. The same graph
runs on the float executor (:mod:`sw.nn.float_exec`) and, next, on a device executor.
"""

import numpy as np

from .graph import Graph

__all__ = ["bert_encoder", "bert_params", "gpt_decoder", "gpt_params", "llama",
           "llama_params"]


def _attention_block(g, p, x_in, heads, *, kv_heads=None, bias=True, causal, mask=None,
                     rope_base=None, pos=None, cache=False):
    """Q, K, V projections, (rotary), (cache), attention, merge, output projection."""
    kv_heads = kv_heads or heads
    lin = (lambda name, x, w: g.add("linear", name, x, w=p + w, b=p + "b" + w[1:])
           if bias else g.add("linear", name, x, w=p + w))
    q = g.add("split_heads", p + "q", lin(p + "q_proj", x_in, "wq"), heads=heads)
    k = g.add("split_heads", p + "k", lin(p + "k_proj", x_in, "wk"), heads=kv_heads)
    v = g.add("split_heads", p + "v", lin(p + "v_proj", x_in, "wv"), heads=kv_heads)
    if rope_base is not None:
        q = g.add("rope", p + "q_rot", q, pos, base=rope_base)
        k = g.add("rope", p + "k_rot", k, pos, base=rope_base)
    if cache:
        k = g.add("kv_append", p + "k_all", k, slot=p + "k")
        v = g.add("kv_append", p + "v_all", v, slot=p + "v")
    group = heads // kv_heads
    s = g.add("scores", p + "scores", q, k, group=group)
    pr = g.add("softmax", p + "probs", s, *((mask,) if mask else ()), causal=causal)
    ctx = g.add("context", p + "ctx_heads", pr, v, group=group)
    return lin(p + "attn_out", g.add("merge_heads", p + "ctx", ctx), "wo")


def bert_encoder(shape, layers, eps=1e-12):
    """``layers`` BERT encoder layers: ``h = LN(x + attn(x)); y = LN(h + ffn(h))``.
    Inputs ``x`` (embeddings) and ``mask``; output ``y``."""
    g = Graph("bert-encoder")
    x = g.input("x")
    mask = g.input("mask")
    for i in range(layers):
        p = f"blk.{i}."
        a = _attention_block(g, p, x, shape.heads, causal=False, mask=mask)
        h = g.add("layernorm", p + "h", g.add("add", p + "res1", x, a),
                  g=p + "ln1_g", b=p + "ln1_b", eps=eps)
        f = g.add("linear", p + "ffn_up", h, w=p + "w1", b=p + "b1")
        f = g.add("linear", p + "ffn_down", g.add("gelu", p + "ffn_act", f), w=p + "w2",
                  b=p + "b2")
        x = g.add("layernorm", p + "y", g.add("add", p + "res2", h, f), g=p + "ln2_g",
                  b=p + "ln2_b", eps=eps)
    g.output(x)
    return g


def gpt_decoder(shape, layers, eps=1e-5, *, vocab=None):
    """``layers`` GPT decoder layers: ``h = x + attn(LN1(x)); y = h + ffn(LN2(h))``,
    causal over the cache and the new positions. Input ``x``; output ``y``. With
    ``vocab``, a language model: input token ``ids`` through ``tok_embd``, output the
    ``logits`` of a final LayerNorm (``out_g``, ``out_b``) and the tied head
    ``lm_head``."""
    g = Graph("gpt-decoder")
    x = (g.add("embed", "embed", g.input("ids"), table="tok_embd") if vocab
         else g.input("x"))
    for i in range(layers):
        p = f"blk.{i}."
        n1 = g.add("layernorm", p + "ln1", x, g=p + "ln1_g", b=p + "ln1_b", eps=eps)
        a = _attention_block(g, p, n1, shape.heads, causal=True, cache=True)
        h = g.add("add", p + "h", x, a)
        n2 = g.add("layernorm", p + "ln2", h, g=p + "ln2_g", b=p + "ln2_b", eps=eps)
        f = g.add("linear", p + "ffn_up", n2, w=p + "w1", b=p + "b1")
        f = g.add("linear", p + "ffn_down", g.add("gelu", p + "ffn_act", f), w=p + "w2",
                  b=p + "b2")
        x = g.add("add", p + "y", h, f)
    if vocab:
        n = g.add("layernorm", "out_norm", x, g="out_g", b="out_b", eps=eps)
        x = g.add("linear", "logits", n, w="lm_head")
    g.output(x)
    return g


def llama(shape):
    """The whole Llama model: ``ids`` and ``pos`` in, ``logits`` of every position out."""
    g = Graph("llama")
    ids = g.input("ids")
    pos = g.input("pos")
    x = g.add("embed", "embed", ids, table="tok_embd")
    for i in range(shape.layers):
        p = f"blk.{i}."
        n1 = g.add("rmsnorm", p + "attn_in", x, g=p + "attn_norm", eps=shape.eps)
        a = _attention_block(g, p, n1, shape.heads, kv_heads=shape.kv_heads, bias=False,
                             causal=True, cache=True, rope_base=shape.rope_base, pos=pos)
        h = g.add("add", p + "h", x, a)
        n2 = g.add("rmsnorm", p + "ffn_in", h, g=p + "ffn_norm", eps=shape.eps)
        gate = g.add("silu", p + "gate_act", g.add("linear", p + "gate", n2, w=p + "w_gate"))
        up = g.add("linear", p + "up", n2, w=p + "w_up")
        f = g.add("linear", p + "ffn_down", g.add("mul", p + "swiglu", gate, up),
                  w=p + "w_down")
        x = g.add("add", p + "y", h, f)
    n = g.add("rmsnorm", "out_norm", x, g="output_norm", eps=shape.eps)
    g.output(g.add("linear", "logits", n, w="lm_head"))
    return g


def _layer_params(layers, names):
    out = {}
    for i, w in enumerate(layers):
        for name in names:
            out[f"blk.{i}.{name}"] = getattr(w, name)
    return out


_BERT_FIELDS = ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo", "ln1_g", "ln1_b", "w1", "b1",
                "w2", "b2", "ln2_g", "ln2_b")


def bert_params(layers):
    """Parameters of :func:`bert_encoder` from :class:`sw.models.layers.EncoderWeights`."""
    return _layer_params(layers, _BERT_FIELDS)


def gpt_params(layers, tok_embd=None):
    """Parameters of :func:`gpt_decoder` from :class:`sw.models.layers.DecoderWeights`
    (and, for the language model, its ``vocab x hidden`` token embedding, tied to the
    head, with a unit final LayerNorm)."""
    out = _layer_params(layers, _BERT_FIELDS)
    if tok_embd is not None:
        hidden = tok_embd.shape[1]
        out.update(tok_embd=tok_embd, lm_head=np.ascontiguousarray(tok_embd.T),
                   out_g=np.ones(hidden, np.float32), out_b=np.zeros(hidden, np.float32))
    return out


def llama_params(model):
    """Parameters of :func:`llama` from a :class:`sw.models.llama.Llama`."""
    out = _layer_params(model.layers, ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm",
                                       "w_gate", "w_up", "w_down"))
    out.update(tok_embd=model.tok_embd, output_norm=model.output_norm,
               lm_head=model.lm_head())
    return out
