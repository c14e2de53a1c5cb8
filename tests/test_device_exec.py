"""The device executor: a graph's GEMMs on the accelerator, the rest on the host."""

import numpy as np
import pytest

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sw.models import llama as LM, synthetic
from serrano.sw.nn import archs, device_exec as DE, float_exec
from serrano.sw.runtime import Device
from tests.conftest import require_simulator

TINY = get_preset("tiny")


@pytest.fixture(scope="module")
def tiny_llama():
    model = LM.llama_tiny(2)
    g = archs.llama(model.shape)
    return g, archs.llama_params(model)


def _prefill_then_decode(backend, tiny_llama, ids, extra, act_bits=16):
    g, params = tiny_llama
    with Device(TINY, backend, mem_bytes=1 << 22) as dev:
        ex = DE.DeviceExecutor(dev, g, params, act_bits=act_bits)
        state = {}
        pre = ex.run({"ids": ids, "pos": np.arange(len(ids))}, state)["logits"]
        dec = ex.run({"ids": np.array([extra]), "pos": np.array([len(ids)])},
                     state)["logits"]
        longer = ex.run({"ids": np.append(ids, extra), "pos": np.arange(len(ids) + 1)},
                        {})["logits"]
        return pre, dec, longer, dev.bit_exact, dev.host_round_trips


def _cosines(a, b):
    return [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b)]


@pytest.mark.parametrize("act_bits", [8, 16])
def test_llama_tiny_on_golden_tracks_float(tiny_llama, act_bits):
    g, params = tiny_llama
    ids = np.array([3, 141, 59, 26, 5, 35, 89, 79])
    pre, dec, longer, _, calls = _prefill_then_decode("golden", tiny_llama, ids, 42,
                                                      act_bits)
    ref = float_exec.run(g, params, {"ids": ids, "pos": np.arange(8)}, {})["logits"]
    # 16-bit inputs leave only the int8 weights' error; 8-bit inputs add their own.
    assert min(_cosines(pre, ref)) > {8: 0.99, 16: 0.999}[act_bits]
    # Per-token scales: a row's result does not depend on the other rows, so decoding
    # after a prefill gives exactly the longer prefill's last row.
    np.testing.assert_array_equal(dec[0], longer[-1])
    # 3 runs; per layer QKV, scores, context, O, gate+up, down; the LM head
    assert calls == 3 * (2 * 6 + 1)


def test_last_position_only_streams_the_lm_head_past_one_row(tiny_llama):
    """``last=True``: the logits of the last position only, equal to the last row of the
    full run; the LM head's GEMM has the rows of one position (two at 16 bits), not the
    prompt's, and the other calls are the same."""
    g, params = tiny_llama
    ids = np.array([3, 141, 59, 26, 5, 35, 89, 79])
    feeds = {"ids": ids, "pos": np.arange(len(ids))}
    with Device(TINY, "golden", mem_bytes=1 << 22) as dev:
        ex = DE.DeviceExecutor(dev, g, params)
        full = ex.run(feeds, {})["logits"]
        calls_full = list(dev.calls)
        last = ex.run(feeds, {}, last=True)["logits"]
        calls_last = dev.calls[len(calls_full):]
    np.testing.assert_array_equal(last, full[-1:])
    assert [c.name for c in calls_last] == [c.name for c in calls_full]
    head = [(c.gemms, d.gemms) for c, d in zip(calls_full, calls_last) if c.name == "logits"]
    assert len(head) == 1 and head[0][0][0][0] == 2 * len(ids) and head[0][1][0][0] == 2
    assert all(c.gemms == d.gemms for c, d in zip(calls_full, calls_last)
               if c.name != "logits")

def test_llama_tiny_bit_exact_on_verilator(tiny_llama):
    require_simulator("verilator")
    ids = np.array([1, 2, 3, 250, 17])
    gold = _prefill_then_decode("golden", tiny_llama, ids, 9)
    rtl = _prefill_then_decode("verilator", tiny_llama, ids, 9)
    assert rtl[3] is True                           # every call, byte for byte
    for a, b in zip(gold[:3], rtl[:3]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["golden", "verilator"])
def test_bert_tiny_with_biases_and_a_mask(backend):
    """An encoder (biases, attention without a cache, a padding mask) on the device
    executor: close to float, padded rows change no real row, the RTL bit-exact."""
    require_simulator(backend)
    w, shape = synthetic.bert_tiny(0)
    g = archs.bert_encoder(shape, 1)
    params = archs.bert_params([w])
    x = synthetic.random_inputs(shape, 12, seed=3)[None]
    mask = np.ones((1, 12), np.int64)
    mask[0, 9:] = 0
    with Device(TINY, backend, mem_bytes=1 << 22) as dev:
        ex = DE.DeviceExecutor(dev, g, params)
        y = ex.run({"x": x, "mask": mask}, {})["blk.0.y"][0]
        cut = ex.run({"x": x[:, :9], "mask": mask[:, :9]}, {})["blk.0.y"][0]
        assert dev.bit_exact in (True, None)
    ref = float_exec.run(g, params, {"x": x, "mask": mask}, {})["blk.0.y"][0]
    assert min(_cosines(y[:9], ref[:9])) > 0.999
    np.testing.assert_array_equal(y[:9], cut)
    with Device(TINY, "golden", mem_bytes=1 << 22) as dev:
        with pytest.raises(ValueError, match="one sequence at a time"):
            DE.DeviceExecutor(dev, g, params).run({"x": np.concatenate([x, x]),
                                                   "mask": np.ones((2, 12))}, {})


def test_split16_round_trips_every_value():
    q = np.arange(-32639, 32640)
    hi, lo = DE.split16(q)
    assert hi.dtype == lo.dtype == np.int8
    np.testing.assert_array_equal(256 * hi.astype(np.int32) + lo, q)


def test_quantize_rows_is_per_row_and_in_range(rng):
    x = rng.normal(size=(5, 40)) * np.array([1e-3, 1, 30, 3000, 0])[:, None]
    for bits, top in ((8, 127), (16, 32639)):
        q, s = DE.quantize_rows(x, bits)
        assert np.abs(q).max() <= top and (np.abs(q).max(axis=1)[:4] == top).all()
        np.testing.assert_allclose(q * s[:, None], x, atol=0.5 * s.max())
        assert (q[4] == 0).all()                   # a zero row: scale 1, codes 0


@pytest.mark.parametrize("backend", ["golden", "verilator", "icarus", "amaranth"])
def test_raw_gemm_returns_the_int32_accumulators(backend):
    """A raw GEMM stores ``A @ W`` unrequantized (int32, C words a row); across several
    M-blocks, accumulator halves and partial tiles, on every backend."""
    require_simulator(backend)
    from serrano.sw import compiler, gemm as G, golden, isa_model
    m, k, n = 21, 10, 9
    a, w = G.random_operands(m, k, n, 6)
    a[0], w[:, 0] = -128, -128                     # the largest products, every sign
    with Device(TINY, backend, mem_bytes=1 << 20) as dev:
        a_addr = dev.put(compiler.pack_acts(a, TINY))
        w_addr = dev.put(isa_model.pack_weights(w, TINY))
        nbytes = compiler.out_bytes(TINY, m, n, raw=True)
        y = dev.alloc(nbytes)
        b = dev.builder()
        b.gemm(compiler.Gemm(m, k, n, a_addr, w_addr, None, y, raw=True), block=8)
        program = isa_model.decode_program(bytes(b.prog) + bytes(isa.encode(isa.Op.END)))
        assert not any(op == isa.Op.LOAD_PARAM for op, _, _ in program)
        isa_model.check_tokens(program)
        isa_model.check_races(TINY, program)
        call = dev.call("raw", b)
        got = compiler.unpack_raw(dev.read(y, nbytes), m, n, TINY)
        np.testing.assert_array_equal(got, golden.matmul(a, w))
        assert dev.bit_exact in (True, None)
        if call.counters:
            assert call.counters["dma_write_bytes"] == nbytes


@pytest.mark.parametrize("backend", ["icarus", "amaranth"])
def test_small_llama_bit_exact_on_the_slow_backends(backend):
    """A one-layer Llama (grouped-query attention, KV cache in device memory, LM head)
    gives on Icarus and on Amaranth's simulator, call by call, the bytes of the golden
    model: a prefill and one decode step."""
    require_simulator(backend)
    model = LM.llama_tiny(5, layers=1, hidden=16, heads=2, kv_heads=1, ffn=16, vocab=16)
    g, params = archs.llama(model.shape), archs.llama_params(model)
    out = {}
    for be in ("golden", backend):
        with Device(TINY, be, mem_bytes=1 << 20) as dev:
            ex = DE.DeviceExecutor(dev, g, params, positions=4)
            state = {}
            pre = ex.run({"ids": np.array([3, 1, 4]), "pos": np.arange(3)}, state)["logits"]
            dec = ex.run({"ids": np.array([9]), "pos": np.array([3])}, state)["logits"]
            out[be] = (pre, dec, dev.bit_exact)
    assert out[backend][2] is True
    for a, b in zip(out["golden"][:2], out[backend][:2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["golden", "verilator", "icarus", "amaranth"])
def test_block_format_gemms_on_every_backend(backend):
    """Raw Q4 and Q8 GEMMs (several M-blocks, a partial block along K, a partial N-tile),
    with the program's tokens and races checked: ``A @ W`` of their integer weights on
    every backend."""
    require_simulator(backend)
    from serrano.sw import compiler, gemm as G, isa_model, q4
    m, k, n = 13, 40, 6
    a, _ = G.random_operands(m, k, n, 8)
    with Device(TINY, backend, mem_bytes=1 << 20) as dev:
        a_addr = dev.put(compiler.pack_acts(a, TINY))
        for w in (G.random_q4(k, n, 7, TINY), G.random_q8(k, n, 9, TINY)):
            w_addr = dev.put(q4.pack(w, TINY))
            nbytes = compiler.out_bytes(TINY, m, n, raw=True)
            y = dev.alloc(nbytes)
            b = dev.builder()
            b.gemm(compiler.Gemm(m, k, n, a_addr, w_addr, None, y, raw=True,
                                 wfmt=q4.weight_format(w)), block=8)
            program = isa_model.decode_program(bytes(b.prog) + bytes(isa.encode(isa.Op.END)))
            isa_model.check_tokens(program)
            isa_model.check_races(TINY, program)
            dev.call("block", b)
            got = compiler.unpack_raw(dev.read(y, nbytes), m, n, TINY)
            np.testing.assert_array_equal(got, a @ w.integer().astype(np.int64))
        assert dev.bit_exact in (True, None)
