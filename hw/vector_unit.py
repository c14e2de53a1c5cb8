"""The vector unit: ``VEC`` instructions, integer arithmetic on activation-buffer rows."""

from amaranth import Module, Signal, Mux, signed, unsigned
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa, layouts

__all__ = ["VectorUnit", "POW2_TABLE", "RECIP_BITS", "SOFTMAX_ONE"]

#: The softmax's base-2 exponential, ``round(2**15 * 2**(-f / 256))`` for ``f`` in
#: 0..255 (``sw/vector.py`` states the arithmetic; the constants are the hardware's).
POW2_TABLE = [round(2.0 ** 15 * 2.0 ** (-f / 256)) for f in range(256)]
#: The softmax's reciprocal ``r = floor(SOFTMAX_ONE * 2**RECIP_BITS / S)``.
RECIP_BITS = 24
SOFTMAX_ONE = 127


class VectorUnit(wiring.Component):
    """Runs ``VEC`` instructions (:mod:`hw.isa`; the arithmetic is ``sw/vector.py``'s).

    Each of the ``R`` lanes handles one element of a row. For each instruction: wait for
    the ``pop_prev`` token (the store unit has written the rows) and the ``pop_next``
    token (the exec unit has read the rows this one overwrites), then walk the
    ``count`` vectors of ``rows`` rows:

    * ``ADD``, ``MUL``: read row ``a_row + i``, then ``b_row + i`` (the activation
      buffer's second read port, latency 1), one read per cycle, and pass the pair
      through the lane pipeline: stage 2 the products (``ADD``: ``mul_a * a`` and
      ``mul_b * b``, 16 x 8 bits; ``MUL``: ``a * b``, 8 x 8), stage 3 the sum or the
      product by ``mul_a`` (16 x 16), stage 4 ``sat8(rshift_round(., shift))``;
    * ``LUT``: read row ``a_row + i`` each cycle; stage 2 reads each lane's own copy of
      the table (synchronous), the entry passes stages 3 and 4 unchanged;
    * ``TABLE``: read each row, then write its ``R`` entries one per cycle into every
      lane's copy of the table (``R + 2`` cycles per row);
    * ``SOFTMAX``, per vector, three passes over its rows, one read per cycle, the
      pipeline drained between passes: **max** (masked lanes out; the row's maximum at
      stage 2, the running maximum at stage 3); **sum** (stage 2 ``d * mul``, 9 x 16
      bits; stage 3 the rounding shift and the read of the lane's ``POW2`` ROM; stage 4
      the exponent's shift; stage 5 the row's sum, stage 6 the running sum ``S``); the
      reciprocal ``r`` by restoring division (16 cycles); **out** (the exponentials
      again, stage 5 ``e * r``, 16 x 16, stage 6 the rounding shift).

    Every multiplier sits between registers. Rows leave through an 8-row FIFO to the
    activation buffer's write port, which the load and store units have before this
    one.

    Throughput: one row per cycle (``LUT``), one per two cycles (``ADD``, ``MUL``), while
    the write port is free; ``SOFTMAX``: ``3 * rows + 35`` cycles per vector.
    Back-pressure: a row that will be written is issued only with a credit (8, one per
    FIFO row); a credit returns as its row is written. ``push_prev`` and ``push_next``
    are given once the instruction's last row (or table entry) is written; the next
    instruction starts after that.

    Ports
    -----
    insn : In(stream(isa.insn_layout))
    rd_addr, rd_en : Out; rd_data : In(act_row)       activation buffer read port
    wr_addr, wr_data, wr_valid : Out; wr_ready : In   activation buffer write port
    s2v_avail, e2v_avail : In; s2v_take, e2v_take, v2s_give, v2e_give : Out   tokens
    abort : In; idle : Out
    busy : Out                                        an instruction is running
    """

    FIFO_ROWS = 8
    DIV_STEPS = 16           # quotient bits of the softmax's reciprocal (r < 2**16)

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
            "abort": In(1), "idle": Out(1), "busy": Out(1),
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

        cur = Signal(isa.insn_layout)
        v = cur.body.vec
        vop = Signal(isa.VecOp)
        m.d.comb += vop.eq(v.vop)
        binary = Signal()
        m.d.comb += binary.eq((vop == isa.VecOp.ADD) | (vop == isa.VecOp.MUL))
        mul_a = Signal(signed(16))
        mul_b = Signal(signed(16))
        m.d.comb += [mul_a.eq(v.mul_a.as_signed()), mul_b.eq(v.mul_b.as_signed())]

        # Softmax pass of the rows in the pipeline (constant while they are in it).
        P_MAX, P_SUM, P_OUT = 0, 1, 2
        sm_pass = Signal(2)
        is_sm = Signal()
        m.d.comb += is_sm.eq(vop == isa.VecOp.SOFTMAX)

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
        m.submodules.out = out = fifo.SyncFIFOBuffered(width=8 * R, depth=self.FIFO_ROWS)
        credits = Signal(range(self.FIFO_ROWS + 1), init=self.FIFO_ROWS)
        out_row = Signal(aw)
        take_credit = Signal()
        wrote = Signal()
        m.d.comb += [
            self.wr_valid.eq(out.r_rdy), self.wr_data.eq(out.r_data),
            self.wr_addr.eq(out_row), out.r_en.eq(self.wr_ready),
            wrote.eq(out.r_rdy & self.wr_ready),
        ]
        m.d.sync += credits.eq(credits - take_credit + wrote)
        with m.If(wrote):
            m.d.sync += out_row.eq(out_row + 1)

        # ---- The lane pipeline ------------------------------------------------------
        # Stage 1: the read issued last cycle arrives (t1_*).
        t1_valid, t1_last = Signal(), Signal()
        t1_lanes = Signal(lane_bits)                 # softmax: valid lanes of the row
        ra = Signal(row_layout)                      # a binary op's first row
        with m.If(t1_valid & ~t1_last):
            m.d.sync += ra.eq(self.rd_data)
        s2_valid = Signal()
        s2_a, s2_b = Signal(row_layout), Signal(row_layout)
        s2_lanes = Signal(lane_bits)
        m.d.sync += [s2_valid.eq(t1_valid & t1_last), s2_lanes.eq(t1_lanes),
                     s2_a.eq(Mux(binary, ra, self.rd_data)), s2_b.eq(self.rd_data)]
        valid = [Signal(name=f"s{i}_valid") for i in range(3, 8)]      # stages 3..7
        s3_valid, s4_valid, s5_valid, s6_valid, s7_valid = valid
        m.d.sync += [s3_valid.eq(s2_valid), s4_valid.eq(s3_valid), s5_valid.eq(s4_valid),
                     s6_valid.eq(s5_valid), s7_valid.eq(s6_valid)]

        table_base = Signal(tab_aw)
        m.d.comb += table_base.eq(v.table << ceil_log2(entries))
        shift = v.shift

        # Softmax state per vector.
        mx = Signal(signed(8))                       # running maximum
        s3_rmax = Signal(signed(8))
        total = Signal(40)                           # S
        recip = Signal(16)                           # r
        s6_rsum = Signal(40)

        lane_p1 = [Signal(signed(26), name=f"p1_{k}") for k in range(R)]
        lane_p2 = [Signal(signed(24), name=f"p2_{k}") for k in range(R)]
        lane_ok3 = [Signal(name=f"ok3_{k}") for k in range(R)]
        lane_sum = [Signal(signed(34), name=f"sum_{k}") for k in range(R)]
        lane_ok4 = [Signal(name=f"ok4_{k}") for k in range(R)]
        lane_e = [Signal(16, name=f"e_{k}") for k in range(R)]
        lane_prod = [Signal(32, name=f"prod_{k}") for k in range(R)]
        s5_y = Signal(row_layout)
        s7_y = Signal(row_layout)

        # Stage 2: products, or the table read, or (softmax) the row's maximum and d*mul.
        rmax = None
        for k in range(R):
            a, b = s2_a[k], s2_b[k]
            ok = Signal(name=f"ok2_{k}")
            m.d.comb += ok.eq(k < s2_lanes)
            masked = Mux(ok, a, -128)
            rmax = masked if rmax is None else Mux(masked > rmax, masked, rmax)
            d = Signal(9, name=f"d_{k}")
            m.d.comb += d.eq(mx - a)
            m.d.comb += [luts[k].addr.eq(table_base | a.as_unsigned()), luts[k].en.eq(1)]
            with m.If(is_sm):
                m.d.sync += [lane_p1[k].eq(d * v.mul_a), lane_ok3[k].eq(ok)]
            with m.Elif(vop == isa.VecOp.ADD):
                m.d.sync += [lane_p1[k].eq(mul_a * a), lane_p2[k].eq(mul_b * b)]
            with m.Else():
                m.d.sync += [lane_p1[k].eq(a * b), lane_p2[k].eq(0)]
        m.d.sync += s3_rmax.eq(rmax)

        # Stage 3: sum / second product / table entry; softmax: rounding shift, ROM read.
        half = Signal(32)
        m.d.comb += half.eq(Mux(shift == 0, 0, (1 << shift) >> 1))
        k_exp = [Signal(unsigned(18), name=f"kexp_{k}") for k in range(R)]
        for k in range(R):
            t = Signal(unsigned(26), name=f"t_{k}")
            m.d.comb += t.eq((lane_p1[k].as_unsigned() + half) >> shift)
            m.d.comb += [pow2[k].addr.eq(t[:8]), pow2[k].en.eq(1)]
            with m.If(is_sm):
                m.d.sync += [k_exp[k].eq(t[8:]), lane_ok4[k].eq(lane_ok3[k])]
            with m.Elif(vop == isa.VecOp.ADD):
                m.d.sync += lane_sum[k].eq(lane_p1[k] + lane_p2[k])
            with m.Elif(vop == isa.VecOp.MUL):
                m.d.sync += lane_sum[k].eq(lane_p1[k][:16].as_signed() * mul_a)
            with m.Else():                             # LUT: the entry, as it is
                m.d.sync += lane_sum[k].eq(luts[k].data.as_signed())
        with m.If(s3_valid & is_sm & (sm_pass == P_MAX) & (s3_rmax > mx)):
            m.d.sync += mx.eq(s3_rmax)

        # Stage 4: round and saturate; softmax: the exponential.
        for k in range(R):
            rounded = Signal(signed(34), name=f"rounded_{k}")
            m.d.comb += rounded.eq((lane_sum[k] + half) >> shift)
            m.d.sync += s5_y[k].eq(Mux(vop == isa.VecOp.LUT, lane_sum[k][:8],
                                       Mux(rounded > 127, 127,
                                           Mux(rounded < -128, -128, rounded[:8]))))
            m.d.sync += lane_e[k].eq(Mux(lane_ok4[k] & (k_exp[k] < 16),
                                         pow2[k].data >> k_exp[k][:4], 0))

        # Stage 5: softmax sum of the row, or the products e * r.
        rsum = 0
        for k in range(R):
            rsum = rsum + lane_e[k]
            m.d.sync += lane_prod[k].eq(lane_e[k] * recip)
        m.d.sync += s6_rsum.eq(rsum)
        # Stage 6: the running sum, or the rounding shift of the products.
        with m.If(s6_valid & is_sm & (sm_pass == P_SUM)):
            m.d.sync += total.eq(total + s6_rsum)
        for k in range(R):
            m.d.sync += s7_y[k].eq((lane_prod[k] + (1 << (RECIP_BITS - 1))) >> RECIP_BITS)

        m.d.comb += [out.w_data.eq(Mux(is_sm, s7_y, s5_y)),
                     out.w_en.eq(Mux(is_sm, s7_valid & (sm_pass == P_OUT), s5_valid))]
        in_pipe = Signal()
        m.d.comb += in_pipe.eq(t1_valid | s2_valid | s3_valid | s4_valid | s5_valid
                               | s6_valid | s7_valid)

        # ---- The issuer ---------------------------------------------------------------
        i_left = Signal(16)          # rows of this vector still to read (this pass)
        v_left = Signal(16)          # vectors still to start, after this one
        a_addr = Signal(aw)
        b_addr = Signal(aw)
        v_base = Signal(aw)          # softmax: the vector's first row
        v_len = Signal(17)           # softmax: this vector's valid elements
        rem = Signal(17)             # softmax: valid elements from the next read on
        phase_b = Signal()
        t_entry = Signal(range(R))   # TABLE: the entry of the row being written
        t_row = Signal(row_layout)
        t_index = Signal(range(entries + 1))
        div_step = Signal(range(self.DIV_STEPS + 1))
        div_rem = Signal(40)
        give = Signal()
        m.d.sync += [t1_valid.eq(0), t1_last.eq(0)]
        m.d.comb += [t_wdata.eq(t_row.as_value().word_select(t_entry, 8)),
                     t_waddr.eq(table_base | t_index)]
        lanes_now = Signal(lane_bits)
        m.d.comb += lanes_now.eq(Mux(rem >= R, R, rem))

        def next_row(last_state):
            """Count a row read; at the vector's last row go on to ``last_state``."""
            m.d.sync += [i_left.eq(i_left - 1), rem.eq(rem - lanes_now)]
            with m.If(i_left == 1):
                m.next = last_state

        with m.FSM(name="vector") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.insn.ready.eq(~self.abort)
                with m.If(self.insn.valid & self.insn.ready):
                    m.d.sync += cur.eq(self.insn.payload)
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
                                 phase_b.eq(0), out_row.eq(v.dst_row), t_index.eq(0),
                                 v_len.eq(v.length)]
                    with m.If(vop == isa.VecOp.TABLE):
                        m.next = "T_READ"
                    with m.Elif(is_sm):
                        m.next = "SM_START"
                    with m.Else():
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(binary & phase_b):
                    # The partner row's read; its credit was taken with the first read.
                    m.d.comb += [self.rd_en.eq(1), self.rd_addr.eq(b_addr)]
                    m.d.sync += [t1_valid.eq(1), t1_last.eq(1), phase_b.eq(0),
                                 b_addr.eq(b_addr + 1), i_left.eq(i_left - 1)]
                    with m.If(i_left == 1):
                        m.d.sync += i_left.eq(v.rows)
                        with m.If(v_left == 0):
                            m.next = "FINISH"
                        with m.Else():
                            m.d.sync += v_left.eq(v_left - 1)
                with m.Elif(credits != 0):
                    m.d.comb += [self.rd_en.eq(1), self.rd_addr.eq(a_addr), take_credit.eq(1)]
                    m.d.sync += [t1_valid.eq(1), t1_last.eq(~binary), a_addr.eq(a_addr + 1)]
                    with m.If(binary):
                        m.d.sync += phase_b.eq(1)
                    with m.Else():
                        m.d.sync += i_left.eq(i_left - 1)
                        with m.If(i_left == 1):
                            m.d.sync += i_left.eq(v.rows)
                            with m.If(v_left == 0):
                                m.next = "FINISH"
                            with m.Else():
                                m.d.sync += v_left.eq(v_left - 1)

            # -- softmax: max, sum, reciprocal, out; per vector
            with m.State("SM_START"):
                m.d.sync += [mx.eq(-128), total.eq(0), sm_pass.eq(P_MAX), i_left.eq(v.rows),
                             a_addr.eq(v_base), rem.eq(v_len)]
                m.next = "SM_MAX"
            with m.State("SM_MAX"):
                m.d.comb += [self.rd_en.eq(1), self.rd_addr.eq(a_addr)]
                m.d.sync += [t1_valid.eq(1), t1_last.eq(1), t1_lanes.eq(lanes_now),
                             a_addr.eq(a_addr + 1)]
                next_row("SM_TO_SUM")
            with m.State("SM_TO_SUM"):
                with m.If(~in_pipe):
                    m.d.sync += [sm_pass.eq(P_SUM), i_left.eq(v.rows), a_addr.eq(v_base),
                                 rem.eq(v_len)]
                    m.next = "SM_SUM"
            with m.State("SM_SUM"):
                m.d.comb += [self.rd_en.eq(1), self.rd_addr.eq(a_addr)]
                m.d.sync += [t1_valid.eq(1), t1_last.eq(1), t1_lanes.eq(lanes_now),
                             a_addr.eq(a_addr + 1)]
                next_row("SM_TO_DIV")
            with m.State("SM_TO_DIV"):
                with m.If(~in_pipe):
                    m.d.sync += [recip.eq(0), div_step.eq(self.DIV_STEPS),
                                 div_rem.eq(SOFTMAX_ONE << RECIP_BITS)]
                    m.next = "SM_DIV"
            with m.State("SM_DIV"):
                # Restoring division, one quotient bit per cycle, most significant first.
                step = Signal(range(self.DIV_STEPS))
                m.d.comb += step.eq(div_step - 1)
                trial = Signal(56)
                m.d.comb += trial.eq(total << step)
                with m.If(div_step == 0):
                    with m.If(total == 0):
                        m.d.sync += recip.eq(0)
                    m.d.sync += [sm_pass.eq(P_OUT), i_left.eq(v.rows), a_addr.eq(v_base),
                                 rem.eq(v_len)]
                    m.next = "SM_OUT"
                with m.Else():
                    m.d.sync += div_step.eq(step)
                    with m.If(trial <= div_rem):
                        m.d.sync += [div_rem.eq(div_rem - trial),
                                     recip.eq(recip | (1 << step))]
            with m.State("SM_OUT"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(credits != 0):
                    m.d.comb += [self.rd_en.eq(1), self.rd_addr.eq(a_addr), take_credit.eq(1)]
                    m.d.sync += [t1_valid.eq(1), t1_last.eq(1), t1_lanes.eq(lanes_now),
                                 a_addr.eq(a_addr + 1)]
                    next_row("SM_NEXT")
            with m.State("SM_NEXT"):
                with m.If(~in_pipe):
                    with m.If(v_left == 0):
                        m.next = "FINISH"
                    with m.Else():
                        m.d.sync += [v_left.eq(v_left - 1), v_base.eq(a_addr),
                                     v_len.eq(v_len + v.causal)]
                        m.next = "SM_START"

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
        m.d.comb += [self.idle.eq(fsm.ongoing("IDLE") & ~self.insn.valid),
                     self.busy.eq(~fsm.ongoing("IDLE"))]
        return m
