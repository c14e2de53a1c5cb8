"""Clock gating (hw/clock_gate.py): the gated units see every cycle they have work in, so
the gated design runs a program in the same cycles, with the same memory, as the design
without gates; and a unit's ``idle`` covers an instruction inside its queue (the contract
the gate relies on)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from serrano.hw import isa
from serrano.hw.clock_gate import GATINGS, check
from serrano.hw.config import get_preset
from serrano.hw.load_unit import LoadUnit
from serrano.hw.vector_unit import VectorUnit
from tests.conftest import require_simulator

TINY = get_preset("tiny")


def test_gating_names_are_checked():
    assert GATINGS == ("clock", "none") and check("none") == "none"
    with pytest.raises(ValueError, match="gating must be one of clock, none, not 'icg'"):
        check("icg")


def _idle_after_one_instruction(dut, word, cycles, inputs):
    """``idle`` in each of ``cycles`` cycles after ``dut`` accepted the instruction
    ``word`` (``inputs``: ``(signal, value)`` pairs held on its other inputs)."""
    trace = []

    async def bench(ctx):
        for port, value in inputs:
            ctx.set(port, value)
        ctx.set(dut.insn.payload.as_value(), int.from_bytes(word, "little"))
        ctx.set(dut.insn.valid, 1)
        assert ctx.get(dut.insn.ready)
        await ctx.tick()
        ctx.set(dut.insn.valid, 0)
        for _ in range(cycles):
            trace.append(ctx.get(dut.idle))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return trace


def test_vector_unit_is_busy_while_its_instruction_is_queued():
    """A VEC waiting for a token that never comes: the unit is never idle, not even in the
    cycle the instruction spends inside the queue's buffer (the gate would stop its clock
    there and the instruction would never come out)."""
    word = isa.encode(isa.Op.VEC, pop_prev=1, vop=isa.VecOp.ADD, a_row=0, b_row=8,
                      dst_row=16, rows=1, count=1)
    dut = VectorUnit(TINY)
    trace = _idle_after_one_instruction(dut, word, 12, [(dut.wr_ready, 1)])
    assert trace == [0] * 12


def test_load_unit_is_busy_while_its_job_is_queued():
    """A LOAD_ACT whose data never arrives: the unit is never idle from the moment it took
    the instruction, not even in the cycle the job spends inside the jobs FIFO."""
    word = isa.encode(isa.Op.LOAD_ACT, dram_addr=0, rows=1, row_beats=1, buf_row=0,
                      buf_row_step=1, buf_beat_step=1, dram_stride=TINY.bus_bytes)
    dut = LoadUnit(TINY)
    trace = _idle_after_one_instruction(dut, word, 12, [(dut.cmd.ready, 1)])
    assert trace == [0] * 12


def test_gates_change_no_cycle():
    """The training programs of the fast simulator (an int8 GEMM with requantized
    stores, 4-bit and int8-block GEMMs and GEMVs with raw stores, a layer's vector work
    beside a GEMM) on the gated design and on the same design without gates: the same
    counters (cycles, stalls, bytes) and the same memory, byte for byte."""
    require_simulator("verilator")
    from serrano.sim.fastsim import build
    from serrano.sw import pgo
    from serrano.sw.backends import verilator_library
    gated = list(pgo.run_all(TINY, verilator_library(TINY)))
    plain = list(pgo.run_all(TINY, build(TINY, gating="none")))
    assert len(gated) == len(plain) == len(pgo.programs(TINY)) >= 5
    for (name, out_g, mem_g), (_, out_p, mem_p) in zip(gated, plain):
        assert out_g.counters == out_p.counters, name
        np.testing.assert_array_equal(mem_g, mem_p, err_msg=name)
