"""cocotb testbench of the whole accelerator, memory from cocotbext-axi's ``AxiRam``.

The harness (:mod:`sim.accel`) hands over a memory image, the program's address and
length, the DMA window, the register addresses and the pause patterns; this module
loads the image, programs the registers through ``AxiLiteMaster``, starts the program,
waits for the interrupt (with a watchdog), reads every counter, and returns the status,
the counters and the final memory image. A protocol monitor (:class:`ProtocolMonitor`,
built on :class:`sim.props.AXI4ManagerChecker`) watches the AXI4 port every cycle.

``run_program`` runs one case; ``serve_cases`` stays running for a
:class:`sim.runner.Session`: each case pulses ``rst`` (the accelerator, the memory
model's and the host's queues), writes its image into the one ``AxiRam`` (zeroing what
an earlier case's window may have written beyond it), sets its pause patterns and a
fresh protocol checker, and runs as above.
"""

import itertools
import random

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from serrano.hw import regs as R
from serrano.sim import props
from serrano.sim.tb.common import drive, load_case, save_result, serve, start


class ProtocolMonitor:
    """Runs :class:`sim.props.AXI4ManagerChecker` on the ``m_axi`` port every cycle
    (sampled in the read-only phase after each rising edge): handshakes held with a stable
    payload, legal INCR bursts inside the DMA window and a 4 KiB page, WLAST on beat
    ``AWLEN + 1``, R and B only for accepted bursts, no read or write after an error
    response or a soft reset request. :meth:`watch` starts a checker for one run's
    window (cycles counted from there); the first violation (or X/Z on a valid payload)
    is recorded in ``errors`` and ends the checking until the next :meth:`watch`;
    :meth:`pause` stops it (through a reset)."""

    def __init__(self, dut):
        self.dut = dut
        self.handles = {name: getattr(dut, f"m_axi__{name}") for name in props.AXI4_SIGNALS}
        self.checker = None
        self.cycle = 0
        self.errors = []

    def watch(self, bus_bytes, base, limit):
        self.checker = props.serrano_axi_checker(bus_bytes, base=base, limit=limit)
        self.cycle = 0
        self.errors = []

    def pause(self):
        self.checker = None

    async def run(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if self.checker is None or self.errors:
                continue
            self.cycle += 1
            raw = {name: handle.value for name, handle in self.handles.items()}
            for ch, (valid, _ready, payload) in props.AXI4_CHANNELS.items():
                v = raw[valid]
                if v.is_resolvable and int(v) and not all(raw[n].is_resolvable
                                                          for n in payload):
                    self.errors.append(f"cycle {self.cycle}: X or Z on {ch} while VALID")
                    break
            if self.errors:
                continue
            values = {name: int(v) if v.is_resolvable else 0 for name, v in raw.items()}
            try:
                self.checker.step(self.cycle, values)
            except props.PropertyViolation as e:
                self.errors.append(str(e))


def pauses(seed, density):
    rng = random.Random(seed)
    return itertools.cycle([int(rng.random() < density) for _ in range(97)])


class Bench:
    """The accelerator with an ``AxiRam`` of ``size`` bytes, a host and a monitor."""

    def __init__(self, dut, size):
        self.dut = dut
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=size)
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
        self.monitor = ProtocolMonitor(dut)
        self.written = 0                # bytes an earlier case's window may have written
        cocotb.start_soon(self.monitor.run())

    async def run(self, case):
        """One program as the case says, from an accelerator just out of reset."""
        dut, ram, host, monitor = self.dut, self.ram, self.host, self.monitor
        regs = case["regs"]
        image = bytes.fromhex(case["image"])
        ram.write(0, image)
        if self.written > len(image):
            ram.write(len(image), bytes(self.written - len(image)))
        self.written = max(self.written, len(image), min(case["limit"], ram.size))
        for i, ch in enumerate((ram.write_if.aw_channel, ram.write_if.w_channel,
                                ram.write_if.b_channel, ram.read_if.ar_channel,
                                ram.read_if.r_channel)):
            ch.set_pause_generator(pauses(case.get("seed", 0) * 10 + i, case["pause"])
                                   if case.get("pause") else None)
            if not case.get("pause"):
                ch.pause = False          # a killed pattern may have left it paused
        monitor.watch(case["bus_bytes"], case["base"], case["limit"])
        errors = monitor.errors

        async def write(name, value):
            await host.write_dword(regs[name], value)
            if name == "ctrl" and value & R.CTRL_SOFT_RESET:
                monitor.checker.stop(monitor.cycle, "soft reset requested")

        async def read(name):
            return await host.read_dword(regs[name])

        async def wait_irq(cycles):
            waited = 0                   # polled every 16 cycles, as a host would
            while not int(dut.irq.value) and waited < cycles:
                await ClockCycles(dut.clk, 16)
                waited += 16
            return bool(int(dut.irq.value))

        def run(seq):
            return drive(seq, write=write, read=read, wait_irq=wait_irq)

        window = (case["prog_addr"], case["prog_len"], case["base"], case["limit"])
        magic = await read("magic")
        reset_status = None
        if case.get("soft_reset_after") is not None:
            # Start, let it run a while, soft-reset it mid-run, check it is idle again.
            await run(R.program_registers(*window))
            await write("ctrl", R.CTRL_START)
            await ClockCycles(dut.clk, case["soft_reset_after"])
            reset_status, _ = await run(R.soft_reset())
            monitor.checker.clear(monitor.cycle)
        outcome = await run(R.run_program(*window, case["timeout_cycles"]))
        status, counters, timed_out = outcome.status, outcome.counters, outcome.timed_out
        dut._log.info("status %#x%s", status, " (timed out)" if timed_out else "")
        await ClockCycles(dut.clk, 4)
        irq_after_clear = int(dut.irq.value)
        if not timed_out and not errors:
            try:
                monitor.checker.finish(monitor.cycle)      # every burst complete
            except props.PropertyViolation as e:
                errors.append(str(e))
        monitor.pause()
        return {
            "magic": magic, "status": status, "timed_out": timed_out, "counters": counters,
            "image": ram.read(0, len(image)).hex(), "protocol_errors": errors,
            "irq_after_clear": irq_after_clear, "reset_status": reset_status,
        }


@cocotb.test()
async def run_program(dut):
    case = load_case()
    await start(dut)
    result = await Bench(dut, len(case["image"]) // 2).run(case)
    save_result(result)
    assert not result["protocol_errors"], result["protocol_errors"][:5]


# The one memory of a running simulation: sparse, as large as any window.
SERVE_MEMORY_BYTES = 1 << 32


@cocotb.test()
async def serve_cases(dut):
    """Cases from a :class:`sim.runner.Session`, one after another (see the module)."""
    await start(dut)
    bench = Bench(dut, SERVE_MEMORY_BYTES)

    async def one(case):
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        result = await bench.run(case)
        assert not result["protocol_errors"], result["protocol_errors"][:5]
        return result
    await serve(one)
