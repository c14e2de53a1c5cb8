"""The R x C weight-stationary systolic array: PEs, input skew, output de-skew."""

from amaranth import Module, Signal, signed
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from . import layouts
from .pe import PE, weight_lane

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """An ``R`` x ``C`` grid of :class:`~hw.pe.PE`, computing one int8 row-vector times
    weight-matrix product per cycle.

    For each activation row ``a`` (``R`` int8) presented on ``act`` with bank ``b``, the
    array produces on ``result`` the row ``y`` (``C`` int32) with
    ``y[c] = sum over r of a[r] * W_b[r, c]`` (exact, wrapping modulo 2**32), where
    ``W_b`` is the weight tile held in bank ``b``.

    Dataflow
    --------
    Activation ``a[r]`` enters array row ``r`` from the left after ``r`` cycles of input
    skew and moves one PE right per cycle; PE ``(r, c)`` sees it ``r + c`` cycles after
    the row was presented. Partial sums flow down each column, one PE per cycle; the
    bottom of column ``c`` is delayed ``C - 1 - c`` cycles so that the whole result row
    leaves at once (de-skew). Weight rows enter at the top of each column, column ``c``
    delayed ``c`` cycles, and travel down to the array row named by their tag.

    Latency and throughput
    ----------------------
    * An activation row presented in cycle ``t`` leaves as a result row in cycle
      ``t + L`` with ``result.valid`` set, ``L = R + C + 1 + config.mult_pipeline``
      (``config.latency``: one more with the PE multipliers' pipeline register).
    * One activation row per cycle, sustained, across any number of tiles: a stream of
      ``T`` tiles of ``M`` rows each takes ``T * M + L`` cycles from its first row in
      to its last result out, inclusive.
    * A weight row presented on ``weight`` in cycle ``t`` is seen by activation rows of
      its bank presented from cycle ``t + 1`` on and by none presented up to cycle ``t``.
      A whole tile takes ``R`` cycles to load (one row per cycle, any order), or ``R / 2``
      cycles as 4-bit codes (``pair``: two rows per cycle, see
      :func:`hw.layouts.weight_row`).

    Double buffering and tile switch
    --------------------------------
    Every PE holds two weights, one per bank. While activations use bank ``b``, the next
    tile is written into bank ``1 - b``; the first activation row of the next tile simply
    carries the other bank bit. No cycle is lost at a tile switch as long as the ``R``
    rows of the next tile are written after the last row that uses that bank's old tile
    (same cycle allowed) and before the first row that uses the new one: with tiles of
    ``M`` rows back to back, that window is ``M + 1`` cycles, and the weight port needs
    ``R`` of them, so ``M >= R`` runs without a bubble. The array never checks this: its
    controller schedules it.

    Back-pressure
    -------------
    None. ``act`` and ``weight`` are always ready and ``result`` cannot be stalled; a
    consumer that may stall needs a FIFO of ``L`` rows.

    Ports
    -----
    act : In(stream.Signature(layouts.act_beat(cfg), always_ready=True))
        ``payload.data``: ``R`` int8 activations (element ``r`` enters array row ``r``);
        ``payload.bank``: the weight bank this row multiplies; ``valid``: a row is present.
    weight : In(stream.Signature(layouts.weight_row(cfg), always_ready=True))
        ``payload.data``: ``C`` int8 weights for array row ``payload.row`` of bank
        ``payload.bank`` (with ``payload.pair``: ``C`` pairs of 4-bit codes for rows
        ``row`` and ``row + 1``); ``valid``: write them.
    result : Out(stream.Signature(layouts.psum_row(cfg), always_ready=True))
        ``payload``: ``C`` int32 sums; ``valid``: this cycle carries a result row.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "act": In(stream.Signature(layouts.act_beat(cfg), always_ready=True)),
            "weight": In(stream.Signature(layouts.weight_row(cfg), always_ready=True)),
            "result": Out(stream.Signature(layouts.psum_row(cfg), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self.cfg.rows, self.cfg.cols

        pes = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                pe = PE(r, R, pass_weights=r < R - 1, pass_acts=c < C - 1,
                        act_width=self.cfg.act_width, acc_width=self.cfg.acc_width,
                        mult_pipeline=self.cfg.mult_pipeline)
                m.submodules[f"pe_{r}_{c}"] = pes[r][c] = pe

        # Input skew: array row r sees its activation r cycles late.
        for r in range(R):
            a, bank = self.act.payload.data[r], self.act.payload.bank
            for stage in range(r):
                a_q = Signal(signed(self.cfg.act_width), name=f"skew_a_{r}_{stage}",
                             reset_less=True)
                bank_q = Signal(1, name=f"skew_bank_{r}_{stage}", reset_less=True)
                m.d.sync += [a_q.eq(a), bank_q.eq(bank)]
                a, bank = a_q, bank_q
            m.d.comb += [pes[r][0].a_in.eq(a), pes[r][0].a_bank_in.eq(bank)]
            for c in range(1, C):
                m.d.comb += [
                    pes[r][c].a_in.eq(pes[r][c - 1].a_out),
                    pes[r][c].a_bank_in.eq(pes[r][c - 1].a_bank_out),
                ]

        # Weight skew: column c sees a weight row c cycles late, then it walks down.
        for c in range(C):
            lane = Signal(weight_lane(R, self.cfg.act_width), name=f"w_lane_{c}")
            m.d.comb += [
                lane.valid.eq(self.weight.valid),
                lane.row.eq(self.weight.payload.row),
                lane.bank.eq(self.weight.payload.bank),
                lane.pair.eq(self.weight.payload.pair),
                lane.data.eq(self.weight.payload.data[c]),
            ]
            for stage in range(c):
                lane_q = Signal(weight_lane(R, self.cfg.act_width), name=f"skew_w_{c}_{stage}")
                m.d.sync += lane_q.eq(lane)
                lane = lane_q
            m.d.comb += pes[0][c].w_in.eq(lane)
            for r in range(1, R):
                m.d.comb += pes[r][c].w_in.eq(pes[r - 1][c].w_out)

        # Partial sums: zero into the top row, then down each column.
        for c in range(C):
            m.d.comb += pes[0][c].psum_in.eq(0)
            for r in range(1, R):
                m.d.comb += pes[r][c].psum_in.eq(pes[r - 1][c].psum_out)

        # Output de-skew: column c waits C - 1 - c cycles.
        for c in range(C):
            y = pes[R - 1][c].psum_out
            for stage in range(C - 1 - c):
                y_q = Signal(signed(self.cfg.acc_width), name=f"deskew_{c}_{stage}",
                             reset_less=True)
                m.d.sync += y_q.eq(y)
                y = y_q
            m.d.comb += self.result.payload[c].eq(y)

        # The valid bit travels beside the wavefront: config.latency cycles in all.
        valid = self.act.valid
        for stage in range(self.cfg.latency):
            valid_q = Signal(name=f"valid_{stage}")
            m.d.sync += valid_q.eq(valid)
            valid = valid_q
        m.d.comb += self.result.valid.eq(valid)
        return m
