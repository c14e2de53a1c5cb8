"""The vector unit: ``VEC`` instructions, integer arithmetic on activation-buffer rows."""

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Signal, Mux, Value, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa, layouts
from .arith import clamp_wide, sat8, times_const, wide_high
from .dsp import Multiplier
from .fanout import copies

__all__ = ["VectorUnit", "POW2_TABLE", "RECIP_BITS", "SOFTMAX_ONE", "NORM_K"]

#: The softmax's base-2 exponential, ``round(2**15 * 2**(-f / 256))`` for ``f`` in
#: 0..255 (``sw/vector.py`` states the arithmetic; the constants are the hardware's).
POW2_TABLE = [round(2.0 ** 15 * 2.0 ** (-f / 256)) for f in range(256)]
#: The softmax's reciprocal ``r = floor(SOFTMAX_ONE * 2**RECIP_BITS / S)``.
RECIP_BITS = 24
SOFTMAX_ONE = 127
#: The normalizations' ``r = isqrt(floor(n * 2**NORM_K / V))``.
NORM_K = 56
#: Added to the mean so that the divider's numerator is positive: ``|X| <= 32896``.
MEAN_BIAS = 128 * 257


def _two_rows(b):
    """Whether the ``VEC`` body ``b`` writes two rows (high, low halves) per row."""
    V = isa.VecOp
    return ((b.wide & b.vop.matches(V.ADD, V.MUL, V.ROPE))
            | (b.wide_out & b.vop.matches(*isa.WIDE_OUT_VOPS)))


def _reads_per_row(b, out):
    """The activation-buffer reads per row of the ``VEC`` body ``b``, in its output pass
    (``out``) or another: two rows out take a cycle each."""
    V = isa.VecOp
    wide_bin = b.wide & b.vop.matches(V.ADD, V.MUL)
    two_rows = _two_rows(b)
    is_norm = b.vop.matches(V.LAYERNORM, V.RMSNORM)
    two = (is_norm & b.wide) | (b.vop.matches(V.ARGMAX, V.SOFTMAX, V.DYNQ) & b.wide)
    if out:
        two = two | ((b.vop == V.SOFTMAX) & two_rows)
    rest = Mux(b.vop == V.ROPE, Mux(b.wide, 8, 4), Mux(two, 2, 1))
    if out:                          # (a norm's beta: two more)
        rest = Mux(is_norm, Mux(b.wide, 4, 3) + Mux(b.beta, 2, 0), rest)
    return Mux(b.vop.matches(V.ADD, V.MUL), Mux(wide_bin, 4, 2), rest)


class _LaneCopies:
    """What steers one lane at one stage: ``make(name)`` gives a value's per-lane copies
    (made on first use); this lane's is ``make(name)[k]``."""

    def __init__(self, make, k):
        self._make, self._k = make, k

    def __getattr__(self, name):
        return self._make(name)[self._k]


class VectorUnit(wiring.Component):
    """Runs ``VEC`` instructions (:mod:`hw.isa`; the arithmetic is ``sw/vector.py``'s).

    Each of the ``R`` lanes handles one element of a row. For each instruction: wait for
    the ``pop_prev`` token (the store unit has written the rows) and the ``pop_next``
    token (the exec unit has read the rows this one overwrites), then walk the
    ``count`` vectors of ``rows`` rows, one after another or interleaved (``stride``:
    a vector's rows ``stride`` apart, the next vector one row on; the address counters
    step by ``stride``, the writer follows the same pattern, and ``ROPE`` first adds up
    its half offset ``h * stride`` in ``h`` cycles). A row needs one read of the
    activation buffer's second port (latency 1), two (``ADD``, ``MUL``: ``a``, ``b``;
    a 16-bit ``ADD``: four), three (a normalization's
    output pass: ``x`` and the gain's two bytes; five with ``beta``, its two bytes), four (``ROPE``: the row, its partner
    in the other half, cosine, sine) or eight (a 16-bit ``ROPE``: each of those, high
    and low halves), one read per cycle; then it passes the lane pipeline:

    * stage 2: the row's masked maximum and its first lane (a comparison tree) and its
      masked sum; the first two multipliers, ``x * y`` (``a mul_a``, ``a b``, ``a c``,
      softmax ``d mul``, normalization ``D D`` or ``D r``; 18 x 18) and ``b * v``
      (``b mul_b``, ``b s``; 17 x 17), ``ROPE`` adding the two; the table read (``LUT``);
    * stage 3: ``ADD``'s sum or ``LUT``'s entry; softmax: the exponent's rounding shift
      and the read of the lane's ``2^-f`` ROM, the running maximum (and argmax);
      normalizations: the running sum, the row's sum of ``D * D`` (a LayerNorm's
      first pass, ``mu = 0``: of ``X * X``), ``z``;
    * stage 4: ``ADD``/``LUT`` rounded and saturated (then written); softmax: ``e``;
      normalizations: the running variance sum;
    * stage 5: the softmax row's sum; the third multiplier ``u * w`` (``e r``, ``z g``,
      the ``MUL``/``ROPE`` product times ``mul_a``, skipped by the 16-bit ``MUL`` and
      ``ROPE``; 18 x 17);
    * stage 6: softmax's running sum; the rounding shifts, a norm's ``beta`` added, and
      the saturation (then written);
    * a norm with ``dynq``: its 16-bit result ``y`` times ``DYNQ_MUL[k & 1]`` (``2**15``
      or ``5 * 17 * 257``: shifts and adds), the rounding shift by ``DYNQ_SHIFT + (k >>
      1)`` and the saturation (a stage more, five more in the deep form), written as one
      int8 row; in its maximum pass (``P_M``, between the statistics and the output
      pass, no rows written) ``|y|`` through a comparison tree into the running maximum,
      whose code (``DYNQ``'s thresholds) goes to row-scale slot ``b_lo_row + i``.

    Once per vector, sequentially: a shift-in restoring divider (softmax's reciprocal
    ``floor(127 * 2**24 / S)``, 31 steps; the mean, 34; ``n * 2**56 / V``, 72) and a
    digit-by-digit square root (36 steps), ``K = cfg.vec_div_steps`` steps a cycle
    (``ceil(steps / K)`` cycles: 8, 9, 18 and 9 on ``default``; 31, 34, 72 and 36 on
    ``fpga``), the pipeline drained between passes. A LayerNorm takes its variance
    from its first pass's sums, ``V = S2 - mu (S1 + e)`` (``S1 = sum(X)``, ``S2 =
    sum(X * X)``, ``e = S1 - n mu`` from the mean division's remainder: the same ``V``
    as ``sum((X - mu)**2)``), a shift-and-add multiply of ``|mu|``'s 18 bits, ``K`` a
    cycle, so two passes a vector (a variance pass cost ``rows`` reads and a drain).

    Two caches save reads (``cfg.vec_cache_rows`` rows each; none on ``fpga``): the b
    cache keeps, from an instruction's first vector, the rows of a b that repeats
    (``ADD``/``MUL`` with ``b_repeat``) and a normalization's gains and ``beta`` (an
    entry of four rows), so later vectors
    read only a (vectors of 4 rows or more); the low-half cache keeps a 16-bit
    reduction's low halves from its vector's first pass, so its later passes read the
    high halves alone (not in an output pass that writes two rows a row).
    ``TABLE`` reads each row and writes its ``R`` entries, one per cycle, into every
    lane's copy of the table. ``ARGMAX`` writes one row per vector, the index's bytes.

    Every multiplier sits between registers. Rows leave through an 8-row FIFO to the
    activation buffer's write port, which the load and store units have before this
    one.

    The deep form (``cfg.vec_pipeline``, the ``fpga`` preset's) computes the same rows
    with a register after each carry chain, variable shift and multiplier: the read
    address and data registered (two cycles from issue to data, three for ``TABLE``'s
    entries), each stage above split into its adds, shifts and saturations, the
    multipliers :class:`hw.dsp.Multiplier` instances with their operands registered first,
    the reduction trees registered per level, and, for each stage, one copy per lane
    (:func:`hw.fanout.copies`) of the decode and per-vector values the stage reads. Its
    stage numbers are the constants ``P``, ``Q``, ``S3``, ``E``, ``V``, ``Y_EARLY`` and
    ``Y_LATE`` in :meth:`elaborate`; each pass of a vector takes about 20 more cycles
    to drain, the throughput is the same.

    Throughput: one row per cycle (``LUT``), per two (``ADD``, ``MUL``; one with b
    cached), per four (``ROPE``, 16-bit ``ADD`` and ``MUL``; two with b cached), per
    eight (16-bit ``ROPE``), while the write port is free. Per vector with ``K = 1``
    and no cache: ``SOFTMAX`` ``3 * rows + 31`` cycles, ``LAYERNORM`` ``4 * rows +
    157``, ``RMSNORM`` ``4 * rows + 108`` (with at most 13 normalizing steps; with ``K
    > 1`` the normalizing shift takes one cycle), ``ARGMAX`` ``rows + 1``, each plus
    about 7 cycles per pass to drain the pipeline. Back-pressure: a row that will be
    written is issued only with a credit (8, one per FIFO row); a credit returns as its
    row is written. ``push_prev``
    and ``push_next`` are given once the instruction's last row (or table entry) is
    written; the next instruction starts after that.

    Instructions wait in a ``QUEUE_DEPTH`` (16) entry queue, so the front end dispatches
    past a running ``VEC`` to the other units (a compiler puts a GEMM's elementwise work
    behind its ``STORE``s, a few ``VEC``s every few tiles: with 4 entries the front end
    stalled on the full queue while another sequence's norm ran, and the array waited).

    Ports
    -----
    insn : In(stream(isa.insn_layout))
    rd_addr, rd_en : Out; rd_data : In(act_row)       activation buffer read port
    wr_addr, wr_data, wr_valid : Out; wr_ready : In   activation buffer write port
    s2v_avail, e2v_avail : In; s2v_take, e2v_take, v2s_give, v2e_give : Out   tokens
    rs_addr, rs_data, rs_en : Out                     row-scale file write (``DYNQ``'s code
                                                      of vector ``i`` to slot ``b_row + i``)
    abort : In; idle : Out   idle: nothing queued, running or in flight, no pulse driven;
                             while idle and no ``insn.valid`` the state does not change
                             (the clock gate of hw/clock_gate.py relies on it)
    working, retired : Out   working: a ``VEC`` runs (its tokens taken); retired: one
                             cycle as a ``VEC`` ends (the performance counters)
    """

    FIFO_ROWS = 8
    QUEUE_DEPTH = 16         # instructions queued ahead of the running one

    def __init__(self, cfg):
        self.cfg = cfg
        aw = ceil_log2(cfg.act_buf_rows)
        row = layouts.act_row(cfg)
        super().__init__({
            "insn": In(stream.Signature(isa.insn_layout)),
            "rd_addr": Out(aw), "rd_en": Out(1), "rd_data": In(row),
            "wr_addr": Out(aw), "wr_data": Out(row), "wr_valid": Out(1), "wr_ready": In(1),
            "s2v_avail": In(1), "e2v_avail": In(1),
            "s2v_take": Out(1), "e2v_take": Out(1), "v2s_give": Out(1), "v2e_give": Out(1),
            "abort": In(1), "idle": Out(1), "working": Out(1), "retired": Out(1),
            "rs_addr": Out(ceil_log2(cfg.rowscale_slots)), "rs_data": Out(isa.ROWSCALE_BITS),
            "rs_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R = cfg.rows
        row_layout = layouts.act_row(cfg)
        aw = len(self.rd_addr)
        entries = isa.TABLE_ENTRIES
        tab_aw = ceil_log2(cfg.vec_tables * entries)
        lane_bits = ceil_log2(R + 1)

        # The instruction queue: the front end dispatches ahead while a VEC runs.
        m.submodules.queue = iq = fifo.SyncFIFOBuffered(width=isa.insn_layout.size,
                                                         depth=self.QUEUE_DEPTH)
        m.d.comb += [iq.w_data.eq(self.insn.payload), iq.w_en.eq(self.insn.valid),
                     self.insn.ready.eq(iq.w_rdy & ~self.abort)]
        cur = Signal(isa.insn_layout)
        v = cur.body.vec
        vop = Signal(isa.VecOp)
        m.d.comb += vop.eq(v.vop)
        # The instruction's decode: registers loaded with ``cur`` (from the queue's
        # output, the same cycle), so that no path starts with the op's decode logic.
        nv = data.View(isa.insn_layout, iq.r_data).body.vec
        load_decode = []

        def decoded(name, expr, shape=1):
            """A register holding ``expr`` of the instruction in ``cur``; ``expr`` is a
            function of a VEC body (``nv``, the queue's output, when loading)."""
            reg = Signal(shape, name=name)
            load_decode.append(reg.eq(expr(nv)))
            return reg

        is_lut = decoded("is_lut", lambda b: b.vop == isa.VecOp.LUT)
        is_sm = decoded("is_sm", lambda b: b.vop == isa.VecOp.SOFTMAX)
        is_ln = decoded("is_ln", lambda b: b.vop == isa.VecOp.LAYERNORM)
        is_norm = decoded("is_norm", lambda b: (b.vop == isa.VecOp.LAYERNORM)
                          | (b.vop == isa.VecOp.RMSNORM))
        is_am = decoded("is_am", lambda b: b.vop == isa.VecOp.ARGMAX)
        is_rope = decoded("is_rope", lambda b: b.vop == isa.VecOp.ROPE)
        is_add = decoded("is_add", lambda b: b.vop == isa.VecOp.ADD)
        is_dq = decoded("is_dq", lambda b: b.vop == isa.VecOp.DYNQ)
        # a normalization's bias (``beta``: its two bytes after the gains')
        has_beta = decoded("has_beta", lambda b: b.beta & b.vop.matches(*isa.NORM_VOPS))
        # a normalization into int8 per token (``dynq``: its 16-bit result through DYNQ)
        norm_dq = decoded("norm_dq", lambda b: b.dynq & b.vop.matches(*isa.NORM_VOPS))
        # ADD's and DYNQ's results are the first two products' sum (DYNQ's second zero)
        early_sum = decoded("early_sum", lambda b: b.vop.matches(isa.VecOp.ADD,
                                                                 isa.VecOp.DYNQ))
        reduce = decoded("reduce", lambda b: b.vop.matches(*isa.REDUCE_VOPS))
        # ARGMAX, SOFTMAX or DYNQ of 16-bit values: two reads a row
        am_wide = decoded("am_wide", lambda b: b.vop.matches(
            isa.VecOp.ARGMAX, isa.VecOp.SOFTMAX, isa.VecOp.DYNQ) & b.wide)
        mul_a = Signal(signed(16))
        mul_b = Signal(signed(16))
        m.d.comb += [mul_a.eq(v.mul_a.as_signed()), mul_b.eq(v.mul_b.as_signed())]

        # The pass of the rows in the pipeline (constant while they are in it). Softmax:
        # max, sum, out; normalizations: mean, variance, out; elementwise ops: out.
        # A norm into int8 per token (``dynq``): its output's maximum pass, ``P_M``,
        # between those two.
        P_A, P_B, P_OUT, P_M = 0, 1, 2, 3
        vpass = Signal(2)
        out_pass = Signal()
        norm_out = Signal()          # the norm's output computed (P_OUT, P_M)
        m.d.comb += [out_pass.eq(vpass == P_OUT), norm_out.eq(out_pass | (vpass == P_M))]

        # The lanes' lookup tables (one copy per lane, written together) and ROMs.
        t_waddr = Signal(tab_aw)
        t_wdata = Signal(8)
        t_wen = Signal()
        luts, pow2 = [], []
        for k in range(R):
            mem = memory.Memory(shape=unsigned(8), depth=cfg.vec_tables * entries, init=[])
            m.submodules[f"lut_{k}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(t_waddr), wp.data.eq(t_wdata), wp.en.eq(t_wen)]
            luts.append(mem.read_port())
            rom = memory.Memory(shape=unsigned(16), depth=256, init=POW2_TABLE)
            m.submodules[f"pow2_{k}"] = rom
            pow2.append(rom.read_port())

        # Output FIFO and credits.
        # An entry: a row and whether it is the low half of a wide ADD's row.
        m.submodules.out = out = fifo.SyncFIFOBuffered(width=8 * R + 1, depth=self.FIFO_ROWS)
        credits = Signal(range(self.FIFO_ROWS + 1), init=self.FIFO_ROWS)
        # ADD or MUL of 16-bit a and b into a 16-bit y; either (four reads a row, two
        # writes); ROPE of 16-bit x and tables (eight reads, two writes); a 16-bit result
        # (two rows out per row).
        wide_add = decoded("wide_add", lambda b: b.wide & (b.vop == isa.VecOp.ADD))
        wide_mul = decoded("wide_mul", lambda b: b.wide & (b.vop == isa.VecOp.MUL))
        wide_bin = decoded("wide_bin", lambda b: b.wide & b.vop.matches(isa.VecOp.ADD,
                                                                        isa.VecOp.MUL))
        wide_rope = decoded("wide_rope", lambda b: b.wide & (b.vop == isa.VecOp.ROPE))
        two_rows = decoded("two_rows", _two_rows)
        out_lo = Signal()
        m.d.comb += out_lo.eq(out.r_data[-1])
        out_row = Signal(aw)
        out_base = Signal(aw)        # the first row of the vector being written
        out_j = Signal(16)           # the row's number in that vector
        take_credit = Signal()
        wrote = Signal()
        # Interleaved vectors (``stride`` != 0): a vector's rows are ``stride`` apart and
        # vector ``i + 1`` starts a row after vector ``i``.
        interleaved = decoded("interleaved", lambda b: b.stride != 0)
        row_step = decoded("row_step", lambda b: Mux(b.stride != 0, b.stride, 1), 16)
        m.d.comb += [
            self.wr_valid.eq(out.r_rdy), self.wr_data.eq(out.r_data[:8 * R]),
            self.wr_addr.eq(Mux(out_lo, out_row + decoded("dst_lo_delta", lambda b:
                                                          b.dst_lo_row - b.dst_row, aw),
                                out_row)),
            out.r_en.eq(self.wr_ready),
            wrote.eq(out.r_rdy & self.wr_ready),
        ]
        m.d.sync += credits.eq(credits - Mux(take_credit, Mux(two_rows, 2, 1), 0) + wrote)
        with m.If(wrote & (~two_rows | out_lo)):
            with m.If(is_am | (out_j != decoded("rows_m1", lambda b: b.rows - 1, 16))):
                # (ARGMAX: one row per vector)
                m.d.sync += [out_row.eq(out_row + Mux(is_am, 1, row_step)),
                             out_j.eq(out_j + 1)]
            with m.Else():
                next_out = Mux(interleaved, out_base + 1, out_row + 1)
                m.d.sync += [out_row.eq(next_out), out_base.eq(next_out), out_j.eq(0)]

        # ---- The lane pipeline ------------------------------------------------------
        # ``deep`` (``cfg.vec_pipeline``): the form for the FPGA, whose stages hold at
        # most one carry chain, one variable shift or one multiplier (``hw.dsp``: the
        # DSP block's input and output registers); ``cut`` is a register of that form
        # only, ``delay`` a register of both. Stage numbers below are cycles after the
        # read data arrives (stage 1); with ``deep`` off they are the ones the class
        # docstring names.
        deep = bool(cfg.vec_pipeline)
        D = int(deep)
        L = Multiplier.latency_for(cfg.mult_pipeline) if deep else 0

        def reg_of(value, name):
            reg = Signal(Value.cast(value).shape(), name=name)
            m.d.sync += reg.eq(value)
            return reg

        def cut(value, name):
            """``value`` a cycle later in the deep form, itself in the other."""
            return reg_of(value, name) if deep else value

        def delay(value, n, name):
            """``value`` ``n`` cycles later (registers of both forms)."""
            for i in range(n):
                value = reg_of(value, f"{name}_d{i}")
            return value

        def wire(value, shape, name):
            sig = Signal(shape, name=name)
            m.d.comb += sig.eq(value)
            return sig

        # Stage 1: the read issued last cycle arrives (the deep form registers the read
        # address: two cycles). A row needs up to eight reads (``ADD``/``MUL``: a, b; a
        # normalization's output pass: x, gain low, gain high; a 16-bit ``ROPE``: x, its
        # partner, cosine, sine, high and low halves each); the earlier ones wait in
        # ``ra``, ``rb``, ...
        t0_valid, t0_last = Signal(), Signal()
        t0_ph = Signal(3)
        t0_lanes = Signal(lane_bits)                 # masked reductions: valid lanes
        t0_row = Signal(16)                          # the row's number in its vector
        t0_second = Signal()                         # ROPE: a row of the second half
        t0_cached = Signal()                         # b's rows from the cache (below)
        t0_fill = Signal()                           # b's rows into the cache
        t0_locached = Signal()                       # the low half from its cache
        t0_lofill = Signal()                         # the low half into its cache
        t_mid_valid = Const(0)       # (the deep form: a read between t0 and t1)
        if deep:                     # the address registered, the data registered
            t_mid = [reg_of(s, f"tm_{n}") for s, n in (
                (t0_valid, "valid"), (t0_last, "last"), (t0_ph, "ph"),
                (t0_lanes, "lanes"), (t0_row, "row"), (t0_second, "second"),
                (t0_cached, "cached"), (t0_fill, "fill"), (t0_locached, "locached"),
                (t0_lofill, "lofill"))]
            t_mid_valid = t_mid[0]
            (t1_valid, t1_last, t1_ph, t1_lanes, t1_row, t1_second, t1_cached,
             t1_fill, t1_locached, t1_lofill) = (reg_of(s, f"t1_{i}")
                                                 for i, s in enumerate(t_mid))
        else:
            (t1_valid, t1_last, t1_ph, t1_lanes, t1_row, t1_second, t1_cached,
             t1_fill, t1_locached, t1_lofill) = (
                t0_valid, t0_last, t0_ph, t0_lanes, t0_row, t0_second, t0_cached, t0_fill,
                t0_locached, t0_lofill)
        rd_data = cut(self.rd_data, "rd_data_q")
        held = [Signal(row_layout, name=f"r{j}") for j in range(7)]
        ra, rb, rc = held[:3]
        for j, reg in enumerate(held):
            with m.If(t1_valid & ~t1_last & (t1_ph == j)):
                m.d.sync += reg.eq(rd_data)
        wide = Signal()              # a normalization of 16-bit x: hi and lo reads
        m.d.comb += wide.eq(v.wide)

        # The b cache: an ``ADD`` or ``MUL`` whose b repeats (``b_repeat``: the same rows
        # for every vector) and a normalization's gains (its output pass) read b's rows
        # (one or two reads a row) from the buffer for the instruction's first vector
        # only, and keep them here, a row's b reads in one entry; the later vectors read
        # only a (one read a row, two if 16-bit) and take b from the cache, read with the
        # row's last read (the same latency). For vectors of ``4 <= rows <=
        # cfg.vec_cache_rows``: a row's entry is written before the next vector reads it
        # (its reads at least ``rows`` cycles later; the deep form writes an entry three
        # cycles after its read issues).
        #
        # The low-half cache: a reduction of 16-bit rows (softmax, a norm, ``DYNQ``) reads
        # each row's two halves in its vector's first pass and keeps the low half here;
        # its later passes read the high half alone (one read a row, not two) and take
        # the low half from here, read with it. Not in an output pass that writes two
        # rows a row (the write port's two cycles a row are the limit there). The
        # pipeline drains between passes, so every entry is written before it is read.
        bin_op = decoded("bin_op", lambda b: b.vop.matches(isa.VecOp.ADD, isa.VecOp.MUL))
        cache_rd, lo_rd = Signal(), Signal()
        c_addr_rd = Signal(range(max(cfg.vec_cache_rows, 2)))   # the row in its vector

        def cache(name, rows, rd_en, wr_en, wr_data):
            """A cache of ``rows`` buffer rows an entry: read at ``c_addr_rd`` with the
            row's last read (its data at stage 1 with the read's), written at stage 1
            with the row's entry. Its entry's rows."""
            mem = memory.Memory(shape=unsigned(rows * row_layout.size),
                                depth=cfg.vec_cache_rows, init=[])
            m.submodules[name] = mem
            wp, rp = mem.write_port(), mem.read_port()
            (m.d.sync if deep else m.d.comb).__iadd__([rp.addr.eq(c_addr_rd),
                                                       rp.en.eq(rd_en)])
            m.d.comb += [wp.addr.eq(t1_row), wp.en.eq(t1_valid & t1_last & wr_en),
                         wp.data.eq(wr_data)]
            q = cut(rp.data, f"{name}_q")
            return [q.word_select(i, row_layout.size) for i in range(rows)]

        if cfg.vec_cache_rows:
            cacheable = decoded("cacheable", lambda b: (
                ((b.vop.matches(isa.VecOp.ADD, isa.VecOp.MUL) & b.b_repeat)
                 | b.vop.matches(isa.VecOp.LAYERNORM, isa.VecOp.RMSNORM))
                & (b.rows >= 4) & (b.rows <= cfg.vec_cache_rows)))
            lo_ok = decoded("lo_ok", lambda b: b.wide & b.vop.matches(
                isa.VecOp.SOFTMAX, isa.VecOp.LAYERNORM, isa.VecOp.RMSNORM, isa.VecOp.DYNQ)
                & (b.rows <= cfg.vec_cache_rows))
            # A b entry is written with the row's last b read: one read (an int8 ADD or
            # MUL), two, or a norm's four (gain, beta: low and high bytes each).
            cache_e0, cache_e1, cache_e2, cache_e3 = cache("b_cache", 4, cache_rd, t1_fill, Cat(
                Mux(bin_op & ~wide, rd_data, Mux(wide, held[2], held[1])),
                Mux(has_beta, Mux(wide, held[3], held[2]), rd_data),
                Mux(wide, held[4], held[3]), rd_data))
            (lo_e,) = cache("lo_cache", 1, lo_rd, t1_lofill, rd_data)
        else:
            cacheable = lo_ok = Const(0)
            cache_e0 = cache_e1 = cache_e2 = cache_e3 = lo_e = Const(0, row_layout.size)
        # The last read of a row (reads a row, less one): one number for the output pass
        # and one for the others, decoded with the instruction.
        last_ph = Signal(3)
        # Whether this vector's rows take b from the cache (``v_first``: the
        # instruction's first vector, which fills it), or fill it.
        v_first = Signal()
        use_cache = Signal()
        cached_now, fill_now = Signal(), Signal()
        m.d.comb += [use_cache.eq(cacheable & (bin_op | norm_out)),
                     cached_now.eq(use_cache & ~v_first), fill_now.eq(use_cache & v_first)]
        # The low half: kept in the vector's first pass (an RMSNORM's is ``P_B``).
        first_pass = decoded("first_pass", lambda b: Mux(b.vop == isa.VecOp.RMSNORM,
                                                         P_B, P_A), 2)
        locached_now, lofill_now = Signal(), Signal()
        m.d.comb += [lofill_now.eq(lo_ok & (vpass == first_pass)),
                     locached_now.eq(lo_ok & (vpass != first_pass)
                                     & ~(out_pass & two_rows))]
        # A row's reads: with the low half cached, its high half, then (a norm's output
        # pass, its gains not cached) the gains' two reads (phases 2 and 3).
        # (b cached: a's reads, at least two if the row writes two rows: the output
        # FIFO takes one row a cycle)
        m.d.comb += last_ph.eq(Mux(
            locached_now, Mux(norm_out & is_norm & ~cached_now, Mux(has_beta, 5, 3), 0),
            Mux(cached_now, wide | (two_rows & out_pass),
                Mux(norm_out, decoded("last_ph_out", lambda b: _reads_per_row(b, True) - 1,
                                      3),
                    decoded("last_ph_in", lambda b: _reads_per_row(b, False) - 1, 3)))))
        s2_valid, s2_second = Signal(), Signal()
        s2_a, s2_b, s2_c, s2_d = (Signal(row_layout, name=f"s2_{n}") for n in "abcd")
        # A 16-bit ROPE's cosine and sine (high and low halves).
        s2_e, s2_f, s2_g, s2_h = (Signal(row_layout, name=f"s2_{n}") for n in "efgh")
        # A norm's beta, low and high bytes (its last two reads, or from the b cache).
        s2_blo, s2_bhi = Signal(row_layout, name="s2_blo"), Signal(row_layout, name="s2_bhi")
        s2_lanes = Signal(lane_bits)
        s2_row = Signal(16)
        m.d.sync += [s2_valid.eq(t1_valid & t1_last), s2_lanes.eq(t1_lanes),
                     s2_row.eq(t1_row), s2_second.eq(t1_second),
                     s2_a.eq(Mux(t1_ph == 0, rd_data, ra)),
                     s2_b.eq(Mux(t1_locached, lo_e,
                                 Mux(t1_cached & ~wide, cache_e0,
                                     Mux(t1_ph == 1, rd_data, rb)))),
                     s2_c.eq(Mux(t1_cached, Mux(wide, cache_e0, cache_e1),
                                 Mux(t1_ph >= 3, rc, rd_data))),
                     s2_d.eq(Mux(t1_cached & wide, cache_e1,
                                 Mux(t1_ph >= 5, held[3], rd_data))),
                     s2_e.eq(held[4]), s2_f.eq(held[5]), s2_g.eq(held[6]),
                     s2_h.eq(rd_data),
                     s2_blo.eq(Mux(t1_cached, cache_e2, Mux(wide, held[4], held[3]))),
                     s2_bhi.eq(Mux(t1_cached, cache_e3, rd_data))]
        # A row's valid bit in each stage, made as far as they are asked for.
        sv = [None, t1_valid, s2_valid]

        def valid_at(n):
            while len(sv) <= n:
                sv.append(reg_of(sv[-1], f"s{len(sv)}_valid"))
            return sv[n]

        def node(value, name):
            """A tree's node: a register of the deep form, a named wire of the other."""
            value = Value.cast(value)
            return cut(value, name) if deep else wire(value, value.shape(), name)

        def tree(values, combine, name):
            """``values`` reduced pairwise (``combine`` of two returns one), a ``cut``
            after each level: the result and the levels it took."""
            level, depth = list(values), 0
            while len(level) > 1:
                nxt = [combine(a, b) for a, b in zip(level[::2], level[1::2])]
                nxt += level[len(level) & ~1:]
                depth += 1
                level = [tuple(node(x, f"{name}_{depth}_{i}_{j}") for j, x in enumerate(t))
                         if isinstance(t, tuple) else node(t, f"{name}_{depth}_{i}")
                         for i, t in enumerate(nxt)]
            return level[0], depth * D

        table_base = decoded("table_base", lambda b: b.table << ceil_log2(entries), tab_aw)
        shift = v.shift
        half = decoded("half", lambda b: Mux(b.shift == 0, 0, (1 << b.shift) >> 1), 32)

        # Per-vector state: softmax running maximum, sum and reciprocal; normalization
        # sum, mean (1/256ths), variance sum, inverse square root (16 bits and a shift).
        mx = Signal(signed(17))                      # (17-bit: 16-bit values too)
        am_idx = Signal(32)                          # argmax: the index of ``mx``
        total = Signal(40)
        recip = Signal(16)
        xsum = Signal(signed(40))
        mu = Signal(signed(18))
        vsum = Signal(56)
        r_m = Signal(16)
        z_shr = Signal(5)            # 16 - e (e <= 16: see RNORM)
        z_half = Signal(16)          # its rounding constant, (1 << z_shr) >> 1
        late = decoded("late", lambda b: ~b.vop.matches(isa.VecOp.ADD, isa.VecOp.LUT,
                                                        isa.VecOp.DYNQ))
        # DYNQ: the vector's code (``sw/vector.py``), its multiplier and rounding shift.
        dq_k = Signal(isa.ROWSCALE_BITS)
        dq_mul = Signal(signed(18))
        dq_shift = Signal(5)
        dq_half = Signal(32)
        m.d.comb += [dq_mul.eq(Mux(dq_k[0], isa.DYNQ_MUL[1], isa.DYNQ_MUL[0])),
                     dq_shift.eq(isa.DYNQ_SHIFT + (dq_k >> 1)),
                     dq_half.eq(Const(1 << (isa.DYNQ_SHIFT - 1), 32) << (dq_k >> 1))]
        # The rounding shift of the early results (ADD's, DYNQ's).
        early_shift = Signal(5)
        early_half = Signal(32)
        m.d.comb += [early_shift.eq(Mux(is_dq, dq_shift, v.shift)),
                     early_half.eq(Mux(is_dq, dq_half, half))]

        # The stages of a row (``deep`` off: 2, 2, 3, 5, 5, 6, 5 and 7):
        P = 2 + D                    # the operands prepared from the row's reads
        Q = P + D                    # the first two multipliers' operands
        LM = L + D                   # operands registered in the fabric, then the DSP block
        S3 = Q + 1 + LM              # their products summed (``lane_p1``)
        E = S3 + 3 * D + 2           # softmax's exponential; the third multiplier's operands
        V = E + 1 + LM               # its product (``lane_prod``)
        Y_EARLY = S3 + 3 * D + 2     # ADD's and LUT's result
        Y_LATE = V + 4 * D + 1       # the other ops' result

        # What steers the lanes, one copy per lane in the deep form (``hw/fanout.py``: a
        # shift amount or a decode bit would otherwise drive hundreds of LUT inputs). A
        # copy is a cycle behind its source, which changes at least two cycles before a
        # row reaches the lanes: an instruction's decode while it waits for its tokens, a
        # vector's state (``mx``, ``mu``, ``r_m``, ``recip``, the pass) between passes,
        # with the pipeline drained.
        steer = dict(am_wide=am_wide, wide=wide, wbr=wide_bin | wide_rope, mx=mx, mu=mu,
                     is_sm=is_sm, is_norm=is_norm, norm_out=norm_out, r_m=r_m,
                     mul_a_raw=v.mul_a, mul_a=mul_a, mul_b=mul_b, is_add=is_add,
                     wide_rope=wide_rope, is_rope=is_rope, wide_mul=wide_mul, half=half,
                     shift=shift, is_lut=is_lut, wide_add=wide_add, z_half=z_half,
                     z_shr=z_shr, recip=recip, wmr=wide_mul | wide_rope, two_rows=two_rows,
                     table_base=table_base, is_dq=is_dq, dq_mul=dq_mul,
                     early_shift=early_shift, early_half=early_half, early_sum=early_sum,
                     has_beta=has_beta, dq_odd=dq_k[0], dq_shift=dq_shift, dq_half=dq_half)
        # Each stage has copies of its own (a lane's stages sit apart, beside their DSP
        # blocks and block RAMs), made as the stage first reads a value: no copy unused.
        # They live in a module of their own: made while a stage's ``If`` chain is being
        # written, their registers must not join it.
        steer_mod = Module()
        m.submodules.steer = steer_mod

        def steer_at(stage):
            if not deep:
                return [SimpleNamespace(**steer)] * R
            made = {}

            def make(name):
                if name not in made:
                    made[name] = copies(steer_mod, steer[name], R, f"lane{stage}_{name}",
                                        platform)
                return made[name]
            return [_LaneCopies(make, k) for k in range(R)]

        # Stage 2: the row's reads as the operands, and its masked maximum (a tree of
        # comparisons, ties to the lower lane) and masked sum.
        pre = []
        cl2 = steer_at(2)
        for k in range(R):
            ct = cl2[k]
            a, b, c, dd = s2_a[k], s2_b[k], s2_c[k], s2_d[k]
            ops = dict(
                ok=k < s2_lanes,
                val=wire(Mux(ct.am_wide, (a << 8) + b, a), signed(17), f"amv_{k}"),
                x16=wire(Mux(ct.wide, (a << 8) + b, a << 8), signed(17), f"x16_{k}"),
                a16=wire(Mux(ct.wbr, (a << 8) + b, a), signed(17), f"a16_{k}"),
                b16=wire(Mux(ct.wbr, (c << 8) + dd, b), signed(17),
                         f"b16_{k}"),
                cos16=wire((s2_e[k] << 8) + s2_f[k], signed(17), f"cos16_{k}"),
                sin16=wire((s2_g[k] << 8) + s2_h[k], signed(17), f"sin16_{k}"),
                gain=wire(Mux(ct.wide, (dd << 8) | c.as_unsigned(), (c << 8) | b.as_unsigned()),
                          signed(16), f"gain_{k}"),
                beta=wire(Mux(ct.has_beta, (s2_bhi[k] << 8) | s2_blo[k].as_unsigned(), 0),
                          signed(16), f"beta_{k}"),
                a=a, b=b, c=c, dd=dd)
            pre.append({n: cut(x, f"p_{n}_{k}") for n, x in ops.items()})
        # The leaves: ``val`` (DYNQ: ``|val|``), a register of the deep form.
        low = Mux(am_wide, -(1 << 16), -128)
        leaves = [node(Mux(p["ok"], Mux(cl2[k].is_dq & p["val"][-1], -p["val"], p["val"]),
                           low), f"leaf_{k}") for k, p in enumerate(pre)]
        (rmax, rlane), rdepth = tree(
            [(leaf, Const(k, range(R))) for k, leaf in enumerate(leaves)],
            lambda x, y: (Mux(y[0] > x[0], y[0], x[0]), Mux(y[0] > x[0], y[1], x[1])),
            "rmax")
        xs, xdepth = tree([Mux(p["ok"], p["x16"], 0) for p in pre], lambda x, y: x + y, "xs")
        s3_rmax = reg_of(wire(rmax, signed(17), "rmax"), "s3_rmax")
        s3_rlane = reg_of(wire(rlane, range(R), "rlane"), "s3_rlane")
        s3_xsum = reg_of(wire(xs, signed(17 + lane_bits), "xs"), "s3_xsum")
        at_max = P + D + rdepth + 1
        s3_row = delay(s2_row, at_max - 2, "row")
        # ROPE: a row of the first half takes -(b s), so b * v's operand is -v there
        second_q = delay(s2_second, Q - 2, "second")

        # The first two multipliers per lane, each at most 18 x 18, shared by the
        # operations: ``x * y`` and ``b * v`` (ADD: a mul_a and b mul_b; MUL: a b; ROPE:
        # a c -+ b s; softmax: d mul; normalizations: D D or D r).
        lane_p1, lane_p2, lane_g3, lane_ok3, lane_b3 = [], [], [], [], []
        cl3 = steer_at(3)
        for k, p in enumerate(pre):
            c = cl3[k]
            d = cut(wire(c.mx - p["val"], 17, f"d_{k}"), f"dq_{k}")      # softmax: max - x
            dev = cut(wire(p["x16"] - c.mu, signed(18), f"dev_{k}"), f"devq_{k}")
            q = {n: cut(x, f"q_{n}_{k}") for n, x in p.items()}
            rv = wire(Mux(c.wide_rope, p["sin16"], p["dd"]), signed(17), f"rv_{k}")
            nrv = cut(wire(-rv, signed(17), f"nrv_{k}"), f"nrvq_{k}")
            rv = cut(rv, f"rvq_{k}")
            m.d.comb += [luts[k].addr.eq(c.table_base
                                         | delay(p["a"], S3 - 1 - P - D, f"lut_a_{k}")
                                         .as_unsigned()),
                         luts[k].en.eq(1)]
            x_op = Signal(signed(18), name=f"xop_{k}")
            y_op = Signal(signed(18), name=f"yop_{k}")
            v_op = Signal(signed(17), name=f"vop_{k}")
            with m.If(c.is_sm):
                m.d.comb += [x_op.eq(d), y_op.eq(c.mul_a_raw)]
            with m.Elif(c.is_norm):
                m.d.comb += [x_op.eq(dev), y_op.eq(Mux(c.norm_out, c.r_m, dev))]
            with m.Elif(c.is_add):
                m.d.comb += [x_op.eq(q["a16"]), y_op.eq(c.mul_a)]
            with m.Elif(c.is_dq):                      # DYNQ: x / sigma as x * mul
                m.d.comb += [x_op.eq(q["val"]), y_op.eq(c.dq_mul)]
            with m.Elif(c.wide_rope):
                m.d.comb += [x_op.eq(q["a16"]), y_op.eq(q["cos16"])]
            with m.Elif(c.is_rope):
                m.d.comb += [x_op.eq(q["a"]), y_op.eq(q["c"])]
            with m.Else():                             # MUL: a b (16-bit: a16 b16)
                m.d.comb += [x_op.eq(Mux(c.wide_mul, q["a16"], q["a"])),
                             y_op.eq(Mux(c.wide_mul, q["b16"], q["b"]))]
            m.d.comb += v_op.eq(Mux(c.is_rope, Mux(second_q, rv, nrv),
                                    Mux(c.is_dq, 0, c.mul_b)))
            xy = Signal(signed(36), name=f"xy_{k}")
            bv = Signal(signed(34), name=f"bv_{k}")
            if deep:
                mxy = m.submodules[f"mul_xy_{k}"] = Multiplier(18, 18,
                                                              pipeline=cfg.mult_pipeline)
                mbv = m.submodules[f"mul_bv_{k}"] = Multiplier(17, 17,
                                                              pipeline=cfg.mult_pipeline)
                m.d.comb += [mxy.a.eq(reg_of(x_op, f"xop_q_{k}")),
                             mxy.b.eq(reg_of(y_op, f"yop_q_{k}")),
                             mbv.a.eq(reg_of(q["b16"], f"b16_q_{k}")),
                             mbv.b.eq(reg_of(v_op, f"vop_q_{k}")), xy.eq(mxy.p), bv.eq(mbv.p)]
            else:
                m.d.comb += [xy.eq(x_op * y_op), bv.eq(q["b16"] * v_op)]
            lane_p2.append(reg_of(bv, f"p2_{k}"))
            lane_p1.append(reg_of(xy + Mux(c.is_rope, bv, 0), f"p1_{k}"))
            lane_g3.append(delay(q["gain"], S3 - Q, f"g3_{k}"))
            lane_b3.append(delay(q["beta"], S3 - Q, f"b3_{k}"))
            lane_ok3.append(delay(q["ok"], S3 - Q, f"ok3_{k}"))
        # The running maximum and its index.
        take = Signal()
        m.d.comb += take.eq(valid_at(at_max) & (is_sm | is_am | is_dq) & (vpass == P_A)
                            & (s3_rmax > mx))
        with m.If(take):
            m.d.sync += mx.eq(s3_rmax)
        # The index follows a cycle later in the deep form (the enable then drives the
        # maximum alone); its registers sit outside the condition. ``take_q``'s row is
        # still in the pipeline (``valid_at(at_max + 1)``), so ``in_pipe`` covers it.
        take_q = cut(take, "take_q")
        idx_q = cut((s3_row << ceil_log2(R)) | s3_rlane, "am_idx_next")
        with m.If(take_q):
            m.d.sync += am_idx.eq(idx_q)
        with m.If(valid_at(P + xdepth + 1) & is_norm & (vpass == P_A)):
            m.d.sync += xsum.eq(xsum + s3_xsum)

        # Stage 3: the sum (ADD) or the table entry (LUT); softmax: the exponent's
        # rounding shift, the read of the lane's ``2^-f`` ROM; normalizations: the row's
        # sum of ``D * D``, ``z``. Then ADD and LUT are rounded and saturated (stage 4);
        # softmax's ``e`` (stage 4) and the third multiplier's operands (stage 5).
        s5_y = Signal(row_layout)
        s5_lo = Signal(row_layout)
        lane_e, lane_m5, lane_n5, lane_w5, lane_b5 = [], [], [], [], []
        cl4 = steer_at(4)
        for k in range(R):
            c = cl4[k]
            p1, p2 = lane_p1[k], lane_p2[k]
            # softmax: the exponent, ``t``'s high bits a shift and its low byte a ROM read
            tsum = cut(p1[:34].as_unsigned() + c.half, f"tsum_{k}")
            t = cut(wire(tsum >> c.shift, unsigned(34), f"t_{k}"), f"tq_{k}")
            m.d.comb += [pow2[k].addr.eq(t[:8]), pow2[k].en.eq(1)]
            kexp = reg_of(t[8:], f"kexp_{k}")
            ok4 = delay(lane_ok3[k], 2 * D + 1, f"ok4_{k}")
            rom = cut(pow2[k].data, f"rom_{k}")
            kexp, ok4 = cut(kexp, f"kexpq_{k}"), cut(ok4, f"ok4q_{k}")
            lane_e.append(reg_of(wire(Mux(ok4 & (kexp < 16), rom >> kexp[:4], 0), 16,
                                      f"e_{k}"), f"lane_e_{k}"))
            # ADD: a + b (rounded, saturated); LUT: the entry, as it is
            entry_k = cut(luts[k].data, f"lut_q_{k}").as_signed()
            total_k = reg_of(wire(Mux(c.early_sum, p1 + p2, entry_k), signed(34),
                                  f"sum_{k}"), f"lane_sum_{k}")
            rsum = cut(total_k + c.early_half, f"rsum_{k}")
            rounded = cut(wire(rsum >> c.early_shift, signed(34), f"rounded_{k}"),
                          f"roundedq_{k}")
            q16 = cut(wire(clamp_wide(rounded), signed(16), f"q16_{k}"), f"q16q_{k}")
            sat = cut(wire(sat8(rounded), signed(8), f"sat_{k}"), f"satq_{k}")
            entry = delay(total_k, 3 * D, f"entry_{k}")[:8]
            m.d.sync += s5_lo[k].eq(q16[:8])
            with m.If(c.wide_add):
                m.d.sync += s5_y[k].eq(wide_high(q16))
            with m.Else():
                m.d.sync += s5_y[k].eq(Mux(c.is_lut, entry, sat))
            # normalizations: z = D * r_t / 2**(16 - e), saturated to 18 bits
            zsum = cut(p1 + c.z_half, f"zsum_{k}")
            zw = cut(wire(zsum >> c.z_shr, signed(37), f"zw_{k}"), f"zwq_{k}")
            z = cut(wire(Mux(zw > (1 << 17) - 1, (1 << 17) - 1,
                             Mux(zw < -(1 << 17), -(1 << 17), zw[:18])), signed(18),
                         f"z_{k}"), f"zq_{k}")
            p1z = delay(p1, 3 * D, f"p1z_{k}")
            g3z = delay(lane_g3[k], 3 * D, f"g3z_{k}")
            # The third multiplier's operands: z and the gain, or the MUL/ROPE product
            # and mul_a; a 16-bit MUL's or ROPE's result skips it.
            m4 = reg_of(wire(Mux(c.is_norm, z, p1z[:17].as_signed()), signed(18), f"m_{k}"),
                        f"m4_{k}")
            n4 = reg_of(wire(Mux(c.is_norm, g3z, c.mul_a), signed(17), f"n_{k}"), f"n4_{k}")
            w4 = reg_of(wire(p1z, signed(35), f"w_{k}"), f"w4_{k}")
            lane_m5.append(reg_of(m4, f"m5_{k}"))
            lane_n5.append(reg_of(n4, f"n5_{k}"))
            lane_w5.append(reg_of(w4, f"w5_{k}"))
            lane_b5.append(delay(lane_b3[k], 3 * D + 2, f"b5_{k}"))     # (beside n5)
        vs, vdepth = tree([Mux(lane_ok3[k], lane_p1[k].as_unsigned(), 0) for k in range(R)],
                          lambda x, y: x + y, "vs")
        s4_vsum = reg_of(wire(vs, 40 + lane_bits, "vs"), "s4_vsum")
        # The row's sum of ``D * D``: a LayerNorm's first pass has ``mu = 0``, so its
        # lanes square ``X`` there (the variance follows from the two sums, below).
        with m.If(valid_at(S3 + vdepth + 1) & is_norm
                  & ((vpass == P_B) | (is_ln & (vpass == P_A)))):
            m.d.sync += vsum.eq(vsum + s4_vsum)

        # Stage 5: the softmax row's sum, and the third multiplier: e * r (softmax),
        # z * gain (normalizations), product * mul_a (MUL, ROPE).
        lane_prod, lane_bprod = [], []
        cl5 = steer_at(5)
        for k in range(R):
            c = cl5[k]
            u_op = Signal(signed(18), name=f"uop_{k}")
            w_op = Signal(signed(17), name=f"wop_{k}")
            m.d.comb += [u_op.eq(Mux(c.is_sm, lane_e[k], lane_m5[k])),
                         w_op.eq(Mux(c.is_sm, c.recip, lane_n5[k]))]
            uw = Signal(signed(35), name=f"uw_{k}")
            if deep:
                muw = m.submodules[f"mul_uw_{k}"] = Multiplier(18, 17,
                                                              pipeline=cfg.mult_pipeline)
                m.d.comb += [muw.a.eq(reg_of(u_op, f"uop_q_{k}")),
                             muw.b.eq(reg_of(w_op, f"wop_q_{k}")), uw.eq(muw.p)]
            else:
                m.d.comb += uw.eq(u_op * w_op)
            skip = delay(lane_w5[k], LM, f"skip_{k}")
            lane_prod.append(reg_of(wire(Mux(c.wmr, skip, uw), signed(36),
                                         f"prod_{k}"), f"lane_prod_{k}"))
            lane_bprod.append(delay(lane_b5[k], LM + 1, f"bprod_{k}"))
        rsum, sdepth = tree(lane_e, lambda x, y: x + y, "rsum")
        s6_rsum = reg_of(wire(rsum, 40, "rsum"), "s6_rsum")
        with m.If(valid_at(E + sdepth + 1) & is_sm & (vpass == P_B)):
            m.d.sync += total.eq(total + s6_rsum)

        # Stage 6: the rounding shifts and the saturation.
        s7_y = Signal(row_layout)
        s7_lo = Signal(row_layout)
        s_dq = Signal(row_layout)        # a norm through DYNQ: its int8 row
        nq_leaves = []                   # ... and its 16-bit results' |y| (P_M)
        cl6 = steer_at(6)
        for k in range(R):
            c = cl6[k]
            prod = lane_prod[k]
            ok6 = delay(lane_ok3[k], V - S3 + 4 * D, f"ok6_{k}")
            nsum = cut(prod + c.half, f"nsum_{k}")
            ny = cut(wire(nsum >> c.shift, signed(36), f"ny_{k}"), f"nyq_{k}")
            # a norm's beta, added to the rounded value (0 without it)
            ny = cut(wire(ny + delay(lane_bprod[k], 2 * D, f"bny_{k}"), signed(37),
                          f"nyb_{k}"), f"nybq_{k}")
            sat = cut(wire(sat8(ny), signed(8), f"nsat_{k}"), f"nsatq_{k}")
            n16 = cut(wire(clamp_wide(ny), signed(16), f"n16_{k}"), f"n16q_{k}")
            # softmax, wide_out: 256 hi + lo; softmax: the int8 probability
            sm16 = delay(wire((cut(prod + (1 << (RECIP_BITS - 9)), f"smsum_{k}")
                               >> (RECIP_BITS - 8)), signed(20), f"sm16_{k}"), 3 * D,
                         f"sm16q_{k}")
            sm8 = delay(wire((cut(prod + (1 << (RECIP_BITS - 1)), f"sm8sum_{k}")
                              >> RECIP_BITS), signed(13), f"sm8_{k}"), 3 * D, f"sm8q_{k}")
            m.d.sync += s7_lo[k].eq(Mux(c.is_sm, sm16[:8],
                                        Mux(ok6 | ~c.is_norm, n16[:8], 0)))
            with m.If(c.is_sm & c.two_rows):
                m.d.sync += s7_y[k].eq(wide_high(sm16))
            with m.Elif(c.is_sm):
                m.d.sync += s7_y[k].eq(sm8)
            with m.Elif(c.is_norm & c.two_rows):
                m.d.sync += s7_y[k].eq(Mux(ok6, wide_high(n16), 0))
            with m.Elif(c.is_norm):
                m.d.sync += s7_y[k].eq(Mux(ok6, sat, 0))
            with m.Elif(c.wmr):
                m.d.sync += s7_y[k].eq(wide_high(n16))
            with m.Else():
                m.d.sync += s7_y[k].eq(sat)
            # A norm through DYNQ (``norm_dq``): the 16-bit result ``y`` (0 past the
            # vector's length) times DYNQ_MUL[k & 1] (``2**15``, or ``21845 = 5 * 17 *
            # 257``: shifts and three adds), rounded by ``DYNQ_SHIFT + (k >> 1)``,
            # saturated; in its maximum pass, ``|y|`` into the row's maximum.
            yk = wire(Mux(ok6, n16, 0), signed(16), f"yk_{k}")
            nq_leaves.append(node(Mux(yk[-1], -yk, yk), f"nq_leaf_{k}"))
            y5 = cut(wire(yk + (yk << 2), signed(19), f"y5_{k}"), f"y5q_{k}")
            y85 = cut(wire(y5 + (y5 << 4), signed(23), f"y85_{k}"), f"y85q_{k}")
            dprod = reg_of(wire(Mux(c.dq_odd, y85 + (y85 << 8), delay(yk, 2 * D, f"yk_d_{k}")
                                    << isa.DYNQ_SHIFT), signed(32), f"dprod_{k}"),
                           f"dprodq_{k}")
            dsum = cut(wire(dprod + c.dq_half, signed(33), f"dsum_{k}"), f"dsumq_{k}")
            dsh = cut(wire(dsum >> c.dq_shift, signed(33), f"dsh_{k}"), f"dshq_{k}")
            m.d.sync += s_dq[k].eq(sat8(dsh))
        Y_DQ = Y_LATE + 1 + 4 * D         # the norm through DYNQ's result (``s_dq``)
        assert isa.DYNQ_MUL == (1 << isa.DYNQ_SHIFT, 5 * 17 * 257)
        nqmax, nqdepth = tree(nq_leaves, lambda x, y: Mux(y > x, y, x), "nqmax")
        s_nqmax = reg_of(wire(nqmax, 16, "nqmax"), "s_nqmax")
        with m.If(valid_at(Y_LATE + D + nqdepth) & norm_dq & (vpass == P_M)
                  & (s_nqmax > mx)):
            m.d.sync += mx.eq(s_nqmax)

        # The results into the output FIFO (a 16-bit result: its low half a cycle later).
        y_early, y_late = valid_at(Y_EARLY), valid_at(Y_LATE)
        s6_lo = reg_of(s5_lo, "s6_lo")
        s6_lo_valid = reg_of(y_early & wide_add, "s6_lo_valid")
        s8_lo = reg_of(s7_lo, "s8_lo")
        s8_lo_valid = reg_of(y_late & out_pass & two_rows, "s8_lo_valid")
        arg_write = Signal()
        with m.If(is_am):
            m.d.comb += [out.w_data.eq(am_idx), out.w_en.eq(arg_write)]
        with m.Elif(norm_dq):
            m.d.comb += [out.w_data.eq(Cat(s_dq, 0)), out.w_en.eq(valid_at(Y_DQ) & out_pass)]
        with m.Elif(late):
            m.d.comb += [out.w_data.eq(Mux(s8_lo_valid, Cat(s8_lo, 1), s7_y)),
                         out.w_en.eq((y_late & out_pass) | s8_lo_valid)]
        with m.Else():
            m.d.comb += [out.w_data.eq(Mux(s6_lo_valid, Cat(s6_lo, 1), s5_y)),
                         out.w_en.eq((y_early & out_pass) | s6_lo_valid)]
        in_pipe = Signal()
        m.d.comb += in_pipe.eq(Cat(t0_valid, t_mid_valid, *sv[1:], s6_lo_valid,
                                   s8_lo_valid).any())


        # ---- The issuer ---------------------------------------------------------------
        i_left = Signal(16)          # rows of this vector still to read (this pass)
        v_left = Signal(16)          # vectors still to start, after this one
        a_addr, b_addr, c_addr = Signal(aw), Signal(aw), Signal(aw)
        d_addr, e_addr = Signal(aw), Signal(aw)      # a norm's beta: low, high bytes
        v_base = Signal(aw)          # the vector's first row
        b_base = Signal(aw)          # its partner's first row
        half_off = Signal(aw)        # ROPE: from a row to its partner, h * row_step
        lo_delta = Signal(aw)        # wide: from a row's high half to its low half
        m.d.comb += lo_delta.eq(decoded("lo_delta", lambda b: b.a_lo_row - b.a_row, aw))
        b_lo_delta = decoded("b_lo_delta", lambda b: b.b_lo_row - b.b_row, aw)
        # The read port's address and enable: registered in the deep form (the read
        # data then arrives two cycles after the issue, ``t0`` before ``t1``).
        rd_addr, rd_en = Signal(aw), Signal()
        (m.d.sync if deep else m.d.comb).__iadd__(
            [self.rd_addr.eq(rd_addr), self.rd_en.eq(rd_en)])
        # Whether rows are still in flight, as the state machine waits on it: in the
        # deep form registered (with the read issued this cycle, so that a pass's last
        # read counts from its issue), the state machine's wait one cycle longer.
        busy = Signal()
        m.d.comb += busy.eq(reg_of(in_pipe | rd_en, "busy_q") if deep else in_pipe)
        h_left = Signal(15)
        v_len = Signal(17)           # reductions: this vector's valid elements
        rem = Signal(17)             # reductions: valid elements from the next read on
        ph = Signal(3)               # which read of the row is next
        t_entry = Signal(range(R))   # TABLE: the entry of the row being written
        t_row = Signal(row_layout)
        t_index = Signal(range(entries + 1))
        give = Signal()
        m.d.sync += [t0_valid.eq(0), t0_last.eq(0)]
        m.d.comb += [t_wdata.eq(t_row.as_value().word_select(t_entry, 8)),
                     t_waddr.eq(table_base | t_index)]
        lanes_now = Signal(lane_bits)
        m.d.comb += lanes_now.eq(Mux(rem >= R, R, rem))
        # The row's number in its vector, and the rotary embedding's addresses.
        row_no = Signal(16)
        rows_half = Signal(15)
        second = Signal()
        # second half: row_no >= rows_half, i.e. i_left <= rows - rows_half
        rows_up = decoded("rows_up", lambda b: b.rows - (b.rows >> 1), 16)
        m.d.comb += [row_no.eq(v.rows - i_left), rows_half.eq(v.rows >> 1),
                     second.eq(i_left <= rows_up)]
        rope_addr = Signal(aw)
        rope_hi = Signal(aw)         # the row's high half (16-bit ROPE: two reads each)
        rope_sel = Signal(2)         # x, its partner, cos, sin
        b_half = Signal(aw)          # the same in b (contiguous when it repeats)
        m.d.comb += [b_half.eq(Mux(v.b_repeat, rows_half, half_off)),
                     rope_sel.eq(Mux(wide_rope, ph[1:], ph[:2]))]
        with m.Switch(rope_sel):
            with m.Case(0):      # x (16-bit: its low half next)
                m.d.comb += rope_hi.eq(a_addr)
            with m.Case(1):      # the partner element, in the other half
                m.d.comb += rope_hi.eq(Mux(second, a_addr - half_off, a_addr + half_off))
            with m.Case(2):      # cos, row jm of b
                m.d.comb += rope_hi.eq(Mux(second, b_addr - b_half, b_addr))
            with m.Default():    # sin, row h + jm of b
                m.d.comb += rope_hi.eq(Mux(second, b_addr, b_addr + b_half))
        m.d.comb += rope_addr.eq(rope_hi + Mux(wide_rope & ph[0],
                                               Mux(rope_sel[1], b_lo_delta,
                                                   lo_delta), 0))
        # The deep form reads a row's addresses after its first from registers computed
        # from the counters a cycle ahead: a_addr, b_addr and half_off change only as a
        # row's last read issues (or before its pass), and a row's first read takes
        # a_addr itself. Reads: ph 1 a's low half or the partner, and so on (below).
        a_lo, b_lo = a_addr + lo_delta, b_addr + b_lo_delta
        if deep:
            def areg(expr, name):
                return reg_of(wire(expr, aw, f"{name}_next"), name)
            partner = areg(Mux(second, a_addr - half_off, a_addr + half_off), "at_partner")
            cos_at = areg(Mux(second, b_addr - b_half, b_addr), "at_cos")
            sin_at = areg(Mux(second, b_addr, b_addr + b_half), "at_sin")
            a_lo, b_lo = areg(a_lo, "at_a_lo"), areg(b_lo, "at_b_lo")
            at = [a_addr, a_lo, partner, areg(partner + lo_delta, "at_partner_lo"),
                  cos_at, areg(cos_at + b_lo_delta, "at_cos_lo"),
                  sin_at, areg(sin_at + b_lo_delta, "at_sin_lo")]
            rope_addr = Signal(aw, name="rope_addr_deep")
            with m.Switch(Cat(ph, wide_rope)):
                for i, addr in enumerate([a_addr, partner, cos_at, sin_at]):
                    with m.Case(i):                       # x, partner, cos, sin
                        m.d.comb += rope_addr.eq(addr)
                for i, addr in enumerate(at):             # each with its low half
                    with m.Case(8 + i):
                        m.d.comb += rope_addr.eq(addr)
                with m.Default():
                    m.d.comb += rope_addr.eq(a_addr)

        # Sequential arithmetic, once per vector: a shift-in non-restoring divider
        # (softmax's reciprocal, the mean, n * 2**56 / V) and a digit-by-digit square
        # root. Non-restoring: the partial remainder may go negative (it is then the
        # restoring divider's minus the divisor), and its sign, a register, says
        # whether the next step adds or subtracts the divisor, so a step is one adder
        # and no comparison; the quotient bits (the new remainder's sign) are the
        # restoring divider's, bit for bit.
        # ``K = cfg.vec_div_steps`` of these steps a cycle, chained: after each cycle the
        # registers hold what they would after K cycles of one step.
        DW = 72
        K = cfg.vec_div_steps
        dv_num = Signal(DW)
        dv_den = Signal(56)
        dv_nden = Signal(signed(58))             # -den
        dv_rem = Signal(signed(58))
        dv_q = Signal(DW)
        dv_cnt = Signal(range(DW + 1))           # cycles left
        d_rem, q_bits = dv_rem, []
        for j in range(K):
            trial = Signal(signed(59), name=f"dv_trial{j}")
            nxt = Signal(signed(59), name=f"dv_next{j}")
            m.d.comb += [trial.eq((d_rem << 1) | dv_num[DW - 1 - j]),
                         nxt.eq(trial + Mux(d_rem[-1], dv_den, dv_nden))]
            q_bits.append(~nxt[-1])
            d_rem = Signal(signed(58), name=f"dv_rem{j + 1}")
            m.d.comb += d_rem.eq(nxt)
        dv_rem_next, dv_q_bits = d_rem, Cat(*reversed(q_bits))
        sq_rem = Signal(40)
        sq_res = Signal(37)
        s_rem, s_res = sq_rem, sq_res
        for j in range(K):
            trial = Signal(40, name=f"sq_trial{j}")
            nxt = Signal(40, name=f"sq_next{j}")
            m.d.comb += [nxt.eq((s_rem << 2) | dv_q[DW - 2 - 2 * j:DW - 2 * j]),
                         trial.eq((s_res << 2) | 1)]
            ge = nxt >= trial
            new_rem = Signal(40, name=f"sq_rem{j + 1}")
            new_res = Signal(37, name=f"sq_res{j + 1}")
            m.d.comb += [new_rem.eq(Mux(ge, nxt - trial, nxt)), new_res.eq(Cat(ge, s_res))]
            s_rem, s_res = new_rem, new_res
        sq_rem_next, sq_res_next = s_rem, s_res
        # A LayerNorm's variance from its first pass's sums: ``V = S2 - mu (S1 + e)``
        # with ``S1 = sum(X)``, ``S2 = sum(X * X)`` and ``e = S1 - n mu``, which the
        # mean's division leaves in its remainder (``2 e = R - n``); the product ``|mu|
        # (s (S1 + e))`` shift and add, K multiplier bits a cycle.
        MB = 18                                  # |mu| < 2**17, rounded up to K bits
        m_q = Signal(-(-MB // K) * K)            # multiplier bits left
        m_cand = Signal(signed(64))              # multiplicand, K bits left a cycle
        m_acc = Signal(signed(64))
        m_cnt = Signal(range(-(-MB // K) + 1))
        acc_next = m_acc
        for j in range(K):
            acc_next = Mux(m_q[j], acc_next + (m_cand << j), acc_next)
        m_acc_next = Signal(signed(64))
        m.d.comb += m_acc_next.eq(acc_next)
        mu_neg = Signal()
        mu_abs = Signal(MB)
        m.d.comb += [mu_neg.eq(mu[-1]), mu_abs.eq(Mux(mu[-1], -mu, mu))]
        e_shift = Signal(6)
        # The mean's numerator, floor((2 sum(X) + n) / 2n) + 32896's: shifts and adds
        # (no DSP block); in the deep form a register (``xsum`` settles while the
        # pipeline drains, cycles before the divider starts). The same for the
        # variance's and the softmax sum's zero tests.
        mean_num = (xsum << 1) + times_const(v_len, 2 * MEAN_BIAS + 1)
        vsum_zero, total_zero = vsum == 0, total == 0       # (both settled as well)
        if deep:
            mean_num = reg_of(mean_num, "mean_num")
            vsum_zero, total_zero = reg_of(vsum_zero, "vsum_zero"), reg_of(total_zero,
                                                                           "total_zero")

        rows2 = decoded("rows2", lambda b: b.rows << 1, aw)    # beta's rows after b_row
        # A norm's ``n``: ``length``, at most the vector's elements (``sw/vector.py``).
        norm_len = decoded("norm_len", lambda b: Mux(b.length > times_const(b.rows, R),
                                                     times_const(b.rows, R), b.length), 17)
        rows3 = decoded("rows3", lambda b: times_const(b.rows, 3), aw)   # (no DSP block)

        def start_pass(p, state="PASS"):
            m.d.sync += [vpass.eq(p), i_left.eq(v.rows), a_addr.eq(v_base),
                         b_addr.eq(v.b_row), c_addr.eq(v.b_row + v.rows),
                         d_addr.eq(v.b_row + rows2), e_addr.eq(v.b_row + rows3),
                         rem.eq(v_len),
                         ph.eq(0)]
            m.next = state

        def divide(num, den, then, bits):
            """``floor(num / den)`` for ``num < 2**bits``: ``ceil(bits / K)`` cycles (the
            quotient's ``bits`` rounded up to a multiple of ``K``: leading zeros)."""
            bits = -(-bits // K) * K
            m.d.sync += [dv_num.eq(num << (DW - bits)), dv_den.eq(den), dv_nden.eq(-den),
                         dv_rem.eq(0),
                         dv_q.eq(0), dv_cnt.eq(bits // K), div_then.eq(then)]
            m.next = "DIV"

        # A norm's pass after its statistics: the output, or (``dynq``) its maximum.
        norm_next = Mux(norm_dq, P_M, P_OUT)

        def variance_done():
            """``V`` in ``vsum``: ``n 2**56 / V`` next (``V = 0``: ``r = 0``, the output)."""
            with m.If(vsum_zero):
                m.d.sync += [r_m.eq(0), z_shr.eq(0), z_half.eq(0)]
                start_pass(norm_next)
            with m.Else():
                divide(v_len << NORM_K, vsum, D_RSQRT, NORM_K + 16)

        def next_vector():
            """The vector is done: the next one (its causal length one more), or the end."""
            with m.If(v_left == 0):
                m.next = "FINISH"
            with m.Else():
                m.d.sync += [v_left.eq(v_left - 1), v_first.eq(0),
                             v_base.eq(Mux(interleaved, v_base + 1, a_addr)),
                             v_len.eq(v_len + (v.causal & ~is_norm))]
                m.next = "V_START"

        # DYNQ: which of the limits the vector's maximum exceeds (a thermometer code),
        # and the row-scale slot of the vector.
        dq_over = Signal(isa.ROWSCALE_CODES)
        rs_slot = Signal(len(self.rs_addr))
        m.d.comb += [self.rs_addr.eq(rs_slot), self.rs_data.eq(sum(dq_over))]
        div_then = Signal(2)         # what the divider's quotient is for
        D_RECIP, D_MEAN, D_RSQRT = 0, 1, 2

        with m.FSM(name="vector") as fsm:
            with m.State("IDLE"):
                m.d.comb += iq.r_en.eq(~self.abort)
                with m.If(iq.r_rdy & ~self.abort):
                    m.d.sync += [cur.eq(iq.r_data), *load_decode]
                    m.next = "TOKEN"
            with m.State("TOKEN"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif((~cur.header.pop_prev | self.s2v_avail)
                            & (~cur.header.pop_next | self.e2v_avail)):
                    m.d.comb += [self.s2v_take.eq(cur.header.pop_prev),
                                 self.e2v_take.eq(cur.header.pop_next)]
                    m.d.sync += [i_left.eq(v.rows), v_left.eq(v.count - 1),
                                 a_addr.eq(v.a_row), b_addr.eq(v.b_row), v_base.eq(v.a_row),
                                 b_base.eq(v.b_row), ph.eq(0), out_row.eq(v.dst_row),
                                 out_base.eq(v.dst_row), out_j.eq(0), t_index.eq(0),
                                 v_len.eq(Mux(is_norm, norm_len, v.length)), vpass.eq(P_OUT),
                                 half_off.eq(0),
                                 h_left.eq(v.rows >> 1),
                                 rs_slot.eq(Mux(is_norm, v.b_lo_row, v.b_row)),
                                 v_first.eq(1)]
                    with m.If(vop == isa.VecOp.TABLE):
                        m.next = "T_READ"
                    with m.Elif(reduce):
                        m.next = "V_START"
                    with m.Elif(is_rope):
                        m.next = "HALF"
                    with m.Else():
                        m.next = "PASS"

            # -- ROPE: the offset of a row's partner, h * row_step (h cycles)
            with m.State("HALF"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(h_left == 0):
                    m.next = "PASS"
                with m.Else():
                    m.d.sync += [half_off.eq(half_off + row_step), h_left.eq(h_left - 1)]

            # -- one pass over a vector's rows (elementwise ops: over all their rows)
            with m.State("PASS"):
                need_credit = out_pass & (ph == 0)
                last_read = ph == last_ph
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(~need_credit | (credits >= Mux(two_rows, 2, 1))):
                    with m.If(ph == 0):
                        m.d.comb += rd_addr.eq(a_addr)
                    with m.Elif(is_rope):
                        m.d.comb += rd_addr.eq(rope_addr)
                    with m.Elif(wide_bin):       # a's low half, b's high and low halves
                        m.d.comb += rd_addr.eq(
                            Mux(ph == 1, a_lo, Mux(ph == 2, b_addr, b_lo)))
                    with m.Elif(wide):           # x's low half, then the gain's bytes
                        m.d.comb += rd_addr.eq(Mux(ph == 1, a_lo,
                                                   Mux(ph == 2, b_addr,
                                                       Mux(ph == 3, c_addr,
                                                           Mux(ph == 4, d_addr, e_addr)))))
                    with m.Else():
                        m.d.comb += rd_addr.eq(Mux(ph == 1, b_addr, Mux(
                            ph == 2, c_addr, Mux(ph == 3, d_addr, e_addr))))
                    m.d.comb += [rd_en.eq(1), take_credit.eq(need_credit),
                                 cache_rd.eq(cached_now & last_read),
                                 lo_rd.eq(locached_now & last_read), c_addr_rd.eq(row_no)]
                    m.d.sync += [t0_valid.eq(1), t0_last.eq(last_read), t0_ph.eq(ph),
                                 t0_lanes.eq(lanes_now), t0_row.eq(row_no),
                                 t0_second.eq(second), t0_cached.eq(cached_now),
                                 t0_fill.eq(fill_now), t0_locached.eq(locached_now),
                                 t0_lofill.eq(lofill_now)]
                    with m.If(~last_read):       # (the low half cached: no phase 1)
                        m.d.sync += ph.eq(Mux(locached_now & (ph == 0), 2, ph + 1))
                    with m.Else():
                        m.d.sync += [ph.eq(0), a_addr.eq(a_addr + row_step),
                                     b_addr.eq(b_addr + Mux(is_norm | v.b_repeat, 1,
                                                            row_step)),
                                     c_addr.eq(c_addr + 1), d_addr.eq(d_addr + 1),
                                     e_addr.eq(e_addr + 1), i_left.eq(i_left - 1),
                                     rem.eq(Mux(rem >= R, rem - R, 0))]   # - lanes_now
                        with m.If(i_left == 1):
                            with m.If(reduce):
                                m.next = "V_PASS_END"
                            with m.Elif(v_left == 0):
                                m.next = "FINISH"
                            with m.Else():
                                next_a = Mux(interleaved, v_base + 1, a_addr + 1)
                                next_b = Mux(v.b_repeat, v.b_row,
                                             Mux(interleaved, b_base + 1, b_addr + 1))
                                m.d.sync += [i_left.eq(v.rows), v_left.eq(v_left - 1),
                                             v_base.eq(next_a), a_addr.eq(next_a),
                                             b_base.eq(next_b), b_addr.eq(next_b),
                                             v_first.eq(0)]

            # -- reductions: per vector, passes with the pipeline drained between them
            with m.State("V_START"):
                m.d.sync += [mx.eq(Mux(am_wide, -(1 << 16), -128)), total.eq(0), xsum.eq(0),
                             vsum.eq(0), mu.eq(0), am_idx.eq(0)]
                with m.If(is_ln):
                    start_pass(P_A)
                with m.Elif(is_norm):
                    start_pass(P_B)
                with m.Else():
                    start_pass(P_A)
            with m.State("V_PASS_END"):
                with m.If(~busy):
                    with m.If(is_am):
                        m.next = "ARG_OUT"
                    with m.Elif(vpass == P_OUT):
                        next_vector()
                    with m.Elif(is_dq | (vpass == P_M)):     # (a norm through DYNQ)
                        m.d.sync += dq_over.eq(Cat(mx > lim for lim in isa.DYNQ_LIMITS))
                        m.next = "DQ_CODE"
                    with m.Elif(is_sm & (vpass == P_A)):
                        start_pass(P_B)
                    with m.Elif(is_sm):
                        divide(SOFTMAX_ONE << RECIP_BITS, total, D_RECIP, RECIP_BITS + 7)
                    with m.Elif(vpass == P_A):           # LayerNorm: the mean next
                        with m.If(v_len == 0):
                            start_pass(P_B)
                        with m.Else():
                            # floor((2 sum(X) + n) / 2n) + 32896, positive
                            divide(mean_num, v_len << 1,
                                   D_MEAN, 34)
                    with m.Else():                       # variance done: n 2**56 / V
                        variance_done()
            with m.State("DIV"):
                with m.If(dv_cnt == 0):
                    with m.Switch(div_then):
                        with m.Case(D_RECIP):
                            m.d.sync += recip.eq(Mux(total_zero, 0, dv_q[:16]))
                            start_pass(P_OUT)
                        with m.Case(D_MEAN):
                            m.d.sync += [mu.eq(dv_q[:17] - MEAN_BIAS),     # R - n
                                         m_cand.eq(Mux(dv_rem[-1], dv_rem + dv_den, dv_rem)
                                                   - v_len)]
                            m.next = "VAR_E"

                        with m.Default():
                            m.d.sync += [sq_rem.eq(0), sq_res.eq(0),
                                         dv_cnt.eq(DW // 2 // K)]
                            m.next = "SQRT"
                with m.Else():
                    m.d.sync += [dv_num.eq(dv_num << K), dv_cnt.eq(dv_cnt - 1)]
                    m.d.sync += [dv_rem.eq(dv_rem_next), dv_q.eq(Cat(dv_q_bits, dv_q))]
            with m.State("VAR_E"):               # S1 + e
                m.d.sync += m_cand.eq(xsum + (m_cand >> 1))
                m.next = "VAR_START"
            with m.State("VAR_START"):           # the multiply: |mu| times s (S1 + e)
                m.d.sync += [m_q.eq(mu_abs), m_acc.eq(0), m_cnt.eq(-(-MB // K)),
                             m_cand.eq(Mux(mu_neg, -m_cand, m_cand))]
                m.next = "VAR"
            with m.State("VAR"):
                with m.If(m_cnt == 0):
                    m.d.sync += vsum.eq(vsum - m_acc)
                    m.next = "VAR_END"
                with m.Else():
                    m.d.sync += [m_acc.eq(m_acc_next), m_cand.eq(m_cand << K),
                                 m_q.eq(m_q >> K), m_cnt.eq(m_cnt - 1)]
            with m.State("VAR_END"):             # (the deep form's vsum_zero settles)
                m.next = "VAR_DONE"
            with m.State("VAR_DONE"):
                variance_done()
            with m.State("SQRT"):
                with m.If(dv_cnt == 0):              # r = min(root, 2**32 - 1)
                    m.d.sync += [e_shift.eq(0),
                                 sq_res.eq(Mux(sq_res[32:].any(), (1 << 32) - 1, sq_res))]
                    m.next = "RNORM"
                with m.Else():
                    m.d.sync += [dv_q.eq(dv_q << (2 * K)), dv_cnt.eq(dv_cnt - 1),
                                 sq_rem.eq(sq_rem_next), sq_res.eq(sq_res_next)]
            with m.State("RNORM"):
                # r's 16 leading bits and the shift of z = D * r_t / 2**16: ``e`` is at
                # most 16 since r < 2**32 (for int8 x at most 13: V >= 2**14 unless it is
                # 0, so r <= sqrt(2**16 * 2**56 / 2**14) = 2**29). One shift a cycle with
                # one step a cycle (the FPGA's form), else all at once: ``e`` from r's
                # leading one.
                if K == 1:
                    with m.If(sq_res >= (1 << 16)):
                        m.d.sync += [sq_res.eq(sq_res >> 1), e_shift.eq(e_shift + 1)]
                    with m.Else():
                        m.d.sync += [r_m.eq(sq_res[:16]), z_shr.eq(16 - e_shift),
                                     z_half.eq((1 << (16 - e_shift)[:5]) >> 1)]
                        start_pass(norm_next)
                else:
                    e_now = Signal(5)
                    for b in range(16, 32):          # the highest one's assignment wins
                        with m.If(sq_res[b]):
                            m.d.comb += e_now.eq(b - 15)
                    m.d.sync += [r_m.eq((sq_res >> e_now)[:16]), z_shr.eq(16 - e_now),
                                 z_half.eq((1 << (16 - e_now)[:5]) >> 1)]
                    start_pass(norm_next)

            with m.State("DQ_CODE"):                 # DYNQ: the code, to its slot
                m.d.comb += self.rs_en.eq(1)
                m.d.sync += [dq_k.eq(self.rs_data), rs_slot.eq(rs_slot + 1)]
                start_pass(P_OUT)

            with m.State("ARG_OUT"):                 # argmax: one row per vector
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(credits != 0):
                    m.d.comb += [arg_write.eq(1), take_credit.eq(1)]
                    next_vector()

            # -- table fill
            with m.State("T_READ"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += [rd_en.eq(1), rd_addr.eq(a_addr)]
                    m.d.sync += a_addr.eq(a_addr + 1)
                    m.next = "T_WAIT" if deep else "T_LATCH"
            if deep:
                with m.State("T_WAIT"):          # the registered read address and data
                    m.next = "T_WAIT2"
                with m.State("T_WAIT2"):
                    m.next = "T_LATCH"
            with m.State("T_LATCH"):
                m.d.sync += [t_row.eq(rd_data), t_entry.eq(0)]
                m.next = "T_WRITE"
            with m.State("T_WRITE"):
                m.d.comb += t_wen.eq(~self.abort)
                m.d.sync += [t_entry.eq(t_entry + 1), t_index.eq(t_index + 1)]
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(t_entry == R - 1):
                    m.d.sync += i_left.eq(i_left - 1)
                    with m.If(i_left == 1):
                        m.d.sync += i_left.eq(v.rows)
                        with m.If(v_left == 0):
                            m.next = "FINISH"
                        with m.Else():
                            m.d.sync += v_left.eq(v_left - 1)
                            m.next = "T_READ"
                    with m.Else():
                        m.next = "T_READ"

            # -- every row written: give the tokens
            with m.State("FINISH"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(~busy & (credits == self.FIFO_ROWS) & ~out.r_rdy):
                    m.d.comb += give.eq(1)
                    m.next = "IDLE"

        m.d.comb += [self.v2s_give.eq(give & cur.header.push_prev),
                     self.v2e_give.eq(give & cur.header.push_next),
                     self.retired.eq(give),
                     self.working.eq(~fsm.ongoing("IDLE") & ~fsm.ongoing("TOKEN"))]
        # Idle: nothing running and nothing queued. The queue's level, not its output's
        # valid: an instruction spends a cycle inside the buffered FIFO before it shows.
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & (iq.level == 0) & ~self.insn.valid
                                 & ~(self.rd_en if deep else 0))
        return m
