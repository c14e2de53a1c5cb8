"""Verilog generation from the Amaranth components, one function per top level."""

from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Signal, Value

from hw.array import SystolicArray
from hw.config import get_preset

__all__ = ["ARRAY_TOP", "array_verilog", "write_verilog"]

ARRAY_TOP = "serrano_array"


def array_verilog(cfg):
    """Verilog text of the bare systolic array of ``cfg``, top module ``serrano_array``.

    Ports follow the component's signature with ``__`` between levels, e.g.
    ``act__valid``, ``act__payload`` (bit 0 up: ``R`` int8 activations, then the bank
    bit), ``weight__payload`` (``C`` int8, the row tag, the bank bit),
    ``result__payload`` (``C`` int32, column 0 in the low bits), ``result__valid``.
    """
    dut = SystolicArray(cfg)
    return verilog.convert(dut, name=ARRAY_TOP, emit_src=False, ports=signal_ports(dut))


def signal_ports(component):
    """The component's ports that are signals: an always-ready stream's ``ready`` is a
    constant 1 inside Amaranth and has no wire at the Verilog boundary."""
    ports = []
    for _path, _member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if isinstance(value, Signal):
            ports.append(value)
    return ports


def write_verilog(preset, path):
    """Write the Verilog of ``preset`` to ``path`` (parents created); return the path."""
    cfg = get_preset(preset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(array_verilog(cfg))
    return path
