"""Golden model of serrano's instruction set: runs a program image bit-exactly.

Written from the text of :mod:`hw.isa` (encoding and meaning), :mod:`sw.requant` (the
requantization arithmetic, used by import) and :mod:`sw.golden` (wrapping int32), never
from the RTL. numpy throughout; all products and sums in int64, cast as the hardware
defines.

Execution model
---------------
:func:`run_program` fetches instruction ``i`` from ``prog_addr + 32 * i`` and executes the
program **in program order**, one instruction completely before the next. The hardware
runs four units (load, exec, store, vector) concurrently, ordered only by the dependency tokens
and ``FENCE``; the two agree for every program whose tokens order each pair of
conflicting accesses as program order does. :func:`check_tokens` proves a program free of
deadlock and :func:`check_races` proves it free of such races; :func:`run_program` runs
both (``check_deps=True``) on the instructions it retired, so a result it returns is what
every schedule the tokens allow produces.

Each instruction, in order:

1. **fetch** 32 bytes at ``prog_addr + 32 * i``: an index ``i >= n_insns`` stops with
   ``NO_END``; a fetch address that is not a multiple of ``min(bus_bytes, 32)`` stops with
   ``DMA_ALIGN``, one outside ``[base, limit)`` with ``DMA_WINDOW``.
   An instruction whose ``guard`` fails at the ``position`` is skipped (fetched, not
   retired); a ``rel`` one has its position fields offset (:func:`hw.isa.at_position`)
   before anything below.
2. **dispatch checks**, before the instruction has any effect, in this order: undefined
   opcode (``BAD_OPCODE``), a zero count (``BAD_COUNT``), an undefined weight format
   (``BAD_FORMAT``), an undefined vector operation (``BAD_VOP``), buffer rows, parameter
   slots or vector tables out of range (``BAD_BUFFER``).
3. **DMA checks** of every memory access of the instruction, before any of its effects:
   an address or stride not a multiple of ``bus_bytes`` (``DMA_ALIGN``, checked first),
   then any byte outside ``[base, limit)`` (``DMA_WINDOW``). Addresses are exact
   integers: an address past ``2**addr_width`` is beyond every limit, never wrapped.
4. **effects**, as :mod:`hw.isa` states.

On an error the model stops at that instruction: earlier instructions keep their effects,
the faulting one has none and is not counted as retired (its fetch, which did happen, is
counted in ``dma_read_bytes``). The hardware may have issued the legal bursts of a
``DMA_WINDOW`` instruction before the illegal one; the model issues none. The model
fetches exactly the instructions it executes; hardware that fetches ahead in chunks may
fault (or count fetched bytes) past ``END`` or before the instruction that the model
names, when ``n_insns`` runs past ``END`` or the program ends near the window's edge.

Unspecified corners, as the model defines them
----------------------------------------------
* The buffers, the parameter slots and the vector tables start as zeros (a ``STORE``
  from a never-loaded slot yields zeros: its multiplier is 0).
* ``LOAD_PARAM`` keeps the low :data:`sw.requant.MULT_BITS` bits of each multiplier word
  and the low :data:`sw.requant.SHIFT_BITS` bits of each shift word, as registers of those
  widths do; words outside the documented ranges are outside the contract anyway.
* Where a ``LOAD_ACT`` writes one buffer row twice (``buf_row_step`` or ``buf_beat_step``
  0), or a ``STORE`` writes one byte twice (``dram_stride`` below ``C``), the later beat in
  the order of :mod:`hw.isa` wins.
* The ``pop_*``/``push_*`` flags of ``FENCE`` and ``END`` are ignored; so are the
  padding.
* A program that writes its own instructions is outside the contract (the fetch may run
  ahead of the store); the model fetches each instruction just before executing it.

Counters
--------
``instructions`` retired (``END`` included); ``macs`` ``m * k_tiles * R * C`` per
``MATMUL`` (padding counted: that is what the array does); ``array_rows``
``m * k_tiles`` per ``MATMUL``; ``dma_read_bytes`` every successful instruction fetch (32
bytes) plus what ``LOAD_ACT``, ``LOAD_PARAM`` and ``MATMUL`` (weights) read;
``dma_write_bytes`` what ``STORE`` writes to memory.
"""

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from serrano.hw import isa
from serrano.hw.config import Config

from . import q4, vector
from .golden import check_int8
from .requant import requantize, row_rescale, split_wide, MULT_MAX, SHIFT_MAX

__all__ = ["UNITS", "TOKEN_COUNTERS", "DependencyError", "DeadlockError", "RaceError",
           "Params", "Result", "Machine", "run_program", "decode_program", "check_tokens",
           "check_races", "Program", "pack_weights", "pack_params", "weight_bytes",
           "vec_offsets", "pair_product", "written_pages", "dma_span"]

#: The units, by :class:`hw.isa.Unit` number.
UNITS = tuple(u.name.lower() for u in isa.Unit)
_UNIT_OF = {op: int(spec.unit) for op, spec in isa.OPS.items() if spec.unit is not None}
#: The token counters, as ``(producer, consumer)`` unit indices (:data:`hw.isa.TOKEN_LINKS`).
TOKEN_COUNTERS = tuple((int(p), int(c)) for p, c in isa.TOKEN_LINKS)
_SYNC_OPS = (isa.Op.FENCE, isa.Op.END)
_STORE = int(isa.Unit.STORE)


def _stores_fence(op, body):
    """Whether the instruction is a ``FENCE stores`` (it waits for the store unit alone)."""
    return op == isa.Op.FENCE and bool(body.get("stores"))


def _counter_name(counter):
    return f"{UNITS[counter[0]]}->{UNITS[counter[1]]}"


def _check_nonneg_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def _check_cfg(cfg):
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a Config, not {cfg!r}")
    return cfg


def _as_image(mem, in_place=False):
    """A private uint8 copy of ``mem`` (a 1-D uint8 array or bytes-like), or ``mem``
    itself with ``in_place`` (which then must be a writable 1-D uint8 array)."""
    if isinstance(mem, (bytes, bytearray, memoryview)) and not in_place:
        return np.frombuffer(bytes(mem), dtype=np.uint8).copy()
    if not isinstance(mem, np.ndarray) or mem.dtype != np.uint8 or mem.ndim != 1:
        raise TypeError(f"mem must be a 1-D numpy uint8 array or bytes, not {mem!r}")
    return mem if in_place else mem.copy()


# --------------------------------------------------------------------------------------
# Machine state and execution


@dataclass
class Params:
    """The on-chip requantization parameter slots: row ``t`` of each array is slot ``t``
    (``param_tiles x C``)."""
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray

    @classmethod
    def zeros(cls, cfg):
        shape = (cfg.param_tiles, cfg.cols)
        return cls(np.zeros(shape, np.int32), np.zeros(shape, np.uint32),
                   np.zeros(shape, np.uint32))

    def copy(self):
        return Params(self.bias.copy(), self.mult.copy(), self.shift.copy())


@dataclass
class Result:
    """What :func:`run_program` returns. ``mem``, ``act``, ``acc`` and ``params`` are the
    final state (``rowscale``: the row-scale file's codes); ``tokens`` the token counters
    left at the end (``None`` when the dependency checks were off)."""
    mem: np.ndarray = field(repr=False)
    error: isa.Error
    error_insn: int | None
    instructions: int
    macs: int
    array_rows: int
    dma_read_bytes: int
    dma_write_bytes: int
    act: np.ndarray = field(repr=False)
    acc: np.ndarray = field(repr=False)
    params: Params = field(repr=False)
    ops: list = field(default_factory=list, repr=False)
    tokens: dict | None = None
    writes: list = field(default_factory=list, repr=False)
    rowscale: np.ndarray = field(default=None, repr=False)


class _Fault(Exception):
    def __init__(self, error):
        super().__init__(error)
        self.error = error


class Machine:
    """The architectural state of one serrano instance, and its instruction semantics.

    Parameters
    ----------
    cfg : hw.config.Config
        Geometry: ``R = cfg.rows``, ``C = cfg.cols``, ``bus_bytes``, buffer depths.
    mem : numpy.ndarray of uint8 or bytes-like
        The memory image, address 0 at index 0. The machine works on a copy, or with
        ``in_place`` on ``mem`` itself (a device memory that the machine owns).
    base, limit : int
        The DMA window ``[base, limit)``; ``limit=None`` means ``len(mem)``.

    Attributes
    ----------
    mem : (len,) uint8;  act : (act_buf_rows, R) int8;  acc : (2 * acc_buf_rows, C) int32;
    params : :class:`Params`; and the counters ``instructions``, ``macs``, ``array_rows``,
    ``dma_read_bytes``, ``dma_write_bytes``, ``ops`` (one dict per retired instruction);
    ``writes``, one ``(address, stride, rows, row_bytes)`` per ``STORE`` to memory (the
    bytes it may have changed, see :func:`written_pages`).
    """

    def __init__(self, cfg, mem, *, base=0, limit=None, in_place=False, position=0):
        self.cfg = _check_cfg(cfg)
        self.mem = _as_image(mem, in_place)
        self.base = _check_nonneg_int("base", base)
        self.position = _check_nonneg_int("position", position)
        if self.position >= 1 << 32:
            raise ValueError(f"position must fit in 32 bits, not {position}")
        if limit is None:
            limit = len(self.mem)
        if (not isinstance(limit, (int, np.integer)) or isinstance(limit, bool)
                or not self.base <= limit <= len(self.mem)):
            raise ValueError(f"limit must be None or an integer in [base, len(mem)] = "
                             f"[{self.base}, {len(self.mem)}], not {limit!r}")
        self.limit = int(limit)
        self.act = np.zeros((cfg.act_buf_rows, cfg.rows), np.int8)
        self.acc = np.zeros((2 * cfg.acc_buf_rows, cfg.cols), np.int32)
        self.params = Params.zeros(cfg)
        self.tables = np.zeros((cfg.vec_tables, isa.TABLE_ENTRIES), np.int8)
        self.rowscale = np.zeros(cfg.rowscale_slots, np.int64)   # codes, VEC DYNQ's
        self.instructions = 0
        self.macs = 0
        self.array_rows = 0
        self.dma_read_bytes = 0
        self.dma_write_bytes = 0
        self.ops = []
        self.writes = []

    # -- memory access checks

    def _align(self, *values, unit=None):
        unit = self.cfg.bus_bytes if unit is None else unit
        if any(v % unit for v in values):
            raise _Fault(isa.Error.DMA_ALIGN)

    def _window(self, first, nbytes):
        """Bytes ``[first, first + nbytes)`` must lie in ``[base, limit)``."""
        if first < self.base or first + nbytes > self.limit:
            raise _Fault(isa.Error.DMA_WINDOW)

    def fetch(self, addr):
        """The 32 bytes of the instruction at ``addr``, or raise a DMA fault."""
        self._align(addr, unit=min(self.cfg.bus_bytes, isa.INSN_BYTES))
        # A bus wider than an instruction reads the whole beat that holds it.
        beat = max(self.cfg.bus_bytes, isa.INSN_BYTES)
        self._window(addr - addr % beat, beat)
        self.dma_read_bytes += isa.INSN_BYTES
        return self.mem[addr:addr + isa.INSN_BYTES].tobytes()

    # -- one instruction

    def execute(self, raw, index=None):
        """Execute one encoded instruction at the machine's ``position``; return
        :class:`isa.Error` (``NONE`` if it retired), or ``None`` if its guard skipped it.
        A faulting instruction has no effect."""
        insn = self._at_position(raw)
        return None if insn is None else self._execute(insn[0], insn[2], index)

    def _at_position(self, raw):
        """``(op, hdr, body)`` of ``raw`` as it runs at the machine's position, or None
        (skipped by its guard)."""
        op, hdr, body = isa.decode_op(raw)
        body = isa.at_position(op, hdr, body, self.position)
        return None if body is None else (op, hdr, body)

    def _execute(self, op, body, index):
        try:
            if op is None:
                raise _Fault(isa.Error.BAD_OPCODE)
            self._dispatch_checks(op, body)
            self._dma_checks(op, body)
        except _Fault as fault:
            return fault.error
        entry = {"index": index, "op": op.name}
        entry.update(getattr(self, "_do_" + op.name.lower())(**body))
        self.instructions += 1
        self.ops.append(entry)
        return isa.Error.NONE

    def _dispatch_checks(self, op, b):
        cfg = self.cfg
        if any(b[name] == 0 for name in isa.OPS[op].counts):
            raise _Fault(isa.Error.BAD_COUNT)
        if op == isa.Op.VEC and b["vop"] == isa.VecOp.ROPE and b["rows"] % 2:
            raise _Fault(isa.Error.BAD_COUNT)
        if op == isa.Op.MATMUL and b["pair"] and b["m"] % 2:
            raise _Fault(isa.Error.BAD_COUNT)
        if op == isa.Op.MATMUL and b["wfmt"] not in set(isa.WeightFormat):
            raise _Fault(isa.Error.BAD_FORMAT)
        if op == isa.Op.VEC and (b["vop"] not in set(isa.VecOp)
                                 or (b["wide"] and b["vop"] not in isa.WIDE_VOPS)
                                 or (b["wide_out"] and b["vop"] not in isa.WIDE_OUT_VOPS)
                                 or ((b["beta"] or b["dynq"]) and b["vop"] not in isa.NORM_VOPS)
                                 or (b["dynq"] and b["wide_out"])):
            raise _Fault(isa.Error.BAD_VOP)
        acc_rows = 2 * cfg.acc_buf_rows
        if op == isa.Op.LOAD_ACT:
            ok = (b["buf_row"] + (b["rows"] - 1) * b["buf_row_step"]
                  + (b["row_beats"] - 1) * b["buf_beat_step"]) < cfg.act_buf_rows
        elif op == isa.Op.LOAD_PARAM:
            ok = b["param_tile"] + b["n_tiles"] <= cfg.param_tiles
        elif op == isa.Op.MATMUL:
            ok = ((b["act_row"] + (b["k_tiles"] - 1) * b["act_kstep"]
                   + (b["m"] - 1) * b["act_stride"]) < cfg.act_buf_rows
                  and b["acc_row"] + b["m"] <= acc_rows)
        elif op == isa.Op.STORE:
            ok = (b["acc_row"] + b["m"] <= acc_rows and b["param_tile"] < cfg.param_tiles
                  and (not b["rowscale"] or (not b["raw"]
                                             and b["scale_row"] + b["m"]
                                             <= cfg.rowscale_slots))
                  and (not b["to_buf"] or (b["buf_row"] + b["m"] <= cfg.act_buf_rows
                                           and not b["raw"]))
                  and not (b["transpose"] and (b["raw"] or b["to_buf"]))
                  and not (b["wide"] and (b["raw"] or b["transpose"]
                                          or (b["to_buf"]
                                              and b["lo_row"] + b["m"] > cfg.act_buf_rows))))
        elif op == isa.Op.VEC:
            vop, rows, table = b["vop"], cfg.act_buf_rows, b["vop"] == isa.VecOp.TABLE
            n = b["rows"] * b["count"]
            span = n if table else isa.vec_span(b["rows"], b["count"], b["stride"])
            span_b = b["rows"] if b["b_repeat"] else span
            ok = (b["a_row"] + span <= rows and b["table"] < cfg.vec_tables
                  and (table or b["stride"] == 0 or b["stride"] >= b["count"])
                  and (vop not in isa.PAIR_VOPS or b["b_row"] + span_b <= rows)
                  and (vop not in isa.NORM_VOPS
                       or b["b_row"] + isa.norm_param_rows(b["rows"], b["beta"]) <= rows)
                  and (table or b["dst_row"] + span <= rows)
                  and (not b["wide"] or b["a_lo_row"] + span <= rows)
                  and (not b["wide"] or vop not in isa.PAIR_VOPS
                       or (b["b_lo_row"] + span_b <= rows and b["dst_lo_row"] + span <= rows))
                  and (not b["wide_out"] or b["dst_lo_row"] + span <= rows)
                  and (vop != isa.VecOp.DYNQ or b["b_row"] + b["count"] <= cfg.rowscale_slots)
                  and (not b["dynq"] or b["b_lo_row"] + b["count"] <= cfg.rowscale_slots)
                  and (not table or n * cfg.rows <= isa.TABLE_ENTRIES))
        else:
            ok = True
        if not ok:
            raise _Fault(isa.Error.BAD_BUFFER)

    def _dma_checks(self, op, b):
        if op == isa.Op.LOAD_ACT or (op == isa.Op.STORE and not b["to_buf"]):
            self._align(b["dram_addr"], b["dram_stride"])
        elif op in (isa.Op.LOAD_PARAM, isa.Op.MATMUL):
            self._align(b["dram_addr" if op == isa.Op.LOAD_PARAM else "weight_addr"])
        span = dma_span(self.cfg, op, b)
        if span is not None:
            self._window(*span)

    # -- effects (called only after every check passed)

    def _do_load_act(self, dram_addr, dram_stride, rows, row_beats, buf_row, buf_row_step,
                     buf_beat_step):
        bb = self.cfg.bus_bytes
        r = np.arange(rows, dtype=np.int64)[:, None]
        b = np.arange(row_beats, dtype=np.int64)[None, :]
        src = (dram_addr + r * dram_stride + b * bb).ravel()            # r-major order
        dst = (buf_row + r * buf_row_step + b * buf_beat_step).ravel()
        beats = self.mem[src[:, None] + np.arange(bb)].view(np.int8)
        keep = _last_occurrences(dst)
        self.act[dst[keep]] = beats[keep]
        nbytes = rows * row_beats * bb
        self.dma_read_bytes += nbytes
        return {"read_bytes": nbytes}

    def _do_load_param(self, dram_addr, n_tiles, param_tile):
        c = self.cfg.cols
        set_bytes = isa.PARAM_BEATS * self.cfg.bus_bytes
        assert set_bytes == 3 * 4 * c
        nbytes = n_tiles * set_bytes
        words = self.mem[dram_addr:dram_addr + nbytes].view("<u4").reshape(n_tiles, 3, c)
        slots = slice(param_tile, param_tile + n_tiles)
        self.params.bias[slots] = words[:, 0].view("<i4")
        self.params.mult[slots] = words[:, 1] & MULT_MAX
        self.params.shift[slots] = words[:, 2] & SHIFT_MAX
        self.dma_read_bytes += nbytes
        return {"read_bytes": nbytes}

    def _do_matmul(self, weight_addr, act_row, act_stride, act_kstep, m, k_tiles, acc_row,
                   accumulate, wfmt, pair):
        R, C = self.cfg.rows, self.cfg.cols
        nbytes = weight_bytes(self.cfg, {"k_tiles": k_tiles, "wfmt": wfmt})
        raw = self.mem[weight_addr:weight_addr + nbytes]
        if wfmt in isa.BLOCK_FORMATS:
            w = q4.unpack(raw, self.cfg, k_tiles, wfmt).astype(np.float64)
        else:
            w = raw.view(np.int8).reshape(k_tiles * R, C).astype(np.float64)
        rows = (act_row + np.arange(k_tiles, dtype=np.int64)[:, None] * act_kstep
                + np.arange(m, dtype=np.int64)[None, :] * act_stride)       # (k_tiles, m)
        a = self.act[rows.T].reshape(m, k_tiles * R).astype(np.float64)     # (m, K)
        # Exact in float64 (BLAS): every product and partial sum is an integer of at most
        # 65535 * R * 2**19 < 2**53 in magnitude (a Q4 weight is below 2**12); wrapping
        # the sum once equals wrapping after every tile (both are modulo 2**32).
        out = slice(acc_row, acc_row + m)
        if pair:                                  # high halves + low halves at 1/256
            h = m // 2
            total = pair_product(a[:h], a[h:], w, R)
            out = slice(acc_row, acc_row + h)
        else:
            total = (a @ w).astype(np.int64)
        if accumulate:
            total += self.acc[out]
        self.acc[out] = _wrap_int32(total)
        macs = m * k_tiles * R * C
        self.macs += macs
        self.array_rows += m * k_tiles
        self.dma_read_bytes += nbytes
        return {"macs": macs, "array_rows": m * k_tiles, "read_bytes": nbytes}

    def _do_store(self, dram_addr, dram_stride, acc_row, m, param_tile, buf_row, to_buf,
                  relu, raw, transpose, wide, lo_row, rowscale, scale_row):
        if raw:
            y = self.acc[acc_row:acc_row + m].astype("<i4")
        else:
            p = self.params
            acc = self.acc[acc_row:acc_row + m]
            if rowscale:
                acc = row_rescale(acc, self.rowscale[scale_row:scale_row + m])
            y = requantize(acc, p.bias[param_tile],
                           p.mult[param_tile], p.shift[param_tile], bool(relu), bool(wide))
        if wide:                                  # two int8 rows per row
            hi, lo = split_wide(y)
            if to_buf:
                self.act[buf_row:buf_row + m] = hi
                self.act[lo_row:lo_row + m] = lo
                return {"write_bytes": 0}
            y = np.concatenate([hi, lo], axis=1)  # to memory: hi beat, lo beat
        if to_buf:
            self.act[buf_row:buf_row + m] = y
            return {"write_bytes": 0}
        if transpose:                # blocks of C rows, each transposed, one per stride
            C = self.cfg.cols
            nb = -(-m // C)
            blocks = np.zeros((nb * C, C), np.int8)
            blocks[:m] = y
            y = np.ascontiguousarray(blocks.reshape(nb, C, C).transpose(0, 2, 1))
            y = y.reshape(nb, C * C)
            m = nb
        row_bytes = y.itemsize * y.shape[1]
        dst = (dram_addr + np.arange(m, dtype=np.int64)[:, None] * dram_stride
               + np.arange(row_bytes)).ravel()
        val = y.view(np.uint8).ravel()
        keep = _last_occurrences(dst)
        self.mem[dst[keep]] = val[keep]
        self.writes.append((dram_addr, dram_stride, m, row_bytes))
        self.dma_write_bytes += m * row_bytes
        return {"write_bytes": m * row_bytes}

    def _do_vec(self, a_row, b_row, dst_row, rows, count, length, mul_a, mul_b, vop, shift,
                table, causal, b_repeat, stride, wide, wide_out, a_lo_row, b_lo_row,
                dst_lo_row, beta, dynq):
        n, R = rows * count, self.cfg.rows
        if vop == isa.VecOp.TABLE:
            self.tables[table, :n * R] = self.act[a_row:a_row + n].ravel()
            return {"vec_rows": n}
        off = vec_offsets(rows, count, stride)
        a = self.act[a_row + off].reshape(count, rows * R)
        b = None
        if vop in isa.PAIR_VOPS:
            b = self.act[b_row + (np.arange(rows)[None] if b_repeat else off)]
            b = b.reshape(-1, rows * R)
        if wide and vop in (isa.VecOp.ARGMAX, isa.VecOp.SOFTMAX, isa.VecOp.DYNQ):
            lo = self.act[a_lo_row + off].reshape(count, rows * R).astype(np.int64)
            a = 256 * a.astype(np.int64) + lo
        if vop == isa.VecOp.ARGMAX:
            idx = vector.argmax(a, length + causal * np.arange(count))
            rows_out = np.zeros((count, R), np.int64)
            for e in range(min(R, 8)):
                rows_out[:, e] = (idx >> (8 * e)) & 0xFF
            self.act[dst_row:dst_row + count] = rows_out.astype(np.uint8).view(np.int8)
            return {"vec_rows": n}
        if vop == isa.VecOp.DYNQ:
            y, k = vector.dynq(a, length)
            self.rowscale[b_row:b_row + count] = k
            self.act[dst_row + off] = y.reshape(count, rows, R)
            return {"vec_rows": n}
        if vop == isa.VecOp.SOFTMAX:
            y = vector.softmax(a, length + causal * np.arange(count), mul_a & 0xFFFF, shift,
                               wide_out=bool(wide_out), wide=bool(wide))
            if wide_out:
                hi, lo = split_wide(y)
                self.act[dst_row + off] = hi.reshape(count, rows, R)
                self.act[dst_lo_row + off] = lo.reshape(count, rows, R)
                return {"vec_rows": n}
        elif vop == isa.VecOp.ROPE and not wide:
            half = rows * R // 2
            y = vector.rope(a, b[:, :half], b[:, half:], mul_a, shift)
        elif vop in isa.NORM_VOPS:
            g = self.act[b_row:b_row + isa.norm_param_rows(rows, beta)]
            gain = vector.from_bytes(g[:rows], g[rows:2 * rows]).ravel()
            bias = vector.from_bytes(g[2 * rows:3 * rows], g[3 * rows:]).ravel() if beta else None
            if wide:
                lo = self.act[a_lo_row + off].reshape(count, rows * R).astype(np.int64)
                a = 256 * a.astype(np.int64) + lo
            y = vector.norm(a, gain, length, shift, rms=vop == isa.VecOp.RMSNORM,
                            wide=bool(wide), wide_out=bool(wide_out or dynq), beta=bias)
            if dynq:                                   # on through DYNQ
                y, k = vector.dynq(y, rows * R)
                self.rowscale[b_lo_row:b_lo_row + count] = k
            if wide_out:
                hi, lo = split_wide(y)
                self.act[dst_row + off] = hi.reshape(count, rows, R)
                self.act[dst_lo_row + off] = lo.reshape(count, rows, R)
                return {"vec_rows": n}
        elif vop in isa.PAIR_VOPS and wide:          # a, b and y 16-bit
            lo = self.act[b_lo_row + (np.arange(rows)[None] if b_repeat else off)]
            b = 256 * b.astype(np.int64) + lo.reshape(-1, rows * R)
            a = 256 * a.astype(np.int64) + self.act[a_lo_row + off].reshape(count, rows * R)
            if vop == isa.VecOp.ROPE:
                half = rows * R // 2
                y = vector.rope(a, b[:, :half], b[:, half:], 0, shift, wide=True)
            elif vop == isa.VecOp.ADD:
                y = vector.add(a, b, mul_a, mul_b, shift, wide=True)
            else:
                y = vector.mul(a, b, mul_a, shift, wide=True)
            hi, lo = split_wide(y)
            self.act[dst_row + off] = hi.reshape(count, rows, R)
            self.act[dst_lo_row + off] = lo.reshape(count, rows, R)
            return {"vec_rows": n}
        else:
            y = vector.apply(vop, a, b, mul_a=mul_a,
                             mul_b=mul_b, shift=shift, table=self.tables[table])
        self.act[dst_row + off] = np.asarray(y).reshape(count, rows, R)
        return {"vec_rows": n}

    def _do_fence(self, stores=0):
        return {}

    def _do_end(self):
        return {}

    # -- a whole program

    def run(self, prog_addr, n_insns):
        """Run the program; return ``(error, error_insn, retired)`` where ``retired`` is
        the list of decoded ``(op, hdr, body)`` of the retired instructions."""
        prog_addr = _check_nonneg_int("prog_addr", prog_addr)
        n_insns = _check_nonneg_int("n_insns", n_insns)
        retired = []
        for i in range(n_insns):
            try:
                raw = self.fetch(prog_addr + i * isa.INSN_BYTES)
            except _Fault as fault:
                return fault.error, i, retired
            insn = self._at_position(raw)
            if insn is None:                  # its guard skipped it
                continue
            error = self._execute(insn[0], insn[2], i)
            if error != isa.Error.NONE:
                return error, i, retired
            retired.append(insn)
            if retired[-1][0] == isa.Op.END:
                return isa.Error.NONE, None, retired
        return isa.Error.NO_END, n_insns, retired


def _wrap_int32(x):
    return (((x + (1 << 31)) & 0xFFFF_FFFF) - (1 << 31)).astype(np.int32)


def _last_occurrences(idx):
    """Positions of the last occurrence of each distinct value of ``idx``: writing only
    those makes the latest write win, whatever order numpy's scatter uses."""
    _, first_in_reversed = np.unique(idx[::-1], return_index=True)
    return len(idx) - 1 - first_in_reversed


def run_program(cfg, mem, prog_addr, n_insns, *, base=0, limit=None, check_deps=True,
                in_place=False, position=0):
    """Run the program of ``n_insns`` instructions at ``prog_addr`` on a copy of ``mem``
    (on ``mem`` itself with ``in_place``), the ``position`` register set to ``position``
    (:mod:`hw.isa`, "Position-relative instructions").

    Returns a :class:`Result`. With ``check_deps`` the retired instructions are then
    checked with :func:`check_tokens` and :func:`check_races`, which raise
    :class:`DeadlockError` or :class:`RaceError` for a program whose hardware result could
    differ from the program-order result (or never come).
    """
    machine = Machine(cfg, mem, base=base, limit=limit, in_place=in_place,
                      position=position)
    error, error_insn, retired = machine.run(prog_addr, n_insns)
    tokens = None
    if check_deps:
        tokens = check_tokens(retired)
        check_races(cfg, retired)
    return Result(mem=machine.mem, error=error, error_insn=error_insn,
                  instructions=machine.instructions, macs=machine.macs,
                  array_rows=machine.array_rows, dma_read_bytes=machine.dma_read_bytes,
                  dma_write_bytes=machine.dma_write_bytes, act=machine.act, acc=machine.acc,
                  params=machine.params, ops=machine.ops, tokens=tokens,
                  writes=machine.writes, rowscale=machine.rowscale)


def written_pages(writes, page_bytes):
    """The indices (ascending, unique) of the ``page_bytes`` pages that the memory
    writes ``writes`` (:attr:`Result.writes`: ``(address, stride, rows, row_bytes)``)
    touch."""
    out = []
    for addr, stride, rows, row_bytes in writes:
        if rows < 1 or row_bytes < 1:
            continue
        first = addr + np.arange(rows, dtype=np.int64) * stride
        lo, hi = first // page_bytes, (first + row_bytes - 1) // page_bytes
        span = int((hi - lo).max()) + 1
        pages = lo[:, None] + np.arange(span)
        out.append(pages[pages <= hi[:, None]])
    return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)


# --------------------------------------------------------------------------------------
# Dependency tokens: deadlock and race checks


class DependencyError(Exception):
    """A program whose tokens do not order it as the model assumes."""


class DeadlockError(DependencyError):
    """The program can deadlock. ``stuck`` lists the indices of the blocked instructions."""

    def __init__(self, message, stuck):
        super().__init__(message)
        self.stuck = stuck


class RaceError(DependencyError):
    """Two instructions of different units touch the same resource, at least one writes,
    and neither tokens nor a ``FENCE`` order them as program order does. ``first`` and
    ``second`` are their indices (``first < second``), ``resource`` what they share."""

    def __init__(self, message, first, second, resource):
        super().__init__(message)
        self.first, self.second, self.resource = first, second, resource


def decode_program(program, position=None):
    """The list of decoded ``(op, hdr, body)`` of ``program``, up to and including its
    first ``END``, stopping before an undefined opcode (where the machine would stop).

    ``program`` is a :class:`Program`, bytes-like of a multiple of 32 bytes, or a list of
    decoded triples or of 32-byte instructions. With ``position``, the instructions as
    they run there (:func:`hw.isa.at_position`: the guarded-out ones left out, the
    position fields offset); without, as they are encoded.
    """
    if isinstance(program, Program):
        items = list(program.insns)
    elif isinstance(program, (bytes, bytearray, memoryview, np.ndarray)):
        data = bytes(program)
        if len(data) % isa.INSN_BYTES:
            raise ValueError(f"a program is a multiple of {isa.INSN_BYTES} bytes, "
                             f"not {len(data)}")
        items = [data[i:i + isa.INSN_BYTES] for i in range(0, len(data), isa.INSN_BYTES)]
    else:
        items = list(program)
    out = []
    for item in items:
        op, hdr, body = item if isinstance(item, tuple) else isa.decode_op(item)
        if op is None:
            break
        if position is not None:
            body = isa.at_position(op, hdr, body, position)
            if body is None:
                continue
        out.append((isa.Op(op), hdr, body))
        if op == isa.Op.END:
            break
    return out


def _links(op, hdr, kind):
    u = isa.Unit(_UNIT_OF[op])
    out = []
    for side, other in isa.NEIGHBOURS[u].items():
        if hdr[f"{kind}_{side}"]:
            out.append((int(other), int(u)) if kind == "pop" else (int(u), int(other)))
    return out


def _pops(op, hdr):
    return _links(op, hdr, "pop")


def _pushes(op, hdr):
    return _links(op, hdr, "push")


def _schedule(insns, queue_depth=None):
    """Simulate dispatcher and units; return ``(clocks, dispatch_views, tokens)``.

    ``clocks[i]`` is the vector clock (one component per unit) of instruction ``i``'s
    execution, ``dispatch_views[i]`` what had surely completed when it was dispatched (the
    join at the last ``FENCE``), ``tokens`` the counters left at the end.
    """
    n = len(insns)
    queues = [deque() for _ in UNITS]
    pending = {c: deque() for c in TOKEN_COUNTERS}     # clock of each unpopped push
    unit_clock = [(0,) * len(UNITS) for _ in UNITS]
    fence_view = (0,) * len(UNITS)
    clocks, dispatch_views = [None] * n, [None] * n
    pc, turn = 0, 0
    while pc < n or any(queues):
        progress = False
        if pc < n:                                        # the in-order dispatcher
            op, hdr, _ = insns[pc]
            if _stores_fence(op, insns[pc][2]):
                # FENCE stores: the store unit's work done; the others go on with what
                # they hold, and what is dispatched after it starts after those stores.
                if not queues[_STORE]:
                    fence_view = tuple(map(max, fence_view, unit_clock[_STORE]))
                    clocks[pc] = dispatch_views[pc] = fence_view
                    pc += 1
                    progress = True
            elif op in _SYNC_OPS:
                if not any(queues):
                    fence_view = tuple(max(c) for c in zip(*unit_clock))
                    unit_clock = [fence_view] * len(UNITS)
                    clocks[pc] = dispatch_views[pc] = fence_view
                    pc += 1
                    progress = True
            else:
                u = _UNIT_OF[op]
                if queue_depth is None or len(queues[u]) < queue_depth:
                    queues[u].append(pc)
                    dispatch_views[pc] = fence_view
                    pc += 1
                    progress = True
        for k in range(len(UNITS)):                       # each unit one step, in turn
            u = (turn + k) % len(UNITS)
            if not queues[u]:
                continue
            i = queues[u][0]
            op, hdr, _ = insns[i]
            needs = _pops(op, hdr)
            if all(pending[c] for c in needs):
                clock = list(map(max, unit_clock[u], dispatch_views[i]))
                for c in needs:
                    clock = [max(x, y) for x, y in zip(clock, pending[c].popleft())]
                clock[u] += 1
                clocks[i] = unit_clock[u] = tuple(clock)
                for c in _pushes(op, hdr):
                    pending[c].append(clocks[i])
                queues[u].popleft()
                progress = True
        turn = (turn + 1) % len(UNITS)
        if not progress:
            _raise_deadlock(insns, queues, pending, pc)
    return clocks, dispatch_views, {_counter_name(c): len(q) for c, q in pending.items()}


def _raise_deadlock(insns, queues, pending, pc):
    lines, stuck = [], []
    for u, q in enumerate(queues):
        if q:
            i = q[0]
            op, hdr, _ = insns[i]
            missing = [c for c in _pops(op, hdr) if not pending[c]]
            stuck.append(i)
            lines.append(f"insn {i} {op.name} ({UNITS[u]} unit) waits for a token on "
                         + ", ".join(_counter_name(c) for c in missing)
                         + f" ({len(q) - 1} more queued behind it)")
    if pc < len(insns):
        op = insns[pc][0]
        stuck.append(pc)
        why = ("waits for the store unit to go idle" if _stores_fence(*insns[pc][::2])
               else "waits for the units to go idle" if op in _SYNC_OPS
               else f"waits for room in the {UNITS[_UNIT_OF[op]]} queue")
        lines.append(f"the dispatcher at insn {pc} {op.name} {why}")
    raise DeadlockError("program deadlocks: " + "; ".join(lines), sorted(stuck))


def check_tokens(program, *, queue_depth=None, position=None):
    """Check that ``program`` cannot deadlock on its dependency tokens.

    Simulates the in-order dispatcher (``FENCE``/``END`` wait for every unit to be
    idle) feeding the load, exec, store and vector queues (``queue_depth`` entries each, ``None``
    for unbounded), and the units, each taking its queue in order and starting an
    instruction once every token it pops is available, under a round-robin scheduler.
    Each counter has a single consumer, so whether the program completes does not depend
    on the schedule. Raises :class:`DeadlockError` naming the stuck instructions; returns
    the tokens left on each counter at the end (``{"load->exec": n, ...}``).
    ``position``: the program as it runs there (:func:`decode_program`).
    """
    if queue_depth is not None:
        if not isinstance(queue_depth, int) or queue_depth <= 0:
            raise ValueError(f"queue_depth must be None or a positive integer, "
                             f"not {queue_depth!r}")
    return _schedule(decode_program(program, position), queue_depth)[2]


def _footprint(cfg, op, b):
    """``(reads, writes, dispatch_reads)``: the resources an instruction touches, as
    ``(kind, index)`` keys. Memory is tracked per bus beat; ``dispatch_reads`` are the
    weight beats a ``MATMUL`` reads at dispatch, before its tokens."""
    bb = cfg.bus_bytes
    reads, writes, early = set(), set(), set()
    if op == isa.Op.LOAD_ACT:
        for r in range(b["rows"]):
            row = (b["dram_addr"] + r * b["dram_stride"]) // bb
            for k in range(b["row_beats"]):
                reads.add(("memory beat", row + k))
                writes.add(("act row", b["buf_row"] + r * b["buf_row_step"]
                            + k * b["buf_beat_step"]))
    elif op == isa.Op.LOAD_PARAM:
        first = b["dram_addr"] // bb
        reads.update(("memory beat", first + k)
                     for k in range(b["n_tiles"] * isa.PARAM_BEATS))
        writes.update(("param slot", b["param_tile"] + t) for t in range(b["n_tiles"]))
    elif op == isa.Op.MATMUL:
        first = b["weight_addr"] // bb
        early.update(("memory beat", first + k) for k in range(weight_bytes(cfg, b) // bb))
        for i in range(b["k_tiles"]):
            reads.update(("act row", b["act_row"] + i * b["act_kstep"] + j * b["act_stride"])
                         for j in range(b["m"]))
        rows = b["m"] // 2 if b["pair"] else b["m"]
        writes.update(("acc row", b["acc_row"] + j) for j in range(rows))
    elif op == isa.Op.STORE:
        reads.update(("acc row", b["acc_row"] + j) for j in range(b["m"]))
        reads.add(("param slot", b["param_tile"]))
        if b["rowscale"]:
            reads.update(("row scale", b["scale_row"] + j) for j in range(b["m"]))
        if b["to_buf"]:
            writes.update(("act row", b["buf_row"] + j) for j in range(b["m"]))
            if b["wide"]:
                writes.update(("act row", b["lo_row"] + j) for j in range(b["m"]))
        else:
            beats = cfg.raw_row_beats if b["raw"] else 1 + b["wide"]
            rows = b["m"]
            if b["transpose"]:
                rows, beats = _tiles(b["m"], cfg.cols), cfg.cols
            writes.update(("memory beat", (b["dram_addr"] + j * b["dram_stride"]) // bb + k)
                          for j in range(rows) for k in range(beats))
    elif op == isa.Op.VEC:
        n = b["rows"] * b["count"]
        if b["vop"] == isa.VecOp.TABLE:
            reads.update(("act row", b["a_row"] + j) for j in range(n))
            writes.add(("vector table", b["table"]))
        else:
            off = vec_offsets(b["rows"], b["count"], b["stride"])
            reads.update(("act row", int(r)) for r in (b["a_row"] + off).ravel())
            wide_pair = b["wide"] and b["vop"] in isa.PAIR_VOPS
            if b["wide"]:
                reads.update(("act row", int(r)) for r in (b["a_lo_row"] + off).ravel())
            if b["wide_out"] or wide_pair:
                writes.update(("act row", int(r)) for r in (b["dst_lo_row"] + off).ravel())
            if b["vop"] in isa.PAIR_VOPS:
                ob = np.arange(b["rows"]) if b["b_repeat"] else off
                reads.update(("act row", int(r)) for r in (b["b_row"] + ob).ravel())
                if wide_pair:
                    reads.update(("act row", int(r)) for r in (b["b_lo_row"] + ob).ravel())
            if b["vop"] in isa.NORM_VOPS:
                reads.update(("act row", b["b_row"] + j)
                             for j in range(isa.norm_param_rows(b["rows"], b["beta"])))
            if b["vop"] == isa.VecOp.LUT:
                reads.add(("vector table", b["table"]))
            if b["vop"] == isa.VecOp.DYNQ:
                writes.update(("row scale", b["b_row"] + j) for j in range(b["count"]))
            if b["vop"] in isa.NORM_VOPS and b["dynq"]:
                writes.update(("row scale", b["b_lo_row"] + j) for j in range(b["count"]))
            if b["vop"] == isa.VecOp.ARGMAX:
                writes.update(("act row", b["dst_row"] + j) for j in range(b["count"]))
            else:
                writes.update(("act row", int(r)) for r in (b["dst_row"] + off).ravel())
    return reads, writes, early


def check_races(cfg, program, position=None):
    """Check that the tokens and fences of ``program`` order every pair of conflicting
    accesses (same activation row, accumulator row, parameter slot, row-scale slot or
    memory beat, at
    least one a write, different units) as program order does, so that every legal
    schedule gives the program-order result. A ``MATMUL``'s weights count as read at its
    dispatch. Raises :class:`RaceError` for the first unordered pair (and
    :class:`DeadlockError` if the program deadlocks). ``position``: the program as it
    runs there (:func:`decode_program`)."""
    _check_cfg(cfg)
    insns = decode_program(program, position)
    clocks, dispatch_views, _ = _schedule(insns)
    last_write = {}            # key -> (insn, unit, clock component)
    readers = {}               # key -> {unit: (clock component, insn)}

    def ordered(unit, comp, view):
        return comp <= view[unit]

    def race(j, i, key, what):
        kind, index = key
        raise RaceError(f"insn {i} {insns[i][0].name} {what} {kind} {index} that insn {j} "
                        f"{insns[j][0].name} touched earlier in program order, but no token "
                        f"or FENCE orders the two", j, i, key)

    for i, (op, hdr, body) in enumerate(insns):
        if op in _SYNC_OPS:
            continue
        u = _UNIT_OF[op]
        view = clocks[i]
        reads, writes, early = _footprint(cfg, op, body)
        for key, seen in [(k, dispatch_views[i]) for k in sorted(early)] + \
                         [(k, view) for k in sorted(reads)]:
            lw = last_write.get(key)
            if lw is not None and not ordered(lw[1], lw[2], seen):
                race(lw[0], i, key, "reads")
            readers.setdefault(key, {})[u] = (view[u], i)
        for key in sorted(writes):
            lw = last_write.get(key)
            if lw is not None and not ordered(lw[1], lw[2], view):
                race(lw[0], i, key, "writes")
            for ru, (comp, j) in readers.get(key, {}).items():
                if not ordered(ru, comp, view):
                    race(j, i, key, "writes")
            last_write[key] = (i, u, view[u])
            readers[key] = {}


# --------------------------------------------------------------------------------------
# Building programs and operands


def pair_product(hi, lo, w, rows):
    """What a ``pair`` ``MATMUL`` adds to the accumulators (``hw/isa.py``): ``hi @ w``
    plus, K-tile by K-tile (``rows`` rows of ``w`` each), ``lo_t @ w_t`` rounded to
    1/256 (``(p + 128) >> 8``): a 16-bit input ``256 hi + lo`` times ``w``, divided by
    256, with 8 bits more range than the exact product would leave. Integer arrays
    ``hi``, ``lo`` ``(h, K)`` and ``w`` ``(K, N)``; returns int64 ``(h, N)`` (before
    wrapping)."""
    hi, lo, w = (np.asarray(v, np.float64) for v in (hi, lo, w))
    h, K = lo.shape
    tiles = np.einsum("mtr,trn->mtn", lo.reshape(h, K // rows, rows),
                      w.reshape(K // rows, rows, -1)).astype(np.int64)
    return (hi @ w).astype(np.int64) + ((tiles + 128) >> 8).sum(axis=1)


#: Instructions already encoded, by opcode, flags and fields: encoding is pure, and a
#: driver emits the same instructions call after call (each decode step's GEMMs).
_ENCODED = {}
_ENCODED_MAX = 1 << 16


class Program:
    """Assembles a program: each method encodes one instruction with :func:`isa.encode`,
    appends it and returns its 32 bytes. Fields are keyword-only, named as in
    :mod:`hw.isa`; ``pop_prev``, ``pop_next``, ``push_prev``, ``push_next`` are the
    dependency flags (0 by default); ``at``, a dict of :data:`hw.isa.POSITION_FIELDS`
    (``rel``, ``guard``, ``shr``, ``shl``, ``gtile``), makes the instruction
    position-relative."""

    def __init__(self):
        self.insns = []

    def _add(self, op, flags, at=None, **fields):
        if at:
            unknown = set(at) - set(isa.POSITION_FIELDS)
            if unknown:
                raise ValueError(f"at= takes {', '.join(isa.POSITION_FIELDS)}, not "
                                 f"{', '.join(sorted(unknown))}")
            flags = {**flags, **at}
        key = (op, *flags.items(), *fields.items())
        raw = _ENCODED.get(key)
        if raw is None:
            raw = isa.encode(op, **flags, **fields)
            if len(_ENCODED) >= _ENCODED_MAX:
                _ENCODED.clear()
            _ENCODED[key] = raw
        self.insns.append(raw)
        return raw

    def raw(self, data):
        """Append 32 raw bytes (for instructions the builder cannot express)."""
        data = bytes(data)
        if len(data) != isa.INSN_BYTES:
            raise ValueError(f"an instruction is {isa.INSN_BYTES} bytes, not {len(data)}")
        self.insns.append(data)
        return data

    def load_act(self, *, dram_addr, dram_stride, rows, row_beats, buf_row, buf_row_step,
                 buf_beat_step, pop_prev=0, pop_next=0, push_prev=0, push_next=0, at=None):
        return self._add(isa.Op.LOAD_ACT, _flags(pop_prev, pop_next, push_prev, push_next),
                         at,
                         dram_addr=dram_addr, dram_stride=dram_stride, rows=rows,
                         row_beats=row_beats, buf_row=buf_row, buf_row_step=buf_row_step,
                         buf_beat_step=buf_beat_step)

    def load_param(self, *, dram_addr, n_tiles, param_tile, pop_prev=0, pop_next=0,
                   push_prev=0, push_next=0, at=None):
        return self._add(isa.Op.LOAD_PARAM, _flags(pop_prev, pop_next, push_prev, push_next),
                         at,
                         dram_addr=dram_addr, n_tiles=n_tiles, param_tile=param_tile)

    def matmul(self, *, weight_addr, act_row, act_stride, act_kstep, m, k_tiles, acc_row,
               accumulate=0, wfmt=isa.WeightFormat.INT8, pair=0, pop_prev=0, pop_next=0,
               push_prev=0, push_next=0, pop_side=0, push_side=0, at=None):
        return self._add(isa.Op.MATMUL, _flags(pop_prev, pop_next, push_prev, push_next,
                                               pop_side, push_side), at,
                         weight_addr=weight_addr, act_row=act_row, act_stride=act_stride,
                         act_kstep=act_kstep, m=m, k_tiles=k_tiles, acc_row=acc_row,
                         accumulate=accumulate, wfmt=int(wfmt), pair=pair)

    def store(self, *, acc_row, m, param_tile, dram_addr=0, dram_stride=0, buf_row=0,
              to_buf=0, relu=0, raw=0, transpose=0, wide=0, lo_row=0, rowscale=0,
              scale_row=0, pop_prev=0, pop_next=0, push_prev=0, push_next=0, pop_side=0,
              push_side=0, at=None):
        return self._add(isa.Op.STORE, _flags(pop_prev, pop_next, push_prev, push_next,
                                              pop_side, push_side), at,
                         dram_addr=dram_addr, dram_stride=dram_stride, acc_row=acc_row, m=m,
                         param_tile=param_tile, buf_row=buf_row, to_buf=to_buf, relu=relu,
                         raw=raw, transpose=transpose, wide=wide, lo_row=lo_row,
                         rowscale=rowscale, scale_row=scale_row)

    def vec(self, *, vop, a_row, rows, count=1, b_row=0, dst_row=0, length=0, causal=0,
            mul_a=0, mul_b=0, shift=0, table=0, b_repeat=0, stride=0, wide=0, wide_out=0,
            a_lo_row=0, b_lo_row=0, dst_lo_row=0, beta=0, dynq=0, pop_prev=0, pop_next=0,
            push_prev=0, push_next=0, at=None):
        return self._add(isa.Op.VEC, _flags(pop_prev, pop_next, push_prev, push_next), at,
                         vop=int(vop), a_row=a_row, b_row=b_row, dst_row=dst_row, rows=rows,
                         count=count, length=length, causal=causal, mul_a=mul_a,
                         mul_b=mul_b, shift=shift, table=table, b_repeat=b_repeat,
                         stride=stride, wide=wide, wide_out=wide_out, a_lo_row=a_lo_row,
                         b_lo_row=b_lo_row, dst_lo_row=dst_lo_row, beta=beta, dynq=dynq)

    def fence(self, at=None, stores=0):
        return self._add(isa.Op.FENCE, {}, at, stores=stores)

    def end(self):
        return self._add(isa.Op.END, {})

    def __len__(self):
        return len(self.insns)

    def __bytes__(self):
        return b"".join(self.insns)

    def to_bytes(self):
        return bytes(self)

    def to_array(self):
        """The program as a uint8 array, ready to copy into a memory image."""
        return np.frombuffer(bytes(self), dtype=np.uint8).copy()


def vec_offsets(rows, count, stride):
    """:func:`hw.isa.vec_offset` of every row of ``count`` vectors: ``(count, rows)``."""
    return isa.vec_offset(np.arange(count)[:, None], np.arange(rows)[None, :], rows, stride)


def _flags(pop_prev, pop_next, push_prev, push_next, pop_side=0, push_side=0):
    return {"pop_prev": pop_prev, "pop_next": pop_next, "push_prev": push_prev,
            "push_next": push_next, "pop_side": pop_side, "push_side": push_side}


def _tiles(n, size):
    return -(-n // size)


def dma_span(cfg, op, b):
    """``(first byte, bytes to one past the last)`` of the memory an instruction with
    body ``b`` reads or writes, or None if it touches none. Strides are non-negative, so
    row 0's first byte and the last row's last byte bound every byte it touches."""
    bb = cfg.bus_bytes
    if op == isa.Op.LOAD_ACT:
        return b["dram_addr"], (b["rows"] - 1) * b["dram_stride"] + b["row_beats"] * bb
    if op == isa.Op.LOAD_PARAM:
        return b["dram_addr"], b["n_tiles"] * isa.PARAM_BEATS * bb
    if op == isa.Op.MATMUL:
        return b["weight_addr"], weight_bytes(cfg, b)
    if op == isa.Op.STORE and not b["to_buf"]:
        row_bytes = cfg.raw_row_beats * bb if b["raw"] else bb * (1 + b["wide"])
        rows = b["m"]
        if b["transpose"]:
            rows, row_bytes = _tiles(b["m"], cfg.cols), cfg.cols * bb
        return b["dram_addr"], (rows - 1) * b["dram_stride"] + row_bytes
    return None


def weight_bytes(cfg, b):
    """Bytes a ``MATMUL`` with fields ``b`` (``k_tiles``, ``wfmt``) reads as weights."""
    if b["wfmt"] in isa.BLOCK_FORMATS:
        return q4.matmul_bytes(cfg, b["k_tiles"], b["wfmt"])
    return b["k_tiles"] * cfg.rows * cfg.cols


def pack_weights(w, cfg):
    """Lay out a ``K x N`` int8 weight matrix as ``MATMUL`` reads it.

    For each N-tile ``j`` (``C`` columns), for each K-tile ``i`` (``R`` rows): the ``R x C``
    tile, row-major, zero padded. Tile ``(i, j)`` starts at byte
    ``(j * ceil(K/R) + i) * R * C``, so the ``MATMUL`` of N-tile ``j`` has
    ``weight_addr = start + j * ceil(K/R) * R * C`` and ``k_tiles = ceil(K/R)``.
    Returns a 1-D uint8 array.
    """
    _check_cfg(cfg)
    w = check_int8("w", w)
    if w.ndim != 2:
        raise ValueError(f"w must be a K x N matrix, not shape {w.shape}")
    R, C = cfg.rows, cfg.cols
    kt, nt = _tiles(w.shape[0], R), _tiles(w.shape[1], C)
    padded = np.zeros((kt * R, nt * C), np.int8)
    padded[:w.shape[0], :w.shape[1]] = w
    return padded.reshape(kt, R, nt, C).transpose(2, 0, 1, 3).ravel().view(np.uint8).copy()


def pack_params(bias, mult, shift, cfg):
    """Lay out per-channel requantization parameters as ``LOAD_PARAM`` reads them.

    For each N-tile ``j`` (``C`` channels, zero padded): ``C`` int32 biases, ``C`` uint32
    multipliers, ``C`` uint32 shifts, little-endian (:data:`hw.isa.PARAM_BEATS` beats).
    Returns a 1-D uint8 array of ``ceil(N/C) * PARAM_BEATS * bus_bytes`` bytes.
    """
    _check_cfg(cfg)
    arrays = []
    for name, v, lo, hi in (("bias", bias, -(1 << 31), (1 << 31) - 1),
                            ("mult", mult, 0, MULT_MAX), ("shift", shift, 0, SHIFT_MAX)):
        v = np.asarray(v)
        if v.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integers, not {v.dtype}")
        if v.ndim != 1:
            raise ValueError(f"{name} must be a vector, not shape {v.shape}")
        if v.size and (int(v.min()) < lo or int(v.max()) > hi):
            raise ValueError(f"{name} holds values outside [{lo}, {hi}]")
        arrays.append(v.astype(np.int64))
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"bias, mult and shift must have one length, not "
                         f"{[a.shape[0] for a in arrays]}")
    C = cfg.cols
    nt = _tiles(n, C)
    words = np.zeros((3, nt * C), np.int64)
    for k, a in enumerate(arrays):
        words[k, :n] = a
    words = words.reshape(3, nt, C).transpose(1, 0, 2)          # (tile, field, channel)
    out = (words & 0xFFFF_FFFF).astype("<u4").ravel().view(np.uint8).copy()
    assert len(out) == nt * isa.PARAM_BEATS * cfg.bus_bytes
    return out

