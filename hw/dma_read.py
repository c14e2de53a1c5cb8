"""The AXI4 read DMA engine: streams 2-D strided regions of memory out as bus beats."""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .axi import AXI4Signature, BURST_INCR
from .dma import (COUNTER_WIDTH, DMAError, BurstSplitter, check_engine_args, dma_command,
                  resp_error)

__all__ = ["DMARead"]


class DMARead(wiring.Component):
    """Reads the rows of each command over AXI4 and hands their beats out on ``data``.

    For a command ``(addr, rows, row_beats, stride)`` the engine emits on ``data`` the
    ``rows * row_beats`` bus words at byte addresses ``addr + r * stride + i * bus_bytes``
    (``r`` in ``range(rows)``, ``i`` in ``range(row_beats)``), in that order, one word per
    transfer, byte 0 of the word in the low bits. Commands follow each other seamlessly.

    Bursts
    ------
    Each row is split by :class:`hw.dma.BurstSplitter` into INCR bursts of at most 256
    beats that never cross a 4 KiB boundary, ``ARSIZE = log2(bus_bytes)``, ``ARID = 0``
    (responses come back in order). Up to ``max_outstanding`` bursts are in flight: a burst
    counts from the cycle it is placed in the AR register until its RLAST beat is taken.

    Back-pressure
    -------------
    There is no data buffer: ``rready`` is ``data.ready`` (combinationally), so a stalled
    consumer stalls the R channel, which AXI allows. ARs are issued ahead of data regardless
    of downstream room. ``data.valid`` is ``rvalid`` and ``data.payload`` is ``rdata``;
    both are stable while stalled because AXI requires the subordinate to hold them.

    Latency and throughput
    ----------------------
    * A command accepted (``cmd.valid & cmd.ready``) in cycle ``t`` presents its first AR
      (``arvalid``) in cycle ``t + 4`` (the splitter plans and checks the burst in
      ``t + 1`` and ``t + 2`` and offers it in ``t + 3``); each further burst of the
      command can enter the AR register two cycles after the previous one (the splitter
      offers one burst every two cycles). Back to back, a command of ``k`` bursts keeps
      the splitter for ``2 * k + 2`` cycles from its accept to the next command's.
    * A read beat accepted from R in cycle ``u`` is on ``data`` in the same cycle ``u``.
    * With ``data.ready`` held high and a memory that answers one beat per cycle after a
      latency of ``L`` cycles (AR accepted in cycle ``a``, first R beat valid in ``a + L``),
      a command of ``N`` beats accepted in cycle ``t`` delivers its first beat in cycle
      ``t + 4 + L`` and its last in cycle ``t + 3 + L + N``: one beat per cycle, with no
      bubble at burst or row boundaries, provided bursts come no faster than they are
      needed and the bursts in flight cover the latency. Rows of ``b`` beats (one or more
      bursts each) stream at ``min(1, b / 2, max_outstanding * b / (L + b + 1))`` beats
      per cycle: ``b / 2`` because the splitter offers a burst every two cycles (so
      1-beat rows give one beat every two cycles), and a burst holds its slot for
      ``L + b + 1`` cycles (``max_outstanding * b >= L + b + 1`` is always true for
      256-beat bursts with the default 4 and ``L <= 767``; raise ``max_outstanding``
      for short rows). A stream of back-to-back single-burst commands of ``b`` beats
      runs at most ``b / 4`` beats per cycle (the ``2 * k + 2`` above), so commands of 4
      beats or more leave no bubble between commands once the slots cover the latency.
      These bounds are measured in ``tests/test_dma.py``.
    * ``cmd`` is ready again the cycle after the last burst of a command has been placed in
      the AR register, while its data is still returning.

    Errors
    ------
    The engine latches the first error in ``error`` and raises ``error_valid`` (both
    registered: they change the cycle after the event named below):

    * ``ALIGN``: in the cycle the bad command is accepted; nothing of it is issued.
    * ``WINDOW``: when the next burst would leave ``[base, limit)``; that burst and every
      later one is never issued. Earlier bursts of the command have been issued.
    * ``SLVERR`` / ``DECERR``: when an R beat with that RRESP is taken; the beat is dropped.
      From that cycle on no new burst enters the AR register.

    After any error: a burst already presented on AR (``arvalid`` high) stays presented
    until accepted, as AXI requires; every burst in flight is drained with ``rready`` high
    and its data dropped. ``data.valid`` is low from the cycle ``error_valid`` rises on,
    except that a beat already presented on ``data`` and not yet taken stays presented
    until taken (stream rules). So the beats delivered are an in-order prefix of the
    commands' data; the consumer must watch ``error_valid`` and discard the transfer.
    Draining needs nothing from the consumer, so the engine cannot hang on a stalled
    consumer once in error. When the drain ends ``busy`` falls; the engine then sits in
    error, refusing commands, until ``clear`` is high in a cycle where ``busy`` is low
    (``clear`` is ignored while draining). An error aborts everything in flight, including
    the tail of an earlier command still returning data.

    Abort
    -----
    ``abort`` (another part of the accelerator failed, or a soft reset was asked) stops the
    engine as an error does, without touching the error state: from the cycle ``abort`` is
    high no burst enters the AR register (a burst already presented stays presented until
    accepted), the current command is abandoned, and from the next cycle on every burst in
    flight is drained with ``rready`` high and its data dropped (a beat presented on
    ``data`` and not yet taken stays presented until taken). Drop mode ends once
    ``abort`` is low and nothing is in flight; the engine then takes commands again.

    Ports
    -----
    cmd : In(stream.Signature(dma_command(cfg)))
        Commands. Ready while no command is being split and no error is latched.
    data : Out(stream.Signature(8 * cfg.bus_bytes))
        The beats read, in command order.
    bus : Out(AXI4Signature(addr_width=cfg.addr_width, data_bytes=cfg.bus_bytes))
        The AXI4 manager port. Only AR and R are used; AW, W are driven 0 (no valid) and
        ``bready`` is 0. RRESP OKAY and EXOKAY count as success; RID is ignored.
    base, limit : In(cfg.addr_width)
        The window: a burst is issued only if it reads bytes ``>= base`` and ``< limit``.
        Hold them steady while ``busy``.
    busy : Out(1)
        A command is being split or a burst is in flight.
    error : Out(DMAError), error_valid : Out(1)
        The latched error (``NONE`` while ``error_valid`` is low).
    clear : In(1)
        Clears the error state when ``busy`` is low.
    abort : In(1)
        Stop issuing and drop what returns (see Abort above).
    bytes_read : Out(64)
        Bytes delivered on ``data`` since reset (beats received with RRESP OKAY and passed
        on, times ``bus_bytes``); not changed by ``clear``, wraps modulo 2**64.

    Parameters
    ----------
    cfg : Config
        Bus geometry (``bus_bytes``, ``addr_width``).
    max_outstanding : int
        Read bursts in flight at most.
    """

    def __init__(self, cfg, max_outstanding=4):
        check_engine_args(cfg, max_outstanding)
        self.cfg = cfg
        self.max_outstanding = max_outstanding
        super().__init__({
            "cmd": In(stream.Signature(dma_command(cfg))),
            "data": Out(stream.Signature(8 * cfg.bus_bytes)),
            "bus": Out(AXI4Signature(addr_width=cfg.addr_width, data_bytes=cfg.bus_bytes)),
            "base": In(cfg.addr_width),
            "limit": In(cfg.addr_width),
            "busy": Out(1),
            "error": Out(DMAError),
            "error_valid": Out(1),
            "clear": In(1),
            "abort": In(1),
            "bytes_read": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        bus = self.bus

        m.submodules.splitter = splitter = BurstSplitter(cfg)
        wiring.connect(m, wiring.flipped(self.cmd), splitter.cmd)
        m.d.comb += [splitter.base.eq(self.base), splitter.limit.eq(self.limit)]

        # Write channels unused: no AWVALID, no WVALID, BREADY low.
        m.d.comb += [bus.awvalid.eq(0), bus.wvalid.eq(0), bus.bready.eq(0)]

        err_valid = Signal()
        err = Signal(DMAError)
        drop = Signal()               # data of the bursts in flight is being discarded
        inflight = Signal(range(self.max_outstanding + 1))

        # R channel and the data stream.
        r_bad = Signal()               # an R beat answered SLVERR (0b10) or DECERR (0b11)
        m.d.comb += r_bad.eq(bus.rvalid & bus.rresp[1])
        m.d.comb += [
            self.data.payload.eq(bus.rdata),
            self.data.valid.eq(bus.rvalid & ~r_bad & ~drop),
            bus.rready.eq(self.data.ready | r_bad | drop),
        ]
        r_take = bus.rvalid & bus.rready
        r_done = Signal()
        m.d.comb += r_done.eq(r_take & bus.rlast & (inflight != 0))
        bus_err = Signal()
        m.d.comb += bus_err.eq(r_take & r_bad)

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.bytes_read.eq(self.bytes_read + cfg.bus_bytes)

        # AR register, filled from the splitter while fewer than max_outstanding are out.
        ar_full = Signal()
        ar_addr = Signal(cfg.addr_width)
        ar_len = Signal(8)
        m.d.comb += [
            bus.arvalid.eq(ar_full),
            bus.araddr.eq(ar_addr),
            bus.arlen.eq(ar_len),
            bus.arsize.eq(exact_log2(cfg.bus_bytes)),
            bus.arburst.eq(BURST_INCR),
            bus.arid.eq(0),
        ]
        m.d.comb += splitter.burst.ready.eq(
            (~ar_full | bus.arready) & (inflight < self.max_outstanding))
        load = splitter.burst.valid & splitter.burst.ready
        with m.If(load):
            m.d.sync += [
                ar_full.eq(1),
                ar_addr.eq(splitter.burst.payload.addr),
                ar_len.eq(splitter.burst.payload.len),
            ]
        with m.Elif(bus.arready):
            m.d.sync += ar_full.eq(0)
        with m.If(load & ~r_done):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~load & r_done):
            m.d.sync += inflight.eq(inflight - 1)

        busy = Signal()
        m.d.comb += [
            busy.eq(splitter.active | (inflight != 0)),
            self.busy.eq(busy),
            self.error.eq(err),
            self.error_valid.eq(err_valid),
        ]

        # Error state: the first error wins; clear only once drained.
        new_err = Signal()
        m.d.comb += new_err.eq(~err_valid & (bus_err | splitter.error_strobe))
        m.d.comb += splitter.stop.eq(err_valid | bus_err | self.abort)
        clearing = self.clear & ~busy & err_valid
        with m.If(clearing):
            m.d.sync += [err_valid.eq(0), err.eq(DMAError.NONE)]
        with m.If(new_err):
            m.d.sync += err_valid.eq(1)
            with m.If(bus_err):
                m.d.sync += err.eq(resp_error(bus.rresp))
            with m.Else():
                m.d.sync += err.eq(splitter.error)
        # Stop passing data once in error or aborted, but never withdraw a beat being
        # presented.
        stalled = self.data.valid & ~self.data.ready
        with m.If(clearing):
            m.d.sync += drop.eq(0)
        with m.Elif((err_valid | new_err | self.abort) & ~stalled):
            m.d.sync += drop.eq(1)
        with m.Elif(~self.abort & ~err_valid & ~busy):
            m.d.sync += drop.eq(0)
        return m

