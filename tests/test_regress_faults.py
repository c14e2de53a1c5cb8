"""The bus faults and resets of the regression campaign (:mod:`sw.regress`), each run
once directly on the ``tiny`` preset with the Verilog memory (:func:`sim.system.run_system`)
on the simulators ``SIM`` selects, and the campaign's checks and draws tested on their
own (no simulator): each check must catch a doctored result.

The faulted GEMM has more output tiles than parameter slots, so its program has two
N-chunks separated by a ``FENCE``: a fault in the second chunk comes after every output
of the first was written and acknowledged, which a test can then require byte for byte.
"""

from collections import Counter

import numpy as np
import pytest

from serrano.hw import isa, regs
from serrano.hw.config import get_preset
from serrano.sim.system import MEMORY_CLASSES, SystemResult, run_system
from serrano.sw import compiler, isa_model, regress, requant

TINY = get_preset("tiny")
BB = TINY.bus_bytes


def gemm(m, k, n, seed=1, base=4096 - 128):
    """A tiny GEMM's layout, its image with noise in the outputs, its golden result."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    bias = rng.integers(-1000, 1000, n)
    peak = np.maximum(np.abs(a @ w + bias).max(axis=0), 1)
    mult, shift = (np.array(v) for v in zip(*(requant.quantize_multiplier(127.0 / p)
                                               for p in peak)))
    layout = compiler.compile_gemm(TINY, a, w, bias, mult, shift, base=base)
    image = layout.image.copy()
    y = slice(layout.y_addr, layout.y_addr + layout.y_bytes)
    image[y] = rng.integers(0, 256, layout.y_bytes, dtype=np.uint8)
    clean = isa_model.run_program(TINY, image, layout.prog_addr, layout.prog_len)
    return layout, image, clean


def chunked():
    """3 x 6 x 70: 18 output tiles, 16 parameter slots: two chunks, a FENCE between."""
    layout, image, clean = gemm(3, 6, 16 * TINY.cols + 6)
    insns = regress._decode(image, layout.prog_addr, layout.prog_len)
    fence = next(i for i, (op, _, _) in enumerate(insns) if op == isa.Op.FENCE)
    first_chunk_bytes = TINY.param_tiles * layout.M * TINY.cols   # outputs before it
    return layout, image, clean, insns, fence, first_chunk_bytes


def after_fence(insns, fence, op):
    """Index of the first ``op`` after the FENCE."""
    return next(i for i, (o, _, _) in enumerate(insns) if i > fence and o == op)


def check_faulted(rtl, code, image, layout, clean, golden_bytes=0):
    """The run stopped with ``code``, wrote nothing outside the outputs, no output byte
    other than untouched or golden, the first ``golden_bytes`` of the outputs golden,
    and a soft reset after it went back to idle."""
    assert not rtl.timed_out, "watchdog: the accelerator hung"
    assert rtl.status == regs.STATUS_ERROR | (code << regs.STATUS_CODE_SHIFT), \
        f"status {rtl.status:#x}, expected error {code.name}"
    assert not len(regress.changed_outside(image, rtl.image, layout.y_addr, layout.y_bytes))
    assert not len(regress.bad_outputs(image, rtl.image, clean.mem, layout.y_addr,
                                       layout.y_bytes))
    y0 = layout.y_addr
    np.testing.assert_array_equal(rtl.image[y0:y0 + golden_bytes],
                                  clean.mem[y0:y0 + golden_bytes])
    assert rtl.end_reset_settled == 0, f"not idle after soft reset: {rtl.end_reset_settled:#x}"


def shifted(image, layout, insns, i, by):
    """``image`` with instruction ``i``'s DMA address moved up by ``by`` bytes."""
    op, hdr, body = insns[i]
    name = "weight_addr" if op == isa.Op.MATMUL else "dram_addr"
    flags = {f: hdr[f] for f in ("pop_prev", "pop_next", "push_prev", "push_next")}
    out = image.copy()
    at = layout.prog_addr + i * isa.INSN_BYTES
    out[at:at + isa.INSN_BYTES] = np.frombuffer(
        isa.encode(op, **flags, **dict(body, **{name: body[name] + by})), np.uint8)
    return out


# ------------------------------------------------------------------------- on the RTL


def test_read_error_mid_run_after_fence(simulator):
    """SLVERR on the second chunk's parameters: everything before the FENCE is written."""
    layout, image, clean, insns, fence, done_bytes = chunked()
    addr = insns[after_fence(insns, fence, isa.Op.LOAD_PARAM)][2]["dram_addr"]
    assert addr in regress.burst_starts(TINY, layout)["param"] and addr > layout.p_addr
    rtl = run_system(TINY, image, layout.prog_addr, layout.prog_len, simulator,
                     mem_latency=9, err_window=(addr, addr + BB), soft_reset_at_end=True)
    check_faulted(rtl, isa.Error.AXI_SLVERR, image, layout, clean, done_bytes)


def test_read_error_on_program_fetch_at_4k(simulator):
    """SLVERR on the fetch burst that starts on a 4 KiB boundary inside the program."""
    layout, image, clean = gemm(10, 12, 9, base=4096 - 5 * 64)
    addr = regress.burst_starts(TINY, layout)["prog"][1]
    assert addr == 4096
    rtl = run_system(TINY, image, layout.prog_addr, layout.prog_len, simulator,
                     mem_latency=30, err_window=(addr, addr + BB), soft_reset_at_end=True)
    check_faulted(rtl, isa.Error.AXI_SLVERR, image, layout, clean)


def test_write_error_drops_the_burst(simulator):
    """SLVERR on the second chunk's first STORE: code, its first beat never written,
    the first chunk's outputs all written."""
    layout, image, clean, insns, fence, done_bytes = chunked()
    addr = insns[after_fence(insns, fence, isa.Op.STORE)][2]["dram_addr"]
    assert addr in regress.burst_starts(TINY, layout)["out"]
    assert (clean.mem[addr:addr + BB] != image[addr:addr + BB]).any()   # it would show
    rtl = run_system(TINY, image, layout.prog_addr, layout.prog_len, simulator,
                     mem_latency=5, write_latency=17, err_window=(addr, addr + BB),
                     soft_reset_at_end=True)
    check_faulted(rtl, isa.Error.AXI_SLVERR, image, layout, clean, done_bytes)
    assert not len(regress.written_in(image, rtl.image, addr, addr + BB))


@pytest.mark.parametrize("op", [isa.Op.LOAD_PARAM, isa.Op.STORE])
def test_decerr_beyond_memory(simulator, op):
    """The second chunk's LOAD_PARAM (a read) or first STORE (a write) moved past the end
    of the simulated memory, inside the DMA window: DECERR, nothing of it written."""
    layout, image, clean, insns, fence, done_bytes = chunked()
    end = MEMORY_CLASSES[0]
    i = after_fence(insns, fence, op)
    bad = shifted(image, layout, insns, i, end)
    rtl = run_system(TINY, bad, layout.prog_addr, layout.prog_len, simulator,
                     mem_latency=12, limit=2 * end, memory_bytes=end, soft_reset_at_end=True)
    check_faulted(rtl, isa.Error.AXI_DECERR, bad, layout, clean, done_bytes)
    if op == isa.Op.STORE:
        first = insns[i][2]["dram_addr"]
        assert not len(regress.written_in(image, rtl.image, first,
                                          first + insns[i][2]["m"] * TINY.cols))


@pytest.mark.parametrize("kind, rst_cycles", [("soft", 1), ("hard", 1), ("hard", 3)])
def test_reset_mid_run_then_full_run(simulator, kind, rst_cycles):
    """A reset part-way, idle right after it, then the whole program: golden."""
    layout, image, clean = gemm(10, 12, 9)
    bound = clean.dma_read_bytes // BB + 20            # the run cannot end sooner
    rtl = run_system(TINY, image, layout.prog_addr, layout.prog_len, simulator,
                     mem_latency=20, reset_after=bound // 2, reset_kind=kind,
                     hard_reset_cycles=rst_cycles)
    assert rtl.reset_mid_run, "the reset came after the end"
    assert rtl.reset_status == 0, f"status {rtl.reset_status:#x} right after the reset"
    assert not rtl.timed_out and rtl.status == regs.STATUS_DONE, hex(rtl.status)
    np.testing.assert_array_equal(rtl.image, clean.mem)
    assert rtl.counters["instructions"] == clean.instructions


def test_one_cycle_rst_while_a_read_is_requested(simulator):
    """``rst`` high for one cycle early in the run, while the core presents a read: the
    core's reset lags ``rst`` by a cycle, and in that cycle its AXI handshakes must be
    masked, or the memory (out of reset) takes a request the core then forgets, and the
    next run consumes its data and hangs."""
    layout, image, clean = gemm(10, 12, 9)
    rtl = run_system(TINY, image, layout.prog_addr, layout.prog_len, simulator,
                     mem_latency=20, write_latency=3, reset_after=5, reset_kind="hard",
                     hard_reset_cycles=1, timeout_cycles=20_000)
    assert not rtl.timed_out and rtl.status == regs.STATUS_DONE, hex(rtl.status)
    np.testing.assert_array_equal(rtl.image, clean.mem)


def test_soft_reset_after_end_clears_status_at_once(simulator):
    """After a finished run, the first status read that is no longer busy during a soft
    reset must already be idle (done cleared), not only the read after it."""
    layout, image, clean = gemm(12, 20, 9, base=4032)
    rtl = run_system(TINY, image, layout.prog_addr, layout.prog_len, simulator,
                     mem_latency=20, soft_reset_at_end=True)
    np.testing.assert_array_equal(rtl.image, clean.mem)
    assert rtl.end_reset_settled == 0
    assert rtl.end_reset_status == 0, (
        f"status {rtl.end_reset_status:#x} read not busy during the soft reset, "
        f"{rtl.end_reset_settled:#x} on the next read")


# ------------------------------------------------------------ the checks, no simulator


def test_changed_outside_finds_one_byte():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, 4096, dtype=np.uint8)
    final = image.copy()
    final[1000:1100] ^= 0xFF                      # outputs may change
    assert not len(regress.changed_outside(image, final, 1000, 100))
    final[1100] ^= 1                              # the byte just past them may not
    assert list(regress.changed_outside(image, final, 1000, 100)) == [1100]
    final[999] ^= 0x80
    assert list(regress.changed_outside(image, final, 1000, 100)) == [999, 1100]


def test_bad_outputs_and_written_in():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, 512, dtype=np.uint8)
    gold = image.copy()
    gold[100:200] = ~image[100:200]
    final = image.copy()
    final[100:150] = gold[100:150]                # half written, golden: fine
    assert not len(regress.bad_outputs(image, final, gold, 100, 100))
    assert list(regress.written_in(image, final, 140, 160)) == list(range(140, 150))
    assert not len(regress.written_in(image, final, 150, 200))
    final[170] = image[170] ^ 0x55                # neither untouched nor golden
    assert list(regress.bad_outputs(image, final, gold, 100, 100)) == [170]


def fake(image, status, **kw):
    return SystemResult(image=image, status=status, counters=kw.pop("counters", {}),
                        wall_s=0.0, timed_out=False, irq_cleared=True, magic=regs.MAGIC,
                        **kw)


def test_check_catches_doctored_results():
    """``_check`` passes a faithful result and names each doctored one."""
    layout, image, clean = gemm(5, 6, 7)
    plan = regress._Plan(image, layout.prog_len, clean, layout.prog_addr)
    ok = dict(end_reset_status=0, end_reset_settled=0)
    done = regs.STATUS_DONE
    assert regress._check(plan, None, layout, clean, fake(clean.mem.copy(), done, **ok)) \
        is None
    y = layout.y_addr + 3
    wrong = clean.mem.copy()
    wrong[y] ^= 1
    assert "differs" in regress._check(plan, None, layout, clean, fake(wrong, done, **ok))
    assert "status" in regress._check(plan, None, layout, clean,
                                      fake(clean.mem.copy(), done | regs.STATUS_BUSY, **ok))
    stale = dict(end_reset_status=done, end_reset_settled=0)
    assert "first status" in regress._check(plan, None, layout, clean,
                                            fake(clean.mem.copy(), done, **stale))
    # A reset run: status after the reset, mid-run, a whole run counted.
    counters = {"instructions": clean.instructions}
    good = dict(ok, reset_status=0, reset_mid_run=True, counters=counters)
    assert regress._check(plan, "reset_hard", layout, clean,
                          fake(clean.mem.copy(), done, **good)) is None
    for change, words in ((dict(reset_status=regs.STATUS_ERROR), "right after the reset"),
                          (dict(reset_mid_run=False), "already ended"),
                          (dict(counters={"instructions": 3}), "instructions")):
        msg = regress._check(plan, "reset_soft", layout, clean,
                             fake(clean.mem.copy(), done, **dict(good, **change)))
        assert msg and words in msg, msg
    # A write error: outside unchanged, outputs untouched or golden, the burst untouched.
    plan.expect = isa.Error.AXI_SLVERR
    plan.untouched = (layout.y_addr, layout.y_addr + BB)
    err = regs.STATUS_ERROR | (int(isa.Error.AXI_SLVERR) << regs.STATUS_CODE_SHIFT)
    partial = image.copy()
    tail = slice(layout.y_addr + BB, layout.y_addr + layout.y_bytes)
    partial[tail] = clean.mem[tail]
    assert regress._check(plan, "write_error", layout, clean, fake(partial, err, **ok)) \
        is None
    doctored = partial.copy()
    doctored[layout.a_addr] ^= 0x10
    msg = regress._check(plan, "write_error", layout, clean, fake(doctored, err, **ok))
    assert msg and "outside the outputs" in msg, msg
    a = layout.y_addr + BB + 1
    doctored = partial.copy()
    doctored[a] = min(set(range(256)) - {int(image[a]), int(clean.mem[a])})
    msg = regress._check(plan, "write_error", layout, clean, fake(doctored, err, **ok))
    assert msg and "neither untouched nor golden" in msg, msg
    y0 = layout.y_addr
    assert clean.mem[y0] != image[y0]                   # so a write of it shows
    doctored = partial.copy()
    doctored[y0] = clean.mem[y0]                        # golden, but in the failed burst
    msg = regress._check(plan, "write_error", layout, clean, fake(doctored, err, **ok))
    assert msg and "failed write" in msg, msg
    wrong_code = regs.STATUS_ERROR | (int(isa.Error.AXI_DECERR) << regs.STATUS_CODE_SHIFT)
    msg = regress._check(plan, "write_error", layout, clean, fake(partial, wrong_code, **ok))
    assert msg and "AXI_DECERR" in msg, msg


def test_burst_starts_are_instruction_starts_and_page_boundaries():
    layout, image, _ = gemm(40, 9, 30, base=4096 - 256)
    starts = regress.burst_starts(TINY, layout)
    regions = regress._regions(TINY, layout)
    insns = regress._decode(image, layout.prog_addr, layout.prog_len)
    stores = {b["dram_addr"] for op, _, b in insns if op == isa.Op.STORE}
    assert stores <= set(starts["out"])
    assert starts["prog"][0] == layout.prog_addr
    for name, (first, end) in regions.items():
        assert all(first <= s < end for s in starts[name])
        for page in range((first // 4096 + 1) * 4096, end, 4096):
            assert page in starts[name]
    assert any(s % 4096 == 0 for s in starts["prog"])     # this program crosses 4 KiB


def test_deck_deals_every_kind_often():
    """Each deck of DECK_SIZE seeds holds every kind in its fixed share; 200 seeds from
    any first seed give every kind at least 6 times."""
    share = Counter(regress._DECK)
    assert set(share) == set(regress.KINDS)
    for deck in (0, 1, 20):
        first = deck * regress.DECK_SIZE
        assert Counter(regress._kind(s) for s in range(first, first + regress.DECK_SIZE)) \
            == share
    for start in (0, 13, 1000):
        got = Counter(regress._kind(s) for s in range(start, start + 200))
        assert min(got[k] for k in regress.KINDS) >= 6, got


def test_shapes_hit_the_rare_bins():
    """Over 200 seeds the shape draws give K = 1, K split over k-tiles (accumulate),
    K within one tile (overwrite only), and N beyond the parameter slots, many times."""
    hits = Counter()
    for s in range(200):
        _, _, cfg, m, k, n, _ = regress._case(s, ("verilator", "icarus"))
        hits["k1"] += k == 1
        hits["accumulate"] += k > cfg.rows
        hits["one_tile"] += k <= cfg.rows
        hits["chunks"] += -(-n // cfg.cols) > cfg.param_tiles
    assert hits["k1"] >= 15 and hits["chunks"] >= 10, hits
    assert hits["accumulate"] >= 100 and hits["one_tile"] >= 25, hits


@pytest.mark.parametrize("preset", ["tiny", "fpga", "default"])
def test_campaign_programs_read_only_what_they_wrote(preset):
    """Every buffer entry a campaign program reads (a compiled GEMM, and the random
    vector work after it) was written earlier in the program: a simulator kept running
    across programs holds the last one's data where a fresh one holds zeros, so a read of
    anything else would make the result depend on what ran before (the vector work once
    read back destination rows and masked lanes it never loaded)."""
    from serrano.sw import progen
    cfg = get_preset(preset)
    rng = np.random.default_rng(7)
    for _ in range(150):
        m, k, n = (int(x) for x in rng.integers(1, 3 * cfg.rows, 3))
        a, w, bias, mult, shift, relu, _acc, _ext = regress._operands(rng, cfg, m, k, n)
        layout = regress._compile(cfg, a, w, bias, mult, shift, relu, 4096, None,
                                  raw=bool(rng.integers(2)))
        assert progen.first_undefined_read(
            cfg, (layout.image, layout.prog_addr, layout.prog_len)) is None
        image, prog_addr, prog_len, _ = regress.vector_epilogue(rng, cfg, layout.image,
                                                                layout)
        at = progen.first_undefined_read(cfg, (image, prog_addr, prog_len))
        assert at is None, regress._decode(image, prog_addr, prog_len)[at]
