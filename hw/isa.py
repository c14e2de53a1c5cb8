"""serrano's instruction set: encoding (``lib.data`` layouts) and meaning, defined once.

``hw/`` decodes with these layouts, ``sw/`` encodes with them (:func:`encode`), and the
golden ISA model (``sw/isa_model.py``) executes what this docstring states. README's
instruction-set section is a copy of this text.

Program
-------
A program is an array of 32-byte instructions in memory (little-endian: bit 0 of the
layout is bit 0 of byte 0). The host writes its address and its length in instructions
into the control registers and sets ``start``; the accelerator fetches and runs it.

Every instruction begins with the same 32-bit header:

=========  =====  =========================================================================
field      bits   meaning
=========  =====  =========================================================================
opcode     4      :class:`Op`; 0 is undefined on purpose, so zeroed memory stops with an error
pop_prev   1      wait for a token from the previous unit before starting (see below)
pop_next   1      wait for a token from the next unit before starting
push_prev  1      give a token to the previous unit when finished
push_next  1      give a token to the next unit when finished
pop_side   1      wait for a token from the side unit before starting
push_side  1      give a token to the side unit when finished
rel        1      position-relative: add the position to the op's position fields (below)
guard      1      run only at positions that reach tile ``gtile`` (below)
shr        4      the position term ``t = P >> shr``
shl        5      an address's offset is ``t << shl``
gtile      11     the guard's tile: the instruction runs only if ``gtile <= t``
=========  =====  =========================================================================

Position-relative instructions (one program for every decoded token)
--------------------------------------------------------------------
The ``position`` register ``P`` (32 bits, latched at ``start``) is where a decoded token
sits in its sequence. An instruction with ``guard`` runs only if ``gtile <= t``, where
``t = P >> shr``; otherwise it is skipped: no effect, no token popped or pushed, not
retired, not checked. An instruction with ``rel`` (and not skipped) first has its
position fields (:data:`OPS`, ``OpSpec.rel``) offset, each by its term, modulo
``2**width`` of the field: ``addr`` is ``(t << shl) mod 2**32``, ``t`` is ``t``, ``P``
is ``P``; then it is checked and runs as if it had been encoded so. ``LOAD_ACT``,
``LOAD_PARAM`` and ``STORE`` offset ``dram_addr`` by ``addr`` (a KV cache row, a rotary
table's row, a key tile: the position times a power of two, or its tile's index times
one); ``MATMUL`` offsets ``k_tiles`` by ``t`` (``P V`` over the keys up to ``P``:
``k_tiles = 1`` and ``shr = log2 R``); ``VEC`` offsets ``rows`` by ``t`` and ``length``
by ``P`` (a causal softmax over ``P + 1`` keys: ``rows = 1``, ``length = 1``). ``FENCE``
and ``END`` have no position fields (``guard`` applies to every instruction). The front
end spends one more cycle on an instruction with ``rel`` or ``guard``; others run as
before.

Units and tokens (decoupled access/execute, as in VTA)
------------------------------------------------------
Four units run concurrently, each in its own program order: **load** (``LOAD_ACT``,
``LOAD_PARAM``), **exec** (``MATMUL``), **store** (``STORE``) and **vector** (``VEC``);
:data:`OPS` names each opcode's unit. Load, exec and store are ordered
load -> exec -> store; the vector unit takes the rows the store unit writes into the
activation buffer and makes rows the exec unit reads, so its previous unit is store and
its next unit is exec, and it is the *side* unit of both (:data:`NEIGHBOURS`). Between
neighbours two token counters carry dependencies:
load->exec ("data loaded"), exec->load ("buffer free"), exec->store ("results ready"),
store->exec ("accumulator free"), store->vector ("rows written"), vector->store
("rows read"), vector->exec ("rows ready"), exec->vector ("rows read"). ``push_*`` adds
one token to a counter when the instruction has finished what its neighbour waits for:
``LOAD_*`` when its last beat is in the buffer; ``MATMUL``'s ``push_prev`` when its last
activation row has been read and its ``push_next`` when its last result is in the
accumulator; ``STORE``'s ``push_prev`` when
its last accumulator row has been read (its memory writes are complete by the next
``FENCE`` or ``END``) and its ``push_side`` when its last row has been written (into the
activation buffer, or handed to the write DMA); ``MATMUL``'s ``push_side`` with its
``push_prev``; ``VEC``'s ``push_prev`` and ``push_next`` when its last row (or table
entry) has been written. ``pop_*`` waits for a token and takes it before the instruction
starts. For ``LOAD_*`` the previous unit does not exist (its pop_prev
and push_prev flags are ignored, and so are its side flags); for ``STORE`` the next unit
does not exist; ``VEC`` has no side unit.
``FENCE`` waits until every unit is idle; ``FENCE stores`` only until the store unit is
idle and its memory writes acknowledged (the other units run on); ``END`` waits as
``FENCE`` and then reports done. Weights of a ``MATMUL`` are read from memory as soon as
it is dispatched, before
its tokens are popped: weights are constant for the whole program.

Instructions
------------
``LOAD_ACT``  copy a 2-D block from memory to the activation buffer. For row ``r`` in
    ``0..rows-1`` and beat ``b`` in ``0..row_beats-1``, the bus beat at
    ``dram_addr + r*dram_stride + b*bus_bytes`` (``bus_bytes = R`` int8) is written to
    buffer row ``buf_row + r*buf_row_step + b*buf_beat_step``.
``LOAD_PARAM``  copy ``n_tiles`` requantization parameter sets from ``dram_addr`` into
    parameter slots ``param_tile ..``. A set is :data:`PARAM_BEATS` (12) beats: ``C``
    int32 biases, ``C`` uint32 multipliers (< 2**31), ``C`` uint32 shifts (0..63).
``MATMUL``  for k-tile ``i`` in ``0..k_tiles-1``, weight tile ``W_i`` is the ``R x C``
    int8 block at ``weight_addr + i*R*C`` (row-major: ``R`` beats of ``C`` bytes); for
    ``m`` in ``0..m-1``, with ``a`` = activation buffer row
    ``act_row + i*act_kstep + m*act_stride``:
    ``acc[acc_row + m] = (acc[acc_row + m] if (accumulate or i > 0) else 0) + a @ W_i``
    in wrapping int32. With ``pair`` (``m`` even, ``h = m / 2``) the rows are the high
    and low halves of ``h`` 16-bit rows, ``a = 256 hi + lo`` (``STORE wide``): row ``m <
    h`` adds ``a @ W_i`` to ``acc[acc_row + m]`` and row ``h + m`` adds ``a @ W_i``
    rounded to 1/256 (``(p + 128) >> 8``, each element) to the same row: one weight
    stream for a 16-bit GEMM input, its product divided by 256 (within half a unit per
    K-tile; ``sw/isa_model.pair_product``), so a 16-bit input keeps the accumulator's
    range an int8 one has (a 4-bit block weight's integer reaches 16 bits). ``wfmt``
    names the weights' format (:class:`WeightFormat`):
    ``INT8`` as above, or ``Q4``: 4-bit codes with a scale and an offset per block of
    ``weight_block`` rows of K (``sw/q4.py`` states the format and its arithmetic). A ``Q4``
    ``MATMUL`` computes the same sum with the integer weight
    ``W_i[r, c] = d[b, c] * (16 * q[r, c] - 120 + f[b, c])`` of block ``b`` (code ``q``
    in 0..15, scale ``d`` in 0..255, offset ``f`` in -128..127). Its weights are read
    from ``weight_addr`` as groups, one per block of the N-tile: ``C`` uint8 scales ``d``,
    ``C`` int8 offsets ``f``, then the block's tiles of codes (the last block may have
    fewer), ``R / 2`` beats per tile: byte ``c`` of beat ``j`` holds ``q[2j, c]`` in its
    low nibble and ``q[2j + 1, c]`` in its high nibble. ``Q8``: int8 codes with a scale
    per block, ``W_i[r, c] = d[b, c] * q[r, c]`` (GGUF's Q8_0); a group is ``C`` uint8
    scales, then the block's tiles as for ``INT8`` (``R`` beats each).
``STORE``  for ``r`` in ``0..m-1``: ``y = requantize(acc[acc_row + r], param set
    param_tile, relu)`` (see ``docs/requant.md``), ``C`` int8; if ``to_buf`` the row goes to
    activation buffer row ``buf_row + r``, else to memory at ``dram_addr + r*dram_stride``.
    With ``raw`` the row is not requantized: its ``C`` int32 accumulators go to memory
    as they are, little-endian, ``4*C`` bytes (``raw_row_beats`` bus beats) at
    ``dram_addr + r*dram_stride`` (``param_tile`` and ``relu`` are then unused; ``raw``
    with ``to_buf`` is a ``BAD_BUFFER`` error: the activation buffer holds int8 rows).
    With ``transpose`` the requantized rows go to memory in blocks of ``C`` rows (the
    last one padded with zero rows), each block transposed: block ``g`` is ``C`` rows of
    ``C`` bytes at ``dram_addr + g*dram_stride``, row ``c`` holding element ``c`` of each
    of the block's rows: one tile of packed weights of the transposed matrix, so that a
    GEMM's output (attention's keys) is the next GEMM's weights (``Q K^T``) without the
    host (``transpose`` with ``raw`` or ``to_buf``: ``BAD_BUFFER``). With ``wide`` (and
    ``to_buf``) the row is requantized to 16 bits (``requantize(..., wide=True)``,
    saturating at ``+-WIDE_MAX``) and written as two int8 rows, ``q = 256 hi + lo``:
    with ``to_buf`` ``hi`` to ``buf_row + r`` and ``lo`` to ``lo_row + r``, else both to
    memory, ``hi`` then ``lo``, ``2 C`` bytes at ``dram_addr + r*dram_stride`` (a
    ``LOAD_ACT`` of two beats a row, ``buf_beat_step = M``, brings them back as a ``pair``
    ``MATMUL`` reads them) (``wide`` with ``raw`` or ``transpose``: ``BAD_BUFFER``): a
    residual stream wider than int8.
``VEC``  integer vector arithmetic on ``count`` vectors of ``rows`` rows of the activation
    buffer (``rows * R`` int8 elements each). Row ``j`` of vector ``i`` is row
    ``a_row + off(i, j)`` (:func:`vec_offset`): with ``stride`` 0 the vectors lie one
    after another, ``off = i*rows + j``; else they are interleaved, ``off = i +
    j*stride``: the k-tile-major layout of a ``count x rows*R`` matrix whose k-tiles are
    ``stride`` rows apart (a GEMM's output stored to the buffer, ``stride = M``), each
    vector one of its rows. Results go to ``dst_row + off(i, j)``; the partner operand
    ``b`` (``ADD``, ``MUL``; ``ROPE``'s cosines and sines) is at ``b_row + off(i, j)``,
    or, with ``b_repeat``, one vector for all at ``b_row + j`` (contiguous, as the
    driver places parameters, whatever ``stride``). By ``vop``
    (:class:`VecOp`; ``sw/vector.py`` states each one's arithmetic, bit for bit):
    ``ADD``  ``y = sat8(round((mul_a * a + mul_b * b) / 2**shift))``: a residual add of
    two int8 tensors into a third scale (``mul_b = 0``: rescale one); with ``b_repeat``
    every vector's partner is the same ``rows`` rows at ``b_row`` (a bias, or a
    LayerNorm's beta, added to every token; also for ``MUL``: a per-element scale);
    with ``wide``, ``a``, ``b`` and ``y`` are 16-bit (``256 hi + lo``: high halves at
    ``a_row``, ``b_row``, ``dst_row`` as above, low halves at ``a_lo_row``,
    ``b_lo_row``, ``dst_lo_row`` likewise; ``y`` clamped to ``+-WIDE_MAX``): the
    residual stream in 16 bits;
    ``MUL``  ``y = sat8(round(mul_a * a * b / 2**shift))``: an elementwise product
    (SwiGLU's ``silu(gate) * up``); with ``wide``, ``a``, ``b`` and ``y`` are 16-bit (low
    halves as for ``ADD``) and ``y = clamp(round(a * b / 2**shift), +-WIDE_MAX)``
    (``mul_a`` is not applied);
    ``LUT``  ``y = T[table][a]``: any function of one int8 at fixed scales (GELU, SiLU),
    from a 256-entry table of int8;
    ``TABLE``  fills table ``table``: entry ``j * R + e`` = element ``e`` of row
    ``a_row + j`` (``rows * count * R <= 256``; ``b_row``, ``dst_row``, ``stride``
    unused);
    ``SOFTMAX``  a masked, max-subtracted softmax of each vector in base 2: the first
    ``length`` elements of vector 0 count (``length + i`` of vector ``i`` with
    ``causal``), the others are masked (their output is 0); ``mul_a`` (unsigned here)
    and ``shift`` give ``log2(e)`` times the input scale, in 1/256ths; the output is the
    probability times 127, in ``[0, 127]`` (with ``wide_out``: times ``127 * 256``, 16-bit,
    its low halves at ``dst_lo_row + off(i, j)``; with ``wide``, of 16-bit ``x``, ``256 hi
    + lo``, low halves at ``a_lo_row + off(i, j)``: attention's scores in 16 bits);
    ``LAYERNORM``, ``RMSNORM``  normalize each vector over its first ``length``
    elements (all ``rows * R`` if ``length`` is more; the others give 0; ``causal`` is
    ignored) to 1/4096ths, then multiply by
    the int16 gain of each
    element and divide by ``2**shift`` (rounded, saturated): ``y = sat8(round(g * x_hat *
    4096 / 2**shift))``; the gains' low bytes are the ``rows`` rows at ``b_row``, their
    high bytes the ``rows`` rows after those (contiguous whatever ``stride``), one gain
    vector for all ``count`` vectors; with ``wide`` ``x`` is 16-bit, ``256 hi + lo``,
    its high halves at ``a_row + off(i, j)`` and its low halves at ``a_lo_row + off(i,
    j)``; with ``wide_out`` ``y`` is 16-bit too (``clamp(round(g * x_hat * 4096 /
    2**shift), +-WIDE_MAX)``, low halves at ``dst_lo_row + off(i, j)``) (``wide`` with a
    ``vop`` other than these and ``ADD``, ``wide_out`` with another: ``BAD_VOP``); with
    ``beta`` an int16 bias of each element (a LayerNorm's ``beta`` at the output's scale,
    its low bytes the ``rows`` rows after the gains' high bytes, its high bytes the
    ``rows`` rows after those) is added to the rounded product before the saturation:
    ``y = sat8(round(g * x_hat * 4096 / 2**shift) + beta)`` (``beta`` with another
    ``vop``: ``BAD_VOP``); with ``dynq`` the 16-bit result (as with ``wide_out``) goes on
    through ``DYNQ``: int8 rows at ``dst_row + off(i, j)`` at a scale of their own, the
    code of vector ``i`` to row-scale slot ``b_lo_row + i`` (a norm straight into the
    next GEMM's per-token int8 input; ``dynq`` with ``wide_out`` or another ``vop``:
    ``BAD_VOP``);
    ``ARGMAX``  the index of the first largest of each vector's first ``length``
    elements (0 when ``length`` is 0; with ``wide``, of the 16-bit values ``256 hi +
    lo``, low halves at ``a_lo_row + off(i, j)``: a language model's logits), written as
    one row per vector at ``dst_row + i``: element ``e`` is byte ``e`` of the index
    (little-endian, zeros past it);
    ``ROPE``  a rotary position embedding of each vector (``rows`` even; ``h = rows / 2``
    rows per half): with ``x1``, ``x2`` its halves and the int8 cosines ``c`` (rows
    ``0 .. h-1`` of its ``b``) and sines ``s`` (rows ``h .. rows-1``), one position's
    table per vector (interleaved: a token's), or with ``b_repeat`` one for all
    ``count`` vectors (the heads of one position), ``y1 = x1 c - x2 s``,
    ``y2 = x2 c + x1 s``, each times ``mul_a``, divided by ``2**shift`` (rounded,
    saturated); with ``wide``, ``x``, the tables and ``y`` are 16-bit (low halves at
    ``a_lo_row``, ``b_lo_row``, ``dst_lo_row`` as for ``ADD``; tables ``round(2**14
    cos)``), ``mul_a`` is not applied and ``y`` is clamped to ``+-WIDE_MAX``
    (``shift = 14`` keeps the scale).
    ``mul_a`` and ``mul_b`` are signed 16-bit (but for ``SOFTMAX``), ``round`` is half
    up, ``sat8`` clamps to ``[-128, 127]``. The destination rows may be the source rows
    themselves (in place) or rows apart from them; a partial overlap is outside the
    contract, and so is a ``ROPE`` in place (a row of the second half reads its partner
    in the first after that row's result may have been written).
``FENCE``  wait until every unit is idle and every DMA write is acknowledged; with
    ``stores``, only until the store unit is idle (its queue empty) and every DMA write is
    acknowledged: what earlier ``STORE``s wrote to memory may then be read, while the
    load, exec and vector units go on with what they were given before.
``END``  as ``FENCE``, then stop with ``done`` (and the interrupt, if enabled).

Errors (status register ``error`` code, :class:`Error`): an undefined opcode, an
instruction whose buffer rows fall outside a buffer (checked at dispatch, before it
runs), a zero count (``rows``, ``row_beats``, ``n_tiles``, ``m``, ``k_tiles``), an
undefined weight format (``BAD_FORMAT``), an undefined ``vop`` (``BAD_VOP``), a
``VEC`` table number ``>= vec_tables`` or a ``TABLE`` past entry 255 (``BAD_BUFFER``), a DMA
access outside ``[base, limit)`` or misaligned, an AXI ``SLVERR``/``DECERR``, and a
program that runs past its length without ``END``.
"""

import enum

from amaranth.lib import data

__all__ = ["Op", "Unit", "OpSpec", "OPS", "NEIGHBOURS", "TOKEN_LINKS", "VecOp",
           "BINARY_VOPS", "PAIR_VOPS", "REDUCE_VOPS", "NORM_VOPS", "norm_param_rows",
           "WIDE_VOPS", "WIDE_OUT_VOPS",
           "TABLE_ENTRIES", "SIGNED_FIELDS", "REL_TERMS", "POSITION_FIELDS", "at_position",
           "offset_fields",
           "Error", "WeightFormat", "BLOCK_FORMATS", "INSN_BYTES", "PARAM_BEATS",
           "MULT_BITS", "SHIFT_BITS", "WIDE_MAX",
           "header_layout", "insn_layout",
           "body_layouts", "encode", "decode_op", "vec_offset", "vec_span"]

INSN_BYTES = 32
INSN_BITS = 8 * INSN_BYTES
HEADER_BITS = 32
PARAM_BEATS = 12          # one parameter set: C bias, C mult, C shift words of 4 bytes
#: The parameter words' widths the requantizer takes (the low bits of each word):
#: multipliers ``0 <= m < 2**MULT_BITS``, shifts ``0 <= s < 2**SHIFT_BITS``
#: (``sw/requant.py`` states the arithmetic).
MULT_BITS = 31
SHIFT_BITS = 6
#: A wide (16-bit) value's bound: ``|q| <= WIDE_MAX`` keeps both int8 halves
#: (``q = 256 * hi + lo``) in range (``STORE wide``, ``VEC wide``).
WIDE_MAX = 127 * 256 + 127
#: Per-row (per-token) dynamic quantization (``VEC DYNQ``, ``STORE rowscale``): a row's
#: scale is one of ``ROWSCALE_CODES`` values ``sigma_k = (1 + f/2) * 2**e`` (``e = k >> 1``,
#: ``f = k & 1``: 1, 1.5, 2, 3, 4, ... 384), its code ``k`` held in a slot of the row-scale
#: file (``Config.rowscale_slots`` slots). ``DYNQ`` divides by ``sigma_k`` as a product with
#: ``DYNQ_MUL[f]`` (``2**DYNQ_SHIFT / (1 + f/2)``, rounded) and a rounding shift by
#: ``DYNQ_SHIFT + e``; ``sw/vector.py`` (``dynq``) and ``sw/requant.py``
#: (``row_rescale``) state the arithmetic.
ROWSCALE_CODES = 18
ROWSCALE_BITS = 5
DYNQ_SHIFT = 15
DYNQ_MUL = (1 << DYNQ_SHIFT, round((1 << (DYNQ_SHIFT + 1)) / 3))


def _dynq_limits():
    """The largest row maximum ``v`` that code ``k`` keeps within 127, ``(v * DYNQ_MUL[k &
    1] + 2**(s - 1)) >> s <= 127`` with ``s = DYNQ_SHIFT + (k >> 1)``, for each ``k``."""
    limits = []
    for k in range(ROWSCALE_CODES):
        s = DYNQ_SHIFT + (k >> 1)
        # (v * mul + half) >> s <= 127  <=>  v * mul < 128 * 2**s - half
        limits.append((128 * (1 << s) - (1 << (s - 1)) - 1) // DYNQ_MUL[k & 1])
    return tuple(limits)


#: ``DYNQ``'s code of a row is the number of these its maximum exceeds.
DYNQ_LIMITS = _dynq_limits()


class Op(enum.IntEnum):
    LOAD_ACT = 1
    LOAD_PARAM = 2
    MATMUL = 3
    STORE = 4
    FENCE = 5
    END = 6
    VEC = 7


class Unit(enum.IntEnum):
    """The units that run instructions, each from its own queue."""
    LOAD = 0
    EXEC = 1
    STORE = 2
    VECTOR = 3


class OpSpec:
    """One row of the op table: the unit that runs an opcode (``None``: the front end
    itself, ``FENCE`` and ``END``), its count fields (each must be non-zero, or the
    instruction ends in ``BAD_COUNT``) and its position fields, ``(field, term)`` pairs
    (:data:`REL_TERMS`) that header ``rel`` offsets."""

    def __init__(self, unit, counts=(), rel=()):
        self.unit, self.counts, self.rel = unit, tuple(counts), tuple(rel)
        assert all(term in REL_TERMS for _, term in self.rel)

    def __repr__(self):
        return f"OpSpec({self.unit!r}, {self.counts!r}, {self.rel!r})"


#: The terms a position-relative field is offset by (header ``rel``): ``"addr"``
#: ``(P >> shr) << shl``, ``"t"`` ``P >> shr``, ``"P"`` the position itself.
REL_TERMS = ("addr", "t", "P")


#: The op table, read by the front end (dispatch, count checks) and the golden model.
OPS = {
    Op.LOAD_ACT: OpSpec(Unit.LOAD, ("rows", "row_beats"), (("dram_addr", "addr"),)),
    Op.LOAD_PARAM: OpSpec(Unit.LOAD, ("n_tiles",), (("dram_addr", "addr"),)),
    Op.MATMUL: OpSpec(Unit.EXEC, ("m", "k_tiles"), (("k_tiles", "t"),)),
    Op.STORE: OpSpec(Unit.STORE, ("m",), (("dram_addr", "addr"),)),
    Op.FENCE: OpSpec(None),
    Op.END: OpSpec(None),
    Op.VEC: OpSpec(Unit.VECTOR, ("rows", "count"), (("rows", "t"), ("length", "P"))),
}

#: Each unit's neighbours by header flag pair (``prev``: ``pop_prev``/``push_prev``, ...).
#: A flag naming no neighbour is ignored.
NEIGHBOURS = {
    Unit.LOAD: {"next": Unit.EXEC},
    Unit.EXEC: {"prev": Unit.LOAD, "next": Unit.STORE, "side": Unit.VECTOR},
    Unit.STORE: {"prev": Unit.EXEC, "side": Unit.VECTOR},
    Unit.VECTOR: {"prev": Unit.STORE, "next": Unit.EXEC},
}

#: Every token counter, as ``(producer, consumer)``.
TOKEN_LINKS = tuple(sorted({(u, v) for u, nb in NEIGHBOURS.items() for v in nb.values()}))


class VecOp(enum.IntEnum):
    """A ``VEC`` instruction's operation (its ``vop`` field; others: ``BAD_VOP``)."""
    ADD = 0
    MUL = 1
    LUT = 2
    TABLE = 3
    SOFTMAX = 4
    LAYERNORM = 5
    RMSNORM = 6
    ARGMAX = 7
    ROPE = 8
    DYNQ = 9


#: The vector operations that read a second row (``b``) for every row.
BINARY_VOPS = (VecOp.ADD, VecOp.MUL)
#: The vector operations that reduce each vector before they write it.
REDUCE_VOPS = (VecOp.SOFTMAX, VecOp.LAYERNORM, VecOp.RMSNORM, VecOp.ARGMAX, VecOp.DYNQ)
#: The normalizations: their gains are int16, ``rows`` rows of low bytes at ``b_row``
#: and ``rows`` rows of high bytes after them, the same for every vector (with ``beta``,
#: its bias's low and high bytes after those: four times ``rows`` rows).
NORM_VOPS = (VecOp.LAYERNORM, VecOp.RMSNORM)


def norm_param_rows(rows, beta):
    """The parameter rows at ``b_row`` that a normalization of ``rows``-row vectors
    reads: its gains' two bytes, and with ``beta`` its bias's."""
    return (4 if beta else 2) * rows

#: The operations that take ``wide`` (16-bit operands) and ``wide_out`` (a 16-bit
#: result); ``wide`` or ``wide_out`` with another is ``BAD_VOP``.
WIDE_VOPS = (*NORM_VOPS, *BINARY_VOPS, VecOp.ARGMAX, VecOp.ROPE, VecOp.SOFTMAX, VecOp.DYNQ)
#: The operations with a partner operand ``b`` (at ``b_row``): with ``wide``, ``b`` (low
#: halves at ``b_lo_row``) and the result (low halves at ``dst_lo_row``) are 16-bit too.
PAIR_VOPS = (*BINARY_VOPS, VecOp.ROPE)
WIDE_OUT_VOPS = (*NORM_VOPS, VecOp.SOFTMAX)
#: Entries of one vector lookup table (one per int8 value).
TABLE_ENTRIES = 256


class WeightFormat(enum.IntEnum):
    """A ``MATMUL``'s weight format (its ``wfmt`` field; 3 is undefined: ``BAD_FORMAT``)."""
    INT8 = 0
    Q4 = 1
    Q8 = 2


#: The formats whose weights come in block groups (scales, then codes) and pass the
#: exec unit's block scaler.
BLOCK_FORMATS = (WeightFormat.Q4, WeightFormat.Q8)


class Error(enum.IntEnum):
    """Error codes of the status register (0: no error)."""
    NONE = 0
    BAD_OPCODE = 1        # undefined opcode
    BAD_BUFFER = 2        # buffer rows or parameter slots out of range
    BAD_COUNT = 3         # a zero count
    DMA_WINDOW = 4        # DMA access outside [base, limit)
    DMA_ALIGN = 5         # DMA address or stride not a multiple of the bus width
    AXI_SLVERR = 6        # a read or write answered SLVERR
    AXI_DECERR = 7        # a read or write answered DECERR
    NO_END = 8            # the program ran past its length without END
    WATCHDOG = 9          # reserved for the host-side watchdog
    BAD_FORMAT = 10       # a MATMUL names an undefined weight format
    BAD_VOP = 11          # a VEC names an undefined vector operation


header_layout = data.StructLayout({
    "opcode": 4,
    "pop_prev": 1,
    "pop_next": 1,
    "push_prev": 1,
    "push_next": 1,
    "pop_side": 1,
    "push_side": 1,
    "rel": 1,
    "guard": 1,
    "shr": 4,
    "shl": 5,
    "gtile": 11,
})

body_layouts = {
    Op.LOAD_ACT: data.StructLayout({
        "dram_addr": 32, "dram_stride": 32, "rows": 16, "row_beats": 16,
        "buf_row": 16, "buf_row_step": 16, "buf_beat_step": 16,
    }),
    Op.LOAD_PARAM: data.StructLayout({
        "dram_addr": 32, "n_tiles": 16, "param_tile": 16,
    }),
    Op.MATMUL: data.StructLayout({
        "weight_addr": 32, "act_row": 16, "act_stride": 16, "act_kstep": 16,
        "m": 16, "k_tiles": 16, "acc_row": 16, "accumulate": 1, "wfmt": 2, "pair": 1,
    }),
    Op.STORE: data.StructLayout({
        "dram_addr": 32, "dram_stride": 32, "acc_row": 16, "m": 16, "param_tile": 16,
        "buf_row": 16, "to_buf": 1, "relu": 1, "raw": 1, "transpose": 1, "wide": 1,
        "lo_row": 16, "rowscale": 1, "scale_row": 16,
    }),
    Op.FENCE: data.StructLayout({"stores": 1}),
    Op.END: data.StructLayout({}),
    Op.VEC: data.StructLayout({
        "a_row": 16, "b_row": 16, "dst_row": 16, "rows": 16, "count": 16, "length": 16,
        "mul_a": 16, "mul_b": 16, "vop": 4, "shift": 5, "table": 4, "causal": 1,
        "b_repeat": 1, "stride": 16, "wide": 1, "wide_out": 1, "a_lo_row": 16,
        "b_lo_row": 16, "dst_lo_row": 16, "beta": 1, "dynq": 1,
    }),
}

# END has no fields, so no member in the union (a zero-width member would
# become a `[-1:0]` wire in Verilog).
body_layout = data.UnionLayout({op.name.lower(): layout
                                for op, layout in body_layouts.items() if layout.size})

insn_layout = data.StructLayout({
    "header": header_layout,
    "body": body_layout,
    "pad": INSN_BITS - HEADER_BITS - body_layout.size,
})

assert insn_layout.size == INSN_BITS


def _fields(layout):
    """``{name: (offset, width)}`` of a layout (computed once: the models encode and
    decode every instruction)."""
    return {name: (f.offset, f.width) for name, f in layout}


_HEADER = _fields(header_layout)
_BODY = {op: _fields(layout) for op, layout in body_layouts.items()}


#: Per opcode: each body field's ``(shift in the word, largest value, width)``.
_BODY_AT = {op: {name: (HEADER_BITS + offset, (1 << width) - 1, width)
                 for name, (offset, width) in layout.items()}
            for op, layout in _BODY.items()}


#: The header fields of a position-relative instruction (:func:`encode` takes them).
POSITION_FIELDS = ("rel", "guard", "shr", "shl", "gtile")


def encode(op, *, pop_prev=0, pop_next=0, push_prev=0, push_next=0, pop_side=0,
           push_side=0, rel=0, guard=0, shr=0, shl=0, gtile=0, **fields):
    """Encode one instruction into :data:`INSN_BYTES` little-endian bytes.

    Unknown field names and values that do not fit raise ``ValueError``. ``VEC``'s
    ``mul_a`` and ``mul_b`` take a signed or an unsigned 16-bit value (``SOFTMAX`` reads
    ``mul_a`` unsigned); :func:`decode_op` gives them signed.
    """
    op = Op(op)
    layout = _BODY_AT[op]
    word = 0
    for name, value in (("opcode", int(op)), ("pop_prev", pop_prev), ("pop_next", pop_next),
                        ("push_prev", push_prev), ("push_next", push_next),
                        ("pop_side", pop_side), ("push_side", push_side), ("rel", rel),
                        ("guard", guard), ("shr", shr), ("shl", shl), ("gtile", gtile)):
        offset, width = _HEADER[name]
        word |= _fit(name, value, width) << offset
    vec = op == Op.VEC
    for name, value in fields.items():
        at = layout.get(name)
        if at is None:
            unknown = sorted(set(fields) - set(layout))
            raise ValueError(f"{op.name} has no field(s) {', '.join(unknown)}")
        shift, top, width = at
        value = int(value)
        if vec and name in SIGNED_FIELDS:
            if not -(1 << 15) <= value < (1 << 16):
                raise ValueError(f"{name}={value} does not fit in 16 bits")
            value &= 0xFFFF
        if not 0 <= value <= top:
            raise ValueError(f"{name}={value} does not fit in {width} bits")
        word |= value << shift
    return word.to_bytes(INSN_BYTES, "little")


def decode_op(raw):
    """The opcode and the field dict of one encoded instruction (for models and dumps)."""
    word = int.from_bytes(bytes(raw), "little")
    opcode = word & 0xF
    hdr = {name: (word >> o) & ((1 << w) - 1) for name, (o, w) in _HEADER.items()}
    try:
        op = Op(opcode)
    except ValueError:
        return None, hdr, {}
    body = {name: (word >> (HEADER_BITS + o)) & ((1 << w) - 1)
            for name, (o, w) in _BODY[op].items()}
    if op == Op.VEC:
        for name in SIGNED_FIELDS:
            body[name] -= (body[name] & 0x8000) << 1
    return op, hdr, body


#: ``VEC`` fields that are signed (decoded as such by :func:`decode_op` and the RTL).
SIGNED_FIELDS = ("mul_a", "mul_b")


def _fit(name, value, width):
    value = int(value)
    if not 0 <= value < (1 << width):
        raise ValueError(f"{name}={value} does not fit in {width} bits")
    return value


def vec_offset(i, j, rows, stride):
    """The row of a ``VEC`` operand that holds row ``j`` of vector ``i``, from the
    operand's base row: ``i*rows + j`` (``stride`` 0: vectors one after another) or
    ``i + j*stride`` (interleaved vectors)."""
    return i * rows + j if stride == 0 else i + j * stride


def vec_span(rows, count, stride):
    """Rows from the first to one past the last that ``count`` vectors of ``rows`` rows
    occupy: ``rows*count`` (``stride`` 0) or ``count + (rows-1)*stride``."""
    return vec_offset(count - 1, rows - 1, rows, stride) + 1


def at_position(op, hdr, body, position):
    """The instruction ``(op, hdr, body)`` (:func:`decode_op`) as it runs at position
    ``position``: ``None`` if its ``guard`` skips it, else its body with the position
    fields of a ``rel`` instruction offset (see "Position-relative instructions")."""
    if hdr["guard"] and hdr["gtile"] > position >> hdr["shr"]:
        return None
    if not hdr["rel"] or op is None:
        return body
    return offset_fields(op, hdr, body, position)


def offset_fields(op, hdr, body, position, sign=1):
    """``body`` with ``op``'s position fields offset by ``sign`` times their terms at
    ``position`` (``hdr``'s ``shr`` and ``shl``), modulo each field's width: ``sign=-1``
    gives the fields to encode for an instruction that must run with ``body`` there. A
    field missing from ``body`` counts as 0."""
    t = position >> hdr["shr"]
    terms = {"addr": (t << hdr["shl"]) & 0xFFFF_FFFF, "t": t, "P": position}
    body = dict(body)
    for name, term in OPS[op].rel:
        width = _BODY[op][name][1]
        body[name] = (body.get(name, 0) + sign * terms[term]) % (1 << width)
    return body
