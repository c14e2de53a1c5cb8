"""``serrano gemm``: a requantized int8 GEMM through the whole accelerator.

The operands, the packed weights, the requantization parameters and the program start
in memory; the accelerator fetches and runs the program; the int8 result ends in memory.
The result is checked twice: against numpy (``golden.matmul`` then
``requant.requantize``) and, byte for byte over the whole device memory, against the
golden ISA model running the same program (``--check every``, the default).
``cycles`` is the accelerator's own cycle counter, start to done.

``--weights int4`` draws 4-bit weights instead (``sw/q4.py``: random codes with random
block scales and offsets, the extremes always among them); the result is the same
requantized int8 ``a @ W`` of their integer weights ``W``, checked the same two ways.

``--array`` keeps the earlier mode: the bare systolic array fed cycle by cycle, int32
results summed across K tiles outside the array (also on Amaranth's simulator).
"""

import numpy as np

from serrano.hw import isa
from . import array_plan, compiler, golden, q4, requant
from .backends import backend_names, check_backend
from .runtime import Device

__all__ = ["ARRAY_BACKENDS", "WEIGHTS", "random_operands", "random_q4", "random_q8",
           "random_requant",
           "run_gemm", "run_array_gemm"]
WEIGHTS = q4.WEIGHTS

#: ``--array`` feeds the bare array on a simulator: every backend but the ISA model.
ARRAY_BACKENDS = tuple(b for b in backend_names() if b != "golden")


def random_operands(m, k, n, seed):
    """Random int8 ``a`` (m x k) and ``w`` (k x n) that always contain -128 and 127."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int64)
    w = rng.integers(-128, 128, (k, n), dtype=np.int64)
    a.flat[0], a.flat[-1] = -128, 127
    w.flat[0], w.flat[-1] = -128, 127
    return a, w


def random_q4(k, n, seed, cfg):
    """Random :class:`sw.q4.Q4Weights` (k x n): codes, scales and offsets uniform over
    their ranges, with 0 and 15, 0 and 255, -128 and 127 always among them."""
    rng = np.random.default_rng(seed + 2)
    nb = -(-k // cfg.weight_block)
    codes = rng.integers(0, q4.CODE_MAX + 1, (k, n))
    d = rng.integers(0, q4.D_MAX + 1, (nb, n))
    f = rng.integers(q4.F_MIN, q4.F_MAX + 1, (nb, n))
    codes.flat[0], codes.flat[-1] = 0, q4.CODE_MAX
    d.flat[0], d.flat[-1] = q4.D_MAX, 0
    f.flat[0], f.flat[-1] = q4.F_MIN, q4.F_MAX
    return q4.Q4Weights(codes.astype(np.uint8), d.astype(np.uint8), f.astype(np.int8),
                        np.ones(n, np.float32), cfg.weight_block)


def random_q8(k, n, seed, cfg):
    """Random :class:`sw.q4.Q8Weights` (k x n): int8 codes and uint8 block scales uniform
    over their ranges, with -128 and 127, 255 and 0 always among them."""
    rng = np.random.default_rng(seed + 3)
    nb = -(-k // cfg.weight_block)
    codes = rng.integers(-128, 128, (k, n))
    d = rng.integers(0, q4.D_MAX + 1, (nb, n))
    codes.flat[0], codes.flat[-1] = -128, 127
    d.flat[0], d.flat[-1] = q4.D_MAX, 0
    return q4.Q8Weights(codes.astype(np.int8), d.astype(np.uint8), np.ones(n, np.float32),
                        cfg.weight_block)


def random_requant(acc, seed):
    """Per-channel bias, multiplier and shift that map each column of ``acc`` onto int8
    (a random bias, then the column's peak to about 127)."""
    rng = np.random.default_rng(seed + 1)
    n = acc.shape[1]
    bias = rng.integers(-1000, 1000, n)
    peak = np.maximum(np.abs(acc.astype(np.int64) + bias).max(axis=0), 1)
    pairs = [requant.quantize_multiplier(127.0 / p) for p in peak]
    return bias, np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def _check_shape(m, k, n):
    for name, v in (("m", m), ("k", k), ("n", n)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"--{name} must be a positive integer, not {v!r}")


def run_gemm(cfg, m, k, n, backend, seed=0, mem_latency=30, check="every", device=None,
             weights="int8"):
    """Run one GEMM through the accelerator on ``backend``; return the report dict.

    :func:`sw.compiler.compile_gemm` lays out the program and the operands at the top of
    the device's allocations; the host writes them and runs the program as one call of a
    :class:`sw.runtime.Device` (``device``, if given, is used and left open: the
    benchmark's way to keep one simulator for many GEMMs). ``bit_exact`` is the output
    against numpy and, on an RTL backend with ``check="every"``, the whole memory against
    the golden model.
    """
    _check_shape(m, k, n)
    check_backend(backend)
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of: {', '.join(WEIGHTS)}")
    a, w = random_operands(m, k, n, seed)
    if weights == "int4":
        w = random_q4(k, n, seed, cfg)
        acc = golden.wrap_int32(a @ w.integer().astype(np.int64))
    else:
        acc = golden.matmul(a, w)
    bias, mult, shift = random_requant(acc, seed)
    expect = requant.requantize(acc, bias, mult, shift)

    own = device is None
    dev = device or Device(cfg, backend, mem_latency=mem_latency, check=check)
    try:
        mark = dev.mark()
        # The compiler's layout of the GEMM (program, weights, activations, parameters,
        # output) placed at the top of the device's allocations.
        lay = compiler.compile_gemm(cfg, a, w, bias, mult, shift, base=mark)
        if dev.alloc(len(lay.image) - mark) != mark:
            raise RuntimeError("the device allocator and the compiler disagree on alignment")
        dev.write(mark, lay.image[mark:])
        before = dev.bit_exact
        stats = dev.run(lay.prog_addr, lay.prog_len, name=f"gemm {m}x{k}x{n}", macs=m * k * n,
                        program=lay.image[lay.prog_addr:lay.prog_addr
                                          + lay.prog_len * isa.INSN_BYTES].tobytes(),
                        gemms=[(m, k, n)])
        out = compiler.unpack_out(dev.read(lay.y_addr, lay.y_bytes), m, n, cfg)
        dev.release(mark)
    finally:
        if own:
            dev.close()
    bit_exact = bool(np.array_equal(out, expect) and stats.bit_exact is not False
                     and before is not False)
    counters = stats.counters
    macs = m * k * n
    bus = cfg.bus_bytes
    report = {
        "preset": cfg.name, "backend": backend, "m": m, "k": k, "n": n, "seed": seed,
        "weights": weights,
        "bit_exact": bit_exact, "checked_vs_golden": stats.bit_exact is not None,
        "macs": macs, "mem_latency": mem_latency,
        "bus_bytes_per_cycle": bus, "sim_wall_s": round(stats.wall_s, 4),
        "check_wall_s": round(stats.check_s, 4),
    }
    if counters is None:          # the golden model counts work, not cycles
        gold = dev.golden_read_bytes, dev.golden_write_bytes
        report.update({"cycles": None, "mac_utilization": None,
                       "dma_read_bytes": gold[0], "dma_write_bytes": gold[1],
                       "dma_read_utilization": None, "stall_cycles": None,
                       "instructions": len(stats.program) // isa.INSN_BYTES})
        return report
    cycles = counters["cycles"]
    report.update({
        "cycles": cycles,
        "mac_utilization": macs / (cycles * cfg.macs),
        "dma_read_bytes": counters["dma_read_bytes"],
        "dma_write_bytes": counters["dma_write_bytes"],
        "dma_read_utilization": counters["dma_read_bytes"] / (cycles * bus),
        "stall_cycles": {cause: counters[f"stall_{cause}"]
                         for cause in ("weight", "act", "store", "insn")},
        "instructions": counters["instructions"],
        "array_cycles": counters["array_cycles"],
        "sim_cycles_per_s": round(cycles / stats.wall_s) if stats.wall_s else None,
    })
    return report


def run_array_gemm(cfg, m, k, n, backend, seed=0):
    """The bare-array GEMM (int32 results, K tiles summed outside the array)."""
    _check_shape(m, k, n)
    if backend not in ARRAY_BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for --array; choose one of: "
                         f"{', '.join(ARRAY_BACKENDS)}")
    from serrano.sim.array_backends import run_plan

    a, w = random_operands(m, k, n, seed)
    tiles, grid = array_plan.gemm_tiles(a, w, cfg.rows, cfg.cols)
    plan = array_plan.plan_tiles(tiles, cfg.rows, cfg.cols, cfg.latency)
    rows, out_cycles, sim_wall = run_plan(cfg, plan, backend)
    bit_exact = False
    if rows.shape == plan.expected.shape:
        got = array_plan.gemm_from_rows(rows, m, n, grid, cfg.cols)
        bit_exact = bool(np.array_equal(got, golden.matmul(a, w)))
    # From the first weight row in (cycle 0 of the plan) to the last result row out.
    cycles = int(out_cycles[-1]) + 1 if len(out_cycles) else plan.n_cycles
    macs = m * k * n
    return {
        "preset": cfg.name, "backend": backend, "mode": "array", "m": m, "k": k, "n": n,
        "seed": seed, "bit_exact": bit_exact, "cycles": cycles, "macs": macs,
        "mac_utilization": macs / (cycles * cfg.macs), "tiles": len(tiles),
        "sim_wall_s": round(sim_wall, 3),
    }
