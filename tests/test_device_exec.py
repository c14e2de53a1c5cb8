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
    params = archs.llama_params(model)
    rng = np.random.default_rng(7)
    samples = [{"ids": rng.integers(0, 256, 10), "pos": np.arange(10)} for _ in range(4)]
    return g, params, DE.calibrate(g, params, samples)


def _prefill_then_decode(backend, tiny_llama, ids, extra):
    g, params, factors = tiny_llama
    with Device(TINY, backend, mem_bytes=1 << 22) as dev:
        ex = DE.DeviceExecutor(dev, g, params, factors)
        state = {}
        pre = ex.run({"ids": ids, "pos": np.arange(len(ids))}, state)["logits"]
        dec = ex.run({"ids": np.array([extra]), "pos": np.array([len(ids)])},
                     state)["logits"]
        longer = ex.run({"ids": np.append(ids, extra), "pos": np.arange(len(ids) + 1)},
                        {})["logits"]
        return pre, dec, longer, dev.bit_exact, dev.host_round_trips


def test_llama_tiny_on_golden_tracks_float(tiny_llama):
    g, params, _ = tiny_llama
    ids = np.array([3, 141, 59, 26, 5, 35, 89, 79])
    pre, dec, longer, _, calls = _prefill_then_decode("golden", tiny_llama, ids, 42)
    ref = float_exec.run(g, params, {"ids": ids, "pos": np.arange(8)}, {})["logits"]
    cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(pre, ref)]
    assert min(cos) > 0.95
    # Per-token scales: a row's result does not depend on the other rows, so decoding
    # after a prefill gives exactly the longer prefill's last row.
    np.testing.assert_array_equal(dec[0], longer[-1])
    assert calls == 3 * (2 * 4 + 1)     # 3 runs; per layer QKV, O, gate+up, down; LM head


def test_llama_tiny_bit_exact_on_verilator(tiny_llama):
    require_simulator("verilator")
    ids = np.array([1, 2, 3, 250, 17])
    gold = _prefill_then_decode("golden", tiny_llama, ids, 9)
    rtl = _prefill_then_decode("verilator", tiny_llama, ids, 9)
    assert rtl[3] is True                           # every call, byte for byte
    for a, b in zip(gold[:3], rtl[:3]):
        np.testing.assert_array_equal(a, b)


def test_linear_with_bias_is_refused():
    w, shape = synthetic.bert_tiny(0)
    g = archs.bert_encoder(shape, 1)
    params = archs.bert_params([w])
    with Device(TINY, "golden", mem_bytes=1 << 20) as dev:
        with pytest.raises(ValueError, match="has a bias; the per-token device path"):
            DE.DeviceExecutor(dev, g, params, {})


@pytest.mark.parametrize("backend", ["golden", "verilator"])
def test_second_store_equals_a_gemm_with_its_parameters(backend):
    """A GEMM with a second output (a second STORE of the same accumulator rows through
    other parameter sets) gives, in each output, what a GEMM with those parameters
    gives alone; the tokens keep the accumulator half until both stores have read it."""
    if backend == "verilator":
        require_simulator("verilator")
    from serrano.sw import compiler, gemm as G, golden, isa_model, requant
    m, k, n = 20, 24, 36                          # 9 output tiles, 2 M-blocks on tiny
    a, w = G.random_operands(m, k, n, 5)
    acc = golden.matmul(a, w)
    sets = [G.random_requant(acc, s) for s in (1, 2)]
    with Device(TINY, backend, mem_bytes=1 << 20) as dev:
        a_addr = dev.put(compiler.pack_acts(a, TINY))
        w_addr = dev.put(isa_model.pack_weights(w, TINY))
        p = [dev.put(isa_model.pack_params(*s, TINY)) for s in sets]
        y_bytes = -(-n // TINY.cols) * m * TINY.cols
        y = [dev.alloc(y_bytes) for _ in sets]
        b = dev.builder()
        b.gemm(compiler.Gemm(m, k, n, a_addr, w_addr, p[0], y[0], p2_addr=p[1],
                             y2_addr=y[1]), block=8)
        program = isa_model.decode_program(bytes(b.prog) + bytes(isa.encode(isa.Op.END)))
        isa_model.check_tokens(program)           # no deadlock
        isa_model.check_races(TINY, program)      # every reuse of a half is ordered
        dev.call("dual", b)
        for s, addr in zip(sets, y):
            got = compiler.unpack_out(dev.read(addr, y_bytes), m, n, TINY)
            np.testing.assert_array_equal(got, requant.requantize(acc, *s))
        assert dev.bit_exact in (True, None)
