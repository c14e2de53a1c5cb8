"""cocotb test of the bare systolic array: replays a plan cycle by cycle.

The harness (:func:`sim.runner.run_array_plan`) packs every cycle's port values with the
same ``lib.data`` layouts the hardware uses; this module only drives and samples them,
checks the array's handshake-free contract (no result without a row in flight), and
hands the raw result words back. Values are compared with the golden model outside.
"""

import cocotb
from cocotb.triggers import FallingEdge, with_timeout

from serrano.sim.tb.common import load_case, save_result, start, watchdog_ns


async def _replay(dut, case):
    rows, cycles = [], []
    latency = case["latency"]
    act_valid_at = set()
    for t, (av, ap, wv, wp) in enumerate(zip(case["act_valid"], case["act_payload"],
                                               case["w_valid"], case["w_payload"])):
        dut.act__valid.value = av
        dut.act__payload.value = ap
        dut.weight__valid.value = wv
        dut.weight__payload.value = wp
        if av:
            act_valid_at.add(t)
        if int(dut.result__valid.value):
            assert t - latency in act_valid_at, \
                f"result row at cycle {t} without an activation row at cycle {t - latency}"
            rows.append(str(int(dut.result__payload.value)))
            cycles.append(t)
        await FallingEdge(dut.clk)
    return rows, cycles


@cocotb.test()
async def replay_plan(dut):
    case = load_case()
    await start(dut)
    rows, cycles = await with_timeout(_replay(dut, case),
                                      watchdog_ns(len(case["act_valid"])), "ns")
    save_result({"rows": rows, "cycles": cycles})
