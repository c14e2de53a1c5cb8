"""cocotb testbench of ``serrano_system`` (accelerator + Verilog memory): no Python runs
per clock. Registers go through ``AxiLiteMaster``; the end of the program is awaited as
a rising edge of ``irq`` raced against a watchdog timer; memory moves by file.

Options from the case (see :func:`sim.system.run_system`): ``reset_after`` cycles into
a first start, a soft reset (``ctrl.soft_reset``, then ``status`` polled until not busy)
or a hard one (``rst`` high for ``hard_reset_cycles`` cycles, then every register written
again), the status read right after it, then the real run from the start;
``soft_reset_at_end`` soft-resets once the run has ended and reads the status again.
Every wait is bounded: the mid-run wait is a timer, the polls have a fixed count. The
register sequences are :mod:`hw.regs`'s, the same the driver runs.

``run_program`` runs one case (the memory loaded at time 0 from ``+mem_init``);
``serve`` stays running for a :class:`sim.runner.Session`: each case pulses ``rst`` (the
accelerator and the memory's queues, as at the start of a simulation), loads its image
with the memory's ``load`` input (``+mem_load``), runs as above and dumps its words
(``dump_len``) to ``+mem_dump``.
"""

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from serrano.hw import regs as R
from serrano.sim.tb.common import CLOCK_NS, drive, load_case, save_result, serve, start


def _set_inputs(dut, case):
    dut.mem_read_latency.value = case["mem_latency"]
    dut.mem_write_latency.value = case["write_latency"]
    dut.mem_err_lo.value = case["err_lo"]
    dut.mem_err_hi.value = case["err_hi"]
    dut.mem_dump.value = 0
    dut.mem_dump_len.value = case.get("dump_words", 0)
    dut.mem_load.value = 0


async def _pulse(dut, signal):
    """``signal`` high for exactly one rising edge (inputs change at falling edges)."""
    await FallingEdge(dut.clk)
    signal.value = 1
    await FallingEdge(dut.clk)
    signal.value = 0


async def _run(dut, host, case):
    """One program as the case says, from an accelerator just out of reset; the result
    (the memory is dumped to ``+mem_dump`` at the end)."""
    regs = case["regs"]

    async def write(name, value):
        await host.write_dword(regs[name], value)

    async def read(name):
        return await host.read_dword(regs[name])

    async def wait_irq(cycles):
        if not int(dut.irq.value):
            await First(RisingEdge(dut.irq), Timer(cycles * CLOCK_NS, "ns"))
        return bool(int(dut.irq.value))

    def run(seq):
        return drive(seq, write=write, read=read, wait_irq=wait_irq)

    window = (case["prog_addr"], case["prog_len"], case["base"], case["limit"])
    magic = await read("magic")
    reset_status = reset_mid_run = None
    if case.get("reset_after") is not None:
        await run(R.program_registers(*window, position=case.get("position", 0)))
        await write("ctrl", R.CTRL_START)
        await Timer(case["reset_after"] * CLOCK_NS, "ns")
        await FallingEdge(dut.clk)
        reset_mid_run = not int(dut.irq.value)          # the run had not ended yet
        if case["reset_kind"] == "soft":
            reset_status, _ = await run(R.soft_reset())
        else:
            dut.rst.value = 1
            await ClockCycles(dut.clk, case["hard_reset_cycles"])
            await FallingEdge(dut.clk)
            dut.rst.value = 0
            reset_status = await read("status")
    outcome = await run(R.run_program(*window, case["timeout_cycles"],
                                      position=case.get("position", 0)))
    end_reset_status = end_reset_settled = None
    if case.get("soft_reset_at_end"):
        end_reset_status, end_reset_settled = await run(R.soft_reset())
    await _pulse(dut, dut.mem_dump)
    await ClockCycles(dut.clk, 1)
    return {"magic": magic, "status": outcome.status, "timed_out": outcome.timed_out,
            "counters": outcome.counters, "reset_status": reset_status,
            "reset_mid_run": reset_mid_run, "end_reset_status": end_reset_status,
            "end_reset_settled": end_reset_settled}


def _host(dut):
    return AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)


@cocotb.test()
async def run_program(dut):
    case = load_case()
    _set_inputs(dut, case)
    await start(dut)
    save_result(await _run(dut, _host(dut), case))


@cocotb.test()
async def serve_cases(dut):
    """Cases from a :class:`sim.runner.Session`, one after another (see the module)."""
    dut.mem_dump.value = dut.mem_load.value = 0
    await start(dut)
    host = _host(dut)

    async def one(case):
        _set_inputs(dut, case)
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        await _pulse(dut, dut.mem_load)
        return await _run(dut, host, case)
    await serve(one)
