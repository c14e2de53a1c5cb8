"""The whole accelerator on Amaranth's own simulator, with every monitor every cycle.

:class:`SerranoRun` simulates :class:`hw.top.Serrano` against a cycle-level Python AXI4
memory (:class:`AxiMemory`: random or fixed READYs, VALIDs and latency, per-burst error
responses) and a per-cycle AXI4-Lite host (:class:`Host`) that runs :mod:`hw.regs`'s
register sequences. Every cycle the monitors of :mod:`sim.props` check the AXI4 manager
port and the accumulator inside the core; the run ends with the bus quiet and the
accumulator compared with its shadow. ``tests/test_core_props.py`` uses it with random
knobs and injected errors; :func:`run_program` is the ``amaranth`` backend of
:mod:`sw.backends` (fixed latency, no back-pressure).

No simulator to install: slow (Python per cycle), and the most closely watched.
"""

import dataclasses
import time
import zlib
from collections import deque

import numpy as np
from amaranth.lib import memory
from amaranth.sim import Simulator

from serrano.hw import regs
from serrano.hw.axi import RESP_OKAY
from serrano.hw.buffers import Accumulator
from serrano.hw.top import Serrano
from . import props
from .props import AccumulatorMonitor, serrano_axi_checker

__all__ = ["Knobs", "random_knobs", "seeded", "AxiMemory", "Host", "SerranoRun",
           "AmaranthResult", "run_program"]


def seeded(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


@dataclasses.dataclass
class Knobs:
    """Probability that each ready/valid is offered in a cycle, and the memory latency
    (AR accepted to first R beat; last W beat to B) in cycles."""
    p_ar: float = 0.7
    p_aw: float = 0.7
    p_w: float = 0.7
    p_r: float = 0.7
    p_b: float = 0.7
    latency: tuple = (1, 10)


def random_knobs(rng):
    p = lambda: float(rng.choice([0.25, 0.5, 0.8, 1.0]))      # noqa: E731
    lo = int(rng.integers(1, 8))
    return Knobs(p(), p(), p(), p(), p(), (lo, lo + int(rng.integers(0, 20))))


class AxiMemory:
    """An AXI4 subordinate holding ``image``: in-order responses, random READYs and
    VALIDs, a random latency per burst. ``resp(kind, addr, beats)`` (kind ``"read"`` or
    ``"write"``) gives each burst's response; a write burst answered with an error writes
    nothing. Idle response channels carry random garbage."""

    def __init__(self, image, bus_bytes, rng, knobs, resp=None):
        self.mem = bytearray(image)
        self.B = bus_bytes
        self.rng, self.k = rng, knobs
        self.resp = resp or (lambda kind, addr, beats: RESP_OKAY)
        self.reads = deque()      # [addr, beats, due, beats sent, resp]
        self.r_cur = None         # (data, resp, last) presented on R
        self.aws = deque()        # (addr, beats) accepted, awaiting their W beats
        self.ws = deque()         # (data, strb) accepted W beats
        self.bs = deque()         # (due, resp)
        self.b_cur = None
        self.bursts = []          # (kind, addr, beats, resp, cycle)
        self._driven = {}

    def _bounds(self, addr, beats):
        assert 0 <= addr and addr + beats * self.B <= len(self.mem), \
            f"burst {addr:#x}+{beats} beats outside the memory ({len(self.mem):#x} bytes)"

    def _lat(self):
        return int(self.rng.integers(self.k.latency[0], self.k.latency[1] + 1))

    def idle(self):
        return not (self.reads or self.r_cur or self.aws or self.ws or self.bs
                    or self.b_cur is not None)

    def in_flight(self):
        """``(reads, writes)``: bursts accepted and not yet answered."""
        return len(self.reads), len(self.aws) + len(self.bs) + (self.b_cur is not None)

    def _put(self, ctx, sig, value):
        value = int(value)
        if self._driven.get(id(sig)) != value:      # a set costs a settle: only changes
            self._driven[id(sig)] = value
            ctx.set(sig, value)

    def drive(self, ctx, bus, t):
        rng, k, B, put = self.rng, self.k, self.B, self._put
        put(ctx, bus.arready, rng.random() < k.p_ar)
        put(ctx, bus.awready, rng.random() < k.p_aw)
        put(ctx, bus.wready, rng.random() < k.p_w)
        if self.r_cur is None and self.reads and t >= self.reads[0][2] \
                and rng.random() < k.p_r:
            burst = self.reads[0]
            addr = burst[0] + burst[3] * B
            self.r_cur = (int.from_bytes(self.mem[addr:addr + B], "little"), burst[4],
                          burst[3] == burst[1] - 1)
        if self.r_cur is not None:
            data, resp, last = self.r_cur
        elif rng.random() < 0.3:              # now and then, new garbage on an idle R
            data, resp, last = (int.from_bytes(rng.bytes(B), "little"), int(rng.integers(0, 4)),
                                int(rng.integers(0, 2)))
        else:
            data, resp, last = (self._driven.get(id(sig), 0)
                                for sig in (bus.rdata, bus.rresp, bus.rlast))
        put(ctx, bus.rvalid, self.r_cur is not None)
        put(ctx, bus.rdata, data)
        put(ctx, bus.rresp, resp)
        put(ctx, bus.rlast, last)
        if self.b_cur is None and self.bs and t >= self.bs[0][0] and rng.random() < k.p_b:
            self.b_cur = self.bs.popleft()[1]
        put(ctx, bus.bvalid, self.b_cur is not None)
        if self.b_cur is not None:
            put(ctx, bus.bresp, self.b_cur)
        elif rng.random() < 0.3:
            put(ctx, bus.bresp, int(rng.integers(0, 4)))

    def observe(self, t, s):
        """``s``: this cycle's sampled AXI4 signals; take the transfers of the edge."""
        B = self.B
        if s["rvalid"] and s["rready"]:
            self.reads[0][3] += 1
            if self.r_cur[2]:
                self.reads.popleft()
            self.r_cur = None
        if s["bvalid"] and s["bready"]:
            self.b_cur = None
        if s["arvalid"] and s["arready"]:
            addr, beats = s["araddr"], s["arlen"] + 1
            self._bounds(addr, beats)
            resp = self.resp("read", addr, beats)
            self.bursts.append(("read", addr, beats, resp, t))
            self.reads.append([addr, beats, t + self._lat(), 0, resp])
        if s["awvalid"] and s["awready"]:
            self._bounds(s["awaddr"], s["awlen"] + 1)
            self.aws.append((s["awaddr"], s["awlen"] + 1))
        if s["wvalid"] and s["wready"]:
            self.ws.append((s["wdata"], s["wstrb"]))
        while self.aws and len(self.ws) >= self.aws[0][1]:
            addr, beats = self.aws.popleft()
            resp = self.resp("write", addr, beats)
            self.bursts.append(("write", addr, beats, resp, t))
            for i in range(beats):
                data, strb = self.ws.popleft()
                if resp & 2:
                    continue
                raw = data.to_bytes(B, "little")
                for lane in range(B):
                    if strb >> lane & 1:
                        self.mem[addr + i * B + lane] = raw[lane]
            self.bs.append((t + self._lat(), resp))


class Host:
    """The CPU on the AXI4-Lite port, one operation at a time, stepped every cycle.

    ``scenario`` is a generator yielding :mod:`hw.regs`'s operations and receiving their
    results: ``("write", reg, value)`` (result: BRESP, which must be OKAY),
    ``("read", reg)`` (RDATA), ``("wait_irq", cycles)`` (True, or False after ``cycles``),
    and one more for tests: ``("call", fn)`` (``fn(cycle)`` now; its result).
    ``on_write(cycle, reg, value)`` is called in the cycle the register write takes
    effect."""

    def __init__(self, bus, scenario, on_write):
        self.bus = bus
        self.gen = scenario
        self.on_write = on_write
        self.result = None
        self.done = False
        self.op = None
        self._driven = {}
        self._advance(0, None)

    def _advance(self, t, value):
        while True:
            try:
                self.op = self.gen.send(value) if self.op is not None else next(self.gen)
            except StopIteration as stop:
                self.result, self.done, self.op = stop.value, True, None
                return
            self.aw_done = self.w_done = self.ar_done = False
            self.waited = 0
            if self.op[0] != "call":
                return
            value = self.op[1](t)

    def drive(self, ctx):
        bus, op = self.bus, self.op
        kind = op[0] if op else None
        write, read = kind == "write", kind == "read"
        values = [(bus.awvalid, write and not self.aw_done),
                  (bus.wvalid, write and not self.w_done), (bus.bready, write),
                  (bus.arvalid, read and not self.ar_done), (bus.rready, read)]
        if write:
            values += [(bus.awaddr, regs.address(op[1])), (bus.wdata, op[2]),
                       (bus.wstrb, 0xF)]
        elif read:
            values.append((bus.araddr, regs.address(op[1])))
        for sig, value in values:
            value = int(value)
            if self._driven.get(id(sig)) != value:
                self._driven[id(sig)] = value
                ctx.set(sig, value)

    def observe(self, ctx, t, irq):
        bus, op = self.bus, self.op
        if op is None:
            return
        if op[0] == "write":
            both_before = self.aw_done and self.w_done
            self.aw_done |= bool(ctx.get(bus.awvalid) and ctx.get(bus.awready))
            self.w_done |= bool(ctx.get(bus.wvalid) and ctx.get(bus.wready))
            if self.aw_done and self.w_done and not both_before:
                # The register block registers the write: it acts in the next cycle.
                self.on_write(t + 1, op[1], op[2])
            if ctx.get(bus.bvalid):
                resp = ctx.get(bus.bresp)
                assert resp == RESP_OKAY, f"register write {op[1]} answered {resp}"
                self._advance(t, resp)
        elif op[0] == "read":
            self.ar_done |= bool(ctx.get(bus.arvalid) and ctx.get(bus.arready))
            if ctx.get(bus.rvalid):
                self._advance(t, ctx.get(bus.rdata))
        elif op[0] == "wait_irq":
            if irq:
                self._advance(t, True)
            elif len(op) > 1 and self.waited >= op[1]:
                self._advance(t, False)
            else:
                self.waited += 1


class SerranoRun:
    """One simulation of :class:`hw.top.Serrano` with every monitor stepped every cycle.

    After the scenario ends the run waits for the bus to go quiet, then checks with
    :meth:`AXI4ManagerChecker.finish` and compares the whole accumulator RAM with the
    monitor's shadow. ``image`` is the final memory, ``cycles`` the cycles simulated."""

    def __init__(self, cfg, image, *, seed, knobs=None, resp=None, max_cycles=40_000):
        self.cfg = cfg
        self.rng = seeded(seed)
        self.knobs = knobs or random_knobs(self.rng)
        self.top = Serrano(cfg)
        self.fragment, handles = props.elaborate_with_handles(self.top)
        ((acc_path, self.acc),) = handles.find(Accumulator)
        (self.acc_mem,) = [obj for obj in handles[acc_path + ("mem",)]
                           if isinstance(obj, memory.Memory)]
        self.memory = AxiMemory(image, cfg.bus_bytes, self.rng, self.knobs, resp)
        self.axi = serrano_axi_checker(cfg.bus_bytes, base=0, limit=len(image))
        self.accmon = AccumulatorMonitor(cfg.cols, self.acc.depth, width=cfg.acc_width)
        self.max_cycles = max_cycles
        self.result = None
        self.cycles = 0
        self.reset_requests = []      # (cycle, bursts in flight then)

    def _on_write(self, t, reg, value):
        if reg == "ctrl" and value & regs.CTRL_SOFT_RESET:
            self.axi.stop(t, "soft reset request")
            self.reset_requests.append((t, self.memory.in_flight()))

    def run(self, scenario):
        host = Host(self.top.s_axil, scenario(self), self._on_write)
        sample_axi = props.axi4_sampler(self.top.m_axi)
        sample_acc = props.accumulator_sampler(self.acc)
        m_axi = self.top.m_axi

        async def testbench(ctx):
            t = 0
            quiet = 0
            while not host.done or quiet < 4:
                assert t < self.max_cycles, (
                    f"watchdog: {self.max_cycles} cycles, host waiting on {host.op}, "
                    f"bus counts {self.axi.counts}")
                host.drive(ctx)
                self.memory.drive(ctx, m_axi, t)
                s = sample_axi(ctx)
                self.axi.step(t, s)
                self.accmon.step(t, *sample_acc(ctx))
                self.memory.observe(t, s)
                host.observe(ctx, t, ctx.get(self.top.irq))
                quiet = quiet + 1 if host.done and self.memory.idle() else 0
                await ctx.tick()
                t += 1
            self.cycles = t
            self.axi.finish(t)
            self.accmon.check_contents(t, [ctx.get(self.acc_mem.data[i])
                                           for i in range(self.acc.depth)])

        sim = Simulator(self.fragment)
        sim.add_clock(1e-8)
        sim.add_testbench(testbench)
        sim.run()
        self.result = host.result
        self.image = np.frombuffer(bytes(self.memory.mem), np.uint8)
        return self


@dataclasses.dataclass
class AmaranthResult:
    image: np.ndarray
    status: int
    counters: dict
    timed_out: bool
    cycles: int
    wall_s: float


def run_program(cfg, image, prog_addr, prog_len, *, base=0, limit=None, latency=30,
                timeout_cycles=1_000_000, position=0):
    """Run one program on ``image`` through :func:`hw.regs.run_program` (``position``
    in its register), every ready and valid of the memory offered each cycle and
    ``latency`` (AR to first beat, last W to B) fixed; returns an
    :class:`AmaranthResult`."""
    image = np.asarray(image, np.uint8)
    limit = len(image) if limit is None else limit
    knobs = Knobs(1.0, 1.0, 1.0, 1.0, 1.0, (max(latency, 1), max(latency, 1)))
    run = SerranoRun(cfg, image, seed="amaranth-backend", knobs=knobs,
                     max_cycles=timeout_cycles + 10_000)
    run.axi = serrano_axi_checker(cfg.bus_bytes, base=base, limit=limit)
    t0 = time.perf_counter()
    run.run(lambda _run: regs.run_program(prog_addr, prog_len, base, limit, timeout_cycles,
                                          position))
    out = run.result
    return AmaranthResult(image=run.image.copy(), status=out.status, counters=out.counters,
                          timed_out=out.timed_out, cycles=run.cycles,
                          wall_s=time.perf_counter() - t0)
