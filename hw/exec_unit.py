"""The exec unit: streams weights into the array and activation rows through it.

It owns the :class:`~hw.array.SystolicArray` and runs ``MATMUL`` instructions (see
:mod:`hw.isa`) in program order.
"""

import math

from amaranth import Module, Signal, Mux
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa, layouts
from .array import SystolicArray
from .dma import dma_command

__all__ = ["ExecUnit", "matmul_entry"]

TILE_COUNTER_BITS = 16


def matmul_entry():
    """A ``MATMUL`` instruction as the dispatcher queues it: header flags and body."""
    return data.StructLayout({
        "hdr": isa.header_layout,
        "body": isa.body_layouts[isa.Op.MATMUL],
    })


class ExecUnit(wiring.Component):
    """Runs ``MATMUL`` instructions: weight streaming, tile sequencing, accumulation.

    Three processes run side by side:

    * **Weight streamer.** As soon as a ``MATMUL`` is accepted, it requests its weights
      (``k_tiles * R`` rows of ``C`` bytes, contiguous from ``weight_addr``) on ``wcmd``
      in chunks of a fixed ``chunk`` rows (the largest divisor of ``R`` not above
      ``weight_fifo_rows // 4``), never more than the weight FIFO has room for (a credit
      count), so the read DMA never waits on this unit. Weights are fetched ahead across
      instruction boundaries. The chunk being fixed, every request is the same size and
      the streamer counts chunks: no compare or multiply sits in front of ``wcmd``.
    * **Weight loader.** Moves one row per cycle from the FIFO into the array's free bank:
      tile ``j`` may be written once every row of tile ``j - 2`` (same bank) has entered
      the array.
    * **Activation issuer.** For each instruction, after taking its tokens (``pop_prev``:
      data loaded, ``pop_next``: accumulator free), reads activation row
      ``act_row + i*act_kstep + m*act_stride`` for every k-tile ``i`` and row ``m``, one
      per cycle, as soon as tile ``i``'s weights are in. The row enters the array one
      cycle later (buffer read latency); its result leaves ``R + C + 1`` cycles after that and
      updates accumulator row ``acc_row + m`` (overwrite on the first k-tile unless
      ``accumulate``).

    Throughput and latency
    ----------------------
    One activation row (``R*C`` MACs) per cycle while weights keep up: a k-tile of ``M``
    rows needs ``R`` weight rows, so with ``M >= R`` and the weight FIFO fed at one row
    per cycle, tiles and instructions follow each other without a bubble. With ``M < R``
    (decode) the unit runs at the weight bandwidth: one tile per ``R`` cycles. The last
    result of an instruction is in the accumulator ``R + C + 5`` cycles after its last row
    was issued; ``push_next`` fires then, ``push_prev`` right after the last row is read.

    Ports
    -----
    insn : In(stream(matmul_entry()))
        Instructions from the dispatcher.
    wcmd : Out(stream(dma_command))
        Weight read requests to the read DMA; ``wdata`` brings the beats back in order.
    wdata : In(stream(8 * bus_bytes))
        Weight rows; always accepted (credits guarantee room).
    act_rd_addr, act_rd_en : Out; act_rd_data : In
        The activation buffer's read port (latency 1).
    acc_* : Out
        The accumulator's update port (one row per cycle, no back-pressure).
    l2e_avail, s2e_avail : In; l2e_take, s2e_take, e2l_give, e2s_give : Out
        Token counters: ``*_avail`` is high while a token is there; ``*_take`` and
        ``*_give`` are one-cycle pulses.
    abort : In
        Stop issuing (an error elsewhere); requests already made still complete.
    idle : Out
        No instruction queued or running, no row in flight, no weight expected.
    array_active, stall_weight, stall_act, stall_store, stall_insn : Out
        Performance events, one cycle each: an activation row entered the array; the
        issuer waited for weights; for a load token; for a store token; for an
        instruction.
    """

    def __init__(self, cfg, *, queue_depth=4):
        self.cfg = cfg
        self.queue_depth = queue_depth
        self.chunk = math.gcd(cfg.rows, max(1, cfg.weight_fifo_rows // 4))
        act_aw = ceil_log2(cfg.act_buf_rows)
        acc_aw = ceil_log2(2 * cfg.acc_buf_rows)
        super().__init__({
            "insn": In(stream.Signature(matmul_entry())),
            "wcmd": Out(stream.Signature(dma_command(cfg))),
            "wdata": In(stream.Signature(8 * cfg.bus_bytes)),
            "act_rd_addr": Out(act_aw), "act_rd_en": Out(1),
            "act_rd_data": In(layouts.act_row(cfg)),
            "acc_valid": Out(1), "acc_addr": Out(acc_aw), "acc_accumulate": Out(1),
            "acc_data": Out(layouts.psum_row(cfg)),
            "l2e_avail": In(1), "s2e_avail": In(1),
            "l2e_take": Out(1), "s2e_take": Out(1), "e2l_give": Out(1), "e2s_give": Out(1),
            "abort": In(1),
            "idle": Out(1),
            "array_active": Out(1), "stall_weight": Out(1), "stall_act": Out(1),
            "stall_store": Out(1), "stall_insn": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        entry = matmul_entry()

        m.submodules.array = array = SystolicArray(cfg)

        # Every accepted instruction goes to two queues: weights and activations.
        m.submodules.wq = wq = fifo.SyncFIFOBuffered(width=entry.size, depth=self.queue_depth)
        m.submodules.aq = aq = fifo.SyncFIFOBuffered(width=entry.size, depth=self.queue_depth)
        m.d.comb += [
            self.insn.ready.eq(wq.w_rdy & aq.w_rdy),
            wq.w_data.eq(self.insn.payload), aq.w_data.eq(self.insn.payload),
            wq.w_en.eq(self.insn.valid & self.insn.ready),
            aq.w_en.eq(self.insn.valid & self.insn.ready),
        ]

        # ---- Weight streamer ------------------------------------------------------------
        depth = cfg.weight_fifo_rows
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=8 * C, depth=depth)
        reserved = Signal(range(depth + 1))     # rows requested and not yet in the array
        w_addr = Signal(cfg.addr_width)
        chunk = self.chunk
        w_left = Signal(32)                     # chunks of the current instruction to request
        w_busy = Signal()
        w_head = Signal(entry)
        m.d.comb += w_head.eq(wq.r_data)
        with m.If(~w_busy):
            m.d.comb += wq.r_en.eq(~self.abort)
            with m.If(wq.r_rdy & ~self.abort):
                m.d.sync += [
                    w_busy.eq(1),
                    w_addr.eq(w_head.body.weight_addr),
                    w_left.eq(w_head.body.k_tiles * (R // chunk)),
                ]
        with m.Else():
            room = Signal()
            m.d.comb += room.eq(reserved <= depth - chunk)
            m.d.comb += [
                self.wcmd.valid.eq(room & ~self.abort),
                self.wcmd.payload.addr.eq(w_addr),
                self.wcmd.payload.rows.eq(1),
                self.wcmd.payload.row_beats.eq(chunk),
                self.wcmd.payload.stride.eq(0),
            ]
            with m.If(self.wcmd.valid & self.wcmd.ready):
                m.d.sync += [
                    w_addr.eq(w_addr + chunk * cfg.bus_bytes),
                    w_left.eq(w_left - 1),
                ]
                with m.If(w_left == 1):
                    m.d.sync += w_busy.eq(0)
        m.d.comb += [
            wfifo.w_data.eq(self.wdata.payload),
            wfifo.w_en.eq(self.wdata.valid),
            self.wdata.ready.eq(1),
        ]

        # ---- Weight loader ---------------------------------------------------------------
        loaded = Signal(TILE_COUNTER_BITS)      # tiles fully written into the array
        issued = Signal(TILE_COUNTER_BITS)      # tiles whose rows have all been issued
        wl_row = Signal(range(R))
        bank_free = Signal()
        m.d.comb += bank_free.eq((loaded - issued)[:TILE_COUNTER_BITS] <= 1)
        load_row = Signal()
        m.d.comb += load_row.eq(wfifo.r_rdy & bank_free)
        m.d.comb += [
            wfifo.r_en.eq(load_row),
            array.weight.valid.eq(load_row),
            array.weight.payload.data.eq(wfifo.r_data),
            array.weight.payload.row.eq(wl_row),
            array.weight.payload.bank.eq(loaded[0]),
        ]
        requested = Signal()
        m.d.comb += requested.eq(self.wcmd.valid & self.wcmd.ready)
        m.d.sync += reserved.eq(reserved + Mux(requested, chunk, 0) - load_row)
        with m.If(load_row):
            m.d.sync += wl_row.eq(Mux(wl_row == R - 1, 0, wl_row + 1))
            with m.If(wl_row == R - 1):
                m.d.sync += loaded.eq(loaded + 1)

        # ---- Activation issuer -------------------------------------------------------------
        cur = Signal(entry)
        k_left = Signal(16)          # k-tiles left after the current one
        m_idx = Signal(16)
        row_addr = Signal(32)        # buffer row of (i, m)
        tile_base = Signal(32)       # buffer row of (i, 0)
        first_tile = Signal()
        issue = Signal()
        weights_in = Signal()
        m.d.comb += weights_in.eq((loaded - issued)[:TILE_COUNTER_BITS] != 0)

        with m.FSM(name="issuer") as issuer:
            with m.State("IDLE"):
                m.d.comb += aq.r_en.eq(~self.abort)
                with m.If(aq.r_rdy & ~self.abort):
                    m.d.sync += cur.eq(aq.r_data)
                    m.next = "TOKENS"
                with m.Elif(~self.abort):
                    m.d.comb += self.stall_insn.eq(1)
            with m.State("TOKENS"):
                need_l = cur.hdr.pop_prev & ~self.l2e_avail
                need_s = cur.hdr.pop_next & ~self.s2e_avail
                m.d.comb += [self.stall_act.eq(need_l), self.stall_store.eq(need_s & ~need_l)]
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(~need_l & ~need_s):
                    m.d.comb += [self.l2e_take.eq(cur.hdr.pop_prev),
                                 self.s2e_take.eq(cur.hdr.pop_next)]
                    m.d.sync += [
                        k_left.eq(cur.body.k_tiles - 1),
                        m_idx.eq(0),
                        row_addr.eq(cur.body.act_row),
                        tile_base.eq(cur.body.act_row),
                        first_tile.eq(1),
                    ]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(weights_in):
                    m.d.comb += issue.eq(1)
                    last_row = m_idx == cur.body.m - 1
                    with m.If(last_row):
                        m.d.sync += [
                            issued.eq(issued + 1),
                            m_idx.eq(0),
                            first_tile.eq(0),
                            tile_base.eq(tile_base + cur.body.act_kstep),
                            row_addr.eq(tile_base + cur.body.act_kstep),
                            k_left.eq(k_left - 1),
                        ]
                        with m.If(k_left == 0):
                            m.d.comb += self.e2l_give.eq(cur.hdr.push_prev)
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [m_idx.eq(m_idx + 1),
                                     row_addr.eq(row_addr + cur.body.act_stride)]
                with m.Else():
                    m.d.comb += self.stall_weight.eq(1)

        last_of_insn = Signal()
        m.d.comb += last_of_insn.eq(issue & (m_idx == cur.body.m - 1) & (k_left == 0))
        m.d.comb += [self.act_rd_addr.eq(row_addr), self.act_rd_en.eq(issue)]

        # The row enters the array one cycle after its read.
        s1 = Signal(data.StructLayout({"valid": 1, "bank": 1}))
        m.d.sync += [s1.valid.eq(issue), s1.bank.eq(issued[0])]
        m.d.comb += [
            array.act.valid.eq(s1.valid),
            array.act.payload.bank.eq(s1.bank),
            array.act.payload.data.eq(self.act_rd_data),
            self.array_active.eq(s1.valid),
        ]

        # Where each result goes travels beside the row: 1 + R + C + 1 cycles.
        meta = data.StructLayout({"valid": 1, "addr": len(self.acc_addr), "accumulate": 1,
                                  "push": 1})
        tag = Signal(meta)
        m.d.comb += [
            tag.valid.eq(issue),
            tag.addr.eq(cur.body.acc_row + m_idx),
            tag.accumulate.eq(cur.body.accumulate | ~first_tile),
            tag.push.eq(last_of_insn & cur.hdr.push_next),
        ]
        for stage in range(1 + cfg.latency):
            tag_q = Signal(meta, name=f"meta_{stage}")
            m.d.sync += tag_q.eq(tag)
            tag = tag_q
        m.d.comb += [
            self.acc_valid.eq(array.result.valid),
            self.acc_addr.eq(tag.addr),
            self.acc_accumulate.eq(tag.accumulate),
            self.acc_data.eq(array.result.payload),
        ]
        # The accumulator writes a row at the end of the second cycle after it arrives
        # (Accumulator: 3-stage read-modify-write): the token goes out one cycle later
        # still, so the store unit reads it written.
        push_q1 = Signal()
        push_q2 = Signal()
        push_q3 = Signal()
        m.d.sync += [push_q1.eq(tag.push & tag.valid), push_q2.eq(push_q1),
                     push_q3.eq(push_q2)]
        m.d.comb += self.e2s_give.eq(push_q3)

        # ---- Idle ---------------------------------------------------------------------------
        in_flight = Signal(range(cfg.latency + 8))
        m.d.sync += in_flight.eq(in_flight + issue - (self.acc_valid))
        # Not idle while an instruction is taken (waiting for its tokens or its weights):
        # FENCE and END must wait for it, even when nothing is in flight yet.
        m.d.comb += self.idle.eq(issuer.ongoing("IDLE") & ~wq.r_rdy & ~aq.r_rdy & ~w_busy
                                 & (reserved == 0)
                                 & (in_flight == 0) & ~push_q1 & ~push_q2 & ~push_q3
                                 & ~s1.valid & ~self.insn.valid)
        return m
