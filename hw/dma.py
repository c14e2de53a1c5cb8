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

from amaranth import Module, Signal, Mux, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .axi import MAX_BURST_BEATS, PAGE_BYTES
from .config import Config

__all__ = ["PAGE_BYTES", "MAX_BURST_BEATS", "COUNTER_WIDTH", "DMAError", "dma_command",
           "burst_layout", "resp_error", "check_engine_args", "BurstSplitter"]

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
    """Cuts each accepted command into legal INCR bursts, one burst every two cycles.

    A command is taken from ``cmd`` when the splitter is idle. It is checked at once: an
    unaligned ``addr`` or ``stride``, or ``rows == 0`` or ``row_beats == 0``, pulses
    ``error_strobe`` with ``error == ALIGN`` in the accepting cycle and nothing of the
    command is produced. Otherwise bursts follow the burst rule (see the module docstring)
    on ``burst``, in address order within a row and row after row.

    Every burst is checked against ``[base, limit)`` before it is offered: an illegal one
    is never offered on ``burst``; instead ``error_strobe`` pulses with ``error == WINDOW``
    and the command is abandoned (``active`` falls). Bursts before it were offered as usual
    (the check of a burst waits until the burst before it has been taken).

    ``stop`` abandons the current command at once (no burst is offered while it is high,
    and the splitter returns idle) and keeps ``cmd`` not ready; the engines drive it with
    their error state.

    Pipeline
    --------
    Each burst goes through two steps, each holding at most one adder or comparator of
    the address arithmetic, into an output register:

    * PLAN (the cycle after the command is accepted, or after the previous burst entered
      the output register): registers the length ``n = min(beats left in the row, 256,
      beats left in the page)``, the room ``limit - cur`` (signed: negative when ``cur``
      is above ``limit``, including rows past the top of the address space) and
      ``base <= cur``.
    * SUM (the next cycle, or later: it waits while the output register still holds an
      untaken burst): from those registers the burst is legal iff ``base <= cur`` and
      ``n * bus_bytes <= limit - cur``. A legal burst is loaded into the output register
      and ``cur`` advances to ``cur + n * bus_bytes`` or to the next row; an illegal one
      pulses ``error_strobe`` (WINDOW) in this cycle instead, and the splitter goes idle.
    * OFFER: ``burst.valid`` is the output register's valid bit gated only by ``~stop``;
      ``burst.payload`` is the output register. The PLAN of the next burst runs in the
      first OFFER cycle.

    Timing
    ------
    A command accepted in cycle ``t`` offers its first burst in cycle ``t + 3`` (its WINDOW
    error, if the first burst is illegal, pulses in cycle ``t + 2``). A burst taken in
    cycle ``u`` (``burst.valid & burst.ready``) is followed by the next burst of the
    command in cycle ``u + 2`` (or by its WINDOW error in cycle ``u + 1``): with
    ``burst.ready`` always high, one burst every two cycles. The cycle after the last burst
    is taken, ``cmd`` is ready again, so back-to-back commands leave three idle cycles on
    ``burst`` (last burst taken in ``u``, next command accepted in ``u + 1``, its first
    burst offered in ``u + 4``): with ``burst.ready`` always high and a command always
    waiting, a command of ``k`` bursts is followed by the next one's accept ``2 * k + 2``
    cycles after its own. ``base`` and ``limit`` are sampled during PLAN: hold them
    steady while a command runs. ``burst.valid`` falls without a transfer only when
    ``stop`` rises.

    Ports
    -----
    cmd : In(stream.Signature(dma_command(cfg)))
        The command; ready while idle and ``stop`` is low.
    burst : Out(stream.Signature(burst_layout(cfg)))
        The next legal burst; ``valid`` and ``payload`` come from registers (``valid``
        gated by ``~stop``).
    base, limit : In(cfg.addr_width)
        The window.
    stop : In(1)
        Abandon and refuse commands.
    active : Out(1)
        A command is being split (bursts remain to be offered, including one in the output
        register not yet taken).
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
        nbytes_width = (cap << size).bit_length()     # n * bus_bytes <= PAGE_BYTES

        # One bit above the address width: a row that overflows the address space
        # compares above every limit instead of wrapping to low memory.
        cur = Signal(aw + 1)          # first byte of the next burst
        row = Signal(aw + 1)          # first byte of the current row
        stride = Signal(aw)
        beats_left = Signal(16)       # beats of the current row not yet in a burst
        rows_left = Signal(16)        # rows not yet finished, the current one included
        row_beats = Signal(16)
        plan = Signal()               # PLAN step this cycle
        sums = Signal()               # SUM step pending (runs once the output is free)

        # PLAN: the next burst's length, room below limit and lower bound, registered.
        # room_cap = min(cap, page_room); page_room < cap compared on the page offset of
        # cur against a constant, in parallel with the subtraction.
        page_off = cur[size:12]
        page_room = Signal(range(page_beats + 1))
        m.d.comb += page_room.eq(page_beats - page_off)
        room_cap = Signal(range(cap + 1))
        m.d.comb += room_cap.eq(Mux(page_off > page_beats - cap, page_room, cap))
        n = Signal(range(cap + 1))
        m.d.comb += n.eq(Mux(beats_left < room_cap, beats_left, room_cap))
        n_r = Signal(range(cap + 1))
        room_r = Signal(signed(aw + 2))   # limit - cur; negative: cur above limit
        lo_ok_r = Signal()                # base <= cur
        with m.If(plan):
            m.d.sync += [
                n_r.eq(n),
                room_r.eq(self.limit - cur),
                lo_ok_r.eq(cur >= self.base),
                plan.eq(0),
                sums.eq(1),
            ]

        # SUM: legality from the registers and the address of the burst after this one.
        nbytes = Signal(nbytes_width)
        m.d.comb += nbytes.eq(n_r << size)
        room_u = room_r.as_unsigned()
        fits = ~room_r[-1] & (room_u[nbytes_width:aw + 1].any()
                              | (room_u[:nbytes_width] >= nbytes))
        legal = Signal()
        m.d.comb += legal.eq(lo_ok_r & fits)
        end = Signal(aw + 1)          # cur + nbytes; fits aw + 1 bits since cur < limit
        m.d.comb += end.eq(cur + nbytes)
        row_done = n_r == beats_left

        # OFFER: the output register.
        off_valid = Signal()
        off_addr = Signal(aw)
        off_len = Signal(8)
        m.d.comb += [
            self.burst.valid.eq(off_valid & ~self.stop),
            self.burst.payload.addr.eq(off_addr),
            self.burst.payload.len.eq(off_len),
        ]
        with m.If(self.burst.valid & self.burst.ready):
            m.d.sync += off_valid.eq(0)

        active = Signal()
        m.d.comb += [
            active.eq(plan | sums | off_valid),
            self.active.eq(active),
            self.cmd.ready.eq(~active & ~self.stop),
        ]

        with m.If(sums & ~off_valid & ~self.stop):
            with m.If(~legal):
                m.d.comb += [self.error_strobe.eq(1), self.error.eq(DMAError.WINDOW)]
                m.d.sync += sums.eq(0)
            with m.Else():
                m.d.sync += [
                    off_valid.eq(1),
                    off_addr.eq(cur[:aw]),
                    off_len.eq(n_r - 1),
                    sums.eq(0),
                    plan.eq(1),
                ]
                with m.If(row_done):
                    with m.If(rows_left == 1):
                        m.d.sync += plan.eq(0)
                    m.d.sync += [
                        rows_left.eq(rows_left - 1),
                        row.eq(row + stride),
                        cur.eq(row + stride),
                        beats_left.eq(row_beats),
                    ]
                with m.Else():
                    m.d.sync += [
                        cur.eq(end),
                        beats_left.eq(beats_left - n_r),
                    ]

        c = self.cmd.payload
        bad = ((c.addr[:size] != 0) | (c.stride[:size] != 0)
               | (c.rows == 0) | (c.row_beats == 0))
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.If(bad):
                m.d.comb += [self.error_strobe.eq(1), self.error.eq(DMAError.ALIGN)]
            with m.Else():
                m.d.sync += [
                    plan.eq(1),
                    cur.eq(c.addr),
                    row.eq(c.addr),
                    stride.eq(c.stride),
                    rows_left.eq(c.rows),
                    beats_left.eq(c.row_beats),
                    row_beats.eq(c.row_beats),
                ]

        with m.If(self.stop):
            m.d.sync += [plan.eq(0), sums.eq(0), off_valid.eq(0)]
        return m
