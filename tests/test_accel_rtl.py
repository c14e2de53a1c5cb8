"""The whole accelerator under cocotb with cocotbext-axi's AxiRam and AxiLiteMaster.

Every run is compared with the golden ISA model on the whole memory image: the outputs
must match bit for bit and every other byte must be unchanged.
"""

import numpy as np
import pytest

from serrano.hw import isa, regs
from serrano.hw.config import get_preset
from serrano.sim.accel import run_rtl
from serrano.sw import compiler, golden, isa_model, requant
from tests.stimulus import requant_gemm_operands

TINY = get_preset("tiny")


def random_gemm(rng, cfg, m, k, n, relu=False, base=0):
    # Scales that use the int8 range, a few that saturate both ways, one zero multiplier.
    a, w, bias, mult, shift = requant_gemm_operands(rng, m, k, n, bias_bound=5000,
                                                    scale_range=(0.5, 3.0))
    mult[0] = 0
    layout = compiler.compile_gemm(cfg, a, w, bias, mult, shift, relu=relu, base=base)
    expect = requant.requantize(golden.matmul(a, w), bias, mult, shift, relu=relu)
    return layout, expect


def check_against_golden(cfg, layout, rtl, expect=None):
    gold = isa_model.run_program(cfg, layout.image, layout.prog_addr, layout.prog_len)
    assert gold.error == isa.Error.NONE
    assert rtl.magic == regs.MAGIC
    assert not rtl.timed_out, "watchdog: the program did not finish"
    assert rtl.error == isa.Error.NONE and rtl.done, f"status {rtl.status:#x}"
    if expect is not None:
        np.testing.assert_array_equal(layout.output(rtl.image, cfg), expect)
    np.testing.assert_array_equal(rtl.image, gold.mem)       # every byte of memory
    c = rtl.counters
    assert c["array_cycles"] * cfg.macs == gold.macs
    assert c["dma_write_bytes"] == gold.dma_write_bytes
    assert c["instructions"] == gold.instructions
    assert c["cycles"] > 0 and rtl.irq_cleared
    return gold


@pytest.mark.parametrize("shape", [(8, 8, 8), (13, 9, 7), (1, 21, 5)])
def test_gemm_matches_golden(simulator, rng, shape):
    layout, expect = random_gemm(rng, TINY, *shape)
    rtl = run_rtl(TINY, layout.image, layout.prog_addr, layout.prog_len, simulator)
    check_against_golden(TINY, layout, rtl, expect)


def test_gemm_under_random_bus_pauses(simulator, rng):
    """Random idle and back-pressure on all five AXI channels, several M-blocks."""
    layout, expect = random_gemm(rng, TINY, 40, 12, 9, relu=True, base=4096 - 64)
    rtl = run_rtl(TINY, layout.image, layout.prog_addr, layout.prog_len, simulator,
                  pause=0.3, seed=int(rng.integers(1 << 16)))
    check_against_golden(TINY, layout, rtl, expect)


def test_many_blocks_and_tiles_verilator(rng):
    """Blocks alternating halves of both buffers, K = 1, long runs of tiles."""
    from tests.conftest import require_simulator
    require_simulator("verilator")
    layout, expect = random_gemm(rng, TINY, 70, 1, 30)
    rtl = run_rtl(TINY, layout.image, layout.prog_addr, layout.prog_len, "verilator")
    check_against_golden(TINY, layout, rtl, expect)


def test_soft_reset_mid_run_then_correct_run(simulator, rng):
    layout, expect = random_gemm(rng, TINY, 24, 12, 12)
    rtl = run_rtl(TINY, layout.image, layout.prog_addr, layout.prog_len, simulator,
                  soft_reset_after=150, pause=0.2, seed=3)
    assert rtl.reset_status == 0, f"not idle after soft reset: {rtl.reset_status:#x}"
    check_against_golden(TINY, layout, rtl, expect)


def run_faulty(cfg, image, prog_addr, prog_len, sim, **kw):
    gold = isa_model.run_program(cfg, image, prog_addr, prog_len, check_deps=False,
                                 base=kw.get("base", 0), limit=kw.get("limit"))
    rtl = run_rtl(cfg, image, prog_addr, prog_len, sim, **kw)
    assert not rtl.timed_out, "watchdog: an error must stop the accelerator, not hang it"
    assert rtl.status & regs.STATUS_ERROR and not rtl.status & regs.STATUS_BUSY
    assert rtl.error == gold.error != isa.Error.NONE
    return gold, rtl


def test_error_undefined_opcode_on_zeroed_memory(simulator):
    image = np.zeros(4096, np.uint8)
    _, rtl = run_faulty(TINY, image, 0, 4, simulator)
    assert not rtl.image.any()


@pytest.mark.parametrize("fault", ["bad_buffer", "bad_count", "no_end", "window", "align"])
def test_error_codes_and_nothing_written(simulator, rng, fault):
    """Each fault stops with its code; memory outside the outputs written before the
    faulting instruction stays as it was, byte for byte."""
    layout, _ = random_gemm(rng, TINY, 8, 8, 8)
    image = layout.image.copy()
    prog = isa_model.Program()
    kw = {}
    if fault == "bad_buffer":
        prog.load_act(dram_addr=layout.a_addr, dram_stride=4, rows=1, row_beats=1,
                      buf_row=TINY.act_buf_rows, buf_row_step=1, buf_beat_step=1)
    elif fault == "bad_count":
        prog.matmul(weight_addr=layout.w_addr, act_row=0, act_stride=1, act_kstep=1, m=0,
                    k_tiles=1, acc_row=0)
    elif fault == "window":
        kw = {"base": 0, "limit": layout.w_addr + 16}      # weights beyond the window
        prog.matmul(weight_addr=layout.w_addr, act_row=0, act_stride=1, act_kstep=1, m=1,
                    k_tiles=2, acc_row=0)
    elif fault == "align":
        prog.load_act(dram_addr=layout.a_addr + 1, dram_stride=4, rows=1, row_beats=1,
                      buf_row=0, buf_row_step=1, buf_beat_step=1)
    prog.store(acc_row=0, m=2, param_tile=0, dram_addr=layout.y_addr, dram_stride=4)
    if fault != "no_end":
        prog.end()
    raw = prog.to_array()
    image[layout.prog_addr:layout.prog_addr + len(raw)] = raw
    gold, rtl = run_faulty(TINY, image, layout.prog_addr, len(prog), simulator, **kw)
    np.testing.assert_array_equal(rtl.image, image)


def test_default_preset_accelerator_verilator(rng):
    """The 16 x 16 accelerator with the Verilog memory model (no Python per cycle)."""
    from serrano.sim.system import run_system
    from tests.conftest import require_simulator
    require_simulator("verilator")
    cfg = get_preset("default")
    layout, expect = random_gemm(rng, cfg, 40, 40, 40)
    rtl = run_system(cfg, layout.image, layout.prog_addr, layout.prog_len, "verilator",
                     mem_latency=30)
    check_against_golden(cfg, layout, rtl, expect)


def test_system_memory_errors(simulator, rng):
    """SLVERR from the memory on the weights, DECERR past the end of memory: the right
    code, no hang, nothing written."""
    from serrano.sim.system import MEMORY_CLASSES, run_system
    layout, _ = random_gemm(rng, TINY, 8, 8, 8)
    end = MEMORY_CLASSES[0]                       # the simulated memory's size
    for window, limit, code in (((layout.w_addr, layout.w_addr + 16), None,
                                 isa.Error.AXI_SLVERR),
                                ((0, 0), 2 * end, isa.Error.AXI_DECERR)):
        image = layout.image.copy()
        if code == isa.Error.AXI_DECERR:          # weights beyond the end of memory
            prog = isa_model.Program()
            prog.matmul(weight_addr=end + 4096, act_row=0, act_stride=1, act_kstep=1,
                        m=1, k_tiles=1, acc_row=0)
            prog.end()
            raw = prog.to_array()
            image[layout.prog_addr:layout.prog_addr + len(raw)] = raw
            n = len(prog)
        else:
            n = layout.prog_len
        rtl = run_system(TINY, image, layout.prog_addr, n, simulator, err_window=window,
                         limit=limit, mem_latency=5)
        assert not rtl.timed_out
        assert rtl.error == code, (rtl.error, code)
        np.testing.assert_array_equal(rtl.image, image)


def rowscale_program(cfg, rng, *, dynq):
    """Per-token dynamic quantization end to end: ``n`` activation rows, each its own
    token; with ``dynq`` 16-bit rows that ``VEC DYNQ`` quantizes to int8 at a scale per
    row (codes to row-scale slots ``S..S+n-1``), else int8 rows and a file never written
    (code 0 everywhere: ``acc * 2 >> 9``); a ``MATMUL``; ``STORE rowscale`` to memory as
    int8 rows and (``relu``) as 16-bit rows. Returns the image, the program's address
    and length, and the two stores' expected outputs from sw.vector.dynq,
    sw.requant.row_rescale and requantize."""
    from serrano.sw import vector
    R, C = cfg.rows, cfg.cols
    n, S = 19, 37
    image = np.zeros(16384, np.uint8)
    W, P, X, OUT, OUT2, PROG = 0, 256, 512, 4096, 6144, 8192
    w = rng.integers(-128, 128, (R, C)).astype(np.int8)
    image[W:W + R * C] = w.view(np.uint8).ravel()
    bias = rng.integers(-300, 301, C)
    mult = np.full(C, 1 << 30)
    shift = np.full(C, 39 if dynq else 32)
    image[P:P + isa.PARAM_BEATS * cfg.bus_bytes] = isa_model.pack_params(bias, mult, shift,
                                                                          cfg)
    prog = isa_model.Program()
    if dynq:
        lims = [v for v in isa.DYNQ_LIMITS if v <= isa.WIDE_MAX]
        x = np.zeros((n, R), np.int64)
        # Row 0 all zeros; rows 1..17 at the limits of codes 0..16 (the last is
        # WIDE_MAX); row 18 one past code 3's limit (code 4).
        for i in range(1, n):
            p = lims[i - 1] if i <= len(lims) else lims[3] + 1
            x[i] = rng.integers(-p, p + 1, R)
            x[i, i % R] = p if i % 4 < 2 else -p
        hi, lo = requant.split_wide(x)
        x = 256 * hi.astype(np.int64) + lo
        rows = np.concatenate([hi, lo]).astype(np.int8)
        xq, k = vector.dynq(x, R)
        assert set(k.tolist()) == set(range(len(lims)))
    else:
        rows = rng.integers(-128, 128, (n, R)).astype(np.int8)
        xq, k = rows.astype(np.int64), np.zeros(n, np.int64)
    image[X:X + rows.size] = rows.view(np.uint8).ravel()
    prog.load_act(dram_addr=X, dram_stride=R, rows=len(rows), row_beats=1, buf_row=0,
                  buf_row_step=1, buf_beat_step=0)
    prog.load_param(dram_addr=P, n_tiles=1, param_tile=0)
    prog.fence()
    Q = 100                                       # the int8 rows the GEMM reads
    if dynq:
        prog.vec(vop=isa.VecOp.DYNQ, a_row=0, rows=1, count=n, length=R, b_row=S,
                 dst_row=Q, wide=1, a_lo_row=n)
        prog.fence()
    else:
        Q = 0
    prog.matmul(weight_addr=W, act_row=Q, act_stride=1, act_kstep=0, m=n, k_tiles=1,
                acc_row=0, push_next=1)
    prog.store(acc_row=0, m=n, param_tile=0, dram_addr=OUT, dram_stride=C, rowscale=1,
               scale_row=S, pop_prev=1, push_prev=1)
    prog.fence()
    prog.matmul(weight_addr=W, act_row=Q, act_stride=1, act_kstep=0, m=n, k_tiles=1,
                acc_row=cfg.acc_buf_rows, push_next=1)
    prog.store(acc_row=cfg.acc_buf_rows, m=n, param_tile=0, dram_addr=OUT2,
               dram_stride=2 * C, rowscale=1, scale_row=S, wide=1, relu=1, pop_prev=1,
               push_prev=1)
    prog.end()
    image[PROG:PROG + len(prog) * isa.INSN_BYTES] = prog.to_array()
    acc = requant.row_rescale(golden.matmul(xq.astype(np.int8), w), k)
    y8 = requant.requantize(acc, bias, mult, shift)
    y16 = requant.requantize(acc, bias, mult, shift, relu=True, wide=True)
    return image, PROG, len(prog), (OUT, y8), (OUT2, y16)


@pytest.mark.parametrize("dynq", [False, True])
def test_store_rowscale_matches_golden(simulator, rng, dynq):
    """``STORE rowscale`` in a whole program: the RTL's memory equals the golden model's,
    and the outputs equal the specification's (row_rescale then requantize)."""
    from types import SimpleNamespace
    image, prog_addr, prog_len, (out, y8), (out2, y16) = rowscale_program(TINY, rng,
                                                                          dynq=dynq)
    gold = isa_model.run_program(TINY, image, prog_addr, prog_len)     # tokens + races
    assert gold.error == isa.Error.NONE
    n, C = y8.shape
    np.testing.assert_array_equal(gold.mem[out:out + n * C].view(np.int8).reshape(n, C), y8)
    hi = gold.mem[out2:out2 + 2 * n * C].view(np.int8).reshape(n, 2, C)
    np.testing.assert_array_equal(256 * hi[:, 0].astype(np.int64) + hi[:, 1], y16)
    assert len(set(y8.ravel().tolist())) > 10
    rtl = run_rtl(TINY, image, prog_addr, prog_len, simulator)
    check_against_golden(TINY, SimpleNamespace(image=image, prog_addr=prog_addr,
                                               prog_len=prog_len), rtl)
