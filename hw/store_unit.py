"""The store unit: ``STORE`` reads accumulator rows, requantizes them, writes them out."""

from amaranth import Cat, Module, Signal, Mux, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa, layouts
from .arith import times_const, wide_high
from .clock_gate import check, gate
from .dma import dma_command
from .requant import Requantizer

__all__ = ["StoreUnit"]


class StoreUnit(wiring.Component):
    """Runs ``STORE`` instructions (see :mod:`hw.isa` and ``docs/requant.md``).

    For each instruction: wait for the ``pop_prev`` token (results ready) and the
    ``pop_side`` token (the vector unit has read the rows this store overwrites); read the
    parameter set (:data:`hw.isa.PARAM_BEATS` beats, one per cycle) into registers; send
    the write command to the write DMA (one contiguous burst run when ``dram_stride``
    equals the row size, else one row of one beat each ``dram_stride`` bytes); then read
    the ``m`` accumulator rows, one per cycle, through the :class:`~hw.requant.Requantizer`
    to the write DMA's data stream or to the activation buffer. A ``raw`` store bypasses
    the requantizer: each accumulator row leaves as :attr:`~hw.config.Config.raw_row_beats`
    beats of its ``C`` int32 words, word 0 in the lowest bits of the first beat (one burst
    run of ``m * raw_row_beats`` beats when ``dram_stride`` is the raw row's size). A
    ``transpose`` store collects ``C`` requantized rows in a ``C x C`` byte block and
    sends it as ``C`` beats, beat ``c`` holding byte ``c`` of every row (one burst run of
    ``C`` beats per block, or one for all blocks when ``dram_stride`` is ``C * C``). A
    ``wide`` store writes each 16-bit row as two rows, the high halves then, a cycle
    later, the low halves: into the buffer at ``buf_row + r`` and ``lo_row + r``, or to
    memory as two beats at ``dram_addr + r*dram_stride``.
    A ``rowscale`` store (per-row dynamic quantization, :func:`sw.requant.row_rescale`)
    first multiplies accumulator row ``r`` by its row's scale: the code
    ``k = file[scale_row + r]`` of the row-scale file, read beside the accumulator (both
    latency 1), gives ``acc * (2 + (k & 1))`` (a shift and an add), plus the rounding
    constant ``2**(s-1)``, shifted right arithmetically by ``s = 9 - (k >> 1)`` (1..9),
    wrapped to int32, in one registered stage between the accumulator and the skid
    FIFO; then the row is requantized (or transposed, widened) as any other. The unit
    owns the row-scale file (:attr:`~hw.config.Config.rowscale_slots` codes of
    :data:`~hw.isa.ROWSCALE_BITS` bits, zero at reset); the vector unit writes it
    (``VEC DYNQ``) through ``rs_addr``/``rs_data``/``rs_en``, one code a cycle, the
    write seen by a read in a later cycle.
    ``push_prev`` (accumulator free) is given when the last accumulator row has been read.

    Throughput: one row per cycle (a raw row: one per ``raw_row_beats`` cycles; a
    transposed block of ``C`` rows: ``2 * C`` cycles, filling then leaving; a wide row:
    two cycles) unless the
    destination holds back. Back-pressure: the
    write DMA's ``wdata.ready`` or the activation buffer's ``buf_ready`` stalls the
    requantizer; an accumulator read issues only while the skid FIFO (``skid``, 5
    rows) holds fewer rows than it has room for, the rows on their way to it counted (a
    rescaled row one cycle longer): the FIFO's fill and the requantizer's one row a
    cycle balance at four, so reads do not pause without back-pressure.
    Latency: ``PARAM_BEATS + 3`` cycles from the token to the first accumulator read;
    from a read to the requantizer's input one cycle more with ``rowscale`` (the
    rescale stage), the same otherwise.

    Ports
    -----
    insn : In(stream(isa.insn_layout))
    param_addr, param_en : Out; param_data : In        parameter buffer read port
    acc_addr, acc_en : Out; acc_data : In              accumulator read port
    wcmd : Out(stream(dma_command)); wdata : Out(stream(8 * bus_bytes))   write DMA
    buf_addr, buf_data, buf_valid : Out; buf_ready : In   activation buffer write
    e2s_avail : In; e2s_take, s2e_give : Out           tokens with exec
    v2s_avail : In; v2s_take, s2v_give : Out           tokens with the vector unit
                                                       (``push_side``: given as the last
                                                       row leaves)
    rs_addr, rs_data, rs_en : In                       row-scale file write port (the
                                                       vector unit's ``DYNQ`` codes)
    abort : In; idle : Out   idle: nothing queued, running or in flight, no pulse driven;
                             while idle and neither ``insn.valid`` nor ``rs_en`` the
                             state does not change (the clock gate of hw/clock_gate.py
                             relies on it: the unit's gate wakes on ``rs_en`` too, see
                             hw/top.py)

    ``gating``: ``"clock"`` gives the requantizer a clock gate of its own (enabled while
    a row is in it or arriving), ``"none"`` (the default) clocks it with the unit; the
    same cycles either way (:mod:`hw.clock_gate`).
    """

    def __init__(self, cfg, *, skid=5, gating="none"):
        self.cfg = cfg
        self.skid = skid
        self.gating = check(gating)
        super().__init__({
            "insn": In(stream.Signature(isa.insn_layout)),
            "param_addr": Out(ceil_log2(cfg.param_tiles * isa.PARAM_BEATS)),
            "param_en": Out(1), "param_data": In(8 * cfg.bus_bytes),
            "acc_addr": Out(ceil_log2(2 * cfg.acc_buf_rows)), "acc_en": Out(1),
            "acc_data": In(layouts.psum_row(cfg)),
            "wcmd": Out(stream.Signature(dma_command(cfg))),
            "wdata": Out(stream.Signature(8 * cfg.bus_bytes)),
            "buf_addr": Out(ceil_log2(cfg.act_buf_rows)), "buf_data": Out(8 * cfg.bus_bytes),
            "buf_valid": Out(1), "buf_ready": In(1),
            "e2s_avail": In(1), "e2s_take": Out(1), "s2e_give": Out(1),
            "v2s_avail": In(1), "v2s_take": Out(1), "s2v_give": Out(1),
            "abort": In(1), "idle": Out(1),
            "rs_addr": In(ceil_log2(cfg.rowscale_slots)), "rs_data": In(isa.ROWSCALE_BITS),
            "rs_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C = cfg.cols
        L = isa.insn_layout

        # The requantizer has a clock gate of its own: a raw store (an LLM's GEMMs) or a
        # store waiting for its results leaves it idle (hw/clock_gate.py).
        rq = Requantizer(cfg)
        m.submodules.rq = gate(m, "rq_clk", rq, self.gating, wake=rq.i.valid)
        cur = Signal(L)
        st = cur.body.store

        # Parameter registers: bias, multiplier, shift vectors (C words each).
        params = Signal(data.ArrayLayout(32, 3 * C))
        for c in range(C):
            m.d.comb += [
                rq.bias[c].eq(params[c]),
                rq.mult[c].eq(params[C + c]),
                rq.shift[c].eq(params[2 * C + c]),
            ]
        m.d.comb += [rq.relu.eq(st.relu), rq.wide.eq(st.wide)]

        p_beat = Signal(range(isa.PARAM_BEATS + 1))
        p_pending = Signal()          # a parameter beat read last cycle arrives now
        p_dst = Signal(range(isa.PARAM_BEATS))
        with m.If(p_pending):
            with m.Switch(p_dst):
                for j in range(isa.PARAM_BEATS):
                    with m.Case(j):
                        m.d.sync += params.as_value()[j * 8 * cfg.bus_bytes:
                                                      (j + 1) * 8 * cfg.bus_bytes].eq(
                                                          self.param_data)

        raw = Signal()                # this STORE writes its rows unrequantized
        RB = cfg.raw_row_beats
        beat = Signal(range(RB))      # raw: which beat of the row at the skid's head

        # Accumulator reads feed a skid FIFO in front of the requantizer.
        m.submodules.skid = skid = fifo.SyncFIFOBuffered(width=32 * C, depth=self.skid)
        rows_left = Signal(16)
        acc_row = Signal(16)
        a_pending = Signal()
        m.d.sync += a_pending.eq(self.acc_en)

        # The row-scale file: written by the vector unit (VEC DYNQ), read beside the
        # accumulator (the same latency, 1) by a STORE with ``rowscale``. Its rows go
        # through one more register stage on their way to the skid FIFO: ``rs_row`` is
        # the row times its scale (sw.requant.row_rescale); other stores' rows enter the
        # FIFO straight from the accumulator, as before.
        m.submodules.rs_file = rs_file = Memory(shape=unsigned(isa.ROWSCALE_BITS),
                                                depth=cfg.rowscale_slots, init=[])
        rs_wr = rs_file.write_port()
        rs_rd = rs_file.read_port()
        m.d.comb += [rs_wr.addr.eq(self.rs_addr), rs_wr.data.eq(self.rs_data),
                     rs_wr.en.eq(self.rs_en)]
        rowscale = Signal()           # this STORE rescales its rows
        scale_row = Signal(16)        # the row-scale slot of the next accumulator read
        m.d.comb += [rs_rd.en.eq(self.acc_en & rowscale), rs_rd.addr.eq(scale_row)]
        rs_valid = Signal()           # rs_row holds a rescaled row (for the FIFO)
        rs_row = Signal(data.ArrayLayout(32, C), reset_less=True)
        code = rs_rd.data
        frac = code[0]                # sigma = (2 + frac) * 2**(code >> 1) / 2
        expo = code[1:]
        for c in range(C):
            a = self.acc_data[c].as_signed()
            # (a * (2 + frac) + 2**(s-1)) >> s with s = 9 - expo in 1..9, as
            # ((p >> (s - 1)) + 1) >> 1: the rounding bit added after the shift.
            p = Signal(signed(35), name=f"rs_p_{c}")
            q = Signal(signed(35), name=f"rs_q_{c}")
            m.d.comb += p.eq((a << 1) + Mux(frac, a, 0))
            with m.Switch(expo):
                for e in range(9):
                    with m.Case(e):
                        m.d.comb += q.eq(p >> (8 - e))
                with m.Default():                 # codes past ROWSCALE_CODES: as 16, 17
                    m.d.comb += q.eq(p)
            with m.If(a_pending):
                m.d.sync += rs_row[c].eq((q + 1)[1:33])
        m.d.sync += rs_valid.eq(a_pending & rowscale)
        m.d.comb += [skid.w_data.eq(Mux(rowscale, rs_row, self.acc_data)),
                     skid.w_en.eq(Mux(rowscale, rs_valid, a_pending))]
        # A raw row leaves the skid's head beat by beat, the requantizer idle meanwhile.
        raw_beat = Signal(8 * cfg.bus_bytes)
        raw_take = Signal()
        m.d.comb += [raw_beat.eq(skid.r_data.word_select(beat, 8 * cfg.bus_bytes)),
                     raw_take.eq(raw & skid.r_rdy & self.wdata.ready)]
        m.d.comb += [rq.i.payload.eq(skid.r_data), rq.i.valid.eq(skid.r_rdy & ~raw),
                     skid.r_en.eq(Mux(raw, raw_take & (beat == RB - 1), rq.i.ready))]

        out_left = Signal(16)         # requantized (or raw) rows still to hand on
        p_base = Signal(len(self.param_addr))   # param_tile * PARAM_BEATS, formed in TOKEN
        to_buf = Signal()
        buf_row = Signal(32)

        # The transposer: ``C`` requantized rows fill ``tr`` (row ``r`` of the block in
        # ``tr[r]``, rows past the instruction's end zero), then it leaves as ``C`` beats,
        # beat ``c`` the bytes ``c`` of every row: each beat takes every row's low byte
        # and shifts the rows down a byte, so no wide multiplexer is needed.
        transpose = Signal()
        # Wide rows: the high halves go to the buffer as they leave the requantizer, the
        # low halves wait one cycle in ``lo_data`` (the write port takes a row a cycle).
        wide = Signal()
        lo_pend = Signal()
        lo_data = Signal(8 * C)
        lo_addr = Signal(16)
        lo_next = Signal(16)
        tr = [Signal(8 * C, name=f"tr_{r}") for r in range(C)]
        tr_fill = Signal(range(C))    # the block's next row
        tr_emit = Signal()            # the block is leaving
        tr_col = Signal(range(C))     # its next beat
        tr_beat = Signal(8 * C)
        m.d.comb += tr_beat.eq(Cat(*(t[:8] for t in tr)))

        with m.FSM(name="store") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.insn.ready.eq(~self.abort & (out_left == 0) & ~tr_emit
                                               & ~lo_pend)
                with m.If(self.insn.valid & self.insn.ready):
                    m.d.sync += cur.eq(self.insn.payload)
                    m.next = "TOKEN"
            with m.State("TOKEN"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif((~cur.header.pop_prev | self.e2s_avail)
                            & (~cur.header.pop_side | self.v2s_avail)):
                    m.d.comb += [self.e2s_take.eq(cur.header.pop_prev),
                                 self.v2s_take.eq(cur.header.pop_side)]
                    m.d.sync += [p_beat.eq(0), rows_left.eq(st.m), acc_row.eq(st.acc_row),
                                 p_base.eq(times_const(st.param_tile, isa.PARAM_BEATS)),
                                 out_left.eq(st.m), to_buf.eq(st.to_buf), raw.eq(st.raw),
                                 beat.eq(0), transpose.eq(st.transpose), tr_fill.eq(0),
                                 wide.eq(st.wide), lo_next.eq(st.lo_row),
                                 buf_row.eq(st.buf_row), rowscale.eq(st.rowscale),
                                 scale_row.eq(st.scale_row)]
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += [self.param_en.eq(1),
                             self.param_addr.eq(p_base + p_beat)]
                m.d.sync += [p_pending.eq(1), p_dst.eq(p_beat), p_beat.eq(p_beat + 1)]
                with m.If(p_beat == isa.PARAM_BEATS - 1):
                    m.next = "CMD"
            with m.State("CMD"):
                m.d.sync += p_pending.eq(0)
                # A transposed store writes ceil(m / C) blocks of C beats, a wide one two
                # beats a row (the high halves, then the low halves).
                row_beats = Mux(raw, RB, Mux(transpose, C, Mux(st.wide, 2, 1)))
                blocks = Signal(16)
                m.d.comb += blocks.eq((st.m + (C - 1)) >> ceil_log2(C))
                out_rows = Mux(transpose, blocks, st.m)
                contiguous = st.dram_stride == row_beats * cfg.bus_bytes
                m.d.comb += [
                    self.wcmd.payload.addr.eq(st.dram_addr),
                    self.wcmd.payload.rows.eq(Mux(contiguous, 1, out_rows)),
                    self.wcmd.payload.row_beats.eq(
                        Mux(contiguous, Mux(raw, times_const(st.m, RB),
                                            Mux(transpose, blocks << ceil_log2(C),
                                                Mux(st.wide, st.m << 1, st.m))),
                            row_beats)),
                    self.wcmd.payload.stride.eq(st.dram_stride),
                    self.wcmd.valid.eq(~st.to_buf & ~self.abort),
                ]
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(st.to_buf | self.wcmd.ready):
                    m.next = "ROWS"
            with m.State("ROWS"):
                in_skid = Signal(range(self.skid + 3))
                m.d.comb += in_skid.eq(skid.r_level + a_pending + rs_valid)
                with m.If(self.abort):
                    m.next = "IDLE"
                # Never more than ``skid`` rows on their way (a rescaled row a cycle
                # longer: rs_valid) or in the FIFO; one row a cycle either way.
                with m.Elif(in_skid < self.skid):
                    m.d.comb += [self.acc_en.eq(1), self.acc_addr.eq(acc_row)]
                    m.d.sync += [acc_row.eq(acc_row + 1), rows_left.eq(rows_left - 1),
                                 scale_row.eq(scale_row + 1)]
                    with m.If(rows_left == 1):
                        m.d.comb += self.s2e_give.eq(cur.header.push_prev)
                        m.next = "IDLE"

        # Requantized rows go to memory or back into the activation buffer.
        out_row = Signal(8 * cfg.bus_bytes)          # int8 results: the low bytes
        hi_row = Signal(8 * cfg.bus_bytes)           # wide: q = 256 hi + lo
        lo_row = Signal(8 * cfg.bus_bytes)
        y = rq.o.payload
        m.d.comb += [out_row.eq(Cat(*(y[c][:8] for c in range(C)))),
                     hi_row.eq(Cat(*(wide_high(y[c]) for c in range(C)))),
                     lo_row.eq(out_row)]
        lo_taken = Signal()           # the pending low halves left (buffer or DMA)
        m.d.comb += lo_taken.eq(lo_pend & Mux(to_buf, self.buf_ready, self.wdata.ready))
        m.d.comb += [
            self.wdata.payload.eq(Mux(raw, raw_beat,
                                      Mux(transpose, tr_beat,
                                          Mux(lo_pend, lo_data,
                                              Mux(wide, hi_row, out_row))))),
            self.buf_data.eq(Mux(lo_pend, lo_data, Mux(wide, hi_row, out_row))),
            self.buf_addr.eq(Mux(lo_pend, lo_addr, buf_row)),
            self.wdata.valid.eq(Mux(raw, skid.r_rdy,
                                    Mux(transpose, tr_emit,
                                        (lo_pend | rq.o.valid) & ~to_buf))),
            self.buf_valid.eq((lo_pend | rq.o.valid) & to_buf),
            rq.o.ready.eq(Mux(to_buf, self.buf_ready & ~lo_pend,
                              Mux(transpose, ~tr_emit, self.wdata.ready & ~lo_pend))),
        ]
        row_out = Signal()            # the last row (beat) left for the buffer or the DMA
        tr_out = Signal()             # a transposed beat left
        m.d.comb += tr_out.eq(tr_emit & self.wdata.ready)
        with m.If(transpose):
            m.d.comb += row_out.eq(tr_out & (tr_col == C - 1) & (out_left == 0))
        with m.Elif(wide):
            m.d.comb += row_out.eq(lo_taken & (out_left == 0))
        with m.Else():
            m.d.comb += row_out.eq(((rq.o.valid & rq.o.ready)
                                    | (raw_take & (beat == RB - 1))) & (out_left == 1))
        with m.If(lo_taken):
            m.d.sync += lo_pend.eq(0)
        with m.If(wide & rq.o.valid & rq.o.ready):
            m.d.sync += [lo_pend.eq(1), lo_data.eq(lo_row), lo_addr.eq(lo_next),
                         lo_next.eq(lo_next + 1)]
        m.d.comb += self.s2v_give.eq(row_out & cur.header.push_side)
        with m.If(rq.o.valid & rq.o.ready):
            m.d.sync += [out_left.eq(out_left - 1), buf_row.eq(buf_row + 1)]
        with m.If(transpose & rq.o.valid & rq.o.ready):          # a row into the block
            for r in range(C):
                with m.If(tr_fill == r):
                    m.d.sync += tr[r].eq(out_row)
                with m.Elif(tr_fill == 0):
                    m.d.sync += tr[r].eq(0)
            m.d.sync += tr_fill.eq(tr_fill + 1)
            with m.If((tr_fill == C - 1) | (out_left == 1)):
                m.d.sync += [tr_emit.eq(1), tr_col.eq(0), tr_fill.eq(0)]
        with m.If(tr_out):                                       # a column out
            m.d.sync += [t.eq(t >> 8) for t in tr]
            m.d.sync += tr_col.eq(tr_col + 1)
            with m.If(tr_col == C - 1):
                m.d.sync += tr_emit.eq(0)
        with m.If(raw_take):
            m.d.sync += beat.eq(beat + 1)
            with m.If(beat == RB - 1):
                m.d.sync += [beat.eq(0), out_left.eq(out_left - 1)]

        with m.If(self.abort):
            m.d.sync += [out_left.eq(0), tr_emit.eq(0), lo_pend.eq(0)]
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & (out_left == 0) & ~tr_emit
                                 & ~lo_pend & ~self.insn.valid)
        return m
