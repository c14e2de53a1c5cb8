"""cocotb testbench of ``serrano_system`` (accelerator + Verilog memory): no Python runs
per clock. Registers go through ``AxiLiteMaster``; the end of the program is awaited as
a rising edge of ``irq`` raced against a watchdog timer; memory moves by file.

Options from the case (see :func:`sim.system.run_system`): ``reset_after`` cycles into
a first start, a soft reset (``ctrl.soft_reset``, then ``status`` polled until not busy)
or a hard one (``rst`` high for ``hard_reset_cycles`` cycles, then every register written
again), the status read right after it, then the real run from the start;
``soft_reset_at_end`` soft-resets once the run has ended and reads the status again.
Every wait is bounded: the mid-run wait is a timer, the polls have a fixed count.
"""

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from sim.tb.common import CLOCK_NS, load_case, save_result, start

POLLS = 10_000            # status reads allowed for a soft reset to finish


@cocotb.test()
async def run_program(dut):
    case = load_case()
    regs = case["regs"]
    dut.mem_read_latency.value = case["mem_latency"]
    dut.mem_write_latency.value = case["write_latency"]
    dut.mem_err_lo.value = case["err_lo"]
    dut.mem_err_hi.value = case["err_hi"]
    dut.mem_dump.value = 0
    await start(dut)
    host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)

    async def write(name, value):
        await host.write_dword(regs[name], value)

    async def read(name):
        return await host.read_dword(regs[name])

    async def program_registers():
        for name in ("base", "limit", "prog_addr", "prog_len"):
            await write(name, case[name])
        await write("irq_enable", 1)

    async def soft_reset():
        """Request a soft reset; return the first status read that is not busy (or the
        last one read, still busy, after ``POLLS`` reads) and the status read next."""
        await write("ctrl", case["ctrl_soft_reset"])
        status = None
        for _ in range(POLLS):
            status = await read("status")
            if not status & case["status_busy"]:
                break
        settled = await read("status")
        await write("irq_status", 1)
        return status, settled

    magic = await read("magic")
    await program_registers()
    reset_status = reset_mid_run = None
    if case.get("reset_after") is not None:
        await write("ctrl", case["ctrl_start"])
        await Timer(case["reset_after"] * CLOCK_NS, "ns")
        await FallingEdge(dut.clk)
        reset_mid_run = not int(dut.irq.value)          # the run had not ended yet
        if case["reset_kind"] == "soft":
            reset_status, _ = await soft_reset()
        else:
            dut.rst.value = 1
            await ClockCycles(dut.clk, case["hard_reset_cycles"])
            await FallingEdge(dut.clk)
            dut.rst.value = 0
            reset_status = await read("status")
            await program_registers()                   # the reset cleared them
    await write("ctrl", case["ctrl_start"])
    if not int(dut.irq.value):
        watchdog = Timer(case["timeout_cycles"] * CLOCK_NS, "ns")
        await First(RisingEdge(dut.irq), watchdog)
    timed_out = not int(dut.irq.value)
    status = await read("status")
    counters = {}
    for name in case["counters"]:
        lo = await read(f"{name}_lo")
        hi = await read(f"{name}_hi")
        counters[name] = lo | (hi << 32)
    end_reset_status = end_reset_settled = None
    if case.get("soft_reset_at_end"):
        end_reset_status, end_reset_settled = await soft_reset()
    dut.mem_dump.value = 1
    await ClockCycles(dut.clk, 1)
    dut.mem_dump.value = 0
    await ClockCycles(dut.clk, 1)
    save_result({"magic": magic, "status": status, "timed_out": timed_out,
                 "counters": counters, "reset_status": reset_status,
                 "reset_mid_run": reset_mid_run, "end_reset_status": end_reset_status,
                 "end_reset_settled": end_reset_settled})
