"""The generated Verilog of the array under cocotb, on Verilator and Icarus.

The plan (weights, activations, bank bits, cycle by cycle) and the expected rows come
from ``sw``; the testbench replays the plan and records every result row and its cycle.
"""

import numpy as np
import pytest

from serrano.hw.config import get_preset
from serrano.sim import runner
from serrano.sim.array_backends import run_plan
from serrano.sim.verilog import ARRAY_TOP, array_verilog
from serrano.sw import array_plan, golden
from tests.conftest import require_simulator, selected_simulators


def stream_case(rng, cfg, n_tiles=3, extra_rows=(0, 3, 1)):
    tiles = []
    for i in range(n_tiles):
        m = cfg.rows + extra_rows[i % len(extra_rows)]
        w = rng.integers(-128, 128, (cfg.rows, cfg.cols))
        a = rng.integers(-128, 128, (m, cfg.rows))
        w[0, :], w[-1, :] = -128, 127
        a[0, :], a[-1, :] = -128, 127
        a[1, :] = rng.choice([-128, 127], cfg.rows)
        tiles.append((w, a))
    return tiles


def check(cfg, tiles, plan, rows, cycles):
    expect = np.concatenate([golden.matmul(a, w) for w, a in tiles])
    assert rows.shape == expect.shape, "wrong number of result rows"
    np.testing.assert_array_equal(rows, expect)
    # The cycle contract of hw.array.SystolicArray: T tiles of M rows, back to back, take
    # sum(M) + R + C + 1 cycles from the first row in to the last row out, with no bubble.
    assert np.all(np.diff(cycles) == 1), "a bubble between result rows"
    span = int(cycles[-1]) - plan.first_act_cycle + 1
    assert span == sum(len(a) for _, a in tiles) + cfg.rows + cfg.cols + 1 + cfg.mult_pipeline


def test_tiny_stream(simulator, rng):
    cfg = get_preset("tiny")
    tiles = stream_case(rng, cfg, n_tiles=4)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, cycles, _ = run_plan(cfg, plan, simulator)
    check(cfg, tiles, plan, rows, cycles)


@pytest.mark.skipif("verilator" not in selected_simulators(), reason="SIM excludes verilator")
def test_default_stream_verilator(rng):
    require_simulator("verilator")
    cfg = get_preset("default")
    tiles = stream_case(rng, cfg, n_tiles=3)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, cycles, _ = run_plan(cfg, plan, "verilator")
    check(cfg, tiles, plan, rows, cycles)


def test_failure_keeps_a_waveform(simulator, rng):
    """A failing cocotb test is replayed with tracing, and the error names the file."""
    cfg = get_preset("tiny")
    tiles = stream_case(rng, cfg, n_tiles=1)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    from serrano.sim.array_backends import plan_case
    case = plan_case(cfg, plan)
    case["latency"] += 1                     # a wrong contract: the testbench must object
    text = array_verilog(cfg)
    built = runner.build(simulator, ARRAY_TOP, text, tag=cfg.name)
    with pytest.raises(runner.SimulationFailed) as info:
        runner.run(built, "serrano.sim.tb.array_tb", "replay_plan", case, verilog_text=text,
                   tag=cfg.name)
    message = str(info.value)
    line = next(l for l in message.splitlines() if "waveform:" in l)
    path = line.split("waveform:", 1)[1].strip()
    import os
    assert os.path.getsize(path) > 0, message
