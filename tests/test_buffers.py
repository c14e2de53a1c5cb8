"""On-chip buffers on Amaranth's simulator against dict/numpy reference models."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from serrano.hw.buffers import ActivationBuffer, Accumulator, ParamBuffer
from serrano.hw.config import get_preset
from serrano.sw import golden

TINY = get_preset("tiny")


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# The accumulator's contract (hw/buffers.py): an update presented in cycle u is written
# at the end of cycle u + 2, so a read issued in cycle r returns the row as left by every
# update of cycle r - 3 or before, and none of cycle r - 2 or later.
ACC_VISIBILITY = 3


def accumulator_model(depth, cols, cycles):
    """Expected ``rd_data`` of each read, from the update and read streams alone (numpy,
    int64, wrapped as int32). ``cycles``: per cycle ``(upd, rd)``, ``upd`` = (addr,
    accumulate, row) or None, ``rd`` = addr or None. Returns ``{cycle: row}``."""
    state = np.zeros((depth, cols), np.int64)
    pending = []                      # (cycle, addr, accumulate, row), oldest first
    expected = {}
    for r, (upd, rd) in enumerate(cycles):
        while pending and pending[0][0] <= r - ACC_VISIBILITY:
            _, addr, acc, row = pending.pop(0)
            base = state[addr] if acc else 0
            state[addr] = golden.wrap_int32(base + np.asarray(row, np.int64))
        if rd is not None:
            expected[r] = state[rd].copy()
        if upd is not None:
            pending.append((r,) + tuple(upd))
    return expected


def run_accumulator(cycles, cfg=TINY):
    """Drives ``cycles`` (as :func:`accumulator_model`) into an Accumulator, then drains
    and reads every row back; checks every read against the model."""
    dut = Accumulator(cfg)
    C = cfg.cols
    drain = [(None, None)] * ACC_VISIBILITY + [(None, a) for a in range(dut.depth)]
    cycles = list(cycles) + drain
    expected = accumulator_model(dut.depth, C, cycles)
    got = {}

    async def bench(ctx):
        for r, (upd, rd) in enumerate(cycles):     # bounded: one tick per listed cycle
            ctx.set(dut.upd_valid, upd is not None)
            if upd is not None:
                ctx.set(dut.upd_addr, int(upd[0]))
                ctx.set(dut.upd_accumulate, int(upd[1]))
                ctx.set(dut.upd_data, [int(x) for x in upd[2]])
            else:                                  # garbage on the idle update port
                ctx.set(dut.upd_addr, r % dut.depth)
                ctx.set(dut.upd_accumulate, 1)
                ctx.set(dut.upd_data, [r + 1] * C)
            ctx.set(dut.rd_en, rd is not None)
            ctx.set(dut.rd_addr, rd or 0)
            await ctx.tick()
            if rd is not None:
                got[r] = list(ctx.get(dut.rd_data))

    simulate(dut, bench)
    assert set(got) == set(expected)
    for r in expected:
        np.testing.assert_array_equal(got[r], expected[r], err_msg=f"read at cycle {r}")
    return dut, expected


def random_row(rng, cols):
    return rng.integers(-2**31, 2**31, cols)


def test_accumulator_read_modify_write_every_cycle(rng):
    """Random updates, many to the same row in consecutive cycles, reads anywhere
    (including rows still in the pipeline): nothing is lost, reads follow the
    contract."""
    C = TINY.cols
    n = 400
    addrs = rng.integers(0, 4, n)                 # few rows: hazards at every distance
    addrs[:50] = 2                                # 50 updates in a row to one row
    accs = rng.integers(0, 2, n)
    accs[:2] = 0
    accs[50:] = rng.random(n - 50) < 0.8          # mostly accumulate, some overwrite
    vals = rng.integers(-2**31, 2**31, (n, C))
    vals[50:60] = 2**31 - 1                       # wrap-around
    valid = rng.random(n) < 0.8
    valid[:60] = True
    reads = rng.random(n) < 0.4
    rd_addrs = rng.integers(0, 4, n)
    cycles = [((int(a), int(acc), v) if ok else None, int(ra) if rd else None)
              for a, acc, v, ok, ra, rd in zip(addrs, accs, vals, valid, rd_addrs, reads)]
    run_accumulator(cycles)


@pytest.mark.parametrize("gap", [1, 2, 3, 4])
def test_accumulator_same_row_at_each_distance(rng, gap):
    """The same row updated every ``gap`` cycles (1: back to back, 2 and 3: the two
    forwarding registers' and the RAM's reach), other rows updated in between, with an
    overwrite now and then."""
    C = TINY.cols
    cycles = []
    for i in range(60):
        acc = int(i % 7 != 0)                     # overwrite every seventh update
        if i % gap == 0:
            cycles.append(((5, acc, random_row(rng, C)), None))
        else:
            cycles.append(((int(rng.integers(0, 5)), acc, random_row(rng, C)), None))
    _, expected = run_accumulator(cycles)
    assert len(expected) == 2 * TINY.acc_buf_rows


def test_accumulator_read_visibility_boundary(rng):
    """A read two cycles after an update returns the row without it, three cycles after
    with it; an update in the read's own cycle is not seen."""
    C = TINY.cols
    v = [random_row(rng, C) for _ in range(4)]
    cycles = [
        ((3, 0, v[0]), None),         # 0
        ((3, 1, v[1]), None),         # 1
        (None, 3),                    # 2: sees neither (update 0 lands at end of 2)
        (None, 3),                    # 3: sees update 0 only
        ((3, 1, v[2]), 3),            # 4: sees 0 and 1, not its own cycle's update
        (None, 3),                    # 5: 0 and 1
        (None, 3),                    # 6: 0 and 1
        ((3, 0, v[3]), 3),            # 7: 0, 1 and 4
        (None, 3), (None, 3),         # 8, 9: still without the overwrite of 7
        (None, 3),                    # 10: the overwrite
    ]
    _, expected = run_accumulator(cycles)

    def w(x):
        return golden.wrap_int32(x).astype(np.int64)

    np.testing.assert_array_equal(expected[2], np.zeros(C))
    np.testing.assert_array_equal(expected[3], v[0])
    np.testing.assert_array_equal(expected[4], w(v[0] + v[1]))
    np.testing.assert_array_equal(expected[6], w(v[0] + v[1]))
    np.testing.assert_array_equal(expected[7], w(w(v[0] + v[1]) + v[2]))
    np.testing.assert_array_equal(expected[9], w(w(v[0] + v[1]) + v[2]))
    np.testing.assert_array_equal(expected[10], v[3])


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
