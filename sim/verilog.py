"""Verilog generation from the Amaranth components, one function per top level."""

import hashlib
import os
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Signal, Value

from serrano.hw.array import SystolicArray
from serrano.hw.config import get_preset
from serrano.hw.dsp import dsp_family

__all__ = ["ARRAY_TOP", "TOP", "array_verilog", "top_verilog", "write_verilog",
           "signal_ports"]

ARRAY_TOP = "serrano_array"
TOP = "serrano_top"
_HW_DIR = Path(__file__).resolve().parents[1] / "hw"


def array_verilog(cfg, platform=None):
    """Verilog text of the bare systolic array of ``cfg``, top module ``serrano_array``.

    Ports follow the component's signature with ``__`` between levels, e.g.
    ``act__valid``, ``act__payload`` (bit 0 up: ``R`` int8 activations, then the bank
    bit), ``weight__payload`` (``C`` int8, the row tag, the bank bit),
    ``result__payload`` (``C`` int32, column 0 in the low bits), ``result__valid``.
    ``platform`` as for :func:`top_verilog`.
    """
    dut = SystolicArray(cfg)
    return verilog.convert(dut, name=ARRAY_TOP, platform=platform, emit_src=False,
                           ports=signal_ports(dut))


def signal_ports(component):
    """The component's ports that are signals: an always-ready stream's ``ready`` is a
    constant 1 inside Amaranth and has no wire at the Verilog boundary."""
    ports = []
    for _path, _member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if isinstance(value, Signal):
            ports.append(value)
    return ports


def top_verilog(cfg, gating="clock", platform=None):
    """Verilog text of the whole accelerator (:class:`hw.top.Serrano`), module
    ``serrano_top``: ports ``clk``, ``rst``, ``m_axi__*`` (AXI4 manager), ``s_axil__*``
    (AXI4-Lite subordinate), ``irq``. ``gating`` (:mod:`hw.clock_gate`): ``"clock"``
    (the default: the units' clock gates, what Verilator and Icarus simulate) or
    ``"none"`` (what the FPGA flow synthesizes). ``platform``: what the design is
    elaborated for; :data:`hw.dsp.ECP5` (the FPGA flow) makes the PE multipliers
    ECP5 DSP blocks with their own registers (:mod:`hw.dsp`), ``None`` behavioural.

    Conversion of the 16 x 16 design takes Yosys tens of seconds, so the text is cached
    under ``build/verilog/`` keyed by the preset, a hash of every ``hw/`` source file and
    the Amaranth version: any change to the RTL regenerates it. The key is the sources
    as this process imported them; if the files have changed since, this process's
    design is stale: it is converted as loaded and not cached.
    """
    import amaranth
    from serrano import hw
    from serrano.hw.top import Serrano
    h = hashlib.sha256(amaranth.__version__.encode())
    h.update(repr(cfg).encode())
    h.update(hw.SOURCE_HASH_AT_IMPORT.encode())
    family = dsp_family(platform) or "generic"
    cache = _cache_dir() / f"{TOP}-{cfg.name}-{gating}-{family}-{h.hexdigest()[:16]}.v"
    current = hw.source_hash() == hw.SOURCE_HASH_AT_IMPORT
    if current and cache.exists():
        return cache.read_text()
    dut = Serrano(cfg, gating)
    text = verilog.convert(dut, name=TOP, platform=platform, emit_src=False,
                           ports=signal_ports(dut))
    if current:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(cache)
    return text


def _cache_dir():
    root = Path(os.environ.get("SERRANO_BUILD_DIR", _HW_DIR.parent / "build"))
    return root / "verilog"


def write_verilog(preset, path, *, top=True, gating="clock"):
    """Write the Verilog of ``preset`` (the whole accelerator with its clock gates or,
    ``gating="none"``, without; or with ``top=False`` the bare array) to ``path``
    (parents created); return the path."""
    cfg = get_preset(preset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(top_verilog(cfg, gating) if top else array_verilog(cfg))
    return path
