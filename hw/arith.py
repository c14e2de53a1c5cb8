"""Small arithmetic helpers for control paths."""

from amaranth import Const

__all__ = ["times_const"]


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
