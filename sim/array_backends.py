"""Runs an :class:`sw.array_plan.ArrayPlan` on the bare array, on any simulator.

``amaranth`` uses Amaranth's Python simulator directly; ``verilator`` and ``icarus`` run
the generated Verilog under cocotb (:mod:`sim.tb.array_tb`). All three return the same
thing, so tests and ``serrano gemm`` compare them with one golden model.
"""

import numpy as np

from serrano.hw import layouts
from . import runner
from .verilog import ARRAY_TOP, array_verilog

__all__ = ["BACKENDS", "run_plan", "plan_case"]

BACKENDS = ("amaranth",) + runner.SIMULATORS


def plan_case(cfg, plan):
    """Pack every cycle of ``plan`` into port words with the hardware's own layouts."""
    act, wrow = layouts.act_beat(cfg), layouts.weight_row(cfg)

    def word(layout, fields):
        return layout.const(fields).as_value().value

    return {
        "latency": cfg.latency,
        "act_valid": [int(v) for v in plan.act_valid],
        "act_payload": [word(act, {"data": [int(x) for x in d], "bank": int(b)})
                        for d, b in zip(plan.act_data, plan.act_bank)],
        "w_valid": [int(v) for v in plan.w_valid],
        "w_payload": [word(wrow, {"data": [int(x) for x in d], "row": int(r),
                                  "bank": int(b)})
                      for d, r, b in zip(plan.w_data, plan.w_row, plan.w_bank)],
    }


def run_plan(cfg, plan, backend):
    """Run ``plan`` on ``backend``; return ``(rows, cycles, wall_seconds)``.

    ``rows`` is the (n, C) int64 array of result rows in the order they left the array
    and ``cycles`` the plan cycle in which each left.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "amaranth":
        import time
        from .amaranth_sim import run_array_plan
        t0 = time.perf_counter()
        rows, cycles = run_array_plan(cfg, plan)
        return rows, cycles, time.perf_counter() - t0
    text = array_verilog(cfg)
    built = runner.build(backend, ARRAY_TOP, text, tag=cfg.name)
    result, wall = runner.run(built, "serrano.sim.tb.array_tb", "replay_plan", plan_case(cfg, plan),
                              verilog_text=text, tag=cfg.name)
    row_layout = layouts.psum_row(cfg)
    rows = np.array([list(row_layout.from_bits(int(w))) for w in result["rows"]],
                    dtype=np.int64).reshape(-1, cfg.cols)
    return rows, np.array(result["cycles"]), wall
