"""The 4-bit block weight format (``MATMUL`` ``wfmt = Q4``): its arithmetic, stated once.

The RTL (``hw/exec_unit.py``: the PEs' nibble select and the block scaler), the golden ISA
model (``sw/isa_model.py``) and the driver all follow this text; ``docs/q4.md`` argues
the choices and measures them.

Format
------
A ``K x N`` weight matrix is cut along K into blocks of ``B = cfg.weight_block`` rows (32, as
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
``16 * 255 u``, rounds ``d = dq / (16 u)`` to the nearest integer, and then picks the
offset that fits the block's own weights best given that ``d`` (least squares:
``f = (m - (16 u d - dq) q_mean) / (u d) + 120``, rounded, ``q_mean`` the block's mean
code), so the offset also absorbs the rounding of ``d``. The codes are the file's own,
untouched. On SmolLM2's 210 Q4_1 tensors this reproduces the file's weights to 0.54 %
(relative Frobenius error; int8 per channel of the same weights: 0.85 %;
``tests/test_llama.py::test_block_codes_reproduce_the_files_weights`` prints both).

Memory layout (what a ``Q4`` ``MATMUL`` of one N-tile reads from ``weight_addr``): for
each block ``b`` of the N-tile's ``C`` columns, a group of ``C`` uint8 scales ``d[b, :]``,
``C`` int8 offsets ``f[b, :]`` (``cfg.q4_scale_beats`` beats), then the block's K-tiles of
``R`` rows (``B / R`` tiles, fewer in the last block), each ``R / 2`` beats: byte ``c`` of
beat ``j`` holds ``q[2j, c]`` in bits 0-3 and ``q[2j + 1, c]`` in bits 4-7. Columns past
``N`` and rows past ``K`` are zero codes with zero scales and offsets.

Bits per weight: ``4 + 16 / B`` = 4.5 for ``B = 32`` (Q4_1 takes 5): an int8 weight
stream is ``8 / 4.5 = 1.78`` times as many bytes.

The 8-bit sibling (``Q8``, for GGUF's Q8_0: a language model's embedding and LM head)
------------------------------------------------------------------------------------------
Codes ``q`` are int8 and each block has a scale ``d`` in 0..255 and no offset:
``W[k, n] = d[b, n] * q[k, n]``; the block scaler computes ``d * P``. A group is ``C``
uint8 scales (``cfg.q8_scale_beats`` beats), then the block's tiles as ``INT8`` lays them
out (``R`` beats each): ``8 + 8 / B`` = 8.25 bits per weight. :func:`from_q8_blocks`
keeps the file's codes and sets ``u[n]`` so that the column's largest ``|scale|`` becomes
255.
"""

import numpy as np

from serrano.hw import isa

__all__ = ["WEIGHTS", "CODE_MAX", "D_MAX", "F_MIN", "F_MAX", "SCALE", "CENTRE", "Q4Weights",
           "check", "integer_weights", "from_blocks", "Q8Weights", "from_q8_blocks",
           "weight_format", "quantize", "pack", "unpack", "matmul_bytes", "matrix_bytes"]

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
    # The offset that best fits the block's own weights given the rounded scale: the
    # slope error alpha = 16 u d - dq moves every weight by alpha * q, so the offset
    # takes alpha times the block's mean code (least squares over the block).
    K, N = codes.shape
    nb = dq.shape[0]
    padded = np.zeros((nb * block, N))
    padded[:K] = codes
    count = np.minimum(block, K - np.arange(nb) * block)[:, None]
    mean_code = padded.reshape(nb, block, N).sum(axis=1) / count
    alpha = SCALE * unit * d - dq
    safe = np.where(d > 0, d, 1.0)
    f = np.where(d > 0, np.clip(np.rint((m - alpha * mean_code) / (unit * safe) + CENTRE),
                                F_MIN, F_MAX), 0)
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


class Q8Weights:
    """A ``K x N`` matrix in the 8-bit block format (``Q8``, GGUF's Q8_0): ``codes``
    (K, N) int8, ``d`` (ceil(K / block), N) uint8, ``unit`` (N,) float32; the integer
    weight is ``W[k, n] = d[k // block, n] * codes[k, n]`` and the real one
    ``unit[n] * W[k, n]``."""

    def __init__(self, codes, d, unit, block):
        self.codes, self.d = codes, d
        self.unit = np.asarray(unit, np.float32)
        self.block = block
        K, N = codes.shape
        nb = -(-K // block)
        if np.asarray(d).shape != (nb, N) or self.unit.shape != (N,):
            raise ValueError(f"d must be {(nb, N)} and unit ({N},) for {K} x {N} codes in "
                             f"blocks of {block}, not {np.asarray(d).shape} and "
                             f"{self.unit.shape}")
        for name, v, lo, hi in (("codes", codes, -128, 127), ("d", d, 0, D_MAX)):
            v = np.asarray(v)
            if v.size and (int(v.min()) < lo or int(v.max()) > hi):
                raise ValueError(f"{name} holds values outside [{lo}, {hi}]")

    @property
    def shape(self):
        return self.codes.shape

    def integer(self):
        b = np.arange(self.codes.shape[0]) // self.block
        return np.asarray(self.d, np.int32)[b] * np.asarray(self.codes, np.int32)

    def dequantize(self):
        return self.integer().astype(np.float32) * self.unit[None, :]


def from_q8_blocks(codes, scale, block):
    """Encode GGUF Q8_0 blocks, ``w[k, n] = scale[b, n] * codes[k, n]``, keeping the
    codes: ``u[n]`` makes the column's largest ``|scale|`` 255, ``d = |scale| / u`` rounded
    (a negative scale negates its block's codes, -128 becoming -127)."""
    codes = np.asarray(codes, np.int16)
    scale = np.asarray(scale, np.float64)
    rows = np.repeat(scale < 0, block, axis=0)[:codes.shape[0]]
    codes = np.where(rows, np.clip(-codes, -127, 127), codes).astype(np.int8)
    scale = np.abs(scale)
    unit = scale.max(axis=0) / D_MAX
    unit = np.where(unit > 0, unit, 1.0)
    d = np.clip(np.rint(scale / unit), 0, D_MAX).astype(np.uint8)
    return Q8Weights(codes, d, unit.astype(np.float32), block)


def weight_format(w):
    """The ``MATMUL`` weight format of ``w``: ``Q4`` for :class:`Q4Weights`, ``Q8`` for
    :class:`Q8Weights`, ``INT8`` for anything else (an int8 matrix)."""
    if isinstance(w, Q8Weights):
        return isa.WeightFormat.Q8
    return isa.WeightFormat.Q4 if isinstance(w, Q4Weights) else isa.WeightFormat.INT8


def _tiles(n, size):
    return -(-n // size)


def _beats(cfg, wfmt):
    """(scale beats, tile beats) of one block group in ``wfmt``."""
    if wfmt == isa.WeightFormat.Q8:
        return cfg.q8_scale_beats, cfg.q8_tile_beats
    return cfg.q4_scale_beats, cfg.q4_tile_beats


def matmul_bytes(cfg, k_tiles, wfmt=isa.WeightFormat.Q4):
    """Bytes a ``Q4`` (or ``Q8``) ``MATMUL`` of ``k_tiles`` K-tiles reads (one N-tile)."""
    scale, tile = _beats(cfg, wfmt)
    groups = _tiles(k_tiles, cfg.block_tiles)
    return (groups * scale + k_tiles * tile) * cfg.bus_bytes


def matrix_bytes(cfg, K, N, wfmt=isa.WeightFormat.Q4):
    """Bytes of a whole ``K x N`` matrix as :func:`pack` lays it out."""
    return _tiles(N, cfg.cols) * matmul_bytes(cfg, _tiles(K, cfg.rows), wfmt)


def pack(q, cfg):
    """Lay out :class:`Q4Weights` (or :class:`Q8Weights`) as their ``MATMUL`` reads them:
    N-tile after N-tile, ``matmul_bytes(cfg, ceil(K / R), format)`` bytes each, each a
    sequence of block groups (scales, then tiles of codes). Returns a 1-D uint8 array."""
    if q.block != cfg.weight_block:
        raise ValueError(f"the weights use blocks of {q.block}, the config {cfg.weight_block}")
    wfmt = weight_format(q)
    R, C = cfg.rows, cfg.cols
    K, N = q.shape
    kt, nt = _tiles(K, R), _tiles(N, C)
    tpb = cfg.block_tiles
    nb = _tiles(kt, tpb)
    codes = np.zeros((kt * R, nt * C), np.uint8)
    codes[:K, :N] = q.codes.view(np.uint8) if wfmt == isa.WeightFormat.Q8 else q.codes
    scales = [np.zeros((nb, nt * C), np.uint8)]
    scales[0][:q.d.shape[0], :N] = q.d
    if wfmt == isa.WeightFormat.Q4:
        scales.append(np.zeros((nb, nt * C), np.uint8))
        scales[1][:q.f.shape[0], :N] = q.f.view(np.uint8)
        rows_of = codes[0::2] | (codes[1::2] << 4)            # (kt * R / 2, nt * C)
        per_tile = R // 2
    else:
        rows_of, per_tile = codes, R
    out = []
    for j in range(nt):
        cols = slice(j * C, (j + 1) * C)
        for b in range(nb):
            out += [sc[b, cols] for sc in scales]
            rows = slice(b * tpb * per_tile, min(kt, (b + 1) * tpb) * per_tile)
            out.append(rows_of[rows, cols].ravel())
    flat = np.concatenate(out)
    assert len(flat) == nt * matmul_bytes(cfg, kt, wfmt)
    return flat


def unpack(raw, cfg, k_tiles, wfmt=isa.WeightFormat.Q4):
    """Inverse of :func:`pack` for one ``MATMUL``: the integer weights ``W``
    (``k_tiles * R`` x ``C``, int32) of the bytes ``raw`` at its ``weight_addr``."""
    R, C, bus = cfg.rows, cfg.cols, cfg.bus_bytes
    tpb = cfg.block_tiles
    scale_beats, tile_beats = _beats(cfg, wfmt)
    sb, tb = scale_beats * bus, tile_beats * bus
    raw = np.asarray(raw, np.uint8)
    full, rem = divmod(k_tiles, tpb)
    gbytes = sb + tpb * tb

    def groups(block, tiles):
        """``W`` of ``len(block)`` groups of ``tiles`` tiles each: (groups, tiles*R, C)."""
        d = block[:, None, :C].astype(np.int32)
        codes = block[:, sb:sb + tiles * tb]
        if wfmt == isa.WeightFormat.Q8:
            return d * codes.view(np.int8).reshape(len(block), tiles * R, C).astype(np.int32)
        f = block[:, None, C:2 * C].view(np.int8).astype(np.int32)
        pairs = codes.reshape(len(block), tiles * R // 2, C).astype(np.int32)
        q = np.empty((len(block), tiles * R, C), np.int32)
        q[:, 0::2] = pairs & 0xF
        q[:, 1::2] = pairs >> 4
        return d * (SCALE * q - CENTRE + f)

    parts = []
    if full:
        parts.append(groups(raw[:full * gbytes].reshape(full, gbytes), tpb)
                     .reshape(full * tpb * R, C))
    if rem:
        tail = raw[full * gbytes:full * gbytes + sb + rem * tb].reshape(1, -1)
        parts.append(groups(tail, rem).reshape(rem * R, C))
    return np.concatenate(parts)
