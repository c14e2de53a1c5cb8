"""The vector unit's arithmetic, stated once: the specification that the RTL
(``hw/vector_unit.py``) and the golden ISA model (``sw/isa_model.py``) follow bit for bit.

Every operation works on int8 elements and gives int8 elements; the intermediate
values are exact integers (no intermediate rounding but the one stated).

``rshift_round(x, s)``
    ``floor((x + 2**(s-1)) / 2**s)`` for ``s > 0``, ``x`` for ``s = 0``: division by a
    power of two, rounding half up (an arithmetic right shift after adding half).
``sat8(x)``
    ``x`` clamped to ``[-128, 127]``.
``add(a, b, mul_a, mul_b, shift)``
    ``sat8(rshift_round(mul_a * a + mul_b * b, shift))``: with ``a ~ x / s_a`` and
    ``b ~ z / s_b``, the sum ``x + z`` at the output scale ``s_y`` is
    ``mul_a = round(2**shift * s_a / s_y)``, ``mul_b = round(2**shift * s_b / s_y)``
    (:func:`add_multipliers`).
``mul(a, b, mul_a, shift)``
    ``sat8(rshift_round(mul_a * (a * b), shift))``: the product of two int8 tensors at
    the output scale ``s_y``: ``mul_a = round(2**shift * s_a * s_b / s_y)``.
``lut(a, table)``
    ``table[a & 255]``: any function of one int8 at a fixed input and output scale
    (:func:`make_table` tabulates it, rounding to nearest, saturating).

``softmax(x, length, mul, shift)``
    for one vector ``x`` of int8 (input scale ``s``), its first ``length`` elements
    valid:

    1. ``m = max(x[:length])``; ``d = m - x`` (0..255);
    2. ``t = rshift_round(d * mul, shift)``: ``d * s * log2(e)`` in 1/256ths when
       ``mul / 2**shift = 256 * s * log2(e)`` (:func:`softmax_multiplier`);
    3. ``e = POW2[t mod 256] >> (t // 256)`` (0 once ``t // 256 >= 16``), with the
       constant table ``POW2[f] = round(2**15 * 2**(-f / 256))``: ``2**15 * 2**(-t/256)``,
       so the largest element gives ``2**15``; masked elements give 0;
    4. ``S = sum(e)`` (at least ``2**15`` when ``length >= 1``);
       ``r = floor(127 * 2**24 / S)`` (< ``2**16``; 0 when ``S = 0``);
    5. ``p = rshift_round(e * r, 24)``: ``127 * e / S`` to the nearest integer
       (within one), in ``[0, 127]``.

``mul_a`` and ``mul_b`` are signed 16-bit (``SOFTMAX``'s ``mul`` unsigned 16-bit),
``shift`` 0..31 (the instruction's fields).
"""

import numpy as np

from serrano.hw import isa

__all__ = ["rshift_round", "sat8", "add", "mul", "lut", "make_table", "add_multipliers",
           "mul_multiplier", "softmax", "softmax_multiplier", "POW2", "SOFTMAX_ONE",
           "apply"]

#: ``round(2**15 * 2**(-f / 256))`` for ``f`` in 0..255: the softmax's base-2 exponential.
POW2 = np.round(2.0 ** 15 * 2.0 ** (-np.arange(256) / 256)).astype(np.int64)
#: The softmax's output for a probability of one.
SOFTMAX_ONE = 127
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


def add(a, b, mul_a, mul_b, shift):
    _check(mul_a, mul_b, shift)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return sat8(rshift_round(int(mul_a) * a + int(mul_b) * b, int(shift)))


def mul(a, b, mul_a, shift):
    _check(mul_a, 0, shift)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return sat8(rshift_round(int(mul_a) * (a * b), int(shift)))


def lut(a, table):
    table = np.asarray(table, np.int8)
    if table.shape != (isa.TABLE_ENTRIES,):
        raise ValueError(f"a table has {isa.TABLE_ENTRIES} entries, not {table.shape}")
    return table[np.asarray(a, np.int64) & 0xFF]


def make_table(fn, s_in, s_out):
    """The table of ``y = fn(x)`` for int8 ``a`` (``x = a * s_in``) and int8 ``y``
    (``y ~ q * s_out``): entry ``a & 255`` is ``sat8(round(fn(a * s_in) / s_out))``."""
    if not (s_in > 0 and s_out > 0):
        raise ValueError(f"scales must be positive, not {s_in!r}, {s_out!r}")
    a = np.arange(isa.TABLE_ENTRIES, dtype=np.int64)
    a = np.where(a > 127, a - 256, a)
    y = np.asarray(fn(a * float(s_in)), np.float64) / float(s_out)
    return sat8(np.round(y))


def _fixed(ratio, what):
    """``(m, shift)`` with ``m = round(ratio * 2**shift)`` a signed 16-bit integer, as large
    a shift as keeps ``|m| < 2**15``."""
    if not np.isfinite(ratio):
        raise ValueError(f"{what} must be finite, not {ratio!r}")
    if ratio == 0:
        return 0, 0
    for shift in range(SHIFT_MAX, -1, -1):
        m = int(round(ratio * (1 << shift)))
        if _MUL_MIN <= m <= _MUL_MAX:
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


def softmax(x, length, mul, shift):
    """:func:`softmax` of the docstring for each row of ``x`` (2-D int8, one vector per
    row); ``length`` an int or one per row. Returns int8 rows."""
    if not 0 <= int(mul) < (1 << 16):
        raise ValueError(f"mul={mul} is not an unsigned 16-bit multiplier")
    _check(0, 0, shift)
    x = np.atleast_2d(np.asarray(x, np.int64))
    n, L = x.shape
    length = np.broadcast_to(np.asarray(length, np.int64), (n,))
    valid = np.arange(L)[None, :] < length[:, None]
    m = np.where(valid, x, -128).max(axis=1, keepdims=True)
    t = rshift_round((m - x) * int(mul), int(shift))
    e = np.where((t >> 8) >= 16, 0, POW2[t & 255] >> np.minimum(t >> 8, 15))
    e = np.where(valid, e, 0)
    total = e.sum(axis=1, keepdims=True)
    r = np.where(total > 0, (SOFTMAX_ONE << _RECIP_BITS) // np.maximum(total, 1), 0)
    return rshift_round(e * r, _RECIP_BITS).astype(np.int8)


def softmax_multiplier(s_in):
    """``(mul, shift)`` for :func:`softmax` of int8 inputs at scale ``s_in``:
    ``mul / 2**shift ~ 256 * s_in * log2(e)``, ``mul`` unsigned 16-bit."""
    ratio = 256 * float(s_in) / np.log(2)
    if not ratio > 0:
        raise ValueError(f"s_in must be positive, not {s_in!r}")
    for shift in range(SHIFT_MAX, -1, -1):
        m = int(round(ratio * (1 << shift)))
        if m < (1 << 16):
            return m, shift
    raise ValueError(f"s_in={s_in!r} is too large for a softmax multiplier")


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
