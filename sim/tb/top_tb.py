"""cocotb testbench of the whole accelerator, memory from cocotbext-axi's ``AxiRam``.

The harness (:mod:`sim.accel`) hands over a memory image, the program's address and
length, the DMA window, the register addresses and the pause patterns; this module
loads the image, programs the registers through ``AxiLiteMaster``, starts the program,
waits for the interrupt (with a watchdog), reads every counter, and returns the status,
the counters and the final memory image. A protocol monitor (:class:`ProtocolMonitor`,
built on :class:`sim.props.AXI4ManagerChecker`) watches the AXI4 port every cycle.
"""

import itertools
import random

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from serrano.hw import regs as R
from serrano.sim import props
from serrano.sim.tb.common import drive, load_case, save_result, start


class ProtocolMonitor:
    """Runs :class:`sim.props.AXI4ManagerChecker` on the ``m_axi`` port every cycle
    (sampled in the read-only phase after each rising edge): handshakes held with a stable
    payload, legal INCR bursts inside the DMA window and a 4 KiB page, WLAST on beat
    ``AWLEN + 1``, R and B only for accepted bursts, no read or write after an error
    response or a soft reset request. The first violation (or X/Z on a valid payload) is
    recorded in ``errors`` and ends the monitor."""

    def __init__(self, dut, bus_bytes, base, limit):
        self.dut = dut
        self.checker = props.serrano_axi_checker(bus_bytes, base=base, limit=limit)
        self.handles = {name: getattr(dut, f"m_axi__{name}") for name in props.AXI4_SIGNALS}
        self.cycle = 0
        self.errors = []

    async def run(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            self.cycle += 1
            raw = {name: handle.value for name, handle in self.handles.items()}
            for ch, (valid, _ready, payload) in props.AXI4_CHANNELS.items():
                v = raw[valid]
                if v.is_resolvable and int(v) and not all(raw[n].is_resolvable
                                                          for n in payload):
                    self.errors.append(f"cycle {self.cycle}: X or Z on {ch} while VALID")
                    return
            values = {name: int(v) if v.is_resolvable else 0 for name, v in raw.items()}
            try:
                self.checker.step(self.cycle, values)
            except props.PropertyViolation as e:
                self.errors.append(str(e))
                return


def pauses(seed, density):
    rng = random.Random(seed)
    return itertools.cycle([int(rng.random() < density) for _ in range(97)])


@cocotb.test()
async def run_program(dut):
    case = load_case()
    bus_bytes = case["bus_bytes"]
    regs = case["regs"]
    await start(dut)
    image = bytes.fromhex(case["image"])
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=len(image))
    ram.write(0, image)
    host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
    if case.get("pause"):
        seed = case.get("seed", 0)
        for i, ch in enumerate((ram.write_if.aw_channel, ram.write_if.w_channel,
                                ram.write_if.b_channel, ram.read_if.ar_channel,
                                ram.read_if.r_channel)):
            ch.set_pause_generator(pauses(seed * 10 + i, case["pause"]))
    monitor = ProtocolMonitor(dut, bus_bytes, case["base"], case["limit"])
    errors = monitor.errors
    cocotb.start_soon(monitor.run())

    async def write(name, value):
        await host.write_dword(regs[name], value)
        if name == "ctrl" and value & R.CTRL_SOFT_RESET:
            monitor.checker.stop(monitor.cycle, "soft reset requested")

    async def read(name):
        return await host.read_dword(regs[name])

    async def wait_irq(cycles):
        waited = 0                       # polled every 16 cycles, as a host would
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
    save_result({
        "magic": magic, "status": status, "timed_out": timed_out, "counters": counters,
        "image": ram.read(0, len(image)).hex(), "protocol_errors": errors,
        "irq_after_clear": irq_after_clear, "reset_status": reset_status,
    })
    assert not errors, errors[:5]
