"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Signal, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .dsp import Multiplier

__all__ = ["PE", "weight_lane"]


def weight_lane(rows, width=8):
    """The slice of a weight row that travels down one column: one byte and its tag.

    ``data`` is one int8 weight for array row ``row``, or, with ``pair``, two 4-bit codes
    (0..15): bits 0-3 for array row ``row`` (even) and bits 4-7 for row ``row + 1``.
    """
    return data.StructLayout({
        "valid": 1,
        "row": range(rows),
        "bank": 1,
        "data": signed(width),
        "pair": 1,
    })


class PE(wiring.Component):
    """Weight-stationary int8 MAC at array row ``row``.

    Computes ``psum_out = psum_in + a * w[bank]`` in exact int32 (wrapping modulo 2**32),
    where ``w[0]`` and ``w[1]`` are two weight registers: one serves the tile being
    computed while the other is loaded with the next one.

    Pipeline
    --------
    cycle t     ``a_in`` is registered, and so is the weight it multiplies,
                ``w[a_bank_in]`` (the multiplier's input registers).
    cycle t+1   the product of the two registers is registered (the multiplier's output
                register); ``a_out`` shows ``a_in`` of cycle t (it is the input register).
                With ``mult_pipeline`` the product passes one more register first.
    cycle t+2   ``psum_in`` (the upper PE's sum of the same activation row) is added to
                the product and registered (``t + 3`` with ``mult_pipeline``).
    cycle t+3   ``psum_out`` holds the sum (``t + 4``).

    So activations move one PE right per cycle, sums one PE down per cycle, and the
    multiplier (:class:`hw.dsp.Multiplier`) has its registers on both sides: on an ECP5
    they are its DSP block's own (input, pipeline and output registers), elsewhere the
    same registers in behavioural form; the 32-bit add sits in a stage of its own.

    Reset: only the weights' and activations' absence is state; the data registers
    (activation, weights, product, sum) are reset-less, so a reset net reaches none of
    them. The array's valid bits say which sums mean anything.

    Weights
    -------
    ``w_in`` carries a weight lane down the column, one PE per cycle (``w_out`` is
    ``w_in`` one cycle later). When ``w_in.valid`` and ``w_in.row == row`` the PE latches
    ``w_in.data`` into ``w[w_in.bank]`` at the end of the cycle; the new weight is used by
    activations sampled from the next cycle on. A lane with ``pair`` carries two 4-bit
    codes for rows ``row`` and ``row + 1`` (``row`` even): the PE of an even row latches
    the low nibble, the PE of the odd row below it the high nibble, both zero-extended
    (0..15). This is the whole 4-bit unpacker: a 4-bit mux in front of each weight
    register, so a beat of ``C`` bytes loads two rows of a tile at once. A write to one
    bank never disturbs an activation that uses the other bank, which is how tiles switch
    without a bubble.

    There is no back-pressure: the PE accepts an activation every cycle.

    Parameters
    ----------
    row : int
        This PE's row in the array (the tag it answers to).
    rows : int
        The array's row count ``R`` (the width of the row tag).
    pass_weights : bool
        Whether ``w_out`` exists (false for the bottom row).
    pass_acts : bool
        Whether ``a_out`` exists (false for the rightmost column).
    act_width, acc_width : int
        Bits of an activation or weight, and of a partial sum (``config.act_width``,
        ``config.acc_width``; a 4-bit code is half a weight byte).
    mult_pipeline : int
        The multiplier's pipeline registers, 0 or 1 (``config.mult_pipeline``).
    """

    def __init__(self, row, rows, *, pass_weights=True, pass_acts=True, act_width=8,
                 acc_width=32, mult_pipeline=0):
        if not isinstance(rows, int) or rows <= 0:
            raise TypeError(f"rows must be a positive integer, not {rows!r}")
        if not isinstance(row, int) or not 0 <= row < rows:
            raise ValueError(f"row must be an integer in range({rows}), not {row!r}")
        self.row = row
        self.rows = rows
        self.act_width, self.acc_width = act_width, acc_width
        self.mult_pipeline = mult_pipeline
        members = {
            "a_in": In(signed(act_width)),
            "a_bank_in": In(1),
            "psum_in": In(signed(acc_width)),
            "psum_out": Out(signed(acc_width)),
            "w_in": In(weight_lane(rows, act_width)),
        }
        if pass_acts:
            members["a_out"] = Out(signed(act_width))
            members["a_bank_out"] = Out(1)
        if pass_weights:
            members["w_out"] = Out(weight_lane(rows, act_width))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()

        aw, half = self.act_width, self.act_width // 2
        w0 = Signal(signed(aw), reset_less=True)
        w1 = Signal(signed(aw), reset_less=True)
        lane = self.w_in
        value = Signal(signed(aw))
        if self.row % 2 == 0:
            hit = lane.valid & (lane.row == self.row)
            m.d.comb += value.eq(Mux(lane.pair, lane.data[:half], lane.data))
        else:
            hit = lane.valid & ((lane.row == self.row)
                                | (lane.pair & (lane.row == self.row - 1)))
            m.d.comb += value.eq(Mux(lane.pair, lane.data[half:], lane.data))
        with m.If(hit):
            with m.If(lane.bank):
                m.d.sync += w1.eq(value)
            with m.Else():
                m.d.sync += w0.eq(value)
        if "w_out" in self.signature.members:
            m.d.sync += self.w_out.eq(self.w_in)

        # Stage 1: the multiplier's input registers (the activation also moves right).
        mult = m.submodules.mult = Multiplier(aw, aw, pipeline=self.mult_pipeline)
        bank_q = Signal(reset_less=True)
        m.d.comb += [mult.a.eq(self.a_in), mult.b.eq(Mux(self.a_bank_in, w1, w0))]
        m.d.sync += bank_q.eq(self.a_bank_in)
        if "a_out" in self.signature.members:
            m.d.comb += [self.a_out.eq(mult.a_reg), self.a_bank_out.eq(bank_q)]

        # Stage 2 (and 3): the product. Then the 32-bit sum.
        psum = Signal(signed(self.acc_width), reset_less=True)
        m.d.sync += psum.eq(self.psum_in + mult.p)
        m.d.comb += self.psum_out.eq(psum)
        return m
