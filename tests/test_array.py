"""The systolic array on Amaranth's simulator: values, latency, tile switch, double buffering."""

import numpy as np
import pytest

from serrano.hw.config import get_preset
from serrano.sim.amaranth_sim import run_array_plan
from serrano.sw import array_plan, golden

TINY = get_preset("tiny")


def random_tiles(rng, cfg, ms, extremes=True):
    tiles = []
    for m in ms:
        w = rng.integers(-128, 128, (cfg.rows, cfg.cols))
        a = rng.integers(-128, 128, (m, cfg.rows))
        if extremes:                       # the int8 corners, in both operands
            w[0, 0], w[-1, -1] = -128, 127
            a[0, :] = -128
            a[-1, :] = 127
        tiles.append((w, a))
    return tiles


def check_stream(cfg, tiles, plan, rows, cycles):
    # Every output element against the golden model, computed here from the tiles.
    expect = np.concatenate([golden.matmul(a, w) for w, a in tiles])
    assert rows.shape == expect.shape
    np.testing.assert_array_equal(rows, expect)
    # Each result row leaves exactly `latency` cycles after its activation row entered.
    entered = np.flatnonzero(plan.act_valid)
    np.testing.assert_array_equal(cycles, entered + cfg.latency)


def test_back_to_back_tiles_without_bubble(rng):
    cfg = TINY
    ms = [cfg.rows, cfg.rows + 1, cfg.rows + 5, cfg.rows]
    tiles = random_tiles(rng, cfg, ms)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, cycles = run_array_plan(cfg, plan)
    check_stream(cfg, tiles, plan, rows, cycles)
    # No bubble: results leave on consecutive cycles, and the span from the first row in
    # to the last row out is (sum of M) + R + C + 1 (+ mult_pipeline) cycles, inclusive.
    assert np.all(np.diff(cycles) == 1)
    span = cycles[-1] - plan.first_act_cycle + 1
    assert span == sum(ms) + cfg.rows + cfg.cols + 1 + cfg.mult_pipeline


def test_next_tile_loads_while_current_computes(rng):
    """Double buffering: every weight row of tile i+1 is written in a cycle in which an
    activation row of tile i enters, and results stay exact."""
    cfg = TINY
    ms = [cfg.rows + 2] * 4
    tiles = random_tiles(rng, cfg, ms)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    w_cycles = np.flatnonzero(plan.w_valid)
    later_loads = w_cycles[cfg.rows:]                 # everything after the first tile
    assert np.all(plan.act_valid[later_loads])        # overlapped with compute
    rows, cycles = run_array_plan(cfg, plan)
    check_stream(cfg, tiles, plan, rows, cycles)


def test_short_tiles_wait_for_weights(rng):
    """With M < R the weight port is the bottleneck: the plan inserts gaps, still exact."""
    cfg = TINY
    ms = [1, 2, 1, 3, 1]
    tiles = random_tiles(rng, cfg, ms, extremes=False)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, cycles = run_array_plan(cfg, plan)
    check_stream(cfg, tiles, plan, rows, cycles)


def test_largest_magnitude_sums():
    """All -128 times all -128: the largest column sum the array can form, exactly."""
    cfg = TINY
    w = np.full((cfg.rows, cfg.cols), -128)
    a = np.full((cfg.rows, cfg.rows), -128)
    a[1] = 127
    tiles = [(w, a), (-w - 1, a)]
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, cycles = run_array_plan(cfg, plan)
    check_stream(cfg, tiles, plan, rows, cycles)
    assert rows[0, 0] == cfg.rows * 128 * 128


@pytest.mark.parametrize("m, k, n", [(5, 1, 3), (4, 4, 4), (7, 9, 6), (1, 13, 1)])
def test_gemm_tiling_odd_shapes(rng, m, k, n):
    """K = 1, sizes that are not multiples of the array, M = 1: padded and summed right."""
    cfg = TINY
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    tiles, grid = array_plan.gemm_tiles(a, w, cfg.rows, cfg.cols)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, _ = run_array_plan(cfg, plan)
    got = array_plan.gemm_from_rows(rows, m, n, grid, cfg.cols)
    np.testing.assert_array_equal(got, golden.matmul(a, w))


def test_fpga_preset_array(rng):
    cfg = get_preset("fpga")
    tiles = random_tiles(rng, cfg, [cfg.rows] * 3)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, cycles = run_array_plan(cfg, plan)
    check_stream(cfg, tiles, plan, rows, cycles)


def test_plan_rejects_bad_tiles():
    with pytest.raises(ValueError, match="want W 4x4"):
        array_plan.plan_tiles([(np.zeros((3, 4), int), np.zeros((2, 4), int))], 4, 4, 8)
    with pytest.raises(ValueError, match="outside int8"):
        array_plan.plan_tiles([(np.full((4, 4), 128), np.zeros((2, 4), int))], 4, 4, 8)
    with pytest.raises(ValueError, match="at least one tile"):
        array_plan.plan_tiles([], 4, 4, 8)
