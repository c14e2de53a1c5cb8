"""A generic block of 32-bit control/status registers on an AXI4-Lite subordinate port.

The register list is the one source of truth: :class:`CSRBlock` builds its ports and its
address decoder from it, and :meth:`CSRBlock.register_map` hands the same list (address,
name, access, width, doc) to the README generator and to the host driver.
"""

import keyword
from dataclasses import dataclass
from typing import NamedTuple

from amaranth import Module, Signal, Cat, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, RESP_OKAY, RESP_SLVERR

__all__ = ["ACCESS_MODES", "DATA_WIDTH", "Register", "counter64", "MapEntry", "register_map",
           "CSRBlock"]

ACCESS_MODES = ("rw", "ro", "w1s", "w1c")
DATA_WIDTH = 32                          # AXI4-Lite data bus width; one register per word
_WORD_BYTES = DATA_WIDTH // 8


@dataclass(frozen=True)
class Register:
    """Describes one register of a :class:`CSRBlock`; the block creates the hardware.

    Parameters
    ----------
    name : str
        A Python identifier not starting with ``_``; it names the core-side port(s).
    width : int
        1 to 32 bits, held in bits ``width-1:0`` of the word; the bits above read as 0
        and ignore writes.
    access : str
        ``"rw"``  the host reads and writes it; port ``<name>: Out(width)`` shows the
        current value to the core.
        ``"ro"``  the core drives ``<name>: In(width)``; the host reads it (sampled at the
        read's address handshake), and a host write answers SLVERR.
        ``"w1s"`` write-1-to-set pulse: port ``<name>: Out(width)`` is high for exactly one
        cycle in each bit written with 1 (start, soft reset...); reads return 0.
        ``"w1c"`` sticky status: a 1 on input ``<name>_set: In(width)`` sets the bit, a
        host write of 1 clears it (a set in the same cycle wins); port ``<name>: Out(width)``
        is the current value, which the host also reads.
    init : int
        Value after reset, for ``"rw"`` and ``"w1c"`` registers (must be 0 otherwise).
    doc : str
        One line for the register map.
    snapshot_of : str or None
        Only for ``"ro"``: the name of another ``"ro"`` register ``lo`` of the same block.
        A host read of ``lo`` latches this register's input in the same cycle that it
        samples ``lo``; a read of this register returns the latched value (0 until ``lo``
        is first read). Reading ``lo`` and then this register gives a consistent pair
        even while the core's value moves. See :func:`counter64`.
    """

    name: str
    width: int = DATA_WIDTH
    access: str = "rw"
    init: int = 0
    doc: str = ""
    snapshot_of: str | None = None

    def __post_init__(self):
        if not _is_port_name(self.name):
            raise ValueError(f"name must be a Python identifier not starting with '_', "
                             f"not {self.name!r}")
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width <= 0:
            raise TypeError(f"width must be a positive integer, not {self.width!r}")
        if self.width > DATA_WIDTH:
            raise ValueError(f"width must be at most {DATA_WIDTH}, not {self.width!r}")
        if self.access not in ACCESS_MODES:
            raise ValueError(f"access must be one of 'rw', 'ro', 'w1s', 'w1c', "
                             f"not {self.access!r}")
        if not isinstance(self.init, int) or isinstance(self.init, bool):
            raise TypeError(f"init must be an integer, not {self.init!r}")
        if not 0 <= self.init < 2 ** self.width:
            raise ValueError(f"init must be in range(2**{self.width}), not {self.init!r}")
        if self.init and self.access not in ("rw", "w1c"):
            raise ValueError(f"init must be 0 for a {self.access!r} register, "
                             f"not {self.init!r}")
        if not isinstance(self.doc, str):
            raise TypeError(f"doc must be a string, not {self.doc!r}")
        if self.snapshot_of is not None:
            if self.access != "ro":
                raise ValueError(f"snapshot_of applies only to 'ro' registers, "
                                 f"not to a {self.access!r} register")
            if not _is_port_name(self.snapshot_of) or self.snapshot_of == self.name:
                raise ValueError(f"snapshot_of must name another register, "
                                 f"not {self.snapshot_of!r}")


def _is_port_name(name):
    return (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)
            and not name.startswith("_"))


def counter64(name, doc=""):
    """The two 32-bit ``"ro"`` registers of a 64-bit counter ``name``, low word first.

    Returns ``(Register(name + "_lo"), Register(name + "_hi", snapshot_of=name + "_lo"))``.
    The core drives ``<name>_lo`` with bits 31:0 and ``<name>_hi`` with bits 63:32 of the
    same counter. The host reads ``_lo`` first, then ``_hi``: the ``_hi`` it gets was
    sampled in the same cycle as the ``_lo``, so the 64-bit value is one the counter held.
    """
    if not _is_port_name(name):
        raise ValueError(f"name must be a Python identifier not starting with '_', "
                         f"not {name!r}")
    if not isinstance(doc, str):
        raise TypeError(f"doc must be a string, not {doc!r}")
    lo, hi = f"{name}_lo", f"{name}_hi"
    prefix = f"{doc}: " if doc else ""
    return (Register(lo, access="ro", doc=f"{prefix}bits 31:0; reading it latches {hi}"),
            Register(hi, access="ro", snapshot_of=lo,
                     doc=f"{prefix}bits 63:32, as latched by the last read of {lo}"))


class MapEntry(NamedTuple):
    """One row of :meth:`CSRBlock.register_map`."""
    address: int
    name: str
    access: str
    width: int
    doc: str


def register_map(registers):
    """The map of a register list without building hardware (for drivers and docs):
    a list of :class:`MapEntry` ``(address, name, access, width, doc)``, register ``i`` at
    byte address ``4 * i``. :meth:`CSRBlock.register_map` returns the same list."""
    registers = tuple(registers)
    for reg in registers:
        if not isinstance(reg, Register):
            raise TypeError(f"registers must be Register objects, not {reg!r}")
    names = [reg.name for reg in registers]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"register name {name!r} is used more than once")
    return [MapEntry(_WORD_BYTES * i, reg.name, reg.access, reg.width, reg.doc)
            for i, reg in enumerate(registers)]


class CSRBlock(wiring.Component):
    """A bank of registers, register ``i`` at byte address ``4 * i``, on AXI4-Lite.

    Bus behaviour
    -------------
    * Address decode uses ``addr[addr_width-1:2]``; the two low address bits are ignored
      (a sub-word access is expressed with WSTRB, as AXI4-Lite requires). AxPROT is
      ignored.
    * Writes: AW and W are accepted independently, in either order or in the same cycle,
      and held until both are present. The write then takes effect and is answered on B
      with OKAY; a write to an unmapped word or to an ``"ro"`` register changes nothing and
      answers SLVERR. WSTRB is honoured per byte for every writable register: bits of a
      byte whose strobe is low are neither written (``"rw"``) nor count as 1 (``"w1s"``,
      ``"w1c"``).
    * Reads: answered on R with the register's value and OKAY; an unmapped word reads 0
      with SLVERR. ``"w1s"`` registers read 0. An ``"ro"`` input is sampled in the cycle
      of the AR handshake; a read of the low word of a snapshot pair (see
      :class:`Register` ``snapshot_of`` and :func:`counter64`) latches the high word in
      that same cycle.
    * One write and one read may be in progress at once (they are independent). BVALID and
      RVALID, with BRESP, RDATA and RRESP, stay asserted and unchanged until BREADY or
      RREADY accepts them. AWREADY, WREADY and ARREADY are registered state (no
      combinational path from any VALID to a READY).

    Latency and throughput
    ----------------------
    * Write: when the later of the AW and W handshakes happens in cycle ``t`` (the same
      cycle for both is fine) and no B response is pending, the write takes effect at the
      end of cycle ``t``: BVALID is high, the ``"rw"``/``"w1c"`` outputs show the new value
      and a ``"w1s"`` pulse is high in cycle ``t + 1``. If a B response is still pending,
      the held write takes effect in the cycle after the B handshake. At most one write
      per 2 cycles.
    * Read: an AR handshake in cycle ``t`` gives RVALID with the data sampled in cycle
      ``t`` in cycle ``t + 1``. ARREADY is low while RVALID is high, so at most one read
      per 2 cycles.

    Ports
    -----
    bus : In(AXI4LiteSignature(addr_width=addr_width))
        The host's port; this block is the subordinate.
    <name> : Out(width)
        For ``"rw"`` (value), ``"w1c"`` (value) and ``"w1s"`` (one-cycle pulse) registers.
    <name> : In(width)
        For ``"ro"`` registers: the value the host reads.
    <name>_set : In(width)
        For ``"w1c"`` registers: each 1 bit sets the status bit at the end of the cycle.

    Parameters
    ----------
    registers : iterable of :class:`Register`
        In address order; names (and ``<name>_set`` port names) must be distinct.
    addr_width : int
        Width of the AXI addresses; ``4 * len(registers)`` must fit in ``2**addr_width``.
    """

    def __init__(self, registers, addr_width=12):
        if not isinstance(addr_width, int) or isinstance(addr_width, bool) or addr_width <= 0:
            raise TypeError(f"addr_width must be a positive integer, not {addr_width!r}")
        if addr_width < 2:
            raise ValueError(f"addr_width must be at least 2 (word addresses), "
                             f"not {addr_width!r}")
        registers = tuple(registers)
        if not registers:
            raise ValueError("registers must hold at least one Register")
        for reg in registers:
            if not isinstance(reg, Register):
                raise TypeError(f"registers must be Register objects, not {reg!r}")
        if _WORD_BYTES * len(registers) > 2 ** addr_width:
            raise ValueError(f"{len(registers)} registers need {_WORD_BYTES * len(registers)} "
                             f"bytes of address space, more than addr_width={addr_width} "
                             f"gives")
        by_name = {reg.name: reg for reg in registers}
        members = {"bus": In(AXI4LiteSignature(addr_width=addr_width))}
        for reg in registers:
            if reg.access == "ro":
                ports = {reg.name: In(reg.width)}
            elif reg.access == "w1c":
                ports = {reg.name: Out(reg.width, init=reg.init),
                         f"{reg.name}_set": In(reg.width)}
            else:
                ports = {reg.name: Out(reg.width, init=reg.init)}
            for port, member in ports.items():
                if port in members:
                    raise ValueError(f"port name {port!r} of register {reg.name!r} is "
                                     f"already used")
                if hasattr(CSRBlock, port):
                    raise ValueError(f"port name {port!r} of register {reg.name!r} is "
                                     f"reserved by CSRBlock")
                members[port] = member
            if reg.snapshot_of is not None:
                lo = by_name.get(reg.snapshot_of)
                if lo is None or lo.access != "ro" or lo.snapshot_of is not None:
                    raise ValueError(f"snapshot_of of register {reg.name!r} must name a 'ro' "
                                     f"register of this block that is not itself a "
                                     f"snapshot, not {reg.snapshot_of!r}")
        self._registers = registers
        self._addr_width = addr_width
        self._index = {reg.name: i for i, reg in enumerate(registers)}
        super().__init__(members)

    @property
    def registers(self):
        """The :class:`Register` descriptors, in address order."""
        return self._registers

    @property
    def addr_width(self):
        return self._addr_width

    def address_of(self, name):
        """Byte address of register ``name``."""
        if name not in self._index:
            raise KeyError(f"no register named {name!r}")
        return _WORD_BYTES * self._index[name]

    def register_map(self):
        """A list of :class:`MapEntry` ``(address, name, access, width, doc)``, by address."""
        return register_map(self._registers)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # ---- write channel: hold AW and W until both are there -----------------------
        aw_held = Signal()
        aw_addr = Signal(self._addr_width)
        w_held = Signal()
        w_data = Signal(DATA_WIDTH)
        w_strb = Signal(_WORD_BYTES)
        m.d.comb += [bus.awready.eq(~aw_held), bus.wready.eq(~w_held)]

        addr = Mux(aw_held, aw_addr, bus.awaddr)
        data = Mux(w_held, w_data, bus.wdata)
        strb = Mux(w_held, w_strb, bus.wstrb)
        do_write = Signal()
        m.d.comb += do_write.eq((aw_held | bus.awvalid) & (w_held | bus.wvalid) & ~bus.bvalid)

        byte_mask = Cat(strb[i].replicate(8) for i in range(_WORD_BYTES))
        ones = Signal(DATA_WIDTH)                # the bits the host writes, strobed
        m.d.comb += ones.eq(data & byte_mask)
        w_index = addr[2:]

        with m.If(do_write):
            m.d.sync += [aw_held.eq(0), w_held.eq(0), bus.bvalid.eq(1)]
            with m.Switch(w_index):
                for i, reg in enumerate(self._registers):
                    with m.Case(i):
                        m.d.sync += bus.bresp.eq(RESP_SLVERR if reg.access == "ro"
                                                 else RESP_OKAY)
                with m.Default():
                    m.d.sync += bus.bresp.eq(RESP_SLVERR)
        with m.Else():
            with m.If(bus.awvalid & ~aw_held):
                m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr)]
            with m.If(bus.wvalid & ~w_held):
                m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        for i, reg in enumerate(self._registers):
            hit = do_write & (w_index == i)
            w = reg.width
            if reg.access == "rw":
                value = getattr(self, reg.name)
                with m.If(hit):
                    m.d.sync += value.eq((value & ~byte_mask[:w]) | ones[:w])
            elif reg.access == "w1s":
                pulse = getattr(self, reg.name)
                m.d.sync += pulse.eq(Mux(hit, ones[:w], 0))
            elif reg.access == "w1c":
                value = getattr(self, reg.name)
                clear = Mux(hit, ones[:w], 0)
                m.d.sync += value.eq((value & ~clear) | getattr(self, f"{reg.name}_set"))

        # ---- read channel --------------------------------------------------------------
        m.d.comb += bus.arready.eq(~bus.rvalid)
        ar_fire = bus.arvalid & ~bus.rvalid
        r_index = bus.araddr[2:]

        shadows = {}
        for reg in self._registers:
            if reg.snapshot_of is not None:
                shadows[reg.name] = Signal(reg.width, name=f"{reg.name}_shadow")

        with m.If(ar_fire):
            m.d.sync += bus.rvalid.eq(1)
            with m.Switch(r_index):
                for i, reg in enumerate(self._registers):
                    with m.Case(i):
                        if reg.access == "w1s":
                            value = 0
                        elif reg.name in shadows:
                            value = shadows[reg.name]
                        else:
                            value = getattr(self, reg.name)
                        m.d.sync += [bus.rdata.eq(value), bus.rresp.eq(RESP_OKAY)]
                with m.Default():
                    m.d.sync += [bus.rdata.eq(0), bus.rresp.eq(RESP_SLVERR)]
        with m.Elif(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        # a read of a snapshot's low word latches the high word in the same cycle
        for hi in self._registers:
            if hi.snapshot_of is not None:
                with m.If(ar_fire & (r_index == self._index[hi.snapshot_of])):
                    m.d.sync += shadows[hi.name].eq(getattr(self, hi.name))
        return m
