"""The vector unit's arithmetic, stated once: the specification that the RTL
(``hw/vector_unit.py``) and the golden ISA model (``sw/isa_model.py``) follow bit for bit.

Every operation works on int8 elements and gives int8 elements; the intermediate
values are exact integers (no intermediate rounding but the one stated).

``rshift_round(x, s)``
    ``floor((x + 2**(s-1)) / 2**s)`` for ``s > 0``, ``x`` for ``s = 0``: division by a
    power of two, rounding half up (an arithmetic right shift after adding half).
``sat8(x)``
    ``x`` clamped to ``[-128, 127]``.
``add(a, b, mul_a, mul_b, shift, wide=False)``
    ``sat8(rshift_round(mul_a * a + mul_b * b, shift))``: with ``a ~ x / s_a`` and
    ``b ~ z / s_b``, the sum ``x + z`` at the output scale ``s_y`` is
    ``mul_a = round(2**shift * s_a / s_y)``, ``mul_b = round(2**shift * s_b / s_y)``
    (:func:`add_multipliers`). With ``wide``, ``a`` and ``b`` are 16-bit (``256 hi +
    lo``) and the sum is clamped to ``[-WIDE_MAX, WIDE_MAX]`` instead (a 16-bit residual
    stream).
``mul(a, b, mul_a, shift, wide=False)``
    ``sat8(rshift_round(mul_a * (a * b), shift))``: the product of two int8 tensors at
    the output scale ``s_y``: ``mul_a = round(2**shift * s_a * s_b / s_y)``. With
    ``wide``, ``a``, ``b`` and the result are 16-bit: ``clamp(rshift_round(a * b,
    shift), +-WIDE_MAX)`` (``mul_a`` is not applied: the product of two 16-bit values
    fills the lane's multiplier), so the output scale is ``s_a * s_b * 2**shift``
    (:func:`wide_mul_shift` picks the shift).
``lut(a, table)``
    ``table[a & 255]``: any function of one int8 at a fixed input and output scale
    (:func:`make_table` tabulates it, rounding to nearest, saturating).

``softmax(x, length, mul, shift)``
    for one vector ``x`` of int8 (input scale ``s``), its first ``length`` elements
    valid:

    1. ``m = max(x[:length])``; ``d = m - x`` (0..255; with ``wide``, ``x`` 16-bit,
       ``256 hi + lo``: 0..65535);
    2. ``t = rshift_round(d * mul, shift)``: ``d * s * log2(e)`` in 1/256ths when
       ``mul / 2**shift = 256 * s * log2(e)`` (:func:`softmax_multiplier`);
    3. ``e = POW2[t mod 256] >> (t // 256)`` (0 once ``t // 256 >= 16``), with the
       constant table ``POW2[f] = round(2**15 * 2**(-f / 256))``: ``2**15 * 2**(-t/256)``,
       so the largest element gives ``2**15``; masked elements give 0;
    4. ``S = sum(e)`` (at least ``2**15`` when ``length >= 1``);
       ``r = floor(127 * 2**24 / S)`` (< ``2**16``; 0 when ``S = 0``);
    5. ``p = rshift_round(e * r, 24)``: ``127 * e / S`` to the nearest integer
       (within one), in ``[0, 127]``.

``norm(x, gain, length, shift, rms, wide=False, wide_out=False, beta=None)``
    LayerNorm (``rms=False``) or RMSNorm of one vector ``x`` over its first ``n =
    min(length, len(x))`` elements (the others give 0; ``n = 0`` gives zeros), with ``gain`` int16 per
    element. ``x`` is int8, taken as ``X = 256 x``, or with ``wide`` ``X = 256 hi + lo``
    of two int8 halves (a residual stream wider than int8, :func:`sw.requant.split_wide`;
    ``-32896 <= X <= 32639``):

    1. the mean, rounded half up: ``mu = floor((2 sum(X) + n) / (2 n))`` (``mu = 0``
       for RMSNorm);
    2. the deviations ``D = X - mu`` and ``V = sum(D**2)`` (two passes: no
       cancellation);
    3. ``r = min(isqrt(floor(n * 2**56 / V)), 2**32 - 1)`` (0 when ``V = 0``; the bound
       binds only for a 16-bit vector of mean square deviation below 1/256), truncated to
       its 16 leading bits: ``r_t = (r >> e) << e`` with ``e = max(0, bit_length(r) -
       16)``. Then
       ``D * r / 2**28`` is ``(x - mean) / sqrt(variance)`` (``x / rms`` for RMSNorm);
    4. ``z = clamp(rshift_round(D * r_t, 16), -2**17, 2**17 - 1)``: the normalized value
       in 1/4096ths (saturating past 32 standard deviations);
    5. ``y = sat8(rshift_round(z * gain, shift) + beta)`` (``wide_out``: clamped to
       ``+-WIDE_MAX`` instead; ``beta`` int16 per element, 0 if not given, a LayerNorm's
       bias at the output's scale): with ``gain = round(gamma * 2**shift / (4096 *
       s_y))`` the output at scale ``s_y`` (:func:`norm_gain`). (Adding ``beta`` to the
       rounded value is adding ``beta * 2**shift`` before the rounding shift: one
       rounding.)

    A norm with the ISA's ``dynq`` is ``dynq(norm(..., wide_out=True), len(x))``: the
    16-bit result on to int8 at a scale of its own (below).

    ``epsilon`` is left out: it matters only for a vector of (nearly) equal elements,
    which gives 0 here, as it does in float to within ``epsilon``.

``argmax(x, length)``
    the index of the first largest of ``x[:length]`` (0 for ``length = 0``).
``rope(x, cos, sin, mul, shift)``
    ``x`` one vector of ``2h`` int8 (halves ``x1``, ``x2``, the rotate-half pairing of
    Hugging Face's Llama), ``cos`` and ``sin`` ``h`` int8 each (``round(127 cos)``,
    ``round(127 sin)``: :func:`rope_tables`):
    ``y1 = sat8(rshift_round(mul * (x1 cos - x2 sin), shift))``,
    ``y2 = sat8(rshift_round(mul * (x2 cos + x1 sin), shift))``; ``mul / 2**shift ~
    1 / 127`` keeps the scale (:func:`rope_multiplier`). With ``wide``, ``x``, ``cos``,
    ``sin`` and ``y`` are 16-bit (``256 hi + lo``; the tables ``round(ROPE_ONE cos)``,
    :func:`rope_tables` with ``wide``), ``mul`` is not applied and the results are
    clamped to ``+-WIDE_MAX``: ``y1 = clamp(rshift_round(x1 cos - x2 sin, shift))``, the
    same scale for ``shift = ROPE_SHIFT``.

``dynq(x, length)``
    per-row (per-token) dynamic quantization of one vector ``x`` (int8, or with
    ``wide`` 16-bit ``256 hi + lo``) over its first ``length`` elements, to int8 at a
    scale of its own:

    1. ``m = max(|x[:length]|)`` (0 for ``length = 0``);
    2. the code ``k``: the smallest of ``0 .. ROWSCALE_CODES - 1`` with ``q_k(m) <=
       127``, where ``q_k(v) = rshift_round(v * DYNQ_MUL[k & 1], DYNQ_SHIFT + (k >>
       1))`` is ``v / sigma_k`` (``sigma_k = (1 + (k & 1)/2) * 2**(k >> 1)``: 1, 1.5,
       2, 3, ...); the hardware counts the thresholds :data:`DYNQ_LIMITS` that ``m``
       exceeds (the same code);
    3. ``y = sat8(q_k(x))`` for every element (those past ``length`` too; within
       ``length`` ``|y| <= 127``), and ``k`` is the row's scale code: ``x ~ sigma_k y``.

    The GEMM that reads ``y`` multiplies its accumulators back by ``sigma_k`` in its
    ``STORE`` (``rowscale``, :func:`sw.requant.row_rescale`). A row's largest element
    reaches 85 to 127: at most 0.6 of a bit below a scale of its own in real numbers.

``mul_a`` and ``mul_b`` are signed 16-bit (``SOFTMAX``'s ``mul`` unsigned 16-bit),
``shift`` 0..31 (the instruction's fields).
"""

import math

import numpy as np

from serrano.hw import isa

__all__ = ["rshift_round", "sat8", "add", "mul", "wide_mul_shift", "lut", "make_table",
           "make_wide_tables", "add_multipliers",
           "mul_multiplier", "softmax", "softmax_multiplier", "POW2", "SOFTMAX_ONE",
           "norm", "norm_gain", "gain_bytes", "from_bytes", "argmax", "rope", "rope_tables",
           "rope_multiplier", "ROPE_ONE", "ROPE_SHIFT", "apply", "dynq", "dynq_q",
           "DYNQ_LIMITS", "rowscale_sigma"]

#: ``round(2**15 * 2**(-f / 256))`` for ``f`` in 0..255: the softmax's base-2 exponential.
POW2 = np.round(2.0 ** 15 * 2.0 ** (-np.arange(256) / 256)).astype(np.int64)
#: The softmax's output for a probability of one.
SOFTMAX_ONE = 127
#: A 16-bit rotary table's one (``cos = 1``), and the ``ROPE wide`` shift that keeps the
#: scale.
ROPE_SHIFT = 14
ROPE_ONE = 1 << ROPE_SHIFT
_RECIP_BITS = 24

_MUL_MIN, _MUL_MAX = -(1 << 15), (1 << 15) - 1
SHIFT_MAX = 31


def _check(mul_a=0, mul_b=0, shift=0):
    for name, v in (("mul_a", mul_a), ("mul_b", mul_b)):
        if not _MUL_MIN <= int(v) <= _MUL_MAX:
            raise ValueError(f"{name}={v} is not a signed 16-bit multiplier")
    if not 0 <= int(shift) <= SHIFT_MAX:
        raise ValueError(f"shift={shift} is not in 0..{SHIFT_MAX}")


def rshift_round(x, s):
    """``floor((x + 2**(s-1)) / 2**s)`` elementwise (``x`` for ``s = 0``), int64."""
    x = np.asarray(x, np.int64)
    if s == 0:
        return x
    return (x + (1 << (s - 1))) >> s


def sat8(x):
    return np.clip(np.asarray(x, np.int64), -128, 127).astype(np.int8)


def add(a, b, mul_a, mul_b, shift, wide=False):
    _check(mul_a, mul_b, shift)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    y = rshift_round(int(mul_a) * a + int(mul_b) * b, int(shift))
    if wide:
        return np.clip(y, -isa.WIDE_MAX, isa.WIDE_MAX).astype(np.int16)
    return sat8(y)


def mul(a, b, mul_a, shift, wide=False):
    _check(mul_a, 0, shift)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if wide:
        y = rshift_round(a * b, int(shift))
        return np.clip(y, -isa.WIDE_MAX, isa.WIDE_MAX).astype(np.int16)
    return sat8(rshift_round(int(mul_a) * (a * b), int(shift)))


def wide_mul_shift(s_a, s_b, s_min):
    """``(shift, s_y)`` of a 16-bit ``MUL`` of values at scales ``s_a``, ``s_b``: the
    smallest shift whose output scale ``s_y = s_a * s_b * 2**shift`` is at least
    ``s_min`` (the scale the product's range needs)."""
    for shift in range(SHIFT_MAX + 1):
        s_y = s_a * s_b * 2.0 ** shift
        if s_y >= s_min:
            return shift, s_y
    raise ValueError(f"a 16-bit product at scale {s_min} is out of reach of scales {s_a}, "
                     f"{s_b}")


def lut(a, table):
    table = np.asarray(table, np.int8)
    if table.shape != (isa.TABLE_ENTRIES,):
        raise ValueError(f"a table has {isa.TABLE_ENTRIES} entries, not {table.shape}")
    return table[np.asarray(a, np.int64) & 0xFF]


def make_table(fn, s_in, s_out):
    """The table of ``y = fn(x)`` for int8 ``a`` (``x = a * s_in``) and int8 ``y``
    (``y ~ q * s_out``): entry ``a & 255`` is ``sat8(round(fn(a * s_in) / s_out))``."""
    return sat8(_table_values(fn, s_in, s_out))


def _table_values(fn, s_in, s_out):
    """``round(fn(a * s_in) / s_out)`` for each table entry ``a & 255`` of an int8 ``a``."""
    if not (s_in > 0 and s_out > 0):
        raise ValueError(f"scales must be positive, not {s_in!r}, {s_out!r}")
    a = np.arange(isa.TABLE_ENTRIES, dtype=np.int64)
    a = np.where(a > 127, a - 256, a)
    return np.round(np.asarray(fn(a * float(s_in)), np.float64) / float(s_out))


def make_wide_tables(fn, s_in, s_out):
    """``fn`` of an int8 ``a`` into 16 bits (``y ~ q * s_out``, ``|q| <= WIDE_MAX``): the
    tables of the high and low halves of ``q`` (:func:`sw.requant.split_wide`), for two
    ``LUT`` instructions reading the same rows."""
    from .requant import split_wide
    q = np.clip(_table_values(fn, s_in, s_out), -isa.WIDE_MAX, isa.WIDE_MAX)
    return split_wide(q.astype(np.int64))


def _fixed(ratio, what, lo=_MUL_MIN, hi=_MUL_MAX):
    """``(m, shift)`` with ``m = round(ratio * 2**shift)`` in ``[lo, hi]`` (a signed 16-bit
    integer by default), the largest shift that keeps it there."""
    if not np.isfinite(ratio):
        raise ValueError(f"{what} must be finite, not {ratio!r}")
    if ratio == 0:
        return 0, 0
    for shift in range(SHIFT_MAX, -1, -1):
        m = int(round(ratio * (1 << shift)))
        if lo <= m <= hi:
            return m, shift
    raise ValueError(f"{what} {ratio!r} needs a multiplier beyond 16 bits")


def add_multipliers(s_a, s_b, s_y):
    """``(mul_a, mul_b, shift)`` for ``ADD`` of int8 tensors at scales ``s_a``, ``s_b``
    into scale ``s_y``: one shift for both, the largest that keeps both in 16 bits."""
    ra, rb = s_a / s_y, s_b / s_y
    _, sa = _fixed(ra, "s_a / s_y")
    _, sb = _fixed(rb, "s_b / s_y")
    shift = min(s for s, r in ((sa, ra), (sb, rb)) if r != 0) if (ra or rb) else 0
    return int(round(ra * (1 << shift))), int(round(rb * (1 << shift))), shift


def mul_multiplier(s_a, s_b, s_y):
    """``(mul_a, shift)`` for ``MUL`` of int8 tensors at scales ``s_a``, ``s_b`` into
    ``s_y``."""
    return _fixed(s_a * s_b / s_y, "s_a * s_b / s_y")


def softmax(x, length, mul, shift, wide_out=False, wide=False):
    """:func:`softmax` of the docstring for each row of ``x`` (2-D int8, one vector per
    row; 16-bit values with ``wide``); ``length`` an int or one per row. Returns int8
    rows (the probability times 127), or with ``wide_out`` 16-bit rows, ``rshift_round(e
    r, 16)``: the probability times ``127 * 256``, eight more bits for long rows of small
    probabilities."""
    if not 0 <= int(mul) < (1 << 16):
        raise ValueError(f"mul={mul} is not an unsigned 16-bit multiplier")
    _check(0, 0, shift)
    x = np.atleast_2d(np.asarray(x, np.int64))
    n, L = x.shape
    length = np.broadcast_to(np.asarray(length, np.int64), (n,))
    valid = np.arange(L)[None, :] < length[:, None]
    m = np.where(valid, x, -(1 << 16) if wide else -128).max(axis=1, keepdims=True)
    t = rshift_round((m - x) * int(mul), int(shift))
    e = np.where((t >> 8) >= 16, 0, POW2[t & 255] >> np.minimum(t >> 8, 15))
    e = np.where(valid, e, 0)
    total = e.sum(axis=1, keepdims=True)
    r = np.where(total > 0, (SOFTMAX_ONE << _RECIP_BITS) // np.maximum(total, 1), 0)
    if wide_out:
        return rshift_round(e * r, _RECIP_BITS - 8).astype(np.int16)
    return rshift_round(e * r, _RECIP_BITS).astype(np.int8)


#: Fractional bits of the normalized value ``z`` and its clamp.
NORM_FRAC = 12
_Z_MAX = (1 << 17) - 1


def norm(x, gain, length, shift, rms, wide=False, wide_out=False, beta=None):
    """:func:`norm` of the docstring for each row of ``x`` (2-D int8, or 16-bit with
    ``wide``; one vector per row) with ``gain`` (int16, one per element) and ``beta``
    (int16, one per element, or None). Returns int8 rows, or with ``wide_out`` 16-bit
    rows (clamped to ``+-WIDE_MAX``)."""
    _check(0, 0, shift)
    x = np.atleast_2d(np.asarray(x, np.int64))
    lo, hi = (-128 * 257, 127 * 257) if wide else (-128, 127)
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"norm's x must be {'256 hi + lo of int8 halves' if wide else 'int8'}")
    if not wide:
        x = 256 * x
    gain = np.asarray(gain, np.int64)
    count, L = x.shape
    if gain.shape != (L,) or gain.min(initial=0) < -(1 << 15) or gain.max(initial=0) >= 1 << 15:
        raise ValueError(f"gain must be {L} int16 values")
    beta = np.zeros(L, np.int64) if beta is None else np.asarray(beta, np.int64)
    if beta.shape != (L,) or beta.min(initial=0) < -(1 << 15) or beta.max(initial=0) >= 1 << 15:
        raise ValueError(f"beta must be {L} int16 values")
    n = min(int(length), L)
    out = np.zeros((count, L), np.int16 if wide_out else np.int8)
    if n == 0:
        return out
    valid = np.arange(L) < n
    for i in range(count):
        xi = x[i]
        mu = 0 if rms else (2 * int(xi[valid].sum()) + n) // (2 * n)
        d = xi - mu
        v = int((d[valid] ** 2).sum())
        r = min(math.isqrt((n << 56) // v), (1 << 32) - 1) if v else 0
        e = max(0, r.bit_length() - 16)
        r_t = (r >> e) << e
        z = np.clip(rshift_round(d * r_t, 16), -_Z_MAX - 1, _Z_MAX)
        y = rshift_round(z * gain, int(shift)) + beta
        y = np.clip(y, -isa.WIDE_MAX, isa.WIDE_MAX) if wide_out else sat8(y)
        out[i] = np.where(valid, y, 0)
    return out


def gain_bytes(gain):
    """int16 ``gain`` as the two int8 rows a normalization reads: its low bytes, then its
    high bytes (``hw/isa.py``, ``LAYERNORM``)."""
    gain = np.asarray(gain, np.int64)
    return (gain & 0xFF).astype(np.uint8).view(np.int8), (gain >> 8).astype(np.int8)


def from_bytes(lo, hi):
    """The int16 values whose :func:`gain_bytes` are ``lo`` and ``hi`` (int64)."""
    return np.asarray(hi, np.int64) << 8 | (np.asarray(lo, np.int64) & 0xFF)


def norm_gain(gamma, s_y):
    """``(gain, shift)`` for :func:`norm`: int16 gains ``round(gamma * 2**shift / (4096 *
    s_y))`` with the largest shift that keeps them in 16 bits."""
    gamma = np.asarray(gamma, np.float64)
    ratio = gamma / (float(s_y) * (1 << NORM_FRAC))
    peak = float(np.abs(ratio).max(initial=0))
    if not np.isfinite(peak):
        raise ValueError("gamma / s_y must be finite")
    shift = SHIFT_MAX
    while shift > 0 and peak * (1 << shift) >= (1 << 15) - 1:
        shift -= 1
    return np.round(ratio * (1 << shift)).astype(np.int64), shift


def argmax(x, length):
    """:func:`argmax` of the docstring for each row of ``x`` (2-D int8, or 16-bit values;
    ``length`` an int or one per row): int64 indices."""
    x = np.atleast_2d(np.asarray(x, np.int64))
    length = np.broadcast_to(np.asarray(length, np.int64), (len(x),))
    valid = np.arange(x.shape[1])[None, :] < length[:, None]
    return np.where(valid, x, np.iinfo(np.int64).min).argmax(axis=1) * (length > 0)


def rope(x, cos, sin, mul, shift, wide=False):
    """:func:`rope` of the docstring for each row of ``x`` (2-D int8, ``2h`` per row; with
    ``wide`` 16-bit values and tables), with ``h`` cosines and sines for all rows, or a
    row of them for each row of ``x``."""
    _check(0 if wide else mul, 0, shift)
    x = np.atleast_2d(np.asarray(x, np.int64))
    h = x.shape[1] // 2
    c, s = np.asarray(cos, np.int64), np.asarray(sin, np.int64)
    shapes = ((h,), (1, h), (len(x), h))
    if x.shape[1] % 2 or c.shape not in shapes or s.shape not in shapes:
        raise ValueError(f"rope needs an even row and {h} cosines and sines (per row)")
    x1, x2 = x[:, :h], x[:, h:]
    if wide:
        y = np.concatenate([rshift_round(x1 * c - x2 * s, int(shift)),
                            rshift_round(x2 * c + x1 * s, int(shift))], axis=1)
        return np.clip(y, -isa.WIDE_MAX, isa.WIDE_MAX).astype(np.int16)
    y1 = rshift_round(int(mul) * (x1 * c - x2 * s), int(shift))
    y2 = rshift_round(int(mul) * (x2 * c + x1 * s), int(shift))
    return sat8(np.concatenate([y1, y2], axis=1))


def rope_tables(pos, d, base, wide=False):
    """int8 ``(cos, sin)`` of the rotary embedding at position ``pos`` for head width
    ``d``: ``round(127 cos(pos * base**(-2i/d)))``, ``i < d / 2``; with ``wide`` int16
    ``round(ROPE_ONE cos(...))``."""
    ang = float(pos) * float(base) ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    if wide:
        return (np.round(ROPE_ONE * np.cos(ang)).astype(np.int16),
                np.round(ROPE_ONE * np.sin(ang)).astype(np.int16))
    return (np.round(127 * np.cos(ang)).astype(np.int8),
            np.round(127 * np.sin(ang)).astype(np.int8))


def rope_multiplier(s_in, s_out):
    """``(mul, shift)`` for :func:`rope` from input scale ``s_in`` to ``s_out``."""
    return _fixed(s_in / (127.0 * s_out), "s_in / (127 s_out)")


def softmax_multiplier(s_in):
    """``(mul, shift)`` for :func:`softmax` of int8 inputs at scale ``s_in``:
    ``mul / 2**shift ~ 256 * s_in * log2(e)``, ``mul`` unsigned 16-bit."""
    ratio = 256 * float(s_in) / np.log(2)
    if not ratio > 0:
        raise ValueError(f"s_in must be positive, not {s_in!r}")
    return _fixed(ratio, "256 s_in log2(e)", 0, (1 << 16) - 1)


def dynq_q(v, k):
    """``q_k(v)`` of :func:`dynq`: ``v / sigma_k`` rounded (int64, elementwise; ``k`` an
    int or an array broadcast against ``v``)."""
    v, k = np.asarray(v, np.int64), np.asarray(k, np.int64)
    mul = np.asarray(isa.DYNQ_MUL, np.int64)[k & 1]
    s = isa.DYNQ_SHIFT + (k >> 1)                  # >= 15: the rounding half is exact
    return (v * mul + (np.int64(1) << (s - 1))) >> s


#: ``DYNQ_LIMITS[k]``: the largest row maximum that code ``k`` holds within 127 (the
#: hardware's table, checked against :func:`dynq`'s own search in the tests).
DYNQ_LIMITS = isa.DYNQ_LIMITS


def rowscale_sigma(k):
    """The scale ``sigma_k`` of code ``k`` (float)."""
    k = np.asarray(k, np.int64)
    return (1.0 + (k & 1) / 2.0) * np.exp2(k >> 1)


def dynq(x, length):
    """:func:`dynq` of the docstring for each row of ``x`` (2-D int8 or 16-bit values;
    ``length`` an int or one per row): ``(y, k)``, int8 rows and one int64 code a row."""
    x = np.atleast_2d(np.asarray(x, np.int64))
    length = np.broadcast_to(np.asarray(length, np.int64), (len(x),))
    valid = np.arange(x.shape[1])[None, :] < length[:, None]
    m = np.where(valid, np.abs(x), 0).max(axis=1, initial=0)
    fits = dynq_q(m[:, None], np.arange(isa.ROWSCALE_CODES)[None, :]) <= 127
    if not fits[:, -1].all():
        raise ValueError("dynq: a row's maximum is past every code's range")
    k = fits.argmax(axis=1)                        # the first code that holds it
    return sat8(dynq_q(x, k[:, None])), k


def apply(vop, a, b=None, *, mul_a=0, mul_b=0, shift=0, table=None):
    """One elementwise ``VEC`` operation on int8 arrays, by :class:`hw.isa.VecOp`."""
    vop = isa.VecOp(vop)
    if vop == isa.VecOp.ADD:
        return add(a, b, mul_a, mul_b, shift)
    if vop == isa.VecOp.MUL:
        return mul(a, b, mul_a, shift)
    if vop == isa.VecOp.LUT:
        return lut(a, table)
    raise ValueError(f"{vop.name} is not an elementwise operation")


def measure_errors(seed=0, trials=300):
    """Each operation's largest error against float64 over random inputs (``trials`` per
    operation), in output steps (softmax: in probability): a dict ``{name: error}``.
    Inputs are drawn fresh from ``seed``; outputs that saturate are left out."""
    rng = np.random.default_rng(seed)
    gelu = lambda x: 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))  # noqa
    silu = lambda x: x / (1 + np.exp(-x))                                              # noqa
    worst = {}

    def keep(name, err):
        worst[name] = max(worst.get(name, 0.0), float(err))

    for _ in range(trials):
        a = rng.integers(-128, 128, 512)
        b = rng.integers(-128, 128, 512)
        s_a, s_b = rng.uniform(0.001, 0.1, 2)
        s_y = max(s_a, s_b) * rng.uniform(1.0, 2.0)
        ma, mb, sh = add_multipliers(s_a, s_b, s_y)
        exact = (a * s_a + b * s_b) / s_y
        ok = np.abs(exact) < 127
        keep("ADD", np.abs(add(a, b, ma, mb, sh) - exact)[ok].max(initial=0))
        s_y = s_a * s_b * rng.uniform(64, 256)
        m, sh = mul_multiplier(s_a, s_b, s_y)
        exact = a * s_a * b * s_b / s_y
        ok = np.abs(exact) < 127
        keep("MUL", np.abs(mul(a, b, m, sh) - exact)[ok].max(initial=0))
        for name, fn in (("LUT (GELU)", gelu), ("LUT (SiLU)", silu)):
            s_in = rng.uniform(0.02, 0.08)
            s_out = 127 * s_in / 127 * rng.uniform(0.5, 1.5)
            t = make_table(fn, s_in, s_out)
            exact = fn(a * s_in) / s_out
            ok = np.abs(exact) < 127
            keep(name, np.abs(lut(a, t) - exact)[ok].max(initial=0))
        L = int(rng.integers(1, 1024))
        s = rng.uniform(0.01, 0.3)
        x = rng.integers(-128, 128, (1, L))
        n = int(rng.integers(1, L + 1))
        mul_, sh = softmax_multiplier(s)
        z = x[0, :n] * s
        ref = np.exp(z - z.max())
        keep("SOFTMAX (probability)",
             np.abs(softmax(x, n, mul_, sh)[0, :n] / SOFTMAX_ONE - ref / ref.sum()).max())
        L = int(rng.integers(2, 1024))
        x = np.clip(np.round(rng.normal(rng.uniform(-30, 30), rng.uniform(2, 60), (1, L))),
                    -128, 127)
        gamma = rng.uniform(-3, 3, L)
        s_y = rng.uniform(0.02, 0.1)
        g, sh = norm_gain(gamma, s_y)
        for name, rms in (("LAYERNORM", False), ("RMSNORM", True)):
            c = x[0] if rms else x[0] - x[0].mean()
            ref = gamma * c / np.sqrt((c ** 2).mean()) / s_y
            ok = np.abs(ref) < 127
            keep(name, np.abs(norm(x, g, L, sh, rms)[0] - ref)[ok].max(initial=0))
        d = 2 * int(rng.integers(1, 65))
        x = rng.integers(-128, 128, (4, d))
        pos = int(rng.integers(0, 4096))
        cos, sin = rope_tables(pos, d, 10000.0)
        m, sh = rope_multiplier(1.0, 1.0)
        ang = pos * 10000.0 ** (-np.arange(0, d, 2) / d)
        x1, x2 = x[:, :d // 2], x[:, d // 2:]
        ref = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                              x2 * np.cos(ang) + x1 * np.sin(ang)], axis=1)
        ok = np.abs(ref) < 127
        keep("ROPE", np.abs(rope(x, cos, sin, m, sh) - ref)[ok].max(initial=0))
        x = rng.integers(-isa.WIDE_MAX, isa.WIDE_MAX + 1, (4, d))
        cos, sin = rope_tables(pos, d, 10000.0, wide=True)
        x1, x2 = x[:, :d // 2], x[:, d // 2:]
        ref = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                              x2 * np.cos(ang) + x1 * np.sin(ang)], axis=1)
        ok = np.abs(ref) < isa.WIDE_MAX
        keep("ROPE wide (16-bit steps)",
             np.abs(rope(x, cos, sin, 0, ROPE_SHIFT, wide=True) - ref)[ok].max(initial=0))
    return worst


if __name__ == "__main__":
    for name, err in measure_errors().items():
        print(f"{name:24s} {err:.4f}")
