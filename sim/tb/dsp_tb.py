"""cocotb test of the two forms of :class:`hw.dsp.Multiplier` (top ``serrano_dsp_pair``,
:func:`sim.tb_tops.dsp_pair_verilog`): the ECP5 form through the ``MULT18X18D`` model
and the behavioural form, on the same operands.

The case (written by ``tests/test_dsp.py``) holds the operands of each cycle (two's
complement bit patterns) and the register enable ``en`` (unconnected inside unless the
pair was built with ``enable``). Operands are driven just after the falling edge; outputs are
sampled in the read-only phase before the next one. The testbench returns every
cycle's outputs (``None`` where a register still holds no value: the first cycles,
before the operands have reached it); the test compares them with the products computed
in numpy.
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, with_timeout

from serrano.sim.tb.common import load_case, save_result, start, watchdog_ns


async def _run(dut, case):
    seen = {"p_ecp5": [], "p_generic": [], "a_reg_ecp5": [], "a_reg_generic": []}
    for a, b, en in zip(case["a"], case["b"], case["en"]):
        dut.a.value = a
        dut.b.value = b
        dut.en.value = en
        await ReadOnly()
        for name, values in seen.items():
            value = getattr(dut, name).value
            values.append(int(value) if value.is_resolvable else None)
        await FallingEdge(dut.clk)
    return seen


@cocotb.test()
async def products(dut):
    case = load_case()
    dut.a.value = 0
    dut.b.value = 0
    dut.en.value = 1
    await start(dut)
    seen = await with_timeout(_run(dut, case), watchdog_ns(len(case["a"])), "ns")
    save_result(seen)
