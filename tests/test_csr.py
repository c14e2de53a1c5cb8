# amaranth: UnusedElaboratable=no
"""Tests of hw.csr: the register descriptors, the AXI4-Lite CSR block on Amaranth's
simulator (cycle by cycle, against a reference model written from the spec), and its
generated Verilog under Verilator and Icarus driven by cocotbext-axi's AxiLiteMaster.

(The first line silences Amaranth's UnusedElaboratable for this file: blocks are built
here only to read their map or signature, or to check that a constructor refuses.)"""

import numpy as np
import pytest
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from serrano.hw.axi import AXI4LiteSignature, RESP_OKAY, RESP_SLVERR
from serrano.hw.csr import CSRBlock, MapEntry, Register, counter64, register_map
from serrano.sim import runner
from serrano.sim.verilog import signal_ports

ADDR_WIDTH = 8          # 64 words: the example's 9 registers, the rest unmapped
EXAMPLE_REGS = (
    Register("ctrl", doc="control word"),
    Register("scale", width=12, init=0x5A5, doc="a 12-bit setting with a reset value"),
    Register("version", width=16, access="ro", doc="design version"),
    Register("cmd", width=4, access="w1s", doc="command pulses: start, flush..."),
    Register("irq", width=5, access="w1c", init=0b00100, doc="sticky interrupt status"),
    *counter64("cycles", "clock cycles"),
    Register("status", access="ro", doc="core status"),
    Register("mode", width=3, init=5, doc="a narrow setting"),
)
UNMAPPED = 4 * len(EXAMPLE_REGS)
MAX_CYCLES = 20_000     # watchdog of every Amaranth simulation

W1S_NAMES = [r.name for r in EXAMPLE_REGS if r.access == "w1s"]


# ---- reference model (from the spec, not from the RTL) -----------------------------

def strobe_mask(strb):
    return sum(0xFF << 8 * b for b in range(4) if strb >> b & 1)


class CSRModel:
    """What a host and the core see, access by access."""

    def __init__(self, registers):
        self.regs = list(registers)
        self.value = {r.name: r.init for r in self.regs if r.access in ("rw", "w1c")}
        self.ro = {r.name: 0 for r in self.regs if r.access == "ro"}
        self.shadow = {r.name: 0 for r in self.regs if r.snapshot_of}
        self.pulses = {r.name: [] for r in self.regs if r.access == "w1s"}

    def _reg(self, addr):
        index = addr // 4
        return self.regs[index] if index < len(self.regs) else None

    def write(self, addr, data, strb=0xF):
        reg = self._reg(addr)
        if reg is None or reg.access == "ro":
            return RESP_SLVERR
        ones = data & strobe_mask(strb) & ((1 << reg.width) - 1)
        if reg.access == "rw":
            keep = self.value[reg.name] & ~strobe_mask(strb)
            self.value[reg.name] = keep | ones
        elif reg.access == "w1c":
            self.value[reg.name] &= ~ones
        elif ones:
            self.pulses[reg.name].append(ones)
        return RESP_OKAY

    def read(self, addr):
        reg = self._reg(addr)
        if reg is None:
            return RESP_SLVERR, 0
        if reg.access == "w1s":
            return RESP_OKAY, 0
        if reg.access != "ro":
            return RESP_OKAY, self.value[reg.name]
        for hi in self.regs:
            if hi.snapshot_of == reg.name:
                self.shadow[hi.name] = self.ro[hi.name]
        if reg.snapshot_of:
            return RESP_OKAY, self.shadow[reg.name]
        return RESP_OKAY, self.ro[reg.name] & ((1 << reg.width) - 1)

    def core_set(self, name, bits):
        self.value[name] |= bits


# ---- an AXI4-Lite host for Amaranth's simulator --------------------------------------

class Host:
    """Drives ``bus`` from a testbench; every wait is bounded (the watchdog).

    ``cycle`` counts clock cycles; ``trace[k]`` holds the ``watch`` signals during cycle
    ``k``. After :meth:`write`, ``last_write`` is the cycle of the later AW/W handshake;
    after :meth:`read`, ``last_read`` is the cycle of the AR handshake.
    """

    def __init__(self, ctx, bus, watch=(), limit=64):
        self.ctx, self.bus, self.watch, self.limit = ctx, bus, tuple(watch), limit
        self.cycle = 0
        self.trace = []
        for sig in (bus.awvalid, bus.wvalid, bus.bready, bus.arvalid, bus.rready):
            ctx.set(sig, 0)

    async def tick(self, n=1):
        for _ in range(n):
            assert self.cycle < MAX_CYCLES, "watchdog: simulation ran too long"
            self.trace.append(tuple(self.ctx.get(s) for s in self.watch))
            await self.ctx.tick()
            self.cycle += 1

    async def _response(self, valid, ready, fields, delay, early):
        """Wait for ``valid``; hold ``ready`` low ``delay`` cycles checking that the
        response stays put (or high from the start if ``early``); return the fields."""
        ctx = self.ctx
        if early:
            ctx.set(ready, 1)
        waited = 0
        while not ctx.get(valid):
            assert waited < self.limit, "watchdog: no response"
            await self.tick()
            waited += 1
        self._valid_since = self.cycle
        seen = tuple(ctx.get(f) for f in fields)
        if not early:
            for _ in range(delay):
                await self.tick()
                assert ctx.get(valid), "VALID dropped before READY"
                assert tuple(ctx.get(f) for f in fields) == seen, "response changed under back-pressure"
            ctx.set(ready, 1)
        await self.tick()
        ctx.set(ready, 0)
        assert not ctx.get(valid), "VALID stayed high after the handshake"
        return seen

    async def write(self, addr, data, strb=0xF, *, order="together", gap=0,
                    bready_delay=0, bready_early=False):
        """One write; ``order`` is "together", "aw_first" or "w_first", the second
        channel starting ``gap`` cycles after the first one's handshake.
        Returns ``(bresp, latency)``: cycles from the last handshake to BVALID."""
        ctx, bus = self.ctx, self.bus
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wdata, data)
        ctx.set(bus.wstrb, strb)
        aw_at = 0 if order in ("together", "aw_first") else None
        w_at = 0 if order in ("together", "w_first") else None
        aw_done = w_done = False
        k = 0
        while not (aw_done and w_done):
            assert k < self.limit, "watchdog: AW/W not accepted"
            assert not ctx.get(bus.bvalid), "BVALID before both AW and W were accepted"
            aw_on = not aw_done and aw_at is not None and k >= aw_at
            w_on = not w_done and w_at is not None and k >= w_at
            ctx.set(bus.awvalid, aw_on)
            ctx.set(bus.wvalid, w_on)
            aw_hs = aw_on and ctx.get(bus.awready)
            w_hs = w_on and ctx.get(bus.wready)
            await self.tick()
            k += 1
            # after a handshake the payload is garbage: the block must have kept it
            if aw_hs:
                aw_done = True
                w_at = k + gap if w_at is None else w_at
                ctx.set(bus.awaddr, ~addr)
            if w_hs:
                w_done = True
                aw_at = k + gap if aw_at is None else aw_at
                ctx.set(bus.wdata, ~data)
                ctx.set(bus.wstrb, ~strb)
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        self.last_write = self.cycle - 1
        (resp,) = await self._response(bus.bvalid, bus.bready, (bus.bresp,),
                                       bready_delay, bready_early)
        return resp, self._valid_since - self.last_write

    async def read(self, addr, *, rready_delay=0, rready_early=False):
        """One read. Returns ``(rresp, rdata, latency)``: cycles from AR to RVALID."""
        ctx, bus = self.ctx, self.bus
        ctx.set(bus.araddr, addr)
        ctx.set(bus.arvalid, 1)
        k = 0
        while not ctx.get(bus.arready):
            assert k < self.limit, "watchdog: AR not accepted"
            await self.tick()
            k += 1
        await self.tick()
        ctx.set(bus.arvalid, 0)
        ctx.set(bus.araddr, ~addr)
        self.last_read = self.cycle - 1
        resp, data = await self._response(bus.rvalid, bus.rready, (bus.rresp, bus.rdata),
                                          rready_delay, rready_early)
        return resp, data, self._valid_since - self.last_read


def simulate(dut, main, *background):
    """Run testbench ``main`` (with ``background`` device models) to its end; every
    wait in :class:`Host` is bounded, so a stuck bus fails instead of hanging."""
    finished = []

    async def run_main(ctx):
        await main(ctx)
        finished.append(True)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(run_main)
    for tb in background:
        sim.add_testbench(tb, background=True)
    sim.run()
    assert finished, "testbench did not finish"


def example_block():
    return CSRBlock(EXAMPLE_REGS, addr_width=ADDR_WIDTH)


def check_outputs(ctx, dut, model):
    for name, value in model.value.items():
        assert ctx.get(getattr(dut, name)) == value, f"{name} port"


# ---- descriptors, map and argument checks --------------------------------------------

def test_address_of_and_register_map():
    dut = example_block()
    names = [r.name for r in EXAMPLE_REGS]
    assert [dut.address_of(n) for n in names] == [4 * i for i in range(len(names))]
    rmap = dut.register_map()
    assert rmap[0] == (0, "ctrl", "rw", 32, "control word")
    assert rmap[1] == MapEntry(4, "scale", "rw", 12, "a 12-bit setting with a reset value")
    assert [(e.address, e.name, e.access, e.width) for e in rmap] == \
        [(4 * i, r.name, r.access, r.width) for i, r in enumerate(EXAMPLE_REGS)]
    assert all(isinstance(e, tuple) and len(e) == 5 for e in rmap)
    assert dut.address_of("cycles_hi") == dut.address_of("cycles_lo") + 4
    assert register_map(EXAMPLE_REGS) == rmap         # no hardware needed for the map
    with pytest.raises(ValueError, match="^register name 'a' is used more than once$"):
        register_map([Register("a"), Register("a", access="ro")])
    with pytest.raises(KeyError, match="no register named 'nope'"):
        dut.address_of("nope")


def test_ports_follow_the_register_list():
    members = example_block().signature.members
    assert members["bus"] == In(AXI4LiteSignature(addr_width=ADDR_WIDTH))
    assert members["ctrl"] == Out(32, init=0)
    assert members["scale"] == Out(12, init=0x5A5)
    assert members["version"] == In(16)
    assert members["cmd"] == Out(4, init=0)
    assert members["irq"] == Out(5, init=0b00100) and members["irq_set"] == In(5)
    assert members["cycles_lo"] == members["cycles_hi"] == In(32)
    assert set(members) == {"bus", "ctrl", "scale", "version", "cmd", "irq", "irq_set",
                            "cycles_lo", "cycles_hi", "status", "mode"}


def test_counter64_descriptors():
    lo, hi = counter64("ops", "operations")
    assert (lo.name, lo.access, lo.width, lo.snapshot_of) == ("ops_lo", "ro", 32, None)
    assert (hi.name, hi.access, hi.width, hi.snapshot_of) == ("ops_hi", "ro", 32, "ops_lo")
    assert lo.doc.startswith("operations: ") and "ops_hi" in lo.doc


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(name="1x"), ValueError,
     "name must be a Python identifier not starting with '_', not '1x'"),
    (dict(name="_x"), ValueError,
     "name must be a Python identifier not starting with '_', not '_x'"),
    (dict(name="x", width=0), TypeError, "width must be a positive integer, not 0"),
    (dict(name="x", width=8.0), TypeError, "width must be a positive integer, not 8.0"),
    (dict(name="x", width=33), ValueError, "width must be at most 32, not 33"),
    (dict(name="x", access="wo"), ValueError,
     "access must be one of 'rw', 'ro', 'w1s', 'w1c', not 'wo'"),
    (dict(name="x", width=4, init=16), ValueError, r"init must be in range\(2\*\*4\), not 16"),
    (dict(name="x", init=-1), ValueError, r"init must be in range\(2\*\*32\), not -1"),
    (dict(name="x", init="0"), TypeError, "init must be an integer, not '0'"),
    (dict(name="x", access="ro", init=1), ValueError,
     "init must be 0 for a 'ro' register, not 1"),
    (dict(name="x", access="w1s", init=1), ValueError,
     "init must be 0 for a 'w1s' register, not 1"),
    (dict(name="x", doc=3), TypeError, "doc must be a string, not 3"),
    (dict(name="x", snapshot_of="y"), ValueError,
     "snapshot_of applies only to 'ro' registers, not to a 'rw' register"),
    (dict(name="x", access="ro", snapshot_of="x"), ValueError,
     "snapshot_of must name another register, not 'x'"),
])
def test_register_argument_errors(kwargs, exc, message):
    with pytest.raises(exc, match=f"^{message}$"):
        Register(**kwargs)


@pytest.mark.parametrize("args, kwargs, exc, message", [
    ((EXAMPLE_REGS,), dict(addr_width=0), TypeError,
     "addr_width must be a positive integer, not 0"),
    ((EXAMPLE_REGS,), dict(addr_width="8"), TypeError,
     "addr_width must be a positive integer, not '8'"),
    ((EXAMPLE_REGS,), dict(addr_width=1), ValueError,
     r"addr_width must be at least 2 \(word addresses\), not 1"),
    (([],), {}, ValueError, "registers must hold at least one Register"),
    ((["ctrl"],), {}, TypeError, "registers must be Register objects, not 'ctrl'"),
    ((EXAMPLE_REGS,), dict(addr_width=5), ValueError,
     "9 registers need 36 bytes of address space, more than addr_width=5 gives"),
    (([Register("a"), Register("a")],), {}, ValueError,
     "port name 'a' of register 'a' is already used"),
    (([Register("a", access="w1c"), Register("a_set")],), {}, ValueError,
     "port name 'a_set' of register 'a_set' is already used"),
    (([Register("bus")],), {}, ValueError, "port name 'bus' of register 'bus' is already used"),
    (([Register("register_map")],), {}, ValueError,
     "port name 'register_map' of register 'register_map' is reserved by CSRBlock"),
    (([Register("hi", access="ro", snapshot_of="lo")],), {}, ValueError,
     "snapshot_of of register 'hi' must name a 'ro' register of this block that is not "
     "itself a snapshot, not 'lo'"),
    (([Register("lo"), Register("hi", access="ro", snapshot_of="lo")],), {}, ValueError,
     "snapshot_of of register 'hi' must name a 'ro' register"),
])
def test_csrblock_argument_errors(args, kwargs, exc, message):
    with pytest.raises(exc, match=f"^{message}"):
        CSRBlock(*args, **kwargs)


# ---- Amaranth simulation: one behaviour per test --------------------------------------

def test_rw_with_strobes():
    dut = example_block()
    rng = np.random.default_rng(1)
    model = CSRModel(EXAMPLE_REGS)
    names = ["ctrl", "scale", "mode"]

    async def main(ctx):
        host = Host(ctx, dut.bus, watch=[getattr(dut, n) for n in names])
        check_outputs(ctx, dut, model)               # reset values
        for name in names:
            assert (await host.read(dut.address_of(name)))[:2] == (RESP_OKAY, model.value[name])
        for _ in range(60):
            name = names[rng.integers(len(names))]
            addr = dut.address_of(name)
            data, strb = int(rng.integers(1 << 32)), int(rng.integers(16))
            old = model.value[name]
            resp, latency = await host.write(addr, data, strb)
            assert (resp, latency) == (model.write(addr, data, strb), 1)
            col = names.index(name)
            assert host.trace[host.last_write][col] == old
            assert host.trace[host.last_write + 1][col] == model.value[name]
            check_outputs(ctx, dut, model)
            assert (await host.read(addr))[:2] == model.read(addr)
        assert {v for v in model.value.values()} != {0}    # the test wrote something

    simulate(dut, main)


def test_ro_reads_the_core_value_and_refuses_writes():
    dut = example_block()
    rng = np.random.default_rng(2)
    model = CSRModel(EXAMPLE_REGS)

    async def main(ctx):
        host = Host(ctx, dut.bus)
        for _ in range(20):
            for name, bits in (("version", 16), ("status", 32)):
                model.ro[name] = int(rng.integers(1 << bits))
                ctx.set(getattr(dut, name), model.ro[name])
            for name in ("version", "status"):
                addr = dut.address_of(name)
                resp, data, latency = await host.read(addr, rready_early=bool(rng.integers(2)))
                assert (resp, data, latency) == (RESP_OKAY, model.ro[name], 1)
                resp, _ = await host.write(addr, int(rng.integers(1 << 32)))
                assert resp == RESP_SLVERR
                check_outputs(ctx, dut, model)
                assert (await host.read(addr))[:2] == (RESP_OKAY, model.ro[name])

    simulate(dut, main)


def test_w1s_pulse_lasts_exactly_one_cycle():
    dut = example_block()
    rng = np.random.default_rng(3)
    addr = dut.address_of("cmd")
    expected = []

    async def main(ctx):
        host = Host(ctx, dut.bus, watch=[dut.cmd])
        for k in range(40):
            data, strb = int(rng.integers(1 << 32)), int(rng.integers(16))
            if k < 4:
                data, strb = 1 << k, 0xF              # each bit alone first
            resp, latency = await host.write(addr, data, strb,
                                             order=["together", "aw_first", "w_first"][k % 3])
            assert (resp, latency) == (RESP_OKAY, 1)
            pulse = data & strobe_mask(strb) & 0xF
            if pulse:
                expected.append((host.last_write + 1, pulse))
            assert (await host.read(addr))[:2] == (RESP_OKAY, 0)    # w1s reads 0
        await host.tick(3)
        seen = [(k, v[0]) for k, v in enumerate(host.trace) if v[0]]
        assert seen == expected
        assert len(expected) > 20

    simulate(dut, main)


def test_w1c_set_by_core_cleared_by_host():
    dut = example_block()
    rng = np.random.default_rng(4)
    model = CSRModel(EXAMPLE_REGS)
    addr = dut.address_of("irq")

    async def main(ctx):
        host = Host(ctx, dut.bus, watch=[dut.irq])
        assert (await host.read(addr))[:2] == (RESP_OKAY, 0b00100)     # init
        for _ in range(30):
            bits = int(rng.integers(32))
            ctx.set(dut.irq_set, bits)
            await host.tick()
            ctx.set(dut.irq_set, 0)
            model.core_set("irq", bits)
            assert host.trace[-1][0] | bits == model.value["irq"]     # not yet set...
            assert ctx.get(dut.irq) == model.value["irq"]              # ...set one cycle on
            assert (await host.read(addr))[:2] == (RESP_OKAY, model.value["irq"])
            data, strb = int(rng.integers(1 << 32)), int(rng.choice([0x1, 0xF, 0xE, 0x0]))
            resp, latency = await host.write(addr, data, strb)
            assert (resp, latency) == (model.write(addr, data, strb), 1)
            check_outputs(ctx, dut, model)
            assert (await host.read(addr))[:2] == (RESP_OKAY, model.value["irq"])

    simulate(dut, main)


def test_w1c_set_wins_over_a_clear_in_the_same_cycle():
    dut = example_block()
    bus = dut.bus

    async def main(ctx):
        host = Host(ctx, bus)
        ctx.set(dut.irq_set, 0b11111)
        await host.tick()
        ctx.set(dut.irq_set, 0)
        await host.tick()
        assert ctx.get(dut.irq) == 0b11111
        # AW and W together; the write takes effect at the end of this very cycle
        ctx.set(bus.awaddr, dut.address_of("irq"))
        ctx.set(bus.wdata, 0b11111)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        ctx.set(dut.irq_set, 0b00010)
        assert ctx.get(bus.awready) and ctx.get(bus.wready)
        await host.tick()
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        ctx.set(dut.irq_set, 0)
        assert ctx.get(bus.bvalid) and ctx.get(bus.bresp) == RESP_OKAY
        assert ctx.get(dut.irq) == 0b00010

    simulate(dut, main)


def test_counter64_snapshot_is_consistent_while_the_counter_moves():
    dut = example_block()
    rng = np.random.default_rng(5)
    step = 0x4000_0001          # odd, and the high word moves every 4 cycles or so
    history = []                # history[k]: the counter during cycle k
    lo_addr, hi_addr = dut.address_of("cycles_lo"), dut.address_of("cycles_hi")

    async def counter(ctx):
        value = 0xFFFF_FFF0_0000_0000
        while True:
            ctx.set(dut.cycles_lo, value & 0xFFFF_FFFF)
            ctx.set(dut.cycles_hi, value >> 32)
            history.append(value)
            await ctx.tick()
            value = (value + step) % (1 << 64)

    async def main(ctx):
        host = Host(ctx, dut.bus)
        moved = 0
        for _ in range(40):
            resp_lo, lo, _ = await host.read(lo_addr, rready_delay=int(rng.integers(3)))
            sampled_at = host.last_read
            await host.tick(int(rng.integers(6)))
            resp_hi, hi, _ = await host.read(hi_addr, rready_delay=int(rng.integers(3)))
            assert resp_lo == resp_hi == RESP_OKAY
            assert lo | hi << 32 == history[sampled_at]
            moved += (history[host.last_read] >> 32) != hi
            # _hi keeps the latched word until _lo is read again
            assert (await host.read(hi_addr))[:2] == (RESP_OKAY, hi)
        assert moved > 30       # a live _hi would have given torn pairs

    simulate(dut, main, counter)


@pytest.mark.parametrize("gap", [0, 1, 3])
@pytest.mark.parametrize("order", ["together", "aw_first", "w_first"])
def test_write_channel_orders(order, gap):
    dut = example_block()
    rng = np.random.default_rng(6)
    addr = dut.address_of("ctrl")

    async def main(ctx):
        host = Host(ctx, dut.bus, watch=[dut.ctrl])
        for _ in range(5):
            old = ctx.get(dut.ctrl)
            data = int(rng.integers(1 << 32))
            resp, latency = await host.write(addr, data, order=order, gap=gap)
            assert (resp, latency) == (RESP_OKAY, 1)
            assert host.trace[host.last_write][0] == old
            assert host.trace[host.last_write + 1][0] == data
            assert (await host.read(addr))[:2] == (RESP_OKAY, data)

    simulate(dut, main)


def test_slverr_on_unmapped_and_on_ro_writes_changes_nothing():
    dut = example_block()
    model = CSRModel(EXAMPLE_REGS)
    last_word = (1 << ADDR_WIDTH) - 4
    refused = [UNMAPPED, UNMAPPED + 5, last_word, dut.address_of("version"),
               dut.address_of("cycles_lo"), dut.address_of("cycles_hi"),
               dut.address_of("status")]

    async def main(ctx):
        host = Host(ctx, dut.bus, watch=[dut.cmd])
        for addr in refused:
            for order in ("together", "aw_first", "w_first"):
                resp, latency = await host.write(addr, 0xFFFF_FFFF, order=order)
                assert (resp, latency) == (RESP_SLVERR, 1)
                check_outputs(ctx, dut, model)
        for addr in (UNMAPPED, UNMAPPED + 2, last_word):
            assert await host.read(addr) == (RESP_SLVERR, 0, 1)
        # mapped accesses still answer OKAY afterwards
        assert (await host.write(dut.address_of("ctrl"), 7))[0] == RESP_OKAY
        assert (await host.read(dut.address_of("ctrl")))[:2] == (RESP_OKAY, 7)
        assert not any(v[0] for v in host.trace)       # no w1s pulse

    simulate(dut, main)


def test_backpressure_holds_responses():
    dut = example_block()
    rng = np.random.default_rng(7)
    model = CSRModel(EXAMPLE_REGS)

    async def main(ctx):
        host = Host(ctx, dut.bus)
        for delay in (1, 2, 5, 9):
            for name in ("ctrl", "version", "mode"):
                addr = dut.address_of(name)
                data = int(rng.integers(1 << 32))
                resp, latency = await host.write(addr, data, bready_delay=delay)
                assert (resp, latency) == (model.write(addr, data), 1)
                assert await host.read(addr, rready_delay=delay) == (*model.read(addr), 1)
            assert await host.read(UNMAPPED, rready_delay=delay) == (RESP_SLVERR, 0, 1)
            assert (await host.write(UNMAPPED, 1, bready_delay=delay))[0] == RESP_SLVERR

    simulate(dut, main)


def test_write_accepted_while_b_pending_takes_effect_after_b():
    dut = example_block()
    bus = dut.bus
    addr = dut.address_of("ctrl")

    async def main(ctx):
        host = Host(ctx, bus)
        ctx.set(bus.awaddr, addr)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.wdata, 0xAAAA_0001)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        await host.tick()                               # first write accepted
        ctx.set(bus.wdata, 0xBBBB_0002)                 # second write, B still pending
        assert ctx.get(bus.bvalid) and ctx.get(dut.ctrl) == 0xAAAA_0001
        assert ctx.get(bus.awready) and ctx.get(bus.wready)
        await host.tick()                               # ... accepted and held
        ctx.set(bus.awvalid, 0)
        ctx.set(bus.wvalid, 0)
        for _ in range(4):
            assert not ctx.get(bus.awready) and not ctx.get(bus.wready)
            assert ctx.get(bus.bvalid) and ctx.get(bus.bresp) == RESP_OKAY
            assert ctx.get(dut.ctrl) == 0xAAAA_0001
            await host.tick()
        ctx.set(bus.bready, 1)
        await host.tick()                               # first B taken
        ctx.set(bus.bready, 0)
        assert not ctx.get(bus.bvalid) and ctx.get(dut.ctrl) == 0xAAAA_0001
        await host.tick()                               # the held write happens
        assert ctx.get(bus.bvalid) and ctx.get(dut.ctrl) == 0xBBBB_0002
        ctx.set(bus.bready, 1)
        await host.tick()
        ctx.set(bus.bready, 0)
        assert not ctx.get(bus.bvalid)
        assert ctx.get(bus.awready) and ctx.get(bus.wready)

    simulate(dut, main)


def test_read_presented_while_r_pending_waits_for_rready():
    dut = example_block()
    bus = dut.bus

    async def main(ctx):
        host = Host(ctx, bus)
        assert (await host.write(dut.address_of("ctrl"), 0x1234_5678))[0] == RESP_OKAY
        ctx.set(bus.araddr, dut.address_of("ctrl"))
        ctx.set(bus.arvalid, 1)
        assert ctx.get(bus.arready)
        await host.tick()                               # first read accepted
        ctx.set(bus.araddr, dut.address_of("scale"))    # second read, R still pending
        for _ in range(4):
            assert ctx.get(bus.rvalid) and ctx.get(bus.rresp) == RESP_OKAY
            assert ctx.get(bus.rdata) == 0x1234_5678
            await host.tick()
        ctx.set(bus.rready, 1)
        beats = []
        for _ in range(8):                              # R1 taken, then AR2 accepted
            if ctx.get(bus.rvalid):
                beats.append(ctx.get(bus.rdata))
            ar_hs = ctx.get(bus.arvalid) and ctx.get(bus.arready)
            await host.tick()
            if ar_hs:
                ctx.set(bus.arvalid, 0)
        ctx.set(bus.rready, 0)
        assert beats == [0x1234_5678, 0x5A5]
        assert (await host.read(dut.address_of("mode")))[:2] == (RESP_OKAY, 5)

    simulate(dut, main)


def test_random_traffic_against_model():
    dut = example_block()
    rng = np.random.default_rng(8)
    model = CSRModel(EXAMPLE_REGS)
    expected_pulses = []
    ro_widths = {r.name: r.width for r in EXAMPLE_REGS if r.access == "ro"}
    kinds = {"write": 0, "read": 0, "slverr": 0}

    def random_addr():
        index = int(rng.integers(len(EXAMPLE_REGS) + 3))
        if index >= len(EXAMPLE_REGS):
            index = int(rng.integers(len(EXAMPLE_REGS), 1 << (ADDR_WIDTH - 2)))
        return 4 * index + int(rng.integers(4))            # low bits are ignored

    async def main(ctx):
        host = Host(ctx, dut.bus, watch=[dut.cmd])
        for _ in range(400):
            op = rng.random()
            if op < 0.4:
                addr, data, strb = random_addr(), int(rng.integers(1 << 32)), int(rng.integers(16))
                resp, latency = await host.write(
                    addr, data, strb, order=["together", "aw_first", "w_first"][rng.integers(3)],
                    gap=int(rng.integers(3)), bready_delay=int(rng.integers(3)),
                    bready_early=bool(rng.integers(2)))
                pulses_before = len(model.pulses["cmd"])
                assert (resp, latency) == (model.write(addr, data, strb), 1)
                if len(model.pulses["cmd"]) > pulses_before:
                    expected_pulses.append((host.last_write + 1, model.pulses["cmd"][-1]))
                kinds["write"] += 1
                kinds["slverr"] += resp == RESP_SLVERR
                check_outputs(ctx, dut, model)
            elif op < 0.8:
                addr = random_addr()
                resp, data, latency = await host.read(addr, rready_delay=int(rng.integers(3)),
                                                      rready_early=bool(rng.integers(2)))
                assert (resp, data, latency) == (*model.read(addr), 1)
                kinds["read"] += 1
            elif op < 0.9:
                name = list(ro_widths)[rng.integers(len(ro_widths))]
                model.ro[name] = int(rng.integers(1 << ro_widths[name]))
                ctx.set(getattr(dut, name), model.ro[name])
                await host.tick()
            else:
                bits = int(rng.integers(32))
                ctx.set(dut.irq_set, bits)
                await host.tick()
                ctx.set(dut.irq_set, 0)
                model.core_set("irq", bits)
                check_outputs(ctx, dut, model)
        await host.tick(3)
        assert [(k, v[0]) for k, v in enumerate(host.trace) if v[0]] == expected_pulses
        assert min(kinds.values()) > 20 and len(expected_pulses) > 5

    simulate(dut, main)


def test_narrow_address_space_fills_every_word():
    # 4 registers in a 4-word space: no unmapped word, and the decode must not alias.
    regs = [Register("a"), Register("b", width=8), Register("c", access="ro"),
            Register("d", width=1, access="w1c")]
    dut = CSRBlock(regs, addr_width=4)
    model = CSRModel(regs)

    async def main(ctx):
        host = Host(ctx, dut.bus)
        ctx.set(dut.c, 0x1234_5678)
        model.ro["c"] = 0x1234_5678
        for i, data in enumerate([0x1111_1111, 0x2222_2222, 0x3333_3333, 0x1]):
            assert (await host.write(4 * i, data))[0] == model.write(4 * i, data)
        for i in range(4):
            assert (await host.read(4 * i))[:2] == model.read(4 * i)
        check_outputs(ctx, dut, model)

    simulate(dut, main)


# ---- generated Verilog under Verilator and Icarus, driven by cocotbext-axi --------------

CSR_TOP = "serrano_csr_example"


class CSRExampleTop(wiring.Component):
    """The example block with its bus named ``s_axil`` (Verilog ``s_axil__awvalid``...),
    the prefix cocotbext-axi looks for; register ports keep their names."""

    def __init__(self, registers, addr_width):
        self._csr = CSRBlock(registers, addr_width)
        members = {"s_axil": In(AXI4LiteSignature(addr_width=addr_width))}
        members.update((name, member) for name, member in self._csr.signature.members.items()
                       if name != "bus")
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = csr = self._csr
        wiring.connect(m, wiring.flipped(self.s_axil), csr.bus)
        for name, member in self.signature.members.items():
            if name == "s_axil":
                continue
            if member.flow == wiring.In:
                m.d.comb += getattr(csr, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(csr, name))
        return m


@pytest.fixture(scope="module")
def csr_verilog():
    top = CSRExampleTop(EXAMPLE_REGS, ADDR_WIDTH)
    text = verilog.convert(top, name=CSR_TOP, emit_src=False, ports=signal_ports(top))
    for port in ("s_axil__awvalid", "s_axil__wstrb", "s_axil__bresp", "s_axil__rdata",
                 "irq_set", "cycles_hi", "cmd"):
        assert port in text
    return text


def _map_for_case():
    return [list(entry) for entry in register_map(EXAMPLE_REGS)]


def random_access_case(rng, n_groups=120):
    """Steps for ``csr_tb.random_access``: batches of up to 4 queued writes or reads
    (same-kind batches keep the issue order defined), core drives, pause switches."""
    ro = {r.name: r.width for r in EXAMPLE_REGS if r.access == "ro"}
    steps = [{"kind": "pauses", "on": False, "seed": 0}]
    n_regs = len(EXAMPLE_REGS)
    w1s_index = [r.name for r in EXAMPLE_REGS].index("cmd")
    for g in range(n_groups):
        if g == n_groups // 2:
            steps.append({"kind": "pauses", "on": True, "seed": int(rng.integers(1 << 30))})
        r = rng.random()
        if r < 0.4:
            ops = []
            for _ in range(int(rng.integers(1, 5))):
                index = int(rng.integers(n_regs + 2))
                if index >= n_regs:
                    index = int(rng.integers(n_regs, 1 << (ADDR_WIDTH - 2)))
                offset = int(rng.integers(4))
                if rng.random() < 0.2:          # the w1s bits live in byte 0: aim there
                    index, offset = w1s_index, 0
                nbytes = int(rng.integers(1, 5 - offset))
                ops.append([4 * index, offset, nbytes, int(rng.integers(1 << (8 * nbytes)))])
            steps.append({"kind": "writes", "ops": ops})
        elif r < 0.8:
            addrs = [4 * int(rng.integers(n_regs + 2)) for _ in range(int(rng.integers(1, 5)))]
            steps.append({"kind": "reads", "addrs": addrs})
        elif r < 0.9:
            names = list(ro)
            chosen = rng.choice(names, size=int(rng.integers(1, len(names) + 1)), replace=False)
            steps.append({"kind": "drive", "values": {str(n): int(rng.integers(1 << ro[n]))
                                                      for n in chosen}})
        else:
            steps.append({"kind": "set", "name": "irq", "bits": int(rng.integers(32))})
    return {"regs": _map_for_case(), "steps": steps, "max_cycles": 400 * n_groups}


def expected_random_access(case):
    model = CSRModel(EXAMPLE_REGS)
    results = []
    for step in case["steps"]:
        if step["kind"] == "writes":
            for addr, offset, nbytes, value in step["ops"]:
                strb = ((1 << nbytes) - 1) << offset
                results.append({"resp": model.write(addr, value << 8 * offset, strb)})
        elif step["kind"] == "reads":
            for addr in step["addrs"]:
                resp, data = model.read(addr)
                results.append({"resp": resp, "data": data})
        elif step["kind"] == "drive":
            model.ro.update(step["values"])
        elif step["kind"] == "set":
            model.core_set(step["name"], step["bits"])
    return {"results": results, "outputs": model.value, "pulses": model.pulses}


def test_cocotb_random_access(simulator, csr_verilog):
    rng = np.random.default_rng(9)
    case = random_access_case(rng)
    built = runner.build(simulator, CSR_TOP, csr_verilog, tag="csr")
    result, _wall = runner.run(built, "serrano.sim.tb.csr_tb", "random_access", case,
                               verilog_text=csr_verilog, tag="csr")
    expected = expected_random_access(case)
    assert len(result["results"]) == len(expected["results"])
    for k, (got, want) in enumerate(zip(result["results"], expected["results"])):
        assert got == want, f"access {k}"
    assert result["outputs"] == expected["outputs"]
    assert result["pulses"] == expected["pulses"]
    resps = [r["resp"] for r in expected["results"]]
    assert resps.count(RESP_SLVERR) > 10 and resps.count(RESP_OKAY) > 50
    assert len(expected["pulses"]["cmd"]) > 3


def test_cocotb_side_effects(simulator, csr_verilog):
    case = {
        "regs": _map_for_case(), "seed": 10, "max_cycles": 40_000,
        "counter": ["cycles_lo", "cycles_hi"], "counter_start": 0xFFFF_FFF0_0000_0000,
        "counter_step": 0x4000_0001, "counter_pairs": 24,
        "w1c": "irq", "w1s": "cmd", "rw": "ctrl", "unmapped": UNMAPPED,
        "w1c_rounds": 6, "w1s_writes": 10,
    }
    built = runner.build(simulator, CSR_TOP, csr_verilog, tag="csr")
    summary, _wall = runner.run(built, "serrano.sim.tb.csr_tb", "side_effects", case,
                                verilog_text=csr_verilog, tag="csr")
    # the testbench asserts its own checks; these make sure it checked something
    assert summary["counter_pairs"] == 2 * case["counter_pairs"]
    assert summary["counter_bad"] == []
    assert summary["counter_moved"] > case["counter_pairs"]
    assert summary["w1c_checks"] == 2 * 3 * case["w1c_rounds"] and summary["w1c_bad"] == []
    assert summary["w1s_seen"] == summary["w1s_expected"]
    assert len(summary["w1s_expected"]) == 2 * case["w1s_writes"]
    writes = [e for e in summary["slverr"] if e[0] == "write"]
    reads = [e for e in summary["slverr"] if e[0] == "read"]
    assert len(writes) == 4 and all(e[2] == RESP_SLVERR for e in writes)
    assert len(reads) == 2 and all(e[2:] == [RESP_SLVERR, 0] for e in reads)
