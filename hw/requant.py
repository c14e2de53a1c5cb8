"""The requantizer: int32 result rows to int8 activation rows, per output channel."""

from amaranth import Module, Signal, Const, Cat, signed, unsigned
from amaranth.lib import data, wiring, stream
from amaranth.lib.wiring import In, Out

from sw.requant import MULT_BITS, SHIFT_BITS
from . import layouts
from .config import Config

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """Requantizes one row of ``C`` int32 accumulators to ``C`` int8 values per cycle.

    For each column ``c``, with ``bias[c]``, ``mult[c]``, ``shift[c]`` and ``relu``, it
    computes exactly what :func:`sw.requant.requantize` specifies (``docs/requant.md``)::

        x = wrap_int32(acc + bias[c])
        p = x * mult[c]
        q = (p + 2**(shift[c]-1)) >> shift[c]   if shift[c] > 0 else p
        y = clamp(max(q, 0) if relu else q, -128, 127)

    Pipeline
    --------
    Five register stages, each a row of ``C`` lanes with one valid bit:

    1. ``x``: the 32-bit bias add (wrapping), registered. It is also the multipliers'
       input register.
    2. Four partial products of 16-bit halves, ``x = xh * 2**16 + xl`` (``xh`` signed)
       times ``m = mh * 2**16 + ml``, each registered straight out of one 18 x 18 DSP
       multiplier (``HALF = 16``).
    3. ``p = x * m`` (63 bits, exact): ``pp_hh`` and ``pp_ll`` concatenated (``pp_ll`` is
       below ``2**32``) plus the two middle products shifted by 16, registered.
    4. ``t = (p * 2) >> shift``, an arithmetic barrel shift, registered: ``t >> 1`` is
       ``floor(p / 2**shift)`` and bit 0 of ``t`` is bit ``shift - 1`` of ``p`` (the
       rounding bit; 0 when ``shift`` is 0), since
       ``(p + 2**(s-1)) >> s == (p >> s) + p[s-1]``.
    5. ``y``: ``(t >> 1) + t[0]`` with ReLU and int8 saturation, decided from a range
       check of ``t``'s upper bits and an 8-bit increment (no wide compare or add),
       registered; this register drives ``o.payload``.

    Why five: on an ECP5 (``-85F``, speed grade 6, Yosys + nextpnr) a 32 x 31 product
    computed and summed in one stage, or a 63-bit compare-and-clamp after the shift,
    each stays near 60 to 85 MHz; split as above the block meets 125 MHz.

    Latency and throughput
    ----------------------
    ``LATENCY = 5``: a row accepted on ``i`` (``i.valid`` and ``i.ready`` high) in cycle
    ``t`` is presented on ``o`` (``o.valid`` high) in cycle ``t + 5`` when ``o`` has not
    stalled. One row per cycle, sustained, while ``o.ready`` stays high.

    Back-pressure
    -------------
    Valid/ready as in :mod:`amaranth.lib.stream`. Each stage ``k`` may load when it is
    empty or the stage after it moves on: ``ready_k = ~valid_k | ready_{k+1}``, with
    ``ready_5 = o.ready`` and ``i.ready = ready_1``. So when ``o.ready`` is low the full
    stages hold their rows, empty stages (bubbles from gaps on ``i.valid``) keep filling,
    and ``i.ready`` drops only once every stage holds a row. ``i.ready`` is combinational
    in ``o.ready`` and the stage valid bits (never in ``i.valid``); ``o.valid`` and
    ``o.payload`` come straight from registers (never from ``o.ready``). No row is lost,
    duplicated or reordered; a stall holds ``o.payload`` stable.

    Ports
    -----
    i : In(stream.Signature(layouts.psum_row(cfg)))
        ``payload``: ``C`` int32 accumulators, element ``c`` for column ``c``.
    o : Out(stream.Signature(data.ArrayLayout(signed(8), C)))
        ``payload``: the ``C`` int8 results, element ``c`` for column ``c``.
    bias : In(data.ArrayLayout(signed(32), C))
        Per-column int32 bias.
    mult : In(data.ArrayLayout(unsigned(MULT_BITS), C))
        Per-column unsigned multiplier ``m`` (``MULT_BITS = 31``).
    shift : In(data.ArrayLayout(unsigned(SHIFT_BITS), C))
        Per-column right shift ``s``, 0 to 63 (``SHIFT_BITS = 6``).
    relu : In(1)
        Clamp negative results to 0.

    ``bias``, ``mult``, ``shift`` and ``relu`` are not pipelined with the rows: each
    stage reads them when it computes, so the controller must hold them stable from the
    cycle the first row of a group is accepted on ``i`` until its last row has left
    ``o``. (Stage 1 reads ``bias`` from the port; ``mult``, ``shift`` and ``relu`` are read
    through a register sampling the port every cycle, which under this rule holds the
    same values: they are first needed one cycle after a row is accepted.)

    Parameters
    ----------
    cfg : hw.config.Config
        Geometry; ``C = cfg.cols`` columns, ``cfg.acc_width``-bit accumulators.
    """

    #: Cycles from a row accepted on ``i`` to it appearing on ``o``, with no stall.
    LATENCY = 5
    #: Width of the low halves of ``x`` and ``m`` in the partial products (stage 2):
    #: every partial product then fits one 18 x 18 signed DSP multiplier.
    HALF = 16

    def __init__(self, cfg):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a hw.config.Config, not {cfg!r}")
        self.cfg = cfg
        C = cfg.cols
        super().__init__({
            "i": In(stream.Signature(layouts.psum_row(cfg))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), C))),
            "bias": In(data.ArrayLayout(signed(cfg.acc_width), C)),
            "mult": In(data.ArrayLayout(unsigned(MULT_BITS), C)),
            "shift": In(data.ArrayLayout(unsigned(SHIFT_BITS), C)),
            "relu": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cfg.cols
        acc_width = self.cfg.acc_width
        prod_width = acc_width + MULT_BITS          # signed: |x * m| < 2**(prod_width - 1)
        H = self.HALF

        # Stage valid bits and each stage's load enable. ready_k = ~valid_k | ready_{k+1}
        # unrolled: stage k may load unless it and every stage after it are full and o
        # is stalled. Written flat so that no enable waits on another's wide fan-out.
        n_stages = self.LATENCY
        valid = [Signal(name=f"valid_{k + 1}") for k in range(n_stages)]
        ready = [Signal(name=f"ready_{k + 1}") for k in range(n_stages)]
        for k in range(n_stages):
            m.d.comb += ready[k].eq(self.o.ready | ~Cat(*valid[k:]).all())
        m.d.comb += [
            self.i.ready.eq(ready[0]),
            self.o.valid.eq(valid[-1]),
        ]
        upstream_valid = [self.i.valid] + valid[:-1]
        for k in range(n_stages):
            with m.If(ready[k]):
                m.d.sync += valid[k].eq(upstream_valid[k])

        # Local copies of the parameters that stages 2 to 5 use, one cycle behind the
        # ports: the same values under the ports' hold rule, but no long route from the
        # controller's registers into a multiplier or a barrel shifter.
        mult_q = Signal.like(self.mult, name="mult_q")
        shift_q = Signal.like(self.shift, name="shift_q")
        relu = Signal(name="relu_q")
        m.d.sync += [mult_q.eq(self.mult), shift_q.eq(self.shift), relu.eq(self.relu)]

        for c in range(C):
            bias, mult, shift = self.bias[c], mult_q[c], shift_q[c]

            # Stage 1: wrapping bias add.
            x = Signal(signed(acc_width), name=f"x_{c}")
            with m.If(ready[0]):
                m.d.sync += x.eq(self.i.payload[c] + bias)

            # Stage 2: four partial products of halves, each small enough for one 18 x 18
            # DSP multiplier and registered at its output:
            #   x = xh * 2**H + xl (xh signed), m = mh * 2**H + ml (all unsigned).
            xl, xh = x[:H], x[H:].as_signed()
            ml, mh = mult[:H], mult[H:]
            pp_ll = Signal(unsigned(2 * H), name=f"pp_ll_{c}")
            pp_lh = Signal(unsigned(H + len(mh)), name=f"pp_lh_{c}")
            pp_hl = Signal(signed(len(xh) + H), name=f"pp_hl_{c}")
            pp_hh = Signal(signed(len(xh) + len(mh)), name=f"pp_hh_{c}")
            with m.If(ready[1]):
                m.d.sync += [
                    pp_ll.eq(xl * ml),
                    pp_lh.eq(xl * mh),
                    pp_hl.eq(xh * ml),
                    pp_hh.eq(xh * mh),
                ]

            # Stage 3: p = x * m = pp_hh * 2**2H + (pp_lh + pp_hl) * 2**H + pp_ll, exact.
            # 0 <= pp_ll < 2**2H, so the outer two terms are a concatenation, not an add.
            p = Signal(signed(prod_width), name=f"p_{c}")
            with m.If(ready[2]):
                m.d.sync += p.eq(Cat(pp_ll, pp_hh).as_signed() + ((pp_lh + pp_hl) << H))

            # Stage 4: t = (p << 1) >> shift. t[1:] = floor(p / 2**shift), t[0] is the
            # rounding bit p[shift - 1] (0 for shift 0).
            t = Signal(signed(prod_width + 1), name=f"t_{c}")
            with m.If(ready[3]):
                m.d.sync += t.eq(Cat(Const(0, 1), p).as_signed() >> shift)

            # Stage 5: q = f + r with f = t >> 1 = floor(p / 2**shift) and r = t[0], then
            # ReLU and saturation, decided from bits rather than wide compares:
            # * f fits in int8 iff bits 7 and up of f (bits 8 and up of t) are all equal;
            # * q > 127 iff f > 127, or f == 127 and r;
            # * q < -128 iff f < -128 (f == -129 with r gives q == -128: same result);
            # * q < 0 iff f < 0 (f == -1 with r gives q == 0: ReLU gives 0 either way);
            # * otherwise q = f[:8] + r without overflow.
            f_low = t[1:9]
            r = t[0]
            negative = t[-1]
            fits = Signal(name=f"fits_{c}")
            m.d.comb += fits.eq(t[8:].all() | ~t[8:].any())
            pos_sat = (~negative & ~fits) | (fits & (f_low == 0x7F) & r)
            neg_sat = negative & ~fits
            with m.If(ready[4]):
                with m.If(pos_sat):
                    m.d.sync += self.o.payload[c].eq(127)
                with m.Elif(negative & relu):
                    m.d.sync += self.o.payload[c].eq(0)
                with m.Elif(neg_sat):
                    m.d.sync += self.o.payload[c].eq(-128)
                with m.Else():
                    m.d.sync += self.o.payload[c].eq(f_low + r)
        return m
