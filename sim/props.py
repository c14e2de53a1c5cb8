"""Per-cycle property monitors: handshakes, AXI4 bursts, no read or write after an error,
and the accumulator's read-modify-write.

Every monitor is plain Python, stepped once per clock cycle with the integer values of
the signals it watches, sampled once the cycle's inputs have been driven and the logic
has settled (so a ``VALID & READY`` seen in step ``t`` is a transfer at the clock edge
that ends cycle ``t``). The same monitors therefore serve an Amaranth async testbench
(drive the inputs, ``ctx.get`` through :func:`axi4_sampler` /
:func:`accumulator_sampler`, step, ``await ctx.tick()``) and a cocotb coroutine (one
sample per cycle at a fixed point, e.g. after ``RisingEdge`` then ``ReadOnly``).

A broken property raises :class:`PropertyViolation` (an ``AssertionError``) whose message
names the monitor, the cycle and the values involved.

:func:`elaborate_with_handles` elaborates a design once and finds the components that its
``elaborate`` methods create (the accelerator's ``Accumulator``...), so a testbench can
watch internal ports without the design exporting them.
"""

from collections import deque

from amaranth.hdl import Fragment

# The AXI4 protocol's constants (the specification's, in hw/axi.py: the hardware contract).
from serrano.hw.axi import (BURST_INCR, MAX_BURST_BEATS, PAGE_BYTES, RESP_OKAY,
                            RESP_EXOKAY, RESP_SLVERR, RESP_DECERR)

__all__ = ["AXI4_CHANNELS", "AXI4_SIGNALS", "PropertyViolation", "HandshakeChecker",
           "check_burst", "AXI4ManagerChecker", "AccumulatorMonitor", "axi4_sampler",
           "accumulator_sampler", "DesignHandles", "elaborate_with_handles"]

_RESP_NAMES = {RESP_OKAY: "OKAY", RESP_EXOKAY: "EXOKAY", RESP_SLVERR: "SLVERR",
               RESP_DECERR: "DECERR"}

#: The five AXI4 channels: (VALID, READY, payload signals), named as in
#: :class:`hw.axi.AXI4Signature`. AR, AW and W are driven by the manager, R and B by the
#: subordinate.
AXI4_CHANNELS = {
    "AR": ("arvalid", "arready", ("araddr", "arlen", "arsize", "arburst", "arid")),
    "AW": ("awvalid", "awready", ("awaddr", "awlen", "awsize", "awburst", "awid")),
    "W": ("wvalid", "wready", ("wdata", "wstrb", "wlast")),
    "R": ("rvalid", "rready", ("rid", "rdata", "rresp", "rlast")),
    "B": ("bvalid", "bready", ("bid", "bresp")),
}
#: Every signal an :class:`AXI4ManagerChecker` step needs.
AXI4_SIGNALS = tuple(name for valid, ready, payload in AXI4_CHANNELS.values()
                     for name in (valid, ready, *payload))


class PropertyViolation(AssertionError):
    """A property monitor saw a cycle that breaks its property.

    ``monitor`` names the monitor, ``cycle`` is the offending cycle, ``values`` a dict of
    the signal values that show it.
    """

    def __init__(self, monitor, cycle, message, values=None):
        self.monitor = monitor
        self.cycle = cycle
        self.values = dict(values or {})
        text = f"{monitor}: {message}" + (f" at cycle {cycle}" if cycle is not None else "")
        if self.values:
            text += " (" + _fmt(self.values) + ")"
        super().__init__(text)


def _fmt(values):
    parts = []
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            parts.append(f"{name}={value}")
        elif value > 9:
            parts.append(f"{name}={value:#x}")
        else:
            parts.append(f"{name}={value}")
    return ", ".join(parts)


class HandshakeChecker:
    """A VALID/READY channel: once VALID is high in a cycle without READY, the next cycle
    must show VALID high again with the same payload (AXI and ``amaranth.lib.stream``
    alike: a transfer once offered is neither withdrawn nor changed until taken).

    ``step(cycle, valid, ready, payload)``: ``payload`` is anything comparable with
    ``==`` (an int, a tuple); with ``fields`` (a sequence of names) a tuple payload is
    shown field by field in the messages. ``pending`` is the payload waiting for READY
    (``None`` when nothing waits), ``since`` the cycle it was first presented.
    """

    def __init__(self, name, fields=None):
        self.name = name
        self.fields = tuple(fields) if fields is not None else None
        self.pending = None
        self.since = None

    def _values(self, payload, prefix=""):
        if self.fields is not None and isinstance(payload, tuple):
            return {prefix + f: v for f, v in zip(self.fields, payload)}
        return {prefix + "payload": payload}

    def step(self, cycle, valid, ready, payload):
        if self.pending is not None:
            if not valid:
                raise PropertyViolation(
                    self.name, cycle,
                    f"VALID withdrawn before READY (presented since cycle {self.since})",
                    self._values(self.pending))
            if payload != self.pending:
                values = self._values(self.pending, "was ")
                values.update(self._values(payload, "now "))
                raise PropertyViolation(
                    self.name, cycle,
                    f"payload changed while waiting for READY (presented since cycle "
                    f"{self.since})", values)
        if valid and not ready:
            if self.pending is None:
                self.since = cycle
            self.pending = payload
        else:
            self.pending = None
            self.since = None


def check_burst(name, bus_bytes, addr, length, size, burst, *, base=None, limit=None,
                cycle=None):
    """One AXI4 AR/AW request of a manager that moves whole bus words: an INCR burst
    (``burst``), ``2**size == bus_bytes``, ``addr`` aligned to the bus width, its
    ``length + 1`` beats inside one 4 KiB page and, when given, inside ``[base, limit)``.
    Raises :class:`PropertyViolation` (``cycle`` goes into the message)."""
    beats = length + 1
    end = addr + beats * bus_bytes

    def fail(what):
        raise PropertyViolation(name, cycle, what, {
            "addr": addr, "len": length, "beats": beats, "size": size, "burst": burst})

    if burst != BURST_INCR:
        fail(f"burst type {burst} is not INCR ({BURST_INCR})")
    if size < 0 or 1 << size != bus_bytes:
        fail(f"size {size} ({1 << size if size >= 0 else '?'} bytes) is not the bus width "
             f"({bus_bytes} bytes)")
    if addr % bus_bytes:
        fail(f"address not aligned to the bus width ({bus_bytes} bytes)")
    if not 1 <= beats <= MAX_BURST_BEATS:
        fail(f"more than {MAX_BURST_BEATS} beats")
    if addr // PAGE_BYTES != (end - 1) // PAGE_BYTES:
        fail(f"burst [{addr:#x}, {end:#x}) crosses a 4 KiB boundary")
    if base is not None and addr < base or limit is not None and end > limit:
        lo = f"{base:#x}" if base is not None else "0"
        hi = f"{limit:#x}" if limit is not None else "inf"
        fail(f"burst [{addr:#x}, {end:#x}) leaves the window [{lo}, {hi})")


#: hw.top.Core stops each DMA engine on the other's ``error_valid``, a register: an error
#: response taken by one engine reaches the other one cycle after the failing beat.
SERRANO_ENGINE_ERROR_LATENCY = 1


def serrano_axi_checker(bus_bytes, *, base=None, limit=None):
    """An :class:`AXI4ManagerChecker` for the memory port of :class:`hw.top.Serrano`."""
    lat = SERRANO_ENGINE_ERROR_LATENCY
    return AXI4ManagerChecker(bus_bytes, base=base, limit=limit, read_error_latency=lat,
                              write_error_latency=lat)


class AXI4ManagerChecker:
    """Checks, every cycle, what an AXI4 manager that moves whole bus words must obey.

    ``step(cycle, s)`` takes a mapping from each name of :data:`AXI4_SIGNALS` to its value.

    Handshakes
        On AR, AW and W (and, with ``check_subordinate``, on R and B): VALID, once high
        without READY, stays high with the payload unchanged until READY
        (:class:`HandshakeChecker`).
    Bursts
        Every AR and AW, from the first cycle it is presented: INCR, ``AxSIZE`` equal to
        the bus width, address aligned to it, no 4 KiB crossing, inside
        ``[base, limit)`` when given (:func:`check_burst`).
    W beats
        W bursts follow the AW order and carry exactly ``AWLEN + 1`` beats, WLAST on the
        last one and only there. W may run ahead of AW: beats whose AW is not yet
        accepted are counted and checked when it is.
    Subordinate side (``check_subordinate``)
        R beats only for an accepted AR, RLAST exactly on beat ``ARLEN + 1``; a B response
        only for a burst whose AW and last W beat have been accepted.
    No write after an error
        Let the manager be *stopped* at cycle ``s``: ``s = t`` for a B transfer in cycle
        ``t`` with BRESP SLVERR or DECERR; ``s = t + read_error_latency`` for an R transfer
        with RRESP SLVERR or DECERR when ``read_error_latency`` is not ``None`` (a read
        error also stops the writer, through the accelerator's error logic, that many
        cycles later); ``s`` = the cycle given to :meth:`stop` (an abort or a soft reset
        request). Then, until :meth:`clear`:

        * no AW is presented for the first time in a cycle after ``s``: an AW presented
          in cycle ``s`` or before and not yet accepted may complete (AXI forbids
          withdrawing it), so nothing may be committed in cycle ``s`` itself, and
        * no W beat with a non-zero WSTRB is presented for the first time in a cycle after
          ``s + 1`` (``s + 1`` is when the engine's registered ``error_valid`` rises; the
          beat presented then may complete, held). Beats of bursts already issued may go
          on with ``WSTRB = 0``: they write nothing.

        This is the contract of :class:`hw.dma_write.DMAWrite` ("from that cycle on no new
        burst is committed"; "a W beat being presented when the error rises stays
        presented until taken; from then on ... ``WSTRB = 0``"), and that of
        :class:`hw.top.Serrano` for errors and soft resets, whose ``abort`` reaches the
        write engine in the cycle of the request.
    No read after an error
        Reads stop too, at cycle ``r``: ``r = t`` for an R transfer in cycle ``t`` with
        RRESP SLVERR or DECERR (the read engine stops at once), ``r = t +
        write_error_latency`` for an erroring B transfer in cycle ``t`` when
        ``write_error_latency`` is not ``None`` (the write engine's error reaches the read
        engine's ``abort`` that many cycles later), ``r`` = the cycle given to
        :meth:`stop`. Then, until :meth:`clear`, no AR is presented for the first time in
        a cycle after ``r``; an AR presented in cycle ``r`` or before may complete, and
        the R beats of bursts already accepted still arrive. This is the contract of
        :class:`hw.dma_read.DMARead` (errors and ``abort``).

    :meth:`finish` checks that the bus is quiet: every burst complete on AR/R, AW/W and B.
    ``stopped`` (writes) and ``reads_stopped`` are ``None`` or ``(cycle, reason)``;
    ``errors`` lists ``(cycle, channel,
    resp)`` of every error response seen; ``counts`` the transfers per channel
    (``w_null``: W beats with ``WSTRB = 0``).
    """

    def __init__(self, bus_bytes, *, name="m_axi", base=None, limit=None,
                 check_subordinate=True, read_error_latency=None,
                 write_error_latency=None):
        if not isinstance(bus_bytes, int) or isinstance(bus_bytes, bool) or bus_bytes <= 0 \
                or bus_bytes & (bus_bytes - 1):
            raise TypeError(f"bus_bytes must be a positive power of two, not {bus_bytes!r}")
        lat = read_error_latency
        if lat is not None and (type(lat) is not int or lat < 0):
            raise TypeError(f"read_error_latency must be None or a non-negative integer, "
                            f"not {read_error_latency!r}")
        lat = write_error_latency
        if lat is not None and (type(lat) is not int or lat < 0):
            raise TypeError(f"write_error_latency must be None or a non-negative integer, "
                            f"not {write_error_latency!r}")
        self.bus_bytes = bus_bytes
        self.name = name
        self.base, self.limit = base, limit
        self.check_subordinate = check_subordinate
        self.read_error_latency = read_error_latency
        self.write_error_latency = write_error_latency
        channels = ("AR", "AW", "W", "R", "B") if check_subordinate else ("AR", "AW", "W")
        self._held = {ch: HandshakeChecker(f"{name} {ch}", AXI4_CHANNELS[ch][2])
                      for ch in channels}
        self._aw_waiting = False       # AW presented and not accepted in the last cycle
        self._w_waiting = False
        self._ar_waiting = False
        self._aws = deque()            # accepted AWs whose W burst is not complete
        self._w_early = deque()        # complete W bursts whose AW is not accepted yet
        self._w_count = 0              # beats of the W burst in progress
        self._w_first = None
        self._b_due = 0                # bursts complete on AW and W, awaiting B
        self._ars = deque()            # accepted ARs whose R beats are not all in
        self._r_count = 0
        self.stopped = None
        self.reads_stopped = None
        self.errors = []
        self.counts = dict(ar=0, aw=0, w=0, w_null=0, r=0, b=0)

    def _fail(self, cycle, message, values=None):
        raise PropertyViolation(self.name, cycle, message, values)

    def stop(self, cycle, reason):
        """From ``cycle`` on the manager must issue no write and no read (see the class
        docstring)."""
        self._stop_writes(cycle, reason)
        self._stop_reads(cycle, reason)

    def _stop_writes(self, cycle, reason):
        if self.stopped is None or cycle < self.stopped[0]:
            self.stopped = (cycle, reason)

    def _stop_reads(self, cycle, reason):
        if self.reads_stopped is None or cycle < self.reads_stopped[0]:
            self.reads_stopped = (cycle, reason)

    def clear(self, cycle=None):
        """The manager was cleared (error cleared, soft reset done): it may issue again."""
        self.stopped = None
        self.reads_stopped = None

    def step(self, cycle, s):
        arvalid, arready = s["arvalid"], s["arready"]
        awvalid, awready = s["awvalid"], s["awready"]
        wvalid, wready = s["wvalid"], s["wready"]
        rvalid, rready = s["rvalid"], s["rready"]
        bvalid, bready = s["bvalid"], s["bready"]
        held = self._held
        B = self.bus_bytes

        # Handshake rules.
        if arvalid or held["AR"].pending is not None:
            held["AR"].step(cycle, arvalid, arready, (s["araddr"], s["arlen"], s["arsize"],
                                                      s["arburst"], s["arid"]))
        if awvalid or held["AW"].pending is not None:
            held["AW"].step(cycle, awvalid, awready, (s["awaddr"], s["awlen"], s["awsize"],
                                                      s["awburst"], s["awid"]))
        if wvalid or held["W"].pending is not None:
            held["W"].step(cycle, wvalid, wready, (s["wdata"], s["wstrb"], s["wlast"]))
        if self.check_subordinate:
            if rvalid or held["R"].pending is not None:
                held["R"].step(cycle, rvalid, rready, (s["rid"], s["rdata"], s["rresp"],
                                                       s["rlast"]))
            if bvalid or held["B"].pending is not None:
                held["B"].step(cycle, bvalid, bready, (s["bid"], s["bresp"]))

        # Bursts, checked when first presented (the payload is then held).
        ar_new = arvalid and not self._ar_waiting
        aw_new = awvalid and not self._aw_waiting
        w_new = wvalid and not self._w_waiting
        if ar_new:
            check_burst(f"{self.name} AR", B, s["araddr"], s["arlen"], s["arsize"],
                        s["arburst"], base=self.base, limit=self.limit, cycle=cycle)
        if aw_new:
            check_burst(f"{self.name} AW", B, s["awaddr"], s["awlen"], s["awsize"],
                        s["awburst"], base=self.base, limit=self.limit, cycle=cycle)

        # No write after an error, abort or soft reset.
        if self.stopped is not None:
            stop_cycle, reason = self.stopped
            if aw_new and cycle > stop_cycle:
                self._fail(cycle, f"write after {reason} (writes stopped from cycle "
                           f"{stop_cycle}): a new AW presented",
                           {"awaddr": s["awaddr"], "awlen": s["awlen"]})
            if w_new and s["wstrb"] and cycle > stop_cycle + 1:
                self._fail(cycle, f"write after {reason} (writes stopped from cycle "
                           f"{stop_cycle}): a new W beat with strobes presented",
                           {"wdata": s["wdata"], "wstrb": s["wstrb"], "wlast": s["wlast"]})
        if self.reads_stopped is not None and ar_new and cycle > self.reads_stopped[0]:
            stop_cycle, reason = self.reads_stopped
            self._fail(cycle, f"read after {reason} (reads stopped from cycle "
                       f"{stop_cycle}): a new AR presented",
                       {"araddr": s["araddr"], "arlen": s["arlen"]})
        self._ar_waiting = bool(arvalid and not arready)
        self._aw_waiting = bool(awvalid and not awready)
        self._w_waiting = bool(wvalid and not wready)

        # Transfers at the coming edge. R and B cannot answer a request of the same edge,
        # so they are matched before the new AR, AW and W of this cycle.
        if rvalid and rready:
            self.counts["r"] += 1
            if self.check_subordinate:
                if not self._ars:
                    self._fail(cycle, "R beat with no AR outstanding",
                               {"rresp": s["rresp"], "rlast": s["rlast"]})
                self._r_count += 1
                addr, beats, _ = self._ars[0]
                if bool(s["rlast"]) != (self._r_count == beats):
                    self._fail(cycle, f"RLAST {s['rlast']} on beat {self._r_count} of a "
                               f"{beats}-beat read burst", {"araddr": addr})
                if s["rlast"]:
                    self._ars.popleft()
                    self._r_count = 0
            if s["rresp"] in (RESP_SLVERR, RESP_DECERR):
                self.errors.append((cycle, "R", s["rresp"]))
                reason = f"RRESP {_RESP_NAMES[s['rresp']]} at cycle {cycle}"
                self._stop_reads(cycle, reason)
                if self.read_error_latency is not None:
                    self._stop_writes(cycle + self.read_error_latency, reason)
        if bvalid and bready:
            self.counts["b"] += 1
            if self.check_subordinate:
                if self._b_due == 0:
                    self._fail(cycle, "B response before the burst's AW and last W beat "
                               "were accepted", {"bresp": s["bresp"]})
                self._b_due -= 1
            if s["bresp"] in (RESP_SLVERR, RESP_DECERR):
                self.errors.append((cycle, "B", s["bresp"]))
                reason = f"BRESP {_RESP_NAMES[s['bresp']]} at cycle {cycle}"
                self._stop_writes(cycle, reason)
                if self.write_error_latency is not None:
                    self._stop_reads(cycle + self.write_error_latency, reason)
        if arvalid and arready:
            self.counts["ar"] += 1
            self._ars.append((s["araddr"], s["arlen"] + 1, cycle))
        if awvalid and awready:
            self.counts["aw"] += 1
            beats = s["awlen"] + 1
            if self._w_early:
                count, first, last = self._w_early.popleft()
                if count != beats:
                    self._fail(cycle, f"AW of {beats} beats accepted for a W burst of "
                               f"{count} beats (cycles {first} to {last}, WLAST on the "
                               f"last)", {"awaddr": s["awaddr"], "awlen": s["awlen"]})
                self._b_due += 1
            else:
                if not self._aws and self._w_count >= beats:
                    self._fail(cycle, f"AW of {beats} beats accepted after {self._w_count} "
                               f"beats of its W burst without WLAST",
                               {"awaddr": s["awaddr"], "awlen": s["awlen"]})
                self._aws.append((s["awaddr"], beats, cycle))
        if wvalid and wready:
            self.counts["w"] += 1
            if not s["wstrb"]:
                self.counts["w_null"] += 1
            if self._w_count == 0:
                self._w_first = cycle
            self._w_count += 1
            wlast = bool(s["wlast"])
            if self._aws:
                addr, beats, _ = self._aws[0]
                if wlast != (self._w_count == beats):
                    self._fail(cycle, f"WLAST {int(wlast)} on beat {self._w_count} of a "
                               f"{beats}-beat burst", {"awaddr": addr, "awlen": beats - 1})
                if wlast:
                    self._aws.popleft()
                    self._b_due += 1
                    self._w_count = 0
            elif wlast:
                self._w_early.append((self._w_count, self._w_first, cycle))
                self._w_count = 0
            elif self._w_count > MAX_BURST_BEATS:
                self._fail(cycle, f"W burst of more than {MAX_BURST_BEATS} beats without "
                           f"WLAST")

    def finish(self, cycle):
        """The bus is quiet: nothing is waiting on any channel, every AR has all its R
        beats, every AW all its W beats (and no W beat lacks its AW), every burst its B."""
        for ch, checker in self._held.items():
            if checker.pending is not None:
                self._fail(cycle, f"{ch} still waiting for READY at the end "
                           f"(since cycle {checker.since})")
        if self._aws or self._w_count or self._w_early:
            self._fail(cycle, f"W incomplete at the end: {len(self._aws)} AW bursts lack "
                       f"W beats, {len(self._w_early)} W bursts lack their AW, "
                       f"{self._w_count} beats of a W burst in progress")
        if self.check_subordinate and (self._ars or self._b_due):
            self._fail(cycle, f"responses missing at the end: {len(self._ars)} read bursts "
                       f"lack R beats, {self._b_due} write bursts lack B")


def _signed(value, width):
    return value - (1 << width) if value >> (width - 1) else value


class AccumulatorMonitor:
    """Checks that no update of :class:`hw.buffers.Accumulator` is lost.

    The monitor keeps a shadow copy of every row, computed only from the update port: an
    update in cycle ``u`` sets ``row[upd_addr] = (row if upd_accumulate else 0) +
    upd_data`` (``(upd_data + 128) >> 8`` per element with ``upd_shr8``), each of the
    ``cols`` elements wrapping at ``width`` bits (rows start at zero, as the RAM does).
    ``visibility`` is the read contract: an update presented in cycle ``u`` is seen by a
    read issued in cycle ``r >= u + visibility``. The default, 3,
    is :class:`hw.buffers.Accumulator`'s (its 3-stage read-modify-write writes the update
    at the end of cycle ``u + 2``; the read port sees writes that ended before the read's
    cycle). Then, every cycle:

    * a read issued in cycle ``r`` (``rd_en``) must return, in ``rd_data`` in cycle
      ``r + 1``, the shadow row as left by **every update of an earlier cycle** ``u < r``
      (an update in cycle ``r`` itself is after the read). This catches an update lost by
      the read-modify-write pipeline (same-row updates back to back, or a few cycles
      apart) and a read that misses a finished update.
    * a read of a row updated in one of the ``visibility - 1`` cycles just before
      (``r - visibility < u < r``) is a read-during-write hazard even if the data happen
      to agree: that update is not yet written back, so the read cannot see it.

    ``step(cycle, upd_valid, upd_addr, upd_accumulate, upd_data, rd_en, rd_addr,
    rd_data, upd_shr8=0)``: the rows are packed ints (element ``c`` in bits
    ``[c*width, (c+1)*width)``) or sequences of ``cols`` ints. :meth:`check_contents` compares the whole RAM with the
    shadow (updates never read back; call it once the last update is written);
    :meth:`forget` drops the shadow after a reset that may cut an update short.
    ``updates``, ``reads`` and ``back_to_back`` (updates of the row updated in the cycle
    before) count what was checked.
    """

    def __init__(self, cols, depth, *, width=32, name="accumulator", history=4,
                 visibility=3):
        for arg, value in (("cols", cols), ("depth", depth), ("width", width),
                           ("visibility", visibility)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise TypeError(f"{arg} must be a positive integer, not {value!r}")
        self.cols, self.depth, self.width = cols, depth, width
        self.visibility = visibility
        self.name = name
        self._mask = (1 << width) - 1
        self._shadow = [0] * depth          # packed rows; None: unknown (after forget)
        self._last_update = [None] * depth  # cycle of each row's last update
        self._history = [deque(maxlen=history) for _ in range(depth)]
        self._read = None                   # (cycle, addr, expected) of the last read
        self.updates = 0
        self.reads = 0
        self.back_to_back = 0               # updates of the row updated the cycle before
        self._prev_update = None

    def _pack(self, row):
        if isinstance(row, int):
            return row
        if hasattr(row, "as_value"):            # an Amaranth Const or data.Const
            value = row.as_value()
            return value.value & ((1 << len(value)) - 1)
        word = 0
        for c, v in enumerate(row):
            word |= (int(v) & self._mask) << (c * self.width)
        return word

    def _unpack(self, word):
        w, m = self.width, self._mask
        return [_signed((word >> (c * w)) & m, w) for c in range(self.cols)]

    def _describe(self, addr):
        steps = [f"cycle {u}: {'+=' if acc else '='} {self._unpack(d)}"
                 for u, acc, d in self._history[addr]]
        return "; ".join(steps) if steps else "none"

    def forget(self):
        """After a reset of the update pipeline: every row is unknown until an update
        overwrites it (``upd_accumulate`` low); reads of unknown rows are not checked."""
        self._shadow = [None] * self.depth
        self._read = None

    def step(self, cycle, upd_valid, upd_addr, upd_accumulate, upd_data, rd_en, rd_addr,
             rd_data, upd_shr8=0):
        if self._read is not None:
            r, addr, expected = self._read
            self._read = None
            got = self._pack(rd_data)
            if expected is not None and got != expected:
                raise PropertyViolation(
                    self.name, cycle,
                    f"lost update: the read of row {addr} issued at cycle {r} returned "
                    f"{self._unpack(got)}, the updates before it give "
                    f"{self._unpack(expected)} (last updates of the row: "
                    f"{self._describe(addr)})", {"rd_addr": addr, "rd_data": got})
        if rd_en:
            if rd_addr >= self.depth:
                raise PropertyViolation(self.name, cycle, "read beyond the last row",
                                        {"rd_addr": rd_addr})
            last = self._last_update[rd_addr]
            if last is not None and cycle - last < self.visibility:
                gap = cycle - last
                raise PropertyViolation(
                    self.name, cycle,
                    f"read-during-write hazard: row {rd_addr} read {gap} "
                    f"cycle{'s' if gap > 1 else ''} after its update at cycle {last}, "
                    f"which a read sees only from cycle {last + self.visibility} (last "
                    f"updates of the row: {self._describe(rd_addr)})",
                    {"rd_addr": rd_addr, "upd_addr": upd_addr, "upd_valid": upd_valid})
            self.reads += 1
            self._read = (cycle, rd_addr, self._shadow[rd_addr])
        if upd_valid:
            if upd_addr >= self.depth:
                raise PropertyViolation(self.name, cycle, "update beyond the last row",
                                        {"upd_addr": upd_addr})
            self.updates += 1
            if self._prev_update == (cycle - 1, upd_addr):
                self.back_to_back += 1
            self._prev_update = (cycle, upd_addr)
            data = self._pack(upd_data)
            if upd_shr8:                       # a 16-bit input's low half: at 1/256
                top = 1 << (self.width - 1)
                data = sum((((((((data >> (c * self.width)) & self._mask) ^ top) - top)
                              + 128) >> 8) & self._mask) << (c * self.width)
                           for c in range(self.cols))
            old = self._shadow[upd_addr]
            if not upd_accumulate:
                new = data
            elif old is None:
                new = None
            else:
                w, m = self.width, self._mask
                new = 0
                for c in range(self.cols):
                    sh = c * w
                    new |= (((old >> sh) & m) + ((data >> sh) & m) & m) << sh
            self._shadow[upd_addr] = new
            self._last_update[upd_addr] = cycle
            self._history[upd_addr].append((cycle, bool(upd_accumulate), data))

    def check_contents(self, cycle, rows):
        """``rows[i]`` (packed int or sequence) is RAM row ``i`` now, every update having
        been written back: each known row must equal its shadow."""
        bad = []
        for addr in range(self.depth):
            expected = self._shadow[addr]
            if expected is None:
                continue
            got = self._pack(rows[addr])
            if got != expected:
                bad.append(f"row {addr} holds {self._unpack(got)}, the updates give "
                           f"{self._unpack(expected)} (last updates: "
                           f"{self._describe(addr)})")
        if bad:
            raise PropertyViolation(
                self.name, cycle, f"lost update in {len(bad)} rows: " + "; ".join(bad[:4]))


# ---------------------------------------------------------------------------------------
# Amaranth helpers.

def axi4_sampler(bus):
    """A function ``sample(ctx) -> dict`` that reads every signal of :data:`AXI4_SIGNALS`
    of ``bus`` (an interface with the members of :class:`hw.axi.AXI4Signature`)."""
    pairs = [(name, getattr(bus, name)) for name in AXI4_SIGNALS]

    def sample(ctx):
        return {name: ctx.get(sig) for name, sig in pairs}
    return sample


def accumulator_sampler(acc):
    """A function ``sample(ctx) -> tuple`` giving the arguments of
    :meth:`AccumulatorMonitor.step` after the cycle, from the ports of ``acc`` (a
    :class:`hw.buffers.Accumulator`); rows come packed."""
    sigs = (acc.upd_valid, acc.upd_addr, acc.upd_accumulate, acc.upd_data.as_value(),
            acc.rd_en, acc.rd_addr, acc.rd_data.as_value(), acc.upd_shr8)

    def sample(ctx):
        return tuple(ctx.get(sig) for sig in sigs)
    return sample


class DesignHandles:
    """The elaboratables of one elaborated design, by hierarchy path (a tuple of
    submodule names, ``()`` for the top)."""

    def __init__(self, by_path):
        self.by_path = by_path

    def __getitem__(self, path):
        return self.by_path[tuple(path)]

    def find(self, cls):
        """``[(path, obj)]`` of every elaboratable that is an instance of ``cls``."""
        return [(path, obj) for path, objs in self.by_path.items() for obj in objs
                if isinstance(obj, cls)]

    def one(self, cls):
        """The only instance of ``cls`` in the design."""
        found = self.find(cls)
        if len(found) != 1:
            raise LookupError(f"expected one {cls.__name__} in the design, found "
                              f"{[path for path, _ in found]}")
        return found[0][1]


def elaborate_with_handles(top, platform=None):
    """Elaborate ``top`` once; return ``(fragment, handles)``.

    ``fragment`` goes to ``amaranth.sim.Simulator`` in place of ``top`` (it is not
    elaborated again, so the objects found are the ones simulated); ``handles``
    (:class:`DesignHandles`) holds, for each hierarchy path, the elaboratables whose
    ``elaborate`` produced that fragment, e.g. the ``Accumulator`` that
    ``Core.elaborate`` creates, whose ports the testbench can then ``ctx.get``.
    """
    fragment = Fragment.get(top, platform)
    by_path = {}

    def walk(frag, path):
        by_path[path] = tuple(frag.origins or ())
        for sub, name, _src_loc in frag.subfragments:
            walk(sub, path + (name,))
    walk(fragment, ())
    return fragment, DesignHandles(by_path)
