"""Clock gating: a unit clocked only in the cycles it has work.

:func:`gate` places a unit in a clock domain of its own whose clock ticks only in cycles
where the unit's enable was high, as an ASIC's integrated clock-gating cell (ICG) does:
the enable is latched while the clock is low (here a flip-flop on the falling edge), so
the gated clock is the clock ANDed with a value that cannot change while it is high, and
has no glitch. An idle unit's flip-flops and the logic after them then do nothing: no
dynamic power in silicon, and no work for a cycle-based simulator (Verilator evaluates the
logic of a clock only on that clock's edges).

Contract with the gated unit: its ``idle`` output is high only when the unit holds no
instruction, has nothing in flight and drives no pulse, and its state does not change in a
cycle where ``idle`` is high and no instruction arrives (``insn.valid`` low), or changes
only in registers that are loaded again before anything reads them (the requantizer's
datapath). The enable is ``rst | ~idle | insn.valid``, so the gated unit sees every edge
where it could change, including the reset's; it sees exactly the same cycles of work as
without the gate.
Latency: none (the gated domain's edges coincide with the clock's). Its outputs are
combinational functions of its registers and inputs, as before.

Forms (``gating``): ``"clock"`` the gated clock (the generated Verilog that Verilator and
Icarus run, and an ASIC flow); ``"none"`` the unit on the ordinary clock (the FPGA flow,
where a gated clock would leave the clock network, and Amaranth's simulator, which would
see a clock derived in logic one delta cycle late). Both forms give the same cycles and
the same results (``tests/test_clock_gate.py``).
"""

from amaranth import ClockDomain, ClockSignal, DomainRenamer, ResetSignal, Signal

__all__ = ["GATINGS", "check", "gate"]

GATINGS = ("clock", "none")


def check(gating):
    """``gating`` if it names a form; else a one-line ``ValueError``."""
    if gating not in GATINGS:
        raise ValueError(f"gating must be one of {', '.join(GATINGS)}, not {gating!r}")
    return gating


def gate(m, name, unit, gating, wake=None):
    """Return ``unit`` (a component with ``idle`` and ``insn``) for ``m.submodules``,
    clocked in domain ``name`` gated by ``rst | ~idle | wake`` when ``gating`` is
    ``"clock"``; unchanged when it is ``"none"``. ``wake`` is what brings work to the
    unit, ``insn.valid`` unless given (the requantizer's: a row on its input). ``m`` is
    the parent module, whose ``sync`` domain is the clock gated (itself gated, for a
    block inside a gated unit)."""
    if check(gating) == "none":
        return unit
    wake = unit.insn.valid if wake is None else wake
    en = Signal(name=f"{name}_en")
    en_q = Signal(init=1, name=f"{name}_en_q")     # the ICG's latch; runs at power-up
    cd = ClockDomain(name, local=True)
    latch = ClockDomain(f"{name}_icg", clk_edge="neg", reset_less=True, local=True)
    m.domains += [cd, latch]
    m.d.comb += [en.eq(ResetSignal() | ~unit.idle | wake),
                 latch.clk.eq(ClockSignal()),
                 cd.clk.eq(ClockSignal() & en_q), cd.rst.eq(ResetSignal())]
    m.d[latch.name] += en_q.eq(en)
    return DomainRenamer(name)(unit)
