"""cocotb testbench of ``serrano_system`` (accelerator + Verilog memory): no Python runs
per clock. Registers go through ``AxiLiteMaster``; the end of the program is awaited as
a rising edge of ``irq`` raced against a watchdog timer; memory moves by file."""

import cocotb
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from sim.tb.common import CLOCK_NS, load_case, save_result, start


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

    magic = await read("magic")
    for name in ("base", "limit", "prog_addr", "prog_len"):
        await write(name, case[name])
    await write("irq_enable", 1)
    await write("ctrl", 1)
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
    dut.mem_dump.value = 1
    await ClockCycles(dut.clk, 1)
    dut.mem_dump.value = 0
    await ClockCycles(dut.clk, 1)
    save_result({"magic": magic, "status": status, "timed_out": timed_out,
                 "counters": counters})
