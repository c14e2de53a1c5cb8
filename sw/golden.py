"""Golden models, written from the arithmetic alone, never from the RTL.

All products and sums are computed in int64 numpy and then cast to what the hardware
defines: an int8 x int8 product summed in a 32-bit two's-complement accumulator, wrapping
modulo 2**32 on overflow.
"""

import numpy as np

__all__ = ["wrap_int32", "check_int8", "matmul", "array_stream"]


def wrap_int32(x):
    """Reduce int64 values modulo 2**32 into the int32 range, as a 32-bit adder does."""
    x = np.asarray(x, dtype=np.int64)
    return (((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)).astype(np.int32)


def check_int8(name, x):
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, not {x.dtype}")
    if x.size and (x.min() < -128 or x.max() > 127):
        raise ValueError(f"{name} holds values outside int8 [-128, 127]")
    return x.astype(np.int64)


def matmul(a, w):
    """``a @ w`` for int8 ``a`` (M x K) and ``w`` (K x N), summed into wrapping int32."""
    a = check_int8("a", a)
    w = check_int8("w", w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"cannot multiply shapes {a.shape} and {w.shape}")
    return wrap_int32(a @ w)


def array_stream(acts, banks, tiles):
    """What the systolic array outputs for a stream of activation rows.

    ``acts`` is (n, R) int8, ``banks`` (n,) of 0/1, and ``tiles[i]`` the (R, C) weight
    tile held in bank ``banks[i]`` when row ``i`` passes. Returns (n, C) int32.
    """
    acts = check_int8("acts", acts)
    out = [a @ check_int8("tile", t) for a, t in zip(acts, tiles)]
    return wrap_int32(np.array(out).reshape(len(acts), -1))
