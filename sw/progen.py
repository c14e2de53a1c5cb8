"""Random instruction streams: any legal serrano program, and illegal ones.

The compiler writes a few shapes of program; the hardware must run every program the
instruction set (:mod:`hw.isa`) allows. :func:`legal_stream` draws one: random opcodes in
random order, every field inside its documented range, random dependency tokens, then
repaired into a legal program (below). :func:`illegal_stream` breaks one field or one
rule of a legal stream, so that the run must end in a named error.

Draws come from a :class:`Draw`: :class:`RngDraw` (a numpy generator: campaigns) or
:class:`HypothesisDraw` (:func:`streams`, a hypothesis strategy: property tests, whose
failures hypothesis shrinks). Every decision is one ``int`` draw, smaller values giving
simpler streams, and each instruction is one group of draws after a "one more?" draw, so
shrinking moves towards fewer instructions, smaller counts, lower rows and fewer options.
:func:`shrink` cuts a failing stream from a campaign seed down by deleting instructions
and flags while it stays a stream of its kind and still fails (what a replay prints).

A legal stream ends with closing dumps (:func:`_observe`) that bring what its body left
in the accumulators and the activation buffer to memory, so that the comparison of the
memory image sees every effect, then ``END``. :func:`check` is the verdict on a run,
:func:`run_on` runs a stream on any backend of :mod:`sw.backends` (a fast simulator kept
running across streams), :func:`run_rtl` on the Verilog system model (Icarus).

Memory
------
``[0, base)`` and ``[limit, size)`` are outside the DMA window (random bytes that must stay
as they are). Inside: the program (room for :data:`MAX_INSNS` instructions, so that a
fetch running ahead never leaves the window), then a read-only region (valid
requantization parameter sets, then weights: an identity tile for the dumps, then random
bytes, which every weight format accepts), then a read-write region (random bytes:
activations in and results out), then the dumps' region.
Loads read both regions, ``MATMUL`` weights come from the read-only one (weights are
constant for a program, :mod:`hw.isa`), stores write the read-write one only.

What makes a stream legal
-------------------------
* Every field in range: counts non-zero, rows inside their buffers, DMA inside the window
  and aligned, defined opcodes, formats and vector operations (the golden model's
  dispatch and DMA checks pass).
* Nothing read before it is written: activation and accumulator rows, parameter slots
  and vector tables (every entry) are written earlier in program order than they are
  read (the buffers keep the previous program's contents; the golden model's start at
  zero).
* No access outside the contract: a ``VEC`` writes its sources only in place (the same
  rows, not a ``ROPE`` or an ``ARGMAX``), never its partner operand; a ``STORE``'s rows
  and a ``LOAD_ACT``'s beats never land on one another; interleaved vectors never share
  a row.
* Tokens and fences order every conflict as program order does and cannot deadlock:
  after drawing the flags, :func:`repair` clears the pops of a deadlocked instruction
  (:func:`sw.isa_model.check_tokens` with one-entry queues, the least any unit has, so
  that the hardware's deeper queues cannot deadlock either) and puts a ``FENCE`` before
  the later instruction of each race (:func:`sw.isa_model.check_races`) until both pass.
"""

import copy
import dataclasses

import numpy as np

from serrano.hw import isa
from . import isa_model
from .requant import MULT_MAX, SHIFT_MAX

__all__ = ["Draw", "RngDraw", "HypothesisDraw", "streams", "Insn", "Stream", "MAX_INSNS",
           "ILLEGAL_KINDS", "legal_stream", "illegal_stream", "repair",
           "encode", "allowed_bytes", "check", "run_on", "run_rtl", "shrink"]

#: Instructions a stream may hold (body, fences added by :func:`repair`, ``END``).
MAX_INSNS = 48
#: How a stream is broken (:func:`illegal_stream`), with the error each must end in
#: (``None``: the accelerator must hang: a host watchdog ends the run).
ILLEGAL_KINDS = {
    "bad_opcode": isa.Error.BAD_OPCODE, "bad_count": isa.Error.BAD_COUNT,
    "bad_format": isa.Error.BAD_FORMAT, "bad_vop": isa.Error.BAD_VOP,
    "bad_buffer": isa.Error.BAD_BUFFER, "window": isa.Error.DMA_WINDOW,
    "align": isa.Error.DMA_ALIGN, "no_end": isa.Error.NO_END, "deadlock": None,
}
_FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next", "pop_side", "push_side")
_POPS = ("pop_prev", "pop_next", "pop_side")
_OPS = (isa.Op.LOAD_ACT, isa.Op.LOAD_PARAM, isa.Op.MATMUL, isa.Op.STORE, isa.Op.VEC,
        isa.Op.FENCE)
_OP_WEIGHTS = (3, 1, 4, 4, 4, 1)
_TRIES = 40
_DUMPS = 4              # closing dumps: two runs of accumulator rows, two of activations


# --------------------------------------------------------------------------------------
# Where the randomness comes from


class Draw:
    """The source of a stream's decisions: ``int(lo, hi)`` (inclusive, shrinking to
    ``lo``) is the only primitive; ``coin``, ``choice`` and ``weighted`` are built on it.
    """

    def int(self, lo, hi):
        raise NotImplementedError

    def coin(self, p):
        """True with probability about ``p`` (shrinks to False)."""
        return self.int(0, 999) >= 1000 - round(1000 * p)

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def nested(self, fn):
        """``fn(draw)``: its decisions form one group, which a shrinker may drop whole."""
        return fn(self)

    def weighted(self, seq, weights):
        x = self.int(0, sum(weights) - 1)
        for item, w in zip(seq, weights):
            if x < w:
                return item
            x -= w
        raise AssertionError("unreachable")


class RngDraw(Draw):
    """Decisions from a numpy ``Generator``."""

    def __init__(self, rng):
        self.rng = rng

    def int(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))


class HypothesisDraw(Draw):
    """Decisions from hypothesis: ``draw`` is a composite strategy's ``draw`` or the
    ``draw`` method of ``st.data()``'s object. Shrinkable."""

    def __init__(self, draw):
        from hypothesis import strategies as st
        self._draw, self._st = draw, st

    def int(self, lo, hi):
        return self._draw(self._st.integers(lo, hi))

    def nested(self, fn):
        return self._draw(_group()(fn))


_GROUP = []


def _group():
    """A hypothesis strategy drawing ``fn(draw)`` as one group (made once: hypothesis
    inspects a composite's function when it is defined)."""
    if not _GROUP:
        from hypothesis import strategies as st

        @st.composite
        def group(draw, fn):
            return fn(HypothesisDraw(draw))
        _GROUP.append(group)
    return _GROUP[0]


def streams(cfg, kind="legal", *, max_body=20):
    """A hypothesis strategy of streams on ``cfg``: ``"legal"``, ``"illegal"`` (any
    kind of :data:`ILLEGAL_KINDS`), one of those kinds, or ``"any"`` (half and half).
    Shrinking gives shorter streams with simpler fields; a stream's ``repr`` is its
    listing, so a falsifying example prints as a program."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw):
        d = HypothesisDraw(draw)
        which = kind
        if which == "any":
            which = "legal" if d.coin(0.5) else "illegal"
        if which == "legal":
            return legal_stream(d, cfg, max_body=max_body)
        return illegal_stream(d, cfg, None if which == "illegal" else which)
    return strategy()


# --------------------------------------------------------------------------------------
# Streams


@dataclasses.dataclass
class Insn:
    """One instruction: its opcode (an int, so that an undefined one can be written), its
    dependency flags and its body fields."""
    op: int
    flags: dict
    fields: dict
    role: str = "body"        # "body", "fence" (added by repair), "dump" (closing dumps)
    #                           or "skipped" (guarded out at the stream's position)
    #: Position-relative encoding (:mod:`hw.isa`): ``{"P": position, "rel", "guard",
    #: "shr", "shl", "gtile"}``; ``fields`` are what the instruction runs with at ``P``,
    #: the encoding stores them less their position terms.
    at: dict = None

    def encode(self, effective=False):
        """The 32 bytes (``effective``: as the instruction runs, without its position
        fields: what the static checks read)."""
        at = None if effective else self.at
        key = (self.op, tuple(self.flags.items()), tuple(self.fields.items()),
               tuple(at.items()) if at else ())
        if getattr(self, "_key", None) != key:          # encoded once per change
            self._key, self._raw = key, self._encode(at)
        return self._raw

    def _encode(self, at=None):
        if self.op in set(isa.Op) and at:
            hdr = {k: at.get(k, 0) for k in isa.POSITION_FIELDS}
            fields = (isa.offset_fields(isa.Op(self.op), hdr, self.fields, at["P"], -1)
                      if hdr["rel"] else self.fields)
            return isa.encode(self.op, **self.flags, **hdr, **fields)
        if self.op in set(isa.Op):
            return isa.encode(self.op, **self.flags, **self.fields)
        raw = bytearray(isa.encode(isa.Op.END))
        raw[0] = (raw[0] & 0xF0) | self.op
        return bytes(raw)

    def text(self):
        name = isa.Op(self.op).name if self.op in set(isa.Op) else f"OP{self.op}"
        flags = [k for k, v in self.flags.items() if v]
        fields = dict(self.fields)
        if self.op == isa.Op.VEC and "vop" in fields:
            v = fields["vop"]
            fields["vop"] = isa.VecOp(v).name if v in set(isa.VecOp) else v
        parts = [f"{k}={v:#x}" if k in ("dram_addr", "weight_addr") else f"{k}={v}"
                 for k, v in fields.items()]
        at = [f"@{k}={v}" for k, v in (self.at or {}).items() if v and k != "P"]
        skipped = ["(skipped)"] if self.role == "skipped" else []
        return " ".join([name] + parts + flags + at + skipped)


@dataclasses.dataclass
class Stream:
    """A program and the memory it runs on.

    ``image`` the whole memory (uint8); ``prog_addr``, ``n_insns`` what the host programs
    (``n_insns`` may stop short of ``END``: ``NO_END``); ``base``, ``limit`` the DMA
    window; ``rw`` = ``(first, end)`` the read-write region; ``insns`` the instructions;
    ``expect`` the error the run must end in (``isa.Error.NONE`` for a legal stream,
    ``None`` for a deadlock); ``kind`` ``"legal"`` or a key of :data:`ILLEGAL_KINDS`;
    ``broken`` the index of the instruction an illegal stream broke; ``position`` the
    ``position`` register it runs with (:func:`_positions`)."""
    cfg: object
    image: np.ndarray
    prog_addr: int
    n_insns: int
    base: int
    limit: int
    rw: tuple
    insns: list
    expect: object = isa.Error.NONE
    kind: str = "legal"
    broken: int = None
    layout: object = dataclasses.field(default=None, repr=False, compare=False)
    position: int = 0

    def __repr__(self):
        return self.text()

    def text(self):
        """The stream as one instruction per line (what a replay prints)."""
        head = (f"# {self.kind} stream on {self.cfg.name}: {len(self.insns)} instructions at "
                f"{self.prog_addr:#x}, n_insns {self.n_insns}, window [{self.base:#x}, "
                f"{self.limit:#x}), position {self.position}, expect "
                f"{'a hang' if self.expect is None else self.expect.name}")
        return "\n".join([head] + [f"{i:3d}  {insn.text()}"
                                   + ("    <- broken" if i == self.broken else "")
                                   for i, insn in enumerate(self.insns)])


def encode(insns, effective=False):
    """The program (``effective``: as it runs at its position, the skipped instructions
    left out and the others without their position fields)."""
    return b"".join(insn.encode(effective) for insn in insns
                    if not (effective and insn.role == "skipped"))


# --------------------------------------------------------------------------------------
# Memory layout


class _Layout:
    """Where everything lives (see the module docstring)."""

    def __init__(self, draw, cfg):
        bb = cfg.bus_bytes
        self.cfg, self.bb = cfg, bb
        self.base = 64 * draw.int(0, 64)
        self.prog = self.base
        self.param_sets = max(4, cfg.param_tiles // 4)
        self.params = self.prog + MAX_INSNS * isa.INSN_BYTES
        self.weights = self.params + self.param_sets * isa.PARAM_BEATS * bb
        self.rw = self.weights + 4 * 4 * cfg.rows * cfg.cols
        self.dump_row = cfg.raw_row_beats * bb          # one raw accumulator row
        self.dump = self.rw + 32 * self.dump_row
        self.limit = self.dump + _DUMPS * 2 * cfg.rows * self.dump_row
        self.size = self.limit + 64 * draw.int(0, 8)

    def image(self, rng):
        """Random bytes everywhere, valid parameter sets where ``LOAD_PARAM`` reads."""
        cfg = self.cfg
        mem = rng.integers(0, 256, self.size, dtype=np.uint8)
        n = self.param_sets * cfg.cols
        bias = rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int64)
        mult = rng.integers(0, MULT_MAX + 1, n, dtype=np.int64)
        shift = rng.integers(0, SHIFT_MAX + 1, n, dtype=np.int64)
        packed = isa_model.pack_params(bias, mult, shift, cfg)
        mem[self.params:self.params + packed.size] = packed
        eye = np.eye(cfg.rows, cfg.cols, dtype=np.int8).view(np.uint8).ravel()
        mem[self.weights:self.weights + eye.size] = eye       # for the closing dumps
        return mem


# --------------------------------------------------------------------------------------
# Legal instructions


class _State:
    """What the stream has written so far (nothing may be read before it is written)."""

    def __init__(self):
        self.defined = set()         # ("act row", i), ("acc row", i), ("param slot", i), ...
        self.entries = {}            # vector table -> entries written; defined when all are

    def ok(self, keys):
        return all(k in self.defined for k in keys if k[0] != "memory beat")

    def record(self, cfg, op, fields, writes):
        """An instruction ``op`` with ``fields`` wrote ``writes`` (its footprint's)."""
        self.defined |= {k for k in writes if k[0] not in ("memory beat", "vector table")}
        if op == isa.Op.VEC and fields["vop"] == isa.VecOp.TABLE:
            entries = self.entries.setdefault(fields["table"], set())
            entries.update(range(fields["rows"] * fields["count"] * cfg.rows))
            if len(entries) == isa.TABLE_ENTRIES:
                self.defined.add(("vector table", fields["table"]))

    def pool(self, kind):
        """The rows (slots, tables) of ``kind`` written so far, ascending."""
        return sorted(i for k, i in self.defined if k == kind)


def _start(draw, n, top, arena=48, pool=None):
    """A first row for ``n`` rows below ``top``: for a source (``pool``: the rows written
    so far), mostly one of those; else mostly low (an arena the stream reuses), sometimes
    against the top."""
    if n > top:
        return None
    if pool and draw.coin(0.85):
        return min(draw.choice(pool), top - n)
    if draw.coin(0.12):
        return top - n - draw.int(0, min(3, top - n))
    return draw.int(0, min(arena, top - n))


def _dram(draw, lo, hi, extent, bb):
    """An aligned address in ``[lo, hi)`` with ``extent`` bytes from it inside."""
    slots = (hi - lo - extent) // bb
    if slots < 0:
        return None
    return lo + bb * draw.int(0, slots)


def _load_act(draw, cfg, lay):
    rows, row_beats = draw.int(1, 6), draw.int(1, 3)
    block = draw.coin(0.15)                 # a block of rows (a whole lookup table's)
    if block:
        rows, row_beats = draw.choice([isa.TABLE_ENTRIES // cfg.rows, draw.int(8, 64)]), 1
    if block:
        rs, bs = 1, 0
    elif row_beats == 1:
        rs, bs = draw.int(1, 2), 0
    elif rows == 1:
        rs, bs = 0, draw.int(1, 2)
    elif draw.coin(0.5):
        rs, bs = 1, rows                    # beat-major: each beat's rows together
    else:
        rs, bs = row_beats, 1               # row-major
    span = (rows - 1) * rs + (row_beats - 1) * bs + 1
    buf_row = _start(draw, span, cfg.act_buf_rows)
    bb = lay.bb
    stride = 0 if rows == 1 or draw.coin(0.05) else bb * row_beats * draw.int(1, 2)
    extent = (rows - 1) * stride + row_beats * bb
    addr = _dram(draw, lay.params, lay.limit, extent, bb)
    if buf_row is None or addr is None:
        return None
    return dict(dram_addr=addr, dram_stride=stride, rows=rows, row_beats=row_beats,
                buf_row=buf_row, buf_row_step=rs, buf_beat_step=bs)


def _load_param(draw, cfg, lay):
    n = draw.int(1, 3)
    tile = _start(draw, n, cfg.param_tiles, arena=8)
    first = draw.int(0, lay.param_sets - n)
    return dict(dram_addr=lay.params + first * isa.PARAM_BEATS * lay.bb, n_tiles=n,
                param_tile=tile)


def _matmul(draw, cfg, lay, state):
    R = cfg.rows
    wfmt = draw.weighted(list(isa.WeightFormat), (4, 2, 1))
    pair = draw.coin(0.2)
    m = 2 * draw.int(1, R) if pair else draw.int(1, 2 * R)
    k = draw.int(1, 3)
    shape = draw.int(0, 3)
    if shape == 0:                         # k-tile-major rows, as the compiler lays them
        stride, kstep = 1, m + draw.int(0, 2)
    elif shape == 1:                       # row-major: a row's k-tiles together
        stride, kstep = k, 1
    elif shape == 2:                       # one row for every m (a broadcast)
        stride, kstep = 0, draw.int(1, 2)
    else:
        stride, kstep = draw.int(1, 3), draw.int(0, 3 * m)
    span = (k - 1) * kstep + (m - 1) * stride + 1
    accumulate = draw.coin(0.3)
    act_row = _start(draw, span, cfg.act_buf_rows, pool=state.pool("act row"))
    acc_row = _start(draw, m, 2 * cfg.acc_buf_rows, arena=16,
                     pool=state.pool("acc row") if accumulate else None)
    f = dict(act_row=act_row, act_stride=stride, act_kstep=kstep, m=m, k_tiles=k,
             acc_row=acc_row, accumulate=int(accumulate), wfmt=int(wfmt),
             pair=int(pair))
    nbytes = isa_model.weight_bytes(cfg, f)
    f["weight_addr"] = _dram(draw, lay.weights, lay.rw, nbytes, lay.bb)
    if act_row is None or acc_row is None or f["weight_addr"] is None:
        return None
    return f


def _store(draw, cfg, lay, state):
    C, bb = cfg.cols, lay.bb
    pool = state.pool("acc row")
    if pool and draw.coin(0.85):            # a run of rows a MATMUL wrote
        acc_row = draw.choice(pool)
        run = 1
        while run < 2 * cfg.rows and ("acc row", acc_row + run) in state.defined:
            run += 1
        m = draw.int(1, run)
    else:
        m = draw.int(1, 2 * cfg.rows)
        acc_row = _start(draw, m, 2 * cfg.acc_buf_rows, arena=16)
    mode = draw.weighted(("mem", "buf", "raw", "transpose", "wide"), (4, 3, 2, 1, 2))
    f = dict(acc_row=acc_row, m=m,
             param_tile=_start(draw, 1, cfg.param_tiles, arena=8,
                               pool=state.pool("param slot")),
             relu=int(draw.coin(0.3)))
    if mode != "raw" and state.pool("row scale") and draw.coin(0.4):   # DYNQ's scales
        f.update(rowscale=1, scale_row=_start(draw, m, cfg.rowscale_slots, arena=16,
                                              pool=state.pool("row scale")))
        if f["scale_row"] is None:
            return None
    if mode in ("buf",) or (mode == "wide" and draw.coin(0.5)):
        f.update(to_buf=1, buf_row=_start(draw, m, cfg.act_buf_rows))
        if mode == "wide":
            f.update(wide=1, lo_row=_start(draw, m, cfg.act_buf_rows))
            if f["lo_row"] is None or f["buf_row"] is None or \
                    abs(f["lo_row"] - f["buf_row"]) < m:
                return None
        return f if f["buf_row"] is not None and acc_row is not None else None
    rows, row_bytes = m, bb
    if mode == "raw":
        f.update(raw=1, relu=0)
        row_bytes = cfg.raw_row_beats * bb
    elif mode == "transpose":
        f.update(transpose=1)
        rows, row_bytes = -(-m // C), C * bb
    elif mode == "wide":
        f.update(wide=1)
        row_bytes = 2 * bb
    stride = row_bytes + bb * draw.int(0, 2) * int(rows > 1)
    extent = (rows - 1) * stride + row_bytes
    f.update(dram_stride=stride, dram_addr=_dram(draw, lay.rw, lay.limit, extent, bb))
    if f["dram_addr"] is None or acc_row is None:
        return None
    return f


def _vec(draw, cfg, state):
    R, top = cfg.rows, cfg.act_buf_rows
    pool = state.pool("act row")
    vop = draw.choice(list(isa.VecOp))
    if state.pool("vector table") and draw.coin(0.25):
        vop = isa.VecOp.LUT                   # a table is there to be used
    if vop == isa.VecOp.LUT and not state.pool("vector table"):
        vop = isa.VecOp.TABLE                 # a lookup needs a table written first
    if vop == isa.VecOp.TABLE:
        if draw.coin(0.6):                    # the whole table (a lookup reads any entry)
            count = draw.choice([1, 2, 4])
            rows = isa.TABLE_ENTRIES // R // count
        else:
            rows, count = draw.int(1, 4), draw.int(1, 4)
        if rows * count * R > isa.TABLE_ENTRIES:
            return None
        n = rows * count
        starts = [first for first, m in _runs(pool, n, every=True) if m == n]
        if starts and draw.coin(0.9):         # rows written by one block load
            return dict(vop=int(vop), a_row=draw.choice(starts), rows=rows, count=count,
                        table=draw.int(0, cfg.vec_tables - 1))
        return dict(vop=int(vop), a_row=_start(draw, rows * count, top, pool=pool),
                    rows=rows, count=count, table=draw.int(0, cfg.vec_tables - 1))
    rows = 2 * draw.int(1, 2) if vop == isa.VecOp.ROPE else draw.int(1, 4)
    count = draw.int(1, 3)
    stride = 0 if draw.coin(0.6) else count + draw.int(0, 2)
    span = isa.vec_span(rows, count, stride)
    L = rows * R
    f = dict(vop=int(vop), rows=rows, count=count, stride=stride,
             length=draw.choice([L, draw.int(0, L), 0, 1, L + draw.int(1, 3)]),
             causal=int(draw.coin(0.3)), mul_a=draw.int(-(1 << 15), (1 << 15) - 1),
             mul_b=draw.int(-(1 << 15), (1 << 15) - 1), shift=draw.int(0, 31),
             table=draw.choice(state.pool("vector table") or [0]))
    if vop == isa.VecOp.SOFTMAX:
        f["mul_a"] = draw.int(0, (1 << 16) - 1)
    wide = vop in isa.WIDE_VOPS and draw.coin(0.3)
    wide_out = vop in isa.WIDE_OUT_VOPS and draw.coin(0.3)
    pair = vop in isa.PAIR_VOPS
    f.update(wide=int(wide), wide_out=int(wide_out))
    in_place = vop not in (isa.VecOp.ROPE, isa.VecOp.ARGMAX) and draw.coin(0.25)
    f["a_row"] = _start(draw, span, top, pool=pool)
    f["dst_row"] = f["a_row"] if in_place else _start(draw, span, top)
    if wide:
        f["a_lo_row"] = _start(draw, span, top, pool=pool)
    if wide_out or (wide and pair):
        f["dst_lo_row"] = f.get("a_lo_row") if in_place and wide else _start(draw, span, top)
    if vop == isa.VecOp.DYNQ:                 # its codes into row-scale slots
        f["b_row"] = _start(draw, count, cfg.rowscale_slots, arena=16)
    if vop in isa.NORM_VOPS:
        f["beta"] = int(draw.coin(0.4))
        if not wide_out and draw.coin(0.3):      # on through DYNQ: codes to slots
            f.update(dynq=1, b_lo_row=_start(draw, count, cfg.rowscale_slots, arena=16))
    if pair or vop in isa.NORM_VOPS:
        f["b_repeat"] = int(pair and draw.coin(0.3))
        span_b = (isa.norm_param_rows(rows, f["beta"]) if vop in isa.NORM_VOPS
                  else (rows if f["b_repeat"] else span))
        f["b_row"] = _start(draw, span_b, top, pool=pool)
        if wide and pair:
            f["b_lo_row"] = _start(draw, span_b, top, pool=pool)
    if any(v is None for v in f.values()):
        return None
    return f


def _vec_ok(f):
    """The ``VEC`` contract: results written over their own sources only in place (the
    same rows, not for ``ROPE`` or ``ARGMAX``), never over the partner operand or the
    gains, high and low halves apart."""
    b = dict(_defaults(isa.Op.VEC), **f)
    vop = b["vop"]
    if vop == isa.VecOp.TABLE:
        return True
    off = isa_model.vec_offsets(b["rows"], b["count"], b["stride"])

    def rows(first, offsets=off):
        return {int(r) for r in (first + offsets).ravel()}
    wide_pair = b["wide"] and vop in isa.PAIR_VOPS
    a = rows(b["a_row"])
    a_lo = rows(b["a_lo_row"]) if b["wide"] else set()
    d = set(range(b["dst_row"], b["dst_row"] + b["count"])) if vop == isa.VecOp.ARGMAX \
        else rows(b["dst_row"])
    d_lo = rows(b["dst_lo_row"]) if b["wide_out"] or wide_pair else set()
    partner = set()
    if vop in isa.PAIR_VOPS:
        ob = np.arange(b["rows"]) if b["b_repeat"] else off
        partner = rows(b["b_row"], ob) | (rows(b["b_lo_row"], ob) if wide_pair else set())
    if vop in isa.NORM_VOPS:
        partner = set(range(b["b_row"], b["b_row"] + isa.norm_param_rows(b["rows"], b["beta"])))
    if d & d_lo or (d | d_lo) & partner:
        return False
    in_place = vop not in (isa.VecOp.ROPE, isa.VecOp.ARGMAX)
    hi_ok = not d & (a | a_lo) or (in_place and b["dst_row"] == b["a_row"] and not d & a_lo)
    lo_ok = not d_lo & (a | a_lo) or (in_place and b["wide"] and
                                      b["dst_lo_row"] == b["a_lo_row"] and not d_lo & a)
    return hi_ok and lo_ok


def _defaults(op):
    return {name: 0 for name in isa.body_layouts[op].members} if isa.body_layouts[op].size \
        else {}


def _footprint(cfg, op, f):
    b = dict(_defaults(op), **f)
    reads, writes, early = isa_model._footprint(cfg, op, b)
    if op == isa.Op.MATMUL and b["accumulate"]:
        rows = b["m"] // 2 if b["pair"] else b["m"]
        reads |= {("acc row", b["acc_row"] + j) for j in range(rows)}
    if op == isa.Op.STORE and b["raw"]:
        reads.discard(("param slot", b["param_tile"]))
    return reads | early, writes


def _one(draw, cfg, lay, state):
    """One legal instruction that reads only what is written, or None."""
    op = draw.weighted(_OPS, _OP_WEIGHTS)
    if op == isa.Op.FENCE:
        return Insn(int(op), {}, {"stores": int(draw.coin(0.5))})
    make = {isa.Op.LOAD_ACT: lambda: _load_act(draw, cfg, lay),
            isa.Op.LOAD_PARAM: lambda: _load_param(draw, cfg, lay),
            isa.Op.MATMUL: lambda: _matmul(draw, cfg, lay, state),
            isa.Op.STORE: lambda: _store(draw, cfg, lay, state),
            isa.Op.VEC: lambda: _vec(draw, cfg, state)}[op]
    f = make()
    if f is None:
        return None
    reads, writes = _footprint(cfg, op, f)
    if not state.ok(reads):
        return None
    if op == isa.Op.VEC and not _vec_ok(f):
        return None
    state.record(cfg, op, f, writes)
    unit = isa.OPS[op].unit
    flags = {}
    for side, nb in isa.NEIGHBOURS[unit].items():
        flags[f"pop_{side}"] = int(draw.coin(0.3))
        flags[f"push_{side}"] = int(draw.coin(0.3))
    return Insn(int(op), flags, f)


def repair(cfg, insns):
    """Make ``insns`` (ending in ``END``) free of deadlocks and races, in place: clear
    the pops of a deadlocked instruction, put a ``FENCE`` before the later instruction of
    a race, until :func:`sw.isa_model.check_tokens` (one-entry queues) and
    :func:`sw.isa_model.check_races` pass. Returns ``insns``."""
    while True:
        program = encode(insns, effective=True)
        try:
            isa_model.check_races(cfg, program)          # unbounded queues, then one-entry
            isa_model.check_tokens(program, queue_depth=1)
            return insns
        except isa_model.DeadlockError as e:
            stuck = [i for i in e.stuck if any(insns[i].flags.get(p) for p in _POPS)]
            assert stuck, f"a deadlock without a pop: {e}"
            for p in _POPS:
                insns[stuck[0]].flags.pop(p, None)
        except isa_model.RaceError as e:
            # Memory a STORE wrote: a FENCE stores is enough (and exercises it).
            stores = int(e.resource[0] == "memory beat"
                         and insns[e.first].op == isa.Op.STORE)
            insns.insert(e.second, Insn(int(isa.Op.FENCE), {}, {"stores": stores}, "fence"))


def _runs(rows, cap, every=False):
    """The first and the last run (``every``: all runs) of consecutive rows in ``rows``
    (a sorted list), each cut to ``cap`` rows: ``[(first row, rows)]``."""
    runs, start = [], None
    for i, r in enumerate(rows):
        if start is None:
            start = r
        if i + 1 == len(rows) or rows[i + 1] != r + 1:
            runs.append((start, r + 1 - start))
            start = None
    picked = runs if every else runs[:1] + runs[1:][-1:]
    return [(first, min(n, cap)) for first, n in picked]


def _observe(cfg, lay, body):
    """The closing dumps: what the body left in the buffers, brought to memory so that
    the comparison sees it. Accumulator rows go out raw (the first and the last run the
    body wrote); activation rows through an identity ``MATMUL``, then raw (the first and
    the last run of those a ``VEC`` or a ``STORE`` computed, else of those loaded)."""
    state = _State()
    computed = set()           # activation rows last written by a VEC or a STORE
    for insn in body:
        if insn.op in (isa.Op.FENCE, isa.Op.END):
            continue
        writes = {k for k in _footprint(cfg, isa.Op(insn.op), insn.fields)[1]
                  if k[0] != "memory beat"}
        state.defined |= writes
        rows = {i for k, i in writes if k == "act row"}
        computed = (computed | rows) if insn.op in (isa.Op.VEC, isa.Op.STORE) \
            else computed - rows
    cap, out, slot = 2 * cfg.rows, [], 0

    def dump(acc_row, m):
        nonlocal slot
        out.append(Insn(int(isa.Op.STORE), {}, dict(
            acc_row=acc_row, m=m, param_tile=0, raw=1, dram_stride=lay.dump_row,
            dram_addr=lay.dump + slot * cap * lay.dump_row), "dump"))
        slot += 1
    for first, m in _runs(state.pool("acc row"), cap):
        dump(first, m)
    for j, (first, m) in enumerate(_runs(sorted(computed) or state.pool("act row"), cap)):
        out.append(Insn(int(isa.Op.MATMUL), {}, dict(
            weight_addr=lay.weights, act_row=first, act_stride=1, act_kstep=0, m=m,
            k_tiles=1, acc_row=j * cap, accumulate=0, wfmt=int(isa.WeightFormat.INT8),
            pair=0), "dump"))
        dump(j * cap, m)
    return out


def legal_stream(draw, cfg, *, max_body=20, positions=True):
    """A random legal stream on ``cfg`` (see the module docstring): up to ``max_body``
    instructions, then the closing dumps (:func:`_observe`) and ``END``, fences added by
    :func:`repair` included; with ``positions``, half of them at a position
    (:func:`_positions`)."""
    lay = _Layout(draw, cfg)
    state = _State()
    body = []
    tries = 0
    # One "more?" decision before each instruction, each instruction (with its failed
    # attempts) one group: a shrinker deletes instructions by deleting groups.
    while len(body) < max_body and tries < _TRIES * max_body and draw.coin(0.93):
        insn = None
        while insn is None and tries < _TRIES * max_body:
            tries += 1
            insn = draw.nested(lambda d: _one(d, cfg, lay, state))
        if insn is not None:
            body.append(insn)
    end = [Insn(int(isa.Op.END), {}, {})]
    insns = repair(cfg, body + _observe(cfg, lay, body) + end)
    while len(insns) > MAX_INSNS:         # repair's fences overflowed: drop the tail
        body = body[:len(body) // 2]
        insns = repair(cfg, body + _observe(cfg, lay, body) + end)
    seed = draw.int(0, 2**32 - 1)
    image = lay.image(np.random.default_rng(seed))
    position, insns = _positions(draw, insns) if positions else (0, insns)
    return _place(Stream(cfg=cfg, image=image, prog_addr=lay.prog, n_insns=len(insns),
                         base=lay.base, limit=lay.limit, rw=(lay.rw, lay.limit),
                         insns=insns, layout=lay, position=position))


def _positions(draw, insns):
    """Half the streams run at a position (the ``position`` register): some of their
    instructions are then encoded position-relative (``rel``: their position fields
    stored less the position's terms, so that they run as drawn) or guarded by a tile
    the position reaches, and up to three copies of earlier instructions, guarded by a
    tile it does not reach, are skipped among them. The stream runs as drawn at its
    position and differently at any other. Returns ``(position, insns)``."""
    if not draw.coin(0.5):
        return 0, insns
    position = draw.int(0, (1 << 12) - 1) if draw.coin(0.7) else draw.int(0, 2**32 - 1)
    out = []
    for insn in insns:
        if insn.op in set(isa.Op) and draw.coin(0.3):
            op = isa.Op(insn.op)
            at = {"P": position, "shr": draw.int(0, 15)}
            t = position >> at["shr"]
            if isa.OPS[op].rel and draw.coin(0.7):
                at.update(rel=1, shl=draw.int(0, 31))
            if draw.coin(0.5):
                at.update(guard=1, gtile=draw.int(0, min(t, 2047)))
            insn.at = at
        if out and insn.op != isa.Op.END and len(out) < MAX_INSNS - 4 and draw.coin(0.1):
            shr = draw.int(0, 15)
            if position >> shr < 2047:         # a tile the position does not reach
                like = out[draw.int(0, len(out) - 1)]
                out.append(Insn(like.op, dict(like.flags), dict(like.fields), "skipped",
                                {"P": position, "guard": 1, "shr": shr,
                                 "gtile": draw.int((position >> shr) + 1, 2047)}))
        out.append(insn)
    return position, out


def _place(stream):
    """Write the stream's program into its image."""
    code = np.frombuffer(encode(stream.insns), np.uint8)
    stream.image[stream.prog_addr:stream.prog_addr + code.size] = code
    return stream


# --------------------------------------------------------------------------------------
# Illegal streams


def _candidates(insns, ops):
    return [i for i, insn in enumerate(insns) if insn.op in ops]


def _break_count(draw, cfg, insn):
    op = isa.Op(insn.op)
    f = insn.fields
    options = [("zero", name) for name in isa.OPS[op].counts]
    if op == isa.Op.VEC and f["vop"] == isa.VecOp.ROPE:
        options.append(("odd", "rows"))
    if op == isa.Op.MATMUL and f.get("pair"):
        options.append(("odd", "m"))
    how, name = draw.choice(options)
    f[name] = 0 if how == "zero" else f[name] - 1


def _break_buffer(draw, cfg, insn):
    op = isa.Op(insn.op)
    f = insn.fields
    if op == isa.Op.LOAD_ACT:
        span = ((f["rows"] - 1) * f["buf_row_step"] + (f["row_beats"] - 1)
                * f["buf_beat_step"] + 1)
        f["buf_row"] = cfg.act_buf_rows - span + draw.int(1, 3)
    elif op == isa.Op.LOAD_PARAM:
        f["param_tile"] = cfg.param_tiles - f["n_tiles"] + draw.int(1, 3)
    elif op == isa.Op.MATMUL:
        if draw.coin(0.5):
            f["acc_row"] = 2 * cfg.acc_buf_rows - f["m"] + draw.int(1, 3)
        else:
            f["act_row"] = cfg.act_buf_rows + draw.int(0, 3)
    elif op == isa.Op.STORE:
        choice = draw.int(0, 3)
        if choice == 0:
            f["acc_row"] = 2 * cfg.acc_buf_rows - f["m"] + draw.int(1, 3)
        elif choice == 1:
            f["param_tile"] = cfg.param_tiles + draw.int(0, 3)
        elif choice == 2:                       # raw into the buffer
            f.update(to_buf=1, raw=1, transpose=0, wide=0)
        else:                                   # transpose of raw rows
            f.update(transpose=1, raw=1, to_buf=0, wide=0)
    else:
        if f["vop"] == isa.VecOp.TABLE and draw.coin(0.5):
            f["rows"] = isa.TABLE_ENTRIES // cfg.rows + 1
            f["count"] = 1
        elif draw.coin(0.5):
            f["table"] = cfg.vec_tables + draw.int(0, 15 - cfg.vec_tables)
        else:
            f["a_row"] = cfg.act_buf_rows - draw.int(0, 1)
            f["rows"] = max(f["rows"], 2)
            if f["vop"] == isa.VecOp.ROPE:
                f["rows"] += f["rows"] % 2


def _dma_fields(op):
    return {isa.Op.LOAD_ACT: ("dram_addr", "dram_stride"), isa.Op.LOAD_PARAM: ("dram_addr",),
            isa.Op.MATMUL: ("weight_addr",), isa.Op.STORE: ("dram_addr", "dram_stride")}[op]


def _targets(kind, insns):
    """The instructions that ``kind`` can break."""
    work = (isa.Op.LOAD_ACT, isa.Op.LOAD_PARAM, isa.Op.MATMUL, isa.Op.STORE, isa.Op.VEC)
    dma = (_candidates(insns, (isa.Op.LOAD_ACT, isa.Op.LOAD_PARAM, isa.Op.MATMUL))
           + [i for i in _candidates(insns, (isa.Op.STORE,))
              if not insns[i].fields.get("to_buf")])
    return {
        "bad_opcode": list(range(len(insns) - 1)), "bad_count": _candidates(insns, work),
        "bad_format": _candidates(insns, (isa.Op.MATMUL,)),
        "bad_vop": _candidates(insns, (isa.Op.VEC,)), "bad_buffer": _candidates(insns, work),
        "window": dma, "align": dma, "no_end": [len(insns) - 1],
        "deadlock": _candidates(insns, work),
    }[kind]


def illegal_stream(draw, cfg, kind=None, *, max_body=12):
    """A legal stream with one thing broken (``kind``, drawn from :data:`ILLEGAL_KINDS`
    when ``None``): its ``expect`` is the error the run must end in."""
    if kind is None:
        kind = draw.choice(sorted(ILLEGAL_KINDS))
    if kind not in ILLEGAL_KINDS:
        raise ValueError(f"kind must be one of {sorted(ILLEGAL_KINDS)}, not {kind!r}")
    s = legal_stream(draw, cfg, max_body=max_body, positions=False)
    insns, bb = s.insns, cfg.bus_bytes
    pick = _targets(kind, insns)
    if not pick:
        # Nothing to break that way: add an instruction to break, after a FENCE (so that
        # nothing before it can see what its fault leaves half done).
        op = {"bad_format": isa.Op.MATMUL, "bad_vop": isa.Op.VEC}.get(kind, isa.Op.LOAD_ACT)
        make = {isa.Op.MATMUL: lambda: _matmul(draw, cfg, s.layout, _State()),
                isa.Op.VEC: lambda: _vec(draw, cfg, _State()),
                isa.Op.LOAD_ACT: lambda: _load_act(draw, cfg, s.layout)}[op]
        fields = None
        while fields is None:
            fields = make()
        insns[-1:-1] = [Insn(int(isa.Op.FENCE), {}, {}), Insn(int(op), {}, fields)]
        pick = _targets(kind, insns)
    i = draw.choice(pick)
    insn = insns[i]
    f = insn.fields
    op = isa.Op(insn.op) if insn.op in set(isa.Op) else None
    n_insns = len(insns)
    if kind == "bad_opcode":
        insn.op = draw.choice([0] + list(range(max(isa.Op) + 1, 16)))
    elif kind == "bad_count":
        _break_count(draw, cfg, insn)
    elif kind == "bad_format":
        f["wfmt"] = 3
    elif kind == "bad_vop":
        bad = [v for v in range(16) if v not in set(isa.VecOp)]
        no_wide = [v for v in isa.VecOp if v not in isa.WIDE_VOPS]
        no_wide_out = [v for v in isa.VecOp if v not in isa.WIDE_OUT_VOPS]
        how = draw.int(0, 3)
        if how == 0:
            f["vop"] = draw.choice(bad)
        elif how == 1:
            f.update(vop=int(draw.choice(no_wide)), wide=1)
        elif how == 3:                        # a norm's flag on another op, or dynq
            no_beta = [v for v in isa.VecOp if v not in isa.NORM_VOPS  # with wide_out
                       and (v != isa.VecOp.ROPE or f["rows"] % 2 == 0)]
            if draw.coin(0.3):
                f.update(vop=int(draw.choice(isa.NORM_VOPS)), dynq=1, wide_out=1)
            else:
                f.update(vop=int(draw.choice(no_beta)), **{draw.choice(["beta", "dynq"]): 1})
        else:
            no_wide_out = [v for v in no_wide_out if v != isa.VecOp.ROPE or f["rows"] % 2 == 0]
            f.update(vop=int(draw.choice(no_wide_out)), wide_out=1)
    elif kind == "bad_buffer":
        _break_buffer(draw, cfg, insn)
    elif kind == "window":
        name = _dma_fields(op)[0]
        where = draw.int(0, 3)
        if where == 0 and s.base >= 64 * bb:
            f[name] = s.base - bb * draw.int(1, 8)            # below the window
        elif where == 1:                                      # past the address space
            f[name] = (1 << 32) - bb * draw.int(1, 4)
        else:                                                 # across or past its end
            f[name] = s.limit - bb * draw.int(0, 2)
            if sum(isa_model.dma_span(cfg, op, dict(_defaults(op), **f))) <= s.limit:
                f[name] = s.limit
    elif kind == "align":
        names = _dma_fields(op)
        name = draw.choice([n for n in names if n == names[0] or f.get(n)] or [names[0]])
        f[name] += draw.int(1, bb - 1)
    elif kind == "no_end":
        n_insns -= 1
    elif kind == "deadlock":
        unit = isa.OPS[op].unit
        side = draw.choice(sorted(isa.NEIGHBOURS[unit]))
        insn.flags[f"pop_{side}"] = 1
        # Take away every push that could feed it.
        for other in insns:
            for k in list(other.flags):
                if k.startswith("push"):
                    other.flags[k] = 0
    out = dataclasses.replace(s, insns=insns, n_insns=n_insns, kind=kind,
                              expect=ILLEGAL_KINDS[kind], broken=i)
    return _place(out)


# --------------------------------------------------------------------------------------
# Checking a run


def allowed_bytes(stream):
    """``(snapshots, error, error_insn)`` of the golden model on ``stream``: the memory
    before and after each instruction it retires in program order, and where it stops.

    After a fault the hardware may have cut short any instruction before the faulting
    one, so each byte must hold one of its values across the snapshots. A DMA fault
    (``DMA_WINDOW``, ``DMA_ALIGN``) is found while the instruction runs, and
    instructions after it that nothing orders after it may run beside it: they do not
    depend on it (the stream was race-free), so their effects are those of a run that
    skips the faulting instruction, whose snapshots are added; so is what a ``STORE``
    that leaves the window writes inside it (the hardware may issue its legal bursts
    before the illegal one)."""
    cfg = stream.cfg
    m = isa_model.Machine(cfg, stream.image, base=stream.base, limit=stream.limit,
                          position=stream.position)
    snaps = [m.mem.copy()]

    def raw_at(i):
        at = stream.prog_addr + i * isa.INSN_BYTES
        return m.mem[at:at + isa.INSN_BYTES].tobytes()

    def run(first):
        for i in range(first, stream.n_insns):
            raw = raw_at(i)
            error = m.execute(raw, index=i)
            if error is None:                 # skipped by its guard
                continue
            if error != isa.Error.NONE:
                return error, i, raw
            snaps.append(m.mem.copy())
            if isa.decode_op(raw)[0] == isa.Op.END:
                return isa.Error.NONE, None, raw
        return isa.Error.NO_END, stream.n_insns, None

    error, at, raw = run(0)
    if error in (isa.Error.DMA_WINDOW, isa.Error.DMA_ALIGN):
        if error == isa.Error.DMA_WINDOW and isa.decode_op(raw)[0] == isa.Op.STORE:
            wide = isa_model.Machine(cfg, m.mem, base=0, limit=len(m.mem))
            wide.acc, wide.params = m.acc.copy(), copy.deepcopy(m.params)
            if wide.execute(raw) == isa.Error.NONE:       # else it starts outside memory
                inside = m.mem.copy()
                inside[stream.base:stream.limit] = wide.mem[stream.base:stream.limit]
                snaps.append(inside)
        run(at + 1)
    return np.stack(snaps), error, at


def check(stream, image, status, timed_out):
    """The first way a run of ``stream`` broke its contract, as a message, or None.

    ``image`` is the whole memory after the run, ``status`` the status register at its
    end, ``timed_out`` whether the host's watchdog ended it. Legal: done, and the memory
    equal to the golden model's byte for byte. Illegal: exactly the expected error (a
    hang for ``deadlock``), nothing outside the window changed, and every byte inside it
    one of its values across :func:`allowed_bytes` (for ``deadlock``, whose removed
    tokens let instructions run out of order, only the window rule)."""
    from serrano.hw import regs
    image = np.asarray(image, np.uint8)
    outside = np.ones(len(image), bool)
    outside[stream.base:stream.limit] = False
    if stream.expect is None:
        if not timed_out:
            return f"a deadlocking stream ended (status {status:#x}) instead of hanging"
    elif timed_out:
        return "the accelerator hung (watchdog)"
    elif stream.expect == isa.Error.NONE:
        if status != regs.STATUS_DONE:
            return f"status {status:#x} at the end, expected done ({regs.STATUS_DONE:#x})"
    else:
        want = regs.STATUS_ERROR | int(stream.expect) << regs.STATUS_CODE_SHIFT
        if status != want:
            return f"status {status:#x}, expected {want:#x} ({stream.expect.name})"
    changed = np.flatnonzero(outside & (image != stream.image))
    if changed.size:
        return (f"{changed.size} bytes outside the window [{stream.base:#x}, "
                f"{stream.limit:#x}) changed, first {int(changed[0]):#x}")
    if stream.expect is None:
        return None
    snaps, error, _ = allowed_bytes(stream)
    if error != (stream.expect or isa.Error.NONE):
        return f"the golden model ends in {error.name}, the stream expects {stream.expect}"
    if stream.expect == isa.Error.NONE:
        bad = np.flatnonzero(image != snaps[-1])
        what = "differs from the golden model"
    else:
        bad = np.flatnonzero(~(snaps == image).any(axis=0))
        what = "holds a value no prefix of the program leaves there"
    if bad.size:
        return f"memory {what} at {bad.size} bytes, first {int(bad[0]):#x}"
    return None


def _budget(stream):
    """Clock cycles the host waits for a stream's interrupt: plenty for any legal one."""
    return 50_000 + 400 * len(stream.insns)


def run_on(backend, stream):
    """Run ``stream`` on ``backend`` (:mod:`sw.backends`, kept running across streams:
    its buffers hold the previous stream's data, which a legal stream never reads) as a
    host does: the image in, the registers, start, wait, soft reset, the image out.
    Returns ``(problem, outcome)``: :func:`check`'s verdict (None: passed; a soft reset
    that does not leave the accelerator idle is a problem too) and the
    :class:`hw.regs.Outcome`."""
    from serrano.hw import regs
    drive = dict(write=backend.write_reg, read=backend.read_reg, wait_irq=backend.wait_irq)
    backend.write_mem(0, stream.image)
    outcome = regs.drive(regs.run_program(stream.prog_addr, stream.n_insns, stream.base,
                                          stream.limit, _budget(stream), stream.position),
                         **drive)
    _, settled = regs.drive(regs.soft_reset(), **drive)
    image = backend.read_mem(0, len(stream.image))
    problem = check(stream, image, outcome.status, outcome.timed_out)
    if problem is None and settled != 0:
        problem = f"not idle after a soft reset at the end: status {settled:#x}"
    return problem, outcome


def run_rtl(stream, sim, *, mem_latency=20, write_latency=8, persistent=False):
    """Run ``stream`` on the accelerator's Verilog (:func:`sim.system.run_system`, which
    soft-resets it after the end; ``persistent``: on this process's running simulation)
    and return :func:`check`'s verdict (None: passed) and the run's result."""
    from serrano.sim.system import run_system
    budget = _budget(stream) if stream.expect is None else None
    rtl = run_system(stream.cfg, stream.image, stream.prog_addr, stream.n_insns, sim,
                     base=stream.base, limit=stream.limit, mem_latency=mem_latency,
                     write_latency=write_latency, timeout_cycles=budget,
                     soft_reset_at_end=True, persistent=persistent,
                     position=stream.position)
    problem = check(stream, rtl.image, rtl.status, rtl.timed_out)
    if problem is None and rtl.end_reset_settled != 0:
        problem = f"not idle after a soft reset at the end: status {rtl.end_reset_settled:#x}"
    return problem, rtl


def first_undefined_read(cfg, insns):
    """The index of the first instruction that reads a buffer entry no earlier one wrote
    (None: every read is of something written: the rule of a legal stream, which a
    simulator kept running across programs relies on), up to the first that cannot be
    decoded. ``insns``: :class:`Insn` objects, or ``(image, prog_addr, n_insns)``."""
    if isinstance(insns, tuple):
        image, prog_addr, n = insns
        insns = []
        for i in range(n):
            op, hdr, body = isa.decode_op(image[prog_addr + i * isa.INSN_BYTES:
                                                prog_addr + (i + 1) * isa.INSN_BYTES])
            insns.append(Insn(-1 if op is None else op,
                              {k: v for k, v in hdr.items() if k != "opcode"},
                              body))
    state = _State()
    for i, insn in enumerate(insns):
        if (insn.op not in set(isa.Op) or insn.op in (isa.Op.FENCE, isa.Op.END)
                or getattr(insn, "role", "") == "skipped"):
            continue
        try:
            reads, writes = _footprint(cfg, isa.Op(insn.op), insn.fields)
        except (KeyError, ValueError, IndexError):
            return None                       # the broken instruction: it never runs
        if not state.ok(reads):
            return i
        state.record(cfg, isa.Op(insn.op), insn.fields, writes)
    return None


def _reads_defined(cfg, insns):
    return first_undefined_read(cfg, insns) is None


def _variant(stream, insns):
    """``stream`` with the instructions ``insns`` (the broken one kept by identity), or
    None when that is no longer a stream of the same kind."""
    cfg = stream.cfg
    broken = None
    if stream.broken is not None:
        keep = stream.insns[stream.broken]
        broken = next((i for i, x in enumerate(insns) if x is keep), None)
        if broken is None:
            return None
    insns = [dataclasses.replace(x, flags=dict(x.flags), fields=dict(x.fields))
             for x in insns]                  # repair may change them
    if stream.kind == "legal":                # the dumps and fences of the new body
        body = [x for x in insns if x.role == "body" and x.op != isa.Op.END]
        insns = body + _observe(cfg, stream.layout, body) + [Insn(int(isa.Op.END), {}, {})]
    if not _reads_defined(cfg, insns):
        return None
    try:
        if stream.kind == "legal":
            repair(cfg, insns)
        elif stream.kind != "deadlock":
            head = insns[:broken] + [Insn(int(isa.Op.END), {}, {})]
            isa_model.check_races(cfg, encode(head))
    except isa_model.DependencyError:
        return None
    n_insns = len(insns) - (stream.kind == "no_end")
    if len(insns) > MAX_INSNS:
        return None
    image = stream.image.copy()
    out = _place(dataclasses.replace(stream, image=image, insns=insns, n_insns=n_insns,
                                     broken=broken))
    if stream.kind == "deadlock":
        try:
            isa_model.check_tokens(encode(insns))
            return None
        except isa_model.DeadlockError:
            return out
    _, error, at = allowed_bytes(out)
    want = (n_insns if stream.kind == "no_end" else broken)
    if error != stream.expect or (stream.kind != "legal" and at != want):
        return None
    return out


def shrink(stream, fails, budget=3000):
    """A smaller stream that still ``fails`` (a callable on a stream): delete one
    instruction at a time (never ``END`` nor the broken one), then clear one dependency
    flag at a time, keeping each change that leaves a stream of the same kind that still
    fails, until none does or ``budget`` runs were spent. Returns the smallest."""
    best, runs = stream, 0
    changed = True
    while changed and runs < budget:
        changed = False
        i = 0
        while i < len(best.insns) - 1 and runs < budget:
            if best.broken == i or (best.kind == "legal" and best.insns[i].role != "body"):
                i += 1
                continue
            cand = _variant(best, [x for j, x in enumerate(best.insns) if j != i])
            if cand is not None:
                runs += 1
                if fails(cand):
                    best, changed = cand, True
                    continue
            i += 1
        for i, insn in enumerate(best.insns):
            if best.broken == i:
                continue
            for k in [k for k, v in insn.flags.items() if v]:
                if runs >= budget or i >= len(best.insns) or best.insns[i] is not insn:
                    break
                trial = [dataclasses.replace(x, flags=dict(x.flags)) if j == i else x
                         for j, x in enumerate(best.insns)]
                trial[i].flags[k] = 0
                cand = _variant(best, trial)
                if cand is not None:
                    runs += 1
                    if fails(cand):
                        best, changed = cand, True
    return best
