"""The vector unit: ``VEC`` instructions, integer arithmetic on activation-buffer rows."""

from amaranth import Cat, Module, Signal, Mux, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa, layouts
from .arith import clamp_wide, wide_high

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
    output pass: ``x`` and the gain's two bytes), four (``ROPE``: the row, its partner
    in the other half, cosine, sine) or eight (a 16-bit ``ROPE``: each of those, high
    and low halves), one read per cycle; then it passes the lane pipeline:

    * stage 2: the row's masked maximum and its first lane (a comparison tree) and its
      masked sum; the first two multipliers, ``x * y`` (``a mul_a``, ``a b``, ``a c``,
      softmax ``d mul``, normalization ``D D`` or ``D r``; 18 x 18) and ``b * v``
      (``b mul_b``, ``b s``; 17 x 17), ``ROPE`` adding the two; the table read (``LUT``);
    * stage 3: ``ADD``'s sum or ``LUT``'s entry; softmax: the exponent's rounding shift
      and the read of the lane's ``2^-f`` ROM, the running maximum (and argmax);
      normalizations: the running sum, the row's sum of ``D * D``, ``z``;
    * stage 4: ``ADD``/``LUT`` rounded and saturated (then written); softmax: ``e``;
      normalizations: the running variance sum;
    * stage 5: the softmax row's sum; the third multiplier ``u * w`` (``e r``, ``z g``,
      the ``MUL``/``ROPE`` product times ``mul_a``, skipped by the 16-bit ``MUL`` and
      ``ROPE``; 18 x 17);
    * stage 6: softmax's running sum; the rounding shifts and saturation (then written).

    Once per vector, sequentially: a shift-in restoring divider (softmax's reciprocal
    ``floor(127 * 2**24 / S)``, 31 cycles; the mean, 34; ``n * 2**56 / V``, 72) and a
    digit-by-digit square root (36 cycles), the pipeline drained between passes.
    ``TABLE`` reads each row and writes its ``R`` entries, one per cycle, into every
    lane's copy of the table. ``ARGMAX`` writes one row per vector, the index's bytes.

    Every multiplier sits between registers. Rows leave through an 8-row FIFO to the
    activation buffer's write port, which the load and store units have before this
    one.

    Throughput: one row per cycle (``LUT``), per two (``ADD``, ``MUL``), per four
    (``ROPE``, 16-bit ``ADD`` and ``MUL``), per eight (16-bit ``ROPE``), while the write
    port is free. Per vector: ``SOFTMAX`` ``3 * rows + 31``
    cycles, ``LAYERNORM`` ``5 * rows + 142``, ``RMSNORM`` ``4 * rows + 108`` (with at most
    13 normalizing steps), ``ARGMAX`` ``rows + 1``, each plus about 7 cycles per pass to
    drain the pipeline. Back-pressure: a row that will be written is issued only with a
    credit (8, one per FIFO row); a credit returns as its row is written. ``push_prev``
    and ``push_next`` are given once the instruction's last row (or table entry) is
    written; the next instruction starts after that.

    Instructions wait in a ``QUEUE_DEPTH`` (4) entry queue, so the front end dispatches
    past a running ``VEC`` to the other units.

    Ports
    -----
    insn : In(stream(isa.insn_layout))
    rd_addr, rd_en : Out; rd_data : In(act_row)       activation buffer read port
    wr_addr, wr_data, wr_valid : Out; wr_ready : In   activation buffer write port
    s2v_avail, e2v_avail : In; s2v_take, e2v_take, v2s_give, v2e_give : Out   tokens
    abort : In; idle : Out   idle: nothing queued, running or in flight, no pulse driven;
                             while idle and no ``insn.valid`` the state does not change
                             (the clock gate of hw/clock_gate.py relies on it)
    """

    FIFO_ROWS = 8
    QUEUE_DEPTH = 4          # instructions queued ahead of the running one

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
            "abort": In(1), "idle": Out(1),
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

        binary = decoded("binary", lambda b: (b.vop == isa.VecOp.ADD)
                         | (b.vop == isa.VecOp.MUL))
        is_lut = decoded("is_lut", lambda b: b.vop == isa.VecOp.LUT)
        is_sm = decoded("is_sm", lambda b: b.vop == isa.VecOp.SOFTMAX)
        is_ln = decoded("is_ln", lambda b: b.vop == isa.VecOp.LAYERNORM)
        is_norm = decoded("is_norm", lambda b: (b.vop == isa.VecOp.LAYERNORM)
                          | (b.vop == isa.VecOp.RMSNORM))
        is_am = decoded("is_am", lambda b: b.vop == isa.VecOp.ARGMAX)
        is_rope = decoded("is_rope", lambda b: b.vop == isa.VecOp.ROPE)
        reduce = decoded("reduce", lambda b: b.vop.matches(
            isa.VecOp.SOFTMAX, isa.VecOp.LAYERNORM, isa.VecOp.RMSNORM, isa.VecOp.ARGMAX))
        # ARGMAX or SOFTMAX of 16-bit values: two reads a row
        am_wide = decoded("am_wide", lambda b: b.vop.matches(isa.VecOp.ARGMAX,
                                                             isa.VecOp.SOFTMAX) & b.wide)
        mul_a = Signal(signed(16))
        mul_b = Signal(signed(16))
        m.d.comb += [mul_a.eq(v.mul_a.as_signed()), mul_b.eq(v.mul_b.as_signed())]

        # The pass of the rows in the pipeline (constant while they are in it). Softmax:
        # max, sum, out; normalizations: mean, variance, out; elementwise ops: out.
        P_A, P_B, P_OUT = 0, 1, 2
        vpass = Signal(2)
        out_pass = Signal()
        m.d.comb += out_pass.eq(vpass == P_OUT)

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
        two_rows = decoded("two_rows", lambda b: (b.wide & b.vop.matches(
            isa.VecOp.ADD, isa.VecOp.MUL, isa.VecOp.ROPE))
            | (b.wide_out & b.vop.matches(*isa.WIDE_OUT_VOPS)))
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
            self.wr_addr.eq(Mux(out_lo, out_row + (v.dst_lo_row - v.dst_row), out_row)),
            out.r_en.eq(self.wr_ready),
            wrote.eq(out.r_rdy & self.wr_ready),
        ]
        m.d.sync += credits.eq(credits - Mux(take_credit, Mux(two_rows, 2, 1), 0) + wrote)
        with m.If(wrote & (~two_rows | out_lo)):
            with m.If(is_am | (out_j != v.rows - 1)):       # ARGMAX: one row per vector
                m.d.sync += [out_row.eq(out_row + Mux(is_am, 1, row_step)),
                             out_j.eq(out_j + 1)]
            with m.Else():
                next_out = Mux(interleaved, out_base + 1, out_row + 1)
                m.d.sync += [out_row.eq(next_out), out_base.eq(next_out), out_j.eq(0)]

        # ---- The lane pipeline ------------------------------------------------------
        # Stage 1: the read issued last cycle arrives. A row needs up to eight reads
        # (``ADD``/``MUL``: a, b; a normalization's output pass: x, gain low, gain high;
        # a 16-bit ``ROPE``: x, its partner, cosine, sine, high and low halves each);
        # the earlier ones wait in ``ra``, ``rb``, ...
        t1_valid, t1_last = Signal(), Signal()
        t1_ph = Signal(3)
        t1_lanes = Signal(lane_bits)                 # masked reductions: valid lanes
        t1_row = Signal(16)                          # the row's number in its vector
        t1_second = Signal()                         # ROPE: a row of the second half
        held = [Signal(row_layout, name=f"r{j}") for j in range(7)]
        ra, rb, rc = held[:3]
        for j, reg in enumerate(held):
            with m.If(t1_valid & ~t1_last & (t1_ph == j)):
                m.d.sync += reg.eq(self.rd_data)
        nreads = Signal(4)
        wide = Signal()              # a normalization of 16-bit x: hi and lo reads
        m.d.comb += wide.eq(v.wide)
        m.d.comb += nreads.eq(Mux(binary, Mux(wide_bin, 4, 2),
                                  Mux(is_norm & out_pass, Mux(wide, 4, 3),
                                      Mux(is_rope, Mux(wide_rope, 8, 4),
                                          # two writes a row: a cycle for each
                                          Mux((is_norm & wide) | (is_sm & out_pass & two_rows)
                                              | am_wide,
                                              2, 1)))))
        s2_valid, s2_second = Signal(), Signal()
        s2_a, s2_b, s2_c, s2_d = (Signal(row_layout, name=f"s2_{n}") for n in "abcd")
        # A 16-bit ROPE's cosine and sine (high and low halves).
        s2_e, s2_f, s2_g, s2_h = (Signal(row_layout, name=f"s2_{n}") for n in "efgh")
        s2_lanes = Signal(lane_bits)
        s2_row = Signal(16)
        m.d.sync += [s2_valid.eq(t1_valid & t1_last), s2_lanes.eq(t1_lanes),
                     s2_row.eq(t1_row), s2_second.eq(t1_second),
                     s2_a.eq(Mux(nreads == 1, self.rd_data, ra)),
                     s2_b.eq(Mux(nreads == 2, self.rd_data, rb)),
                     s2_c.eq(Mux(nreads >= 4, rc, self.rd_data)),
                     s2_d.eq(Mux(nreads == 8, held[3], self.rd_data)),
                     s2_e.eq(held[4]), s2_f.eq(held[5]), s2_g.eq(held[6]),
                     s2_h.eq(self.rd_data)]
        valid = [Signal(name=f"s{i}_valid") for i in range(3, 8)]      # stages 3..7
        s3_valid, s4_valid, s5_valid, s6_valid, s7_valid = valid
        m.d.sync += [s3_valid.eq(s2_valid), s4_valid.eq(s3_valid), s5_valid.eq(s4_valid),
                     s6_valid.eq(s5_valid), s7_valid.eq(s6_valid)]

        table_base = decoded("table_base", lambda b: b.table << ceil_log2(entries), tab_aw)
        shift = v.shift
        half = decoded("half", lambda b: Mux(b.shift == 0, 0, (1 << b.shift) >> 1), 32)

        # Per-vector state: softmax running maximum, sum and reciprocal; normalization
        # sum, mean (1/256ths), variance sum, inverse square root (16 bits and a shift).
        mx = Signal(signed(17))                      # (17-bit: 16-bit values too)
        s3_rmax = Signal(signed(17))
        s3_rlane = Signal(range(R))
        s3_row = Signal(16)
        am_idx = Signal(32)                          # argmax: the index of ``mx``
        total = Signal(40)
        recip = Signal(16)
        s6_rsum = Signal(40)
        xsum = Signal(signed(40))
        s3_xsum = Signal(signed(17 + lane_bits))
        mu = Signal(signed(18))
        vsum = Signal(56)
        s4_vsum = Signal(40 + lane_bits)
        r_m = Signal(16)
        z_shr = Signal(5)            # 16 - e (e <= 16: see RNORM)

        def lanes(name, shape):
            return [Signal(shape, name=f"{name}_{k}") for k in range(R)]
        lane_p1 = lanes("p1", signed(37))
        lane_p2 = lanes("p2", signed(34))
        lane_g3 = lanes("g3", signed(16))
        lane_ok3, lane_ok4, lane_ok5 = lanes("ok3", 1), lanes("ok4", 1), lanes("ok5", 1)
        lane_sum = lanes("sum", signed(34))
        lane_m4, lane_m5 = lanes("m4", signed(18)), lanes("m5", signed(18))
        lane_w4, lane_w5 = lanes("w4", signed(35)), lanes("w5", signed(35))  # 16-bit MUL
        lane_n4, lane_n5 = lanes("n4", signed(17)), lanes("n5", signed(17))
        lane_e = lanes("e", 16)
        lane_prod = lanes("prod", signed(36))
        k_exp = lanes("kexp", unsigned(26))
        s5_y, s7_y = Signal(row_layout), Signal(row_layout)
        late = Signal()              # the result leaves stage 6's multiplier (not stage 4)
        m.d.comb += late.eq(~(vop == isa.VecOp.ADD) & ~is_lut)

        # Three multipliers per lane, each at most 18 x 18 and between registers, shared
        # by the operations: stage 2's ``x * y`` and ``b * v``, stage 5's ``u * w``.
        # Stage 2: the products (ADD: a mul_a and b mul_b; MUL: a b; ROPE: a c -+ b s;
        # softmax: d mul; normalizations: D D or D r), or the table read, or the row's
        # maximum and sum.
        # The row's maximum and its first lane: a tree of comparisons (ties: lower lane).
        level = []
        for k in range(R):
            ok = Signal(name=f"okm_{k}")
            m.d.comb += ok.eq(k < s2_lanes)
            val = Signal(signed(17), name=f"amv_{k}")       # 16-bit: 256 hi + lo
            m.d.comb += val.eq(Mux(am_wide, (s2_a[k] << 8) + s2_b[k], s2_a[k]))
            level.append((Mux(ok, val, Mux(am_wide, -(1 << 16), -128)), k))
        node = 0
        while len(level) > 1:
            nxt = []
            for (va, ia), (vb, ib) in zip(level[::2], level[1::2]):
                node += 1
                vm = Signal(signed(17), name=f"rmax_{node}")
                im = Signal(range(R), name=f"rlane_{node}")
                take_b = vb > va
                m.d.comb += [vm.eq(Mux(take_b, vb, va)), im.eq(Mux(take_b, ib, ia))]
                nxt.append((vm, im))
            level = nxt
        rmax, rlane = level[0]
        xs = 0
        for k in range(R):
            a, b, c, dd = s2_a[k], s2_b[k], s2_c[k], s2_d[k]
            ok = Signal(name=f"ok2_{k}")
            m.d.comb += ok.eq(k < s2_lanes)
            x16 = Signal(signed(17), name=f"x16_{k}")        # normalizations: X
            m.d.comb += x16.eq(Mux(wide, (a << 8) + b, a << 8))
            xs = xs + Mux(ok, x16, 0)
            d = Signal(17, name=f"d_{k}")                   # softmax: max - x
            m.d.comb += d.eq(mx - Mux(am_wide, (a << 8) + b, a))
            dev = Signal(signed(18), name=f"dev_{k}")
            m.d.comb += dev.eq(x16 - mu)
            m.d.comb += [luts[k].addr.eq(table_base | a.as_unsigned()), luts[k].en.eq(1)]
            a16 = Signal(signed(17), name=f"a16_{k}")        # wide ADD: 256 hi + lo
            b16 = Signal(signed(17), name=f"b16_{k}")
            m.d.comb += [a16.eq(Mux(wide_bin | wide_rope, (a << 8) + b, a)),
                         b16.eq(Mux(wide_bin | wide_rope, (c << 8) + dd, b))]
            cos16 = Signal(signed(17), name=f"cos16_{k}")    # wide ROPE's tables
            sin16 = Signal(signed(17), name=f"sin16_{k}")
            m.d.comb += [cos16.eq((s2_e[k] << 8) + s2_f[k]), sin16.eq((s2_g[k] << 8) + s2_h[k])]
            x_op = Signal(signed(18), name=f"xop_{k}")
            y_op = Signal(signed(18), name=f"yop_{k}")
            v_op = Signal(signed(17), name=f"vop_{k}")
            with m.If(is_sm):
                m.d.comb += [x_op.eq(d), y_op.eq(v.mul_a)]
            with m.Elif(is_norm):
                m.d.comb += [x_op.eq(dev), y_op.eq(Mux(out_pass, r_m, dev))]
            with m.Elif(vop == isa.VecOp.ADD):
                m.d.comb += [x_op.eq(a16), y_op.eq(mul_a)]
            with m.Elif(wide_rope):
                m.d.comb += [x_op.eq(a16), y_op.eq(cos16)]
            with m.Elif(is_rope):
                m.d.comb += [x_op.eq(a), y_op.eq(c)]
            with m.Else():                             # MUL: a b (16-bit: a16 b16)
                m.d.comb += [x_op.eq(Mux(wide_mul, a16, a)), y_op.eq(Mux(wide_mul, b16, b))]
            m.d.comb += v_op.eq(Mux(wide_rope, sin16, Mux(is_rope, dd, mul_b)))
            xy = Signal(signed(36), name=f"xy_{k}")
            bv = Signal(signed(34), name=f"bv_{k}")
            m.d.comb += [xy.eq(x_op * y_op), bv.eq(b16 * v_op)]
            m.d.sync += [lane_ok3[k].eq(ok),
                         lane_g3[k].eq(Mux(wide, (dd << 8) | c.as_unsigned(),
                                           (c << 8) | b.as_unsigned())),
                         lane_p2[k].eq(bv),
                         lane_p1[k].eq(xy + Mux(is_rope, Mux(s2_second, bv, -bv), 0))]
        m.d.sync += [s3_rmax.eq(rmax), s3_rlane.eq(rlane), s3_row.eq(s2_row), s3_xsum.eq(xs)]

        # Stage 3: the sum (ADD) or the table entry (LUT); softmax: rounding shift, ROM
        # read, running maximum; normalizations: running sum, row sum of D*D, z.
        vs = 0
        for k in range(R):
            t = Signal(unsigned(34), name=f"t_{k}")
            m.d.comb += t.eq((lane_p1[k][:34].as_unsigned() + half) >> shift)
            m.d.comb += [pow2[k].addr.eq(t[:8]), pow2[k].en.eq(1)]
            m.d.sync += [k_exp[k].eq(t[8:]), lane_ok4[k].eq(lane_ok3[k])]
            with m.If(vop == isa.VecOp.ADD):
                m.d.sync += lane_sum[k].eq(lane_p1[k] + lane_p2[k])
            with m.Else():                             # LUT: the entry, as it is
                m.d.sync += lane_sum[k].eq(luts[k].data.as_signed())
            vs = vs + Mux(lane_ok3[k], lane_p1[k].as_unsigned(), 0)
            zw = Signal(signed(37), name=f"zw_{k}")
            m.d.comb += zw.eq((lane_p1[k] + ((1 << z_shr) >> 1)) >> z_shr)
            z = Mux(zw > (1 << 17) - 1, (1 << 17) - 1, Mux(zw < -(1 << 17), -(1 << 17), zw[:18]))
            # The operands of stage 5's multiplier: z and the gain, or the MUL/ROPE
            # product and mul_a.
            m.d.sync += [lane_m4[k].eq(Mux(is_norm, z, lane_p1[k][:17].as_signed())),
                         lane_n4[k].eq(Mux(is_norm, lane_g3[k], mul_a)),
                         lane_w4[k].eq(lane_p1[k])]
        m.d.sync += s4_vsum.eq(vs)
        with m.If(s3_valid & (is_sm | is_am) & (vpass == P_A) & (s3_rmax > mx)):
            m.d.sync += [mx.eq(s3_rmax),
                         am_idx.eq((s3_row << ceil_log2(R)) | s3_rlane)]
        with m.If(s3_valid & is_norm & (vpass == P_A)):
            m.d.sync += xsum.eq(xsum + s3_xsum)

        # Stage 4: round and saturate (ADD, LUT: done); softmax: the exponential;
        # normalizations: the running variance sum.
        s5_lo, s6_lo = Signal(row_layout), Signal(row_layout)
        s6_lo_valid = Signal()
        m.d.sync += [s6_lo.eq(s5_lo), s6_lo_valid.eq(s5_valid & wide_add)]
        for k in range(R):
            rounded = Signal(signed(34), name=f"rounded_{k}")
            m.d.comb += rounded.eq((lane_sum[k] + half) >> shift)
            q16 = Signal(signed(16), name=f"q16_{k}")       # wide: 256 hi + lo
            m.d.comb += q16.eq(clamp_wide(rounded))
            m.d.sync += s5_lo[k].eq(q16[:8])
            with m.If(wide_add):
                m.d.sync += s5_y[k].eq(wide_high(q16))
            with m.Else():
                m.d.sync += s5_y[k].eq(Mux(is_lut, lane_sum[k][:8],
                                           Mux(rounded > 127, 127,
                                               Mux(rounded < -128, -128, rounded[:8]))))
            m.d.sync += lane_e[k].eq(Mux(lane_ok4[k] & (k_exp[k] < 16),
                                         pow2[k].data >> k_exp[k][:4], 0))
            m.d.sync += [lane_m5[k].eq(lane_m4[k]), lane_n5[k].eq(lane_n4[k]),
                         lane_w5[k].eq(lane_w4[k]), lane_ok5[k].eq(lane_ok4[k])]
        with m.If(s4_valid & is_norm & (vpass == P_B)):
            m.d.sync += vsum.eq(vsum + s4_vsum)

        # Stage 5: the softmax row's sum, and the third multiplier: e * r (softmax),
        # z * gain (normalizations), product * mul_a (MUL, ROPE).
        rsum = 0
        for k in range(R):
            rsum = rsum + lane_e[k]
            u_op = Signal(signed(18), name=f"uop_{k}")
            w_op = Signal(signed(17), name=f"wop_{k}")
            m.d.comb += [u_op.eq(Mux(is_sm, lane_e[k], lane_m5[k])),
                         w_op.eq(Mux(is_sm, recip, lane_n5[k]))]
            # A 16-bit MUL's or ROPE's result (34 bits) skips the multiplier: no mul_a.
            m.d.sync += lane_prod[k].eq(Mux(wide_mul | wide_rope, lane_w5[k], u_op * w_op))
        m.d.sync += s6_rsum.eq(rsum)
        lane_ok6 = lanes("ok6", 1)
        for k in range(R):
            m.d.sync += lane_ok6[k].eq(lane_ok5[k])
        # Stage 6: the running sum (softmax), the rounding shifts and the saturation.
        with m.If(s6_valid & is_sm & (vpass == P_B)):
            m.d.sync += total.eq(total + s6_rsum)
        s7_lo, s8_lo = Signal(row_layout), Signal(row_layout)
        s8_lo_valid = Signal()
        m.d.sync += [s8_lo.eq(s7_lo), s8_lo_valid.eq(s7_valid & out_pass & two_rows)]
        for k in range(R):
            ny = Signal(signed(36), name=f"ny_{k}")
            m.d.comb += ny.eq((lane_prod[k] + half) >> shift)
            sat = Mux(ny > 127, 127, Mux(ny < -128, -128, ny[:8]))
            n16 = Signal(signed(16), name=f"n16_{k}")        # wide_out: 256 hi + lo
            m.d.comb += n16.eq(clamp_wide(ny))
            sm16 = Signal(signed(20), name=f"sm16_{k}")      # softmax, wide_out
            m.d.comb += sm16.eq((lane_prod[k] + (1 << (RECIP_BITS - 9))) >> (RECIP_BITS - 8))
            m.d.sync += s7_lo[k].eq(Mux(is_sm, sm16[:8],
                                        Mux(lane_ok6[k] | ~is_norm, n16[:8], 0)))
            with m.If(is_sm & two_rows):
                m.d.sync += s7_y[k].eq(wide_high(sm16))
            with m.Elif(is_sm):
                m.d.sync += s7_y[k].eq((lane_prod[k] + (1 << (RECIP_BITS - 1)))
                                       >> RECIP_BITS)
            with m.Elif(is_norm & two_rows):
                m.d.sync += s7_y[k].eq(Mux(lane_ok6[k], wide_high(n16), 0))
            with m.Elif(is_norm):
                m.d.sync += s7_y[k].eq(Mux(lane_ok6[k], sat, 0))
            with m.Elif(wide_mul | wide_rope):
                m.d.sync += s7_y[k].eq(wide_high(n16))
            with m.Else():
                m.d.sync += s7_y[k].eq(sat)

        arg_write = Signal()
        with m.If(is_am):
            m.d.comb += [out.w_data.eq(am_idx), out.w_en.eq(arg_write)]
        with m.Elif(late):
            m.d.comb += [out.w_data.eq(Mux(s8_lo_valid, Cat(s8_lo, 1), s7_y)),
                         out.w_en.eq((s7_valid & out_pass) | s8_lo_valid)]
        with m.Else():
            m.d.comb += [out.w_data.eq(Mux(s6_lo_valid, Cat(s6_lo, 1), s5_y)),
                         out.w_en.eq(s5_valid | s6_lo_valid)]
        in_pipe = Signal()
        m.d.comb += in_pipe.eq(t1_valid | s2_valid | s3_valid | s4_valid | s5_valid
                               | s6_valid | s7_valid | s6_lo_valid | s8_lo_valid)

        # ---- The issuer ---------------------------------------------------------------
        i_left = Signal(16)          # rows of this vector still to read (this pass)
        v_left = Signal(16)          # vectors still to start, after this one
        a_addr, b_addr, c_addr = Signal(aw), Signal(aw), Signal(aw)
        v_base = Signal(aw)          # the vector's first row
        b_base = Signal(aw)          # its partner's first row
        half_off = Signal(aw)        # ROPE: from a row to its partner, h * row_step
        lo_delta = Signal(aw)        # wide: from a row's high half to its low half
        m.d.comb += lo_delta.eq(v.a_lo_row - v.a_row)
        h_left = Signal(15)
        v_len = Signal(17)           # reductions: this vector's valid elements
        rem = Signal(17)             # reductions: valid elements from the next read on
        ph = Signal(3)               # which read of the row is next
        t_entry = Signal(range(R))   # TABLE: the entry of the row being written
        t_row = Signal(row_layout)
        t_index = Signal(range(entries + 1))
        give = Signal()
        m.d.sync += [t1_valid.eq(0), t1_last.eq(0)]
        m.d.comb += [t_wdata.eq(t_row.as_value().word_select(t_entry, 8)),
                     t_waddr.eq(table_base | t_index)]
        lanes_now = Signal(lane_bits)
        m.d.comb += lanes_now.eq(Mux(rem >= R, R, rem))
        # The row's number in its vector, and the rotary embedding's addresses.
        row_no = Signal(16)
        rows_half = Signal(15)
        second = Signal()
        jm = Signal(16)
        m.d.comb += [row_no.eq(v.rows - i_left), rows_half.eq(v.rows >> 1),
                     second.eq(row_no >= rows_half),
                     jm.eq(Mux(second, row_no - rows_half, row_no))]
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
                                               Mux(rope_sel[1], v.b_lo_row - v.b_row,
                                                   lo_delta), 0))

        # Sequential arithmetic, once per vector: a shift-in restoring divider (softmax's
        # reciprocal, the mean, n * 2**56 / V) and a digit-by-digit square root.
        DW = 72
        dv_num = Signal(DW)
        dv_den = Signal(56)
        dv_rem = Signal(57)
        dv_q = Signal(DW)
        dv_cnt = Signal(range(DW + 1))
        dv_trial = Signal(58)
        m.d.comb += dv_trial.eq((dv_rem << 1) | dv_num[DW - 1])
        sq_rem = Signal(40)
        sq_res = Signal(37)
        sq_trial = Signal(40)
        sq_next = Signal(40)
        m.d.comb += [sq_next.eq((sq_rem << 2) | dv_q[DW - 2:]),
                     sq_trial.eq((sq_res << 2) | 1)]
        e_shift = Signal(6)

        def start_pass(p, state="PASS"):
            m.d.sync += [vpass.eq(p), i_left.eq(v.rows), a_addr.eq(v_base),
                         b_addr.eq(v.b_row), c_addr.eq(v.b_row + v.rows), rem.eq(v_len),
                         ph.eq(0)]
            m.next = state

        def divide(num, den, then, bits):
            """``floor(num / den)`` for ``num < 2**bits``: ``bits`` cycles."""
            m.d.sync += [dv_num.eq(num << (DW - bits)), dv_den.eq(den), dv_rem.eq(0),
                         dv_q.eq(0), dv_cnt.eq(bits), div_then.eq(then)]
            m.next = "DIV"

        def next_vector():
            """The vector is done: the next one (its causal length one more), or the end."""
            with m.If(v_left == 0):
                m.next = "FINISH"
            with m.Else():
                m.d.sync += [v_left.eq(v_left - 1),
                             v_base.eq(Mux(interleaved, v_base + 1, a_addr)),
                             v_len.eq(v_len + (v.causal & ~is_norm))]
                m.next = "V_START"

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
                                 v_len.eq(v.length), vpass.eq(P_OUT), half_off.eq(0),
                                 h_left.eq(v.rows >> 1)]
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
                last_read = ph == nreads - 1
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(~need_credit | (credits >= Mux(two_rows, 2, 1))):
                    with m.If(ph == 0):
                        m.d.comb += self.rd_addr.eq(a_addr)
                    with m.Elif(is_rope):
                        m.d.comb += self.rd_addr.eq(rope_addr)
                    with m.Elif(wide_bin):       # a's low half, b's high and low halves
                        m.d.comb += self.rd_addr.eq(
                            Mux(ph == 1, a_addr + lo_delta,
                                Mux(ph == 2, b_addr, b_addr + (v.b_lo_row - v.b_row))))
                    with m.Elif(wide):           # x's low half, then the gain's bytes
                        m.d.comb += self.rd_addr.eq(Mux(ph == 1, a_addr + lo_delta,
                                                        Mux(ph == 2, b_addr, c_addr)))
                    with m.Else():
                        m.d.comb += self.rd_addr.eq(Mux(ph == 1, b_addr, c_addr))
                    m.d.comb += [self.rd_en.eq(1), take_credit.eq(need_credit)]
                    m.d.sync += [t1_valid.eq(1), t1_last.eq(last_read), t1_ph.eq(ph),
                                 t1_lanes.eq(lanes_now), t1_row.eq(row_no),
                                 t1_second.eq(second)]
                    with m.If(~last_read):
                        m.d.sync += ph.eq(ph + 1)
                    with m.Else():
                        m.d.sync += [ph.eq(0), a_addr.eq(a_addr + row_step),
                                     b_addr.eq(b_addr + Mux(is_norm | v.b_repeat, 1,
                                                            row_step)),
                                     c_addr.eq(c_addr + 1), i_left.eq(i_left - 1),
                                     rem.eq(rem - lanes_now)]
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
                                             b_base.eq(next_b), b_addr.eq(next_b)]

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
                with m.If(~in_pipe):
                    with m.If(is_am):
                        m.next = "ARG_OUT"
                    with m.Elif(vpass == P_OUT):
                        next_vector()
                    with m.Elif(is_sm & (vpass == P_A)):
                        start_pass(P_B)
                    with m.Elif(is_sm):
                        divide(SOFTMAX_ONE << RECIP_BITS, total, D_RECIP, RECIP_BITS + 7)
                    with m.Elif(vpass == P_A):           # LayerNorm: the mean next
                        with m.If(v_len == 0):
                            start_pass(P_B)
                        with m.Else():
                            # floor((2 sum(X) + n) / 2n) + 32896, positive
                            divide((xsum << 1) + (2 * MEAN_BIAS + 1) * v_len, v_len << 1,
                                   D_MEAN, 34)
                    with m.Else():                       # variance done: n 2**56 / V
                        with m.If(vsum == 0):
                            m.d.sync += [r_m.eq(0), z_shr.eq(0)]
                            start_pass(P_OUT)
                        with m.Else():
                            divide(v_len << NORM_K, vsum, D_RSQRT, NORM_K + 16)
            with m.State("DIV"):
                with m.If(dv_cnt == 0):
                    with m.Switch(div_then):
                        with m.Case(D_RECIP):
                            m.d.sync += recip.eq(Mux(total == 0, 0, dv_q[:16]))
                            start_pass(P_OUT)
                        with m.Case(D_MEAN):
                            m.d.sync += mu.eq(dv_q[:17] - MEAN_BIAS)
                            start_pass(P_B)
                        with m.Default():
                            m.d.sync += [sq_rem.eq(0), sq_res.eq(0), dv_cnt.eq(DW // 2)]
                            m.next = "SQRT"
                with m.Else():
                    m.d.sync += [dv_num.eq(dv_num << 1), dv_cnt.eq(dv_cnt - 1)]
                    with m.If(dv_trial >= dv_den):
                        m.d.sync += [dv_rem.eq(dv_trial - dv_den), dv_q.eq((dv_q << 1) | 1)]
                    with m.Else():
                        m.d.sync += [dv_rem.eq(dv_trial), dv_q.eq(dv_q << 1)]
            with m.State("SQRT"):
                with m.If(dv_cnt == 0):              # r = min(root, 2**32 - 1)
                    m.d.sync += [e_shift.eq(0),
                                 sq_res.eq(Mux(sq_res[32:].any(), (1 << 32) - 1, sq_res))]
                    m.next = "RNORM"
                with m.Else():
                    m.d.sync += [dv_q.eq(dv_q << 2), dv_cnt.eq(dv_cnt - 1)]
                    with m.If(sq_next >= sq_trial):
                        m.d.sync += [sq_rem.eq(sq_next - sq_trial),
                                     sq_res.eq((sq_res << 1) | 1)]
                    with m.Else():
                        m.d.sync += [sq_rem.eq(sq_next), sq_res.eq(sq_res << 1)]
            with m.State("RNORM"):
                # r's 16 leading bits and the shift of z = D * r_t / 2**16: ``e`` is at
                # most 16 since r < 2**32 (for int8 x at most 13: V >= 2**14 unless it is
                # 0, so r <= sqrt(2**16 * 2**56 / 2**14) = 2**29).
                with m.If(sq_res >= (1 << 16)):
                    m.d.sync += [sq_res.eq(sq_res >> 1), e_shift.eq(e_shift + 1)]
                with m.Else():
                    m.d.sync += [r_m.eq(sq_res[:16]), z_shr.eq(16 - e_shift)]
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
                    m.d.comb += [self.rd_en.eq(1), self.rd_addr.eq(a_addr)]
                    m.d.sync += a_addr.eq(a_addr + 1)
                    m.next = "T_LATCH"
            with m.State("T_LATCH"):
                m.d.sync += [t_row.eq(self.rd_data), t_entry.eq(0)]
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
                with m.Elif(~in_pipe & (credits == self.FIFO_ROWS) & ~out.r_rdy):
                    m.d.comb += give.eq(1)
                    m.next = "IDLE"

        m.d.comb += [self.v2s_give.eq(give & cur.header.push_prev),
                     self.v2e_give.eq(give & cur.header.push_next)]
        # Idle: nothing running and nothing queued. The queue's level, not its output's
        # valid: an instruction spends a cycle inside the buffered FIFO before it shows.
        m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & (iq.level == 0) & ~self.insn.valid)
        return m
