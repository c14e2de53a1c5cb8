"""What the DMA engines share: the command layout, the error codes, the window rule and
the burst splitter that turns a 2-D strided command into legal AXI4 INCR bursts.

A command moves ``rows`` rows of ``row_beats`` bus beats each; row ``r`` starts at byte
``addr + r * stride``. Beats travel in order, row after row. :class:`hw.dma_read.DMARead`
and :class:`hw.dma_write.DMAWrite` both split a command with :class:`BurstSplitter`, so
the two engines cannot disagree on the split or on what is legal. ``sw.dma_model`` is the
independent golden model of the same rules.

Burst rule
----------
Each row is cut greedily into INCR bursts of ``min(beats left in the row, 256, beats
left before the next 4 KiB boundary)`` beats, ``AxSIZE = log2(bus_bytes)``. Bursts never
span two rows, even when ``stride`` equals the row size.

Window rule
-----------
An access of bytes ``[first, end)`` is legal iff ``base <= first`` and ``end <= limit``
(the last byte, ``end - 1``, is below ``limit``). Address arithmetic is exact: a row
address that overflows ``addr_width`` bits is beyond every ``limit`` and so illegal, never
wrapped back to low memory.
"""

from amaranth import Module, Signal, Mux
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .config import Config

__all__ = ["PAGE_BYTES", "MAX_BURST_BEATS", "COUNTER_WIDTH", "DMAError", "dma_command",
           "burst_layout", "in_window", "resp_error", "check_engine_args", "BurstSplitter"]

PAGE_BYTES = 4096          # an AXI4 burst must not cross a 4 KiB boundary
MAX_BURST_BEATS = 256      # AXI4 INCR bursts carry at most 256 beats (AxLEN is 8 bits)
COUNTER_WIDTH = 64         # width of the bytes_read / bytes_written counters


class DMAError(enum.Enum, shape=3):
    """Why a DMA engine stopped. ``NONE`` while ``error_valid`` is low.

    ``WINDOW``  a burst would touch a byte outside ``[base, limit)``; it was not issued.
    ``ALIGN``   ``addr`` or ``stride`` not a multiple of ``bus_bytes``, or ``rows`` or
                ``row_beats`` zero; nothing of the command was issued.
    ``SLVERR``  the subordinate answered a burst with RRESP/BRESP SLVERR.
    ``DECERR``  the interconnect answered a burst with RRESP/BRESP DECERR.
    """
    NONE = 0
    WINDOW = 1
    ALIGN = 2
    SLVERR = 3
    DECERR = 4


def dma_command(cfg):
    """The layout of one DMA command for a bus of ``cfg``.

    ``addr``       (``addr_width`` bits) byte address of row 0; a multiple of ``bus_bytes``.
    ``rows``       (16 bits) number of rows, at least 1.
    ``row_beats``  (16 bits) bus beats per row, at least 1 (``row_beats * bus_bytes`` bytes).
    ``stride``     (``addr_width`` bits) bytes from one row's start to the next one's;
                   a multiple of ``bus_bytes`` (0 repeats the same row).
    """
    return data.StructLayout({
        "addr": cfg.addr_width,
        "rows": 16,
        "row_beats": 16,
        "stride": cfg.addr_width,
    })


def burst_layout(cfg):
    """One AXI4 INCR burst as the splitter hands it to an engine.

    ``addr`` is the burst's first byte (aligned to ``bus_bytes``), ``len`` its AxLEN
    (beats minus one).
    """
    return data.StructLayout({"addr": cfg.addr_width, "len": 8})


def in_window(first, end, base, limit):
    """The window rule as a 1-bit value: bytes ``[first, end)`` lie inside
    ``[base, limit)``. ``end`` is exclusive and may be one bit wider than an address."""
    return (first >= base) & (end <= limit)


def resp_error(resp):
    """The :class:`DMAError` of an erroring 2-bit RRESP/BRESP (SLVERR 0b10, DECERR 0b11)."""
    return Mux(resp[0], DMAError.DECERR, DMAError.SLVERR)


def check_engine_args(cfg, max_outstanding):
    """Validate the constructor arguments shared by the two DMA engines."""
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a Config, not {cfg!r}")
    if cfg.addr_width < 12:
        raise ValueError(f"addr_width must be at least 12 (one 4 KiB page), "
                         f"not {cfg.addr_width!r}")
    if cfg.bus_bytes > 128:
        raise ValueError(f"bus_bytes must be at most 128, not {cfg.bus_bytes!r}")
    if (not isinstance(max_outstanding, int) or isinstance(max_outstanding, bool)
            or max_outstanding <= 0):
        raise TypeError(f"max_outstanding must be a positive integer, not {max_outstanding!r}")


class BurstSplitter(wiring.Component):
    """Cuts each accepted command into legal INCR bursts, one burst per cycle.

    A command is taken from ``cmd`` when the splitter is idle. It is checked at once: an
    unaligned ``addr`` or ``stride``, or ``rows == 0`` or ``row_beats == 0``, pulses
    ``error_strobe`` with ``error == ALIGN`` in the accepting cycle and nothing of the
    command is produced. Otherwise bursts follow the burst rule (see the module docstring)
    on ``burst``, in address order within a row and row after row.

    Every burst is checked against ``[base, limit)`` before it is offered: an illegal one
    is never offered on ``burst``; instead ``error_strobe`` pulses with ``error == WINDOW``
    and the command is abandoned (``active`` falls). Bursts before it were offered as usual.

    ``stop`` abandons the current command at once (no burst is offered while it is high,
    and the splitter returns idle) and keeps ``cmd`` not ready; the engines drive it with
    their error state.

    Timing
    ------
    A command accepted in cycle ``t`` offers its first burst in cycle ``t + 1``; after that
    one burst per cycle while ``burst.ready`` is high. The cycle after the last burst is
    taken, ``cmd`` is ready again, so back-to-back commands leave two idle cycles on
    ``burst``. ``base`` and ``limit`` are sampled every cycle: hold them steady while a
    command runs. ``burst.valid`` falls without a transfer only when ``stop`` rises.

    Ports
    -----
    cmd : In(stream.Signature(dma_command(cfg)))
        The command; ready while idle and ``stop`` is low.
    burst : Out(stream.Signature(burst_layout(cfg)))
        The next legal burst.
    base, limit : In(cfg.addr_width)
        The window.
    stop : In(1)
        Abandon and refuse commands.
    active : Out(1)
        A command is being split (bursts remain to be offered).
    error : Out(DMAError), error_strobe : Out(1)
        ``error_strobe`` is high for one cycle when a command fails ALIGN or WINDOW;
        ``error`` names which in that cycle.
    """

    def __init__(self, cfg):
        check_engine_args(cfg, 1)
        self.cfg = cfg
        super().__init__({
            "cmd": In(stream.Signature(dma_command(cfg))),
            "burst": Out(stream.Signature(burst_layout(cfg))),
            "base": In(cfg.addr_width),
            "limit": In(cfg.addr_width),
            "stop": In(1),
            "active": Out(1),
            "error": Out(DMAError),
            "error_strobe": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        aw = cfg.addr_width
        size = exact_log2(cfg.bus_bytes)
        page_beats = PAGE_BYTES >> size
        cap = min(MAX_BURST_BEATS, page_beats)

        # One bit above the address width: a row that overflows the address space
        # compares above every limit instead of wrapping to low memory.
        cur = Signal(aw + 1)          # first byte of the next burst
        row = Signal(aw + 1)          # first byte of the current row
        stride = Signal(aw)
        beats_left = Signal(16)       # beats of the current row not yet in a burst
        rows_left = Signal(16)        # rows not yet finished, the current one included
        row_beats = Signal(16)
        active = Signal()

        # Length of the next burst: min(beats left in the row, cap, room in the page).
        page_room = Signal(range(page_beats + 1))
        m.d.comb += page_room.eq(page_beats - cur[size:12])
        n_cap = Signal(range(cap + 1))
        m.d.comb += n_cap.eq(Mux(beats_left < cap, beats_left, cap))
        n = Signal(range(cap + 1))
        m.d.comb += n.eq(Mux(n_cap < page_room, n_cap, page_room))
        end = Signal(aw + 2)
        m.d.comb += end.eq(cur + (n << size))
        legal = Signal()
        m.d.comb += legal.eq(in_window(cur, end, self.base, self.limit))
        row_done = n == beats_left

        m.d.comb += [
            self.active.eq(active),
            self.burst.valid.eq(active & legal & ~self.stop),
            self.burst.payload.addr.eq(cur[:aw]),
            self.burst.payload.len.eq(n - 1),
            self.cmd.ready.eq(~active & ~self.stop),
        ]

        with m.If(self.stop):
            m.d.sync += active.eq(0)
        with m.Elif(active):
            with m.If(~legal):
                m.d.comb += [self.error_strobe.eq(1), self.error.eq(DMAError.WINDOW)]
                m.d.sync += active.eq(0)
            with m.Elif(self.burst.ready):
                with m.If(row_done):
                    with m.If(rows_left == 1):
                        m.d.sync += active.eq(0)
                    m.d.sync += [
                        rows_left.eq(rows_left - 1),
                        row.eq(row + stride),
                        cur.eq(row + stride),
                        beats_left.eq(row_beats),
                    ]
                with m.Else():
                    m.d.sync += [
                        cur.eq(end),
                        beats_left.eq(beats_left - n),
                    ]

        c = self.cmd.payload
        bad = ((c.addr[:size] != 0) | (c.stride[:size] != 0)
               | (c.rows == 0) | (c.row_beats == 0))
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.If(bad):
                m.d.comb += [self.error_strobe.eq(1), self.error.eq(DMAError.ALIGN)]
            with m.Else():
                m.d.sync += [
                    active.eq(1),
                    cur.eq(c.addr),
                    row.eq(c.addr),
                    stride.eq(c.stride),
                    rows_left.eq(c.rows),
                    beats_left.eq(c.row_beats),
                    row_beats.eq(c.row_beats),
                ]
        return m
