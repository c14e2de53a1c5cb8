"""``serrano gemm``: an int8 GEMM on the systolic array, checked against the golden model."""

import time

import numpy as np

from . import array_plan, golden

__all__ = ["random_operands", "run_gemm"]


def random_operands(m, k, n, seed):
    """Random int8 ``a`` (m x k) and ``w`` (k x n) that always contain -128 and 127."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int64)
    w = rng.integers(-128, 128, (k, n), dtype=np.int64)
    a.flat[0], a.flat[-1] = -128, 127
    w.flat[0], w.flat[-1] = -128, 127
    return a, w


def run_gemm(cfg, m, k, n, backend, seed=0):
    """Multiply random operands on ``backend`` and return the report as a dict."""
    for name, v in (("m", m), ("k", k), ("n", n)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"--{name} must be a positive integer, not {v!r}")
    from sim.array_backends import run_plan

    a, w = random_operands(m, k, n, seed)
    tiles, grid = array_plan.gemm_tiles(a, w, cfg.rows, cfg.cols)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    t0 = time.perf_counter()
    rows, out_cycles, sim_wall = run_plan(cfg, plan, backend)
    wall = time.perf_counter() - t0
    bit_exact = False
    if rows.shape == plan.expected.shape:
        got = array_plan.gemm_from_rows(rows, m, n, grid, cfg.cols)
        bit_exact = bool(np.array_equal(got, golden.matmul(a, w)))
    # Simulated cycles of the whole GEMM on the array: from the first weight row in
    # (cycle 0 of the plan) to the last result row out, inclusive.
    cycles = int(out_cycles[-1]) + 1 if len(out_cycles) else plan.n_cycles
    macs = m * k * n
    return {
        "preset": cfg.name,
        "backend": backend,
        "m": m, "k": k, "n": n,
        "seed": seed,
        "bit_exact": bit_exact,
        "cycles": cycles,
        "macs": macs,
        "mac_utilization": macs / (cycles * cfg.macs),
        "tiles": len(tiles),
        "sim_wall_s": round(sim_wall, 3),
        "wall_s": round(wall, 3),
    }
