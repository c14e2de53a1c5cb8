"""AXI4 and AXI4-Lite bus signatures, flat, with the standard signal names.

Members are named exactly as the AMBA specification names the signals (``arvalid``,
``rdata``...), so a port ``m_axi`` of a top level becomes ``m_axi__arvalid`` in Verilog
and cocotbext-axi finds it with ``AxiBus.from_prefix(dut, "m_axi_")``. Directions are
given from the manager's (master's) side; a subordinate uses ``flipped()``.

Only INCR bursts are used; AxLOCK, AxCACHE, AxPROT, AxQOS, AxREGION and the user
signals are left out (their defaults are what serrano would drive).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4Signature", "AXI4LiteSignature", "BURST_INCR", "MAX_BURST_BEATS", "PAGE_BYTES",
           "RESP_OKAY", "RESP_EXOKAY",
           "RESP_SLVERR", "RESP_DECERR"]

BURST_INCR = 0b01
#: The AXI4 protocol's burst limits: an INCR burst carries at most 256 beats (AxLEN is 8
#: bits) and never crosses a 4 KiB boundary.
MAX_BURST_BEATS = 256
PAGE_BYTES = 4096
RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0b00, 0b01, 0b10, 0b11


class AXI4Signature(wiring.Signature):
    """An AXI4 manager port: ``addr_width``-bit addresses, ``data_bytes``-byte data."""

    def __init__(self, *, addr_width, data_bytes, id_width=1):
        if data_bytes not in (1, 2, 4, 8, 16, 32, 64, 128):
            raise ValueError(f"data_bytes must be a power of two up to 128, not {data_bytes!r}")
        self.addr_width = addr_width
        self.data_bytes = data_bytes
        self.id_width = id_width
        super().__init__({
            "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8),
            "awsize": Out(3), "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(8 * data_bytes), "wstrb": Out(data_bytes), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8),
            "arsize": Out(3), "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(8 * data_bytes), "rresp": In(2),
            "rlast": In(1), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (isinstance(other, AXI4Signature) and other.addr_width == self.addr_width
                and other.data_bytes == self.data_bytes and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AXI4Signature(addr_width={self.addr_width}, data_bytes={self.data_bytes}, "
                f"id_width={self.id_width})")


class AXI4LiteSignature(wiring.Signature):
    """An AXI4-Lite manager port with 32-bit data (the host's side of serrano's CSRs)."""

    def __init__(self, *, addr_width):
        self.addr_width = addr_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return isinstance(other, AXI4LiteSignature) and other.addr_width == self.addr_width

    def __repr__(self):
        return f"AXI4LiteSignature(addr_width={self.addr_width})"
