"""Registered copies of a control value, kept apart by synthesis: fan-out for the FPGA.

A value that steers every lane of a wide datapath (a shift amount, an operation's
decode bits, a rounding constant) drives hundreds of LUT inputs; on an ECP5 the route to
them costs more than the logic it feeds. One register per group of consumers divides
that load, but Yosys merges flip-flops with the same inputs (``opt_merge``) whatever
their ``keep`` attribute says (measured with Yosys 0.70: a wire's ``keep`` keeps the wire,
not its own flip-flop). A ``TRELLIS_FF`` instance with ``keep`` on the cell survives.

:func:`copies` builds ``n`` copies of a value, each the value one cycle later: for a
platform whose ``family`` is ``"ecp5"`` (:data:`hw.dsp.ECP5`) one kept ``TRELLIS_FF`` per
bit and copy, no reset, its ``M`` pin left open (nextpnr's packer routes a lone
flip-flop's data through ``M``: a tied ``M`` stops it with "connected to incorrect
net"); elsewhere (the simulators) one plain register that every copy
names, so simulation pays nothing for them. The same cycle in both forms.
"""

from amaranth import ClockSignal, Const, Signal, Value
from amaranth.hdl import Instance

from .dsp import dsp_family

__all__ = ["copies"]


def copies(m, value, n, name, platform):
    """``n`` signals, each ``value`` one cycle later (no reset: a copy holds whatever it
    last sampled, so consumers read it at least a cycle after ``value`` settles)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    value = Value.cast(value)
    shape = value.shape()
    if dsp_family(platform) != "ecp5":
        reg = Signal(shape, name=name, reset_less=True)
        m.d.sync += reg.eq(value)
        return [reg] * n
    out = []
    for i in range(n):
        copy = Signal(shape, name=f"{name}_{i}")
        for b in range(len(value)):
            m.submodules[f"{name}_{i}_ff{b}"] = Instance(
                "TRELLIS_FF", a_keep=1,
                p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
                p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",
                i_CLK=ClockSignal("sync"), i_CE=Const(1), i_LSR=Const(0),
                i_DI=value[b], o_Q=copy[b])
        out.append(copy)
    return out
