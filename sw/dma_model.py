"""Golden model of the DMA engines: which bytes a command touches and how it is burst.

Pure Python and numpy, written from the rules (AXI4: an INCR burst carries at most 256
beats and never crosses a 4 KiB boundary; serrano: a burst is legal iff it lies inside
``[base, limit)``), not from the RTL. The hardware cuts a row greedily with a ``min`` of
three lengths; this model instead walks the row beat by beat and starts a new burst
whenever a beat lands on a page boundary or the current burst is full, so the two
formulations check each other.

Addresses here are unbounded Python integers: a row past ``2**addr_width`` is simply
beyond every ``limit``, which is the hardware's rule too.
"""

from dataclasses import dataclass

import numpy as np

from serrano.hw.axi import MAX_BURST_BEATS, PAGE_BYTES

__all__ = ["PAGE_BYTES", "MAX_BURST_BEATS", "Command", "as_command", "command_error", "bursts",
           "burst_legal", "issued_bursts", "gather", "scatter", "byte_ranges",
           "pack_command"]


@dataclass(frozen=True)
class Command:
    """A 2-D strided transfer: ``rows`` rows of ``row_beats`` bus beats, row ``r`` at byte
    ``addr + r * stride``."""
    addr: int
    rows: int
    row_beats: int
    stride: int

    def as_dict(self):
        return {"addr": self.addr, "rows": self.rows, "row_beats": self.row_beats,
                "stride": self.stride}


def as_command(cmd):
    """A :class:`Command` from a Command, a dict with its four fields, or a 4-tuple
    ``(addr, rows, row_beats, stride)``."""
    if isinstance(cmd, Command):
        return cmd
    if isinstance(cmd, dict):
        return Command(**cmd)
    return Command(*cmd)


def command_error(cmd, bus_bytes):
    """``"ALIGN"`` if the command is malformed (unaligned ``addr``/``stride``, no rows or
    no beats), else ``None``."""
    cmd = as_command(cmd)
    if cmd.addr % bus_bytes or cmd.stride % bus_bytes or cmd.rows == 0 or cmd.row_beats == 0:
        return "ALIGN"
    return None


def bursts(cmd, bus_bytes):
    """The AXI bursts of a well-formed ``cmd``, as a list of ``(addr, beats)`` in issue
    order. Bursts never span two rows. A malformed command raises ValueError."""
    cmd = as_command(cmd)
    if command_error(cmd, bus_bytes):
        raise ValueError(f"malformed command {cmd!r} for a {bus_bytes}-byte bus")
    out = []
    for r in range(cmd.rows):
        start = cmd.addr + r * cmd.stride
        first, count = None, 0
        for i in range(cmd.row_beats):
            a = start + i * bus_bytes
            if count and (count == MAX_BURST_BEATS or a % PAGE_BYTES == 0):
                out.append((first, count))
                count = 0
            if count == 0:
                first = a
            count += 1
        out.append((first, count))
    return out


def burst_legal(burst, bus_bytes, base, limit):
    """Whether every byte of ``burst = (addr, beats)`` lies in ``[base, limit)``."""
    addr, beats = burst
    return base <= addr and addr + beats * bus_bytes - 1 < limit


def issued_bursts(cmd, bus_bytes, base, limit):
    """What an engine may issue for ``cmd`` under the window: ``(bursts, error)``.

    ``error`` is ``"ALIGN"`` (no burst), ``"WINDOW"`` (the bursts before the first illegal
    one) or ``None`` (all bursts).
    """
    cmd = as_command(cmd)
    if command_error(cmd, bus_bytes):
        return [], "ALIGN"
    legal = []
    for b in bursts(cmd, bus_bytes):
        if not burst_legal(b, bus_bytes, base, limit):
            return legal, "WINDOW"
        legal.append(b)
    return legal, None


def byte_ranges(cmd, bus_bytes):
    """The ``[start, end)`` byte range of every row of ``cmd``."""
    cmd = as_command(cmd)
    row_bytes = cmd.row_beats * bus_bytes
    return [(cmd.addr + r * cmd.stride, cmd.addr + r * cmd.stride + row_bytes)
            for r in range(cmd.rows)]


def gather(mem_bytes, cmd, bus_bytes):
    """The bytes a read of ``cmd`` delivers, in order, from ``mem_bytes`` (bytes-like or a
    uint8 array indexed by address)."""
    cmd = as_command(cmd)
    mem = np.frombuffer(bytes(mem_bytes), dtype=np.uint8)
    parts = []
    for s, e in byte_ranges(cmd, bus_bytes):
        if e > len(mem):
            raise IndexError(f"row [{s:#x}, {e:#x}) lies outside the memory")
        parts.append(mem[s:e])
    return np.concatenate(parts).tobytes() if parts else b""


def scatter(mem_bytes, cmd, bus_bytes, payload):
    """The memory after a write of ``cmd`` carrying ``payload`` (bytes, in beat order).
    Later rows win where rows overlap."""
    cmd = as_command(cmd)
    mem = np.frombuffer(bytes(mem_bytes), dtype=np.uint8).copy()
    src = np.frombuffer(bytes(payload), dtype=np.uint8)
    row_bytes = cmd.row_beats * bus_bytes
    if len(src) != cmd.rows * row_bytes:
        raise ValueError(f"payload has {len(src)} bytes, the command moves "
                         f"{cmd.rows * row_bytes}")
    for r, (s, e) in enumerate(byte_ranges(cmd, bus_bytes)):
        if e > len(mem):
            raise IndexError(f"row [{s:#x}, {e:#x}) lies outside the memory")
        mem[s:e] = src[r * row_bytes:(r + 1) * row_bytes]
    return mem.tobytes()


def pack_command(cmd, addr_width):
    """The command as the integer a ``dma_command`` port carries: ``addr`` in the low
    ``addr_width`` bits, then ``rows`` (16), ``row_beats`` (16), ``stride``
    (``addr_width``)."""
    cmd = as_command(cmd)
    fields = ((cmd.addr, addr_width), (cmd.rows, 16), (cmd.row_beats, 16),
              (cmd.stride, addr_width))
    word, shift = 0, 0
    for value, width in fields:
        if not 0 <= value < (1 << width):
            raise ValueError(f"{value!r} does not fit in {width} bits")
        word |= value << shift
        shift += width
    return word
