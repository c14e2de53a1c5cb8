"""Small arithmetic helpers for control paths."""

from amaranth import Const, Mux

from .isa import WIDE_MAX

__all__ = ["times_const", "clamp_wide", "sat8", "wide_high"]


def clamp_wide(x):
    """``x`` (signed, wider than 16 bits) clamped to ``[-WIDE_MAX, WIDE_MAX]``, 16 bits."""
    return Mux(x > WIDE_MAX, WIDE_MAX, Mux(x < -WIDE_MAX, -WIDE_MAX, x[:16]))


def sat8(x):
    """``x`` (signed, wider than 8 bits) saturated to ``[-128, 127]``, 8 bits."""
    return Mux(x > 127, 127, Mux(x < -128, -128, x[:8]))


def wide_high(q):
    """The high half of a 16-bit ``q = 256 hi + lo`` (``lo`` its low byte, signed):
    ``hi = (q + 128) >> 8``, an 8-bit value (an increment, no adder carry chain past 8)."""
    return (q[8:16] + q[7])[:8]


def times_const(value, k):
    """``value * k`` for a constant ``k >= 0`` as a sum of shifted copies of ``value``.

    Synthesis maps a ``*`` by a constant to a DSP multiplier on some FPGAs (Yosys does
    on ECP5), which puts a slow block and two long routes into a control path. For
    constants with few one bits (``PARAM_BEATS = 12`` is ``8 + 4``) the shifts are wires
    and the sum is one or two small adders.
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, not {k!r}")
    terms = [value << i for i in range(k.bit_length()) if (k >> i) & 1]
    if not terms:
        return Const(0)
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total
