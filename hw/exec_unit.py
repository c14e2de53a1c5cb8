"""The exec unit: streams weights into the array and activation rows through it.

It owns the :class:`~hw.array.SystolicArray` and runs ``MATMUL`` instructions (see
:mod:`hw.isa`) in program order.
"""

import math

from amaranth import C as C0, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import isa, layouts
from .array import SystolicArray
from .dsp import Multiplier
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

    Four processes run side by side:

    * **Weight streamer.** As soon as a ``MATMUL`` is accepted, it requests its weights on
      ``wcmd``, contiguous from ``weight_addr``, never more than the weight FIFO has room
      for (a credit count), so the read DMA never waits on this unit. ``INT8``: ``k_tiles
      * R`` rows of ``C`` bytes in chunks of a fixed ``chunk`` rows (the largest divisor of
      ``R`` not above ``weight_fifo_rows // 4``). ``Q4`` and ``Q8``: one request per block
      group (its scale beats and up to ``weight_block / R`` tiles of codes,
      ``config.q4_group_beats`` or ``q8_group_beats`` for a full group) when a group fits
      in half the FIFO, so that two requests are in flight; else one per tile, the
      group's scale beats in front of its first tile. Weights are fetched ahead across
      instruction boundaries.
    * **Weight loader.** Moves one beat per cycle from the FIFO into the array's free bank:
      one int8 row, or two rows of 4-bit codes (``pair``), so a tile takes ``R`` or
      ``R / 2`` cycles. Tile ``j`` may be written once every row of tile ``j - 2`` (same
      bank) has entered the array. A ``Q4`` group's first two beats (``C`` uint8 scales,
      ``C`` int8 offsets) go to a scale slot instead, once the slot
      ``config.scale_slots`` groups back has been used by its last result row.
    * **Activation issuer.** For each instruction, after taking its tokens (``pop_prev``:
      data loaded, ``pop_next``: accumulator free, ``pop_side``: vector rows ready),
      reads activation row ``act_row + i*act_kstep + m*act_stride`` for every k-tile
      ``i`` and row ``m``, one per cycle, as soon as tile ``i``'s weights are in. The row enters the array one
      cycle later (buffer read latency); its result leaves ``R + C + 1`` cycles after that.
    * **Block scaler.** Every result row passes it in ``config.scale_latency`` (5) cycles,
      whatever its format, and then updates accumulator row ``acc_row + m`` (overwrite on
      the first k-tile unless ``accumulate``). An ``INT8`` row passes unchanged. A ``Q4``
      row ``P`` (``C`` sums of codes times activations) becomes, per channel ``c``,
      ``d[c] * (16 * P[c] - 120 * S + f[c] * S)``, where ``S`` is the sum of the row's
      ``R`` activations (added up as the row enters the array and carried beside it) and
      ``d``, ``f`` the scale and offset of the tile's block: exactly ``a @ W`` with the
      integer weights of ``sw/q4.py``. Three multipliers per channel, each at most
      18 x 18 bits (one DSP block, with its own input and output registers on an ECP5:
      :class:`hw.dsp.Multiplier`) between registers: the offset's (8 x 13), then the
      scale's times the bracket's low 17 bits and times its high bits; the bracket's sum
      and the halves' sum each in a stage of their own.

    Throughput and latency
    ----------------------
    One activation row (``R*C`` MACs) per cycle while weights keep up: a k-tile of ``M``
    rows needs ``R`` weight rows (``R / 2`` beats in ``Q4``), so with ``M >= R`` and the
    weight FIFO fed at one beat per cycle, tiles and instructions follow each other
    without a bubble. With ``M`` small (decode) the unit runs at the weight bandwidth: one
    tile per ``R`` cycles in ``INT8``, per ``R / 2`` cycles plus the scale beats in ``Q4``.
    The last result of an instruction is in the accumulator ``R + C + 10`` cycles after its
    last row was issued; ``push_next`` fires then, ``push_prev`` right after the last row
    is read.

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
    l2e_avail, s2e_avail, v2e_avail : In; l2e_take, s2e_take, v2e_take, e2l_give,
    e2s_give, e2v_give : Out
        Token counters: ``*_avail`` is high while a token is there; ``*_take`` and
        ``*_give`` are one-cycle pulses. The vector unit's (``pop_side``: rows ready;
        ``push_side``: rows read) are taken and given with the load unit's.
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
            "acc_shr8": Out(1),
            "acc_data": Out(layouts.psum_row(cfg)),
            "l2e_avail": In(1), "s2e_avail": In(1), "v2e_avail": In(1),
            "l2e_take": Out(1), "s2e_take": Out(1), "v2e_take": Out(1),
            "e2l_give": Out(1), "e2s_give": Out(1), "e2v_give": Out(1),
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
        # What the loader needs of each instruction, in the order the streamer takes them.
        load_entry = data.StructLayout({"q4": 1, "q8": 1, "k_tiles": 16})
        m.submodules.lq = lq = fifo.SyncFIFOBuffered(width=load_entry.size, depth=8)
        reserved = Signal(range(depth + 1))     # beats requested and not yet consumed
        w_addr = Signal(cfg.addr_width)
        chunk = self.chunk
        tpb = cfg.block_tiles
        w_left = Signal(32)                     # int8: chunks of the instruction to request
        w_tiles = Signal(16)                    # Q4, Q8: tiles of the instruction to request
        w_q4 = Signal()
        w_q8 = Signal()
        w_busy = Signal()
        w_head = Signal(entry)
        m.d.comb += w_head.eq(wq.r_data)
        m.d.comb += [lq.w_data.eq(Cat(w_head.body.wfmt == isa.WeightFormat.Q4,
                                      w_head.body.wfmt == isa.WeightFormat.Q8,
                                      w_head.body.k_tiles))]
        # A block format's next request: a whole group (its scales and up to tpb tiles)
        # when a group fits in half the FIFO, so that two are in flight; else one tile,
        # the group's scales in front of its first tile.
        w_kidx = Signal(16)                     # Q4, Q8: tiles of the instruction requested
        group_tiles = Signal(range(tpb + 1))
        m.d.comb += group_tiles.eq(Mux(w_tiles >= tpb, tpb, w_tiles))
        first_of_group = Signal()
        m.d.comb += first_of_group.eq((w_kidx & (tpb - 1)) == 0)
        req_tiles = Signal(range(tpb + 1))      # tiles in the next request
        big = max(chunk, cfg.q4_group_beats, cfg.q8_group_beats)
        req = Signal(range(big + 1))
        for flag, scale_beats, tile_beats, group_beats in (
                (w_q4, cfg.q4_scale_beats, cfg.q4_tile_beats, cfg.q4_group_beats),
                (w_q8, cfg.q8_scale_beats, cfg.q8_tile_beats, cfg.q8_group_beats)):
            with m.If(flag):
                if group_beats <= depth // 2:
                    m.d.comb += [req_tiles.eq(group_tiles),
                                 req.eq(scale_beats + group_tiles * tile_beats)]
                else:
                    m.d.comb += [req_tiles.eq(1),
                                 req.eq(Mux(first_of_group, scale_beats, 0) + tile_beats)]
        with m.If(~w_q4 & ~w_q8):
            m.d.comb += req.eq(chunk)
        with m.If(~w_busy):
            m.d.comb += wq.r_en.eq(~self.abort & lq.w_rdy)
            with m.If(wq.r_rdy & lq.w_rdy & ~self.abort):
                m.d.comb += lq.w_en.eq(1)
                m.d.sync += [
                    w_busy.eq(1),
                    w_addr.eq(w_head.body.weight_addr),
                    w_q4.eq(w_head.body.wfmt == isa.WeightFormat.Q4),
                    w_q8.eq(w_head.body.wfmt == isa.WeightFormat.Q8),
                    w_left.eq(w_head.body.k_tiles * (R // chunk)),
                    w_tiles.eq(w_head.body.k_tiles),
                    w_kidx.eq(0),
                ]
        with m.Else():
            room = Signal()
            m.d.comb += room.eq(reserved + req <= depth)
            m.d.comb += [
                self.wcmd.valid.eq(room & ~self.abort),
                self.wcmd.payload.addr.eq(w_addr),
                self.wcmd.payload.rows.eq(1),
                self.wcmd.payload.row_beats.eq(req),
                self.wcmd.payload.stride.eq(0),
            ]
            with m.If(self.wcmd.valid & self.wcmd.ready):
                m.d.sync += [
                    w_addr.eq(w_addr + req * cfg.bus_bytes),
                    w_left.eq(w_left - 1),
                    w_tiles.eq(w_tiles - req_tiles),
                    w_kidx.eq(w_kidx + req_tiles),
                ]
                with m.If(Mux(w_q4 | w_q8, w_tiles == req_tiles, w_left == 1)):
                    m.d.sync += w_busy.eq(0)
        m.d.comb += [
            wfifo.w_data.eq(self.wdata.payload),
            wfifo.w_en.eq(self.wdata.valid),
            self.wdata.ready.eq(1),
        ]

        # ---- Weight loader ---------------------------------------------------------------
        # Q4 block scales: one slot per block group, written from the group's first beats,
        # read by the scaler when the group's rows come out of the array.
        slots = cfg.scale_slots
        sw_ = cfg.scale_width
        d_mem = Memory(shape=data.ArrayLayout(unsigned(sw_), C), depth=slots, init=[])
        f_mem = Memory(shape=data.ArrayLayout(signed(sw_), C), depth=slots, init=[])
        m.submodules.d_mem, m.submodules.f_mem = d_mem, f_mem
        groups_loaded = Signal(TILE_COUNTER_BITS)
        groups_retired = Signal(TILE_COUNTER_BITS)
        slot_free = Signal()
        m.d.comb += slot_free.eq((groups_loaded - groups_retired)[:TILE_COUNTER_BITS] < slots)

        loaded = Signal(TILE_COUNTER_BITS)      # tiles fully written into the array
        issued = Signal(TILE_COUNTER_BITS)      # tiles whose rows have all been issued
        wl_row = Signal(range(R))
        l_head = Signal(load_entry)
        m.d.comb += l_head.eq(lq.r_data)
        l_tile = Signal(16)                     # tile of the head instruction being loaded
        l_sb = Signal(range(cfg.q4_scale_beats + 1))   # scale beats of this group taken
        l_grouped = Signal()
        l_sbeats = Signal(range(cfg.q4_scale_beats + 1))
        m.d.comb += [l_grouped.eq(l_head.q4 | l_head.q8),
                     l_sbeats.eq(Mux(l_head.q4, cfg.q4_scale_beats, cfg.q8_scale_beats))]
        bank_free = Signal()
        m.d.comb += bank_free.eq((loaded - issued)[:TILE_COUNTER_BITS] <= 1)
        in_scales = Signal()
        m.d.comb += in_scales.eq(lq.r_rdy & l_grouped & (l_sb < l_sbeats))
        take_scale = Signal()
        m.d.comb += take_scale.eq(in_scales & wfifo.r_rdy & slot_free)
        load_row = Signal()
        m.d.comb += load_row.eq(lq.r_rdy & ~in_scales & wfifo.r_rdy & bank_free)
        slot = groups_loaded[:ceil_log2(slots)] if slots > 1 else C0(0, 1)
        d_wr, f_wr = d_mem.write_port(), f_mem.write_port()
        m.d.comb += [
            d_wr.addr.eq(slot), f_wr.addr.eq(slot),
            d_wr.data.eq(wfifo.r_data), f_wr.data.eq(wfifo.r_data),
            d_wr.en.eq(take_scale & (l_sb == 0)),
            f_wr.en.eq(take_scale & (l_sb == 1) & l_head.q4),
        ]
        with m.If(take_scale):
            m.d.sync += l_sb.eq(l_sb + 1)
        m.d.comb += [
            wfifo.r_en.eq(load_row | take_scale),
            array.weight.valid.eq(load_row),
            array.weight.payload.data.eq(wfifo.r_data),
            array.weight.payload.row.eq(wl_row),
            array.weight.payload.bank.eq(loaded[0]),
            array.weight.payload.pair.eq(l_head.q4),
        ]
        requested = Signal()
        m.d.comb += requested.eq(self.wcmd.valid & self.wcmd.ready)
        m.d.sync += reserved.eq(reserved + Mux(requested, req, 0) - wfifo.r_en)
        tile_end = Signal()
        m.d.comb += tile_end.eq(load_row & (wl_row == Mux(l_head.q4, R - 2, R - 1)))
        with m.If(load_row):
            m.d.sync += wl_row.eq(Mux(tile_end, 0, wl_row + 1 + l_head.q4))
        with m.If(tile_end):
            last_tile = l_tile == l_head.k_tiles - 1
            m.d.sync += [loaded.eq(loaded + 1), l_tile.eq(l_tile + 1)]
            with m.If(l_grouped & (last_tile | ((l_tile & (tpb - 1)) == tpb - 1))):
                m.d.sync += [l_sb.eq(0), groups_loaded.eq(groups_loaded + 1)]
            with m.If(last_tile):
                m.d.comb += lq.r_en.eq(1)
                m.d.sync += l_tile.eq(0)

        # ---- Activation issuer -------------------------------------------------------------
        cur = Signal(entry)
        k_left = Signal(16)          # k-tiles left after the current one
        m_idx = Signal(16)
        row_addr = Signal(32)        # buffer row of (i, m)
        tile_base = Signal(32)       # buffer row of (i, 0)
        first_tile = Signal()
        k_idx = Signal(16)           # k-tile of the current instruction
        i_group = Signal(TILE_COUNTER_BITS)    # Q4 block groups whose rows are all issued
        issue = Signal()
        weights_in = Signal()
        m.d.comb += weights_in.eq((loaded - issued)[:TILE_COUNTER_BITS] != 0)
        is_q4 = Signal()
        is_q8 = Signal()
        group_end = Signal()         # the current tile is the last of its block group
        m.d.comb += [is_q4.eq(cur.body.wfmt == isa.WeightFormat.Q4),
                     is_q8.eq(cur.body.wfmt == isa.WeightFormat.Q8),
                     group_end.eq((is_q4 | is_q8)
                                  & ((k_left == 0) | ((k_idx & (tpb - 1)) == tpb - 1)))]

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
                need_v = cur.hdr.pop_side & ~self.v2e_avail
                m.d.comb += [self.stall_act.eq(need_l | need_v),
                             self.stall_store.eq(need_s & ~need_l & ~need_v)]
                with m.If(self.abort):
                    m.next = "IDLE"
                with m.Elif(~need_l & ~need_s & ~need_v):
                    m.d.comb += [self.l2e_take.eq(cur.hdr.pop_prev),
                                 self.s2e_take.eq(cur.hdr.pop_next),
                                 self.v2e_take.eq(cur.hdr.pop_side)]
                    m.d.sync += [
                        k_left.eq(cur.body.k_tiles - 1),
                        m_idx.eq(0),
                        row_addr.eq(cur.body.act_row),
                        tile_base.eq(cur.body.act_row),
                        first_tile.eq(1),
                        k_idx.eq(0),
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
                            k_idx.eq(k_idx + 1),
                        ]
                        with m.If(group_end):
                            m.d.sync += i_group.eq(i_group + 1)
                        with m.If(k_left == 0):
                            m.d.comb += [self.e2l_give.eq(cur.hdr.push_prev),
                                         self.e2v_give.eq(cur.hdr.push_side)]
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

        # Where each result goes, and how it is scaled, travels beside the row:
        # 1 + R + C + 1 cycles to the array's output. The row's activation sum joins two
        # cycles after the read.
        acc_aw = len(self.acc_addr)
        asum_shape = signed(cfg.act_width + ceil_log2(R) + 1)
        meta = data.StructLayout({"valid": 1, "addr": acc_aw, "accumulate": 1, "shr8": 1,
                                  "push": 1,
                                  "q4": 1, "q8": 1, "slot": max(1, ceil_log2(slots)),
                                  "retire": 1, "asum": asum_shape})
        tag = Signal(meta)
        # ``pair``: rows ``m >= h`` are the low halves of rows ``m - h``.
        pair_half = Signal(16)
        lo_half = Signal()
        m.d.comb += [pair_half.eq(cur.body.m >> 1),
                     lo_half.eq(cur.body.pair & (m_idx >= pair_half))]
        m.d.comb += [
            tag.valid.eq(issue),
            tag.addr.eq(cur.body.acc_row + Mux(lo_half, m_idx - pair_half, m_idx)),
            tag.accumulate.eq(cur.body.accumulate | ~first_tile | lo_half),
            tag.shr8.eq(lo_half),
            tag.push.eq(last_of_insn & cur.hdr.push_next),
            tag.q4.eq(is_q4),
            tag.q8.eq(is_q8),
            tag.slot.eq(i_group),
            tag.retire.eq(group_end & (m_idx == cur.body.m - 1)),
        ]
        # The row is registered once more (the buffer's read data comes straight from
        # its block RAM) before its adder tree.
        act_q = Signal(layouts.act_row(cfg), name="asum_row")
        m.d.sync += act_q.eq(self.act_rd_data)
        for stage in range(1 + cfg.latency):
            tag_q = Signal(meta, name=f"meta_{stage}")
            m.d.sync += tag_q.eq(tag)
            if stage == 1:
                with_sum = Signal(meta, name="meta_asum")
                m.d.comb += [with_sum.eq(tag_q),
                             with_sum.asum.eq(sum(act_q[r] for r in range(R)))]
                tag_q = with_sum
            tag = tag_q

        # ---- Block scaler: y = d * (16P - 120S + fS) for Q4 rows, y = P otherwise -------
        # Stage A: the slot's scales are read (d: a synchronous read; f: read in the cycle
        # before, straight into the offset multiplier's input register) while P and the
        # tag wait.
        d_rd = d_mem.read_port(domain="sync")
        f_rd = f_mem.read_port(domain="comb")
        m.d.comb += [d_rd.addr.eq(tag.slot), f_rd.addr.eq(tag.slot)]
        p_a = Signal(layouts.psum_row(cfg), name="scale_p")
        tag_a = Signal(meta, name="scale_tag")
        m.d.sync += [p_a.eq(array.result.payload), tag_a.eq(tag),
                     tag_a.valid.eq(array.result.valid)]
        # Stage B: the offset's product and the other two terms in brackets; a block
        # format's P is bounded by R * 128 * 128, so its low bits are all of it.
        # Stage C: the bracket (Q8: P itself). One multiplier or one adder level per
        # stage, each between registers.
        p_bits = (R * 128 * 128).bit_length() + 1
        t_shape = signed(p_bits + 6)
        fs_b = Signal(data.ArrayLayout(signed(sw_ + asum_shape.width), C), name="scale_fs")
        pq_b = Signal(data.ArrayLayout(t_shape, C), name="scale_pq")
        p_b = Signal(layouts.psum_row(cfg), name="scale_p_b")
        d_b = Signal(data.ArrayLayout(unsigned(sw_), C), name="scale_d")
        tag_b = Signal(meta, name="scale_tag_b")
        m.d.sync += [tag_b.eq(tag_a), p_b.eq(p_a), d_b.eq(d_rd.data)]
        for c in range(C):
            p = p_a[c].as_signed()[:p_bits].as_signed()
            # f * S: a hw.dsp.Multiplier whose input registers are stage A's (the offset
            # read and the row sum one cycle early) and whose output register is stage B.
            mul = Multiplier(sw_, asum_shape.width)
            m.submodules[f"scale_fs_mul_{c}"] = mul
            m.d.comb += [mul.a.eq(f_rd.data[c]), mul.b.eq(tag.asum), fs_b[c].eq(mul.p)]
            # 120 S as (S << 7) - (S << 3): Yosys would give a constant product a DSP.
            m.d.sync += pq_b[c].eq((p << 4) - ((tag_a.asum << 7) - (tag_a.asum << 3)))
        # Stage C: the bracket (Q8: P itself), into the scale multipliers' input registers.
        # Stage D: the scale's product, in two halves of the bracket (its low 17 bits,
        # then the rest), so each multiplier fits one 18 x 18 DSP (hw.dsp.Multiplier:
        # stage C's registers are its input registers, stage D's its output register).
        # Stage E: the halves' sum (Q4, Q8), or P.
        lo_bits = 17
        p_c = Signal(layouts.psum_row(cfg), name="scale_p_c")
        tag_c = Signal(meta, name="scale_tag_c")
        m.d.sync += [tag_c.eq(tag_b), p_c.eq(p_b)]
        y_lo = Signal(data.ArrayLayout(unsigned(sw_ + lo_bits), C), name="scale_lo")
        y_hi = Signal(data.ArrayLayout(signed(sw_ + t_shape.width - lo_bits + 1), C),
                      name="scale_hi")
        for c in range(C):
            p = p_b[c].as_signed()[:p_bits].as_signed()
            t = Signal(t_shape, name=f"scale_t_{c}")
            m.d.comb += t.eq(Mux(tag_b.q4, pq_b[c] + fs_b[c], p))
            for half, (operand, y) in {"lo": (t[:lo_bits], y_lo[c]),
                                       "hi": (t[lo_bits:].as_signed(), y_hi[c])}.items():
                mul = Multiplier(sw_ + 1, len(operand) + (half == "lo"))
                m.submodules[f"scale_{half}_mul_{c}"] = mul
                m.d.comb += [mul.a.eq(d_b[c]), mul.b.eq(operand), y.eq(mul.p)]
        p_d = Signal(layouts.psum_row(cfg), name="scale_p_d")
        tag_d = Signal(meta, name="scale_tag_d")
        m.d.sync += [tag_d.eq(tag_c), p_d.eq(p_c)]
        y_e = Signal(layouts.psum_row(cfg), name="scaled")
        tag_e = Signal(meta, name="scaled_tag")
        m.d.sync += tag_e.eq(tag_d)
        for c in range(C):
            m.d.sync += y_e[c].eq(Mux(tag_d.q4 | tag_d.q8, y_lo[c] + (y_hi[c] << lo_bits),
                                      p_d[c]))
        m.d.sync += groups_retired.eq(groups_retired
                                      + (tag_e.valid & (tag_e.q4 | tag_e.q8) & tag_e.retire))

        m.d.comb += [
            self.acc_valid.eq(tag_e.valid),
            self.acc_addr.eq(tag_e.addr),
            self.acc_accumulate.eq(tag_e.accumulate), self.acc_shr8.eq(tag_e.shr8),
            self.acc_data.eq(y_e),
        ]
        # The accumulator writes a row at the end of the second cycle after it arrives
        # (Accumulator: 3-stage read-modify-write): the token goes out one cycle later
        # still, so the store unit reads it written.
        push_q1 = Signal()
        push_q2 = Signal()
        push_q3 = Signal()
        m.d.sync += [push_q1.eq(tag_e.push & tag_e.valid), push_q2.eq(push_q1),
                     push_q3.eq(push_q2)]
        m.d.comb += self.e2s_give.eq(push_q3)

        # ---- Idle ---------------------------------------------------------------------------
        in_flight = Signal(range(cfg.latency + cfg.scale_latency + 8))
        m.d.sync += in_flight.eq(in_flight + issue - (self.acc_valid))
        # Not idle while an instruction is taken (waiting for its tokens or its weights):
        # FENCE and END must wait for it, even when nothing is in flight yet.
        m.d.comb += self.idle.eq(issuer.ongoing("IDLE") & ~wq.r_rdy & ~aq.r_rdy & ~w_busy
                                 & (reserved == 0) & ~lq.r_rdy
                                 & (in_flight == 0) & ~push_q1 & ~push_q2 & ~push_q3
                                 & ~s1.valid & ~self.insn.valid)
        return m
