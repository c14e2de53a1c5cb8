"""Attention's data movement on the chip: a ``STORE`` with ``transpose`` writes a GEMM's
output (the keys) as the packed weights of the next GEMM (``Q K^T``), so no row of K
goes through the host.

Each program: the keys ``K = requantize(X W_k)`` (``P`` positions, ``d`` wide) stored
transposed, one ``STORE`` per n-tile of ``d``, into the weight layout of ``K^T``
(:func:`sw.isa_model.pack_weights` of ``K^T``: per block of ``C`` positions, the k-tiles of
``d``); a ``FENCE``; then the scores ``Q K^T`` as raw int32. The expected scores come from
the specification (numpy products and :func:`sw.requant.requantize`), and the whole
memory image must equal the golden model's.
"""

import numpy as np
import pytest

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sim.accel import run_rtl
from serrano.sw import compiler, isa_model, requant
from tests.test_accel_rtl import check_against_golden, run_faulty

TINY = get_preset("tiny")
W_ADDR, P_ADDR, X_ADDR, Q_ADDR, KT_ADDR, OUT_ADDR, PROG_ADDR = (
    0, 2048, 4096, 8192, 12288, 16384, 28672)


class _Layout:
    def __init__(self, image, prog_len):
        self.image, self.prog_addr, self.prog_len = image, PROG_ADDR, prog_len


def _int8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def _keys_then_scores(cfg, rng, P, d, M):
    """The program, its image and the expected ``M x P`` scores."""
    R, C = cfg.rows, cfg.cols
    x, wk, q = _int8(rng, (P, R)), _int8(rng, (R, d)), _int8(rng, (M, d))
    bias = rng.integers(-300, 300, d)
    mult, shift = np.full(d, 1 << 30), np.full(d, 38)
    k = requant.requantize(x.astype(np.int64) @ wk, bias, mult, shift)
    kt, nt = d // R, -(-P // C)                  # k-tiles of d, position blocks
    image = np.zeros(32768, np.uint8)
    image[W_ADDR:W_ADDR + R * d] = isa_model.pack_weights(wk, cfg)
    for t in range(d // C):
        p = isa_model.pack_params(bias[t * C:(t + 1) * C], mult[t * C:(t + 1) * C],
                                  shift[t * C:(t + 1) * C], cfg)
        image[P_ADDR + t * p.size:P_ADDR + (t + 1) * p.size] = p
    xa = compiler.pack_acts(x, cfg)
    qa = compiler.pack_acts(q, cfg)
    image[X_ADDR:X_ADDR + xa.size] = xa
    image[Q_ADDR:Q_ADDR + qa.size] = qa
    prog = isa_model.Program()
    prog.load_param(dram_addr=P_ADDR, n_tiles=d // C, param_tile=0)
    prog.load_act(dram_addr=X_ADDR, dram_stride=R, rows=P, row_beats=1, buf_row=0,
                  buf_row_step=1, buf_beat_step=0)
    prog.fence()
    tile = R * C
    for t in range(d // C):                      # the keys, n-tile t = k-tile t of K^T
        prog.matmul(weight_addr=W_ADDR + t * tile, act_row=0, act_stride=1, act_kstep=0,
                    m=P, k_tiles=1, acc_row=0, push_next=1)
        prog.store(acc_row=0, m=P, param_tile=t, dram_addr=KT_ADDR + t * tile,
                   dram_stride=kt * tile, transpose=1, pop_prev=1)
        prog.fence()
    prog.load_act(dram_addr=Q_ADDR, dram_stride=R, rows=M * kt, row_beats=1,
                  buf_row=0, buf_row_step=1, buf_beat_step=0)
    prog.fence()
    for g in range(nt):                          # the scores of position block g
        prog.matmul(weight_addr=KT_ADDR + g * kt * tile, act_row=0, act_stride=1,
                    act_kstep=M, m=M, k_tiles=kt, acc_row=0, push_next=1)
        prog.store(acc_row=0, m=M, param_tile=0, dram_addr=OUT_ADDR + g * M * 4 * C,
                   dram_stride=4 * C, raw=1, pop_prev=1)
        prog.fence()
    prog.end()
    image[PROG_ADDR:PROG_ADDR + len(prog) * isa.INSN_BYTES] = prog.to_array()
    kpad = np.zeros((nt * C, d), np.int64)
    kpad[:P] = k
    want = q.astype(np.int64) @ kpad.T           # padded positions give 0
    return image, len(prog), want


def _scores(cfg, image, M, P):
    nt = -(-P // cfg.cols)
    return compiler.unpack_raw(image[OUT_ADDR:], M, nt * cfg.cols, cfg)


@pytest.mark.parametrize("P, d, M", [(8, 8, 3), (11, 8, 5), (4, 4, 2), (13, 4, 1)])
def test_transposed_keys_on_amaranths_simulator(P, d, M):
    """The whole accelerator on Amaranth's simulator with its AXI property monitors:
    positions that fill their blocks and that do not (zero padding), several k-tiles of
    ``d`` (a block every ``kt`` tiles) and one (contiguous blocks)."""
    from serrano.sim.amaranth_system import run_program as run_amaranth
    rng = np.random.default_rng(P * 100 + d * 10 + M)
    image, prog_len, want = _keys_then_scores(TINY, rng, P, d, M)
    gold = isa_model.run_program(TINY, image, PROG_ADDR, prog_len)
    assert gold.error == isa.Error.NONE
    np.testing.assert_array_equal(_scores(TINY, gold.mem, M, P), want)
    rtl = run_amaranth(TINY, image, PROG_ADDR, prog_len, timeout_cycles=100_000)
    assert not rtl.timed_out
    np.testing.assert_array_equal(rtl.image, gold.mem)


@pytest.mark.parametrize("P, d, M", [(11, 8, 5), (16, 4, 3)])
def test_transposed_keys_match_golden(simulator, rng, P, d, M):
    image, prog_len, want = _keys_then_scores(TINY, rng, P, d, M)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_scores(TINY, rtl.image, M, P), want)


@pytest.mark.parametrize("fields", [
    dict(transpose=1, raw=1), dict(transpose=1, to_buf=1),
    dict(wide=1, raw=1), dict(wide=1, to_buf=1, raw=1), dict(wide=1, transpose=1),
    dict(wide=1, to_buf=1, lo_row=1021)])
def test_store_flags_that_do_not_go_together_are_errors(simulator, fields):
    """``transpose`` needs requantized rows going to memory, ``wide`` requantized rows
    (and, into the buffer, its low halves' rows in range): otherwise the ``STORE`` stops
    at dispatch with ``BAD_BUFFER`` and nothing is written."""
    image = np.zeros(32768, np.uint8)
    prog = isa_model.Program()
    prog.store(acc_row=0, m=4, param_tile=0, dram_addr=OUT_ADDR, dram_stride=16,
               **fields)
    prog.end()
    image[PROG_ADDR:PROG_ADDR + len(prog) * isa.INSN_BYTES] = prog.to_array()
    gold, rtl = run_faulty(TINY, image, PROG_ADDR, len(prog), simulator)
    assert gold.error == isa.Error.BAD_BUFFER
    np.testing.assert_array_equal(rtl.image, image)
