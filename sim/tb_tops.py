"""Small top levels that exist only to put a block on the Verilog boundary for cocotb.

Each wrapper exposes its block's ports under names the cocotb testbenches and
cocotbext-axi expect, and has a ``*_verilog(cfg)`` function returning the Verilog text.
"""

from amaranth.back import verilog
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from pathlib import Path

from amaranth import Module

from serrano.hw.axi import AXI4Signature
from serrano.hw.dma import COUNTER_WIDTH, DMAError, dma_command
from serrano.hw.dma_read import DMARead
from serrano.hw.dma_write import DMAWrite

from .verilog import signal_ports

__all__ = ["DMA_TOP", "DMATop", "dma_top_verilog", "DSP_TOP", "MULT18X18D_MODEL",
           "TRELLIS_FF_MODEL", "dsp_pair_verilog"]

DMA_TOP = "serrano_dma_top"

_READ_MEMBERS = ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "arready",
                 "rid", "rdata", "rresp", "rlast", "rvalid", "rready")
_WRITE_MEMBERS = ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "awready",
                  "wdata", "wstrb", "wlast", "wvalid", "wready",
                  "bid", "bresp", "bvalid", "bready")


class DMATop(wiring.Component):
    """A :class:`hw.dma_read.DMARead` and a :class:`hw.dma_write.DMAWrite` sharing one
    AXI4 manager port ``m_axi`` (reads on AR/R, writes on AW/W/B) and one window.

    In Verilog the bus is ``m_axi__arvalid`` and so on, which cocotbext-axi finds with
    ``AxiBus.from_prefix(dut, "m_axi_")``. The read engine's ports are prefixed ``rd_``,
    the write engine's ``wr_`` (``rd_cmd__payload``, ``wr_data__valid``, ``rd_bytes``...).
    """

    def __init__(self, cfg, max_outstanding=4):
        self.cfg = cfg
        self.max_outstanding = max_outstanding
        aw = cfg.addr_width
        super().__init__({
            "m_axi": Out(AXI4Signature(addr_width=aw, data_bytes=cfg.bus_bytes)),
            "base": In(aw),
            "limit": In(aw),
            "rd_cmd": In(stream.Signature(dma_command(cfg))),
            "rd_data": Out(stream.Signature(8 * cfg.bus_bytes)),
            "rd_busy": Out(1),
            "rd_error": Out(DMAError),
            "rd_error_valid": Out(1),
            "rd_clear": In(1),
            "rd_bytes": Out(COUNTER_WIDTH),
            "wr_cmd": In(stream.Signature(dma_command(cfg))),
            "wr_data": In(stream.Signature(8 * cfg.bus_bytes)),
            "wr_busy": Out(1),
            "wr_idle": Out(1),
            "wr_error": Out(DMAError),
            "wr_error_valid": Out(1),
            "wr_clear": In(1),
            "wr_bytes": Out(COUNTER_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rd = rd = DMARead(self.cfg, self.max_outstanding)
        m.submodules.wr = wr = DMAWrite(self.cfg, self.max_outstanding)
        wiring.connect(m, wiring.flipped(self.rd_cmd), rd.cmd)
        wiring.connect(m, rd.data, wiring.flipped(self.rd_data))
        wiring.connect(m, wiring.flipped(self.wr_cmd), wr.cmd)
        wiring.connect(m, wiring.flipped(self.wr_data), wr.data)
        for engine, members in ((rd, _READ_MEMBERS), (wr, _WRITE_MEMBERS)):
            for name in members:
                ours, theirs = getattr(self.m_axi, name), getattr(engine.bus, name)
                if self.m_axi.signature.members[name].flow == Out:
                    m.d.comb += ours.eq(theirs)
                else:
                    m.d.comb += theirs.eq(ours)
        m.d.comb += [
            rd.base.eq(self.base), rd.limit.eq(self.limit),
            wr.base.eq(self.base), wr.limit.eq(self.limit),
            rd.clear.eq(self.rd_clear), wr.clear.eq(self.wr_clear),
            self.rd_busy.eq(rd.busy), self.rd_error.eq(rd.error),
            self.rd_error_valid.eq(rd.error_valid), self.rd_bytes.eq(rd.bytes_read),
            self.wr_busy.eq(wr.busy), self.wr_idle.eq(wr.idle), self.wr_error.eq(wr.error),
            self.wr_error_valid.eq(wr.error_valid), self.wr_bytes.eq(wr.bytes_written),
        ]
        return m


def dma_top_verilog(cfg, max_outstanding=4):
    """Verilog text of :class:`DMATop` for ``cfg``, top module ``serrano_dma_top``.

    ``rd_cmd__payload`` / ``wr_cmd__payload`` pack the command as
    :func:`sw.dma_model.pack_command` does (``addr`` in the low bits, then ``rows``,
    ``row_beats``, ``stride``).
    """
    top = DMATop(cfg, max_outstanding)
    return verilog.convert(top, name=DMA_TOP, emit_src=False, ports=signal_ports(top))


DSP_TOP = "serrano_dsp_pair"
MULT18X18D_MODEL = Path(__file__).resolve().parent / "hdl" / "mult18x18d.v"
#: A model of the ECP5 flip-flop that :mod:`hw.fanout` instantiates (lint, Icarus).
TRELLIS_FF_MODEL = Path(__file__).resolve().parent / "hdl" / "trellis_ff.v"


def dsp_pair_verilog(a_width, b_width, *, pipeline, generic_pipeline=None, enable=False):
    """Verilog of ``serrano_dsp_pair``: the two forms of :class:`hw.dsp.Multiplier` side
    by side on the same operands, the ECP5 form (a ``MULT18X18D``, simulated by
    ``sim/hdl/mult18x18d.v``) with ``pipeline`` and the behavioural form with
    ``generic_pipeline`` (the same unless a test wants them to differ). Ports: ``clk``,
    ``rst``, ``a``, ``b``, (``enable``: ``en``), ``p_ecp5``, ``p_generic``, ``a_reg_ecp5``,
    ``a_reg_generic``."""
    from serrano.hw.dsp import ECP5, Multiplier
    if generic_pipeline is None:
        generic_pipeline = pipeline
    parts = []
    for form, platform, pipe in (("ecp5", ECP5, pipeline), ("generic", None, generic_pipeline)):
        dut = Multiplier(a_width, b_width, pipeline=pipe, enable=enable)
        parts.append(verilog.convert(dut, name=f"mult_{form}", platform=platform,
                                     emit_src=False, ports=signal_ports(dut)))
    pw = a_width + b_width
    en = " .en(en)," if enable else ""
    wrapper = f"""
module {DSP_TOP} (
  input wire clk, input wire rst,
  input wire [{a_width - 1}:0] a, input wire [{b_width - 1}:0] b, input wire en,
  output wire [{pw - 1}:0] p_ecp5, output wire [{pw - 1}:0] p_generic,
  output wire [{a_width - 1}:0] a_reg_ecp5, output wire [{a_width - 1}:0] a_reg_generic
);
  mult_ecp5 ecp5 (.clk(clk), .rst(rst), .a(a), .b(b),{en} .p(p_ecp5), .a_reg(a_reg_ecp5));
  mult_generic generic (.clk(clk), .rst(rst), .a(a), .b(b),{en} .p(p_generic),
                        .a_reg(a_reg_generic));
endmodule
"""
    return "\n".join([*parts, MULT18X18D_MODEL.read_text(), wrapper])
