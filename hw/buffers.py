"""On-chip SRAM buffers: activations, accumulators, requantization parameters.

All three are ``amaranth.lib.memory.Memory`` with synchronous read ports (data one cycle
after the address), so they map to block RAM. Sizes come from :class:`hw.config.Config`.
"""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import layouts

__all__ = ["ActivationBuffer", "Accumulator", "ParamBuffer"]


class ActivationBuffer(wiring.Component):
    """``cfg.act_buf_rows`` rows of ``R`` int8: the operand rows the array consumes.

    Two read ports (exec unit, vector unit) and one write port shared by three writers,
    in this priority: the load unit (``load_*``, always accepted: the DMA never waits for
    it), the store unit writing requantized rows back on chip (``store_*``, a valid/ready
    pair that is not ready in a cycle the load unit writes) and the vector unit
    (``vec_*``, ready when neither of the others writes).

    Ports
    -----
    rd_addr, rd_en : In
        Read row ``rd_addr`` when ``rd_en``; ``rd_data`` holds it from the next cycle
        until the next enabled read (latency 1, one row per cycle).
    rd_data : Out(act_row)
    load_addr, load_data, load_en : In
        Write ``load_data`` to row ``load_addr`` at the end of a cycle with ``load_en``.
    store_addr, store_data, store_valid : In; store_ready : Out
        Written when ``store_valid & store_ready``; ``store_ready = ~load_en``.
    vrd_addr, vrd_en : In; vrd_data : Out(act_row)
        The vector unit's read port, as ``rd_*``.
    vec_addr, vec_data, vec_valid : In; vec_ready : Out
        Written when ``vec_valid & vec_ready``; ``vec_ready = ~load_en & ~store_valid``.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        aw = ceil_log2(cfg.act_buf_rows)
        row = layouts.act_row(cfg)
        super().__init__({
            "rd_addr": In(aw), "rd_en": In(1), "rd_data": Out(row),
            "load_addr": In(aw), "load_data": In(row), "load_en": In(1),
            "store_addr": In(aw), "store_data": In(row), "store_valid": In(1),
            "store_ready": Out(1),
            "vrd_addr": In(aw), "vrd_en": In(1), "vrd_data": Out(row),
            "vec_addr": In(aw), "vec_data": In(row), "vec_valid": In(1),
            "vec_ready": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=layouts.act_row(self.cfg),
                                               depth=self.cfg.act_buf_rows, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        vp = mem.read_port()
        m.d.comb += [
            rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en), self.rd_data.eq(rp.data),
            vp.addr.eq(self.vrd_addr), vp.en.eq(self.vrd_en), self.vrd_data.eq(vp.data),
            self.store_ready.eq(~self.load_en),
            self.vec_ready.eq(~self.load_en & ~self.store_valid),
        ]
        with m.If(self.load_en):
            m.d.comb += [wp.addr.eq(self.load_addr), wp.data.eq(self.load_data), wp.en.eq(1)]
        with m.Elif(self.store_valid):
            m.d.comb += [wp.addr.eq(self.store_addr), wp.data.eq(self.store_data),
                         wp.en.eq(1)]
        with m.Elif(self.vec_valid):
            m.d.comb += [wp.addr.eq(self.vec_addr), wp.data.eq(self.vec_data), wp.en.eq(1)]
        return m


class Accumulator(wiring.Component):
    """``2 * cfg.acc_buf_rows`` rows of ``C`` int32, updated one row per cycle.

    Computes, for each ``upd_valid`` cycle:
    ``acc[upd_addr] = (acc[upd_addr] if upd_accumulate else 0) + ((upd_data + 128) >> 8
    if upd_shr8 else upd_data)`` (wrapping int32, arithmetic shift per element;
    ``upd_shr8``: a 16-bit input's low half, whose product counts at 1/256, rounded).
    One update per cycle, no back-pressure, no update lost, whatever the address
    sequence.

    Update pipeline (an update presented in cycle ``t``):

    * stage 0 (``t``): ``upd_addr`` addresses a **non-transparent** read port (no bypass
      mux behind the RAM); the update (valid, address, accumulate, data) is registered.
    * stage 1 (``t + 1``): the RAM's read data is registered as it comes out; the
      forwarding selects are computed into registers: same valid address as the update
      in stage 2 (written at the end of ``t + 1``), as the row written at the end of
      ``t``.
    * stage 2 (``t + 2``): ``base`` = the newest matching of those two writes (kept in
      the two last-written registers), else the registered RAM row; the row
      ``(base if accumulate else 0) + data`` is written at the end of ``t + 2``.

    The stage-0 read sees the writes that ended at ``t - 1`` or before, i.e. the updates
    of ``t - 3`` and earlier; the two forwarding registers supply exactly the updates of
    ``t - 2`` and ``t - 1``.

    The two halves of the address space let the exec unit fill one output tile while the
    store unit drains the other (double buffering chosen by the program's ``acc_row``).

    Ports
    -----
    upd_valid, upd_addr, upd_accumulate, upd_shr8, upd_data : In
        One update per cycle, no back-pressure (the array cannot stall). An update
        presented in cycle ``t`` is written into the RAM at the end of cycle ``t + 2``.
    rd_addr, rd_en : In; rd_data : Out
        Store-side read, latency 1 (``rd_data`` in cycle ``r + 1`` for a read issued in
        cycle ``r``). It returns the row as left by every update presented in cycle
        ``r - 3`` or before; it must not read a row updated in cycle ``r - 2`` or
        ``r - 1`` (not yet written: the row is returned without that update). An update
        presented in cycle ``r`` or later is never seen.
    """

    #: Cycles from an update's arrival to the end of the cycle that writes it.
    WRITE_LATENCY = 2

    def __init__(self, cfg):
        self.cfg = cfg
        self.depth = 2 * cfg.acc_buf_rows
        aw = ceil_log2(self.depth)
        row = layouts.psum_row(cfg)
        super().__init__({
            "upd_valid": In(1), "upd_addr": In(aw), "upd_accumulate": In(1),
            "upd_shr8": In(1), "upd_data": In(row),
            "rd_addr": In(aw), "rd_en": In(1), "rd_data": Out(row),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cfg.cols
        row = layouts.psum_row(self.cfg)
        aw = len(self.upd_addr)
        m.submodules.mem = mem = memory.Memory(shape=row, depth=self.depth, init=[])
        wp = mem.write_port()
        rmw = mem.read_port()                       # not transparent: no bypass mux
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en), self.rd_data.eq(rp.data)]

        # Stage 0: address the old row, register the update.
        m.d.comb += [rmw.addr.eq(self.upd_addr), rmw.en.eq(1)]
        s1_valid = Signal()
        s1_addr = Signal(aw, reset_less=True)
        s1_acc = Signal(reset_less=True)
        s1_data = Signal(row, reset_less=True)
        shifted = Signal(row)
        for c in range(C):
            m.d.comb += shifted[c].eq((self.upd_data[c] + 128) >> 8)
        m.d.sync += [s1_valid.eq(self.upd_valid), s1_addr.eq(self.upd_addr),
                     s1_acc.eq(self.upd_accumulate),
                     s1_data.eq(Mux(self.upd_shr8, shifted, self.upd_data))]

        # Rows written at the end of the previous cycle (w1) and the one before (w2).
        w1_valid, w2_valid = Signal(), Signal()
        w1_addr = Signal(aw, reset_less=True)
        w2_addr = Signal(aw, reset_less=True)
        w1_data = Signal(row, reset_less=True)
        w2_data = Signal(row, reset_less=True)

        # Stage 1: register the RAM row untouched, and the forwarding selects.
        s2_valid = Signal()
        s2_addr = Signal(aw, reset_less=True)
        s2_acc = Signal(reset_less=True)
        s2_data = Signal(row, reset_less=True)
        s2_ram = Signal(row, reset_less=True)
        s2_fwd1 = Signal(reset_less=True)     # base = w1 (the row stage 2 writes now)
        s2_fwd2 = Signal(reset_less=True)     # base = w2 (the row w1 holds now)
        m.d.sync += [
            s2_valid.eq(s1_valid), s2_addr.eq(s1_addr), s2_acc.eq(s1_acc),
            s2_data.eq(s1_data), s2_ram.eq(rmw.data),
            s2_fwd1.eq(s2_valid & (s2_addr == s1_addr)),
            s2_fwd2.eq(w1_valid & (w1_addr == s1_addr)),
        ]

        # Stage 2: pick the newest copy of the row, add, write back.
        new = Signal(row)
        for c in range(C):
            base = Signal.like(s2_data[c], name=f"base_{c}")
            with m.If(~s2_acc):
                m.d.comb += base.eq(0)
            with m.Elif(s2_fwd1):
                m.d.comb += base.eq(w1_data[c])
            with m.Elif(s2_fwd2):
                m.d.comb += base.eq(w2_data[c])
            with m.Else():
                m.d.comb += base.eq(s2_ram[c])
            m.d.comb += new[c].eq(base + s2_data[c])
        m.d.comb += [wp.addr.eq(s2_addr), wp.data.eq(new), wp.en.eq(s2_valid)]
        m.d.sync += [
            w1_valid.eq(s2_valid), w1_addr.eq(s2_addr), w1_data.eq(new),
            w2_valid.eq(w1_valid), w2_addr.eq(w1_addr), w2_data.eq(w1_data),
        ]
        return m


class ParamBuffer(wiring.Component):
    """Requantization parameter sets: ``cfg.param_tiles`` sets of
    :data:`hw.isa.PARAM_BEATS` bus beats (``C`` int32 bias, ``C`` multipliers, ``C``
    shifts). Written beat by beat by the load unit, read beat by beat by the store unit
    (latency 1).
    """

    def __init__(self, cfg):
        from .isa import PARAM_BEATS
        self.cfg = cfg
        self.depth = cfg.param_tiles * PARAM_BEATS
        aw = ceil_log2(self.depth)
        super().__init__({
            "wr_addr": In(aw), "wr_data": In(8 * cfg.bus_bytes), "wr_en": In(1),
            "rd_addr": In(aw), "rd_en": In(1), "rd_data": Out(8 * cfg.bus_bytes),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=unsigned(8 * self.cfg.bus_bytes),
                                               depth=self.depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        m.d.comb += [
            wp.addr.eq(self.wr_addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en),
            rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en), self.rd_data.eq(rp.data),
        ]
        return m
