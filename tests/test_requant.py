# amaranth: UnusedElaboratable=no
"""Requantizer: golden model (sw.requant) and RTL (hw.requant), Amaranth sim and cocotb.

(The linter comment above stops Amaranth warning, at garbage collection, about
components this file builds only to inspect their ports or to see their constructor
refuse an argument.)
"""

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from serrano.hw import isa, layouts
from serrano.hw.config import get_preset
from serrano.hw.requant import Requantizer
from serrano.hw.store_unit import StoreUnit
from serrano.sim import runner
from serrano.sim.verilog import signal_ports
from serrano.sw.isa_model import Machine, Params
from serrano.sw.requant import (MULT_BITS, SHIFT_BITS, MULT_MAX, SHIFT_MAX, WIDE_MAX,
                                requantize, row_rescale, split_wide, quantize_multiplier)

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ROWSCALE_CODES = isa.ROWSCALE_CODES
TOP = "serrano_requant"


def seeded(name):
    """A generator seeded from a fixed name: the same stimulus on every run."""
    return np.random.default_rng(zlib.crc32(name.encode()))


# ---------------------------------------------------------------------------------------
# A slow reference written from the definition with Python ints, differently from
# sw.requant: the wrap by modulo, the rounding as one floor division of (2p + 2**s) by
# 2**(s+1) (no special case for s = 0), the clamps as comparisons.

def ref_one(acc, bias, mult, shift, relu):
    x = (acc + bias - INT32_MIN) % (1 << 32) + INT32_MIN
    p = x * mult
    q = (2 * p + 2**shift) // 2**(shift + 1)
    if relu and q < 0:
        q = 0
    if q > 127:
        return 127
    if q < -128:
        return -128
    return q


def ref_rows(acc, bias, mult, shift, relu):
    return np.array([[ref_one(int(a), int(b), int(m), int(s), relu)
                      for a, b, m, s in zip(row, bias, mult, shift)]
                     for row in np.asarray(acc).reshape(-1, len(bias))],
                    dtype=np.int64).reshape(np.shape(acc))


# ---------------------------------------------------------------------------------------
# Stimulus: groups of rows sharing one set of per-channel parameters.

# The last six, with m = 1 and s = 1 (the "edge" kind), land on the halves around the
# int8 limits: 127.5 must give 127 (not 128 wrapped to -128), -128.5 gives -128.
ACC_CORNERS = [INT32_MIN, INT32_MAX, 0, -1, 1, INT32_MIN + 1, INT32_MAX - 1,
               255, 253, 257, -255, -257, -259]
# Channel kinds, cycled over the columns and rotated from group to group so that every
# column meets every kind on the tiny preset.
KINDS = ["scaled", "zero_mult", "shift63", "shift0", "max_mult", "tie", "wrap_bias",
         "scaled", "identity", "edge"]


def channel_params(rng, kind):
    """(bias, mult, shift) for one channel of the given kind."""
    bias = int(rng.integers(-1000, 1001))
    if kind == "scaled":          # a realistic scale: outputs spread over int8 and beyond
        mult = int(rng.integers(1 << 30, 1 << 31))
        shift = int(rng.integers(36, 56))
        bias = int(rng.integers(INT32_MIN, INT32_MAX, endpoint=True))
    elif kind == "zero_mult":
        mult, shift = 0, int(rng.integers(0, SHIFT_MAX + 1))
    elif kind == "shift63":
        mult, shift = int(rng.choice([MULT_MAX, 1 << 30, 1])), SHIFT_MAX
    elif kind == "shift0":
        mult, shift = int(rng.integers(0, 4)), 0
    elif kind == "max_mult":
        mult, shift = MULT_MAX, int(rng.integers(31, 64))
    elif kind == "tie":           # exact halves: tells half-up from half-away-from-zero
        shift = int(rng.integers(1, 4))
        mult, bias = 1, 0
    elif kind == "wrap_bias":
        mult, shift = int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(50, 62))
        bias = int(rng.choice([INT32_MIN, INT32_MAX, INT32_MIN + 12345, INT32_MAX - 12345]))
    elif kind == "identity":
        mult, shift = 1, 0
    elif kind == "edge":          # halves next to the int8 limits
        mult, shift, bias = 1, 1, 0
    else:
        raise AssertionError(kind)
    return bias, mult, shift


def random_acc(rng, n, C):
    """``n`` rows of int32: corners first, then a mix of full-range and small values."""
    rows = [[v] * C for v in ACC_CORNERS]
    while len(rows) < n:
        style = rng.integers(0, 3)
        if style == 0:
            row = rng.integers(INT32_MIN, INT32_MAX, size=C, endpoint=True)
        elif style == 1:
            row = rng.integers(-300, 301, size=C)
        else:
            row = rng.integers(-(1 << 20), (1 << 20) + 1, size=C)
        rows.append([int(v) for v in row])
    return np.array(rows[:n], dtype=np.int64)


def make_groups(rng, C, n_groups, rows_per_group):
    groups = []
    for g in range(n_groups):
        params = [channel_params(rng, KINDS[(c + g) % len(KINDS)]) for c in range(C)]
        bias, mult, shift = (np.array(v, dtype=np.int64) for v in zip(*params))
        groups.append({
            "bias": bias, "mult": mult, "shift": shift, "relu": g % 2 == 1,
            "wide": g % 4 >= 2, "acc": random_acc(rng, rows_per_group, C),
        })
    return groups


def golden(group):
    return requantize(group["acc"], group["bias"], group["mult"], group["shift"],
                      relu=group["relu"], wide=group.get("wide", False)).astype(np.int64)


def rounded_unclamped(group):
    """q before ReLU and saturation, from the reference's formula."""
    x = ((group["acc"] + group["bias"] - INT32_MIN) % (1 << 32) + INT32_MIN).tolist()
    return np.array([[(2 * v * int(m) + 2**int(s)) // 2**(int(s) + 1)
                      for v, m, s in zip(row, group["mult"], group["shift"])]
                     for row in x], dtype=object)


def assert_corners_covered(groups):
    """The stimulus does reach the corners (so the tests below cannot pass vacuously)."""
    expected = np.concatenate([golden(g).ravel() for g in groups if not g["wide"]])
    assert (expected == 127).any() and (expected == -128).any()
    wide = np.concatenate([golden(g).ravel() for g in groups if g["wide"]])
    assert (wide == WIDE_MAX).any() and (wide == -WIDE_MAX).any()
    assert ((np.abs(wide) > 127) & (np.abs(wide) < WIDE_MAX)).any()
    q = set(np.concatenate([rounded_unclamped(g).ravel() for g in groups]).tolist())
    assert {127, 128, -128, -129} <= q, "no row rounds onto or just past an int8 limit"
    assert any(g["relu"] and (ref_rows(g["acc"], g["bias"], g["mult"], g["shift"], False)
                              < 0).any() for g in groups)
    assert any(((g["acc"] + g["bias"] > INT32_MAX) | (g["acc"] + g["bias"] < INT32_MIN)).any()
               for g in groups)
    params = {k: np.concatenate([g[k] for g in groups]) for k in ("mult", "shift")}
    assert {0, MULT_MAX} <= set(params["mult"].tolist())
    assert {0, SHIFT_MAX} <= set(params["shift"].tolist())


# ---------------------------------------------------------------------------------------
# Golden model self-checks.

def test_constants():
    assert (MULT_BITS, SHIFT_BITS) == (31, 6)
    assert MULT_MAX == 2**31 - 1 and SHIFT_MAX == 63


@pytest.mark.parametrize("acc,bias,mult,shift,relu,expected", [
    (10, 0, 1, 0, False, 10),                       # identity
    (3, 0, 1, 1, False, 2),                         # 1.5 rounds up
    (-3, 0, 1, 1, False, -1),                       # -1.5 rounds up (toward +inf)
    (-5, 0, 1, 1, False, -2),                       # -2.5 -> -2
    (5, 0, 1, 1, False, 3),                         # 2.5 -> 3
    (-7, 0, 3, 2, False, -5),                       # -21/4 = -5.25 -> -5
    (1000, 0, 1, 0, False, 127),                    # saturate up
    (-1000, 0, 1, 0, False, -128),                  # saturate down
    (-50, 0, 1, 0, True, 0),                        # relu
    (50, 0, 1, 0, True, 50),
    (1000, 0, 1, 0, True, 127),
    (INT32_MAX, 1, 1, 0, False, -128),              # acc + bias wraps to -2**31
    (INT32_MIN, -1, 1, 0, False, 127),              # ... and to 2**31 - 1
    (INT32_MAX, 0, 0, 5, False, 0),                 # zero multiplier
    (INT32_MAX, 0, MULT_MAX, SHIFT_MAX, False, 0),  # largest product, largest shift
    (INT32_MIN, 0, MULT_MAX, SHIFT_MAX, False, 0),
    (INT32_MIN, 0, MULT_MAX, 55, False, -128),      # -2**31 * (2**31-1) / 2**55 = -128.0
    (INT32_MIN, 0, MULT_MAX, 56, False, -64),
    (INT32_MAX, 0, MULT_MAX, 55, False, 127),
    (100, 28, 1 << 30, 31, False, 64),              # 128 * 0.5
    (101, 0, 1 << 30, 31, False, 51),               # 50.5 -> 51
    (-101, 0, 1 << 30, 31, False, -50),             # -50.5 -> -50
])
def test_golden_known_values(acc, bias, mult, shift, relu, expected):
    got = requantize(np.array([[acc]]), [bias], [mult], [shift], relu=relu)
    assert got.dtype == np.int8
    assert int(got[0, 0]) == expected == ref_one(acc, bias, mult, shift, relu)


@pytest.mark.parametrize("relu", [False, True])
def test_golden_matches_reference_random(relu):
    rng = seeded(f"golden-random-{relu}")
    C = 9
    for group in make_groups(rng, C, n_groups=len(KINDS), rows_per_group=40):
        got = requantize(group["acc"], group["bias"], group["mult"], group["shift"],
                         relu=relu)
        want = ref_rows(group["acc"], group["bias"], group["mult"], group["shift"], relu)
        np.testing.assert_array_equal(got.astype(np.int64), want)


def test_golden_wide_saturates_at_the_halves_bound():
    """``wide``: the reference's value clamped to ``+-WIDE_MAX``, and its two int8 halves
    give it back exactly (corners of the bound and of the halves' carries)."""
    rng = seeded("golden-wide")
    for group in make_groups(rng, 9, n_groups=len(KINDS), rows_per_group=40):
        for relu in (False, True):
            got = requantize(group["acc"], group["bias"], group["mult"], group["shift"],
                             relu=relu, wide=True).astype(np.int64)
            ref = np.array(rounded_unclamped(group), dtype=object)
            if relu:
                ref = np.maximum(ref, 0)
            want = np.clip(ref.astype(float), -WIDE_MAX, WIDE_MAX).astype(np.int64)
            np.testing.assert_array_equal(got, want)
    q = np.array([-WIDE_MAX, -32640 + 1, -129, -128, -127, -1, 0, 1, 127, 128, 255, 256,
                  WIDE_MAX])
    hi, lo = split_wide(q)
    np.testing.assert_array_equal(256 * hi.astype(np.int64) + lo, q)
    with pytest.raises(ValueError, match="wide values"):
        split_wide([WIDE_MAX + 1])


def test_golden_matches_reference_exhaustive_corners():
    """Every combination of corner values of acc, bias, mult and shift."""
    accs = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, 255, -255, INT32_MAX - 1, INT32_MAX]
    biases = [INT32_MIN, -1, 0, 1, INT32_MAX]
    mults = [0, 1, 3, (1 << 30) + 1, MULT_MAX]
    shifts = [0, 1, 2, 30, 31, 32, 54, 55, 56, 62, SHIFT_MAX]
    params = [(b, m, s) for b in biases for m in mults for s in shifts]
    bias, mult, shift = (np.array(v, dtype=np.int64) for v in zip(*params))
    acc = np.array([[a] * len(params) for a in accs], dtype=np.int64)
    for relu in (False, True):
        got = requantize(acc, bias, mult, shift, relu=relu).astype(np.int64)
        np.testing.assert_array_equal(got, ref_rows(acc, bias, mult, shift, relu))


def test_golden_real_meaning():
    """y is round((acc + b) * m / 2**s), halves up, when nothing wraps or saturates."""
    rng = seeded("golden-meaning")
    acc = rng.integers(-10**6, 10**6, size=(200, 4))
    bias = np.array([0, 17, -99, 12345])
    mult = rng.integers(1 << 30, 1 << 31, size=4)
    shift = np.array([43, 44, 45, 46])
    got = requantize(acc, bias, mult, shift)
    for r in range(acc.shape[0]):
        for c in range(4):
            exact = Fraction(int(acc[r, c] + bias[c]) * int(mult[c]), 2**int(shift[c]))
            want = max(-128, min(127, math.floor(exact + Fraction(1, 2))))
            assert got[r, c] == want


def test_golden_argument_checks():
    ok = dict(bias=[0], mult=[1], shift=[0])
    with pytest.raises(ValueError, match=r"acc holds values outside"):
        requantize([[INT32_MAX + 1]], **ok)
    with pytest.raises(ValueError, match=r"mult holds values outside \[0, 2147483647\]"):
        requantize([[0]], [0], [MULT_MAX + 1], [0])
    with pytest.raises(ValueError, match=r"mult holds values outside"):
        requantize([[0]], [0], [-1], [0])
    with pytest.raises(ValueError, match=r"shift holds values outside \[0, 63\]"):
        requantize([[0]], [0], [1], [64])
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\), not \(1,\)"):
        requantize([[0, 0]], [0], [1, 1], [0, 0])
    with pytest.raises(TypeError, match=r"acc must hold integers, not float64"):
        requantize([[0.5]], **ok)


# ---------------------------------------------------------------------------------------
# quantize_multiplier.

REL_BOUND = 1 / (2**31 - 0.5)


def check_quantized(scale, m, s):
    assert isinstance(m, int) and isinstance(s, int)
    assert 0 <= m <= MULT_MAX and 0 <= s <= SHIFT_MAX
    exact = Fraction(scale)
    approx = Fraction(m, 2**s)
    assert abs(approx - exact) <= Fraction(1, 2**(s + 1))
    if s < SHIFT_MAX:
        assert m >= 2**30
        assert abs(approx - exact) / exact <= REL_BOUND
        # s is the largest that fits: one more bit would overflow the multiplier.
        assert math.floor(exact * 2**(s + 1) + Fraction(1, 2)) > MULT_MAX


def test_quantize_multiplier_random():
    rng = seeded("quantize-multiplier")
    exps = rng.uniform(-40, 30.9, size=2000)
    for scale in np.exp2(exps):
        m, s = quantize_multiplier(float(scale))
        check_quantized(float(scale), m, s)


@pytest.mark.parametrize("scale,expected", [
    (1.0, (1 << 30, 30)),
    (0.5, (1 << 30, 31)),
    (0.75, (3 << 29, 31)),
    (2.0**-33, (1 << 30, 63)),
    (2.0**-40, (1 << 23, 63)),                # shift capped at 63: fewer bits kept
    (2.0**-65, (0, 63)),                      # below 2**-64: the multiplier rounds to 0
    (2.0**-64, (1, 63)),                      # exactly one half: rounds up
    (2.0**31 - 1, (MULT_MAX, 0)),
    (2.0**30, (1 << 30, 0)),
    (1.5 * 2**30, (3 << 29, 0)),
    (2.0**31 - 0.75, (MULT_MAX, 0)),          # 2**31 - 0.75 rounds to 2**31 - 1
    (1 / 3, (0x55555555, 32)),
])
def test_quantize_multiplier_values(scale, expected):
    assert quantize_multiplier(scale) == expected
    check_quantized(scale, *expected)


def test_quantize_multiplier_rounding_carries_into_next_bit():
    """A scale just below a power of two rounds up to 2**31: the shift must drop by one."""
    scale = 1.0 - 2.0**-40                    # scale * 2**31 rounds to 2**31
    m, s = quantize_multiplier(scale)
    assert (m, s) == (1 << 30, 30)
    check_quantized(scale, m, s)


def test_quantize_multiplier_accepts_numpy_and_int():
    assert quantize_multiplier(np.float32(0.5)) == (1 << 30, 31)
    assert quantize_multiplier(3) == (3 << 29, 29)


@pytest.mark.parametrize("scale,exc,message", [
    (0.0, ValueError, r"real_scale must be positive, not 0\.0"),
    (-1.5, ValueError, r"real_scale must be positive, not -1\.5"),
    (float("nan"), ValueError, r"real_scale must be finite, not nan"),
    (float("inf"), ValueError, r"real_scale must be finite, not inf"),
    (float("-inf"), ValueError, r"real_scale must be finite, not -inf"),
    (2.0**31 - 0.5, ValueError, r"is too large"),
    (2.0**31, ValueError, r"is too large"),
    (1e300, ValueError, r"is too large"),
    ("0.5", TypeError, r"real_scale must be a real number, not '0\.5'"),
    (True, TypeError, r"real_scale must be a real number, not True"),
])
def test_quantize_multiplier_errors(scale, exc, message):
    with pytest.raises(exc, match=message):
        quantize_multiplier(scale)


def test_quantize_multiplier_end_to_end():
    """A quantized scale gives round(acc * scale) except within the error bound of a tie."""
    rng = seeded("quantize-end-to-end")
    for _ in range(50):
        scale = float(np.exp2(rng.uniform(-20, -2)))
        m, s = quantize_multiplier(scale)
        acc = rng.integers(-(1 << 24), 1 << 24, size=(64, 1))
        got = requantize(acc, [0], [m], [s]).astype(np.int64)[:, 0]
        for a, y in zip(acc[:, 0], got):
            real = int(a) * scale
            if -128 <= real <= 127:
                assert abs(y - real) <= 0.5 + abs(real) * REL_BOUND + 1e-12


# ---------------------------------------------------------------------------------------
# RTL on Amaranth's simulator.

def test_requantizer_rejects_bad_config():
    with pytest.raises(TypeError, match=r"cfg must be a hw.config.Config, not 'tiny'"):
        Requantizer("tiny")


def test_requantizer_ports():
    cfg = get_preset("tiny")
    dut = Requantizer(cfg)
    assert Requantizer.LATENCY == 7 and Requantizer.CAPACITY == 8
    assert dut.i.payload.shape() == layouts.psum_row(cfg)
    assert len(dut.o.payload) == cfg.cols
    assert dut.mult.shape().elem_shape.width == MULT_BITS
    assert dut.shift.shape().elem_shape.width == SHIFT_BITS
    assert len(dut.relu) == 1


def run_rtl(cfg, groups, offer, o_ready, *, max_cycles, check_comb=True):
    """Stream ``groups`` through a fresh :class:`Requantizer` of ``cfg``.

    ``offer(cycle)`` says whether a new row may be presented in that cycle (a gap
    otherwise; an offered row stays until accepted), ``o_ready(cycle)`` drives
    ``o.ready``. Each group's parameters are set once the previous group has drained.
    Returns per group ``(rows out, accept cycles, deliver cycles)``, plus every cycle's
    ``i.ready``. Checks the stream rules each cycle; bounded by ``max_cycles``.
    """
    dut = Requantizer(cfg)
    results, i_ready_log = [], []

    async def testbench(ctx):
        cycle = 0
        in_flight = 0
        stalled = None

        async def step(offering, row):
            nonlocal cycle, in_flight, stalled
            assert cycle < max_cycles, f"watchdog: still running after {max_cycles} cycles"
            ready = int(o_ready(cycle))
            if offering:
                ctx.set(dut.i.payload, row)
            if check_comb:
                # i.ready must look at neither i.valid nor o.ready (only at registered
                # state), and o.valid not at o.ready: try the other values first.
                ctx.set(dut.i.valid, int(not offering))
                ctx.set(dut.o.ready, int(not ready))
                i_ready_other, o_valid_other = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
            ctx.set(dut.i.valid, int(offering))
            ctx.set(dut.o.ready, ready)
            i_ready, o_valid = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
            if check_comb:
                assert i_ready == i_ready_other, \
                    f"cycle {cycle}: i.ready follows i.valid or o.ready"
                assert o_valid == o_valid_other, f"cycle {cycle}: o.valid follows o.ready"
            word = list(ctx.get(dut.o.payload)) if o_valid else None
            if stalled is not None:
                assert o_valid and word == stalled, f"cycle {cycle}: o changed while stalled"
            stalled = word if o_valid and not ready else None
            assert not o_valid or in_flight > 0, f"cycle {cycle}: o.valid, nothing in flight"
            accepted = bool(offering and i_ready)
            delivered = word if o_valid and ready else None
            in_flight += int(accepted) - int(delivered is not None)
            i_ready_log.append(i_ready)
            await ctx.tick()
            cycle += 1
            return accepted, delivered

        for group in groups:
            C = cfg.cols
            ctx.set(dut.bias, [int(v) for v in group["bias"]])
            ctx.set(dut.mult, [int(v) for v in group["mult"]])
            ctx.set(dut.shift, [int(v) for v in group["shift"]])
            ctx.set(dut.relu, int(group["relu"]))
            ctx.set(dut.wide, int(group["wide"]))
            rows = [[int(v) for v in row] for row in group["acc"]]
            assert all(len(row) == C for row in rows)
            sent, offering = 0, False
            out, accept_at, deliver_at = [], [], []
            while len(out) < len(rows):
                if not offering and sent < len(rows) and offer(cycle):
                    offering = True
                t = cycle
                accepted, delivered = await step(offering, rows[sent] if offering else None)
                if accepted:
                    accept_at.append(t)
                    sent, offering = sent + 1, False
                if delivered is not None:
                    out.append(delivered)
                    deliver_at.append(t)
            results.append((np.array(out, dtype=np.int64), accept_at, deliver_at))
        for _ in range(2 * Requantizer.LATENCY):
            _, delivered = await step(False, None)
            assert delivered is None, "a row left after the last one was delivered"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert len(results) == len(groups)
    return results, i_ready_log


def bernoulli(name, p):
    rng = seeded(name)
    cache = {}

    def pattern(cycle):
        if cycle not in cache:
            cache[cycle] = bool(rng.random() < p)
        return cache[cycle]
    return pattern


def always(cycle):
    return True


@pytest.mark.parametrize("preset,n_groups,rows_per_group,p_offer,p_ready", [
    ("tiny", 2 * len(KINDS), 24, 0.7, 0.6),
    ("tiny", 4, 30, 0.95, 0.3),                   # heavy back-pressure, pipeline fills
    ("tiny", 4, 30, 0.3, 0.95),                   # sparse input, many bubbles
    ("default", 4, 24, 0.8, 0.7),
])
def test_rtl_random_backpressure(preset, n_groups, rows_per_group, p_offer, p_ready):
    cfg = get_preset(preset)
    name = f"rtl-{preset}-{n_groups}-{p_offer}-{p_ready}"
    groups = make_groups(seeded(name), cfg.cols, n_groups, rows_per_group)
    if n_groups >= len(KINDS):
        assert_corners_covered(groups)
    total = n_groups * rows_per_group
    max_cycles = int(total / min(p_offer, p_ready) * 3) + 100 * n_groups
    results, _ = run_rtl(cfg, groups, bernoulli(name + "-offer", p_offer),
                         bernoulli(name + "-ready", p_ready), max_cycles=max_cycles)
    for group, (out, accept_at, deliver_at) in zip(groups, results):
        np.testing.assert_array_equal(out, golden(group))
        assert len(accept_at) == len(deliver_at) == len(group["acc"])
        assert all(d - a >= Requantizer.LATENCY for a, d in zip(accept_at, deliver_at))


def test_rtl_latency_without_backpressure():
    """With o.ready high every row leaves exactly LATENCY cycles after it was accepted,
    gaps in the input or not, and i.ready never drops."""
    cfg = get_preset("tiny")
    groups = make_groups(seeded("latency"), cfg.cols, 3, 20)
    results, i_ready_log = run_rtl(cfg, groups, bernoulli("latency-offer", 0.5), always,
                                   max_cycles=1000)
    assert all(i_ready_log)
    for group, (out, accept_at, deliver_at) in zip(groups, results):
        np.testing.assert_array_equal(out, golden(group))
        assert [d - a for a, d in zip(accept_at, deliver_at)] == \
            [Requantizer.LATENCY] * len(accept_at)


def test_rtl_full_throughput():
    """A row every cycle in, a row every cycle out."""
    cfg = get_preset("tiny")
    groups = make_groups(seeded("throughput"), cfg.cols, 1, 50)
    [(out, accept_at, deliver_at)], _ = run_rtl(cfg, groups, always, always, max_cycles=200)
    np.testing.assert_array_equal(out, golden(groups[0]))
    assert accept_at == list(range(50))
    assert deliver_at == list(range(Requantizer.LATENCY, 50 + Requantizer.LATENCY))


def test_rtl_stall_fills_pipeline_then_releases():
    """With o.ready low the block takes exactly CAPACITY rows, then holds them; when
    o.ready rises they leave one per cycle, in order, and input resumes a cycle later
    (i.ready comes from registered state only)."""
    cfg = get_preset("tiny")
    groups = make_groups(seeded("stall"), cfg.cols, 1, 16)
    release = 20

    def o_ready(cycle):
        return cycle >= release

    [(out, accept_at, deliver_at)], i_ready_log = run_rtl(cfg, groups, always, o_ready,
                                                          max_cycles=200)
    np.testing.assert_array_equal(out, golden(groups[0]))
    N = Requantizer.CAPACITY
    assert N == Requantizer.LATENCY + 1
    assert accept_at[:N] == list(range(N))
    assert i_ready_log[N:release + 1] == [0] * (release + 1 - N)
    assert accept_at[N:] == list(range(release + 1, release + 1 + len(out) - N))
    assert deliver_at == list(range(release, release + len(out)))


def test_rtl_stall_with_bubbles_in_flight():
    """Rows with gaps between them, then o stalls: rows and gaps alike are held (the
    stages advance together), nothing is lost, and the rows leave in order after."""
    cfg = get_preset("tiny")
    groups = make_groups(seeded("bubbles"), cfg.cols, 1, 10)
    L = Requantizer.LATENCY
    release = 40

    def offer(cycle):
        return cycle % 3 == 0

    [(out, accept_at, deliver_at)], i_ready_log = run_rtl(
        cfg, groups, offer, lambda cycle: cycle >= release, max_cycles=200)
    np.testing.assert_array_equal(out, golden(groups[0]))
    # The first row reaches the end in cycle L and goes to the skid register; the
    # stages stop from cycle L + 1 until the cycle after o takes it.
    before = list(range(0, L + 1, 3))
    assert release > L + 1 and len(before) >= 3
    assert accept_at[:len(before)] == before
    assert i_ready_log[L + 1:release + 1] == [0] * (release - L)
    assert all(a > release for a in accept_at[len(before):])
    assert deliver_at[:len(before)] == [release + a for a in before]


# ---------------------------------------------------------------------------------------
# Generated Verilog under cocotb (Verilator and Icarus).

def requant_verilog(cfg):
    dut = Requantizer(cfg)
    return verilog.convert(dut, name=TOP, emit_src=False, ports=signal_ports(dut))


def cocotb_case(cfg, groups, valid, ready, max_cycles):
    C = cfg.cols
    return {
        "groups": [{
            "bias": layouts.pack_row(g["bias"], cfg.acc_width),
            "mult": layouts.pack_row(g["mult"], MULT_BITS),
            "shift": layouts.pack_row(g["shift"], SHIFT_BITS),
            "relu": int(g["relu"]),
            "wide": int(g["wide"]),
            "rows": [layouts.pack_row(row, cfg.acc_width) for row in g["acc"]],
        } for g in groups],
        "valid": [int(v) for v in valid],
        "ready": [int(v) for v in ready],
        "max_cycles": max_cycles,
        "cols": C,
    }


@pytest.mark.parametrize("pattern", ["backpressure", "no_backpressure"])
def test_cocotb_requant(simulator, pattern):
    cfg = get_preset("tiny")
    name = f"cocotb-{pattern}"
    rng = seeded(name)
    groups = make_groups(rng, cfg.cols, len(KINDS), 20)
    assert_corners_covered(groups)
    valid = rng.random(97) < 0.75
    valid[0] = True
    if pattern == "backpressure":
        ready = rng.random(89) < 0.6
        ready[0] = True
    else:
        ready = np.ones(1, dtype=bool)
    total = sum(len(g["acc"]) for g in groups)
    max_cycles = 8 * total + 100 * len(groups)
    text = requant_verilog(cfg)
    built = runner.build(simulator, TOP, text, tag=cfg.name)
    result, _ = runner.run(built, "serrano.sim.tb.requant_tb", "stream_rows",
                           cocotb_case(cfg, groups, valid, ready, max_cycles),
                           verilog_text=text, tag=cfg.name)
    assert len(result["groups"]) == len(groups)
    stalled = False
    for group, got in zip(groups, result["groups"]):
        out = np.array([layouts.unpack_row(w, cfg.cols, 16) for w in got["out"]],
                       dtype=np.int64)
        np.testing.assert_array_equal(out, golden(group))
        lat = [d - a for a, d in zip(got["accept_at"], got["deliver_at"])]
        assert len(lat) == len(group["acc"])
        if pattern == "no_backpressure":
            assert lat == [Requantizer.LATENCY] * len(lat)
        else:
            assert min(lat) >= Requantizer.LATENCY
            stalled |= max(lat) > Requantizer.LATENCY
    if pattern == "backpressure":
        assert stalled, "the back-pressure pattern never stalled a row"


# ---------------------------------------------------------------------------------------
# Per-row rescaling (STORE rowscale): sw.requant.row_rescale against an independent
# reference, then the store unit's rowscale path on Amaranth's simulator.

def ref_rescale_one(acc, k):
    """``acc * sigma_k / 256`` rounded half up, wrapped to int32, from the definition:
    ``sigma_k = (1 + (k & 1) / 2) * 2**(k >> 1)``, as an exact fraction."""
    x = Fraction(acc) * (1 + Fraction(k & 1, 2)) * 2**(k >> 1) / 256
    r = math.floor(x + Fraction(1, 2))
    return (r - INT32_MIN) % (1 << 32) + INT32_MIN


RESCALE_CORNERS = [INT32_MIN, INT32_MAX, INT32_MIN + 1, INT32_MAX - 1, 0, 1, -1, 2, -2,
                   85, -85, 86, -86, 127, -128, 128, -129, 255, -255, 256, -256, 257, -257,
                   511, -511, 512, -512, 1 << 30, -(1 << 30), (1 << 30) - 1, -(1 << 30) - 1,
                   (1 << 31) // 3, -((1 << 31) // 3) - 1]


def test_row_rescale_matches_reference_on_corners():
    """Every code against every corner: the int32 limits (the x3 codes wrap), exact
    halves of both signs (half up: -0.5 gives 0, -1.5 gives -1) and their neighbours."""
    acc = np.array(RESCALE_CORNERS, dtype=np.int64)
    for k in range(ROWSCALE_CODES):
        got = row_rescale(acc.reshape(-1, 1), np.full(len(acc), k))
        assert got.dtype == np.int32 or np.issubdtype(got.dtype, np.integer)
        expected = [ref_rescale_one(int(a), k) for a in acc]
        assert got.ravel().tolist() == expected, f"code {k}"


def test_row_rescale_negative_halves_round_up():
    # k = 0: acc / 256; -128 / 256 = -0.5 -> 0, -384 / 256 = -1.5 -> -1, 128 / 256 -> 1.
    got = row_rescale(np.array([[-128, -384, 128, 384, -129, -127]]), [0])
    assert got.tolist() == [[0, -1, 1, 2, -1, 0]]
    # k = 1: acc * 1.5 / 256; acc = -256: -1.5 -> -1; acc = 256 -> 1.5 -> 2.
    assert row_rescale(np.array([[-256, 256]]), [1]).tolist() == [[-1, 2]]
    # k = 17: acc * 384 / 256 = acc * 1.5: -1 -> -1.5 -> -1, 1 -> 2, 3 -> 4.5 -> 5.
    assert row_rescale(np.array([[-1, 1, 3, -3]]), [17]).tolist() == [[-1, 2, 5, -4]]
    # k = 16: acc * 256 / 256 exactly.
    assert row_rescale(np.array([[INT32_MIN, INT32_MAX]]), [16]).tolist() == \
        [[INT32_MIN, INT32_MAX]]


def test_row_rescale_matches_reference_random():
    rng = seeded("row-rescale")
    rows, C = 400, 6
    acc = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, size=(rows // 2, C),
                                       endpoint=True),
                          rng.integers(-5000, 5001, size=(rows // 2, C))])
    k = rng.integers(0, ROWSCALE_CODES, size=rows)
    got = row_rescale(acc, k)
    assert got.shape == acc.shape
    expected = [[ref_rescale_one(int(a), int(kk)) for a in row] for row, kk in zip(acc, k)]
    assert got.tolist() == expected
    # And as a float: within half a unit of acc * sigma / 256 where nothing wraps.
    sigma = (1 + (k & 1) / 2) * 2.0**(k >> 1)
    exact = acc * sigma[:, None] / 256
    fits = np.abs(exact) < 2**31 - 1
    assert fits.mean() > 0.5
    assert (np.abs(got[fits] - exact[fits]) <= 0.5).all()


def test_row_rescale_argument_checks():
    with pytest.raises(Exception):
        row_rescale(np.zeros((1, 4), np.int64), [ROWSCALE_CODES])
    with pytest.raises(Exception):
        row_rescale(np.zeros((1, 4), np.int64), [-1])


def store_insn(**fields):
    """One encoded STORE as the store unit's ``insn.payload`` (an int)."""
    return int.from_bytes(isa.encode(isa.Op.STORE, **fields), "little")


def run_store_unit(cfg, stores, *, acc, params, codes, p_ready=1.0, p_insn=1.0,
                   seed="store", max_cycles=20000):
    """Run ``stores`` (dicts of STORE fields) through a fresh :class:`StoreUnit` on
    Amaranth's simulator: the row-scale file written first with ``codes`` through the
    ``rs_*`` port, accumulators ``acc`` and parameter slots ``params`` (a
    :class:`sw.isa_model.Params`) served with a read latency of 1, the write DMA and the
    activation buffer taking each beat with probability ``p_ready``. Returns the memory
    image the DMA commands and beats give, the activation rows written, and per store
    the cycles of its rows' (beats') departures."""
    dut = StoreUnit(cfg)
    C, bus = cfg.cols, cfg.bus_bytes
    rng = seeded(seed)
    words_per_beat = 8 * bus // 32
    param_beats = []
    for t in range(cfg.param_tiles):
        words = ([int(v) & 0xFFFFFFFF for v in params.bias[t]]
                 + [int(v) for v in params.mult[t]] + [int(v) for v in params.shift[t]])
        flat = sum(w << (32 * i) for i, w in enumerate(words))
        param_beats.append([(flat >> (8 * bus * j)) & ((1 << (8 * bus)) - 1)
                            for j in range(isa.PARAM_BEATS)])
    assert words_per_beat * isa.PARAM_BEATS == 3 * C
    mem, act, departures = {}, {}, []

    async def testbench(ctx):
        for slot, k in enumerate(codes):
            ctx.set(dut.rs_addr, slot)
            ctx.set(dut.rs_data, int(k))
            ctx.set(dut.rs_en, 1)
            await ctx.tick()
        ctx.set(dut.rs_en, 0)
        ctx.set(dut.e2s_avail, 1)
        ctx.set(dut.v2s_avail, 1)
        pending = list(stores)
        cmds, beats = [], []
        cycle = 0
        idle_run = 0
        while pending or idle_run < 4:
            assert cycle < max_cycles, "watchdog"
            ready = lambda: int(rng.random() < p_ready)
            offer = bool(pending) and rng.random() < p_insn
            ctx.set(dut.insn.valid, int(offer))
            if offer:
                ctx.set(dut.insn.payload.as_value(), store_insn(**pending[0]))
            ctx.set(dut.wcmd.ready, ready())
            ctx.set(dut.wdata.ready, ready())
            ctx.set(dut.buf_ready, ready())
            if offer and ctx.get(dut.insn.ready):
                pending.pop(0)
                departures.append([])
            if ctx.get(dut.wcmd.valid) and ctx.get(dut.wcmd.ready):
                p = ctx.get(dut.wcmd.payload)
                cmds.append((p.addr, p.rows, p.row_beats, p.stride))
            if ctx.get(dut.wdata.valid) and ctx.get(dut.wdata.ready):
                beats.append(ctx.get(dut.wdata.payload))
                departures[-1].append(cycle)
            if ctx.get(dut.buf_valid) and ctx.get(dut.buf_ready):
                act[ctx.get(dut.buf_addr)] = ctx.get(dut.buf_data)
                departures[-1].append(cycle)
            acc_read = (ctx.get(dut.acc_addr), ctx.get(dut.acc_en))
            param_read = (ctx.get(dut.param_addr), ctx.get(dut.param_en))
            idle_run = idle_run + 1 if ctx.get(dut.idle) else 0
            await ctx.tick()
            cycle += 1
            if acc_read[1]:
                ctx.set(dut.acc_data, [int(v) for v in acc[acc_read[0]]])
            if param_read[1]:
                t, j = divmod(param_read[0], isa.PARAM_BEATS)
                ctx.set(dut.param_data, param_beats[t][j])
        # The DMA: each command's rows of row_beats beats, row i at addr + i * stride.
        it = iter(beats)
        for addr, rows, row_beats, stride in cmds:
            for i in range(rows):
                for j in range(row_beats):
                    beat = next(it)
                    for b in range(bus):
                        mem[addr + i * stride + j * bus + b] = (beat >> (8 * b)) & 0xFF
        assert next(it, None) is None, "beats beyond the commands"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return mem, act, departures


def golden_stores(cfg, stores, *, acc, params, codes, mem_bytes):
    """The golden ISA model's memory and activation buffer after ``stores``."""
    mach = Machine(cfg, np.zeros(mem_bytes, np.uint8))
    mach.acc[:] = acc
    mach.params = params.copy()
    mach.rowscale[:] = codes
    for fields in stores:
        assert mach.execute(isa.encode(isa.Op.STORE, **fields)) == isa.Error.NONE
    return mach


def random_store_state(cfg, rng):
    """Accumulators (corners and random values), codes (every code, repeated) and
    parameter slots of every kind of test_requant's channels, plus mild ones (slot 0)
    whose rescaled rows land mostly inside the int8 range."""
    rows = 2 * cfg.acc_buf_rows
    acc = random_acc(rng, rows, cfg.cols)
    acc[len(ACC_CORNERS):len(ACC_CORNERS) + len(RESCALE_CORNERS)] = \
        np.array(RESCALE_CORNERS)[:, None]
    acc = acc.astype(np.int32)
    codes = np.arange(cfg.rowscale_slots) % ROWSCALE_CODES
    rng.shuffle(codes[ROWSCALE_CODES:])
    params = Params.zeros(cfg)
    for t in range(cfg.param_tiles):
        for c in range(cfg.cols):
            b, mlt, s = channel_params(rng, KINDS[(c + t) % len(KINDS)])
            if t == 0:
                b, mlt, s = int(rng.integers(-500, 501)), int(rng.integers(1 << 29, 1 << 30)), 40
            params.bias[t, c], params.mult[t, c], params.shift[t, c] = b, mlt, s
    return acc, codes, params


def check_store_unit(cfg, stores, *, p_ready, p_insn, seed):
    rng = seeded(seed)
    acc, codes, params = random_store_state(cfg, rng)
    mem, act, departures = run_store_unit(cfg, stores, acc=acc, params=params, codes=codes,
                                          p_ready=p_ready, p_insn=p_insn, seed=seed)
    mem_bytes = 1 << 16
    gold = golden_stores(cfg, stores, acc=acc, params=params, codes=codes,
                         mem_bytes=mem_bytes)
    got_mem = np.zeros(mem_bytes, np.uint8)
    for addr, v in mem.items():
        got_mem[addr] = v
    np.testing.assert_array_equal(got_mem, gold.mem)
    got_act = np.zeros_like(gold.act)
    for row, v in act.items():
        got_act[row] = np.frombuffer(int(v).to_bytes(cfg.rows, "little"), np.int8)
    np.testing.assert_array_equal(got_act, gold.act)
    return gold, departures


def rowscale_stores(cfg, rng, n):
    """``n`` random STOREs, most with ``rowscale``, over every destination form."""
    stores = []
    forms = [dict(), dict(wide=1), dict(to_buf=1), dict(to_buf=1, wide=1),
             dict(transpose=1), dict(relu=1), dict(to_buf=1, relu=1, wide=1)]
    addr = 0
    for i in range(n):
        form = forms[i % len(forms)]
        m = int(rng.integers(1, 40))
        f = dict(acc_row=int(rng.integers(0, 2 * cfg.acc_buf_rows - m + 1)), m=m,
                 param_tile=int(rng.choice([0, 0, int(rng.integers(0, cfg.param_tiles))])),
                 rowscale=int(i % 5 != 4),
                 scale_row=int(rng.integers(0, cfg.rowscale_slots - m + 1)), **form)
        if form.get("to_buf"):
            f["buf_row"] = int(rng.integers(0, cfg.act_buf_rows // 2 - m))
            if form.get("wide"):
                f["lo_row"] = cfg.act_buf_rows // 2 + int(rng.integers(0, 100))
        else:
            beats = 2 if form.get("wide") else 1
            row = beats * cfg.bus_bytes
            if form.get("transpose"):
                stride = cfg.cols * cfg.cols
                blocks = -(-m // cfg.cols)
            else:
                stride = int(rng.choice([row, 2 * row]))
                blocks = m
            f["dram_addr"], f["dram_stride"] = addr, stride
            addr += blocks * stride + 4 * cfg.bus_bytes
        stores.append(f)
    assert addr < 1 << 16
    return stores


@pytest.mark.parametrize("preset,p_ready,p_insn", [
    ("tiny", 1.0, 1.0),
    ("tiny", 0.5, 0.7),
    ("tiny", 0.2, 1.0),                    # heavy back-pressure: the skid fills
    ("fpga", 0.6, 0.8),
])
def test_store_unit_rowscale_matches_golden(preset, p_ready, p_insn):
    """STORE rowscale through the store unit, bit-exact against row_rescale + requantize
    (the golden ISA model), every code, to memory and to the buffer, wide, transposed,
    with ReLU, with random back-pressure on the destination; stores without rowscale
    between them."""
    cfg = get_preset(preset)
    seed = f"store-rowscale-{preset}-{p_ready}-{p_insn}"
    stores = rowscale_stores(cfg, seeded(seed + "-stores"), 14)
    scaled_rows = sum(s["m"] for s in stores if s["rowscale"])
    assert scaled_rows >= ROWSCALE_CODES
    gold, _ = check_store_unit(cfg, stores, p_ready=p_ready, p_insn=p_insn, seed=seed)
    assert gold.mem.any() and gold.act.any()


def test_store_unit_rowscale_every_code_and_corner():
    """Every code meets every corner accumulator (the x3 codes wrap at the int32 limits,
    halves of both signs), slot ``s`` holding code ``s % ROWSCALE_CODES`` and accumulator
    row ``s`` one corner in every lane; identity requantization (wide: the 16-bit
    saturation shows more of the rescaled value) and a mild one, to memory."""
    cfg = get_preset("tiny")
    rng = seeded("store-rowscale-codes")
    _, _, params = random_store_state(cfg, rng)
    params.bias[1], params.mult[1], params.shift[1] = 0, 1, 0
    slots = cfg.rowscale_slots
    codes = np.arange(slots) % ROWSCALE_CODES
    per_run = slots // ROWSCALE_CODES
    mem_bytes = 1 << 16
    for start in range(0, len(RESCALE_CORNERS), per_run):
        corners = RESCALE_CORNERS[start:start + per_run]
        acc = np.zeros((2 * cfg.acc_buf_rows, cfg.cols), np.int32)
        for s_ in range(len(corners) * ROWSCALE_CODES):
            acc[s_] = corners[s_ // ROWSCALE_CODES]
        m = len(corners) * ROWSCALE_CODES
        stores = [dict(acc_row=0, m=m, param_tile=tile, rowscale=1, scale_row=0,
                       dram_addr=tile * 2 * m * cfg.bus_bytes, dram_stride=2 * cfg.bus_bytes,
                       wide=1) for tile in (1, 0)]
        mem, _, _ = run_store_unit(cfg, stores, acc=acc, params=params, codes=codes,
                                   p_ready=0.7, seed=f"codes-{start}")
        gold = golden_stores(cfg, stores, acc=acc, params=params, codes=codes,
                             mem_bytes=mem_bytes)
        got = np.zeros(mem_bytes, np.uint8)
        for addr, v in mem.items():
            got[addr] = v
        np.testing.assert_array_equal(got, gold.mem, err_msg=f"corners from {start}")


@pytest.mark.parametrize("form", [dict(), dict(to_buf=1), dict(wide=1), dict(transpose=1)])
def test_store_unit_rowscale_latency_and_rate(form):
    """Without back-pressure a rescaled store's first row leaves one cycle later than
    without rowscale (the rescale stage), at least as many rows a cycle after it: one
    row (a wide row's two beats: two) a cycle, either way (the skid FIFO's threshold
    once let three rows in four through)."""
    cfg = get_preset("tiny")
    acc, codes, params = random_store_state(cfg, seeded("store-rowscale-rate"))
    stride = (cfg.cols * cfg.cols if form.get("transpose")
              else cfg.bus_bytes * (2 if form.get("wide") else 1))
    times = {}
    for rowscale in (0, 1):
        store = dict(acc_row=3, m=40, param_tile=0, rowscale=rowscale, scale_row=5,
                     dram_addr=0, dram_stride=stride, **form)
        _, _, [departures] = run_store_unit(cfg, [store], acc=acc, params=params,
                                            codes=codes, seed="rate")
        times[rowscale] = departures
    plain, scaled = times[0], times[1]
    assert len(plain) == len(scaled) == 40 * (2 if form.get("wide") else 1)
    if not form.get("transpose"):         # a block leaves once all its rows are in
        assert scaled[0] == plain[0] + 1
        assert plain[-1] - plain[0] == scaled[-1] - scaled[0] == len(plain) - 1
    assert scaled[-1] - scaled[0] <= plain[-1] - plain[0]
