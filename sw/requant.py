"""Requantization: int32 accumulators to int8 activations, per output channel.

This module is the specification of the arithmetic (``docs/requant.md`` explains it with
a worked example); :class:`hw.requant.Requantizer` implements it bit-exactly and the tests
hold the two together.

For each output channel ``c`` (one of the ``C = cfg.cols`` columns) with an int32 bias
``b[c]``, an unsigned multiplier ``0 <= m[c] < 2**MULT_BITS`` and a shift
``0 <= s[c] < 2**SHIFT_BITS``::

    x = wrap_int32(acc + b[c])                            # 32-bit adder, wraps
    p = x * m[c]                                          # exact, |p| < 2**62
    q = (p + (1 << (s[c] - 1))) >> s[c]  if s[c] > 0  else  p
                                                          # arithmetic shift: rounds to
                                                          # nearest, half toward +infinity
    if relu: q = max(q, 0)
    y = clamp(q, -128, 127)                               # saturate to int8

With ``rowscale`` (the GEMM's input rows quantized each at a scale of its own by ``VEC
DYNQ``, :func:`sw.vector.dynq`), each accumulator row is first multiplied back by its
row's ``sigma_k``, in the units of a 16-bit ``pair`` product (1/256)::

    acc = wrap_int32(rshift_round(acc * (2 + (k & 1)), 9 - (k >> 1)))   # acc sigma_k / 256

(:func:`row_rescale`; ``9 - (k >> 1) >= 1``), so a dynamically quantized input
requantizes with the parameters of a 16-bit one.

so that ``y`` approximates ``round((acc + b) * m * 2**-s)``: a real scale ``m * 2**-s``
applied with one rounding (gemmlowp / TFLite per-channel requantization, with the
multiplier and shift folded into a single right shift). :func:`quantize_multiplier`
finds ``(m, s)`` for a real scale.
"""

import math
import numbers

import numpy as np

from serrano.hw.isa import (MULT_BITS, ROWSCALE_CODES, SHIFT_BITS,   # the hardware's
                            WIDE_MAX)                                  # widths
from .golden import wrap_int32

__all__ = ["MULT_BITS", "SHIFT_BITS", "MULT_MAX", "SHIFT_MAX", "WIDE_MAX", "requantize",
           "split_wide", "quantize_multiplier", "row_rescale"]

#: Largest multiplier and shift.
MULT_MAX = (1 << MULT_BITS) - 1
SHIFT_MAX = (1 << SHIFT_BITS) - 1

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _as_int_array(name, x, lo, hi):
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, not {x.dtype}")
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise ValueError(f"{name} holds values outside [{lo}, {hi}]")
    return x.astype(np.int64)


def requantize(acc, bias, mult, shift, relu=False, wide=False):
    """Requantize int32 accumulators to int8 (with ``wide``: to 16 bits, saturating at
    ``+-WIDE_MAX`` = 32639 so that :func:`split_wide` gives two int8 halves), per channel
    (the last axis).

    Parameters
    ----------
    acc : array of int, shape (..., C)
        int32 accumulator values, e.g. (rows, C); each row is one output row.
    bias : array of int, shape (C,)
        int32 bias per channel; added with 32-bit wrap-around.
    mult : array of int, shape (C,)
        Multiplier per channel, ``0 <= mult < 2**MULT_BITS``.
    shift : array of int, shape (C,)
        Right shift per channel, ``0 <= shift < 2**SHIFT_BITS``.
    relu : bool
        Clamp negative results to zero before saturating.

    Returns
    -------
    numpy.ndarray of int8 (``wide``: int16), the shape of ``acc``.

    All arithmetic is int64: ``|x * m| < 2**62`` and adding the rounding constant
    ``2**(s-1) <= 2**62`` stays below ``2**63``, so nothing overflows.
    """
    acc = _as_int_array("acc", acc, _INT32_MIN, _INT32_MAX)
    bias = _as_int_array("bias", bias, _INT32_MIN, _INT32_MAX)
    mult = _as_int_array("mult", mult, 0, MULT_MAX)
    shift = _as_int_array("shift", shift, 0, SHIFT_MAX)
    if acc.ndim < 1:
        raise ValueError("acc must have at least one axis (the channels)")
    channels = acc.shape[-1]
    for name, v in (("bias", bias), ("mult", mult), ("shift", shift)):
        if v.shape != (channels,):
            raise ValueError(f"{name} must have shape ({channels},), not {v.shape}")

    x = wrap_int32(acc + bias).astype(np.int64)
    p = x * mult
    # 1 << (s - 1) for s > 0, and 0 for s == 0 (where q = p exactly).
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    q = np.right_shift(p + half, shift)            # arithmetic on int64
    if relu:
        q = np.maximum(q, 0)
    if wide:
        return np.clip(q, -WIDE_MAX, WIDE_MAX).astype(np.int16)
    return np.clip(q, -128, 127).astype(np.int8)


def row_rescale(acc, k):
    """Accumulator rows ``acc`` (int32, ``(rows, C)``) times their rows' scales
    ``sigma_k / 256`` (``k``: one code a row, ``0 <= k < ROWSCALE_CODES``), rounded half
    up and wrapped to int32, as ``STORE rowscale`` does before requantizing."""
    acc = _as_int_array("acc", acc, _INT32_MIN, _INT32_MAX)
    k = _as_int_array("k", k, 0, ROWSCALE_CODES - 1).reshape(-1, *([1] * (acc.ndim - 1)))
    s = 9 - (k >> 1)
    return wrap_int32((acc * (2 + (k & 1)) + (np.int64(1) << (s - 1))) >> s)


def split_wide(q):
    """16-bit values ``q`` (``|q| <= WIDE_MAX``) as two int8 halves ``(hi, lo)`` with
    ``q == 256 * hi + lo``: ``lo`` is ``q``'s low byte (signed), ``hi = (q + 128) >> 8``."""
    q = np.asarray(q, np.int64)
    if q.size and np.abs(q).max() > WIDE_MAX:
        raise ValueError(f"wide values must lie in [-{WIDE_MAX}, {WIDE_MAX}]")
    lo = ((q + 128) & 0xFF) - 128
    return ((q + 128) >> 8).astype(np.int8), lo.astype(np.int8)


def quantize_multiplier(real_scale):
    """Return ``(m, s)`` with ``m * 2**-s`` the closest such number to ``real_scale``.

    ``s`` is the largest shift ``<= SHIFT_MAX`` (63) for which
    ``m = round(real_scale * 2**s)`` (to nearest, halves up, computed exactly) is below
    ``2**MULT_BITS``, so ``m`` keeps as many significant bits as the hardware holds.

    Error: always ``|m * 2**-s - real_scale| <= 2**-(s+1)``. When ``s < 63`` the shift was
    limited by the multiplier's width, so ``m >= 2**30`` and the relative error is at most
    ``1 / (2**31 - 1/2)`` (about ``4.66e-10``). Only scales below about ``2**-32`` reach
    ``s = 63``; their relative error grows as the scale shrinks, and a scale below
    ``2**-64`` gives ``m = 0`` (every output of such a scale rounds to 0 anyway).

    Raises :class:`TypeError` if ``real_scale`` is not a real number, and
    :class:`ValueError` if it is not finite, not positive, or so large that even
    ``s = 0`` gives ``m >= 2**MULT_BITS`` (``real_scale >= 2**31 - 1/2``).
    """
    if isinstance(real_scale, bool) or not isinstance(real_scale, numbers.Real):
        raise TypeError(f"real_scale must be a real number, not {real_scale!r}")
    scale = float(real_scale)
    if not math.isfinite(scale):
        raise ValueError(f"real_scale must be finite, not {real_scale!r}")
    if scale <= 0:
        raise ValueError(f"real_scale must be positive, not {real_scale!r}")
    num, den = scale.as_integer_ratio()           # exact: scale == num / den, den = 2**k

    def rounded(s):
        # floor(num * 2**s / den + 1/2), in integers.
        return (2 * num * (1 << s) + den) // (2 * den)

    if rounded(0) > MULT_MAX:
        raise ValueError(f"real_scale {real_scale!r} is too large: it needs a multiplier "
                         f"of {MULT_BITS + 1} bits or more even with shift 0")
    # rounded(s) never decreases as s grows: take the largest s that still fits.
    s = SHIFT_MAX
    while rounded(s) > MULT_MAX:
        s -= 1
    return rounded(s), s
