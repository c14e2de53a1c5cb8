"""The driver: quantized transformer layers on every backend, and the tiler's properties."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from serrano.hw import isa
from serrano.hw.config import PRESETS, get_preset
from serrano.sw import compiler, golden, isa_model, requant
from serrano.sw import transformer as T
from tests.conftest import require_simulator
from serrano.sw.models import layers as L, synthetic
from serrano.sw.run import cosine, run_model
from serrano.sw.runtime import Device

TINY = get_preset("tiny")


def test_bert_tiny_accuracy_on_golden():
    r = run_model(TINY, "bert-tiny", "golden", host_ops=True)
    assert r["cosine_vs_float"] > 0.999
    assert r["host_round_trips"] == 6            # QKV, scores, context, output, up, down
    assert r["bit_exact_vs_golden"] is None


def test_gpt_tiny_decode_agrees_with_longer_prefill():
    """The KV cache is right: decoding token S after a prefill of S tokens gives what a
    prefill of S + 1 tokens gives at its last position, on the accelerator path."""
    w, shape = synthetic.gpt_tiny(0)
    samples = [synthetic.random_inputs(shape, 9, seed=100 + s) for s in range(3)]
    q = T.calibrate_decoder(w, shape, samples)
    x = synthetic.random_inputs(shape, 9, seed=7)
    dev = Device(TINY, "golden")
    _, cache = T.decoder_prefill(dev, q, x[:8])
    y_dec, cache2 = T.decoder_decode(dev, q, x[8], cache)
    y_pre, _ = T.decoder_prefill(dev, q, x)
    # Same int8 arithmetic on the same positions: identical, not merely close.
    np.testing.assert_array_equal(y_dec[0], y_pre[8])
    np.testing.assert_array_equal(cache2.k, T.decoder_prefill(dev, q, x)[1].k)
    ref_pre, ref_cache = L.decoder_prefill(x[:8], w, shape)
    ref_dec, _ = L.decoder_decode(x[8], w, shape, ref_cache)
    assert cosine(y_dec, ref_dec) > 0.99


@pytest.mark.parametrize("model", ["bert-tiny", "gpt-tiny"])
def test_tiny_models_bit_exact_on_rtl(simulator, model):
    r = run_model(TINY, model, simulator, seq=8, host_ops=True)
    assert r["bit_exact_vs_golden"] is True
    g = run_model(TINY, model, "golden", seq=8, host_ops=True)
    assert r["cosine_vs_float"] == g["cosine_vs_float"]       # the very same numbers
    assert r["cycles"] > 0 and r["macs"] == g["macs"]
    assert len(r["per_op"]) == r["host_round_trips"]


def test_minilm_per_layer_readouts_on_golden():
    r = run_model(get_preset("default"), "minilm", "golden", layers=2, per_layer=True)
    assert min(r["cosine_per_layer"]) > 0.99 and len(r["cosine_per_layer"]) == 2
    assert len(r["texts"]) == 8 and r["layers"] == 2
    # Without per_layer the program reads out the last layer alone: the same outputs.
    alone = run_model(get_preset("default"), "minilm", "golden", layers=2)
    assert alone["cosine_per_layer"] is None
    assert alone["cosine_per_text"] == r["cosine_per_text"]


def test_minilm_on_rtl_short_sequence():
    """A real MiniLM layer on the 16 x 16 RTL, every op on the chip in one program, bit
    for bit as the golden model (Verilator: on the 4 x 4 array, or under Icarus, one
    layer takes minutes of simulation)."""
    from tests.conftest import require_simulator, selected_simulators
    if "verilator" not in selected_simulators():
        pytest.skip("SIM excludes verilator")
    require_simulator("verilator")
    r = run_model(get_preset("default"), "minilm", "verilator", layers=1,
                  text="A short sentence.", per_layer=True)
    assert r["bit_exact_vs_golden"] is True and r["cosine_per_layer"][0] > 0.98
    assert r["ops"] == "chip" and r["host_round_trips"] == 1


_WORDS = ("The committee met on a rainy Tuesday to decide, after much debate, whether the "
          "old stone bridge over the river should be repaired or replaced by 2027.").split()


@pytest.mark.parametrize("words", [1, 2, 4, 9, 33, 90, 200])
def test_minilm_every_length_on_golden(words):
    """The host-ops path: a sentence embedding within cosine 0.995 of float after six
    layers for every sentence, one word to 256 tokens (sentences built from repeats of
    one text)."""
    text = " ".join((_WORDS * 20)[:words])
    r = run_model(get_preset("default"), "minilm", "golden", text=text, host_ops=True)
    assert 1 <= r["tokens"][0] <= 256
    assert r["cosine_vs_float"] >= 0.995, (r["tokens"], r["cosine_per_text"])


def test_minilm_six_layers_embedding_on_golden():
    """The target: at least 0.99 cosine for the sentence embedding after six layers, every
    op on the chip, the 8 sentences in one program (one host round trip)."""
    r = run_model(get_preset("default"), "minilm", "golden", layers=6)
    assert len(r["texts"]) == 8
    assert r["ops"] == "chip" and r["host_round_trips"] == 1
    assert r["cosine_vs_float"] >= 0.99, r["cosine_per_text"]
    emb = np.array(r["embedding"])
    assert emb.shape == (384,) and abs(np.linalg.norm(emb) - 1) < 1e-5


@pytest.mark.parametrize("argv, message", [
    (["--model", "gpt-9"], "unknown model 'gpt-9'"),
    (["--model", "bert-tiny", "--backend", "vcs"], "unknown backend 'vcs'"),
    (["--model", "minilm", "--seq", "4", "--text", "a sentence with more than four tokens"],
     "longer than max_seq=4"),
    (["--model", "minilm", "--seq", "600"], "max_seq must be an integer in [2, 512]"),
    (["--model", "bert-tiny", "--per-layer"], "--per-layer is for minilm"),
    (["--model", "bert-tiny", "--preset", "huge"], "unknown preset 'huge'"),
])
def test_run_bad_input_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "run", *argv],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_shapes_that_do_not_divide_into_heads():
    with pytest.raises(ValueError, match="does not divide into 3 heads"):
        L.LayerShape(hidden=64, heads=3, ffn=128)


def test_nan_weights_rejected():
    w, shape = synthetic.bert_tiny(0)
    w.w1[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        T.calibrate_encoder(w, shape, [(synthetic.random_inputs(shape, 4), None)])


def test_run_json_keys(capsys):
    from serrano.sw.cli import main
    assert main(["run", "--model", "bert-tiny", "--backend", "golden", "--preset", "tiny",
                 "--host-ops", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("model", "ops", "layers", "seq", "backend", "preset", "bit_exact_vs_golden",
                "cosine_vs_float", "cycles", "macs", "mac_utilization", "dma_read_bytes",
                "dma_write_bytes", "host_round_trips", "sim_wall_s", "per_op"):
        assert key in r
    assert all({"name", "cycles", "macs"} <= set(op) for op in r["per_op"])
    assert r["tokens_processed"] == r["seq"] and r["joules_per_token"] is None  # untimed


def test_run_reports_energy_per_token():
    """On a cycle-counting backend ``serrano run`` gives the energy model's estimate of
    its calls, in all and per token processed (gpt-tiny: the prefill and one decode)."""
    require_simulator("verilator")
    from serrano.sw import energy
    from serrano.sw.run import run_model_on
    r, dev = run_model_on(get_preset("tiny"), "gpt-tiny", "verilator", seq=8)
    with dev:
        want = energy.calls_estimate(dev.cfg, dev.calls, 9)
    assert r["tokens_processed"] == 9
    assert r["energy"]["total_j"] == want["total_j"] > 0
    assert r["joules_per_token"] == want["total_j"] / 9
    assert r["energy"]["host_round_trips"] == r["host_round_trips"]


# ---- the tiler --------------------------------------------------------------------------------

def test_requested_block_larger_than_half_the_buffer_is_lowered():
    """A requested M-block whose rows overflow half the activation buffer would let the
    next block's loads overwrite rows still in use (a race the model finds); the
    compiler lowers it to the half-buffer limit (found by the property test below)."""
    cfg = get_preset("tiny")
    kt = -(-69 // cfg.rows)
    assert 33 * kt > cfg.act_buf_rows // 2 and 34 * kt <= cfg.act_buf_rows
    assert compiler.choose_block(cfg, 34, 69, 33) == (cfg.act_buf_rows // 2) // kt
    assert compiler.choose_block(cfg, 34, 69, 34) == compiler.choose_block(cfg, 34, 69) == 34
    rng = np.random.default_rng(0)
    a, w = rng.integers(-128, 128, (34, 69)), rng.integers(-128, 128, (69, 44))
    params = (np.zeros(44, np.int64), np.full(44, 1 << 20), np.full(44, 24))
    lay = compiler.compile_gemm(cfg, a, w, *params, block=33)
    res = isa_model.run_program(cfg, lay.image, lay.prog_addr, lay.prog_len)  # no race
    np.testing.assert_array_equal(lay.output(res.mem, cfg),
                                  requant.requantize(golden.matmul(a, w), *params))


@settings(max_examples=25, deadline=None)
@given(preset=st.sampled_from(sorted(PRESETS)), m=st.integers(1, 40), k=st.integers(1, 70),
       n=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_tiler_properties(preset, m, k, n, seed):
    """Every output element written exactly once with the right value, buffers never
    overflowed (the golden model checks every range), tokens balanced, no race."""
    cfg = get_preset(preset)
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    bias = rng.integers(-50, 50, n)
    mult = rng.integers(1, 2**20, n)
    shift = rng.integers(10, 30, n)
    block = int(rng.integers(1, m + 1)) if rng.random() < 0.5 else None
    layout = compiler.compile_gemm(cfg, a, w, bias, mult, shift, block=block)
    # Mark the output region so an element never written would show.
    image = layout.image.copy()
    image[layout.y_addr:layout.y_addr + layout.y_bytes] = 0xA5
    res = isa_model.run_program(cfg, image, layout.prog_addr, layout.prog_len)
    assert res.error == isa.Error.NONE
    assert all(v == 0 for v in res.tokens.values())
    expect = requant.requantize(golden.matmul(a, w), bias, mult, shift)
    np.testing.assert_array_equal(layout.output(res.mem, cfg), expect)
    # Nothing outside the output region changed.
    outside = np.ones(len(image), bool)
    outside[layout.y_addr:layout.y_addr + layout.y_bytes] = False
    np.testing.assert_array_equal(res.mem[outside], image[outside])
    # Each output element is written once: the stores cover the region exactly once.
    stores = [op for op in res.ops if op["op"] == "STORE"]
    assert sum(op["write_bytes"] for op in stores) == layout.y_bytes
