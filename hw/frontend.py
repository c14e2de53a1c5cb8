"""The front end: fetches the program through the read DMA, checks and dispatches it."""

from amaranth import Module, Signal, Mux, Cat
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .dsp import Multiplier
from .dma import dma_command
from .exec_unit import matmul_entry

__all__ = ["FrontEnd"]


class FrontEnd(wiring.Component):
    """Instruction fetch, decode, checks and in-order dispatch to the four units.

    Fetch: after ``start``, reads ``prog_len`` instructions from ``prog_addr`` on
    ``fcmd`` in chunks of up to ``queue_insns // 2`` instructions, never more than its
    instruction FIFO has room for, and assembles ``INSN_BYTES / bus_bytes`` beats into
    each instruction. A bus wider than an instruction (``P = bus_bytes / INSN_BYTES``
    instructions a beat) reads the whole beats that hold the program, from the beat of
    ``prog_addr`` (an instruction-aligned address: the instructions before it in its
    beat are skipped) to the beat of the last instruction (those after it are dropped
    with whatever follows ``END``), and takes one instruction a cycle from each beat.

    Dispatch, one instruction at a time, in program order: the instruction is checked
    (opcode defined, counts non-zero, every buffer row, parameter slot and row-scale
    slot it names in range) and, if it passes, handed to the queue of its unit
    (:data:`hw.isa.OPS`: load, exec, store or vector); ``FENCE`` and
    ``END`` wait until ``units_idle``, ``FENCE stores`` until ``stores_idle``. The range checks run in a pipeline of
    ``CHECK_CYCLES`` registered stages (counts minus one and their factors into each
    multiplier's input registers; products in its output registers, a DSP block with its
    own registers on an ECP5; first sums; last sums), compared in the dispatch cycle,
    so no stage holds more than one adder or one multiplier. Dispatch takes at least
    ``CHECK_CYCLES + 2`` cycles per instruction, far below the work one instruction
    starts. A failed check raises ``error`` with the code and
    dispatches nothing more. A program that runs out of instructions without ``END``
    fails with ``NO_END``.

    Position: an instruction with ``rel`` or ``guard`` (:mod:`hw.isa`, "Position-relative
    instructions") spends one cycle more between fetch and the checks: its guard is
    tested against ``t = P >> shr`` (a failed guard drops it: back to fetch, nothing
    dispatched) and its position fields (:data:`hw.isa.OPS`' ``rel``) get their terms
    added; the checks and the unit see the result. Other instructions go straight to
    the checks, as before.

    Ports
    -----
    start : In (pulse); prog_addr : In(32); prog_len : In(32) (instructions);
    position : In(32) (``P`` of position-relative instructions, latched at start)
    fcmd : Out(stream(dma_command)); fdata : In(stream(8 * bus_bytes))
    load_q : Out(stream(insn_layout)); exec_q : Out(stream(matmul_entry()));
    store_q : Out(stream(insn_layout)); vec_q : Out(stream(insn_layout))
    units_idle : In      every unit idle, queues empty, DMA writes acknowledged
    stores_idle : In     the store unit idle, its queue empty, DMA writes acknowledged
    abort : In           another block raised an error: stop fetching and dispatching
    done : Out (pulse)   END reached with everything idle and no fetch in flight
    error : Out(4); error_valid : Out (pulse)
    dispatched : Out (pulse per instruction, FENCE and END included)
    stall_insn : Out     waiting for an instruction to arrive
    running : Out        between start and done/error
    """

    CHECK_CYCLES = 4

    def __init__(self, cfg, *, queue_insns=8):
        self.cfg = cfg
        self.queue_insns = queue_insns
        # Beats an instruction spans (bus at most an instruction wide), or instructions a
        # beat holds (a wider bus); one of the two is 1.
        self.insn_beats = max(1, isa.INSN_BYTES // cfg.bus_bytes)
        self.beat_insns = max(1, cfg.bus_bytes // isa.INSN_BYTES)
        super().__init__({
            "start": In(1), "prog_addr": In(32), "prog_len": In(32), "position": In(32),
            "fcmd": Out(stream.Signature(dma_command(cfg))),
            "fdata": In(stream.Signature(8 * cfg.bus_bytes)),
            "load_q": Out(stream.Signature(isa.insn_layout)),
            "exec_q": Out(stream.Signature(matmul_entry())),
            "store_q": Out(stream.Signature(isa.insn_layout)),
            "vec_q": Out(stream.Signature(isa.insn_layout)),
            "units_idle": In(1), "stores_idle": In(1), "abort": In(1),
            "done": Out(1), "error": Out(4), "error_valid": Out(1),
            "dispatched": Out(1), "stall_insn": Out(1), "running": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        nb = self.insn_beats
        per = self.beat_insns
        bus_bits = 8 * cfg.bus_bytes

        running = Signal()
        m.d.comb += self.running.eq(running)

        # ---- Fetch ------------------------------------------------------------------------
        # Counted in instructions, or in beats on a bus wider than one (`per` > 1).
        depth = self.queue_insns * nb
        m.submodules.ibuf = ibuf = fifo.SyncFIFOBuffered(width=bus_bits, depth=depth)
        chunk_max = max(1, self.queue_insns // 2 // per)
        f_addr = Signal(32)
        f_left = Signal(32)          # instructions (beats) not yet requested
        reserved = Signal(range(depth + 1))
        # min(f_left, chunk_max), a register kept beside f_left (see the FSM and `asked`).
        chunk = Signal(range(chunk_max + 1))
        f_left_next = Signal(32)
        room = Signal()
        m.d.comb += room.eq(reserved + chunk * nb <= depth)
        m.d.comb += [
            self.fcmd.valid.eq(running & ~self.abort & (f_left != 0) & room),
            self.fcmd.payload.addr.eq(f_addr),
            self.fcmd.payload.rows.eq(1),
            self.fcmd.payload.row_beats.eq(chunk * nb),
            self.fcmd.payload.stride.eq(0),
        ]
        asked = Signal()
        m.d.comb += asked.eq(self.fcmd.valid & self.fcmd.ready)
        m.d.comb += f_left_next.eq(f_left - chunk)
        with m.If(asked):
            m.d.sync += [f_addr.eq(f_addr + chunk * max(isa.INSN_BYTES, cfg.bus_bytes)),
                         f_left.eq(f_left_next),
                         chunk.eq(Mux(f_left_next < chunk_max, f_left_next, chunk_max))]
        m.d.comb += [ibuf.w_data.eq(self.fdata.payload), ibuf.w_en.eq(self.fdata.valid),
                     self.fdata.ready.eq(1)]

        word_valid = Signal()
        take_word = Signal()
        flush = Signal()             # after END: drop what was fetched beyond it
        popped = Signal()
        m.d.comb += ibuf.r_en.eq(popped)
        m.d.sync += reserved.eq(reserved + Mux(asked, chunk * nb, 0) - popped)
        if per == 1:
            # Assemble beats into one instruction.
            word = Signal(isa.INSN_BITS)
            have = Signal(range(nb + 1))
            m.d.comb += word_valid.eq(have == nb)
            m.d.comb += popped.eq(ibuf.r_rdy & ((have < nb) | take_word | flush))
            with m.If(popped):
                m.d.sync += word.eq(Cat(word[bus_bits:], ibuf.r_data) if nb > 1
                                    else ibuf.r_data)
            with m.If(flush):
                m.d.sync += have.eq(0)
            with m.Elif(take_word):
                m.d.sync += have.eq(popped)
            with m.Elif(popped):
                m.d.sync += have.eq(have + 1)
        else:
            # Instruction `sub` of the beat at the FIFO's head; the beat leaves with its
            # last instruction (or, after END, at once).
            sub = Signal(range(per))
            word = Signal(isa.INSN_BITS)
            m.d.comb += [word.eq(ibuf.r_data.word_select(sub, isa.INSN_BITS)),
                         word_valid.eq(ibuf.r_rdy)]
            m.d.comb += popped.eq(ibuf.r_rdy & ((take_word & (sub == per - 1)) | flush))
            with m.If(take_word):
                m.d.sync += sub.eq(sub + 1)

        # ---- Check and dispatch -----------------------------------------------------------
        insn = Signal(isa.insn_layout)
        m.d.comb += insn.eq(word)
        cur = Signal(isa.insn_layout)
        op = cur.header.opcode
        b = cur.body

        # Position-relative instructions: the terms, from the position latched at start.
        pos = Signal(32)
        t = Signal(32)
        off = Signal(32)
        m.d.comb += [t.eq(pos >> cur.header.shr), off.eq(t << cur.header.shl)]
        terms = {"addr": off, "t": t, "P": pos}
        skip = Signal()
        m.d.comb += skip.eq(cur.header.guard & (cur.header.gtile > t))
        left = Signal(32)            # instructions of the program not yet dispatched
        check = Signal(range(self.CHECK_CYCLES))

        # The range pipeline: it recomputes from `cur` every cycle; CHECK waits for it.
        # Stage 1: counts minus one. Stage 2: products. Stage 3: base + first product,
        # second product. Stage 4: last row = their sum.
        # Stages 1 and 2 of each product are a hw.dsp.Multiplier's input and output
        # registers (a DSP block's own on an ECP5): the count minus one and the step
        # enter its input registers together.
        la, mmb = b.load_act, b.matmul

        def product(name, x, y, width=16):
            mul = Multiplier(width + 1, width + 1)
            m.submodules[f"range_{name}"] = mul
            m.d.comb += [mul.a.eq(x[:width]), mul.b.eq(y)]
            p = Signal(32, name=name)
            m.d.comb += p.eq(mul.p)
            return p

        pr = [product(f"product_{i}", count - 1, step) for i, (count, step) in enumerate([
            (la.rows, la.buf_row_step), (la.row_beats, la.buf_beat_step),
            (mmb.k_tiles, mmb.act_kstep), (mmb.m, mmb.act_stride)])]
        s3 = [Signal(48, name=f"partial_{i}") for i in range(4)]
        m.d.sync += [
            s3[0].eq(la.buf_row + pr[0]), s3[1].eq(pr[1]),
            s3[2].eq(mmb.act_row + pr[2]), s3[3].eq(pr[3]),
        ]
        last_act = Signal(48)        # LOAD_ACT: last buffer row written
        last_mm = Signal(48)         # MATMUL: last activation row read
        acc_end = Signal(18)
        param_end = Signal(18)
        store_buf_end = Signal(18)
        store_lo_end = Signal(18)
        store_scale_end = Signal(18)     # rowscale: the row-scale slots read
        vec_scale_end = Signal(18)       # DYNQ, a norm's dynq: the row-scale slots written
        vec_a_lo_end = Signal(33)        # wide: the low halves of a, b and the result
        vec_b_lo_end = Signal(33)
        vec_dst_lo_end = Signal(33)
        # VEC: rows * count, and for interleaved vectors (rows - 1) * stride (stage 2).
        vec_total = product("vec_total", b.vec.rows, b.vec.count)
        vec_strided = product("vec_strided", b.vec.rows - 1, b.vec.stride)
        vec_span = Signal(33)            # rows from a vector's first to the last's end
        vec_a_end = Signal(33)
        vec_b_end = Signal(33)
        vec_dst_end = Signal(33)
        vec_gain_end = Signal(18)        # normalizations: b_row + 2 (4 with beta) * rows
        vec_table_end = Signal(40)       # TABLE: entries written, rows * count * R
        bad_count = Signal()
        m.d.sync += [
            last_act.eq(s3[0] + s3[1]),
            last_mm.eq(s3[2] + s3[3]),
            acc_end.eq(Mux(op == isa.Op.MATMUL, b.matmul.acc_row + b.matmul.m,
                           b.store.acc_row + b.store.m)),
            param_end.eq(Mux(op == isa.Op.LOAD_PARAM,
                             b.load_param.param_tile + b.load_param.n_tiles,
                             b.store.param_tile + 1)),
            store_buf_end.eq(b.store.buf_row + b.store.m),
            store_lo_end.eq(b.store.lo_row + b.store.m),
            store_scale_end.eq(b.store.scale_row + b.store.m),
            vec_scale_end.eq(Mux(b.vec.dynq, b.vec.b_lo_row, b.vec.b_row) + b.vec.count),
            vec_a_lo_end.eq(b.vec.a_lo_row + vec_span),
            vec_b_lo_end.eq(b.vec.b_lo_row + Mux(b.vec.b_repeat, b.vec.rows, vec_span)),
            vec_dst_lo_end.eq(b.vec.dst_lo_row + vec_span),
            vec_span.eq(Mux(b.vec.stride == 0, vec_total, b.vec.count + vec_strided)),
            vec_a_end.eq(b.vec.a_row + Mux(b.vec.vop == isa.VecOp.TABLE, vec_total,
                                           vec_span)),
            vec_b_end.eq(b.vec.b_row + Mux(b.vec.b_repeat, b.vec.rows, vec_span)),
            vec_dst_end.eq(b.vec.dst_row + vec_span),
            vec_gain_end.eq(b.vec.b_row + Mux(b.vec.beta, b.vec.rows << 2,    # norm_param_rows
                                              b.vec.rows << 1)),
            vec_table_end.eq(vec_total << ceil_log2(cfg.rows)),
        ]
        with m.Switch(op):
            for code, spec in isa.OPS.items():
                if spec.counts:
                    body = getattr(b, code.name.lower())
                    zero = 0
                    for name in spec.counts:
                        zero = zero | (getattr(body, name) == 0)
                    if code == isa.Op.VEC:          # a rotary embedding has two halves
                        zero = zero | ((body.vop == isa.VecOp.ROPE) & body.rows[0])
                    if code == isa.Op.MATMUL:       # so have the rows of a pair
                        zero = zero | (body.pair & body.m[0])
                    with m.Case(code):
                        m.d.sync += bad_count.eq(zero)
            with m.Default():
                m.d.sync += bad_count.eq(0)

        bad_buffer = Signal()
        acc_depth = 2 * cfg.acc_buf_rows
        with m.Switch(op):
            with m.Case(isa.Op.LOAD_ACT):
                m.d.comb += bad_buffer.eq(last_act >= cfg.act_buf_rows)
            with m.Case(isa.Op.LOAD_PARAM):
                m.d.comb += bad_buffer.eq(param_end > cfg.param_tiles)
            with m.Case(isa.Op.MATMUL):
                m.d.comb += bad_buffer.eq((last_mm >= cfg.act_buf_rows) | (acc_end > acc_depth))
            with m.Case(isa.Op.STORE):
                m.d.comb += bad_buffer.eq((acc_end > acc_depth) | (param_end > cfg.param_tiles)
                                          | (b.store.to_buf
                                             & ((store_buf_end > cfg.act_buf_rows)
                                                | b.store.raw))
                                          | (b.store.transpose
                                             & (b.store.raw | b.store.to_buf))
                                          | (b.store.wide
                                             & (b.store.raw | b.store.transpose
                                                | (b.store.to_buf
                                                   & (store_lo_end > cfg.act_buf_rows))))
                                          | (b.store.rowscale
                                             & (b.store.raw
                                                | (store_scale_end > cfg.rowscale_slots))))
            with m.Case(isa.Op.VEC):
                vop = b.vec.vop
                binary = (vop == isa.VecOp.ADD) | (vop == isa.VecOp.MUL)
                table = vop == isa.VecOp.TABLE
                norm = (vop == isa.VecOp.LAYERNORM) | (vop == isa.VecOp.RMSNORM)
                rope = vop == isa.VecOp.ROPE
                dynq = vop == isa.VecOp.DYNQ
                m.d.comb += bad_buffer.eq(
                    (vec_a_end > cfg.act_buf_rows)
                    | ((binary | rope) & (vec_b_end > cfg.act_buf_rows))
                    | (norm & (vec_gain_end > cfg.act_buf_rows))
                    | (~table & (vec_dst_end > cfg.act_buf_rows))
                    | (b.vec.wide & (vec_a_lo_end > cfg.act_buf_rows))
                    | (b.vec.wide & (binary | rope)
                       & ((vec_b_lo_end > cfg.act_buf_rows)
                          | (vec_dst_lo_end > cfg.act_buf_rows)))
                    | (b.vec.wide_out & (vec_dst_lo_end > cfg.act_buf_rows))
                    | (~table & (b.vec.stride != 0) & (b.vec.stride < b.vec.count))
                    | (b.vec.table >= cfg.vec_tables)
                    | (table & (vec_table_end > isa.TABLE_ENTRIES))
                    | ((dynq | b.vec.dynq) & (vec_scale_end > cfg.rowscale_slots)))
        defined = Signal()
        with m.Switch(op):
            with m.Case(*isa.OPS):
                m.d.comb += defined.eq(1)

        error = Signal(4)
        raise_error = Signal()
        m.d.comb += [self.error.eq(error), self.error_valid.eq(raise_error)]
        with m.If(raise_error):
            m.d.sync += error.eq(self.error)

        mm = Signal(matmul_entry())
        m.d.comb += [mm.hdr.eq(cur.header), mm.body.eq(b.matmul)]
        m.d.comb += [self.load_q.payload.eq(cur), self.store_q.payload.eq(cur),
                     self.vec_q.payload.eq(cur), self.exec_q.payload.eq(mm)]

        with m.FSM(name="dispatch"):
            with m.State("IDLE"):
                with m.If(self.start):
                    if per == 1:
                        first, units = self.prog_addr, self.prog_len
                    else:
                        # The beats from prog_addr's to the last instruction's; the
                        # instructions before prog_addr in its beat are skipped.
                        shift = ceil_log2(cfg.bus_bytes)
                        skip = self.prog_addr[ceil_log2(isa.INSN_BYTES):shift]
                        first = Cat(Signal(shift), self.prog_addr[shift:])
                        units = Signal(32)
                        m.d.comb += units.eq((self.prog_len + skip + per - 1)
                                             >> ceil_log2(per))
                        m.d.sync += sub.eq(skip)
                    m.d.sync += [running.eq(1), f_addr.eq(first), pos.eq(self.position),
                                 f_left.eq(units), left.eq(self.prog_len),
                                 chunk.eq(Mux(units < chunk_max, units, chunk_max)),
                                 error.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                with m.If(self.abort):
                    m.next = "HALT"
                with m.Elif(left == 0):
                    m.d.comb += [raise_error.eq(1), self.error.eq(isa.Error.NO_END)]
                    m.next = "HALT"
                with m.Elif(word_valid):
                    m.d.comb += take_word.eq(1)
                    m.d.sync += [cur.eq(insn), left.eq(left - 1), check.eq(0)]
                    with m.If(insn.header.rel | insn.header.guard):
                        m.next = "POSITION"
                    with m.Else():
                        m.next = "CHECK"
                with m.Else():
                    m.d.comb += self.stall_insn.eq(1)
            with m.State("POSITION"):        # guard, then the position fields' offsets
                with m.If(skip):
                    m.next = "FETCH"
                with m.Else():
                    with m.If(cur.header.rel):
                        with m.Switch(op):
                            for code, spec in isa.OPS.items():
                                if spec.rel:
                                    body = getattr(b, code.name.lower())
                                    with m.Case(code):
                                        for name, term in spec.rel:
                                            field = getattr(body, name)
                                            m.d.sync += field.eq(field + terms[term])
                    m.next = "CHECK"
            with m.State("CHECK"):           # the range pipeline fills from `cur`
                m.d.sync += check.eq(check + 1)
                with m.If(check == self.CHECK_CYCLES - 1):
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(self.abort):
                    m.next = "HALT"
                with m.Elif(~defined):
                    m.d.comb += [raise_error.eq(1), self.error.eq(isa.Error.BAD_OPCODE)]
                    m.next = "HALT"
                with m.Elif(bad_count):
                    m.d.comb += [raise_error.eq(1), self.error.eq(isa.Error.BAD_COUNT)]
                    m.next = "HALT"
                with m.Elif((op == isa.Op.MATMUL) & (b.matmul.wfmt > max(isa.WeightFormat))):
                    m.d.comb += [raise_error.eq(1), self.error.eq(isa.Error.BAD_FORMAT)]
                    m.next = "HALT"
                with m.Elif((op == isa.Op.VEC)
                            & ((b.vec.vop > max(isa.VecOp))
                               | (b.vec.wide & ~b.vec.vop.matches(*isa.WIDE_VOPS))
                               | (b.vec.wide_out
                                  & ~b.vec.vop.matches(*isa.WIDE_OUT_VOPS))
                               | ((b.vec.beta | b.vec.dynq) & ~b.vec.vop.matches(*isa.NORM_VOPS))
                               | (b.vec.dynq & b.vec.wide_out))):
                    m.d.comb += [raise_error.eq(1), self.error.eq(isa.Error.BAD_VOP)]
                    m.next = "HALT"
                with m.Elif(bad_buffer):
                    m.d.comb += [raise_error.eq(1), self.error.eq(isa.Error.BAD_BUFFER)]
                    m.next = "HALT"
                with m.Else():
                    queues = {isa.Unit.LOAD: self.load_q, isa.Unit.EXEC: self.exec_q,
                              isa.Unit.STORE: self.store_q, isa.Unit.VECTOR: self.vec_q}
                    with m.Switch(op):
                        for unit, queue in queues.items():
                            codes = [c for c, spec in isa.OPS.items() if spec.unit == unit]
                            with m.Case(*codes):
                                m.d.comb += queue.valid.eq(1)
                                with m.If(queue.ready):
                                    m.d.comb += self.dispatched.eq(1)
                                    m.next = "FETCH"
                        with m.Default():            # FENCE, END
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(self.abort):
                    m.next = "HALT"
                with m.Elif(Mux((op == isa.Op.FENCE) & b.fence.stores,
                                self.stores_idle, self.units_idle)):
                    m.d.comb += self.dispatched.eq(1)
                    with m.If(op == isa.Op.END):
                        m.d.sync += [f_left.eq(0), chunk.eq(0)]
                        m.next = "FLUSH"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FLUSH"):
                # Instructions fetched past END are dropped once they have landed, so
                # the bus is quiet and the next start begins with an empty queue.
                m.d.comb += flush.eq(1)
                with m.If((reserved == 0) | ((reserved == popped) & ~asked)):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"
            with m.State("HALT"):
                # Stopped by an error: wait for the fetches already asked for to land,
                # then sit here until reset.
                m.d.sync += running.eq(0)
        return m
