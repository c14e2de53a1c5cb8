"""Bit layouts shared by the hardware, the simulators and the driver.

Each function takes a :class:`hw.config.Config` and returns an ``amaranth.lib.data``
layout, so the packing of a row on a port is defined once. ``sim/`` and ``sw/`` pack and
unpack through :func:`pack` and :func:`unpack` rather than by hand.
"""

from amaranth import signed
from amaranth.lib import data

__all__ = ["act_row", "psum_row", "weight_row", "act_beat", "pack_row", "unpack_row"]


def act_row(cfg):
    """``R`` int8 activations: one row of the activation matrix, one element per array row."""
    return data.ArrayLayout(signed(cfg.act_width), cfg.rows)


def psum_row(cfg):
    """``C`` int32 results: one row of the output matrix, one element per array column."""
    return data.ArrayLayout(signed(cfg.acc_width), cfg.cols)


def weight_row(cfg):
    """One row of a weight tile on its way into the array's shadow registers.

    ``data``  ``C`` int8 weights, ``W[row, 0..C-1]`` of the tile.
    ``row``   which array row (0..R-1) latches it.
    ``bank``  which of the two weight registers in each PE it is written to.
    ``pair``  ``data`` holds two rows of 4-bit codes (0..15) instead: byte ``c`` carries
              ``W[row, c]`` in bits 0-3 and ``W[row + 1, c]`` in bits 4-7 (``row`` even),
              so one beat loads two rows.
    """
    return data.StructLayout({
        "data": data.ArrayLayout(signed(cfg.act_width), cfg.cols),
        "row": range(cfg.rows),
        "bank": 1,
        "pair": 1,
    })


def act_beat(cfg):
    """One activation row entering the array, with the weight bank it multiplies."""
    return data.StructLayout({
        "data": act_row(cfg),
        "bank": 1,
    })


def pack_row(values, width):
    """Pack a sequence of integers, element 0 in the least significant bits, into an int."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack_row(word, count, width, signed_=True):
    """Inverse of :func:`pack_row`: a list of ``count`` integers of ``width`` bits."""
    mask = (1 << width) - 1
    out = []
    for i in range(count):
        v = (int(word) >> (i * width)) & mask
        if signed_ and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out
