"""The AXI4 write DMA engine: writes a stream of bus beats into 2-D strided regions."""

from amaranth import Module, Signal, Mux
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .axi import AXI4Signature, BURST_INCR
from .dma import (COUNTER_WIDTH, MAX_BURST_BEATS, DMAError, BurstSplitter,
                  check_engine_args, dma_command, resp_error)

__all__ = ["DMAWrite"]


class DMAWrite(wiring.Component):
    """Writes the beats taken from ``data`` to the rows of each command over AXI4.

    For a command ``(addr, rows, row_beats, stride)`` the engine takes ``rows * row_beats``
    words from ``data`` and writes word ``r * row_beats + i`` to byte address
    ``addr + r * stride + i * bus_bytes`` (byte 0 of the word in the low bits), with every
    byte strobe set. Commands follow each other seamlessly.

    Bursts
    ------
    The same split as :class:`hw.dma_read.DMARead` (:class:`hw.dma.BurstSplitter`): INCR
    bursts of at most 256 beats, never across a 4 KiB boundary, ``AWSIZE =
    log2(bus_bytes)``, ``AWID = 0``. A burst is *committed* when the splitter hands it over:
    it goes into the AW register (presented on AW the next cycle) and its length into a
    queue that paces the W channel. AW therefore runs ahead of W, and W never waits for
    AWREADY (the W beats of a committed burst may be sent before its AW is accepted, which
    AXI allows). At most ``max_outstanding`` bursts are committed and not yet answered on B.

    Back-pressure
    -------------
    No data buffer: ``wvalid`` is ``data.valid`` while a committed burst has W beats left,
    ``wdata`` is ``data.payload`` and ``data.ready`` is ``wready`` (combinationally).
    ``bready`` is always high.

    Latency and throughput
    ----------------------
    * A command accepted in cycle ``t`` presents its first AW in cycle ``t + 4`` (the
      splitter offers the first burst in ``t + 3``, where it is committed); its first W
      beat can be presented in cycle ``t + 4`` too (``data.valid`` permitting). Further
      bursts of the command are committed at most one every two cycles (the splitter's
      rate); back to back, a command of ``k`` bursts keeps the splitter for
      ``2 * k + 2`` cycles from its accept to the next command's.
    * One W beat per cycle while ``data.valid`` and ``wready`` stay high, across bursts and
      rows, as long as B responses return before ``max_outstanding`` bursts are committed
      and bursts are committed ahead of W: rows of ``b`` beats allow at most ``b / 2``
      beats per cycle (1-beat rows one beat every two cycles), back-to-back single-burst
      commands at most ``b / 4``.
    * ``cmd`` is ready again the cycle after the last burst of a command is committed.

    Completion and errors
    ---------------------
    ``busy`` is high while a command is being split or a committed burst has no B response
    yet; ``idle`` is its complement: every write issued has been answered on B, so it is
    visible to later readers. The first error is latched in ``error`` with ``error_valid``
    (both registered: they change the cycle after the event named below):

    * ``ALIGN``: in the cycle the bad command is accepted; nothing of it is issued.
    * ``WINDOW``: when the next burst would leave ``[base, limit)``; it and every later
      burst is never committed (no AW, no W). Earlier bursts were committed as usual.
    * ``SLVERR`` / ``DECERR``: when a B response with that BRESP is taken. From that cycle
      on no new burst is committed.

    After any error no further burst is committed, so no new AW is presented. Bursts
    already committed are completed as AXI requires: an AW already presented stays until
    accepted, and every committed burst gets all its W beats, WLAST on the last. A W beat
    being presented when the error rises stays presented until taken; from then on the
    remaining beats of committed bursts are sent with ``WSTRB = 0`` and ``WDATA = 0``
    (they write nothing) without taking words from ``data``, so completing them needs
    nothing from the producer and the engine cannot hang. Beats of the failed transfer
    left in ``data`` are not consumed: the producer must be flushed before the next command.
    When all B responses are in, ``busy`` falls; the engine sits in error, refusing
    commands, until ``clear`` is high in a cycle where ``busy`` is low.

    Ports
    -----
    cmd : In(stream.Signature(dma_command(cfg)))
        Commands. Ready while no command is being split and no error is latched.
    data : In(stream.Signature(8 * cfg.bus_bytes))
        The words to write, in command order.
    bus : Out(AXI4Signature(addr_width=cfg.addr_width, data_bytes=cfg.bus_bytes))
        The AXI4 manager port. Only AW, W and B are used; ``arvalid`` and ``rready`` are 0.
        BRESP OKAY and EXOKAY count as success; BID is ignored.
    base, limit : In(cfg.addr_width)
        The window: a burst is committed only if it writes bytes ``>= base`` and ``< limit``.
        Hold them steady while ``busy``.
    busy : Out(1), idle : Out(1)
        See above; ``idle == ~busy``.
    error : Out(DMAError), error_valid : Out(1)
        The latched error (``NONE`` while ``error_valid`` is low).
    clear : In(1)
        Clears the error state when ``busy`` is low.
    abort : In(1)
        Another part of the accelerator failed, or a soft reset was asked: the current
        command is abandoned and no further burst is committed; committed bursts are
        completed with null beats (``WSTRB = 0``) exactly as after an error, so nothing
        more is written and the engine cannot hang on a producer that stopped. The error
        state is not touched; null mode ends once ``abort`` is low and nothing is in flight.
    bytes_written : Out(64)
        Bytes written with full strobes in bursts answered OKAY, since reset; not changed
        by ``clear``, wraps modulo 2**64.

    Parameters
    ----------
    cfg : Config
        Bus geometry (``bus_bytes``, ``addr_width``).
    max_outstanding : int
        Write bursts committed and not yet answered on B, at most.
    """

    def __init__(self, cfg, max_outstanding=4):
        check_engine_args(cfg, max_outstanding)
        self.cfg = cfg
        self.max_outstanding = max_outstanding
        super().__init__({
            "cmd": In(stream.Signature(dma_command(cfg))),
            "data": In(stream.Signature(8 * cfg.bus_bytes)),
            "bus": Out(AXI4Signature(addr_width=cfg.addr_width, data_bytes=cfg.bus_bytes)),
            "base": In(cfg.addr_width),
            "limit": In(cfg.addr_width),
            "busy": Out(1),
            "idle": Out(1),
            "error": Out(DMAError),
            "error_valid": Out(1),
            "clear": In(1),
            "abort": In(1),
            "bytes_written": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        bus = self.bus
        nout = self.max_outstanding

        m.submodules.splitter = splitter = BurstSplitter(cfg)
        wiring.connect(m, wiring.flipped(self.cmd), splitter.cmd)
        m.d.comb += [splitter.base.eq(self.base), splitter.limit.eq(self.limit)]

        # Read channels unused.
        m.d.comb += [bus.arvalid.eq(0), bus.rready.eq(0)]

        # AxLEN of committed bursts whose W beats are not all sent, oldest first.
        m.submodules.w_queue = w_queue = fifo.SyncFIFO(width=8, depth=nout)
        # Full-strobe beats of each burst whose W is done and whose B is awaited.
        m.submodules.b_queue = b_queue = fifo.SyncFIFO(
            width=MAX_BURST_BEATS.bit_length(), depth=nout)

        err_valid = Signal()
        err = Signal(DMAError)
        null = Signal()               # remaining W beats go out with WSTRB = 0
        inflight = Signal(range(nout + 1))

        # AW register, filled from the splitter.
        aw_full = Signal()
        aw_addr = Signal(cfg.addr_width)
        aw_len = Signal(8)
        m.d.comb += [
            bus.awvalid.eq(aw_full),
            bus.awaddr.eq(aw_addr),
            bus.awlen.eq(aw_len),
            bus.awsize.eq(exact_log2(cfg.bus_bytes)),
            bus.awburst.eq(BURST_INCR),
            bus.awid.eq(0),
        ]
        m.d.comb += splitter.burst.ready.eq(
            (~aw_full | bus.awready) & (inflight < nout) & w_queue.w_rdy)
        commit = splitter.burst.valid & splitter.burst.ready
        m.d.comb += [w_queue.w_en.eq(commit), w_queue.w_data.eq(splitter.burst.payload.len)]
        with m.If(commit):
            m.d.sync += [
                aw_full.eq(1),
                aw_addr.eq(splitter.burst.payload.addr),
                aw_len.eq(splitter.burst.payload.len),
            ]
        with m.Elif(bus.awready):
            m.d.sync += aw_full.eq(0)

        # W channel: beats of the burst at the head of w_queue.
        w_beat = Signal(8)
        w_real = Signal(MAX_BURST_BEATS.bit_length())
        have = w_queue.r_rdy
        m.d.comb += [
            bus.wvalid.eq(have & (self.data.valid | null)),
            bus.wdata.eq(Mux(null, 0, self.data.payload)),
            bus.wstrb.eq(Mux(null, 0, (1 << cfg.bus_bytes) - 1)),
            bus.wlast.eq(w_beat == w_queue.r_data),
            self.data.ready.eq(have & bus.wready & ~null),
        ]
        w_take = bus.wvalid & bus.wready
        real_now = w_real + ~null
        with m.If(w_take):
            with m.If(bus.wlast):
                m.d.sync += [w_beat.eq(0), w_real.eq(0)]
                m.d.comb += [w_queue.r_en.eq(1), b_queue.w_en.eq(1),
                             b_queue.w_data.eq(real_now)]
            with m.Else():
                m.d.sync += [w_beat.eq(w_beat + 1), w_real.eq(real_now)]

        # B channel.
        m.d.comb += bus.bready.eq(1)
        b_take = Signal()
        m.d.comb += b_take.eq(bus.bvalid & (inflight != 0))
        b_bad = bus.bresp[1]
        m.d.comb += b_queue.r_en.eq(b_take)
        with m.If(b_take & ~b_bad & b_queue.r_rdy):
            m.d.sync += self.bytes_written.eq(
                self.bytes_written + b_queue.r_data * cfg.bus_bytes)
        bus_err = Signal()
        m.d.comb += bus_err.eq(b_take & b_bad)

        with m.If(commit & ~b_take):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~commit & b_take):
            m.d.sync += inflight.eq(inflight - 1)

        busy = Signal()
        m.d.comb += [
            busy.eq(splitter.active | (inflight != 0)),
            self.busy.eq(busy),
            self.idle.eq(~busy),
            self.error.eq(err),
            self.error_valid.eq(err_valid),
        ]

        # Error state: the first error wins; clear only once every B is in.
        new_err = Signal()
        m.d.comb += new_err.eq(~err_valid & (bus_err | splitter.error_strobe))
        m.d.comb += splitter.stop.eq(err_valid | bus_err | self.abort)
        clearing = self.clear & ~busy & err_valid
        with m.If(clearing):
            m.d.sync += [err_valid.eq(0), err.eq(DMAError.NONE)]
        with m.If(new_err):
            m.d.sync += err_valid.eq(1)
            with m.If(bus_err):
                m.d.sync += err.eq(resp_error(bus.bresp))
            with m.Else():
                m.d.sync += err.eq(splitter.error)
        # Switch to null beats once in error, but never change a W beat being presented.
        stalled = bus.wvalid & ~bus.wready
        with m.If(clearing):
            m.d.sync += null.eq(0)
        with m.Elif((err_valid | new_err | self.abort) & ~stalled):
            m.d.sync += null.eq(1)
        with m.Elif(~self.abort & ~err_valid & ~busy):
            m.d.sync += null.eq(0)
        return m
