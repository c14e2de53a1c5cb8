"""cocotb tests of a generated :class:`hw.csr.CSRBlock`, driven by cocotbext-axi.

The top level exposes the block's bus as ``s_axil`` (Verilog ``s_axil__awvalid``...) and
each register's core-side port under its own name. The case carries the register map
(``CSRBlock.register_map()``), so this module knows addresses only from there.

* ``random_access`` replays a list of steps (batches of concurrent writes or reads,
  core-side drives of the ``"ro"`` inputs and ``"w1c"`` set pulses, pause-generator
  switches) and hands back every response and the final outputs; the harness compares
  them with a golden model.
* ``side_effects`` checks, itself, the 64-bit snapshot pair against a counter moving
  every cycle, w1c set/clear, w1s pulse counts and SLVERR responses, and saves a summary.
"""

import itertools
import random

import cocotb
from cocotb.triggers import FallingEdge, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from serrano.sim.tb.common import load_case, save_result, start, watchdog_ns

WORD_BYTES = 4


class CsrTB:
    """Owns the AXI4-Lite master, the core-side inputs and a monitor of the w1s pulses."""

    def __init__(self, dut, case):
        self.dut = dut
        self.regs = {name: (addr, access, width) for addr, name, access, width, _doc
                     in case["regs"]}
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        self.pulses = {name: [] for name, (_a, access, _w) in self.regs.items()
                       if access == "w1s"}
        for name, (_addr, access, _width) in self.regs.items():
            if access == "ro":
                self.port(name).value = 0
            elif access == "w1c":
                self.port(f"{name}_set").value = 0

    def port(self, name):
        return getattr(self.dut, name)

    def addr(self, name):
        return self.regs[name][0]

    async def start(self):
        await start(self.dut)
        cocotb.start_soon(self._monitor_pulses())
        for _ in range(2):
            await FallingEdge(self.dut.clk)

    async def _monitor_pulses(self):
        # Every nonzero sample is logged: a pulse held two cycles shows up twice.
        while True:
            await FallingEdge(self.dut.clk)
            for name, log in self.pulses.items():
                value = int(self.port(name).value)
                if value:
                    log.append(value)

    def set_pauses(self, on, seed):
        """Random stalls on all five channels (BREADY/RREADY low = back-pressure)."""
        rng = random.Random(seed)
        channels = (self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                    self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                    self.axil.read_if.r_channel)
        for channel in channels:
            if on:
                pattern = [int(rng.random() < 0.4) for _ in range(rng.randrange(5, 17))]
                channel.set_pause_generator(itertools.cycle(pattern))
            else:
                channel.clear_pause_generator()

    async def cycles(self, n):
        for _ in range(n):
            await FallingEdge(self.dut.clk)

    async def pulse_set(self, name, bits):
        """Drive ``<name>_set`` with ``bits`` for exactly one clock cycle."""
        await FallingEdge(self.dut.clk)
        self.port(f"{name}_set").value = bits
        await FallingEdge(self.dut.clk)
        self.port(f"{name}_set").value = 0

    async def write(self, addr, offset, nbytes, value):
        resp = await self.axil.write(addr + offset, value.to_bytes(nbytes, "little"))
        return int(resp.resp)

    async def read(self, addr):
        resp = await self.axil.read(addr, WORD_BYTES)
        return int(resp.resp), int.from_bytes(resp.data, "little")


async def _random_access(dut, case):
    tb = CsrTB(dut, case)
    await tb.start()
    results = []
    for step in case["steps"]:
        kind = step["kind"]
        if kind == "pauses":
            tb.set_pauses(step["on"], step["seed"])
        elif kind == "drive":
            await FallingEdge(dut.clk)
            for name, value in step["values"].items():
                tb.port(name).value = value
            await FallingEdge(dut.clk)
        elif kind == "set":
            await tb.pulse_set(step["name"], step["bits"])
        elif kind == "writes":
            tasks = [cocotb.start_soon(tb.write(*op)) for op in step["ops"]]
            for task in tasks:
                results.append({"resp": await task})
        elif kind == "reads":
            tasks = [cocotb.start_soon(tb.read(addr)) for addr in step["addrs"]]
            for task in tasks:
                resp, data = await task
                results.append({"resp": resp, "data": data})
        else:
            raise ValueError(f"unknown step kind {kind!r}")
    await tb.cycles(3)
    outputs = {name: int(tb.port(name).value) for name, (_a, access, _w) in tb.regs.items()
               if access in ("rw", "w1c")}
    return {"results": results, "outputs": outputs, "pulses": tb.pulses}


@cocotb.test()
async def random_access(dut):
    case = load_case()
    result = await with_timeout(_random_access(dut, case), watchdog_ns(case["max_cycles"]),
                                "ns")
    save_result(result)


async def _side_effects(dut, case):
    tb = CsrTB(dut, case)
    await tb.start()
    rng = random.Random(case["seed"])
    summary = {"counter_pairs": 0, "counter_moved": 0, "counter_bad": [],
               "w1c_checks": 0, "w1c_bad": [], "w1s_expected": [], "slverr": []}

    # A 64-bit counter moving every cycle; its hi word changes every few cycles.
    lo_name, hi_name = case["counter"]
    value = [case["counter_start"]]
    history = set()

    async def count():
        mask = (1 << 64) - 1
        while True:
            await FallingEdge(dut.clk)
            value[0] = (value[0] + case["counter_step"]) & mask
            tb.port(lo_name).value = value[0] & 0xFFFF_FFFF
            tb.port(hi_name).value = value[0] >> 32
            history.add(value[0])

    cocotb.start_soon(count())
    await tb.cycles(2)

    w1c, w1s, rw = case["w1c"], case["w1s"], case["rw"]
    w1c_width, w1s_width = tb.regs[w1c][2], tb.regs[w1s][2]
    w1c_model = int(tb.port(w1c).value)
    for pauses_on in (False, True):
        tb.set_pauses(pauses_on, rng.randrange(1 << 30))
        for k in range(case["counter_pairs"]):
            if k % 2:       # both reads queued at once: AR order keeps lo first
                t_lo = cocotb.start_soon(tb.read(tb.addr(lo_name)))
                t_hi = cocotb.start_soon(tb.read(tb.addr(hi_name)))
                (r_lo, lo), (r_hi, hi) = await t_lo, await t_hi
            else:
                r_lo, lo = await tb.read(tb.addr(lo_name))
                await tb.cycles(rng.randrange(0, 6))
                r_hi, hi = await tb.read(tb.addr(hi_name))
            pair = lo | hi << 32
            summary["counter_pairs"] += 1
            if r_lo != AxiResp.OKAY or r_hi != AxiResp.OKAY or pair not in history:
                summary["counter_bad"].append([r_lo, r_hi, pair])
            if (value[0] >> 32) != hi:
                summary["counter_moved"] += 1

        for _ in range(case["w1c_rounds"]):
            bits = rng.randrange(1 << w1c_width)
            await tb.pulse_set(w1c, bits)
            w1c_model |= bits
            for clear in (rng.randrange(1 << w1c_width), 0, (1 << w1c_width) - 1):
                resp, got = await tb.read(tb.addr(w1c))
                port = int(tb.port(w1c).value)
                summary["w1c_checks"] += 1
                if resp != AxiResp.OKAY or got != w1c_model or port != w1c_model:
                    summary["w1c_bad"].append([resp, got, port, w1c_model])
                resp = await tb.write(tb.addr(w1c), 0, WORD_BYTES, clear)
                w1c_model &= ~clear
                if resp != AxiResp.OKAY:
                    summary["w1c_bad"].append([resp, "write"])

        for _ in range(case["w1s_writes"]):
            mask = rng.randrange(1, 1 << w1s_width)
            resp = await tb.write(tb.addr(w1s), 0, WORD_BYTES, mask)
            summary["w1s_expected"].append(mask)
            assert resp == AxiResp.OKAY, f"w1s write answered {resp}"

        # SLVERR: writes to a 'ro' register and to an unmapped word change nothing.
        before = (await tb.read(tb.addr(rw)))[1]
        for addr in (tb.addr(lo_name), case["unmapped"]):
            summary["slverr"].append(["write", addr, await tb.write(addr, 0, WORD_BYTES,
                                                                    rng.randrange(1 << 32))])
            resp, data = await tb.read(addr)
            if addr == case["unmapped"]:
                summary["slverr"].append(["read", addr, resp, data])
        after = (await tb.read(tb.addr(rw)))[1]
        summary["slverr"].append(["unchanged", before, after])

    await tb.cycles(3)
    summary["w1s_seen"] = tb.pulses[w1s]
    assert not summary["counter_bad"], f"inconsistent counter pairs {summary['counter_bad']}"
    assert not summary["w1c_bad"], f"w1c mismatches {summary['w1c_bad']}"
    assert summary["w1s_seen"] == summary["w1s_expected"], \
        f"w1s pulses {summary['w1s_seen']} != {summary['w1s_expected']}"
    for entry in summary["slverr"]:
        if entry[0] == "write":
            assert entry[2] == AxiResp.SLVERR, f"write to {entry[1]:#x} answered {entry[2]}"
        elif entry[0] == "read":
            assert entry[2] == AxiResp.SLVERR and entry[3] == 0, f"unmapped read {entry}"
        else:
            assert entry[1] == entry[2], f"a refused write changed a register: {entry}"
    return summary


@cocotb.test()
async def side_effects(dut):
    case = load_case()
    summary = await with_timeout(_side_effects(dut, case), watchdog_ns(case["max_cycles"]),
                                 "ns")
    save_result(summary)
