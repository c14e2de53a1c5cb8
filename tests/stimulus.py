"""Random stimulus shared by the accelerator tests."""

import numpy as np

from serrano.sw import golden, requant


def requant_gemm_operands(rng, m, k, n, *, bias_bound, scale_range):
    """Random int8 ``a`` (m x k) and ``w`` (k x n) with both int8 extremes present, int32
    ``bias`` in ``[-bias_bound, bias_bound)``, and per-column requantization ``mult``,
    ``shift`` for scales ``127 / peak`` times a factor drawn from ``scale_range`` (above 1
    some columns saturate). Returns ``(a, w, bias, mult, shift)``."""
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    a.flat[0], w.flat[-1] = -128, 127
    bias = rng.integers(-bias_bound, bias_bound, n)
    acc = golden.matmul(a, w).astype(np.int64) + bias
    peak = np.maximum(np.abs(acc).max(axis=0), 1)
    scales = 127.0 / peak * rng.uniform(*scale_range, n)
    mult, shift = zip(*(requant.quantize_multiplier(s) for s in scales))
    return a, w, bias, np.array(mult), np.array(shift)
