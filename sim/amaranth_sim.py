"""Runs array plans on Amaranth's own Python simulator (no Verilog, no external tools)."""

import numpy as np
from amaranth.sim import Simulator

from serrano.hw.array import SystolicArray

__all__ = ["run_array_plan"]


def run_array_plan(cfg, plan, *, vcd=None):
    """Drive ``plan`` (:class:`sw.array_plan.ArrayPlan`) into a fresh array of ``cfg``.

    Returns ``(rows, cycles)``: the result rows in the order they left, as an (n, C)
    int32 array, and the cycle in which each left.
    """
    dut = SystolicArray(cfg)
    rows, cycles = [], []

    async def testbench(ctx):
        for t in range(plan.n_cycles):
            ctx.set(dut.act.valid, int(plan.act_valid[t]))
            ctx.set(dut.act.payload.data, [int(x) for x in plan.act_data[t]])
            ctx.set(dut.act.payload.bank, int(plan.act_bank[t]))
            ctx.set(dut.weight.valid, int(plan.w_valid[t]))
            ctx.set(dut.weight.payload.data, [int(x) for x in plan.w_data[t]])
            ctx.set(dut.weight.payload.row, int(plan.w_row[t]))
            ctx.set(dut.weight.payload.bank, int(plan.w_bank[t]))
            if plan.w_pair is not None:
                ctx.set(dut.weight.payload.pair, int(plan.w_pair[t]))
            if ctx.get(dut.result.valid):
                rows.append(list(ctx.get(dut.result.payload)))
                cycles.append(t)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return np.array(rows, dtype=np.int64).reshape(-1, cfg.cols), np.array(cycles)
