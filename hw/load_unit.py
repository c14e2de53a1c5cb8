"""The load unit: ``LOAD_ACT`` and ``LOAD_PARAM`` from memory into on-chip buffers."""

from amaranth import Module, Signal, Mux
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa
from .arith import times_const
from .dma import dma_command

__all__ = ["LoadUnit"]


class LoadUnit(wiring.Component):
    """Runs ``LOAD_ACT`` and ``LOAD_PARAM`` (see :mod:`hw.isa`) in program order.

    An *issuer* takes an instruction, waits for its ``pop_next`` token (exec freed the
    buffer), sends one 2-D command to the read DMA and hands the instruction to a
    *receiver*, which writes every returning beat to its buffer row (activation buffer:
    ``buf_row + r*buf_row_step + b*buf_beat_step``; parameter buffer: ``12*param_tile +
    beat``) and, after the last beat, gives the ``push_next`` token ("data loaded"). The
    issuer runs up to three instructions ahead of the receiver, so back-to-back loads keep
    the bus busy.

    Latency: command out two cycles after the instruction is taken (when its token is
    there). Throughput: one beat per cycle. Back-pressure: none on ``data`` (SRAM writes
    always proceed).

    Ports
    -----
    insn : In(stream(isa.insn_layout))
    cmd : Out(stream(dma_command)); data : In(stream(8 * bus_bytes))
    act_addr, act_data, act_en : Out
        Activation buffer write port (the bus beat is one row of ``R`` int8).
    param_addr, param_data, param_en : Out
        Parameter buffer write port.
    e2l_avail : In; e2l_take, l2e_give : Out
        Tokens (one-cycle pulses).
    abort : In; idle : Out   idle: nothing queued, running or in flight, no pulse driven;
                             while idle and no ``insn.valid`` the state does not change
                             (the clock gate of hw/clock_gate.py relies on it)
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "insn": In(stream.Signature(isa.insn_layout)),
            "cmd": Out(stream.Signature(dma_command(cfg))),
            "data": In(stream.Signature(8 * cfg.bus_bytes)),
            "act_addr": Out(ceil_log2(cfg.act_buf_rows)), "act_data": Out(8 * cfg.bus_bytes),
            "act_en": Out(1),
            "param_addr": Out(ceil_log2(cfg.param_tiles * isa.PARAM_BEATS)),
            "param_data": Out(8 * cfg.bus_bytes), "param_en": Out(1),
            "e2l_avail": In(1), "e2l_take": Out(1), "l2e_give": Out(1),
            "abort": In(1), "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        L = isa.insn_layout

        # ---- Issuer -------------------------------------------------------------------
        m.submodules.jobs = jobs = fifo.SyncFIFOBuffered(width=L.size, depth=3)
        cur = Signal(L)
        is_param = Signal()
        param_beats = Signal(32)     # n_tiles * PARAM_BEATS, formed in TOKEN
        m.d.comb += is_param.eq(cur.header.opcode == isa.Op.LOAD_PARAM)
        with m.FSM(name="issuer") as issuer:
            with m.State("IDLE"):
                m.d.comb += self.insn.ready.eq(~self.abort)
                with m.If(self.insn.valid & ~self.abort):
                    m.d.sync += cur.eq(self.insn.payload)
                    m.next = "TOKEN"
            with m.State("TOKEN"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(~cur.header.pop_next | self.e2l_avail):
                    m.d.comb += self.e2l_take.eq(cur.header.pop_next)
                    m.next = "SEND"
                m.d.sync += param_beats.eq(times_const(cur.body.load_param.n_tiles,
                                                       isa.PARAM_BEATS))
            with m.State("SEND"):
                act, par = cur.body.load_act, cur.body.load_param
                with m.If(is_param):
                    m.d.comb += [
                        self.cmd.payload.addr.eq(par.dram_addr),
                        self.cmd.payload.rows.eq(1),
                        self.cmd.payload.row_beats.eq(param_beats),
                        self.cmd.payload.stride.eq(0),
                    ]
                with m.Else():
                    m.d.comb += [
                        self.cmd.payload.addr.eq(act.dram_addr),
                        self.cmd.payload.rows.eq(act.rows),
                        self.cmd.payload.row_beats.eq(act.row_beats),
                        self.cmd.payload.stride.eq(act.dram_stride),
                    ]
                m.d.comb += [self.cmd.valid.eq(jobs.w_rdy & ~self.abort),
                             jobs.w_data.eq(cur), jobs.w_en.eq(self.cmd.valid & self.cmd.ready)]
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(self.cmd.valid & self.cmd.ready):
                    m.next = "IDLE"

        # ---- Receiver -----------------------------------------------------------------
        job = Signal(L)              # the instruction whose beats are arriving
        j_param = Signal()
        m.d.comb += j_param.eq(job.header.opcode == isa.Op.LOAD_PARAM)
        active = Signal()
        beat = Signal(32)            # beat within the row (LOAD_ACT)
        p_left = Signal(32)          # beats of a LOAD_PARAM still to come
        row = Signal(16)
        row_base = Signal(32)        # buffer row of (r, 0)
        addr = Signal(32)            # buffer row of (r, b)
        nxt = Signal(L)
        m.d.comb += nxt.eq(jobs.r_data)
        with m.If(~active & jobs.r_rdy):
            m.d.comb += jobs.r_en.eq(1)
            m.d.sync += [
                active.eq(1), job.eq(nxt), beat.eq(0), row.eq(0),
                row_base.eq(nxt.body.load_act.buf_row),
                p_left.eq(times_const(nxt.body.load_param.n_tiles, isa.PARAM_BEATS)),
                addr.eq(Mux(nxt.header.opcode == isa.Op.LOAD_PARAM,
                            times_const(nxt.body.load_param.param_tile, isa.PARAM_BEATS),
                            nxt.body.load_act.buf_row)),
            ]
        m.d.comb += [
            self.data.ready.eq(active),
            self.act_addr.eq(addr), self.act_data.eq(self.data.payload),
            self.param_addr.eq(addr), self.param_data.eq(self.data.payload),
        ]
        act = job.body.load_act
        last = Signal()
        with m.If(active & self.data.valid):
            m.d.comb += [self.param_en.eq(j_param), self.act_en.eq(~j_param)]
            with m.If(j_param):
                m.d.comb += last.eq(p_left == 1)
                m.d.sync += [p_left.eq(p_left - 1), addr.eq(addr + 1)]
            with m.Else():
                end_of_row = beat == act.row_beats - 1
                m.d.comb += last.eq(end_of_row & (row == act.rows - 1))
                with m.If(end_of_row):
                    m.d.sync += [beat.eq(0), row.eq(row + 1),
                                 row_base.eq(row_base + act.buf_row_step),
                                 addr.eq(row_base + act.buf_row_step)]
                with m.Else():
                    m.d.sync += [beat.eq(beat + 1), addr.eq(addr + act.buf_beat_step)]
            with m.If(last):
                m.d.sync += active.eq(0)
                m.d.comb += self.l2e_give.eq(job.header.push_next)

        # The jobs FIFO's level, not its output's valid: a job spends a cycle inside the
        # buffered FIFO before it shows.
        m.d.comb += self.idle.eq(~active & (jobs.level == 0) & ~self.insn.valid
                                 & issuer.ongoing("IDLE"))
        return m
