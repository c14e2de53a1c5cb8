"""The 4-bit block weight format (``MATMUL`` ``wfmt = Q4``): its arithmetic, stated once.

The RTL (``hw/exec_unit.py``: the PEs' nibble select and the block scaler), the golden ISA
model (``sw/isa_model.py``) and the driver all follow this text; ``docs/q4.md`` argues
the choices and measures them.

Format
------
A ``K x N`` weight matrix is cut along K into blocks of ``B = cfg.q4_block`` rows (32, as
GGUF's Q4_0 and Q4_1). Each weight has a 4-bit code ``q`` in 0..15; each block ``b`` and
column ``n`` has a scale ``d[b, n]`` in 0..255 (uint8) and an offset ``f[b, n]`` in
-128..127 (int8, in sixteenths of the scale). The weight the array multiplies by is the
integer

    ``W[k, n] = d[b, n] * (16 * q[k, n] - 120 + f[b, n])``,   ``b = k // B``,

and a ``Q4`` ``MATMUL`` adds ``a @ W`` to the accumulators, exactly (wrapping int32), as
an ``INT8`` one adds ``a @ w``. The hardware never forms ``W``: the array sums codes
times activations over each tile, ``P[n] = sum_k q[k, n] a[k]``, and the block scaler
computes ``d[b, n] * (16 P[n] - 120 S + f[b, n] S)`` with ``S = sum_k a[k]`` over the
same tile: the same integer, since the scaling is linear.

The real weight is ``u[n] * W[k, n]`` with one float ``u[n]`` per output channel, applied
on the host with the activations' scale (as ``s_w[n]`` is for int8 weights).

Why this encoding: GGUF's Q4_1 stores ``w = dq * q + m`` per block (an f16 scale and an
f16 minimum; Q4_0 is ``m = -8 dq``). About the block's centre,
``w = (dq / 16) (16 q - 120 + 16 (m + 7.5 dq) / dq)``, and the centre offset
``(m + 7.5 dq) / dq`` lies within about +-7.1 in SmolLM2's file (it is -0.5 for Q4_0),
so in sixteenths it fits 8 bits, with a resolution relative to the block's own scale.
:func:`from_blocks` sets ``u[n]`` so that the column's largest ``|dq|`` becomes
``16 * 255 u``, rounds ``d = dq / (16 u)`` to the nearest integer, and then
``f = m / (u d) + 120`` (so the offset also absorbs the rounding of ``d``). The codes are
the file's own, untouched. On SmolLM2's Q4_1 tensors this reproduces the file's weights
to 0.54 % (relative Frobenius error; int8 per channel of the same weights: 0.86 %).

Memory layout (what a ``Q4`` ``MATMUL`` of one N-tile reads from ``weight_addr``): for
each block ``b`` of the N-tile's ``C`` columns, a group of ``C`` uint8 scales ``d[b, :]``,
``C`` int8 offsets ``f[b, :]`` (``cfg.q4_scale_beats`` beats), then the block's K-tiles of
``R`` rows (``B / R`` tiles, fewer in the last block), each ``R / 2`` beats: byte ``c`` of
beat ``j`` holds ``q[2j, c]`` in bits 0-3 and ``q[2j + 1, c]`` in bits 4-7. Columns past
``N`` and rows past ``K`` are zero codes with zero scales and offsets.

Bits per weight: ``4 + 16 / B`` = 4.5 for ``B = 32`` (Q4_1 takes 5): an int8 weight
stream is ``8 / 4.5 = 1.78`` times as many bytes.
"""

import numpy as np

__all__ = ["WEIGHTS", "CODE_MAX", "D_MAX", "F_MIN", "F_MAX", "SCALE", "CENTRE", "Q4Weights", "check",
           "integer_weights", "from_blocks", "quantize", "pack", "unpack", "matmul_bytes", "matrix_bytes"]

#: The weight formats a user names (``--weights``): int8 per channel, or this format.
WEIGHTS = ("int8", "int4")

CODE_MAX = 15
D_MAX = 255
F_MIN, F_MAX = -128, 127
SCALE = 16          # codes and offsets are in sixteenths of the scale ...
CENTRE = 120        # ... about the codes' centre, 7.5 * SCALE


class Q4Weights:
    """A ``K x N`` matrix in the 4-bit block format: ``codes`` (K, N) uint8 in 0..15,
    ``d`` (ceil(K / block), N) uint8, ``f`` (same shape) int8, ``unit`` (N,) float32
    (the real weight is ``unit[n] * W[k, n]``), ``block`` the rows per block."""

    def __init__(self, codes, d, f, unit, block):
        self.codes, self.d, self.f = codes, d, f
        self.unit = np.asarray(unit, np.float32)
        self.block = block
        check(self)

    @property
    def shape(self):
        return self.codes.shape

    def integer(self):
        """The integer weights ``W`` (K, N) int32 the array multiplies by."""
        return integer_weights(self.codes, self.d, self.f, self.block)

    def dequantize(self):
        """The real weights ``unit[n] * W[k, n]``, float32."""
        return self.integer().astype(np.float32) * self.unit[None, :]


def check(q):
    """Raise ``ValueError`` with one line if ``q`` is not a well-formed matrix."""
    K, N = q.codes.shape if q.codes.ndim == 2 else (None, None)
    if K is None:
        raise ValueError(f"codes must be a K x N matrix, not shape {q.codes.shape}")
    nb = -(-K // q.block)
    for name, v, lo, hi in (("codes", q.codes, 0, CODE_MAX), ("d", q.d, 0, D_MAX),
                            ("f", q.f, F_MIN, F_MAX)):
        v = np.asarray(v)
        if v.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integers, not {v.dtype}")
        if v.size and (int(v.min()) < lo or int(v.max()) > hi):
            raise ValueError(f"{name} holds values outside [{lo}, {hi}]")
    if q.d.shape != (nb, N) or q.f.shape != (nb, N):
        raise ValueError(f"d and f must be {(nb, N)} for {K} x {N} codes in blocks of "
                         f"{q.block}, not {q.d.shape} and {q.f.shape}")
    if q.unit.shape != (N,):
        raise ValueError(f"unit must have {N} entries, not shape {q.unit.shape}")


def integer_weights(codes, d, f, block):
    """``W[k, n] = d[b, n] * (16 codes[k, n] - 120 + f[b, n])``, ``b = k // block``,
    int32."""
    b = np.arange(codes.shape[0]) // block
    d = np.asarray(d, np.int32)[b]
    f = np.asarray(f, np.int32)[b]
    return d * (SCALE * np.asarray(codes, np.int32) - CENTRE + f)


def from_blocks(codes, scale, minimum, block):
    """Encode GGUF-style blocks, ``w[k, n] = scale[b, n] * codes[k, n] + minimum[b, n]``
    (Q4_1; Q4_0 is ``minimum = -8 * scale``), keeping the codes. ``scale`` and
    ``minimum`` are (blocks, N) floats. Returns :class:`Q4Weights`."""
    codes = np.asarray(codes, np.uint8)
    dq = np.asarray(scale, np.float64)
    m = np.asarray(minimum, np.float64)
    # A negative scale (Q4_0 allows one) flips the codes: dq q + m = -dq (15 - q) + m'.
    flip = dq < 0
    if flip.any():
        rows = np.repeat(flip, block, axis=0)[:codes.shape[0]]
        codes = np.where(rows, CODE_MAX - codes, codes).astype(np.uint8)
        m = np.where(flip, m + dq * CODE_MAX, m)
        dq = np.abs(dq)
    unit = dq.max(axis=0) / (SCALE * D_MAX)
    unit = np.where(unit > 0, unit, 1.0)
    d = np.clip(np.rint(dq / (SCALE * unit)), 0, D_MAX)
    safe = np.where(d > 0, d, 1.0)
    f = np.where(d > 0, np.clip(np.rint(m / (unit * safe) + CENTRE), F_MIN, F_MAX), 0)
    return Q4Weights(codes, d.astype(np.uint8), f.astype(np.int8), unit.astype(np.float32),
                     block)


def quantize(w, block):
    """Quantize a float ``K x N`` matrix to the format: each block's minimum and range
    (Q4_1's rule: ``scale = (max - min) / 15``, ``q = round((w - min) / scale)``), then
    :func:`from_blocks`."""
    w = np.asarray(w, np.float64)
    if w.ndim != 2:
        raise ValueError(f"w must be a K x N matrix, not shape {w.shape}")
    K, N = w.shape
    nb = -(-K // block)
    padded = np.zeros((nb * block, N))
    padded[:K] = w
    blocks = padded.reshape(nb, block, N)
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)
    scale = (hi - lo) / CODE_MAX
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.clip(np.rint((blocks - lo[:, None]) / safe[:, None]), 0, CODE_MAX)
    codes = codes.reshape(nb * block, N)[:K].astype(np.uint8)
    return from_blocks(codes, scale, lo, block)


def _tiles(n, size):
    return -(-n // size)


def matmul_bytes(cfg, k_tiles):
    """Bytes a ``Q4`` ``MATMUL`` of ``k_tiles`` K-tiles reads (one N-tile)."""
    groups = _tiles(k_tiles, cfg.q4_tiles_per_block)
    return (groups * cfg.q4_scale_beats + k_tiles * cfg.q4_tile_beats) * cfg.bus_bytes


def matrix_bytes(cfg, K, N):
    """Bytes of a whole ``K x N`` matrix as :func:`pack` lays it out."""
    return _tiles(N, cfg.cols) * matmul_bytes(cfg, _tiles(K, cfg.rows))


def pack(q, cfg):
    """Lay out :class:`Q4Weights` as ``Q4`` ``MATMUL`` reads them: N-tile after N-tile,
    ``matmul_bytes(cfg, ceil(K / R))`` bytes each. Returns a 1-D uint8 array."""
    if q.block != cfg.q4_block:
        raise ValueError(f"the weights use blocks of {q.block}, the config {cfg.q4_block}")
    R, C = cfg.rows, cfg.cols
    K, N = q.shape
    kt, nt = _tiles(K, R), _tiles(N, C)
    tpb = cfg.q4_tiles_per_block
    nb = _tiles(kt, tpb)
    codes = np.zeros((kt * R, nt * C), np.uint8)
    codes[:K, :N] = q.codes
    d = np.zeros((nb, nt * C), np.uint8)
    f = np.zeros((nb, nt * C), np.uint8)
    d[:q.d.shape[0], :N] = q.d
    f[:q.f.shape[0], :N] = q.f.view(np.uint8)
    pairs = codes[0::2] | (codes[1::2] << 4)                   # (kt * R / 2, nt * C)
    out = []
    for j in range(nt):
        cols = slice(j * C, (j + 1) * C)
        for b in range(nb):
            out += [d[b, cols], f[b, cols]]
            rows = slice(b * tpb * R // 2, min(kt, (b + 1) * tpb) * R // 2)
            out.append(pairs[rows, cols].ravel())
    flat = np.concatenate(out)
    assert len(flat) == nt * matmul_bytes(cfg, kt)
    return flat


def unpack(raw, cfg, k_tiles):
    """Inverse of :func:`pack` for one ``MATMUL``: the integer weights ``W``
    (``k_tiles * R`` x ``C``, int32) of the bytes ``raw`` at its ``weight_addr``."""
    R, C = cfg.rows, cfg.cols
    tpb = cfg.q4_tiles_per_block
    raw = np.asarray(raw, np.uint8)
    codes = np.empty((k_tiles * R, C), np.int32)
    d = np.empty((k_tiles * R, C), np.int32)
    f = np.empty((k_tiles * R, C), np.int32)
    pos = 0
    for b in range(_tiles(k_tiles, tpb)):
        tiles = min(tpb, k_tiles - b * tpb)
        rows = slice(b * tpb * R, (b * tpb + tiles) * R)
        d[rows] = raw[pos:pos + C]
        f[rows] = raw[pos + C:pos + 2 * C].view(np.int8)
        pos += cfg.q4_scale_beats * cfg.bus_bytes
        n = tiles * R * C // 2
        pairs = raw[pos:pos + n].reshape(tiles * R // 2, C)
        block = codes[rows]
        block[0::2] = pairs & 0xF
        block[1::2] = pairs >> 4
        codes[rows] = block
        pos += n
    return d * (SCALE * codes - CENTRE + f)
