"""Per-cycle properties of the whole accelerator on Amaranth's simulator (issue #6).

``hw.top.Serrano`` (tiny preset) runs small compiled GEMMs against a cycle-level Python
AXI4 memory with random back-pressure, idle cycles and latency, programmed through its
AXI4-Lite registers by a per-cycle host. Every cycle the monitors of :mod:`sim.props`
check the AXI4 manager port (handshakes, bursts, WLAST against AWLEN, no write after an
error or a soft reset request) and the accumulator inside the core (no lost update, no
read-during-write), and each run ends with the whole memory compared byte for byte with
the golden model :func:`sw.isa_model.run_program`. Error cases inject SLVERR on a write
burst and SLVERR/DECERR on a read burst, check the status code and that nothing is
written after the error, then soft-reset and run the program again.

The second half feeds each monitor hand-made bad traces and checks that it fails, and
runs the real ``Accumulator`` (and a copy broken on purpose) under its monitor.
"""

import numpy as np
import pytest
from amaranth import Module, Mux, Signal
from amaranth.lib import memory
from amaranth.sim import Simulator

from serrano.hw import isa, layouts, regs
from serrano.hw.axi import RESP_OKAY, RESP_SLVERR, RESP_DECERR
from serrano.hw.buffers import Accumulator
from serrano.hw.config import get_preset
from serrano.sim import props
from serrano.sim.amaranth_system import Knobs, SerranoRun, seeded
from serrano.sim.props import (AXI4ManagerChecker, AccumulatorMonitor, HandshakeChecker,
                       PropertyViolation)
from serrano.sw import compiler, isa_model
from tests.stimulus import requant_gemm_operands

TINY = get_preset("tiny")
NO_TIMEOUT = 1 << 40            # SerranoRun's own watchdog ends a hung run first


def program(layout, limit):
    """Scenario step: :func:`hw.regs.run_program` (program the registers, start, wait
    for the interrupt, read the status and the counters, clear the interrupt); returns
    the status register."""
    outcome = yield from regs.run_program(layout.prog_addr, layout.prog_len, 0, limit,
                                          NO_TIMEOUT)
    return outcome.status


def soft_reset(run):
    """Scenario step: :func:`hw.regs.soft_reset`; the bus must then be quiet, and the
    monitors are re-armed (writes allowed again, accumulator shadow dropped)."""
    status, _ = yield from regs.soft_reset(polls=1000)
    assert not status & regs.STATUS_BUSY, "soft reset never finished"

    def rearm(t):
        run.axi.finish(t)
        run.axi.clear(t)
        run.accmon.forget()
    yield ("call", rearm)
    return status


def gemm(rng, cfg, M, K, N, block=None):
    a, w, bias, mult, shift = requant_gemm_operands(rng, M, K, N, bias_bound=3000,
                                                    scale_range=(0.5, 2))
    layout = compiler.compile_gemm(cfg, a, w, bias, mult, shift,
                                   relu=bool(rng.integers(0, 2)), block=block)
    gold = isa_model.run_program(cfg, layout.image, layout.prog_addr, layout.prog_len)
    assert gold.error == isa.Error.NONE
    return layout, gold


def fault_then_rerun(name, layout, respond, knobs=None):
    """Run ``layout``'s program with the memory answering as ``respond`` says, then soft
    reset and run it again. Returns ``(run, status after the fault, memory after the
    fault, AXI transfer counts then, status after the reset, status of the rerun)``."""
    statuses = []

    def scenario(run):
        statuses.append((yield from program(layout, len(layout.image))))
        statuses.append(bytes(run.memory.mem))
        statuses.append(dict(run.axi.counts))
        statuses.append((yield from soft_reset(run)))
        statuses.append((yield from program(layout, len(layout.image))))
    run = SerranoRun(TINY, layout.image, seed=name, knobs=knobs, resp=respond).run(scenario)
    return (run, *statuses)


def status_of(error):
    return regs.STATUS_ERROR | int(error) << regs.STATUS_CODE_SHIFT


def assert_prefix_of_golden(start, final, gold, y_addr, y_bytes):
    """Every byte is its initial or its golden value; outside the output, the initial."""
    start, final, gold = (np.frombuffer(bytes(x), np.uint8) for x in (start, final, gold))
    outside = np.ones(len(start), bool)
    outside[y_addr:y_addr + y_bytes] = False
    np.testing.assert_array_equal(final[outside], start[outside])
    bad = np.flatnonzero((final != start) & (final != gold))
    assert bad.size == 0, f"bytes neither initial nor golden at {[hex(b) for b in bad[:8]]}"


# ---------------------------------------------------------------------------------------
# Whole-accelerator runs.

FULL_SPEED = Knobs(1.0, 1.0, 1.0, 1.0, 1.0, (1, 1))
CRAWL = Knobs(0.3, 0.3, 0.2, 0.2, 0.3, (10, 40))

# (M, K, N, block, knobs): K = 1; K = R; K over several k-tiles, so the first output
# tile's MATMUL is split by k-tile into accumulating parts; several M-blocks
# (double-buffered accumulator halves, activation halves); N not a multiple of C; a
# GEMV (M = 1). knobs None: drawn at random from the case's seed.
SHAPES = [(3, 1, 5, None, None), (4, 9, 6, None, None), (5, 13, 3, 2, None),
          (1, 6, 9, None, None), (6, 8, 8, 3, None), (2, 3, 1, None, None),
          (1, 16, 8, None, None), (8, 16, 8, 4, None), (7, 5, 10, None, None),
          (4, 4, 4, None, None), (9, 12, 5, 3, None), (12, 8, 16, None, None),
          (8, 12, 8, 2, FULL_SPEED), (5, 9, 7, 2, CRAWL)]


def shape_id(case):
    M, K, N, block, knobs = case
    speed = {id(FULL_SPEED): "-full", id(CRAWL): "-crawl"}.get(id(knobs), "")
    return f"{M}x{K}x{N}" + (f"-b{block}" if block else "") + speed


@pytest.mark.parametrize("case", SHAPES, ids=shape_id)
def test_gemm_properties(case):
    """Every monitor passes every cycle and memory ends byte for byte as the golden
    model leaves it."""
    M, K, N, block, knobs = case
    name = f"gemm-{shape_id(case)}"
    layout, gold = gemm(seeded(name), TINY, M, K, N, block)
    limit = len(layout.image)

    def scenario(run):
        return (yield from program(layout, limit))
    run = SerranoRun(TINY, layout.image, seed=name, knobs=knobs).run(scenario)
    assert run.result == regs.STATUS_DONE, f"status {run.result:#x}"
    np.testing.assert_array_equal(run.image, gold.mem)
    assert not run.axi.errors and run.axi.stopped is None
    assert run.axi.counts["w"] == gold.dma_write_bytes // TINY.bus_bytes
    assert run.axi.counts["w_null"] == 0
    n_tiles = -(-N // TINY.cols)
    assert run.accmon.reads == M * n_tiles            # every output row read once
    assert run.accmon.updates == M * n_tiles * -(-K // TINY.rows)


@pytest.mark.parametrize("seed", range(6))
def test_gemm_properties_random(seed):
    """Random shapes (K = 1 and K over up to five k-tiles among them), random M-blocks,
    random bus behaviour: monitors every cycle, memory golden at the end."""
    rng = seeded(f"gemm-random-{seed}")
    M, N = (int(x) for x in rng.integers(1, 11, 2))
    K = 1 if seed == 0 else int(rng.integers(2, 5 * TINY.rows + 1))
    block = int(rng.integers(1, M + 1)) if rng.random() < 0.5 else None
    layout, gold = gemm(rng, TINY, M, K, N, block)

    def scenario(run):
        return (yield from program(layout, len(layout.image)))
    run = SerranoRun(TINY, layout.image, seed=f"gemm-random-{seed}").run(scenario)
    assert run.result == regs.STATUS_DONE, f"{(M, K, N, block)}: status {run.result:#x}"
    np.testing.assert_array_equal(run.image, gold.mem)
    assert not run.axi.errors and run.accmon.reads == M * -(-N // TINY.cols)


def overlaps(addr, beats, cfg, lo, hi):
    return addr < hi and addr + beats * cfg.bus_bytes > lo


# (resp, (M, K, N, block), which output burst fails, knobs, drains): with one-row
# M-blocks and a slow B the next STORE's burst is committed, its data not yet there,
# when the error comes back: it must complete with a null beat.
WRITE_ERRORS = [
    (RESP_SLVERR, (8, 5, 8, 1), 1, Knobs(1.0, 1.0, 0.3, 1.0, 1.0, (30, 40)), True),
    (RESP_DECERR, (8, 6, 12, 4), 3, Knobs(p_aw=1.0, p_w=0.8, p_b=0.5, latency=(6, 14)),
     False),
]


@pytest.mark.parametrize("resp,shape,nth,knobs,drains", WRITE_ERRORS,
                         ids=["slverr-drain", "decerr-third"])
def test_write_error_stops_writes(resp, shape, nth, knobs, drains):
    """The memory answers an error for the ``nth`` write burst in the output region: the
    status names it, no AW is issued and no W beat with strobes is offered after it (the
    AXI monitor), the bursts in flight drain, every byte is its initial or its golden
    value. A soft reset then returns the accelerator to idle with a quiet bus, and the
    same program runs to completion with the golden result."""
    name = f"write-error-{resp}-{nth}"
    layout, gold = gemm(seeded(name), TINY, *shape)
    lo, hi = layout.y_addr, layout.y_addr + layout.y_bytes
    seen = []

    def respond(kind, addr, beats):
        if kind == "write" and overlaps(addr, beats, TINY, lo, hi):
            seen.append(addr)
            if len(seen) == nth:
                return resp
        return RESP_OKAY

    run, failed, after_error, counts, reset, rerun = fault_then_rerun(
        name, layout, respond, knobs)
    code = isa.Error.AXI_SLVERR if resp == RESP_SLVERR else isa.Error.AXI_DECERR
    assert failed == status_of(code), f"status {failed:#x}"
    assert [e[1:] for e in run.axi.errors] == [("B", resp)]
    bad = [b for b in run.memory.bursts if b[3] != RESP_OKAY]
    assert len(bad) == 1 and bad[0][0] == "write"
    assert_prefix_of_golden(layout.image, after_error, gold.mem, lo, hi - lo)
    # The failed burst wrote nothing, nor did anything after it.
    assert np.any(np.frombuffer(after_error, np.uint8) != gold.mem)
    if drains:
        assert counts["aw"] > nth and counts["w_null"] > 0, \
            f"no burst was in flight at the error: the drain went unchecked ({counts})"
    assert reset == 0, f"status after soft reset {reset:#x}"
    assert rerun == regs.STATUS_DONE, f"status of the second run {rerun:#x}"
    np.testing.assert_array_equal(run.image, gold.mem)


@pytest.mark.parametrize("resp,region", [(RESP_SLVERR, "w"), (RESP_DECERR, "a"),
                                         (RESP_SLVERR, "p")],
                         ids=["slverr-weights", "decerr-acts", "slverr-params"])
def test_read_error_stops_writes(resp, region):
    """The memory answers an error for a read burst of the weights (second N-tile), the
    activations or the parameters: the status names it; from one cycle after the failing
    R beat the writer issues nothing; all bytes initial or golden; soft reset, rerun."""
    name = f"read-error-{resp}-{region}"
    rng = seeded(name)
    layout, gold = gemm(rng, TINY, 6, 8, 12, 3)
    kt = -(-layout.K // TINY.rows)
    tile = TINY.rows * TINY.cols
    lo = {"w": layout.w_addr + kt * tile,                  # N-tile 1's weights
          "a": layout.a_addr + layout.M * TINY.rows,       # k-tile 1 of the activations
          "p": layout.p_addr}[region]
    fired = []

    def respond(kind, addr, beats):
        if kind == "read" and not fired and overlaps(addr, beats, TINY, lo, lo + 1):
            fired.append(addr)
            return resp
        return RESP_OKAY

    run, failed, after_error, _counts, reset, rerun = fault_then_rerun(name, layout, respond)
    code = isa.Error.AXI_SLVERR if resp == RESP_SLVERR else isa.Error.AXI_DECERR
    assert fired, "the read error was never injected"
    assert failed == status_of(code), f"status {failed:#x}"
    # Every beat of the failed burst carries the error; nothing else failed.
    (bad,) = [b for b in run.memory.bursts if b[3] != RESP_OKAY]
    assert [e[1:] for e in run.axi.errors] == [("R", resp)] * bad[2]
    assert_prefix_of_golden(layout.image, after_error, gold.mem, layout.y_addr,
                            layout.y_bytes)
    assert reset == 0 and rerun == regs.STATUS_DONE, (reset, rerun)
    np.testing.assert_array_equal(run.image, gold.mem)


def test_soft_reset_mid_run_stops_writes():
    """A soft reset requested while outputs are being written: no write is issued after
    the request (checked by the AXI monitor), the bus drains, and a rerun is golden."""
    name = "soft-reset-mid-run"
    layout, gold = gemm(seeded(name), TINY, 8, 5, 12, 2)
    statuses = []

    def scenario(run):
        for reg, value in (("base", 0), ("limit", len(layout.image)),
                           ("prog_addr", layout.prog_addr), ("prog_len", layout.prog_len),
                           ("ctrl", regs.CTRL_START)):
            yield ("write", reg, value)
        # Wait for the first output bursts, then reset while stores are in flight.
        y = layout.y_addr
        for _ in range(5000):
            writes = [b for b in run.memory.bursts if b[0] == "write" and b[1] >= y]
            if len(writes) >= 3:
                break
            yield ("read", "status")
        statuses.append(len(writes))
        statuses.append((yield from soft_reset(run)))
        statuses.append((yield from program(layout, len(layout.image))))
    run = SerranoRun(TINY, layout.image, seed=name,
                     knobs=Knobs(p_b=0.4, latency=(4, 12))).run(scenario)
    writes_before, reset, rerun = statuses
    assert writes_before >= 3
    ((_, (reads, writes)),) = run.reset_requests
    assert reads + writes > 0, "nothing in flight at the soft reset: drain unchecked"
    assert run.axi.stopped is None         # cleared after the reset
    assert reset == 0 and rerun == regs.STATUS_DONE, (reset, rerun)
    np.testing.assert_array_equal(run.image, gold.mem)


def test_soft_reset_mid_load_stops_reads():
    """A soft reset requested while a ``LOAD_ACT`` issues its bursts (one per row, rows
    apart in memory, a slow memory): no AR is presented after the request (the AXI
    monitor), the load is abandoned with most of its bursts never issued, the data still
    returning is dropped, and a rerun loads every row."""
    name = "soft-reset-mid-load"
    rows, data_at = 128, 0x400
    stride = 4 * TINY.bus_bytes
    prog = isa_model.Program()
    prog.load_act(dram_addr=data_at, dram_stride=stride, rows=rows, row_beats=1,
                  buf_row=0, buf_row_step=1, buf_beat_step=0)
    prog.end()
    image = seeded(name).integers(0, 256, data_at + rows * stride, dtype=np.uint8)
    image[:len(bytes(prog))] = np.frombuffer(bytes(prog), np.uint8)
    n_insns = len(prog.insns)
    statuses = []

    def loads(run):
        return [b for b in run.memory.bursts if b[0] == "read" and b[1] >= data_at]

    def scenario(run):
        for reg, value in (("base", 0), ("limit", len(image)), ("prog_addr", 0),
                           ("prog_len", n_insns), ("ctrl", regs.CTRL_START)):
            yield ("write", reg, value)
        for _ in range(5000):
            if len(loads(run)) >= 4:
                break
            yield ("read", "status")
        statuses.append((yield from soft_reset(run)))
        statuses.append(len(loads(run)))
        outcome = yield from regs.run_program(0, n_insns, 0, len(image), NO_TIMEOUT)
        statuses.append(outcome.status)
    run = SerranoRun(TINY, image, seed=name,
                     knobs=Knobs(p_ar=1.0, latency=(40, 60))).run(scenario)
    reset, issued, rerun = statuses
    ((_, (reads, _writes)),) = run.reset_requests
    assert reads > 0, "no read in flight at the soft reset: drain unchecked"
    assert issued < rows // 4, f"{issued} of {rows} bursts issued despite the reset"
    assert reset == 0 and rerun == regs.STATUS_DONE, (reset, rerun)
    assert len(loads(run)) == issued + rows


# ---------------------------------------------------------------------------------------
# The monitors fail on bad traces.

IDLE = {name: 0 for name in props.AXI4_SIGNALS}


def axi(**values):
    s = dict(IDLE)
    s.update(values)
    return s


AR = dict(arvalid=1, araddr=0x100, arlen=3, arsize=2, arburst=1)
AW = dict(awvalid=1, awaddr=0x200, awlen=1, awsize=2, awburst=1)


def replay(checker, trace):
    for t, s in enumerate(trace):
        checker.step(t, s)
    return checker


def test_handshake_checker():
    ok = HandshakeChecker("ch")
    for t, (v, r, p) in enumerate([(1, 0, 5), (1, 0, 5), (1, 1, 5), (1, 1, 6), (0, 0, 9),
                                   (1, 0, 7), (1, 1, 7)]):
        ok.step(t, v, r, p)
    chk = HandshakeChecker("ch")
    for t, (v, r, p) in enumerate([(0, 0, 5), (1, 0, 5), (1, 0, 5)]):
        chk.step(t, v, r, p)
    assert chk.pending == 5 and chk.since == 1
    with pytest.raises(PropertyViolation, match=r"^ch: VALID withdrawn before READY "
                       r"\(presented since cycle 1\) at cycle 3 \(payload=5\)$"):
        chk.step(3, 0, 0, 5)
    chk = HandshakeChecker("W", ("wdata", "wstrb"))
    chk.step(0, 1, 0, (0x11, 0xF))
    with pytest.raises(PropertyViolation, match=r"^W: payload changed while waiting for "
                       r"READY \(presented since cycle 0\) at cycle 1 \(was wdata=0x11, "
                       r"was wstrb=0xf, now wdata=0x12, now wstrb=0xf\)$"):
        chk.step(1, 1, 1, (0x12, 0xF))


def test_axi_checker_accepts_a_legal_trace():
    """Reads, writes with W ahead of AW and behind it, back-pressure, error then a held
    AW completing and null beats draining, then clear: no violation."""
    C = dict(AW, awaddr=0x400)
    trace = [
        axi(**AR),
        axi(**AR, arready=1),
        axi(wvalid=1, wdata=1, wstrb=0xF, wready=1),                 # W before its AW
        axi(**AW, wvalid=1, wdata=2, wstrb=0xF, wlast=1, wready=1),
        axi(**AW, awready=1, rvalid=1, rready=1, rdata=9),
        axi(rvalid=1, rready=1), axi(rvalid=1, rready=1),
        axi(rvalid=1, rready=1, rlast=1, bvalid=1, bready=1),
        axi(**dict(AW, awaddr=0x300), awready=1),                     # AW before its W
        axi(wvalid=1, wdata=3, wstrb=0xF, wready=0),
        axi(wvalid=1, wdata=3, wstrb=0xF, wready=1),
        axi(**C, wvalid=1, wdata=4, wstrb=0xF, wlast=1, wready=1),    # C presented...
        axi(**C, wvalid=1, wdata=5, wstrb=0xF, wready=0,
            bvalid=1, bresp=RESP_SLVERR, bready=1),                   # ...error here
        axi(**C, wvalid=1, wdata=5, wstrb=0xF, wready=1),             # held beat taken
        axi(**C, awready=1),                                          # held AW completes
        axi(wvalid=1, wstrb=0, wlast=1, wready=1),                    # null beat
        axi(bvalid=1, bresp=RESP_OKAY, bready=1),
    ]
    chk = replay(AXI4ManagerChecker(4, base=0, limit=0x1000), trace)
    assert chk.stopped[0] == 12 and chk.errors == [(12, "B", RESP_SLVERR)]
    chk.finish(len(trace))
    chk.clear()
    chk.step(len(trace), axi(**dict(AW, awaddr=0x500)))               # allowed again
    assert chk.counts == dict(ar=1, aw=3, w=6, w_null=1, r=4, b=3)


@pytest.mark.parametrize("case", [
    ("arvalid dropped", [axi(**AR), axi()], r"m_axi AR: VALID withdrawn before READY"),
    ("awaddr changed", [axi(**AW), axi(**dict(AW, awaddr=0x204))],
     r"m_axi AW: payload changed while waiting for READY .*was awaddr=0x200.*"
     r"now awaddr=0x204"),
    ("wdata changed",
     [axi(wvalid=1, wdata=1, wstrb=0xF), axi(wvalid=1, wdata=2, wstrb=0xF)],
     r"m_axi W: payload changed"),
    ("ar crosses 4 KiB", [axi(**dict(AR, araddr=0xFF8, arlen=2))],
     r"m_axi AR: burst \[0xff8, 0x1004\) crosses a 4 KiB boundary at cycle 0 "
     r"\(addr=0xff8, len=2, beats=3, size=2, burst=1\)"),
    ("aw crosses 4 KiB", [axi(**dict(AW, awaddr=0x1FFC, awlen=1))],
     r"m_axi AW: burst \[0x1ffc, 0x2004\) crosses a 4 KiB boundary"),
    ("fixed burst", [axi(**dict(AR, arburst=0))], r"burst type 0 is not INCR"),
    ("wrap burst", [axi(**dict(AW, awburst=2))], r"burst type 2 is not INCR"),
    ("narrow size", [axi(**dict(AR, arsize=1))],
     r"size 1 \(2 bytes\) is not the bus width \(4 bytes\)"),
    ("unaligned", [axi(**dict(AW, awaddr=0x202))], r"address not aligned"),
    ("window", [axi(**dict(AR, araddr=0x4000))], r"leaves the window \[0x0, 0x4000\)"),
    ("wlast early",
     [axi(**dict(AW, awready=1)), axi(wvalid=1, wstrb=0xF, wlast=1, wready=1)],
     r"WLAST 1 on beat 1 of a 2-beat burst at cycle 1"),
    ("wlast missing", [axi(**dict(AW, awready=1)), axi(wvalid=1, wstrb=0xF, wready=1),
                       axi(wvalid=1, wstrb=0xF, wready=1)],
     r"WLAST 0 on beat 2 of a 2-beat burst at cycle 2"),
    ("w ahead, too short", [axi(wvalid=1, wstrb=0xF, wlast=1, wready=1),
                            axi(**dict(AW, awready=1))],
     r"AW of 2 beats accepted for a W burst of 1 beats"),
    ("w ahead, no wlast", [axi(wvalid=1, wstrb=0xF, wready=1),
                           axi(wvalid=1, wstrb=0xF, wready=1), axi(**dict(AW, awready=1))],
     r"AW of 2 beats accepted after 2 beats of its W burst without WLAST"),
    ("rlast wrong", [axi(**dict(AR, arready=1)), axi(rvalid=1, rready=1, rlast=1)],
     r"RLAST 1 on beat 1 of a 4-beat read burst"),
    ("b too early", [axi(**dict(AW, awready=1)), axi(bvalid=1, bready=1)],
     r"B response before the burst's AW and last W beat"),
], ids=lambda c: c[0])
def test_axi_checker_fails_on_bad_trace(case):
    _, trace, message = case
    with pytest.raises(PropertyViolation, match=message):
        replay(AXI4ManagerChecker(4, base=0, limit=0x4000), trace)


def _error_then(*after, resp=RESP_SLVERR):
    """A complete one-beat write answered with an error at cycle 2, then ``after``."""
    return [axi(**dict(AW, awlen=0, awready=1), wvalid=1, wstrb=0xF, wlast=1, wready=1),
            axi(), axi(bvalid=1, bresp=resp, bready=1), *after]


@pytest.mark.parametrize("case", [
    ("new aw after error", _error_then(axi(**AW)),
     r"^m_axi: write after BRESP SLVERR at cycle 2 \(writes stopped from cycle 2\): a new "
     r"AW presented at cycle 3 \(awaddr=0x200, awlen=1\)$"),
    ("aw much later", _error_then(*[axi()] * 20, axi(**AW), resp=RESP_DECERR),
     r"write after BRESP DECERR at cycle 2 .* a new AW presented at cycle 23"),
    ("strobed w after error", _error_then(axi(), axi(wvalid=1, wstrb=0x1, wdata=7)),
     r"write after BRESP SLVERR .*: a new W beat with strobes presented at cycle 4 "
     r"\(wdata=7, wstrb=1, wlast=0\)"),
], ids=lambda c: c[0])
def test_axi_checker_write_after_error(case):
    _, trace, message = case
    with pytest.raises(PropertyViolation, match=message):
        replay(AXI4ManagerChecker(4), trace)


def test_axi_checker_write_after_error_edges():
    # An AW first presented in the error cycle (committed before it) may complete; a W
    # beat first presented one cycle later (error_valid rising) too; null beats anytime.
    ok = _error_then()
    ok[2].update(AW)
    ok += [axi(**AW, wvalid=1, wstrb=0xF, wdata=1), axi(**AW, awready=1, wvalid=1,
           wstrb=0xF, wdata=1, wready=1), axi(wvalid=1, wstrb=0, wlast=1, wready=1)]
    replay(AXI4ManagerChecker(4), ok)
    # Read errors stop writes read_error_latency cycles later; clear re-arms.
    rd = [axi(**dict(AR, arlen=0, arready=1)), axi(rvalid=1, rready=1, rlast=1, rresp=2),
          axi(**AW)]
    replay(AXI4ManagerChecker(4, read_error_latency=1), rd)        # cycle 2 = 1 + 1: legal
    replay(AXI4ManagerChecker(4), rd + [axi(**AW, awready=1)])     # read errors ignored
    with pytest.raises(PropertyViolation, match=r"write after RRESP SLVERR at cycle 1 "
                       r"\(writes stopped from cycle 1\): a new AW presented at cycle 2"):
        replay(AXI4ManagerChecker(4, read_error_latency=0), rd)
    chk = AXI4ManagerChecker(4)
    chk.stop(5, "soft reset request")
    for t in range(7):
        chk.step(t, axi())
    with pytest.raises(PropertyViolation, match=r"write after soft reset request"):
        chk.step(7, axi(**AW))
    chk = replay(AXI4ManagerChecker(4), _error_then())
    chk.clear(3)
    chk.step(3, axi(**AW))


def _read_error_then(*after):
    """A one-beat read answered SLVERR at cycle 1, then ``after``."""
    return [axi(**dict(AR, arlen=0, arready=1)),
            axi(rvalid=1, rready=1, rlast=1, rresp=RESP_SLVERR), *after]


@pytest.mark.parametrize("case", [
    ("new ar after read error", _read_error_then(axi(**AR)), {},
     r"^m_axi: read after RRESP SLVERR at cycle 1 \(reads stopped from cycle 1\): a new AR "
     r"presented at cycle 2 \(araddr=0x100, arlen=3\)$"),
    ("new ar after write error", _error_then(axi(), axi(**AR)), dict(write_error_latency=1),
     r"read after BRESP SLVERR at cycle 2 \(reads stopped from cycle 3\): a new AR "
     r"presented at cycle 4"),
    ("ar much later", _read_error_then(*[axi()] * 30, axi(**AR)), {},
     r"read after RRESP SLVERR .*: a new AR presented at cycle 32"),
], ids=lambda c: c[0])
def test_axi_checker_read_after_error(case):
    _, trace, kwargs, message = case
    with pytest.raises(PropertyViolation, match=message):
        replay(AXI4ManagerChecker(4, **kwargs), trace)


def test_axi_checker_read_after_error_edges():
    # An AR first presented in the error cycle may wait and complete; R beats of bursts
    # already accepted still arrive.
    ok = _read_error_then()
    ok[1].update(AR)
    ok += [axi(**AR), axi(**AR, arready=1), *[axi(rvalid=1, rready=1)] * 3,
           axi(rvalid=1, rready=1, rlast=1)]
    replay(AXI4ManagerChecker(4), ok).finish(len(ok))
    # A B error stops reads write_error_latency cycles later, or never (None).
    replay(AXI4ManagerChecker(4, write_error_latency=1), _error_then(axi(**AR)))
    replay(AXI4ManagerChecker(4), _error_then(axi(), axi(**AR)))
    # stop() stops reads from its cycle on; clear re-arms them.
    chk = AXI4ManagerChecker(4)
    chk.stop(5, "soft reset request")
    for t in range(5):
        chk.step(t, axi())
    chk.step(5, axi(**AR))
    chk.step(6, axi(**AR, arready=1))                            # held, not new
    with pytest.raises(PropertyViolation, match=r"^m_axi: read after soft reset request "
                       r"\(reads stopped from cycle 5\): a new AR presented at cycle 8"):
        chk.step(7, axi())
        chk.step(8, axi(**dict(AR, araddr=0x200)))
    chk = replay(AXI4ManagerChecker(4), _read_error_then())
    assert chk.reads_stopped[0] == 1 and chk.stopped is None
    chk.clear(2)
    chk.step(2, axi(**AR))


def test_axi_checker_finish_and_args():
    with pytest.raises(PropertyViolation, match=r"AW still waiting for READY at the end"):
        replay(AXI4ManagerChecker(4), [axi(**AW)]).finish(1)
    with pytest.raises(PropertyViolation, match=r"1 AW bursts lack W beats"):
        replay(AXI4ManagerChecker(4), [axi(**dict(AW, awready=1))]).finish(1)
    with pytest.raises(PropertyViolation, match=r"1 read bursts lack R beats"):
        replay(AXI4ManagerChecker(4), [axi(**dict(AR, arready=1))]).finish(1)
    with pytest.raises(TypeError, match=r"^bus_bytes must be a positive power of two, "
                       r"not 3$"):
        AXI4ManagerChecker(3)
    with pytest.raises(TypeError, match=r"^read_error_latency must be None or a "
                       r"non-negative integer, not -1$"):
        AXI4ManagerChecker(4, read_error_latency=-1)
    with pytest.raises(TypeError, match=r"^write_error_latency must be None or a "
                       r"non-negative integer, not 1.5$"):
        AXI4ManagerChecker(4, write_error_latency=1.5)


def acc_trace(mon, steps):
    """``steps``: (upd, rd, rd_data) per cycle; upd = (addr, accumulate, row) or None,
    rd = addr or None."""
    for t, (upd, rd, data) in enumerate(steps):
        ua, uacc, urow = upd if upd else (0, 0, [0] * mon.cols)
        mon.step(t, upd is not None, ua, uacc, urow, rd is not None, rd or 0,
                 data if data is not None else [0] * mon.cols)
    return mon


def test_accumulator_monitor_accepts_a_legal_trace():
    mon = acc_trace(AccumulatorMonitor(2, 8), [
        ((3, 0, [5, -1]), None, None),
        ((3, 1, [2, 2]), None, None),          # back to back, same row
        ((3, 1, [-(1 << 31), 0]), None, None),  # wraps
        (None, None, None),
        (None, None, None),
        (None, 3, None),                        # three cycles after the last update
        ((3, 0, [1, 1]), 3, [7 - (1 << 31), 1]),  # read again while overwritten: old value
        (None, None, [7 - (1 << 31), 1]),
        (None, 6, None), (None, None, [0, 0]),   # never updated: zero
    ])
    assert mon.reads == 3 and mon.updates == 4
    mon.check_contents(10, [0, 0, 0, [1, 1], 0, 0, 0, 0])


def test_accumulator_monitor_visibility_parameter():
    """The read contract is a parameter: two cycles after the update is legal with
    ``visibility=2`` and a hazard with the default (the hardware's 3)."""
    steps = [((1, 0, [5]), None, None), (None, None, None), (None, 1, None),
             (None, None, [5])]
    assert acc_trace(AccumulatorMonitor(1, 4, visibility=2), steps).reads == 1
    with pytest.raises(PropertyViolation, match=r"row 1 read 2 cycles after its update "
                       r"at cycle 0, which a read sees only from cycle 3"):
        acc_trace(AccumulatorMonitor(1, 4), steps)
    with pytest.raises(TypeError, match=r"^visibility must be a positive integer, "
                       r"not 0$"):
        AccumulatorMonitor(1, 4, visibility=0)


@pytest.mark.parametrize("case", [
    ("lost back-to-back update",
     [((1, 0, [5]), None, None), ((1, 1, [3]), None, None), (None, None, None),
      (None, None, None), (None, 1, None), (None, None, [3])],
     r"^accumulator: lost update: the read of row 1 issued at cycle 4 returned \[3\], the "
     r"updates before it give \[8\] \(last updates of the row: cycle 0: = \[5\]; cycle 1: "
     r"\+= \[3\]\) at cycle 5 \(rd_addr=1, rd_data=3\)$"),
    ("lost update two apart",
     [((1, 0, [5]), None, None), (None, None, None), ((1, 1, [3]), None, None),
      (None, None, None), (None, None, None), (None, 1, None), (None, None, [3])],
     r"lost update: the read of row 1 issued at cycle 5 returned \[3\].*give \[8\]"),
    ("overwrite lost", [((2, 1, [4]), None, None), ((2, 0, [9]), None, None),
                        (None, None, None), (None, None, None), (None, 2, None),
                        (None, None, [4])],
     r"lost update: the read of row 2 issued at cycle 4 returned \[4\].*give \[9\]"),
    ("read during write", [((1, 0, [5]), None, None), (None, 1, None)],
     r"read-during-write hazard: row 1 read 1 cycle after its update at cycle 0, which a "
     r"read sees only from cycle 3"),
    ("read two cycles after the update",
     [((1, 0, [5]), None, None), (None, None, None), (None, 1, None)],
     r"read-during-write hazard: row 1 read 2 cycles after its update at cycle 0"),
    ("stale read, value equal", [((1, 1, [0]), None, None), (None, 1, [0])],
     r"read-during-write hazard"),
], ids=lambda c: c[0])
def test_accumulator_monitor_fails_on_bad_trace(case):
    _, steps, message = case
    with pytest.raises(PropertyViolation, match=message):
        acc_trace(AccumulatorMonitor(1, 4), steps)


def test_accumulator_monitor_contents_and_forget():
    mon = acc_trace(AccumulatorMonitor(1, 4), [((2, 0, [6]), None, None),
                                               ((2, 1, [1]), None, None)])
    with pytest.raises(PropertyViolation, match=r"lost update in 1 rows: row 2 holds "
                       r"\[6\], the updates give \[7\]"):
        mon.check_contents(2, [0, 0, 6, 0])
    mon.forget()                    # unknown rows: not checked, until overwritten
    mon.check_contents(2, [1, 2, 3, 4])
    acc_trace(mon, [((0, 1, [1]), None, None), ((1, 0, [5]), None, None)])
    mon.check_contents(5, [123, 5, 0, 0])
    with pytest.raises(PropertyViolation, match=r"row 1 holds \[4\]"):
        mon.check_contents(5, [123, 4, 0, 0])
    with pytest.raises(TypeError, match=r"^cols must be a positive integer, not 0$"):
        AccumulatorMonitor(0, 4)


class NonTransparentAccumulator(Accumulator):
    """A deliberately broken copy: the old two-stage read-modify-write with its bypass
    removed (read port not transparent), so the second of two same-row updates in
    consecutive cycles reads the row before the first is written back, and the first is
    lost."""

    def elaborate(self, platform):
        m = Module()
        row = layouts.psum_row(self.cfg)
        m.submodules.mem = mem = memory.Memory(shape=row, depth=self.depth, init=[])
        wp = mem.write_port()
        rmw = mem.read_port()
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en),
                     self.rd_data.eq(rp.data), rmw.addr.eq(self.upd_addr), rmw.en.eq(1)]
        s1_valid, s1_acc = Signal(), Signal()
        s1_addr = Signal.like(self.upd_addr)
        s1_data = Signal(row)
        m.d.sync += [s1_valid.eq(self.upd_valid), s1_addr.eq(self.upd_addr),
                     s1_acc.eq(self.upd_accumulate), s1_data.eq(self.upd_data)]
        m.d.comb += [wp.addr.eq(s1_addr), wp.en.eq(s1_valid)]
        for c in range(self.cfg.cols):
            m.d.comb += wp.data[c].eq(s1_data[c] + Mux(s1_acc, rmw.data[c], 0))
        return m


class UnforwardedAccumulator(Accumulator):
    """A deliberately broken copy of the three-stage pipeline with one forwarding path
    missing: ``drop="newest"`` loses the first of two same-row updates one cycle apart,
    ``drop="older"`` the first of two updates two cycles apart."""

    def __init__(self, cfg, drop):
        super().__init__(cfg)
        self.drop = drop

    def elaborate(self, platform):
        m = Module()
        row = layouts.psum_row(self.cfg)
        m.submodules.mem = mem = memory.Memory(shape=row, depth=self.depth, init=[])
        wp, rmw, rp = mem.write_port(), mem.read_port(), mem.read_port()
        m.d.comb += [rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en),
                     self.rd_data.eq(rp.data), rmw.addr.eq(self.upd_addr), rmw.en.eq(1)]
        s1 = [Signal(), Signal.like(self.upd_addr), Signal(), Signal(row)]
        s2 = [Signal(), Signal.like(self.upd_addr), Signal(), Signal(row)]
        w1 = [Signal(), Signal.like(self.upd_addr), Signal(row)]
        w2 = [Signal(), Signal.like(self.upd_addr), Signal(row)]
        ram, f1, f2, new = Signal(row), Signal(), Signal(), Signal(row)
        m.d.sync += [a.eq(b) for a, b in zip(s1, (self.upd_valid, self.upd_addr,
                                                  self.upd_accumulate, self.upd_data))]
        m.d.sync += [a.eq(b) for a, b in zip(s2, s1)] + [ram.eq(rmw.data)]
        if self.drop != "newest":
            m.d.sync += f1.eq(s2[0] & (s2[1] == s1[1]))
        if self.drop != "older":
            m.d.sync += f2.eq(w1[0] & (w1[1] == s1[1]))
        for c in range(self.cfg.cols):
            base = Mux(f1, w1[2][c], Mux(f2, w2[2][c], ram[c]))
            m.d.comb += new[c].eq(s2[3][c] + Mux(s2[2], base, 0))
        m.d.comb += [wp.addr.eq(s2[1]), wp.data.eq(new), wp.en.eq(s2[0])]
        m.d.sync += [a.eq(b) for a, b in zip(w1, (s2[0], s2[1], new))]
        m.d.sync += [a.eq(b) for a, b in zip(w2, w1)]
        return m


def drive_accumulator(dut, seed, cycles=400, rows=4):
    """Random updates (many same-row, back to back) and reads kept clear of any update
    to the row the monitor's ``visibility`` says is not yet written back (reads right at
    that boundary included), with the monitor on the ports."""
    rng = seeded(seed)
    cfg = dut.cfg
    mon = AccumulatorMonitor(cfg.cols, dut.depth, width=cfg.acc_width)
    sample = props.accumulator_sampler(dut)

    async def tb(ctx):
        last = {}
        for t in range(cycles):
            upd = rng.random() < 0.7
            addr = int(rng.integers(0, rows))
            ctx.set(dut.upd_valid, upd)
            ctx.set(dut.upd_addr, addr)
            ctx.set(dut.upd_accumulate, bool(rng.random() < 0.8))
            ctx.set(dut.upd_data, [int(x) for x in rng.integers(-(1 << 31), 1 << 31,
                                                                cfg.cols)])
            rd = int(rng.integers(0, rows))
            ok = last.get(rd, -9) <= t - mon.visibility  # one this very cycle is fine
            ctx.set(dut.rd_en, ok and bool(rng.random() < 0.5))
            ctx.set(dut.rd_addr, rd)
            mon.step(t, *sample(ctx))
            if upd:
                last[addr] = t
            await ctx.tick()
        ctx.set(dut.upd_valid, 0)
        ctx.set(dut.rd_en, 0)
        drain = Accumulator.WRITE_LATENCY            # the last update is written back
        for t in range(cycles, cycles + drain):
            mon.step(t, *sample(ctx))
            await ctx.tick()
        mon.check_contents(cycles + drain, [ctx.get(mem.data[i]) for i in range(dut.depth)])

    fragment, handles = props.elaborate_with_handles(dut)
    (mem,) = [o for o in handles[("mem",)] if isinstance(o, memory.Memory)]
    sim = Simulator(fragment)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return mon


def test_accumulator_rtl_under_monitor():
    """The real Accumulator passes; the copies without bypass or without one of the two
    forwarding paths lose an update and the monitor says so."""
    mon = drive_accumulator(Accumulator(TINY), "acc-rtl")
    assert mon.reads > 50 and mon.updates > 200
    for broken in (NonTransparentAccumulator(TINY), UnforwardedAccumulator(TINY, "newest"),
                   UnforwardedAccumulator(TINY, "older")):
        with pytest.raises(PropertyViolation, match=r"lost update"):
            drive_accumulator(broken, "acc-rtl")
