"""Architectures written once as graphs: the float executor gives exactly the numbers of
the layer code (MiniLM, bert-tiny, gpt-tiny), grouped-query attention equals attention
over repeated KV heads, and a malformed graph is refused."""

import numpy as np
import pytest

from serrano.sw.models import layers as L, minilm, synthetic
from serrano.sw.nn import archs, float_exec
from serrano.sw.nn.graph import Graph


def test_bert_tiny_graph_equals_layer_code():
    w, shape = synthetic.bert_tiny(0)
    x = synthetic.random_inputs(shape, 12, seed=3, batch=2)
    mask = np.ones((2, 12), np.int64)
    mask[1, 7:] = 0                                       # the second sequence is padded
    out = float_exec.run(archs.bert_encoder(shape, 1), archs.bert_params([w]),
                         {"x": x, "mask": mask})
    np.testing.assert_array_equal(out["blk.0.y"], L.encoder_layer(x, w, shape, mask))


def test_minilm_graph_equals_its_forward():
    model = minilm.load_minilm()
    ids, mask = minilm.tokenize(model, ["A short one.", "A longer sentence, with a comma."])
    ref = minilm.forward_ids(model, ids, mask, 6)
    g = archs.bert_encoder(model.shape, 6, eps=model.eps)
    out = float_exec.run(g, archs.bert_params(model.layers),
                         {"x": minilm.embed(model, ids), "mask": mask})
    np.testing.assert_array_equal(out["blk.5.y"], ref["hidden_states"][6])


def test_gpt_tiny_graph_prefill_and_decode_equal_layer_code():
    w, shape = synthetic.gpt_tiny(0)
    x = synthetic.random_inputs(shape, 9, seed=4)
    g = archs.gpt_decoder(shape, 1)
    params = archs.gpt_params([w])
    state = {}
    pre = float_exec.run(g, params, {"x": x[:8]}, state)["blk.0.y"]
    dec = float_exec.run(g, params, {"x": x[8:]}, state)["blk.0.y"]
    ref_pre, cache = L.decoder_prefill(x[:8], w, shape)
    ref_dec, cache = L.decoder_decode(x[8], w, shape, cache)
    np.testing.assert_array_equal(pre, ref_pre)
    np.testing.assert_array_equal(dec[0], ref_dec)
    np.testing.assert_array_equal(state["blk.0.k"], cache[0])


@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_attention_equals_repeated_heads(rng, causal):
    q = rng.standard_normal((6, 5, 8)).astype(np.float32)       # 6 query heads
    k = rng.standard_normal((2, 7, 8)).astype(np.float32)       # 2 KV heads, groups of 3
    v = rng.standard_normal((2, 7, 8)).astype(np.float32)
    p = float_exec._softmax(float_exec._scores(q, k, 3), None, causal)
    got = float_exec._context(p, v, 3)
    bias = L.causal_bias(5, 7) if causal else None
    want = L.attention(q, np.repeat(k, 3, axis=0), np.repeat(v, 3, axis=0), bias)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_graph_refuses_malformed_nodes():
    g = Graph("t")
    x = g.input("x")
    with pytest.raises(ValueError, match="unknown op 'conv'"):
        g.add("conv", "y", x)
    with pytest.raises(ValueError, match="reads 'z', defined nowhere before it"):
        g.add("gelu", "y", "z")
    with pytest.raises(ValueError, match="takes attributes"):
        g.add("linear", "y", x)
    g.add("gelu", "y", x)
    with pytest.raises(ValueError, match="value 'y' defined twice"):
        g.add("silu", "y", x)
    with pytest.raises(KeyError, match="input 'x' is not fed"):
        float_exec.run(g, {}, {})
    g2 = Graph("t2")
    g2.add("linear", "y", g2.input("x"), w="missing")
    g2.output("y")
    with pytest.raises(KeyError, match="parameter 'missing' is missing"):
        float_exec.run(g2, {}, {"x": np.zeros((1, 2), np.float32)})


def test_llama_graph_names_every_parameter_once():
    from serrano.sw.models import llama as LM
    model = LM.llama_tiny(1)
    g = archs.llama(model.shape)
    assert sorted(g.params()) == sorted(archs.llama_params(model))
    assert g.outputs == ["logits"]
