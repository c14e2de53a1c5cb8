"""On-chip buffers on Amaranth's simulator against dict/numpy reference models."""

import numpy as np
from amaranth.sim import Simulator

from hw.buffers import ActivationBuffer, Accumulator, ParamBuffer
from hw.config import get_preset
from sw import golden

TINY = get_preset("tiny")


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_accumulator_read_modify_write_every_cycle(rng):
    """Random updates, many to the same row in consecutive cycles: nothing is lost."""
    cfg = TINY
    dut = Accumulator(cfg)
    n = 300
    addrs = rng.integers(0, 4, n)                 # few rows: back-to-back hazards
    addrs[:50] = 2                                # 50 updates in a row to one row
    accs = rng.integers(0, 2, n)
    accs[:2] = 0
    vals = rng.integers(-2**31, 2**31, (n, cfg.cols))
    vals[50:60] = 2**31 - 1                       # wrap-around
    valid = rng.random(n) < 0.8
    valid[:60] = True
    model = {}
    for a, acc, v, ok in zip(addrs, accs, vals, valid):
        if ok:
            old = model.get(int(a), np.zeros(cfg.cols, np.int64)) if acc else 0
            model[int(a)] = golden.wrap_int32(old + v).astype(np.int64)
    got = {}

    async def bench(ctx):
        for a, acc, v, ok in zip(addrs, accs, vals, valid):
            ctx.set(dut.upd_valid, int(ok))
            ctx.set(dut.upd_addr, int(a))
            ctx.set(dut.upd_accumulate, int(acc))
            ctx.set(dut.upd_data, [int(x) for x in v])
            await ctx.tick()
        ctx.set(dut.upd_valid, 0)
        await ctx.tick().repeat(2)
        for a in model:
            ctx.set(dut.rd_addr, a)
            ctx.set(dut.rd_en, 1)
            await ctx.tick()
            got[a] = list(ctx.get(dut.rd_data))

    simulate(dut, bench)
    assert set(got) == set(model)
    for a in model:
        np.testing.assert_array_equal(got[a], model[a])


def test_activation_buffer_load_has_priority(rng):
    cfg = TINY
    dut = ActivationBuffer(cfg)
    n = 200
    model = {}
    events = []
    for _ in range(n):
        load = rng.random() < 0.5
        store = rng.random() < 0.5
        la, sa = int(rng.integers(0, 32)), int(rng.integers(0, 32))
        ld = [int(x) for x in rng.integers(-128, 128, cfg.rows)]
        sd = [int(x) for x in rng.integers(-128, 128, cfg.rows)]
        events.append((load, la, ld, store, sa, sd))
    stalls = []

    async def bench(ctx):
        for load, la, ld, store, sa, sd in events:
            ctx.set(dut.load_en, int(load))
            ctx.set(dut.load_addr, la)
            ctx.set(dut.load_data, ld)
            ctx.set(dut.store_valid, int(store))
            ctx.set(dut.store_addr, sa)
            ctx.set(dut.store_data, sd)
            ready = ctx.get(dut.store_ready)
            assert ready == (not load)
            if load:
                model[la] = ld
            elif store:
                model[sa] = sd
            stalls.append(store and not ready)
            await ctx.tick()
        ctx.set(dut.load_en, 0)
        ctx.set(dut.store_valid, 0)
        for a, row in model.items():
            ctx.set(dut.rd_addr, a)
            ctx.set(dut.rd_en, 1)
            await ctx.tick()
            assert list(ctx.get(dut.rd_data)) == row, a

    simulate(dut, bench)
    assert any(stalls)


def test_param_buffer_round_trip(rng):
    cfg = TINY
    dut = ParamBuffer(cfg)
    words = [int(x) for x in rng.integers(0, 2**32, dut.depth, dtype=np.uint64)]

    async def bench(ctx):
        for i, w in enumerate(words):
            ctx.set(dut.wr_addr, i)
            ctx.set(dut.wr_data, w)
            ctx.set(dut.wr_en, 1)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        for i, w in enumerate(words):
            ctx.set(dut.rd_addr, i)
            ctx.set(dut.rd_en, 1)
            await ctx.tick()
            assert ctx.get(dut.rd_data) == w

    simulate(dut, bench)
