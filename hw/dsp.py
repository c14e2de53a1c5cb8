"""A registered multiplier that becomes the FPGA's own DSP block, with its own registers.

Yosys' ECP5 flow maps a ``*`` to a ``MULT18X18D`` with none of the block's registers in
use (``techlibs/lattice/dsp_map_18x18.v`` sets no ``REG_*`` parameter, and no pass packs
fabric flip-flops into the block), so a product computed between two fabric registers
crosses the fabric-to-DSP routing twice in one cycle: that was the `fpga` preset's
critical path (``docs/fpga.md``). :class:`Multiplier` states the registers itself.

Which form is built depends on the platform the design is elaborated for (Amaranth
hands it to every ``elaborate``): a platform whose ``family`` is ``"ecp5"`` (an
Amaranth Lattice ECP5 platform, or :data:`ECP5`, what ``serrano fpga`` elaborates
with) gets an ``Instance`` of ``MULT18X18D`` with its input, pipeline and output
registers on; everything else (Verilator, Icarus, Amaranth's simulator, ``serrano
verilog``) the behavioural form with the same registers, so that simulation and the
FPGA see the same cycles. ``tests/test_dsp.py`` simulates the two side by side (the
block by ``sim/hdl/mult18x18d.v``, a model of its documented behaviour) and checks the
synthesized netlist.
"""

from types import SimpleNamespace

from amaranth import ClockSignal, Const, Module, Signal, signed
from amaranth.hdl import Instance
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ECP5", "DSP_WIDTH", "Multiplier", "dsp_family"]

#: The platform object of the ECP5 build (``serrano fpga``): only its ``family`` is read.
ECP5 = SimpleNamespace(family="ecp5")

#: Operand bits of one ``MULT18X18D``.
DSP_WIDTH = 18


def dsp_family(platform):
    """The FPGA family whose DSP blocks ``platform`` asks for, or ``None`` (behavioural)."""
    family = getattr(platform, "family", None)
    return family if family == "ecp5" else None


class Multiplier(wiring.Component):
    """``p = a * b`` (signed, exact), registered on both sides.

    Pipeline (``pipeline`` = 0 or 1)::

        cycle t          a, b presented; registered at its end (the input registers)
        cycle t+1        [a_reg * b_reg registered (the pipeline register), if pipeline]
        cycle t+1+pipe   the product registered (the output register)
        cycle t+2+pipe   p == a(t) * b(t)

    so ``latency = 2 + pipeline`` cycles from operands to product, one product per
    cycle, no reset (the registers hold data only: whoever uses ``p`` knows from its own
    valid bits which cycles mean anything). With ``enable``, an ``en`` input: every
    register loads only in cycles where ``en`` is high (a pipeline that stalls holds its
    products; the cycles above count enabled cycles); without it, every cycle. ``a_reg`` is ``a`` one
    cycle later (the A input register's value) for a consumer that passes the operand
    on, as a PE passes its activation to the right: the behavioural form has one
    register for both; the ECP5 form a fabric register beside the block's own.

    On an ECP5 (``dsp_family(platform) == "ecp5"``) with both operands at most 18 bits:
    one ``MULT18X18D``, operands sign-extended to 18 bits with ``SIGNEDA``/``SIGNEDB``
    high, ``REG_INPUTA_CLK``, ``REG_INPUTB_CLK``, ``REG_OUTPUT_CLK`` and (``pipeline``)
    ``REG_PIPELINE_CLK`` on ``CLK0`` with ``CE0`` high (``en``), ``GSR`` off, no reset.
    """

    def __init__(self, a_width, b_width, *, pipeline=0, enable=False):
        if pipeline not in (0, 1):
            raise ValueError(f"pipeline must be 0 or 1, not {pipeline!r}")
        for name, width in (("a_width", a_width), ("b_width", b_width)):
            if not isinstance(width, int) or width <= 0:
                raise ValueError(f"{name} must be a positive integer, not {width!r}")
        self.a_width, self.b_width, self.pipeline = a_width, b_width, pipeline
        self.enable = bool(enable)
        members = {
            "a": In(signed(a_width)),
            "b": In(signed(b_width)),
            "a_reg": Out(signed(a_width)),
            "p": Out(signed(a_width + b_width)),
        }
        if self.enable:
            members["en"] = In(1)
        super().__init__(members)

    @property
    def latency(self):
        """Cycles from ``a``, ``b`` to ``p``: 2, or 3 with the pipeline register."""
        return self.latency_for(self.pipeline)

    @staticmethod
    def latency_for(pipeline):
        """The latency of a :class:`Multiplier` built with ``pipeline``."""
        return 2 + pipeline

    def elaborate(self, platform):
        m = Module()
        en = self.en if self.enable else Const(1)
        a_reg = Signal(signed(self.a_width), reset_less=True)
        with m.If(en):
            m.d.sync += a_reg.eq(self.a)
        m.d.comb += self.a_reg.eq(a_reg)
        fits = max(self.a_width, self.b_width) <= DSP_WIDTH
        if dsp_family(platform) == "ecp5" and fits:
            self._ecp5(m, en)
        else:
            b_reg = Signal(signed(self.b_width), reset_less=True)
            product = Signal(signed(self.a_width + self.b_width), reset_less=True)
            with m.If(en):
                m.d.sync += b_reg.eq(self.b)
                if self.pipeline:
                    piped = Signal.like(product, name="piped", reset_less=True)
                    m.d.sync += [piped.eq(a_reg * b_reg), product.eq(piped)]
                else:
                    m.d.sync += product.eq(a_reg * b_reg)
            m.d.comb += self.p.eq(product)
        return m

    def _ecp5(self, m, en):
        a18 = Signal(signed(DSP_WIDTH))
        b18 = Signal(signed(DSP_WIDTH))
        p36 = Signal(signed(2 * DSP_WIDTH))
        m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(p36)]
        registered = "CLK0"
        ports = {
            "p_REG_INPUTA_CLK": registered, "p_REG_INPUTB_CLK": registered,
            "p_REG_PIPELINE_CLK": registered if self.pipeline else "NONE",
            "p_REG_OUTPUT_CLK": registered,
            "p_GSR": "DISABLED",
            "i_CLK0": ClockSignal("sync"), "i_CE0": en, "i_RST0": Const(0),
            "i_SIGNEDA": Const(1), "i_SIGNEDB": Const(1),
            "i_SOURCEA": Const(0), "i_SOURCEB": Const(0),
            "o_SIGNEDP": Signal(name="signedp"),
        }
        for i in (1, 2, 3):             # the other clock, enable and reset pins: unused
            ports[f"i_CLK{i}"] = ports[f"i_CE{i}"] = ports[f"i_RST{i}"] = Const(0)
        for i in range(DSP_WIDTH):
            ports[f"i_A{i}"] = a18[i]
            ports[f"i_B{i}"] = b18[i]
            ports[f"i_C{i}"] = Const(0)
        for i in range(2 * DSP_WIDTH):
            ports[f"o_P{i}"] = p36[i]
        m.submodules.dsp = Instance("MULT18X18D", **ports)
