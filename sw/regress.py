"""``serrano regress``: a constrained-random campaign, RTL against the golden ISA model.

Each seed draws, reproducibly: a preset (``tiny`` or ``fpga``; ``default`` on Verilator
only), a GEMM shape (sizes that are not multiples of the array, ``K = 1``, long ``K``),
requantization parameters with corners (zero multiplier, largest shift, saturation both
ways, ReLU), an M-block size, a base address near a 4 KiB boundary, the memory timing
(``AxiRam`` with random pauses on all five channels, or the Verilog memory with a read
latency from 1 to 100 cycles; ``default`` always the latter) and, for about one seed in four, a fault (an undefined
opcode, a buffer out of range, a zero count, a DMA outside the window, a misaligned DMA,
an SLVERR from memory, a program without ``END``). The RTL must match the golden model
byte for byte over the whole memory image, or stop with the golden model's error code,
memory outside the outputs unchanged, and never hang.

It ends with ``N passed, N failed`` and a coverage table; each failure prints the
one-line command that replays it.
"""

import sys
import time
import traceback
from collections import Counter

import numpy as np

from hw import isa
from hw.config import get_preset
from . import compiler, golden, isa_model, requant

__all__ = ["run_case", "run_campaign", "BINS"]

FAULTS = ("bad_opcode", "bad_buffer", "bad_count", "window", "align", "slverr", "no_end")

BINS = (
    [f"op:{op.name}" for op in (isa.Op.LOAD_ACT, isa.Op.LOAD_PARAM, isa.Op.MATMUL,
                                isa.Op.STORE, isa.Op.END)]
    + [f"error:{e.name}" for e in (isa.Error.BAD_OPCODE, isa.Error.BAD_BUFFER,
                                   isa.Error.BAD_COUNT, isa.Error.DMA_WINDOW,
                                   isa.Error.DMA_ALIGN, isa.Error.AXI_SLVERR,
                                   isa.Error.NO_END)]
    + ["stall:weight", "stall:act", "stall:insn", "burst_crosses_4k", "k_equals_1",
       "several_m_blocks", "saturate_high", "saturate_low", "zero_multiplier", "shift_63",
       "relu", "mem:axiram_pauses", "mem:latency_gt_60", "param_chunks"]
)


def _case(seed, sims):
    rng = np.random.default_rng(seed)
    sim = sims[int(rng.integers(len(sims)))]
    presets = ["tiny", "tiny", "fpga"] + (["default"] if sim == "verilator" else [])
    cfg = get_preset(presets[int(rng.integers(len(presets)))])
    m = int(rng.integers(1, 3 * cfg.rows + 1))
    k = 1 if rng.random() < 0.15 else int(rng.integers(1, 6 * cfg.rows))
    if rng.random() < 0.1:
        k = int(rng.integers(20, 40)) * cfg.rows + int(rng.integers(cfg.rows))   # long K
    n = int(rng.integers(1, 5 * cfg.cols))
    fault = FAULTS[int(rng.integers(len(FAULTS)))] if rng.random() < 0.25 else None
    return rng, sim, cfg, m, k, n, fault


def _operands(rng, cfg, m, k, n):
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    if rng.random() < 0.3:                      # large sums: all extremes
        a = np.where(rng.random((m, k)) < 0.5, -128, 127)
        w = np.where(rng.random((k, n)) < 0.5, -128, 127)
    acc = golden.matmul(a, w).astype(np.int64)
    bias = rng.integers(-2**20, 2**20, n)
    peak = np.maximum(np.abs(acc + bias).max(axis=0), 1)
    scales = 127.0 / peak * rng.choice([0.5, 1.0, 4.0, 64.0], n)   # some saturate
    mult, shift = (np.array(v) for v in zip(*(requant.quantize_multiplier(s)
                                               for s in scales)))
    mult[rng.random(n) < 0.1] = 0
    big = rng.random(n) < 0.1
    shift[big] = 63
    return a, w, bias, mult, shift, bool(rng.random() < 0.3)


def _inject(rng, fault, cfg, layout):
    """Edit the program of ``layout`` for ``fault``; return (image, prog_len, run kwargs)."""
    image = layout.image.copy()
    n = layout.prog_len
    base = layout.prog_addr
    kw = {}
    pick = int(rng.integers(n - 1))             # an instruction before END
    at = base + pick * isa.INSN_BYTES
    if fault == "bad_opcode":
        image[at] = (image[at] & 0xF0) | int(rng.choice([0, 7, 9, 15]))
    elif fault == "no_end":
        n -= 1
    elif fault in ("bad_buffer", "bad_count", "align"):
        prog = isa_model.Program()
        if fault == "bad_buffer":
            prog.load_act(dram_addr=layout.a_addr, dram_stride=cfg.bus_bytes, rows=2,
                          row_beats=1, buf_row=cfg.act_buf_rows - 1, buf_row_step=1,
                          buf_beat_step=1)
        elif fault == "bad_count":
            prog.store(acc_row=0, m=0, param_tile=0, dram_addr=layout.y_addr, dram_stride=4)
        else:
            prog.load_act(dram_addr=layout.a_addr + 1, dram_stride=cfg.bus_bytes, rows=1,
                          row_beats=1, buf_row=0, buf_row_step=1, buf_beat_step=1)
        image[at:at + isa.INSN_BYTES] = prog.to_array()
    elif fault == "window":
        kw["limit"] = layout.w_addr + int(rng.integers(1, 4)) * cfg.bus_bytes
    elif fault == "slverr":
        kw["err_window"] = (layout.w_addr, layout.w_addr + cfg.bus_bytes)
    return image, n, kw


def run_case(seed, sims=("verilator", "icarus")):
    """Run seed ``seed``; return ``(ok, message, bins hit)``."""
    rng, sim, cfg, m, k, n, fault = _case(seed, sims)
    a, w, bias, mult, shift, relu = _operands(rng, cfg, m, k, n)
    base = 4096 - int(rng.integers(0, 8)) * 64
    block = int(rng.integers(1, m + 1)) if rng.random() < 0.3 else None
    layout = compiler.compile_gemm(cfg, a, w, bias, mult, shift, relu=relu, base=base,
                                   block=block)
    image, n_insns, kw = _inject(rng, fault, cfg, layout) if fault else \
        (layout.image, layout.prog_len, {})
    coin = rng.random()
    # The 16 x 16 design always gets the Verilog memory: AxiRam serves memory from Python
    # every clock, too slow for it.
    if fault == "slverr" or cfg.name == "default" or (fault is None and coin < 0.5):
        from sim.system import run_system
        latency = int(rng.integers(1, 101))
        rtl = run_system(cfg, image, layout.prog_addr, n_insns, sim, mem_latency=latency,
                         **kw)
        mem = f"latency {latency}"
    else:
        from sim.accel import run_rtl
        pause = float(rng.choice([0.0, 0.2, 0.5]))
        rtl = run_rtl(cfg, image, layout.prog_addr, n_insns, sim, pause=pause, seed=seed,
                      **kw)
        mem = f"AxiRam pauses {pause}"
    gold = isa_model.run_program(cfg, image, layout.prog_addr, n_insns, check_deps=False,
                                 limit=kw.get("limit"))
    expect_error = isa.Error.AXI_SLVERR if fault == "slverr" else gold.error
    what = (f"{sim} {cfg.name} {m}x{k}x{n} {mem}" + (f" fault {fault}" if fault else ""))
    if rtl.timed_out:
        return False, f"{what}: watchdog (the accelerator hung)", set()
    if rtl.error != expect_error:
        return False, f"{what}: error {rtl.error.name}, expected {expect_error.name}", set()
    if expect_error == isa.Error.NONE:
        if not np.array_equal(rtl.image, gold.mem):
            diff = np.flatnonzero(rtl.image != gold.mem)
            return False, (f"{what}: memory differs from the golden model at "
                           f"{len(diff)} bytes, first {diff[0]:#x}"), set()
    else:
        # Outputs may be partly written before the fault; nothing else may change.
        outside = np.ones(len(image), bool)
        outside[layout.y_addr:layout.y_addr + layout.y_bytes] = False
        if not np.array_equal(rtl.image[outside], image[outside]):
            return False, f"{what}: memory outside the outputs changed after a fault", set()
    blocks = -(-m // (block or compiler.choose_block(cfg, m, k)))
    bins = _bins(cfg, gold, rtl, layout, k, blocks, mult, shift, relu,
                 _saturates(a, w, bias, mult, shift), mem)
    return True, what, bins


def _saturates(a, w, bias, mult, shift):
    """Whether requantization saturates high and low (before the clamp)."""
    x = golden.wrap_int32(golden.matmul(a, w).astype(np.int64) + bias).astype(np.int64)
    p = x * np.asarray(mult, np.int64)
    sh = np.asarray(shift, np.int64)
    q = np.where(sh > 0, (p + (np.int64(1) << np.maximum(sh - 1, 0))) >> sh, p)
    return bool((q > 127).any()), bool((q < -128).any())


def _bins(cfg, gold, rtl, layout, k, blocks, mult, shift, relu, sat, mem):
    hit = {f"op:{o['op']}" for o in gold.ops}
    if rtl.error != isa.Error.NONE:
        hit.add(f"error:{rtl.error.name}")
    c = rtl.counters
    for cause in ("weight", "act", "insn"):
        if c.get(f"stall_{cause}", 0):
            hit.add(f"stall:{cause}")
    if k == 1:
        hit.add("k_equals_1")
    if blocks > 1:
        hit.add("several_m_blocks")
    if -(-layout.N // cfg.cols) > cfg.param_tiles:
        hit.add("param_chunks")
    # A burst crosses 4 KiB only if a transfer spans a boundary (split by the engine).
    for start, size in ((layout.a_addr, layout.M * -(-layout.K // cfg.rows) * cfg.rows),
                        (layout.w_addr, -(-layout.K // cfg.rows) * -(-layout.N // cfg.cols)
                         * cfg.rows * cfg.cols), (layout.prog_addr, 64)):
        if start // 4096 != (start + size - 1) // 4096:
            hit.add("burst_crosses_4k")
    if sat[0]:
        hit.add("saturate_high")
    if sat[1]:
        hit.add("saturate_low")
    if (np.asarray(mult) == 0).any():
        hit.add("zero_multiplier")
    if (np.asarray(shift) == 63).any():
        hit.add("shift_63")
    if relu:
        hit.add("relu")
    if mem.startswith("AxiRam") and not mem.endswith(" 0.0"):
        hit.add("mem:axiram_pauses")
    if mem.startswith("latency") and int(mem.split()[1]) > 60:
        hit.add("mem:latency_gt_60")
    return hit


def run_campaign(seeds, sims, first_seed=0, out=sys.stdout):
    """Run ``seeds`` seeds; print progress, failures, the coverage table and the summary."""
    passed = failed = 0
    coverage = Counter()
    t0 = time.perf_counter()
    for seed in range(first_seed, first_seed + seeds):
        try:
            ok, msg, bins = run_case(seed, sims)
        except Exception as e:                                  # a crash is a failure
            ok, msg, bins = False, f"{type(e).__name__}: {e}", set()
            traceback.print_exc(file=sys.stderr)
        if ok:
            passed += 1
            coverage.update(bins)
            print(f"seed {seed}: pass  {msg}", file=out, flush=True)
        else:
            failed += 1
            print(f"seed {seed}: FAIL  {msg}\n  replay: serrano regress --seed {seed} "
                  f"--sim {'both' if len(sims) > 1 else sims[0]}", file=out, flush=True)
    print("\ncoverage (seeds that hit each bin):", file=out)
    for b in BINS:
        print(f"  {b:24s} {coverage[b]:5d}" + ("   <- never hit" if not coverage[b] else ""),
              file=out)
    print(f"\ncampaign: {seeds} seeds in {time.perf_counter() - t0:.0f} s", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return failed == 0, coverage
