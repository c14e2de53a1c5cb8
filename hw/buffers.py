"""On-chip SRAM buffers: activations, accumulators, requantization parameters.

All three are ``amaranth.lib.memory.Memory`` with synchronous read ports (data one cycle
after the address), so they map to block RAM. Sizes come from :class:`hw.config.Config`.
"""

from amaranth import Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from . import layouts

__all__ = ["ActivationBuffer", "Accumulator", "ParamBuffer"]


class ActivationBuffer(wiring.Component):
    """``cfg.act_buf_rows`` rows of ``R`` int8: the operand rows the array consumes.

    One read port (exec unit) and one write port shared by two writers: the load unit
    (``load_*``, always accepted: the DMA never waits for it) and the store unit writing
    requantized rows back on chip (``store_*``, a valid/ready pair that is not ready in a
    cycle the load unit writes).

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
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=layouts.act_row(self.cfg),
                                               depth=self.cfg.act_buf_rows, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        m.d.comb += [
            rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en), self.rd_data.eq(rp.data),
            self.store_ready.eq(~self.load_en),
        ]
        with m.If(self.load_en):
            m.d.comb += [wp.addr.eq(self.load_addr), wp.data.eq(self.load_data), wp.en.eq(1)]
        with m.Elif(self.store_valid):
            m.d.comb += [wp.addr.eq(self.store_addr), wp.data.eq(self.store_data),
                         wp.en.eq(1)]
        return m


class Accumulator(wiring.Component):
    """``2 * cfg.acc_buf_rows`` rows of ``C`` int32, updated one row per cycle.

    Computes, for each ``upd_valid`` cycle:
    ``acc[upd_addr] = (acc[upd_addr] if upd_accumulate else 0) + upd_data`` (wrapping
    int32). Update pipeline: the row is read in the cycle it arrives and written at the
    end of the next cycle. The read port is transparent to the write port, so a row
    updated in two consecutive cycles (a GEMV whose K tiles follow each other one row
    apart) loses no update.

    The two halves of the address space let the exec unit fill one output tile while the
    store unit drains the other (double buffering chosen by the program's ``acc_row``).

    Ports
    -----
    upd_valid, upd_addr, upd_accumulate, upd_data : In
        One update per cycle, no back-pressure (the array cannot stall).
    rd_addr, rd_en : In; rd_data : Out
        Store-side read, latency 1; it sees every update whose cycle ended two or more
        cycles before the read.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.depth = 2 * cfg.acc_buf_rows
        aw = ceil_log2(self.depth)
        row = layouts.psum_row(cfg)
        super().__init__({
            "upd_valid": In(1), "upd_addr": In(aw), "upd_accumulate": In(1),
            "upd_data": In(row),
            "rd_addr": In(aw), "rd_en": In(1), "rd_data": Out(row),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cfg.cols
        row = layouts.psum_row(self.cfg)
        m.submodules.mem = mem = memory.Memory(shape=row, depth=self.depth, init=[])
        wp = mem.write_port()
        rmw = mem.read_port(transparent_for=(wp,))
        rp = mem.read_port()
        m.d.comb += [rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en), self.rd_data.eq(rp.data)]

        # Stage 0: address the old row; stage 1: add and write back.
        m.d.comb += [rmw.addr.eq(self.upd_addr), rmw.en.eq(1)]
        s1_valid = Signal()
        s1_addr = Signal.like(self.upd_addr)
        s1_acc = Signal()
        s1_data = Signal(row)
        m.d.sync += [s1_valid.eq(self.upd_valid), s1_addr.eq(self.upd_addr),
                     s1_acc.eq(self.upd_accumulate), s1_data.eq(self.upd_data)]
        m.d.comb += [wp.addr.eq(s1_addr), wp.en.eq(s1_valid)]
        for c in range(C):
            old = Signal.like(s1_data[c], name=f"old_{c}")
            m.d.comb += old.eq(rmw.data[c])
            with m.If(s1_acc):
                m.d.comb += wp.data[c].eq(old + s1_data[c])
            with m.Else():
                m.d.comb += wp.data[c].eq(s1_data[c])
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
