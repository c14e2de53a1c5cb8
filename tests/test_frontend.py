"""The front end (fetch, decode, checks, dispatch) on Amaranth's simulator.

A small memory model answers its fetch commands; the three queues are drained by the
testbench, which records what was dispatched where."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.hw.frontend import FrontEnd
from serrano.sw.isa_model import Program

TINY = get_preset("tiny")


def run_frontend(program_bytes, prog_len, *, idle=True, max_cycles=3000, must_finish=True,
                 cfg=TINY, prog_addr=0, stores_idle=False):
    dut = FrontEnd(cfg)
    mem = np.zeros(4096 + prog_addr + len(program_bytes), np.uint8)
    mem[:] = 0xEE                      # around the program: not instructions
    mem[prog_addr:prog_addr + len(program_bytes)] = np.frombuffer(program_bytes, np.uint8)
    seen = {"load": [], "exec": [], "store": [], "vec": [], "done": False, "error": None,
            "dispatched": 0}
    bb = cfg.bus_bytes

    async def memory(ctx):
        pending = []
        while True:
            if ctx.get(dut.fcmd.valid):
                cmd = ctx.get(dut.fcmd.payload)
                for b in range(cmd.row_beats):
                    a = cmd.addr + b * bb
                    pending.append(int.from_bytes(mem[a:a + bb].tobytes(), "little"))
            ctx.set(dut.fcmd.ready, 1)
            if pending:
                ctx.set(dut.fdata.valid, 1)
                ctx.set(dut.fdata.payload, pending[0])
            else:
                ctx.set(dut.fdata.valid, 0)
            await ctx.tick()
            if pending and ctx.get(dut.fdata.valid):     # ready is constant 1
                pending.pop(0)

    async def bench(ctx):
        ctx.set(dut.units_idle, int(idle))
        ctx.set(dut.stores_idle, int(stores_idle))
        ctx.set(dut.prog_addr, prog_addr)
        ctx.set(dut.prog_len, prog_len)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(max_cycles):
            for q in ("load", "exec", "store", "vec"):
                port = getattr(dut, f"{q}_q")
                ctx.set(port.ready, 1)
                if ctx.get(port.valid):
                    seen[q].append(ctx.get(port.payload))
            if ctx.get(dut.dispatched):
                seen["dispatched"] += 1
            if ctx.get(dut.error_valid):
                seen["error"] = isa.Error(ctx.get(dut.error))
                return
            if ctx.get(dut.done):
                seen["done"] = True
                return
            await ctx.tick()
        if must_finish:
            raise AssertionError("watchdog: front end neither finished nor failed")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(memory, background=True)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_dispatch_in_order_to_the_right_queue():
    p = Program()
    p.load_param(dram_addr=512, n_tiles=2, param_tile=1, push_next=1)
    p.load_act(dram_addr=256, dram_stride=8, rows=3, row_beats=2, buf_row=5,
               buf_row_step=2, buf_beat_step=1)
    p.matmul(weight_addr=1024, act_row=1, act_stride=1, act_kstep=3, m=3, k_tiles=2,
             acc_row=4, accumulate=1, pop_prev=1)
    p.fence()
    p.store(acc_row=4, m=3, param_tile=2, dram_addr=2048, dram_stride=4, relu=1)
    p.end()
    seen = run_frontend(bytes(p), len(p))
    assert seen["done"] and seen["error"] is None
    assert seen["dispatched"] == 6
    assert [int(x.header.opcode) for x in seen["load"]] == [isa.Op.LOAD_PARAM,
                                                             isa.Op.LOAD_ACT]
    assert seen["load"][0].header.push_next == 1
    assert seen["load"][1].body.load_act.buf_row_step == 2
    (mm,) = seen["exec"]
    assert (mm.body.m, mm.body.k_tiles, mm.body.acc_row, mm.body.accumulate,
            mm.hdr.pop_prev) == (3, 2, 4, 1, 1)
    (st,) = seen["store"]
    assert (st.body.store.param_tile, st.body.store.relu, st.body.store.dram_addr) == \
        (2, 1, 2048)


def _one(op_builder):
    p = Program()
    op_builder(p)
    p.end()
    return p


@pytest.mark.parametrize("build, error", [
    (lambda p: p.raw(bytes(32)), isa.Error.BAD_OPCODE),
    (lambda p: p.raw(bytes([9]) + bytes(31)), isa.Error.BAD_OPCODE),
    (lambda p: p.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=1, m=0,
                        k_tiles=1, acc_row=0), isa.Error.BAD_COUNT),
    (lambda p: p.load_act(dram_addr=0, dram_stride=0, rows=2, row_beats=1,
                          buf_row=TINY.act_buf_rows - 1, buf_row_step=1, buf_beat_step=0),
     isa.Error.BAD_BUFFER),
    (lambda p: p.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=1, m=2,
                        k_tiles=1, acc_row=2 * TINY.acc_buf_rows - 1), isa.Error.BAD_BUFFER),
    (lambda p: p.load_param(dram_addr=0, n_tiles=1, param_tile=TINY.param_tiles),
     isa.Error.BAD_BUFFER),
    (lambda p: p.store(acc_row=0, m=2, param_tile=0, to_buf=1,
                       buf_row=TINY.act_buf_rows - 1), isa.Error.BAD_BUFFER),
    (lambda p: p.store(acc_row=0, m=2, param_tile=0, to_buf=1, raw=1), isa.Error.BAD_BUFFER),
    # Per-row scales: a raw store has none to apply; the slots read and written must lie
    # in the row-scale file.
    (lambda p: p.store(acc_row=0, m=2, param_tile=0, raw=1, rowscale=1),
     isa.Error.BAD_BUFFER),
    (lambda p: p.store(acc_row=0, m=2, param_tile=0, rowscale=1,
                       scale_row=TINY.rowscale_slots - 1), isa.Error.BAD_BUFFER),
    (lambda p: p.store(acc_row=0, m=1, param_tile=0, rowscale=1, to_buf=1, wide=1,
                       lo_row=8, scale_row=TINY.rowscale_slots), isa.Error.BAD_BUFFER),
    (lambda p: p.store(acc_row=0, m=1, param_tile=0, rowscale=1, scale_row=0xFFFF),
     isa.Error.BAD_BUFFER),
    (lambda p: p.vec(vop=isa.VecOp.DYNQ, a_row=0, rows=1, count=3, dst_row=8,
                     b_row=TINY.rowscale_slots - 2), isa.Error.BAD_BUFFER),
    (lambda p: p.vec(vop=isa.VecOp.DYNQ, a_row=0, rows=1, count=1, dst_row=8,
                     b_row=0xFFFF), isa.Error.BAD_BUFFER),
])
def test_checks_stop_dispatch(build, error):
    p = _one(build)
    seen = run_frontend(bytes(p), len(p))
    assert seen["error"] == error
    assert not (seen["load"] or seen["exec"] or seen["store"] or seen["vec"])


@pytest.mark.parametrize("build, error", [
    (lambda p: p.store(acc_row=0, m=2, param_tile=0, raw=1, rowscale=1),
     isa.Error.BAD_BUFFER),
    (lambda p: p.store(acc_row=0, m=2, param_tile=0, rowscale=1,
                       scale_row=TINY.rowscale_slots - 1), isa.Error.BAD_BUFFER),
    (lambda p: p.vec(vop=isa.VecOp.DYNQ, a_row=0, rows=1, count=3, dst_row=8,
                     b_row=TINY.rowscale_slots - 2), isa.Error.BAD_BUFFER),
    (lambda p: p.store(acc_row=0, m=2, param_tile=0, rowscale=1,
                       scale_row=TINY.rowscale_slots - 2), isa.Error.NONE),
    (lambda p: p.vec(vop=isa.VecOp.DYNQ, a_row=0, rows=1, count=2, dst_row=8,
                     b_row=TINY.rowscale_slots - 2), isa.Error.NONE),
])
def test_rowscale_checks_agree_with_the_golden_model(build, error):
    """The front end's row-scale checks give the golden model's verdict (the ISA
    model's dispatch checks), the last slot of the file included."""
    from serrano.sw.isa_model import Machine
    p = _one(build)
    mach = Machine(TINY, np.zeros(4096, np.uint8))
    assert mach.execute(bytes(p)[:isa.INSN_BYTES]) == error
    seen = run_frontend(bytes(p), len(p))
    if error == isa.Error.NONE:
        assert seen["done"] and seen["error"] is None
        assert len(seen["store"]) + len(seen["vec"]) == 1
    else:
        assert seen["error"] == error


def test_limits_are_inclusive_where_they_should_be():
    """The last legal buffer row and accumulator row pass the checks."""
    p = Program()
    p.load_act(dram_addr=0, dram_stride=0, rows=1, row_beats=1,
               buf_row=TINY.act_buf_rows - 1, buf_row_step=1, buf_beat_step=1)
    p.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=1, m=2, k_tiles=1,
             acc_row=2 * TINY.acc_buf_rows - 2)
    p.end()
    seen = run_frontend(bytes(p), len(p))
    assert seen["done"] and seen["error"] is None


def test_program_without_end():
    p = Program()
    p.fence()
    p.fence()
    seen = run_frontend(bytes(p), len(p))
    assert seen["error"] == isa.Error.NO_END


def test_fence_waits_for_idle_units():
    p = _one(lambda p: p.fence())
    seen = run_frontend(bytes(p), len(p), idle=False, max_cycles=300, must_finish=False)
    assert not seen["done"] and seen["error"] is None


@pytest.mark.parametrize("units, stores, passes", [
    (False, True, True), (True, False, False), (False, False, False)])
def test_a_stores_fence_waits_for_the_stores_alone(units, stores, passes):
    """``FENCE stores`` dispatches what follows once ``stores_idle`` holds, whatever the
    other units do (``END`` still waits for every unit)."""
    p = Program()
    p.fence(stores=1)
    p.load_act(dram_addr=0, dram_stride=0, rows=1, row_beats=1, buf_row=3,
               buf_row_step=0, buf_beat_step=0)
    p.end()
    seen = run_frontend(bytes(p), len(p), idle=units, stores_idle=stores, max_cycles=300,
                        must_finish=False)
    assert seen["error"] is None and not seen["done"]
    assert [x.body.load_act.buf_row for x in seen["load"]] == ([3] if passes else [])


@pytest.mark.parametrize("prog_addr", [0, 32, 64, 96])
@pytest.mark.parametrize("n", [1, 2, 7, 8, 13])
def test_bus_wider_than_an_instruction(prog_addr, n):
    """On a 64-byte bus (two instructions a beat) every instruction is dispatched once,
    in order, from any instruction-aligned start and of any length; nothing before the
    program or after END is taken."""
    cfg = get_preset("x64")
    assert cfg.bus_bytes == 2 * isa.INSN_BYTES
    p = Program()
    for i in range(n - 1):
        p.load_act(dram_addr=64 * i, dram_stride=0, rows=1, row_beats=1, buf_row=i,
                   buf_row_step=0, buf_beat_step=0)
    p.end()
    seen = run_frontend(bytes(p) + bytes(p)[:64], n, cfg=cfg, prog_addr=prog_addr)
    assert seen["done"] and seen["error"] is None, seen
    assert seen["dispatched"] == n
    assert [x.body.load_act.buf_row for x in seen["load"]] == list(range(n - 1))
    assert [x.body.load_act.dram_addr for x in seen["load"]] == [64 * i for i in range(n - 1)]
