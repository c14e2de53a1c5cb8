"""One processing element of the weight-stationary systolic array."""

from amaranth import Module, Signal, Mux, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PE", "weight_lane"]


def weight_lane(rows):
    """The slice of a weight row that travels down one column: one int8 and its tag."""
    return data.StructLayout({
        "valid": 1,
        "row": range(rows),
        "bank": 1,
        "data": signed(8),
    })


class PE(wiring.Component):
    """Weight-stationary int8 MAC at array row ``row``.

    Computes ``psum_out = psum_in + a * w[bank]`` in exact int32 (wrapping modulo 2**32),
    where ``w[0]`` and ``w[1]`` are two weight registers: one serves the tile being
    computed while the other is loaded with the next one.

    Pipeline
    --------
    cycle t     ``a_in`` and ``a_bank_in`` are sampled; the product ``a_in * w[a_bank_in]``
                is registered (a DSP's output register on an FPGA).
    cycle t+1   ``psum_in`` (the upper PE's sum of the same activation row) is added to
                the product and registered; ``a_out`` shows ``a_in`` of cycle t.
    cycle t+2   ``psum_out`` holds the sum.

    So activations move one PE right per cycle, sums one PE down per cycle, and the
    multiply and the 32-bit add sit in separate register stages.

    Weights
    -------
    ``w_in`` carries a weight lane down the column, one PE per cycle (``w_out`` is
    ``w_in`` one cycle later). When ``w_in.valid`` and ``w_in.row == row`` the PE latches
    ``w_in.data`` into ``w[w_in.bank]`` at the end of the cycle; the new weight is used by
    activations sampled from the next cycle on. A write to one bank never disturbs an
    activation that uses the other bank, which is how tiles switch without a bubble.

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
    """

    def __init__(self, row, rows, *, pass_weights=True, pass_acts=True):
        if not isinstance(rows, int) or rows <= 0:
            raise TypeError(f"rows must be a positive integer, not {rows!r}")
        if not isinstance(row, int) or not 0 <= row < rows:
            raise ValueError(f"row must be an integer in range({rows}), not {row!r}")
        self.row = row
        self.rows = rows
        members = {
            "a_in": In(signed(8)),
            "a_bank_in": In(1),
            "psum_in": In(signed(32)),
            "psum_out": Out(signed(32)),
            "w_in": In(weight_lane(rows)),
        }
        if pass_acts:
            members["a_out"] = Out(signed(8))
            members["a_bank_out"] = Out(1)
        if pass_weights:
            members["w_out"] = Out(weight_lane(rows))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()

        w0 = Signal(signed(8))
        w1 = Signal(signed(8))
        with m.If(self.w_in.valid & (self.w_in.row == self.row)):
            with m.If(self.w_in.bank):
                m.d.sync += w1.eq(self.w_in.data)
            with m.Else():
                m.d.sync += w0.eq(self.w_in.data)
        if "w_out" in self.signature.members:
            m.d.sync += self.w_out.eq(self.w_in)

        if "a_out" in self.signature.members:
            m.d.sync += [
                self.a_out.eq(self.a_in),
                self.a_bank_out.eq(self.a_bank_in),
            ]

        product = Signal(signed(16))
        m.d.sync += product.eq(self.a_in * Mux(self.a_bank_in, w1, w0))
        m.d.sync += self.psum_out.eq(self.psum_in + product)
        return m
