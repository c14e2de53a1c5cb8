"""The requantizer: int32 result rows to int8 activation rows, per output channel."""

from amaranth import Module, Signal, Const, Cat, signed, unsigned
from amaranth.lib import data, wiring, stream
from amaranth.lib.wiring import In, Out

from . import layouts
from .isa import MULT_BITS, SHIFT_BITS, WIDE_MAX
from .config import Config
from .dsp import Multiplier

__all__ = ["Requantizer"]


class Requantizer(wiring.Component):
    """Requantizes one row of ``C`` int32 accumulators to ``C`` int8 (or, ``wide``,
    16-bit) values per cycle.

    For each column ``c``, with ``bias[c]``, ``mult[c]``, ``shift[c]``, ``relu`` and
    ``wide``, it computes exactly what :func:`sw.requant.requantize` specifies
    (``docs/requant.md``)::

        x = wrap_int32(acc + bias[c])
        p = x * mult[c]
        q = (p + 2**(shift[c]-1)) >> shift[c]   if shift[c] > 0 else p
        y = clamp(max(q, 0) if relu else q, -128, 127)    (wide: -WIDE_MAX, WIDE_MAX)

    Pipeline
    --------
    Seven register stages, each a row of ``C`` lanes with one valid bit:

    1. ``x``: the 32-bit bias add (wrapping), registered.
    2. The multipliers' input registers: for each of the four multipliers of stage 3
       its own copy of its half of ``x`` and of its half of ``mult`` (both loaded with
       the row), with no logic in front: on an ECP5 the DSP block's own input registers
       (:class:`hw.dsp.Multiplier`).
    3. Four partial products of 16-bit halves, ``x = xh * 2**16 + xl`` (``xh`` signed)
       times ``m = mh * 2**16 + ml``, each computed by one 18 x 18 DSP multiplier and
       registered at its output (``HALF = 16``; the block's output register).
    4. ``p = x * m`` (63 bits, exact): ``pp_hh`` and ``pp_ll`` concatenated (``pp_ll`` is
       below ``2**32``) plus the two middle products shifted by 16, registered.
    5. ``u = (p * 2) >> (shift & ~7)``, the coarse step of an arithmetic barrel shift
       (by 0, 8, ..., 56), registered.
    6. ``t = u >> (shift & 7)``, the fine step, registered. So ``t = (p * 2) >> shift``:
       ``t >> 1`` is ``floor(p / 2**shift)`` and bit 0 of ``t`` is bit ``shift - 1`` of
       ``p`` (the rounding bit; 0 when ``shift`` is 0), since
       ``(p + 2**(s-1)) >> s == (p >> s) + p[s-1]``.
    7. ``y``: ``(t >> 1) + t[0]`` with ReLU and int8 saturation, decided from a range
       check of ``t``'s upper bits and an 8-bit increment (no wide compare or add), or
       (``wide``) 16-bit saturation at ``+-WIDE_MAX`` from a range check, two 16-bit
       compares and a 16-bit increment, registered.

    Only the valid bits are reset; every data register is reset-less, so the reset net
    reaches a few flip-flops, not the whole datapath.

    After stage 7 sits a one-row skid register (see Back-pressure). Why this many
    stages: on an ECP5-85F (Yosys and nextpnr) an 18 x 18 multiplier alone takes about
    4 ns of the 8 ns of a 125 MHz cycle, so it gets registers on both sides and nothing
    else in its cycle; a 47-bit sum, a 6-level 64-bit barrel shifter or a 63-bit
    saturation each take most of a cycle by themselves. ``docs/requant.md`` gives the
    measurements.

    Latency and throughput
    ----------------------
    ``LATENCY = 7``: a row accepted on ``i`` (``i.valid`` and ``i.ready`` high) in cycle
    ``t`` is presented on ``o`` (``o.valid`` high) in cycle ``t + 7`` when ``o`` has not
    stalled. One row per cycle, sustained, while ``o.ready`` stays high.

    Back-pressure
    -------------
    Valid/ready as in :mod:`amaranth.lib.stream`. Each stage has a valid bit; the seven
    stages advance together, in every cycle in which the one-row skid register behind
    the last stage is empty. In such a cycle the last stage's row goes out on ``o`` if
    ``o.ready`` is high, or into the skid register if not. While the skid register holds
    a row, ``o`` shows it and all stages hold (bubbles from gaps on ``i.valid`` included);
    in the cycle ``o.ready`` takes it the skid register empties, and the stages move
    again from the next cycle. Rows reach ``o`` without a gap after a stall.

    ``i.ready`` is ``~skid_valid``, a register output: it depends on neither ``i.valid``
    nor ``o.ready``, and neither do the enables of the wide stage registers (the skid
    register exists so that ``o.ready``, arriving late from the consumer, drives only
    ``C * 8 + 1`` flip-flops). ``o.valid`` and ``o.payload`` come from registers through
    one 2-way mux. No row is lost, duplicated or reordered; a stalled ``o`` keeps its
    row. With ``o.ready`` low the block accepts up to ``CAPACITY = LATENCY + 1 = 8``
    rows (fewer if there are bubbles among them), then ``i.ready`` drops.

    Ports
    -----
    i : In(stream.Signature(layouts.psum_row(cfg)))
        ``payload``: ``C`` int32 accumulators, element ``c`` for column ``c``.
    o : Out(stream.Signature(data.ArrayLayout(signed(16), C)))
        ``payload``: the ``C`` results (int8 sign-extended, or 16-bit), element ``c`` for
        column ``c``.
    bias : In(data.ArrayLayout(signed(32), C))
        Per-column int32 bias.
    mult : In(data.ArrayLayout(unsigned(MULT_BITS), C))
        Per-column unsigned multiplier ``m`` (``MULT_BITS = 31``).
    shift : In(data.ArrayLayout(unsigned(SHIFT_BITS), C))
        Per-column right shift ``s``, 0 to 63 (``SHIFT_BITS = 6``).
    relu : In(1)
        Clamp negative results to 0.
    wide : In(1)
        Saturate to ``+-WIDE_MAX`` instead of int8.
    idle : Out(1)
        No row in any stage or in the skid register. While ``idle`` is high and
        ``i.valid`` low, the valid bits stay low and the data registers hold nothing a
        later row's result depends on: each is loaded in the cycles a row moves through
        it (the copies of ``mult`` and ``shift`` in the cycles before), so the block may
        go unclocked then (the store unit's clock gate, :mod:`hw.clock_gate`).

    ``bias``, ``mult``, ``shift``, ``relu`` and ``wide`` are not pipelined with the rows: each
    stage reads them when it computes, so the controller must hold them stable from the
    cycle the first row of a group is accepted on ``i`` until its last row has left
    ``o``. (Stage 1 reads ``bias`` from the port; ``mult`` enters the multipliers' input
    registers with the row, from the port one cycle after the row was accepted; ``shift``
    and ``relu`` are read through registers sampling the ports every cycle, which under
    this rule hold the same values: they are first used two or more cycles after a row
    is accepted.)

    Parameters
    ----------
    cfg : hw.config.Config
        Geometry; ``C = cfg.cols`` columns, ``cfg.acc_width``-bit accumulators.
    """

    #: Cycles from a row accepted on ``i`` to it appearing on ``o``, with no stall.
    LATENCY = 7
    #: Rows the block holds when ``o`` stalls: the seven stages and the skid register.
    CAPACITY = LATENCY + 1
    #: Width of the low halves of ``x`` and ``m`` in the partial products (stage 3):
    #: every partial product then fits one 18 x 18 signed DSP multiplier.
    HALF = 16

    def __init__(self, cfg):
        if not isinstance(cfg, Config):
            raise TypeError(f"cfg must be a hw.config.Config, not {cfg!r}")
        self.cfg = cfg
        C = cfg.cols
        super().__init__({
            "i": In(stream.Signature(layouts.psum_row(cfg))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(16), C))),
            "bias": In(data.ArrayLayout(signed(cfg.acc_width), C)),
            "mult": In(data.ArrayLayout(unsigned(MULT_BITS), C)),
            "shift": In(data.ArrayLayout(unsigned(SHIFT_BITS), C)),
            "relu": In(1),
            "wide": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C = self.cfg.cols
        acc_width = self.cfg.acc_width
        prod_width = acc_width + MULT_BITS          # signed: |x * m| < 2**(prod_width - 1)
        H = self.HALF

        # Stage valid bits, and the skid register behind the last stage. The stages
        # advance together whenever the skid register is empty: `advance` is a register
        # output, so the enables of the wide stage registers wait on no logic at all.
        n_stages = self.LATENCY
        valid = [Signal(name=f"valid_{k + 1}") for k in range(n_stages)]
        skid_valid = Signal()
        skid = Signal.like(self.o.payload, name="skid", reset_less=True)
        y = Signal.like(self.o.payload, name="y", reset_less=True)
        advance = ~skid_valid

        m.d.comb += [self.i.ready.eq(advance),
                     self.idle.eq(~skid_valid & ~Cat(*valid).any())]
        with m.If(advance):
            m.d.sync += [v.eq(u) for v, u in zip(valid, [self.i.valid] + valid[:-1])]

        # Output: the skid register's row if it holds one, else the last stage's. When
        # the last stage's row is not taken, the skid register takes it (the stages move
        # on this cycle and stop from the next).
        with m.If(skid_valid):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(skid)]
            with m.If(self.o.ready):
                m.d.sync += skid_valid.eq(0)
        with m.Else():
            m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.eq(y)]
            with m.If(valid[-1] & ~self.o.ready):
                m.d.sync += [skid_valid.eq(1), skid.eq(y)]

        # Local copies of the parameters that stages 5 to 7 use, one cycle behind the
        # ports: the same values under the ports' hold rule, but no long route from the
        # controller's registers into a barrel shifter. (mult: see stage 2.)
        shift_q = Signal.like(self.shift, name="shift_q")
        relu = Signal(name="relu_q")
        wide = Signal(name="wide_q")
        m.d.sync += [shift_q.eq(self.shift), relu.eq(self.relu), wide.eq(self.wide)]

        for c in range(C):
            bias, mult, shift = self.bias[c], self.mult[c], shift_q[c]

            # Stage 1: wrapping bias add.
            x = Signal(signed(acc_width), name=f"x_{c}", reset_less=True)
            with m.If(advance):
                m.d.sync += x.eq(self.i.payload[c] + bias)

            # Stages 2 and 3: four multipliers (hw.dsp.Multiplier: a DSP block with its
            # own input and output registers on an ECP5), each with its own copy of its
            # halves in its input registers, x = xh * 2**H + xl (xh signed),
            # m = mh * 2**H + ml (all unsigned): every partial product fits one 18 x 18
            # signed multiplier. Their registers move with the stages (`advance`).
            halves = {"l": (x[:H], mult[:H]), "h": (x[H:].as_signed(), mult[H:])}
            pp = {}
            for name in ("ll", "lh", "hl", "hh"):
                x_half, _ = halves[name[0]]
                _, m_half = halves[name[1]]
                mul = Multiplier(H + 1, H + 1, enable=True)
                m.submodules[f"mul_{name}_{c}"] = mul
                m.d.comb += [mul.a.eq(x_half), mul.b.eq(m_half), mul.en.eq(advance)]
                pp[name] = Signal(signed(len(x_half) + len(m_half) + 1),
                                  name=f"pp_{name}_{c}")
                m.d.comb += pp[name].eq(mul.p)
            pp_ll, pp_lh, pp_hl, pp_hh = pp["ll"], pp["lh"], pp["hl"], pp["hh"]

            # Stage 4: p = x * m = pp_hh * 2**2H + (pp_lh + pp_hl) * 2**H + pp_ll, exact.
            # 0 <= pp_ll < 2**2H, so the outer two terms are a concatenation, not an add.
            p = Signal(signed(prod_width), name=f"p_{c}", reset_less=True)
            with m.If(advance):
                m.d.sync += p.eq(Cat(pp_ll[:2 * H], pp_hh).as_signed()
                                 + ((pp_lh + pp_hl) << H))

            # Stages 5 and 6: t = (p << 1) >> shift, in two steps: by the multiple of 8 in
            # shift, then by the rest (an arithmetic shift splits exactly).
            # t[1:] = floor(p / 2**shift), t[0] is the rounding bit p[shift - 1] (0 for
            # shift 0).
            u = Signal(signed(prod_width + 1), name=f"u_{c}", reset_less=True)
            coarse = Cat(Const(0, 3), shift[3:])
            with m.If(advance):
                m.d.sync += u.eq(Cat(Const(0, 1), p).as_signed() >> coarse)
            t = Signal(signed(prod_width + 1), name=f"t_{c}", reset_less=True)
            with m.If(advance):
                m.d.sync += t.eq(u >> shift[:3])

            # Stage 7: q = f + r with f = t >> 1 = floor(p / 2**shift) and r = t[0], then
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
            # Wide: q > WIDE_MAX iff f does not fit 16 bits (positive), f > WIDE_MAX, or
            # f == WIDE_MAX and r; q < -WIDE_MAX iff f < -WIDE_MAX - 1, or f == -WIDE_MAX
            # - 1 and not r.
            f16 = t[1:17].as_signed()
            fits16 = Signal(name=f"fits16_{c}")
            m.d.comb += fits16.eq(t[16:].all() | ~t[16:].any())
            pos16 = (~negative & ~fits16) | (fits16 & ((f16 > WIDE_MAX)
                                                       | ((f16 == WIDE_MAX) & r)))
            neg16 = (negative & ~fits16) | (fits16 & ((f16 < -WIDE_MAX - 1)
                                                      | ((f16 == -WIDE_MAX - 1) & ~r)))
            with m.If(advance):
                with m.If(negative & relu):
                    m.d.sync += y[c].eq(0)
                with m.Elif(wide):
                    with m.If(pos16):
                        m.d.sync += y[c].eq(WIDE_MAX)
                    with m.Elif(neg16):
                        m.d.sync += y[c].eq(-WIDE_MAX)
                    with m.Else():
                        m.d.sync += y[c].eq(f16 + r)
                with m.Elif(pos_sat):
                    m.d.sync += y[c].eq(127)
                with m.Elif(neg_sat):
                    m.d.sync += y[c].eq(-128)
                with m.Else():
                    m.d.sync += y[c].eq(f_low.as_signed() + r)
        return m
