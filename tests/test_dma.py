# amaranth: UnusedElaboratable=no
"""DMA engines: golden model (sw.dma_model), RTL (hw.dma_read, hw.dma_write) on Amaranth's
simulator against a cycle-level AXI memory model of this file, and the generated Verilog
under cocotb with cocotbext-axi's AxiRam on Verilator and Icarus.

(The linter comment above stops Amaranth warning about components this file builds only
to see their constructor refuse an argument.)

The memory models here check every cycle, with the monitors of ``sim.props``, that what the
engine drives obeys the handshake rules (a VALID once raised stays until READY, with its
payload unchanged), that each burst is INCR of the bus size, at most 256 beats, inside one
4 KiB page and inside the window; the data and the bursts are compared with
``sw.dma_model``.
"""

import dataclasses
import re
import zlib
from collections import deque

import numpy as np
import pytest
from amaranth.sim import Simulator

from serrano.hw.axi import RESP_OKAY, RESP_SLVERR, RESP_DECERR
from serrano.hw.config import get_preset
from serrano.hw.dma import DMAError, dma_command, BurstSplitter
from serrano.hw.dma_read import DMARead
from serrano.hw.dma_write import DMAWrite
from serrano.sim import runner
from serrano.sim.props import HandshakeChecker, check_burst
from serrano.sim.tb_tops import DMA_TOP, dma_top_verilog
from serrano.sw import dma_model
from serrano.sw.dma_model import Command

PAGE = dma_model.PAGE_BYTES


def seeded(name):
    """A generator seeded from a fixed name: the same stimulus on every run."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def words(blob, bus_bytes):
    """Little-endian bus words of ``blob``."""
    return [int.from_bytes(blob[i:i + bus_bytes], "little")
            for i in range(0, len(blob), bus_bytes)]


def random_command(rng, bus_bytes, mem_size, max_row_beats=600, max_rows=4):
    """A well-formed command that fits in ``mem_size`` bytes: rows of 1 to
    ``max_row_beats`` beats (often long enough for 256-beat bursts and page crossings),
    strides that leave gaps, touch, overlap or repeat rows."""
    for _ in range(1000):
        rows = int(rng.integers(1, max_rows + 1))
        kind = rng.integers(4)
        if kind == 0:
            row_beats = int(rng.integers(1, 9))
        else:
            row_beats = int(rng.integers(1, max_row_beats + 1))
        row_bytes = row_beats * bus_bytes
        gap = rng.choice([0, 0, 1, 7, 300, 1100]) * bus_bytes
        stride = int(row_bytes + gap)
        if rng.random() < 0.1:
            stride = int(rng.integers(0, row_beats + 1)) * bus_bytes    # overlap / repeat
        span = (rows - 1) * stride + row_bytes
        if span > mem_size:
            continue
        if rng.random() < 0.3:          # start a few beats before a page boundary
            page = int(rng.integers(1, mem_size // PAGE))
            addr = page * PAGE - int(rng.integers(1, 9)) * bus_bytes
        else:
            addr = int(rng.integers(0, (mem_size - span) // bus_bytes + 1)) * bus_bytes
        if addr < 0 or addr + span > mem_size:
            continue
        return Command(addr, rows, row_beats, stride)
    raise AssertionError("no command fits")


# ---------------------------------------------------------------------------------------
# Golden model.

def test_model_bursts_hand_examples():
    # 4-byte bus: a 600-beat row from 0x0FF0 crosses a page after 4 beats, then is cut
    # at 256 beats.
    assert dma_model.bursts(Command(0x0FF0, 1, 600, 0), 4) == [
        (0x0FF0, 4), (0x1000, 256), (0x1400, 256), (0x1800, 84)]
    # 16-byte bus: a page holds exactly 256 beats.
    assert dma_model.bursts(Command(0x2000, 2, 300, 0x2000), 16) == [
        (0x2000, 256), (0x3000, 44), (0x4000, 256), (0x5000, 44)]
    # Rows are never merged, even when contiguous.
    assert dma_model.bursts(Command(0, 3, 2, 8), 4) == [(0, 2), (8, 2), (16, 2)]
    assert dma_model.bursts({"addr": 0, "rows": 3, "row_beats": 2, "stride": 8}, 4) == \
        dma_model.bursts((0, 3, 2, 8), 4) == [(0, 2), (8, 2), (16, 2)]
    assert dma_model.command_error(Command(2, 1, 1, 0), 4) == "ALIGN"
    assert dma_model.command_error(Command(0, 1, 1, 6), 4) == "ALIGN"
    assert dma_model.command_error(Command(0, 0, 1, 0), 4) == "ALIGN"
    assert dma_model.command_error(Command(0, 1, 0, 0), 4) == "ALIGN"
    assert dma_model.command_error(Command(0, 1, 1, 0), 4) is None
    with pytest.raises(ValueError, match="malformed command"):
        dma_model.bursts(Command(0, 1, 0, 0), 4)


@pytest.mark.parametrize("bus_bytes", [1, 4, 16, 128])
def test_model_bursts_properties(bus_bytes):
    rng = seeded(f"model-{bus_bytes}")
    for _ in range(200):
        cmd = random_command(rng, bus_bytes, 1 << 20, max_row_beats=1500)
        bs = dma_model.bursts(cmd, bus_bytes)
        for addr, beats in bs:
            assert 1 <= beats <= 256
            assert addr // PAGE == (addr + beats * bus_bytes - 1) // PAGE
        # The bursts cover exactly the rows' beats, in order.
        total = sum(n for _, n in bs)
        assert total == cmd.rows * cmd.row_beats
        beat_addrs = [a + i * bus_bytes for a, n in bs for i in range(n)]
        expect = [s + i * bus_bytes for s, _ in dma_model.byte_ranges(cmd, bus_bytes)
                  for i in range(cmd.row_beats)]
        assert beat_addrs == expect
        # Greedy: a burst ends early only at a page boundary, a row end or 256 beats.
        for a, n in bs:
            end = a + n * bus_bytes
            row_end = any(end == e for _, e in dma_model.byte_ranges(cmd, bus_bytes))
            assert n == 256 or end % PAGE == 0 or row_end


def test_model_gather_scatter():
    rng = seeded("gather")
    mem = rng.integers(0, 256, 1 << 14, dtype=np.uint8).tobytes()
    cmd = Command(0x100, 3, 5, 0x40)
    got = dma_model.gather(mem, cmd, 4)
    assert got == mem[0x100:0x114] + mem[0x140:0x154] + mem[0x180:0x194]
    payload = bytes(range(60))
    after = dma_model.scatter(mem, cmd, 4, payload)
    assert after[0x140:0x154] == payload[20:40]
    assert after[:0x100] == mem[:0x100] and after[0x194:] == mem[0x194:]
    assert after[0x114:0x140] == mem[0x114:0x140]
    with pytest.raises(ValueError, match="payload has 3 bytes"):
        dma_model.scatter(mem, cmd, 4, b"abc")


def test_model_window_prefix():
    cmd = Command(0x0FF0, 1, 600, 0)
    bs = dma_model.bursts(cmd, 4)
    assert dma_model.issued_bursts(cmd, 4, 0, 1 << 32) == (bs, None)
    assert dma_model.issued_bursts(cmd, 4, 0, 0x1400) == (bs[:2], "WINDOW")
    assert dma_model.issued_bursts(cmd, 4, 0, 0x13FF) == (bs[:1], "WINDOW")
    assert dma_model.issued_bursts(cmd, 4, 0x0FF4, 1 << 32) == ([], "WINDOW")
    assert dma_model.issued_bursts(Command(1, 1, 1, 0), 4, 0, 99) == ([], "ALIGN")


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_pack_command_matches_layout(preset):
    cfg = get_preset(preset)
    cmd = Command(0x12345670, 0xBEEF, 0x1234, 0x0ABCDEF0)
    assert dma_model.pack_command(cmd, cfg.addr_width) == \
        dma_command(cfg).const(cmd.as_dict()).as_bits()


# ---------------------------------------------------------------------------------------
# Constructors.

def test_constructor_checks():
    cfg = get_preset("tiny")
    for bad in (0, -1, 2.0, True, None):
        message = "^" + re.escape(f"max_outstanding must be a positive integer, not {bad!r}")
        with pytest.raises(TypeError, match=message + "$"):
            DMARead(cfg, bad)
        with pytest.raises(TypeError, match=message + "$"):
            DMAWrite(cfg, bad)
    with pytest.raises(TypeError, match=r"^cfg must be a Config, not 'tiny'$"):
        DMARead("tiny")
    small = dataclasses.replace(cfg, addr_width=11)
    with pytest.raises(ValueError,
                       match=r"^addr_width must be at least 12 \(one 4 KiB page\), not 11$"):
        DMAWrite(small)
    with pytest.raises(TypeError, match=r"^cfg must be a Config, not None$"):
        BurstSplitter(None)


def test_ports():
    cfg = get_preset("tiny")
    rd, wr = DMARead(cfg), DMAWrite(cfg, 2)
    assert rd.max_outstanding == 4 and wr.max_outstanding == 2
    for dut in (rd, wr):
        members = dut.signature.members
        assert members["bus"].signature.data_bytes == cfg.bus_bytes
        assert members["bus"].signature.addr_width == cfg.addr_width
        assert len(dut.base) == len(dut.limit) == cfg.addr_width
        assert len(dut.data.payload) == 8 * cfg.bus_bytes
        assert len(dut.error.as_value()) == 3
    assert len(rd.bytes_read) == 64 and len(wr.bytes_written) == 64
    assert [e.name for e in DMAError] == ["NONE", "WINDOW", "ALIGN", "SLVERR", "DECERR"]


# ---------------------------------------------------------------------------------------
# Cycle-level AXI memory models for Amaranth's simulator.

@dataclasses.dataclass
class Knobs:
    """Randomness of the environment: probabilities that a ready/valid is offered in a
    cycle, and the memory latency range (AR/AW accepted to first R beat / B)."""
    p_cmd: float = 0.7
    p_addr_ready: float = 0.6      # ARREADY / AWREADY
    p_beat: float = 0.7            # RVALID offered when a beat is due / W data valid
    p_ready: float = 0.7           # data.ready (read) / WREADY (write)
    p_bvalid: float = 0.7
    latency: tuple = (1, 12)


FULL_SPEED = Knobs(1.0, 1.0, 1.0, 1.0, 1.0, (30, 30))


class SimRun:
    """One simulation of ``self.dut`` on Amaranth's simulator, driven by the async
    testbench ``self._tb`` (a subclass provides both); ``run()`` returns ``self``."""

    def run(self):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        sim.add_testbench(self._tb)
        sim.run()
        return self


class ReadRun(SimRun):
    """One simulation of :class:`DMARead` against a memory model.

    ``phases`` is a list of command lists; after each phase the run waits for the engine
    to settle, and if it is in error pulses ``clear`` before the next phase.
    ``r_error`` = ``(burst_index, beat_index, resp)`` answers that beat of that burst (in
    AR order, counting from 0 over the whole run) with ``resp``, and the rest of the burst
    with ``resp`` too. ``abort = (start, stop, starve)`` holds ``abort`` high in cycles
    ``start <= t < stop``, and ``data.ready`` low after ``start`` if ``starve``. ``last_busy[p]`` is
    the last cycle of phase ``p`` with ``busy`` high.
    """

    def __init__(self, cfg, mem, phases, *, base=0, limit=None, knobs=Knobs(), seed="r",
                 max_outstanding=4, r_error=None, abort=None, max_cycles=200_000):
        self.cfg, self.mem, self.phases = cfg, mem, phases
        self.base = base
        self.limit = len(mem) if limit is None else limit
        self.knobs, self.rng = knobs, seeded(seed)
        self.r_error = r_error
        self.abort = abort
        self.max_cycles = max_cycles
        self.dut = DMARead(cfg, max_outstanding)
        # Observations.
        self.ar = []              # (addr, beats, cycle accepted, first presented, phase)
        self.beats = []           # words delivered on data
        self.beat_cycles = []
        self.accepted = []        # cycle of each command handshake
        self.errors = []          # (phase, DMAError, cycle error_valid rose)
        self.max_inflight = 0
        self.bytes_read = None
        self.last_busy = []

    async def _tb(self, ctx):
        dut, cfg, k, rng = self.dut, self.cfg, self.knobs, self.rng
        B = cfg.bus_bytes
        bus = dut.bus
        ctx.set(dut.base, self.base)
        ctx.set(dut.limit, self.limit)
        pending = deque()          # bursts accepted on AR: [addr, beats, due, next_beat]
        r_cur = None               # (word, resp, last) being presented on R
        ar_seen = HandshakeChecker("AR", ("araddr", "arlen", "arsize", "arburst", "arid"))
        data_seen = HandshakeChecker("data")
        ar_first = None
        ar_count = 0
        t = 0
        for phase, cmds in enumerate(self.phases):
            queue = deque(cmds)
            presenting = None
            quiet = 0
            err_seen = False
            self.last_busy.append(None)
            while True:
                assert t < self.max_cycles, "watchdog: the engine did not finish"
                # Drive the inputs for this cycle.
                if presenting is None and queue and rng.random() < k.p_cmd:
                    presenting = queue.popleft()
                ctx.set(dut.cmd.valid, presenting is not None)
                if presenting is not None:
                    ctx.set(dut.cmd.payload, presenting.as_dict())
                ctx.set(bus.arready, bool(rng.random() < k.p_addr_ready))
                if r_cur is None and pending and t >= pending[0][2] \
                        and rng.random() < k.p_beat:
                    burst = pending[0]
                    addr = burst[0] + burst[3] * B
                    word = int.from_bytes(self.mem[addr:addr + B], "little")
                    resp = RESP_OKAY
                    if self.r_error is not None and burst[4] == self.r_error[0] \
                            and burst[3] >= self.r_error[1]:
                        resp = self.r_error[2]
                    r_cur = (word, resp, burst[3] == burst[1] - 1)
                ctx.set(bus.rvalid, r_cur is not None)
                if r_cur is not None:
                    ctx.set(bus.rdata, r_cur[0])
                    ctx.set(bus.rresp, r_cur[1])
                    ctx.set(bus.rlast, r_cur[2])
                else:
                    # Garbage on an idle channel must not matter.
                    ctx.set(bus.rdata, int(rng.integers(0, 1 << (8 * B))))
                    ctx.set(bus.rresp, int(rng.integers(0, 4)))
                    ctx.set(bus.rlast, int(rng.integers(0, 2)))
                ready = bool(rng.random() < k.p_ready)
                if self.abort is not None:
                    aborting = self.abort[0] <= t < self.abort[1]
                    ctx.set(dut.abort, aborting)
                    ready = ready and not (aborting and t > self.abort[0] and self.abort[2])
                ctx.set(dut.data.ready, ready)

                # Sample.
                assert not ctx.get(bus.awvalid) and not ctx.get(bus.wvalid) \
                    and not ctx.get(bus.bready), "the read engine touched AW/W/B"
                arvalid, arready = ctx.get(bus.arvalid), ctx.get(bus.arready)
                ar_payload = (ctx.get(bus.araddr), ctx.get(bus.arlen), ctx.get(bus.arsize),
                              ctx.get(bus.arburst), ctx.get(bus.arid))
                ar_seen.step(t, arvalid, arready, ar_payload)
                if arvalid and ar_first is None:
                    ar_first = t
                dvalid, dready = ctx.get(dut.data.valid), ctx.get(dut.data.ready)
                dpayload = ctx.get(dut.data.payload)
                data_seen.step(t, dvalid, dready, dpayload)
                rready = ctx.get(bus.rready)
                cmd_ready = ctx.get(dut.cmd.ready)
                busy = ctx.get(dut.busy)
                if busy:
                    self.last_busy[phase] = t
                err_valid = ctx.get(dut.error_valid)
                if err_valid and not err_seen:
                    err_seen = True
                    self.errors.append((phase, ctx.get(dut.error), t))
                if not err_valid:
                    assert ctx.get(dut.error) == DMAError.NONE

                self.max_inflight = max(self.max_inflight, len(pending) + arvalid)

                # Handshakes at the coming edge.
                if presenting is not None and cmd_ready:
                    self.accepted.append(t)
                    presenting = None
                if arvalid and arready:
                    addr, length, size, burst, _ = ar_payload
                    check_burst("AR", cfg.bus_bytes, addr, length, size, burst,
                                base=self.base, limit=self.limit, cycle=t)
                    self.ar.append((addr, length + 1, t, ar_first, phase))
                    lat = int(rng.integers(k.latency[0], k.latency[1] + 1))
                    pending.append([addr, length + 1, t + lat, 0, ar_count])
                    ar_count += 1
                    ar_first = None
                if r_cur is not None and rready:
                    pending[0][3] += 1
                    if r_cur[2]:
                        pending.popleft()
                    r_cur = None
                if dvalid and dready:
                    self.beats.append(dpayload)
                    self.beat_cycles.append(t)

                settled = (not queue and presenting is None) or err_valid
                settled = settled and not busy and not pending and r_cur is None
                quiet = quiet + 1 if settled else 0
                if quiet > 20:
                    break
                await ctx.tick()
                t += 1
            self.bytes_read = ctx.get(dut.bytes_read)
            ctx.set(dut.cmd.valid, 0)       # a command refused in error is withdrawn
            if ctx.get(dut.error_valid):
                assert not ctx.get(dut.cmd.ready), "cmd ready while in error"
                ctx.set(dut.clear, 1)
                await ctx.tick()
                t += 1
                ctx.set(dut.clear, 0)
                assert not ctx.get(dut.error_valid), "clear did not clear the error"
                assert ctx.get(dut.error) == DMAError.NONE
            await ctx.tick()
            t += 1
        self.cycles = t


def expected_words(mem, cmds, bus_bytes):
    out = []
    for cmd in cmds:
        out += words(dma_model.gather(mem, cmd, bus_bytes), bus_bytes)
    return out


def expected_bursts(cmds, bus_bytes):
    return [b for cmd in cmds for b in dma_model.bursts(cmd, bus_bytes)]


def random_memory(rng, size):
    return rng.integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_read_random(seed):
    cfg = get_preset("tiny")
    rng = seeded(f"read-random-{seed}")
    mem = random_memory(rng, 1 << 15)
    cmds = [random_command(rng, cfg.bus_bytes, len(mem), max_row_beats=400, max_rows=3)
            for _ in range(3)]
    knobs = Knobs(p_cmd=0.5 + 0.1 * seed, p_addr_ready=0.3 + 0.2 * seed,
                  p_beat=0.9 - 0.15 * seed, p_ready=0.4 + 0.15 * seed,
                  latency=(1, 4 + 8 * seed))
    run = ReadRun(cfg, mem, [cmds], knobs=knobs, seed=f"read-random-{seed}",
                  max_outstanding=1 + seed).run()
    assert not run.errors
    assert [(a, n) for a, n, *_ in run.ar] == expected_bursts(cmds, cfg.bus_bytes)
    assert run.beats == expected_words(mem, cmds, cfg.bus_bytes)
    assert run.bytes_read == len(run.beats) * cfg.bus_bytes
    assert run.max_inflight <= 1 + seed


def test_read_short_rows_and_page_edges():
    cfg = get_preset("tiny")
    rng = seeded("read-short")
    mem = random_memory(rng, 1 << 14)
    cmds = [Command(0x0FFC, 4, 1, 0x1000),           # one beat per row, each at a page end
            Command(0x0FF8, 1, 1024, 0),              # 2 + 256 * 3 + 254 beats
            Command(0x2000, 1, 256, 0),                # exactly one full burst
            Command(0x3000, 5, 3, 0),                  # stride 0: the same row five times
            Command(0x0000, 1, 1, 4)]
    run = ReadRun(cfg, mem, [cmds], seed="read-short").run()
    assert [(a, n) for a, n, *_ in run.ar] == expected_bursts(cmds, cfg.bus_bytes)
    assert run.beats == expected_words(mem, cmds, cfg.bus_bytes)


def test_read_window_error():
    """The burst that would cross ``limit`` is never issued; the ones before it are.
    The data delivered is a prefix, the engine drains, then recovers after clear."""
    cfg = get_preset("tiny")
    rng = seeded("read-window")
    mem = random_memory(rng, 1 << 14)
    bad = Command(0x0FF0, 2, 300, 0x800)      # bursts 0xFF0+4, 0x1000+256, 0x1400+40, ...
    limit = 0x17F8                             # the second row's second burst crosses it
    legal, err = dma_model.issued_bursts(bad, cfg.bus_bytes, 0, limit)
    assert err == "WINDOW" and 0 < len(legal) < len(dma_model.bursts(bad, cfg.bus_bytes))
    good = Command(0x100, 2, 5, 0x20)
    run = ReadRun(cfg, mem, [[bad, good], [good]], limit=limit,
                  seed="read-window").run()
    assert [e[:2] for e in run.errors] == [(0, DMAError.WINDOW)]
    issued = [(a, n) for a, n, *_ in run.ar]
    assert issued == legal + dma_model.bursts(good, cfg.bus_bytes)
    full = expected_words(mem, [bad], cfg.bus_bytes)
    after = expected_words(mem, [good], cfg.bus_bytes)
    delivered = run.beats[:len(run.beats) - len(after)]
    assert run.beats[len(delivered):] == after
    assert delivered == full[:len(delivered)]
    assert len(delivered) <= sum(n for _, n in legal)
    assert len(run.accepted) == 2             # the command queued behind the error waited


@pytest.mark.parametrize("base_off", [0, 4])
def test_read_window_first_burst(base_off):
    """A command whose first burst is outside the window issues nothing at all."""
    cfg = get_preset("tiny")
    mem = bytes(1 << 13)
    cmd = Command(0x400, 1, 8, 0)
    base, limit = (0x404, 0x1000) if base_off else (0, 0x41C)
    run = ReadRun(cfg, mem, [[cmd]], base=base, limit=limit, seed="read-first").run()
    assert run.ar == [] and run.beats == []
    assert [e[:2] for e in run.errors] == [(0, DMAError.WINDOW)]


def test_read_address_overflow_is_a_window_error():
    """Rows past the top of the address space are illegal, never wrapped to address 0."""
    cfg = get_preset("tiny")
    mem = bytes(1 << 12)
    top = 1 << cfg.addr_width
    cmd = Command(0x100, 2, 2, top - 0x80)       # row 1 would wrap to 0x80
    run = ReadRun(cfg, mem, [[cmd]], limit=top - 1, seed="read-wrap").run()
    assert [(a, n) for a, n, *_ in run.ar] == [(0x100, 2)]
    assert [e[:2] for e in run.errors] == [(0, DMAError.WINDOW)]


@pytest.mark.parametrize("bad", [Command(0x102, 1, 4, 0), Command(0x100, 2, 4, 0x22),
                                 Command(0x100, 0, 4, 0x10), Command(0x100, 3, 0, 0x10)],
                         ids=["addr", "stride", "rows0", "beats0"])
def test_read_align_error(bad):
    cfg = get_preset("tiny")
    rng = seeded("read-align")
    mem = random_memory(rng, 1 << 12)
    good = Command(0x200, 2, 3, 0x40)
    run = ReadRun(cfg, mem, [[bad], [good]], seed="read-align").run()
    assert [e[:2] for e in run.errors] == [(0, DMAError.ALIGN)]
    assert [(a, n) for a, n, *_ in run.ar] == dma_model.bursts(good, cfg.bus_bytes)
    assert run.beats == expected_words(mem, [good], cfg.bus_bytes)


@pytest.mark.parametrize("resp,code", [(RESP_SLVERR, DMAError.SLVERR),
                                       (RESP_DECERR, DMAError.DECERR)])
@pytest.mark.parametrize("where", [(0, 0), (1, 37), (3, 255)])
def test_read_bus_error(resp, code, where):
    """An error response stops issuing, drains what is in flight without passing it on,
    and leaves the engine in error until clear; it then works again."""
    cfg = get_preset("tiny")
    rng = seeded(f"read-buserr-{where}")
    mem = random_memory(rng, 1 << 14)
    cmd = Command(0x0000, 2, 1024, 0x1000)        # 8 bursts of 256 beats
    good = Command(0x2400, 1, 20, 0)
    knobs = Knobs(p_ready=0.6, latency=(2, 20))
    run = ReadRun(cfg, mem, [[cmd, good], [good]], knobs=knobs,
                  seed=f"read-buserr-{where}", r_error=(*where, resp)).run()
    assert len(run.errors) == 1
    phase, got, err_cycle = run.errors[0]
    assert (phase, got) == (0, code)
    burst_i, beat_i = where
    bursts = dma_model.bursts(cmd, cfg.bus_bytes)
    # Every beat before the erroring one was delivered, none after.
    before = sum(n for _, n in bursts[:burst_i]) + beat_i
    after = expected_words(mem, [good], cfg.bus_bytes)
    assert run.beats == expected_words(mem, [cmd], cfg.bus_bytes)[:before] + after
    # Nothing presented on AR after the error was seen (one cycle before error_valid).
    failed = [x for x in run.ar if x[4] == 0]
    both = bursts + dma_model.bursts(good, cfg.bus_bytes)
    assert [(a, n) for a, n, *_ in failed] == both[:len(failed)]
    assert all(x[3] <= err_cycle - 1 for x in failed)
    assert burst_i < len(failed) <= burst_i + 4
    assert [(a, n) for a, n, _, _, p in run.ar if p == 1] == [(good.addr, good.row_beats)]


def test_read_error_drains_without_consumer():
    """In error the engine drains its bursts even if the consumer never takes a beat."""
    cfg = get_preset("tiny")
    mem = bytes(1 << 14)
    cmd = Command(0x0, 1, 2048, 0)
    knobs = Knobs(p_ready=0.0, latency=(3, 3))
    run = ReadRun(cfg, mem, [[cmd]], knobs=knobs, seed="read-noconsumer",
                  r_error=(0, 0, RESP_SLVERR)).run()
    assert [e[:2] for e in run.errors] == [(0, DMAError.SLVERR)]
    assert run.beats == []
    assert 1 <= len(run.ar) <= 4 and run.bytes_read == 0


@pytest.mark.parametrize("start,starve", [(0, False), (60, False), (300, True),
                                          (700, False)])
def test_read_abort(start, starve):
    """``abort`` from cycle ``start`` on for 4000 cycles. From the start: the command
    waits, then runs in full. Later (mid-burst; with a consumer that takes nothing; late):
    no AR is presented for the first time after ``start``, the beats delivered are a
    prefix of the command's data with at most one (presented and held) after ``start``,
    the bursts in flight drain while ``abort`` is still high, the error state is
    untouched, and once ``abort`` is low the next command reads normally."""
    cfg = get_preset("tiny")
    rng = seeded(f"read-abort-{start}")
    mem = random_memory(rng, 1 << 14)
    cmd = Command(0x0000, 2, 1024, 0x1000)        # 8 bursts of 256 beats
    good = Command(0x2400, 1, 20, 0)
    stop = start + 4000
    knobs = Knobs(p_ready=1.0 if starve else 0.7, latency=(2, 20))
    run = ReadRun(cfg, mem, [[cmd], [good]], knobs=knobs, seed=f"read-abort-{start}",
                  abort=(start, stop, starve)).run()
    assert run.errors == []
    bursts = dma_model.bursts(cmd, cfg.bus_bytes)
    all_words = expected_words(mem, [cmd, good], cfg.bus_bytes)
    if start == 0:
        assert run.accepted[0] >= stop and run.beats == all_words
        return
    assert run.accepted[0] < start
    first = [x for x in run.ar if x[4] == 0]
    assert all(x[3] <= start for x in first), [x[3] for x in first]
    assert [(a, n) for a, n, *_ in first] == bursts[:len(first)]
    assert len(first) < len(bursts)
    assert start < run.last_busy[0] < stop - 1000, "the drain waited for the abort's end"
    n0 = len(run.beats) - good.row_beats
    assert run.beats[:n0] == all_words[:n0]
    assert sum(1 for c in run.beat_cycles[:n0] if c > start) <= 1
    assert run.beats[n0:] == expected_words(mem, [good], cfg.bus_bytes)
    assert all(c >= stop for c in run.beat_cycles[n0:])
    assert [(a, n) for a, n, _, _, p in run.ar if p == 1] == [(good.addr, good.row_beats)]
    assert run.bytes_read == len(run.beats) * cfg.bus_bytes


@pytest.mark.parametrize("latency", [1, 30, 45])
def test_read_throughput_long_row(latency):
    """1024 beats, memory latency L, one beat per cycle, no back-pressure: the first AR
    is presented 4 cycles after the command was accepted (the splitter plans and checks
    the burst in cycles t + 1 and t + 2, offers it in t + 3, the AR register presents it
    in t + 4), so the first beat leaves L + 4 cycles and the last N + L + 3 cycles after
    the command was accepted (hw.dma_read docs), with no bubble in between."""
    cfg = get_preset("tiny")
    rng = seeded("read-tput")
    mem = random_memory(rng, 1 << 14)
    for addr in (0x1000, 0x0FF8):            # page aligned: 4 bursts; not: 5 bursts
        cmd = Command(addr, 1, 1024, 0)
        knobs = dataclasses.replace(FULL_SPEED, latency=(latency, latency))
        run = ReadRun(cfg, mem, [[cmd]], knobs=knobs, seed="read-tput").run()
        assert run.beats == expected_words(mem, [cmd], cfg.bus_bytes)
        t0 = run.accepted[0]
        assert run.ar[0][2] == t0 + 4               # first AR four cycles after accept
        assert run.beat_cycles[0] - t0 == latency + 4
        assert run.beat_cycles[-1] - t0 == 1024 + latency + 3
        assert np.all(np.diff(run.beat_cycles) == 1), "a bubble in the data stream"


@pytest.mark.parametrize("max_outstanding", [4, 5, 8])
def test_read_throughput_across_rows(max_outstanding):
    """Rows of 8 beats (one 8-beat burst each), L = 30, two commands back to back. The
    documented rate is min(1, b / 2, max_outstanding * b / (L + b + 1)) beats per cycle
    (the splitter offers a burst every 2 cycles; a burst holds its slot L + b + 1 = 39
    cycles): 5 or more bursts in flight (40 beats) stream one beat per cycle, first beat
    L + 4 and last N + L + 3 cycles after the first command is accepted, with no bubble
    even between commands; 4 give the rate 4 * 8 / 39."""
    cfg = get_preset("tiny")
    rng = seeded("read-tput-rows")
    mem = random_memory(rng, 1 << 14)
    cmds = [Command(0x40, 64, 8, 0x60), Command(0x2000, 64, 8, 0x20)]
    run = ReadRun(cfg, mem, [cmds], knobs=FULL_SPEED, seed="read-tput-rows",
                  max_outstanding=max_outstanding).run()
    assert run.beats == expected_words(mem, cmds, cfg.bus_bytes)
    span = run.beat_cycles[-1] - run.accepted[0]
    latency = FULL_SPEED.latency[0]
    rate = min(1, 8 / 2, max_outstanding * 8 / (latency + 8 + 1))
    if rate == 1:
        assert run.beat_cycles[0] - run.accepted[0] == latency + 4
        assert span == 1024 + latency + 3, span
        assert np.all(np.diff(run.beat_cycles) == 1)
    else:
        assert abs(1024 / rate - span) <= latency + 8, (span, 1024 / rate)


@pytest.mark.parametrize("row_beats,max_outstanding", [(1, 20), (2, 20), (3, 20), (1, 4)])
def test_read_throughput_short_rows(row_beats, max_outstanding):
    """Rows of b = 1, 2, 3 beats (one b-beat burst each), L = 30, no back-pressure. The
    splitter offers one burst every 2 cycles, so the documented rate min(1, b / 2,
    max_outstanding * b / (L + b + 1)) is: 1-beat rows with 20 slots exactly one beat
    every 2 cycles (splitter bound; 20 / 32 > 1 / 2); 2- and 3-beat rows one beat per
    cycle with no bubble, the last beat N + L + 3 cycles after the accept; 1-beat rows
    with 4 slots 4 / 32 (slot bound)."""
    cfg = get_preset("tiny")
    rng = seeded("read-tput-short")
    mem = random_memory(rng, 1 << 14)
    rows = 96
    cmd = Command(0x80, rows, row_beats, 0x40)
    run = ReadRun(cfg, mem, [[cmd]], knobs=FULL_SPEED, seed="read-tput-short",
                  max_outstanding=max_outstanding).run()
    assert run.beats == expected_words(mem, [cmd], cfg.bus_bytes)
    latency = FULL_SPEED.latency[0]
    n = rows * row_beats
    t0 = run.accepted[0]
    span = run.beat_cycles[-1] - t0
    assert run.beat_cycles[0] - t0 == latency + 4
    rate = min(1, row_beats / 2, max_outstanding * row_beats / (latency + row_beats + 1))
    if rate == 1:
        assert span == n + latency + 3, span
        assert np.all(np.diff(run.beat_cycles) == 1), "a bubble in the data stream"
    elif rate == row_beats / 2:
        assert np.all(np.diff(run.beat_cycles) == 2), "not one beat every 2 cycles"
        assert span == latency + 4 + 2 * (n - 1), span
    else:
        assert abs(n / rate - span) <= latency + row_beats, (span, n / rate)
        assert np.all(np.diff(run.beat_cycles) >= 2)


@pytest.mark.parametrize("row_beats", [2, 4])
def test_read_throughput_back_to_back_commands(row_beats):
    """40 one-burst commands of b beats, always waiting, L = 30, slots enough: each keeps
    the splitter 2 * 1 + 2 = 4 cycles, so commands are accepted exactly every 4 cycles
    and the data rate is min(1, b / 4) (hw.dma_read docs): 2-beat commands deliver their
    last beat 4 * 39 + L + 4 + 1 cycles after the first accept, 4-beat ones stream with
    no bubble, the last beat N + L + 3 cycles after it."""
    cfg = get_preset("tiny")
    rng = seeded("read-tput-cmds")
    mem = random_memory(rng, 1 << 14)
    cmds = [Command(0x80 + 0x40 * i, 1, row_beats, 0) for i in range(40)]
    run = ReadRun(cfg, mem, [cmds], knobs=FULL_SPEED, seed="read-tput-cmds",
                  max_outstanding=40).run()
    assert run.beats == expected_words(mem, cmds, cfg.bus_bytes)
    assert np.all(np.diff(run.accepted) == 4)
    latency = FULL_SPEED.latency[0]
    span = run.beat_cycles[-1] - run.accepted[0]
    assert span == 4 * (len(cmds) - 1) + latency + 4 + row_beats - 1, span
    if row_beats >= 4:
        assert span == len(cmds) * row_beats + latency + 3
        assert np.all(np.diff(run.beat_cycles) == 1), "a bubble between commands"


class WriteRun(SimRun):
    """One simulation of :class:`DMAWrite` against a memory model (see :class:`ReadRun`).

    ``b_error`` = ``(burst_index, resp)`` answers that burst's B with ``resp``.
    """

    def __init__(self, cfg, mem, phases, payloads, *, base=0, limit=None, knobs=Knobs(),
                 seed="w", max_outstanding=4, b_error=None, max_cycles=200_000):
        self.cfg, self.mem0, self.phases, self.payloads = cfg, mem, phases, payloads
        self.mem = bytearray(mem)
        self.base = base
        self.limit = len(mem) if limit is None else limit
        self.knobs, self.rng = knobs, seeded(seed)
        self.b_error = b_error
        self.max_cycles = max_cycles
        self.dut = DMAWrite(cfg, max_outstanding)
        self.aw = []          # (addr, beats, cycle accepted, first presented, phase)
        self.w = []           # (data, strb, last, cycle)
        self.accepted = []
        self.errors = []
        self.taken = 0        # words taken from the data stream
        self.max_inflight = 0
        self.bytes_written = None

    def _retire(self, t, b_queue):
        """Pair W beats with AW bursts in order; a burst complete on both sides is written
        to memory and its B response scheduled."""
        B = self.cfg.bus_bytes
        while self._aw_done < len(self.aw):
            addr, beats = self.aw[self._aw_done][:2]
            if len(self.w) - self._w_done < beats:
                break
            ws = self.w[self._w_done:self._w_done + beats]
            for i, (data, strb, last, _) in enumerate(ws):
                assert last == (i == beats - 1), f"WLAST wrong in burst {self._aw_done}"
                raw = data.to_bytes(B, "little")
                for lane in range(B):
                    if strb >> lane & 1:
                        self.mem[addr + i * B + lane] = raw[lane]
            resp = RESP_OKAY
            if self.b_error is not None and self._aw_done == self.b_error[0]:
                resp = self.b_error[1]
            lat = int(self.rng.integers(self.knobs.latency[0], self.knobs.latency[1] + 1))
            b_queue.append((max(t, ws[-1][3]) + lat, resp))
            self._aw_done += 1
            self._w_done += beats

    async def _tb(self, ctx):
        dut, cfg, k, rng = self.dut, self.cfg, self.knobs, self.rng
        B = cfg.bus_bytes
        bus = dut.bus
        ctx.set(dut.base, self.base)
        ctx.set(dut.limit, self.limit)
        self._aw_done = self._w_done = 0
        b_queue = deque()
        b_cur = None
        aw_seen = HandshakeChecker("AW", ("awaddr", "awlen", "awsize", "awburst", "awid"))
        w_seen = HandshakeChecker("W", ("wdata", "wstrb", "wlast"))
        aw_first = None
        t = 0
        stream = deque()
        data_cur = None
        for phase, (cmds, payload) in enumerate(zip(self.phases, self.payloads)):
            queue = deque(cmds)
            stream = deque(words(payload, B))
            data_cur = None
            presenting = None
            quiet = 0
            err_seen = False
            while True:
                assert t < self.max_cycles, "watchdog: the engine did not finish"
                if presenting is None and queue and rng.random() < k.p_cmd:
                    presenting = queue.popleft()
                ctx.set(dut.cmd.valid, presenting is not None)
                if presenting is not None:
                    ctx.set(dut.cmd.payload, presenting.as_dict())
                if data_cur is None and stream and rng.random() < k.p_beat:
                    data_cur = stream.popleft()
                ctx.set(dut.data.valid, data_cur is not None)
                ctx.set(dut.data.payload, data_cur if data_cur is not None
                        else int(rng.integers(0, 1 << (8 * B))))
                ctx.set(bus.awready, bool(rng.random() < k.p_addr_ready))
                ctx.set(bus.wready, bool(rng.random() < k.p_ready))
                if b_cur is None and b_queue and t >= b_queue[0][0] \
                        and rng.random() < k.p_bvalid:
                    b_cur = b_queue.popleft()[1]
                ctx.set(bus.bvalid, b_cur is not None)
                ctx.set(bus.bresp, b_cur if b_cur is not None else int(rng.integers(0, 4)))

                assert not ctx.get(bus.arvalid) and not ctx.get(bus.rready), \
                    "the write engine touched AR/R"
                awvalid, awready = ctx.get(bus.awvalid), ctx.get(bus.awready)
                aw_payload = (ctx.get(bus.awaddr), ctx.get(bus.awlen), ctx.get(bus.awsize),
                              ctx.get(bus.awburst), ctx.get(bus.awid))
                aw_seen.step(t, awvalid, awready, aw_payload)
                if awvalid and aw_first is None:
                    aw_first = t
                wvalid, wready = ctx.get(bus.wvalid), ctx.get(bus.wready)
                w_payload = (ctx.get(bus.wdata), ctx.get(bus.wstrb), ctx.get(bus.wlast))
                w_seen.step(t, wvalid, wready, w_payload)
                dready = ctx.get(dut.data.ready)
                bready = ctx.get(bus.bready)
                cmd_ready = ctx.get(dut.cmd.ready)
                busy = ctx.get(dut.busy)
                assert ctx.get(dut.idle) == (not busy)
                err_valid = ctx.get(dut.error_valid)
                if err_valid and not err_seen:
                    err_seen = True
                    self.errors.append((phase, ctx.get(dut.error), t))
                if not err_valid:
                    assert ctx.get(dut.error) == DMAError.NONE

                if presenting is not None and cmd_ready:
                    self.accepted.append(t)
                    presenting = None
                if awvalid and awready:
                    addr, length, size, burst, _ = aw_payload
                    check_burst("AW", cfg.bus_bytes, addr, length, size, burst,
                                base=self.base, limit=self.limit, cycle=t)
                    self.aw.append((addr, length + 1, t, aw_first, phase))
                    aw_first = None
                if wvalid and wready:
                    data, strb, last = w_payload
                    assert strb in (0, (1 << B) - 1), f"partial strobe {strb:#x}"
                    if strb:
                        assert data_cur is not None and dready and data == data_cur, \
                            "W beat with strobes not taken from data"
                    else:
                        assert not dready
                    self.w.append((data, strb, last, t))
                if data_cur is not None and dready:
                    assert wvalid and wready and w_payload[1], "data taken without a W beat"
                    self.taken += 1
                    data_cur = None
                if b_cur is not None and bready:
                    b_cur = None
                self._retire(t, b_queue)
                in_flight = len(self.aw) - self._aw_done + len(b_queue) + (b_cur is not None)
                self.max_inflight = max(self.max_inflight, in_flight)

                settled = (not queue and presenting is None) or err_valid
                settled = settled and not busy and not b_queue and b_cur is None
                quiet = quiet + 1 if settled else 0
                if quiet > 20:
                    break
                await ctx.tick()
                t += 1
            assert self._w_done == len(self.w), "W beats beyond the bursts on AW"
            assert self._aw_done == len(self.aw), "an AW burst never got its W beats"
            self.bytes_written = ctx.get(dut.bytes_written)
            ctx.set(dut.cmd.valid, 0)       # a command refused in error is withdrawn
            if ctx.get(dut.error_valid):
                assert not ctx.get(dut.cmd.ready), "cmd ready while in error"
                ctx.set(dut.clear, 1)
                await ctx.tick()
                t += 1
                ctx.set(dut.clear, 0)
                assert not ctx.get(dut.error_valid), "clear did not clear the error"
            ctx.set(dut.data.valid, 0)
            await ctx.tick()
            t += 1
        self.cycles = t


def random_payload(rng, cmds, bus_bytes):
    return rng.integers(0, 256, sum(c.rows * c.row_beats for c in cmds) * bus_bytes,
                        dtype=np.uint8).tobytes()


def expected_memory(mem, cmds, payload, bus_bytes):
    off = 0
    for cmd in cmds:
        n = cmd.rows * cmd.row_beats * bus_bytes
        mem = dma_model.scatter(mem, cmd, bus_bytes, payload[off:off + n])
        off += n
    return mem


@pytest.mark.parametrize("seed", range(4))
def test_write_random(seed):
    cfg = get_preset("tiny")
    rng = seeded(f"write-random-{seed}")
    mem = random_memory(rng, 1 << 15)
    cmds = [random_command(rng, cfg.bus_bytes, len(mem), max_row_beats=400, max_rows=3)
            for _ in range(3)]
    payload = random_payload(rng, cmds, cfg.bus_bytes)
    knobs = Knobs(p_cmd=0.5 + 0.1 * seed, p_addr_ready=0.3 + 0.2 * seed,
                  p_beat=0.9 - 0.15 * seed, p_ready=0.4 + 0.15 * seed,
                  p_bvalid=0.5 + 0.1 * seed, latency=(1, 4 + 8 * seed))
    run = WriteRun(cfg, mem, [cmds], [payload], knobs=knobs, seed=f"write-random-{seed}",
                   max_outstanding=1 + seed).run()
    assert not run.errors
    assert [(a, n) for a, n, *_ in run.aw] == expected_bursts(cmds, cfg.bus_bytes)
    assert bytes(run.mem) == expected_memory(mem, cmds, payload, cfg.bus_bytes)
    assert run.taken * cfg.bus_bytes == len(payload)
    assert run.bytes_written == len(payload)
    assert run.max_inflight <= 1 + seed


def test_write_window_error():
    """No AW and no W outside the window; bursts committed before the error complete
    (remaining beats with WSTRB 0); the engine recovers after clear."""
    cfg = get_preset("tiny")
    rng = seeded("write-window")
    mem = random_memory(rng, 1 << 14)
    bad = Command(0x0FF0, 2, 300, 0x800)
    limit = 0x17F8
    legal, err = dma_model.issued_bursts(bad, cfg.bus_bytes, 0, limit)
    assert err == "WINDOW"
    good = Command(0x100, 2, 5, 0x20)
    pay_bad = random_payload(rng, [bad, good], cfg.bus_bytes)
    pay_good = random_payload(rng, [good], cfg.bus_bytes)
    knobs = Knobs(p_beat=0.5)
    run = WriteRun(cfg, mem, [[bad, good], [good]], [pay_bad, pay_good], limit=limit,
                   knobs=knobs, seed="write-window").run()
    assert [e[:2] for e in run.errors] == [(0, DMAError.WINDOW)]
    assert [(a, n) for a, n, *_ in run.aw] == legal + dma_model.bursts(good, cfg.bus_bytes)
    # Phase 0 wrote a prefix of the bad command's beats with full strobes, then nulls.
    n_legal = sum(n for _, n in legal)
    w0 = run.w[:n_legal]
    real = [w for w in w0 if w[1]]
    assert all(w[1] for w in w0[:len(real)]), "a real beat after a null beat"
    assert all(w[3] >= run.errors[0][2] - 1 for w in w0[len(real):])
    prefix_words = len(real)
    beats_bad = [a + i * cfg.bus_bytes for a, n in legal for i in range(n)]
    expect = bytearray(mem)
    for i, a in enumerate(beats_bad[:prefix_words]):
        expect[a:a + cfg.bus_bytes] = pay_bad[i * cfg.bus_bytes:(i + 1) * cfg.bus_bytes]
    expect = expected_memory(bytes(expect), [good], pay_good, cfg.bus_bytes)
    assert bytes(run.mem) == expect


@pytest.mark.parametrize("bad", [Command(0x101, 1, 4, 0), Command(0x100, 2, 4, 0x21),
                                 Command(0x100, 0, 4, 0x10), Command(0x100, 3, 0, 0x10)],
                         ids=["addr", "stride", "rows0", "beats0"])
def test_write_align_error(bad):
    cfg = get_preset("tiny")
    rng = seeded("write-align")
    mem = random_memory(rng, 1 << 12)
    good = Command(0x200, 2, 3, 0x40)
    pay = random_payload(rng, [good], cfg.bus_bytes)
    run = WriteRun(cfg, mem, [[bad], [good]], [b"", pay], seed="write-align").run()
    assert [e[:2] for e in run.errors] == [(0, DMAError.ALIGN)]
    assert [(a, n) for a, n, *_ in run.aw] == dma_model.bursts(good, cfg.bus_bytes)
    assert bytes(run.mem) == expected_memory(mem, [good], pay, cfg.bus_bytes)
    assert run.bytes_written == len(pay)


@pytest.mark.parametrize("resp,code", [(RESP_SLVERR, DMAError.SLVERR),
                                       (RESP_DECERR, DMAError.DECERR)])
@pytest.mark.parametrize("burst_i", [0, 2, 5])
def test_write_bus_error(resp, code, burst_i):
    cfg = get_preset("tiny")
    rng = seeded(f"write-buserr-{burst_i}")
    mem = random_memory(rng, 1 << 14)
    cmd = Command(0x0F00, 4, 300, 0x800)
    good = Command(0x3800, 1, 20, 0)
    pay = random_payload(rng, [cmd, good], cfg.bus_bytes)
    pay_good = random_payload(rng, [good], cfg.bus_bytes)
    knobs = Knobs(p_beat=0.8, latency=(2, 15))
    run = WriteRun(cfg, mem, [[cmd, good], [good]], [pay, pay_good], knobs=knobs,
                   seed=f"write-buserr-{burst_i}", b_error=(burst_i, resp)).run()
    assert len(run.errors) == 1
    phase, got, err_cycle = run.errors[0]
    assert (phase, got) == (0, code)
    bursts = dma_model.bursts(cmd, cfg.bus_bytes) + dma_model.bursts(good, cfg.bus_bytes)
    failed = [x for x in run.aw if x[4] == 0]
    assert [(a, n) for a, n, *_ in failed] == bursts[:len(failed)]
    assert burst_i < len(failed) <= burst_i + 4
    assert all(x[3] <= err_cycle - 1 for x in failed), "AW presented after the error"
    assert [(a, n) for a, n, _, _, p in run.aw if p == 1] == [(good.addr, good.row_beats)]
    # Real beats form a prefix of the payload at the right addresses; no real beat after
    # the error; bytes_written counts only OKAY bursts of full-strobe beats.
    n_failed = sum(x[1] for x in failed)
    w0 = run.w[:n_failed]
    n_real = sum(1 for w in w0 if w[1])
    assert all(w[1] for w in w0[:n_real])
    assert all(w[3] < err_cycle for w in w0[:n_real])
    expect = bytearray(mem)
    addrs = [x[0] + i * cfg.bus_bytes for x in failed for i in range(x[1])]
    for i, a in enumerate(addrs[:n_real]):
        expect[a:a + cfg.bus_bytes] = pay[i * cfg.bus_bytes:(i + 1) * cfg.bus_bytes]
    expect = expected_memory(bytes(expect), [good], pay_good, cfg.bus_bytes)
    assert bytes(run.mem) == expect
    ok_real = 0
    pos = 0
    for i, x in enumerate(failed):
        if i != burst_i:
            ok_real += sum(1 for w in w0[pos:pos + x[1]] if w[1])
        pos += x[1]
    assert run.bytes_written == (ok_real + good.row_beats) * cfg.bus_bytes


def test_write_error_needs_no_producer():
    """After an error the committed bursts complete with null beats even if the data
    producer has stopped."""
    cfg = get_preset("tiny")
    mem = bytes(1 << 14)
    cmd = Command(0x0, 1, 2048, 0)
    pay = bytes(range(256)) * 32
    knobs = Knobs(p_beat=0.0)
    run = WriteRun(cfg, mem, [[cmd]], [pay], knobs=knobs, limit=0x100,
                   seed="write-noproducer").run()
    assert [e[:2] for e in run.errors] == [(0, DMAError.WINDOW)]
    assert run.aw == [] and run.w == []
    # A producer that stalls with an error from B: no beats at all were real.
    run = WriteRun(cfg, mem, [[Command(0, 1, 8, 0), cmd]], [pay[:32] + pay],
                   knobs=Knobs(p_beat=1.0, latency=(40, 40)), seed="write-noproducer2",
                   b_error=(0, RESP_SLVERR)).run()
    assert [e[:2] for e in run.errors] == [(0, DMAError.SLVERR)]
    assert sum(n for _, n, *_ in run.aw) == len(run.w)


def test_write_throughput():
    """With every ready high, W streams one beat per cycle across bursts, rows and
    commands; the first AW and the first W beat are presented four cycles after the
    command is accepted (the splitter offers the first burst in t + 3, it is committed
    then, so the AW register and the W queue present it in t + 4)."""
    cfg = get_preset("tiny")
    rng = seeded("write-tput")
    mem = random_memory(rng, 1 << 14)
    cmds = [Command(0x0FF8, 1, 1024, 0), Command(0x2010, 16, 16, 0x80)]
    pay = random_payload(rng, cmds, cfg.bus_bytes)
    knobs = dataclasses.replace(FULL_SPEED, latency=(4, 4))
    run = WriteRun(cfg, mem, [cmds], [pay], knobs=knobs, seed="write-tput",
                   max_outstanding=8).run()
    assert bytes(run.mem) == expected_memory(mem, cmds, pay, cfg.bus_bytes)
    cycles = [w[3] for w in run.w]
    assert run.aw[0][2] == run.accepted[0] + 4
    assert cycles[0] == run.accepted[0] + 4
    assert np.all(np.diff(cycles) == 1), "a bubble in the W stream"


# ---------------------------------------------------------------------------------------
# The burst splitter alone: its documented cycle timing, checked exactly.

class SplitterRun(SimRun):
    """:class:`BurstSplitter` driven with random ``cmd.valid``, ``burst.ready`` and
    ``stop``, every output compared in every cycle with the timing of its docstring:
    a command accepted in cycle ``t`` offers its first burst in ``t + 3`` (or pulses a
    WINDOW error in ``t + 2`` when that burst is illegal); a burst taken in ``u`` is
    followed by the next one in ``u + 2`` (or by the WINDOW error in ``u + 1``); after the
    last burst is taken in ``u``, or after an error strobe in ``u``, the splitter is idle
    (``active`` low, ``cmd`` ready) from ``u + 1``; ALIGN pulses in the accepting cycle;
    ``stop`` hides ``burst.valid`` and ``cmd.ready`` at once and leaves the splitter idle
    the next cycle. The bursts offered are ``sw.dma_model.issued_bursts``."""

    def __init__(self, cfg, cmds, *, base, limit, p_cmd, p_ready, p_stop, seed,
                 max_cycles=50_000):
        self.cfg, self.cmds = cfg, cmds
        self.base, self.limit = base, limit
        self.p_cmd, self.p_ready, self.p_stop = p_cmd, p_ready, p_stop
        self.rng = seeded(seed)
        self.max_cycles = max_cycles
        self.dut = BurstSplitter(cfg)
        self.taken = []           # (addr, beats, cycle)
        self.strobes = []         # (DMAError, cycle)
        self.accepted = []
        self.stops = 0

    async def _tb(self, ctx):
        dut, rng, B = self.dut, self.rng, self.cfg.bus_bytes
        ctx.set(dut.base, self.base)
        ctx.set(dut.limit, self.limit)
        queue = deque(self.cmds)
        presenting = None
        # Model: busy with `todo` bursts left; the next event (offer or WINDOW strobe) is
        # due in cycle `due`; `err` says whether the command ends in a WINDOW error.
        busy, todo, err, due = False, [], None, None
        seen = HandshakeChecker("burst")
        t = 0
        quiet = 0
        while quiet < 8:
            assert t < self.max_cycles, "watchdog: the splitter did not finish"
            if presenting is None and queue and rng.random() < self.p_cmd:
                presenting = queue.popleft()
            ctx.set(dut.cmd.valid, presenting is not None)
            if presenting is not None:
                ctx.set(dut.cmd.payload, presenting.as_dict())
            ctx.set(dut.burst.ready, bool(rng.random() < self.p_ready))
            stop = bool(rng.random() < self.p_stop)
            ctx.set(dut.stop, stop)

            valid, ready = ctx.get(dut.burst.valid), ctx.get(dut.burst.ready)
            payload = (ctx.get(dut.burst.payload.addr), ctx.get(dut.burst.payload.len) + 1)
            seen.step(t, valid, ready, payload)
            strobe, error = ctx.get(dut.error_strobe), ctx.get(dut.error)
            cmd_ready, active = ctx.get(dut.cmd.ready), ctx.get(dut.active)

            offering = busy and todo and t >= due and not stop
            window = busy and not todo and err and t == due and not stop
            aligning = (not busy and not stop and presenting is not None
                        and dma_model.command_error(presenting, B) is not None)
            assert active == busy, f"cycle {t}: active {active}, expected {busy}"
            assert cmd_ready == (not busy and not stop), f"cycle {t}: cmd.ready {cmd_ready}"
            assert valid == bool(offering), f"cycle {t}: burst.valid {valid}"
            if offering:
                assert payload == todo[0], f"cycle {t}: burst {payload}, expected {todo[0]}"
            assert strobe == (window or aligning), f"cycle {t}: error_strobe {strobe}"
            if strobe:
                assert error == (DMAError.WINDOW if window else DMAError.ALIGN)
                self.strobes.append((error, t))

            # The model's next state.
            if stop:
                self.stops += 1
                busy = False
            elif offering and ready:
                self.taken.append((*todo.pop(0), t))
                if todo:
                    due = t + 2
                elif err:
                    due = t + 1
                else:
                    busy = False
            elif window:
                busy = False
            elif not busy and presenting is not None:
                self.accepted.append(t)
                todo, e = dma_model.issued_bursts(presenting, B, self.base, self.limit)
                if e != "ALIGN":
                    busy, err = True, e == "WINDOW"
                    due = t + 3 if todo else t + 2
                presenting = None
            quiet = quiet + 1 if not busy and not queue and presenting is None else 0
            await ctx.tick()
            t += 1
        self.cycles = t


def splitter_commands(rng, bus_bytes, n):
    """Random commands in a 64 KiB space, some with an ALIGN fault."""
    cmds = []
    for _ in range(n):
        cmd = random_command(rng, bus_bytes, 1 << 16, max_row_beats=700, max_rows=4)
        if rng.random() < 0.1:
            cmd = dataclasses.replace(cmd, rows=0) if bus_bytes == 1 else \
                dataclasses.replace(cmd, addr=cmd.addr + 1)
        cmds.append(cmd)
    return cmds


@pytest.mark.parametrize("preset", ["tiny", "default"])
@pytest.mark.parametrize("seed", range(3))
def test_splitter_timing(preset, seed):
    """Exact cycle timing of BurstSplitter against its docstring, with random ready, a
    window that cuts some commands short (first burst or later) and, for seed 2,
    random stop pulses."""
    cfg = get_preset(preset)
    rng = seeded(f"splitter-{preset}-{seed}")
    cmds = splitter_commands(rng, cfg.bus_bytes, 40)
    top = 1 << cfg.addr_width
    cmds.append(Command(0x1000, 2, 2, top - 0x80))      # row 1 overflows the address space
    run = SplitterRun(cfg, cmds, base=0x0800, limit=0xE000, p_cmd=0.6,
                      p_ready=(1.0, 0.6, 0.8)[seed], p_stop=(0, 0, 0.01)[seed],
                      seed=f"splitter-{preset}-{seed}").run()
    assert len(run.accepted) == len(cmds)
    kinds = {e for e, _ in run.strobes}
    if seed < 2:
        # Without stop, everything the model issues is offered and taken.
        expect = [dma_model.issued_bursts(c, cfg.bus_bytes, 0x0800, 0xE000) for c in cmds]
        assert [(a, n) for a, n, _ in run.taken] == [b for bs, _ in expect for b in bs]
        assert [e for e, _ in run.strobes] == [
            DMAError[err] for _, err in expect if err is not None]
        assert kinds == {DMAError.WINDOW, DMAError.ALIGN}
    else:
        assert run.stops > 0
    if seed == 0:
        # burst.ready always high: consecutive bursts of a command are two cycles apart.
        gaps = np.diff([c for _, _, c in run.taken])
        assert min(gaps) == 2


# ---------------------------------------------------------------------------------------
# cocotb on the generated Verilog, with cocotbext-axi's AxiRam.

COCOTB_MEM = 1 << 16
_BUILT = {}


def built_top(sim, preset):
    key = (sim, preset)
    if key not in _BUILT:
        cfg = get_preset(preset)
        text = dma_top_verilog(cfg)
        _BUILT[key] = (runner.build(sim, DMA_TOP, text, tag=f"dma-{preset}"), text)
    return _BUILT[key]


def cocotb_commands(rng, cfg, n, max_row_beats):
    cmds = []
    for _ in range(n):
        cmds.append(random_command(rng, cfg.bus_bytes, COCOTB_MEM,
                                   max_row_beats=max_row_beats, max_rows=3))
    # Always one long row that crosses a page and makes full 256-beat bursts.
    beats = max(300, 2 * PAGE // cfg.bus_bytes)
    cmds.append(Command(3 * PAGE - 4 * cfg.bus_bytes, 1, beats, 0))
    return cmds


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_cocotb_read(simulator, preset):
    cfg = get_preset(preset)
    rng = seeded(f"cocotb-read-{preset}")
    mem = random_memory(rng, COCOTB_MEM)
    cmds = cocotb_commands(rng, cfg, 4, 500 if cfg.bus_bytes == 4 else 300)
    built, text = built_top(simulator, preset)
    case = {
        "bus_bytes": cfg.bus_bytes, "mem_size": COCOTB_MEM, "mem": mem.hex(),
        "base": 0, "limit": COCOTB_MEM,
        "commands": [dma_model.pack_command(c, cfg.addr_width) for c in cmds],
        "beats": sum(c.rows * c.row_beats for c in cmds),
        "seed": 1,
    }
    result, _ = runner.run(built, "serrano.sim.tb.dma_tb", "dma_read", case, verilog_text=text,
                           tag=f"dma-{preset}")
    got = [int(w, 16) for w in result["beats"]]
    assert got == expected_words(mem, cmds, cfg.bus_bytes)
    ars = [tuple(b) for b in result["ar"]]
    assert [(a, n) for a, n, *_ in ars] == expected_bursts(cmds, cfg.bus_bytes)
    for a, n, size, burst in ars:
        check_burst("AR", cfg.bus_bytes, a, n - 1, size, burst, base=0, limit=COCOTB_MEM)
    assert max(n for _, n, *_ in ars) == min(256, PAGE // cfg.bus_bytes)
    assert result["bytes_read"] == len(got) * cfg.bus_bytes
    # The random pauses really stalled the transfer (one beat per cycle would be ~len).
    assert result["cycles"] > 1.2 * len(got), result["cycles"]
    assert result["error_valid"] == 0


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_cocotb_write(simulator, preset):
    cfg = get_preset(preset)
    rng = seeded(f"cocotb-write-{preset}")
    mem = random_memory(rng, COCOTB_MEM)
    cmds = cocotb_commands(rng, cfg, 4, 500 if cfg.bus_bytes == 4 else 300)
    payload = random_payload(rng, cmds, cfg.bus_bytes)
    built, text = built_top(simulator, preset)
    case = {
        "bus_bytes": cfg.bus_bytes, "mem_size": COCOTB_MEM, "mem": mem.hex(),
        "base": 0, "limit": COCOTB_MEM,
        "commands": [dma_model.pack_command(c, cfg.addr_width) for c in cmds],
        "payload": payload.hex(),
        "seed": 2,
    }
    result, _ = runner.run(built, "serrano.sim.tb.dma_tb", "dma_write", case, verilog_text=text,
                           tag=f"dma-{preset}")
    after = bytes.fromhex(result["mem"])
    expect = expected_memory(mem, cmds, payload, cfg.bus_bytes)
    # Every byte outside the written rows unchanged, every written byte as sent.
    assert after == expect
    aws = [tuple(b) for b in result["aw"]]
    assert [(a, n) for a, n, *_ in aws] == expected_bursts(cmds, cfg.bus_bytes)
    for a, n, size, burst in aws:
        check_burst("AW", cfg.bus_bytes, a, n - 1, size, burst, base=0, limit=COCOTB_MEM)
    assert result["bytes_written"] == len(payload)
    assert result["w_beats"] == len(payload) // cfg.bus_bytes
    assert result["cycles"] > 1.2 * result["w_beats"], result["cycles"]
    assert result["error_valid"] == 0

