"""The vector unit: its arithmetic (``sw/vector.py``) against float and integer references,
and ``VEC`` programs on the RTL, bit for bit against the golden ISA model.

The activation buffer is not visible from memory, so each program reads the vector
unit's rows out through the array: a ``MATMUL`` with identity weights (``acc = a``) and a
raw ``STORE``. That path also exercises the vector -> exec token.
"""

import dataclasses

import numpy as np
import pytest

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sim.accel import run_rtl
from serrano.sw import isa_model, requant, vector
from tests.test_accel_rtl import check_against_golden, run_faulty

TINY = get_preset("tiny")


# ---------------------------------------------------------------------- the arithmetic

def _int8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def test_rshift_round_is_round_half_up_division(rng):
    x = rng.integers(-(1 << 30), 1 << 30, 5000)
    for s in (0, 1, 5, 17, 31):
        want = np.floor(x / 2.0 ** s + 0.5).astype(np.int64)
        np.testing.assert_array_equal(vector.rshift_round(x, s), want)


def test_add_against_exact_rationals(rng):
    a, b = _int8(rng, 4000).astype(float), _int8(rng, 4000).astype(float)
    for mul_a, mul_b, shift in ((1, 1, 0), (-32768, 32767, 15), (300, -7, 9), (5, 0, 1)):
        want = np.clip(np.floor((mul_a * a + mul_b * b) / 2 ** shift + 0.5),
                       -128, 127)
        np.testing.assert_array_equal(vector.add(a, b, mul_a, mul_b, shift), want)


def test_mul_against_exact_rationals(rng):
    a, b = _int8(rng, 4000).astype(float), _int8(rng, 4000).astype(float)
    for mul_a, shift in ((1, 7), (-32768, 31), (32767, 22), (3, 0)):
        want = np.clip(np.floor(mul_a * a * b / 2 ** shift + 0.5), -128, 127)
        np.testing.assert_array_equal(vector.mul(a, b, mul_a, shift), want)


def test_residual_add_error_is_within_one_output_step(rng):
    """The documented bound: ``|y * s_y - (x + z)|`` at most ``s_y`` (half a step from
    the fixed-point multipliers' rounding and half from the output's), unsaturated."""
    for _ in range(50):
        s_a, s_b = rng.uniform(0.001, 0.1, 2)
        s_y = max(s_a, s_b) * rng.uniform(1.0, 2.0)
        a, b = _int8(rng, 256), _int8(rng, 256)
        ma, mb, sh = vector.add_multipliers(s_a, s_b, s_y)
        y = vector.add(a, b, ma, mb, sh).astype(float)
        exact = a * s_a + b * s_b
        keep = np.abs(exact) < 127 * s_y
        assert np.abs(y * s_y - exact)[keep].max() <= s_y


def test_lut_tabulates_gelu_to_half_a_step(rng):
    gelu = lambda x: 0.5 * x * (1 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))  # noqa
    s_in, s_out = 6 / 127, 6 / 127
    t = vector.make_table(gelu, s_in, s_out)
    a = _int8(rng, 1000)
    y = vector.lut(a, t).astype(float) * s_out
    assert np.abs(y - gelu(a * s_in)).max() <= s_out / 2 + 1e-12


@pytest.mark.parametrize("args, message", [
    (dict(mul_a=1 << 15), "mul_a"), (dict(mul_b=-(1 << 15) - 1), "mul_b"),
    (dict(shift=32), "shift")])
def test_out_of_range_fields_are_one_line_errors(args, message):
    kw = dict(mul_a=1, mul_b=1, shift=0) | args
    with pytest.raises(ValueError, match=message):
        vector.add(np.zeros(4, np.int8), np.zeros(4, np.int8), **kw)


# ---------------------------------------------------------------------- programs

IDENT_ADDR, DATA_ADDR, OUT_ADDR, PROG_ADDR = 0, 256, 8192, 16384


def _identity(cfg):
    return np.eye(cfg.rows, cfg.cols, dtype=np.int8)


def _program(cfg, rows, ops, *, tables=None, out_row=None, n_out=None, image_bytes=32768):
    """A memory image and program: ``rows`` (n x R int8) loaded at buffer row 0, the
    ``tables`` (each 256 int8) at rows after them, then the ``ops`` (dicts for
    :meth:`Program.vec`), then the ``n_out`` (default ``len(rows)``) rows at ``out_row``
    read out through an
    identity ``MATMUL`` and a raw ``STORE`` to ``OUT_ADDR``."""
    R = cfg.rows
    image = np.zeros(image_bytes, np.uint8)
    image[IDENT_ADDR:IDENT_ADDR + R * cfg.cols] = _identity(cfg).view(np.uint8).ravel()
    data = [np.asarray(rows, np.int8)]
    for t in tables or ():
        data.append(np.asarray(t, np.int8).reshape(-1, R))
    data = np.concatenate(data)
    image[DATA_ADDR:DATA_ADDR + data.size] = data.view(np.uint8).ravel()
    n = len(rows)
    prog = isa_model.Program()
    prog.load_act(dram_addr=DATA_ADDR, dram_stride=R, rows=len(data), row_beats=1,
                  buf_row=0, buf_row_step=1, buf_beat_step=0)
    prog.fence()
    for j, _ in enumerate(tables or ()):
        prog.vec(vop=isa.VecOp.TABLE, a_row=n + j * (isa.TABLE_ENTRIES // R),
                 rows=isa.TABLE_ENTRIES // R, table=j)
    for k, op in enumerate(ops):
        prog.vec(**op, push_next=int(k == len(ops) - 1))
    out_row = n if out_row is None else out_row
    n = n if n_out is None else n_out
    # Read the rows out: one MATMUL per chunk of the accumulator half.
    chunk = cfg.acc_buf_rows
    for j, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        prog.matmul(weight_addr=IDENT_ADDR, act_row=out_row + start, act_stride=1,
                    act_kstep=0, m=m, k_tiles=1, acc_row=0, pop_side=int(j == 0),
                    push_next=1, pop_next=int(j > 0))
        prog.store(acc_row=0, m=m, param_tile=0, dram_addr=OUT_ADDR + start * 4 * cfg.cols,
                   dram_stride=4 * cfg.cols, raw=1, pop_prev=1, push_prev=1)
    prog.end()
    image[PROG_ADDR:PROG_ADDR + len(prog) * isa.INSN_BYTES] = prog.to_array()
    return image, len(prog)


def _readout(cfg, image, n):
    return image[OUT_ADDR:OUT_ADDR + n * 4 * cfg.cols].view("<i4").reshape(n, cfg.cols)


class _Layout:
    def __init__(self, image, prog_len):
        self.image, self.prog_addr, self.prog_len = image, PROG_ADDR, prog_len


def _golden(cfg, image, prog_len):
    gold = isa_model.run_program(cfg, image, PROG_ADDR, prog_len)
    assert gold.error == isa.Error.NONE
    return gold


def _chain(rng, cfg, n):
    """Rows and a chain of every operation, with the spec's own expected rows."""
    R = cfg.rows
    a, b = _int8(rng, (n, R)), _int8(rng, (n, R))
    table = _int8(rng, isa.TABLE_ENTRIES)
    rows = np.concatenate([a, b])
    ops = [dict(vop=isa.VecOp.ADD, a_row=0, b_row=n, dst_row=2 * n + 16, rows=n,
                mul_a=-20000, mul_b=31000, shift=15),
           dict(vop=isa.VecOp.MUL, a_row=2 * n + 16, b_row=0, dst_row=2 * n + 16, rows=n,
                mul_a=-12345, shift=20),
           dict(vop=isa.VecOp.LUT, a_row=2 * n + 16, dst_row=2 * n + 16, rows=n, table=0)]
    y = vector.add(a, b, -20000, 31000, 15)
    y = vector.mul(y, a, -12345, 20)
    y = vector.lut(y, table)
    return rows, ops, [table], 2 * n + 16, y


def _softmax_case(rng, cfg, rows, count, length, causal, s_in=0.05):
    R = cfg.rows
    x = _int8(rng, (rows * count, R))
    mul, shift = vector.softmax_multiplier(s_in)
    ops = [dict(vop=isa.VecOp.SOFTMAX, a_row=0, dst_row=rows * count, rows=rows,
                count=count, length=length, causal=causal, mul_a=mul, shift=shift)]
    lengths = length + causal * np.arange(count)
    want = vector.softmax(x.reshape(count, rows * R), lengths, mul, shift)
    return x, ops, want.reshape(rows * count, R)


@pytest.mark.parametrize("rows, count, length, causal", [
    (1, 1, 1, 0), (3, 4, 5, 1), (5, 2, 20, 0), (2, 3, 0, 1), (4, 2, 100, 0)])
def test_softmax_matches_golden(simulator, rng, rows, count, length, causal):
    x, ops, want = _softmax_case(rng, TINY, rows, count, length, causal)
    image, prog_len = _program(TINY, x, ops, out_row=rows * count)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, rows * count), want)


def _int16_rows(v, rows, R):
    """int16 values ``v`` as the two int8 row blocks a norm reads: low bytes, high."""
    return np.concatenate(vector.gain_bytes(np.asarray(v, np.int64).reshape(rows, R)))


def _norm_case(rng, cfg, rows, count, length, vop, spread=40.0, beta=False, dynq=False):
    """A norm of ``count`` vectors (with ``beta``: and a bias, small, and at the int16
    extremes, which saturate; with ``dynq``: on to int8 per vector, codes to slots from
    5): the data rows, the op, the expected rows and the output row."""
    R = cfg.rows
    L = rows * R
    x = np.clip(np.round(rng.normal(rng.uniform(-20, 20), spread, (count, L))), -128,
                127).astype(np.int8)
    shift = int(rng.integers(12, 20))
    gain = rng.integers(-(1 << (shift - 6)), 1 << (shift - 6), L)    # mostly in range
    gain[:2] = (-(1 << 15), (1 << 15) - 1)                             # and the extremes
    params = [_int16_rows(gain, rows, R)]
    bias = None
    if beta:
        bias = rng.integers(-300, 300, L)
        bias[2:4] = (-(1 << 15), (1 << 15) - 1)
        params.append(_int16_rows(bias, rows, R))
    data = np.concatenate([x.reshape(rows * count, R), *params])
    out = rows * count + isa.norm_param_rows(rows, beta)
    ops = [dict(vop=vop, a_row=0, b_row=rows * count, dst_row=out,
                rows=rows, count=count, length=length, shift=shift, beta=int(beta))]
    want = vector.norm(x, gain, length, shift, rms=vop == isa.VecOp.RMSNORM, beta=bias,
                       wide_out=dynq)
    if dynq:
        want, _ = vector.dynq(want, L)
        ops[0].update(dynq=1, b_lo_row=5)
    return data, ops, want.reshape(rows * count, R), out


@pytest.mark.parametrize("vop", [isa.VecOp.LAYERNORM, isa.VecOp.RMSNORM])
@pytest.mark.parametrize("rows, count, length, beta", [
    (1, 1, 1, 0), (3, 4, 10, 1), (5, 3, 20, 1), (2, 2, 0, 0), (6, 3, 40, 0)])
def test_norm_through_dynq_matches_golden(simulator, rng, vop, rows, count, length, beta):
    """A norm with ``dynq``: its 16-bit result (with or without ``beta``) on to int8 at
    a scale a vector, the codes to row-scale slots (the golden model's against the
    specification's; the RTL's rows and memory against the golden model's); vectors of
    one row, of 4 or more rows (the b cache), a length of 0."""
    data, ops, want, out = _norm_case(rng, TINY, rows, count, length, vop, beta=beta,
                                      dynq=True, spread=rng.choice([2.0, 40.0]))
    x = data[:rows * count].reshape(count, -1)
    image, prog_len = _program(TINY, data, ops, out_row=out)
    gold = _golden(TINY, image, prog_len)
    p = data[rows * count:]
    g = vector.from_bytes(p[:rows], p[rows:2 * rows]).ravel()
    b = vector.from_bytes(p[2 * rows:3 * rows], p[3 * rows:]).ravel() if beta else None
    y16 = vector.norm(x, g, length, ops[0]["shift"], vop == isa.VecOp.RMSNORM,
                      wide_out=True, beta=b)
    np.testing.assert_array_equal(gold.rowscale[5:5 + count], vector.dynq(y16, x.shape[1])[1])
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, rows * count), want)


@pytest.mark.parametrize("vop", [isa.VecOp.LAYERNORM, isa.VecOp.RMSNORM])
@pytest.mark.parametrize("rows, count, length, beta", [
    (1, 1, 1, 0), (3, 3, 10, 0), (5, 2, 20, 0), (2, 1, 0, 0), (4, 2, 13, 0), (1, 2, 1, 1),
    (3, 3, 40, 1), (5, 2, 77, 1), (2, 2, 50, 0)])
def test_norm_matches_golden(simulator, rng, vop, rows, count, length, beta):
    data, ops, want, out = _norm_case(rng, TINY, rows, count, length, vop, beta=beta)
    ops[0]["causal"] = int(count > 1)                  # ignored by the normalizations
    image, prog_len = _program(TINY, data, ops, out_row=out)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, rows * count), want)


@pytest.mark.parametrize("vop", [isa.VecOp.ADD, isa.VecOp.MUL])
def test_repeating_partner_matches_golden(simulator, rng, vop):
    """``b_repeat``: one bias (or scale) vector for every token, in place."""
    R, rows, count = TINY.rows, 3, 4
    x = _int8(rng, (count * rows, R))
    beta = _int8(rng, (rows, R))
    ops = [dict(vop=vop, a_row=0, b_row=count * rows, dst_row=0, rows=rows, count=count,
                b_repeat=1, mul_a=23000, mul_b=-9000, shift=15)]
    want = vector.apply(vop, x, np.tile(beta, (count, 1)), mul_a=23000, mul_b=-9000,
                        shift=15)
    image, prog_len = _program(TINY, np.concatenate([x, beta]), ops, out_row=0,
                               n_out=count * rows)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, count * rows), want)


def _cache_case(rng, cfg, vop, wide, rows, count, stride, beta=0):
    """A ``VEC`` whose b repeats (an ``ADD`` or ``MUL``, int8 or 16-bit; or a norm's
    gains) over ``count`` vectors of ``rows`` rows, interleaved ``stride`` apart or not:
    the data rows, the op, the output row and the expected rows (high halves, then low
    halves, for 16-bit results)."""
    R = cfg.rows
    n = rows * count
    if vop in (isa.VecOp.ADD, isa.VecOp.MUL):
        lim = isa.WIDE_MAX if wide else 127
        x = rng.integers(-lim, lim + 1, (count, rows, R))
        b = rng.integers(-lim, lim + 1, (rows, R))
        if vop == isa.VecOp.ADD:
            y = vector.add(x, b, 23000, -9000, 15, wide=bool(wide))
            fields = dict(mul_a=23000, mul_b=-9000, shift=15)
        else:
            y = vector.mul(x, b, 0 if wide else 23000, 11 if wide else 22, wide=bool(wide))
            fields = dict(mul_a=0 if wide else 23000, shift=11 if wide else 22)
        xr = x.transpose(1, 0, 2) if stride else x          # interleaved: row-major by row
        yr = y.transpose(1, 0, 2) if stride else y
        xr, yr = xr.reshape(n, R), np.asarray(yr).reshape(n, R)
        if wide:
            (xh, xl), (bh, bl), (yh, yl) = (requant.split_wide(v) for v in (xr, b, yr))
            data = np.concatenate([xh, xl, bh, bl])
            op = dict(vop=vop, a_row=0, a_lo_row=n, b_row=2 * n, b_lo_row=2 * n + rows,
                      dst_row=0, dst_lo_row=n, wide=1, **fields)
            want = np.concatenate([yh, yl])
        else:
            data = np.concatenate([xr, b])
            op = dict(vop=vop, a_row=0, b_row=n, dst_row=0, **fields)
            want = yr
        op.update(rows=rows, count=count, b_repeat=1, stride=count if stride else 0)
        return data.astype(np.int8), op, 0, want.astype(np.int8)
    if vop == isa.VecOp.DYNQ:                     # the low-half cache
        data, op, want, out, _ = _dynq_case(rng, cfg, rows, count, rows * R - 2, True,
                                            count if stride else 0)
        return data, op, out, want
    if vop == isa.VecOp.SOFTMAX:
        data, ops, want, out = _softmax_wide_case(rng, cfg, rows, count, rows * R - 1, 0, 0)
        return data, ops[0], out, want
    data, ops, want, out = _norm_case(rng, cfg, rows, count, rows * R - 1, vop, beta=beta)
    if wide:                                      # int8 in, 16 bits out: two rows a row
        p = data[n:]
        g = vector.from_bytes(p[:rows], p[rows:2 * rows])
        bias = vector.from_bytes(p[2 * rows:3 * rows], p[3 * rows:]).ravel() if beta else None
        y = vector.norm(data[:n].reshape(count, rows * R), g.ravel(), rows * R - 1,
                        ops[0]["shift"], vop == isa.VecOp.RMSNORM, wide_out=True,
                        beta=bias)
        hi, lo = requant.split_wide(y.reshape(n, R))
        ops[0].update(wide_out=1, dst_lo_row=out + n)
        want = np.concatenate([hi, lo])
    return data, ops[0], out, want


#: ``(vop, wide, interleaved, beta)``: ``wide`` 16-bit ``ADD``/``MUL`` rows, a norm's
#: 16-bit output (two rows a row), a 16-bit ``DYNQ`` or softmax; a norm's ``beta`` (its
#: gains and bias in one cache entry).
CACHE_CASES = [
    (isa.VecOp.ADD, 0, 0, 0), (isa.VecOp.MUL, 0, 1, 0), (isa.VecOp.ADD, 1, 1, 0),
    (isa.VecOp.MUL, 1, 0, 0), (isa.VecOp.LAYERNORM, 0, 0, 0), (isa.VecOp.RMSNORM, 0, 0, 0),
    (isa.VecOp.RMSNORM, 1, 0, 0), (isa.VecOp.LAYERNORM, 1, 0, 0),
    (isa.VecOp.LAYERNORM, 0, 0, 1), (isa.VecOp.LAYERNORM, 1, 0, 1),
    (isa.VecOp.DYNQ, 1, 0, 0), (isa.VecOp.DYNQ, 1, 1, 0), (isa.VecOp.SOFTMAX, 1, 0, 0)]


@pytest.mark.parametrize("vop, wide, stride, beta", CACHE_CASES, ids=[
    f"{v.name}{'-16' if w else ''}{'-interleaved' if st else ''}{'-beta' if bt else ''}"
    for v, w, st, bt in CACHE_CASES])
def test_caches_same_rows_fewer_cycles(rng, vop, wide, stride, beta):
    """The vector unit's caches (``cfg.vec_cache_rows``): a repeating b and a norm's
    gains read from the buffer for the first vector only, a 16-bit reduction's low
    halves in its first pass only; the same rows out as with no cache (and as the
    specification and the golden model), fewer cycles; vectors of 4 to 6 rows, and of 3
    (no b cache: the same cycles; the low-half cache has no lower limit)."""
    nocache = dataclasses.replace(TINY, name="tiny-nocache", vec_cache_rows=0)
    lo = vop in (isa.VecOp.DYNQ, isa.VecOp.SOFTMAX)
    for rows, cached in ((6, True), (4, True), (3, lo)):
        data, op, out, want = _cache_case(rng, TINY, vop, wide, rows, 5, stride, beta)
        cycles = {}
        for cfg in (TINY, nocache):
            image, prog_len = _program(cfg, data, [op], out_row=out, n_out=len(want))
            rtl = run_rtl(cfg, image, PROG_ADDR, prog_len, "verilator")
            check_against_golden(cfg, _Layout(image, prog_len), rtl)
            np.testing.assert_array_equal(_readout(cfg, rtl.image, len(want)), want)
            cycles[cfg.name] = rtl.counters["cycles"]
        if cached:
            assert cycles["tiny"] < cycles["tiny-nocache"], (rows, cycles)
        else:
            assert cycles["tiny"] == cycles["tiny-nocache"], (rows, cycles)


@pytest.mark.parametrize("rows, count, length, causal", [
    (1, 1, 1, 0), (3, 4, 7, 1), (6, 2, 24, 0), (2, 2, 0, 0), (5, 3, 100, 0)])
def test_argmax_matches_golden(simulator, rng, rows, count, length, causal):
    R = TINY.rows
    x = _int8(rng, (count, rows * R))
    x[0, :3] = 127                              # ties: the first one wins
    if count > 1:
        x[1] = -128                             # all equal, all the smallest
    ops = [dict(vop=isa.VecOp.ARGMAX, a_row=0, dst_row=rows * count, rows=rows,
                count=count, length=length, causal=causal)]
    want = vector.argmax(x, length + causal * np.arange(count))
    image, prog_len = _program(TINY, x.reshape(-1, R), ops, out_row=rows * count)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    got = _readout(TINY, rtl.image, count).astype(np.int64) & 0xFF
    np.testing.assert_array_equal(got @ (256 ** np.arange(R)), want)


@pytest.mark.parametrize("rows, count", [(2, 1), (4, 3), (6, 2)])
def test_rope_matches_golden(simulator, rng, rows, count):
    R = TINY.rows
    x = _int8(rng, (count, rows * R))
    cos, sin = vector.rope_tables(int(rng.integers(0, 500)), rows * R, 10000.0)
    mul, shift = vector.rope_multiplier(1.0, 1.0)
    data = np.concatenate([x.reshape(-1, R), cos.reshape(-1, R), sin.reshape(-1, R)])
    ops = [dict(vop=isa.VecOp.ROPE, a_row=0, b_row=rows * count,
                dst_row=rows * count + rows, rows=rows, count=count, mul_a=mul, shift=shift,
                b_repeat=1)]
    want = vector.rope(x, cos, sin, mul, shift).reshape(-1, R)
    image, prog_len = _program(TINY, data, ops, out_row=rows * count + rows)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, rows * count), want)


def _wide_rope_case(rng, rows, count, stride, b_repeat):
    """A 16-bit ``ROPE`` (x, tables and y each as high and low rows; ``x`` at its
    extremes, one vector's tables random 16-bit values): the rows, the op, and the
    specification's result rows (high halves, then low)."""
    R = TINY.rows
    L, h = rows * R, rows * R // 2
    x = rng.integers(-isa.WIDE_MAX, isa.WIDE_MAX + 1, (count, L))
    x[0, 1], x[0, 2:4] = -isa.WIDE_MAX, isa.WIDE_MAX
    nt = 1 if b_repeat else count
    t = np.stack([np.concatenate(vector.rope_tables(int(p), L, 10000.0, wide=True))
                  for p in rng.integers(0, 5000, nt)]).astype(np.int64)
    if not b_repeat:
        t[-1] = rng.integers(-isa.WIDE_MAX, isa.WIDE_MAX + 1, L)
    span = isa.vec_span(rows, count, stride)
    span_b = rows if b_repeat else span

    def place(mat, n):
        out = np.zeros((n, R), np.int8)
        for i, vecrow in enumerate(mat):
            for j in range(rows):
                out[isa.vec_offset(i, j, rows, 0 if len(mat) == 1 else stride)] = \
                    vecrow[j * R:(j + 1) * R]
        return out
    xh, xl = requant.split_wide(x)
    th, tl = requant.split_wide(t)
    # The most negative 16-bit value, -128 * 257 (both halves -128): x, and a table's.
    xh[0, 0] = xl[0, 0] = -128
    x[0, 0] = -128 * 257
    if not b_repeat:
        th[-1, 0] = tl[-1, 0] = -128
        t[-1, 0] = -128 * 257
    data = np.concatenate([place(xh, span), place(xl, span), place(th, span_b),
                           place(tl, span_b)])
    X, T, Y = 0, 2 * span, 2 * span + 2 * span_b
    op = dict(vop=isa.VecOp.ROPE, wide=1, a_row=X, a_lo_row=X + span, b_row=T,
              b_lo_row=T + span_b, dst_row=Y, dst_lo_row=Y + span, rows=rows, count=count,
              stride=stride, b_repeat=b_repeat, shift=vector.ROPE_SHIFT)
    y = vector.rope(x, t[:, :h], t[:, h:], 0, vector.ROPE_SHIFT, wide=True)
    assert (np.abs(y) == isa.WIDE_MAX).any() or not b_repeat
    yh, yl = requant.split_wide(y)
    return data, op, Y, np.concatenate([place(yh, span), place(yl, span)])


@pytest.mark.parametrize("rows, count, stride, b_repeat", [
    (2, 1, 0, 1), (4, 3, 3, 0), (6, 2, 0, 0), (2, 5, 6, 0)])
def test_wide_rope_matches_golden(simulator, rng, rows, count, stride, b_repeat):
    """``ROPE wide`` (eight reads a row): the specification's rows, and the golden
    model's whole memory."""
    data, op, out_row, want = _wide_rope_case(rng, rows, count, stride, b_repeat)
    image, prog_len = _program(TINY, data, [op], out_row=out_row, n_out=len(want))
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, len(want)), want)


def _on_amaranths_simulator(rows, ops, out_row, want, timeout_cycles=100_000, tables=None,
                            cfg=TINY):
    """``ops`` on ``rows`` (:func:`_program`) on the whole accelerator under Amaranth's
    simulator (with its per-cycle property monitors): the golden model gives ``want`` at
    ``out_row``, and the RTL the golden model's whole memory."""
    from serrano.sim.amaranth_system import run_program as run_amaranth
    image, prog_len = _program(cfg, rows, ops, tables=tables, out_row=out_row,
                               n_out=len(want))
    gold = _golden(cfg, image, prog_len)
    np.testing.assert_array_equal(_readout(cfg, gold.mem, len(want)), want)
    rtl = run_amaranth(cfg, image, PROG_ADDR, prog_len, timeout_cycles=timeout_cycles)
    assert not rtl.timed_out
    np.testing.assert_array_equal(rtl.image, gold.mem)


def test_wide_rope_on_amaranths_simulator(rng):
    data, op, out_row, want = _wide_rope_case(rng, 4, 3, 3, 0)
    _on_amaranths_simulator(data, [op], out_row, want)


def test_wide_rope_against_float_rotation(rng):
    """The 16-bit tables' error: within three 16-bit steps of the exact rotation (the
    table's 2**-14 on each of two products, and the rounding)."""
    d = 64
    x = rng.integers(-isa.WIDE_MAX, isa.WIDE_MAX + 1, (50, d))
    for pos in (0, 1, 17, 400, 4095):
        cos, sin = vector.rope_tables(pos, d, 10000.0, wide=True)
        y = vector.rope(x, cos, sin, 0, vector.ROPE_SHIFT, wide=True).astype(float)
        ang = pos * 10000.0 ** (-np.arange(0, d, 2) / d)
        x1, x2 = x[:, :d // 2].astype(float), x[:, d // 2:].astype(float)
        ref = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                              x2 * np.cos(ang) + x1 * np.sin(ang)], axis=1)
        keep = np.abs(ref) < isa.WIDE_MAX
        assert np.abs(y - ref)[keep].max() <= 3.0


def test_rope_against_float_rotation(rng):
    """The int8 tables' error: within two output steps of the exact rotation."""
    d = 64
    x = _int8(rng, (50, d))
    for pos in (0, 1, 17, 400):
        cos, sin = vector.rope_tables(pos, d, 10000.0)
        mul, shift = vector.rope_multiplier(1.0, 1.0)
        y = vector.rope(x, cos, sin, mul, shift).astype(float)
        ang = pos * 10000.0 ** (-np.arange(0, d, 2) / d)
        x1, x2 = x[:, :d // 2].astype(float), x[:, d // 2:].astype(float)
        ref = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                              x2 * np.cos(ang) + x1 * np.sin(ang)], axis=1)
        keep = np.abs(ref) < 127
        assert np.abs(y - ref)[keep].max() <= 2.0


def test_golden_model_runs_a_chain_of_every_operation(rng):
    rows, ops, tables, out, want = _chain(rng, TINY, 9)
    image, n = _program(TINY, rows, ops, tables=tables, out_row=out)
    gold = _golden(TINY, image, n)
    np.testing.assert_array_equal(_readout(TINY, gold.mem, 9), want)


@pytest.mark.parametrize("n", [1, 9])
def test_chain_of_every_operation_matches_golden(simulator, rng, n):
    rows, ops, tables, out, want = _chain(rng, TINY, n)
    image, prog_len = _program(TINY, rows, ops, tables=tables, out_row=out)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, n), want)


# ------------------------------------------------ the deep pipeline of the fpga preset

#: The ``fpga`` preset's vector pipeline (``vec_pipeline``: a register after each carry
#: chain, variable shift and multiplier, the multipliers DSP blocks with their own
#: registers), its multipliers' pipeline register, its divider's one step a cycle and no b
#: cache, on the tiny array.
TINY_DEEP = dataclasses.replace(TINY, name="tiny-deep", vec_pipeline=1, mult_pipeline=1,
                                vec_div_steps=1, vec_cache_rows=0)


def _deep_case(name, rng):
    """A program's rows, ops, tables, output row and expected rows for ``TINY_DEEP``."""
    cfg = TINY_DEEP
    if name == "chain":
        return _chain(rng, cfg, 9)
    if name == "corners":
        data, ops, want, out = _corner_program(cfg)
        return data, ops, None, out, want
    if name == "interleaved":
        data, ops, tables, want, out = _interleaved_program(cfg, rng, count=4, stride=4,
                                                            rows=2)
        return data, ops, tables, out, want
    if name == "softmax16":
        x, ops, want, out = _softmax_wide_case(rng, cfg, 3, 4, 9, 1, 1)
        return x, ops, None, out, want
    if name == "rope16":
        data, op, out, want = _wide_rope_case(rng, 4, 3, 3, 0)
        return data, [op], None, out, want
    if name == "norm_beta":
        data, ops, want, out = _norm_case(rng, cfg, 3, 3, 11, isa.VecOp.LAYERNORM, beta=True)
        return data, ops, None, out, want
    if name == "norm_dynq":
        data, ops, want, out = _norm_case(rng, cfg, 3, 4, 11, isa.VecOp.LAYERNORM, beta=True,
                                          dynq=True)
        return data, ops, None, out, want
    raise ValueError(name)


DEEP_CASES = ["chain", "corners", "interleaved", "softmax16", "rope16", "norm_beta",
              "norm_dynq"]


def test_deep_pipeline_is_the_fpga_presets():
    fpga = get_preset("fpga")
    assert fpga.vec_pipeline == TINY_DEEP.vec_pipeline == 1
    assert fpga.mult_pipeline == TINY_DEEP.mult_pipeline
    assert fpga.vec_div_steps == TINY_DEEP.vec_div_steps == 1
    assert fpga.vec_cache_rows == TINY_DEEP.vec_cache_rows == 0
    assert TINY.vec_pipeline == 0 and TINY.vec_div_steps > 1 and TINY.vec_cache_rows > 0


@pytest.mark.parametrize("case", ["chain", "corners", "interleaved"])
def test_deep_pipeline_on_amaranths_simulator(rng, case):
    """Every operation through the deep pipeline on the whole accelerator under
    Amaranth's simulator, with its per-cycle property monitors: the specification's
    rows, and the golden model's whole memory."""
    rows, ops, tables, out, want = _deep_case(case, rng)
    _on_amaranths_simulator(rows, ops, out, want, tables=tables, cfg=TINY_DEEP,
                            timeout_cycles=300_000)


@pytest.mark.parametrize("case", DEEP_CASES)
def test_deep_pipeline_matches_golden(simulator, rng, case):
    rows, ops, tables, out, want = _deep_case(case, rng)
    image, prog_len = _program(TINY_DEEP, rows, ops, tables=tables, out_row=out,
                               n_out=len(want))
    rtl = run_rtl(TINY_DEEP, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY_DEEP, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY_DEEP, rtl.image, len(want)), want)


def test_deep_pipeline_wide_rows_match_golden(simulator, rng):
    """16-bit rows (``STORE wide``, ``VEC ADD``/``MUL wide``, norms into 16 bits, a
    ``pair`` ``MATMUL``) through the deep pipeline."""
    _wide_rows_match_golden(TINY_DEEP, simulator, rng)


def test_deep_pipeline_takes_more_cycles_for_the_same_rows(rng):
    """The deep form adds cycles to each pass (the same rows out): the chain's program
    on both forms under Verilator."""
    cycles = {}
    for cfg in (TINY, TINY_DEEP):
        rows, ops, tables, out, want = _chain(np.random.default_rng(5), cfg, 9)
        image, prog_len = _program(cfg, rows, ops, tables=tables, out_row=out)
        rtl = run_rtl(cfg, image, PROG_ADDR, prog_len, "verilator")
        np.testing.assert_array_equal(_readout(cfg, rtl.image, 9), want)
        cycles[cfg.name] = rtl.counters["cycles"]
    assert cycles["tiny"] < cycles["tiny-deep"] < 2 * cycles["tiny"]


# ---------------------------------------------------------------------- corners, errors

def _corner_program(cfg):
    """One program of corner cases of every operation: vectors of one element, all
    equal, all the most negative, masks that leave one element, a long vector of many
    rows, the extreme multipliers; the expected rows from the specification."""
    R = cfg.rows
    long_rows = 40                                       # 160 elements on tiny
    x = np.full((long_rows + 3, R), -128, np.int8)       # all the most negative
    x[1] = 7                                             # all equal
    rng = np.random.default_rng(11)
    x[3:] = rng.integers(-128, 128, (long_rows, R))
    gain = np.full(long_rows * R, 3000)
    g = gain.reshape(long_rows, R)
    gain_rows = np.concatenate([(g & 0xFF).astype(np.uint8).view(np.int8),
                                (g >> 8).astype(np.int8)])
    cos, sin = vector.rope_tables(300, 2 * R, 10000.0)
    x[41:43] = np.concatenate([cos, sin]).reshape(2, R)  # ROPE's tables
    data = np.concatenate([x, gain_rows, gain_rows[[0, long_rows]]])
    table = data[7:7 + isa.TABLE_ENTRIES // R].ravel()   # LUT's table: random rows
    gb = len(x)                                          # gains of the long vector
    gs = gb + 2 * long_rows                              # gains of a one-row vector
    out = len(data)
    mul, sh = vector.softmax_multiplier(0.1)
    ops, want = [dict(vop=isa.VecOp.TABLE, a_row=7, rows=isa.TABLE_ENTRIES // R, count=1,
                      table=1)], []

    def add(op, rows_out, expect):
        ops.append(dict(op, dst_row=out + sum(len(w) for w in want)))
        want.append(np.asarray(expect, np.int8).reshape(rows_out, R))

    for vop in (isa.VecOp.SOFTMAX, isa.VecOp.ARGMAX):
        for a_row, length in ((0, 1), (0, R), (1, R), (1, 1), (3, 1)):
            op = dict(vop=vop, a_row=a_row, rows=1, count=1, length=length, mul_a=mul,
                      shift=sh)
            if vop == isa.VecOp.SOFTMAX:
                add(op, 1, vector.softmax(x[a_row][None], length, mul, sh))
            else:
                idx = int(vector.argmax(x[a_row][None], length)[0])
                add(op, 1, [(idx >> (8 * e)) & 0xFF for e in range(R)])
    add(dict(vop=isa.VecOp.SOFTMAX, a_row=3, rows=long_rows, count=1, length=long_rows * R - 1,
             mul_a=mul, shift=sh), long_rows,
        vector.softmax(x[3:][None].reshape(1, -1), long_rows * R - 1, mul, sh))
    for vop in isa.NORM_VOPS:
        for a_row, length in ((0, R), (1, R), (3, 1)):
            add(dict(vop=vop, a_row=a_row, b_row=gs, rows=1, count=1, length=length, shift=14),
                1, vector.norm(x[a_row][None], gain[:R], length, 14,
                               vop == isa.VecOp.RMSNORM))
        add(dict(vop=vop, a_row=3, b_row=gb, rows=long_rows, count=1, length=long_rows * R,
                 shift=14), long_rows,
            vector.norm(x[3:].reshape(1, -1), gain, long_rows * R, 14,
                        vop == isa.VecOp.RMSNORM))
    add(dict(vop=isa.VecOp.ROPE, a_row=3, b_row=41, rows=2, count=1, mul_a=-32768,
             shift=0, b_repeat=1), 2, vector.rope(x[3:5].reshape(1, -1), cos, sin, -32768, 0))
    add(dict(vop=isa.VecOp.LUT, a_row=0, rows=3, count=1, table=1), 3,
        vector.lut(x[:3], table))
    add(dict(vop=isa.VecOp.ADD, a_row=0, b_row=0, rows=1, count=1, mul_a=-32768, mul_b=-32768,
             shift=0), 1, vector.add(x[0], x[0], -32768, -32768, 0))
    add(dict(vop=isa.VecOp.MUL, a_row=0, b_row=0, rows=1, count=1, mul_a=-32768, shift=0),
        1, vector.mul(x[0], x[0], -32768, 0))
    return data, ops, np.concatenate(want), out


def _interleaved_program(cfg, rng, count=3, stride=5, rows=4):
    """Every operation on interleaved vectors (``stride``): ``count`` vectors of ``rows``
    rows laid out as a GEMM leaves a ``count x rows*R`` matrix in the buffer (k-tile
    ``j`` of vector ``i`` at row ``i + j*stride``), gaps between them; a repeating ``b``
    is one contiguous vector. Returns the
    program's rows, ops, the expected output region (gap rows zero) and its first row.
    The expected rows come from the specification on the plain matrices."""
    R = cfg.rows
    L = rows * R
    span = count + (rows - 1) * stride

    def place(mat, into, base):                  # a count x L matrix, interleaved
        for i in range(count):
            for j in range(rows):
                into[base + i + j * stride] = mat[i, j * R:(j + 1) * R]

    def take(region):
        return np.stack([np.concatenate([region[i + j * stride] for j in range(rows)])
                         for i in range(count)])

    X, Y, T, G = (_int8(rng, (count, L)) for _ in range(4))
    cos, sin = (np.stack(t) for t in zip(*(vector.rope_tables(int(p), L, 10000.0)
                                           for p in rng.integers(0, 500, count))))
    T[:, :L // 2], T[:, L // 2:] = cos, sin           # ROPE: each token's own table
    gain = rng.integers(-3000, 3000, L)
    gain_rows = np.concatenate([(gain & 0xFF).astype(np.uint8).view(np.int8),
                                (gain >> 8).astype(np.int8)]).reshape(2 * rows, R)
    table = _int8(rng, isa.TABLE_ENTRIES)
    x0, y0, t0 = 0, span, 2 * span
    g0 = 3 * span
    c0 = g0 + 2 * rows                                # one shared cos/sin, contiguous
    data = np.zeros((c0 + rows, R), np.int8)
    data[c0:] = T[0].reshape(rows, R)
    out = len(data) + isa.TABLE_ENTRIES // R           # after the table's rows
    place(X, data, x0)
    place(Y, data, y0)
    place(T, data, t0)
    data[g0:c0] = gain_rows
    mul, sh = vector.softmax_multiplier(0.07)
    m_r, s_r = vector.rope_multiplier(1.0, 1.0)
    cases = [
        (dict(vop=isa.VecOp.ADD, b_row=y0, mul_a=21000, mul_b=-17000, shift=15),
         vector.add(X, Y, 21000, -17000, 15)),
        (dict(vop=isa.VecOp.ADD, b_row=y0, b_repeat=1, mul_a=9000, mul_b=30000, shift=15),
         vector.add(X, data[y0:y0 + rows].reshape(1, L), 9000, 30000, 15)),
        (dict(vop=isa.VecOp.MUL, b_row=y0, mul_a=-12345, shift=20),
         vector.mul(X, Y, -12345, 20)),
        (dict(vop=isa.VecOp.LUT, table=0), vector.lut(X, table)),
        (dict(vop=isa.VecOp.SOFTMAX, length=L - 5, causal=1, mul_a=mul, shift=sh),
         vector.softmax(X, L - 5 + np.arange(count), mul, sh)),
        (dict(vop=isa.VecOp.LAYERNORM, b_row=g0, length=L - 1, shift=14),
         vector.norm(X, gain, L - 1, 14, False)),
        (dict(vop=isa.VecOp.RMSNORM, b_row=g0, length=L, shift=14),
         vector.norm(X, gain, L, 14, True)),
        (dict(vop=isa.VecOp.ROPE, b_row=t0, mul_a=m_r, shift=s_r),
         vector.rope(X, cos, sin, m_r, s_r)),
        (dict(vop=isa.VecOp.ROPE, b_row=c0, b_repeat=1, mul_a=m_r, shift=s_r),
         vector.rope(X, cos[0], sin[0], m_r, s_r)),
    ]
    ops, want = [], []
    for k, (fields, expect) in enumerate(cases):
        region = np.zeros((span, R), np.int8)
        place(np.asarray(expect, np.int8), region, 0)
        assert (take(region) == expect).all()
        ops.append(dict(fields, a_row=x0, dst_row=out + k * span, rows=rows, count=count,
                        stride=stride))
        want.append(region)
    idx = vector.argmax(X, 7 + np.arange(count))          # one row of index bytes each
    ops.append(dict(vop=isa.VecOp.ARGMAX, a_row=x0, dst_row=out + len(cases) * span,
                    rows=rows, count=count, length=7, causal=1, stride=stride))
    want.append(np.array([[(int(i) >> (8 * e)) & 0xFF for e in range(R)] for i in idx],
                         np.uint8).view(np.int8))
    return data, ops, [table], np.concatenate(want), out


def test_interleaved_vectors_on_amaranths_simulator(rng):
    """Every operation on vectors interleaved as a GEMM's output lies in the buffer, on
    the whole accelerator under Amaranth's simulator with its property monitors: the
    specification's rows at the strided places, the gaps untouched, as golden."""
    from serrano.sim.amaranth_system import run_program as run_amaranth
    data, ops, tables, want, out = _interleaved_program(TINY, rng)
    image, prog_len = _program(TINY, data, ops, tables=tables, out_row=out,
                               n_out=len(want))
    gold = _golden(TINY, image, prog_len)
    np.testing.assert_array_equal(_readout(TINY, gold.mem, len(want)), want)
    rtl = run_amaranth(TINY, image, PROG_ADDR, prog_len, timeout_cycles=200_000)
    assert not rtl.timed_out
    np.testing.assert_array_equal(rtl.image, gold.mem)


def test_interleaved_vectors_match_golden(simulator, rng):
    data, ops, tables, want, out = _interleaved_program(TINY, rng, count=4, stride=4,
                                                        rows=2)
    image, prog_len = _program(TINY, data, ops, tables=tables, out_row=out,
                               n_out=len(want))
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, len(want)), want)


def _pair_layout(hi, lo, kt, R):
    """Rows of a 16-bit ``M x kt*R`` value as the buffer holds it for a ``pair``
    ``MATMUL``: per k-tile, the ``M`` rows of high halves, then the ``M`` of low halves."""
    M = len(hi)
    out = np.zeros((kt, 2, M, R), np.int8)
    out[:, 0] = hi.reshape(M, kt, R).transpose(1, 0, 2)
    out[:, 1] = lo.reshape(M, kt, R).transpose(1, 0, 2)
    return out.reshape(-1, R)


def _wide_program(cfg, rng, M=6, kt=3):
    """16-bit values through the chip, in the pair layout (per k-tile: ``M`` rows of high
    halves, then ``M`` of low halves; vectors ``stride = 2M``): a GEMM's rows requantized
    to 16 bits (``STORE wide``); a residual add of 16-bit rows loaded from memory into
    them (``VEC ADD wide``); LayerNorm of the sum into int8 and RMSNorm into 16 bits
    (``VEC wide``, ``wide_out``), each with a ``beta`` (``VEC beta``); the RMSNorm's rows
    as a 16-bit GEMM input (``MATMUL pair``). Everything read out; expected rows from
    the specification."""
    R, C = cfg.rows, cfg.cols
    L = kt * C
    a = _int8(rng, (M, R))
    w = _int8(rng, (R, L))
    w2 = _int8(rng, (L, C))
    acc = a.astype(np.int64) @ w
    bias = rng.integers(-2000, 2000, L)
    mult = rng.integers(1 << 29, 1 << 30, L)
    shift = np.full(L, 25)
    bias[1], mult[1] = 1 << 28, (1 << 30)          # a channel that saturates high
    q = requant.requantize(acc, bias, mult, shift, wide=True)
    assert (np.abs(q) > 127).any() and (q == isa.WIDE_MAX).any()
    x16 = rng.integers(-isa.WIDE_MAX, isa.WIDE_MAX + 1, (M, L))
    gain = rng.integers(-20000, 20000, L)
    beta = rng.integers(-100, 100, L)
    beta[:2] = (-(1 << 15), 5000)                  # saturates; moves a 16-bit value
    gain_rows = np.concatenate([_int16_rows(gain, kt, C), _int16_rows(beta, kt, C)])
    image = np.zeros(32768, np.uint8)
    W, W2, P, A, G, X16, OUT, PROG = 256, 768, 1024, 2048, 3072, 4096, 8192, 16384
    image[W:W + R * L] = isa_model.pack_weights(w, cfg)
    image[W2:W2 + L * C] = isa_model.pack_weights(w2, cfg)
    for t in range(kt):
        p = isa_model.pack_params(bias[t * C:(t + 1) * C], mult[t * C:(t + 1) * C],
                                  shift[t * C:(t + 1) * C], cfg)
        image[P + t * p.size:P + (t + 1) * p.size] = p
    image[A:A + a.size] = a.view(np.uint8).ravel()
    image[G:G + gain_rows.size] = gain_rows.view(np.uint8).ravel()
    xp = _pair_layout(*requant.split_wide(x16), kt, R)
    image[X16:X16 + xp.size] = xp.view(np.uint8).ravel()
    span = 2 * M * kt
    Q, XW, S, Y, N16, GB = 0, span, 2 * span, 3 * span, 4 * span, 5 * span
    AR = GB + len(gain_rows)
    PW, MEMW = AR + M, 12288                   # q through memory and back; its bytes
    prog = isa_model.Program()
    prog.load_param(dram_addr=P, n_tiles=kt, param_tile=0)
    prog.load_act(dram_addr=A, dram_stride=R, rows=M, row_beats=1, buf_row=AR,
                  buf_row_step=1, buf_beat_step=0)
    prog.load_act(dram_addr=G, dram_stride=R, rows=len(gain_rows), row_beats=1, buf_row=GB,
                  buf_row_step=1, buf_beat_step=0)
    prog.load_act(dram_addr=X16, dram_stride=R, rows=span, row_beats=1, buf_row=XW,
                  buf_row_step=1, buf_beat_step=0)
    prog.fence()
    for t in range(kt):
        prog.matmul(weight_addr=W + t * R * C, act_row=AR, act_stride=1, act_kstep=0, m=M,
                    k_tiles=1, acc_row=0, push_next=1)
        prog.store(acc_row=0, m=M, param_tile=t, buf_row=Q + 2 * M * t, to_buf=1, wide=1,
                   lo_row=Q + 2 * M * t + M, pop_prev=1)
        prog.store(acc_row=0, m=M, param_tile=t, dram_addr=MEMW + t * M * 2 * C,
                   dram_stride=2 * C, wide=1)              # the same rows to memory
        prog.fence()
        prog.load_act(dram_addr=MEMW + t * M * 2 * C, dram_stride=2 * C, rows=M,
                      row_beats=2, buf_row=PW + 2 * M * t, buf_row_step=1,
                      buf_beat_step=M)                      # and back, as a pair
        prog.fence()
    vec = dict(rows=kt, count=M, stride=2 * M)
    ma, mb, sa = 300, -20000, 14
    prog.vec(vop=isa.VecOp.ADD, a_row=XW, a_lo_row=XW + M, b_row=Q, b_lo_row=Q + M, wide=1,
             dst_row=S, dst_lo_row=S + M, mul_a=ma, mul_b=mb, shift=sa, **vec)
    res = vector.add(x16, q, ma, mb, sa, wide=True)
    assert (np.abs(res) == isa.WIDE_MAX).any()
    MW = PW + span                             # 16-bit product of the sum and q
    prog.vec(vop=isa.VecOp.MUL, a_row=S, a_lo_row=S + M, b_row=Q, b_lo_row=Q + M, wide=1,
             dst_row=MW, dst_lo_row=MW + M, mul_a=-7, shift=14, **vec)   # mul_a unused
    prod = vector.mul(res, q, -7, 14, wide=True)
    assert (np.abs(prod) == isa.WIDE_MAX).any() and (np.abs(prod) < isa.WIDE_MAX).any()
    np.testing.assert_array_equal(
        prod, np.clip(np.floor(res.astype(np.int64) * q / 2**14 + 0.5), -isa.WIDE_MAX,
                      isa.WIDE_MAX))
    AM = MW + span                             # the index of each 16-bit sum's largest
    prog.vec(vop=isa.VecOp.ARGMAX, a_row=S, a_lo_row=S + M, wide=1, dst_row=AM,
             length=L - 1, **vec)
    idx = vector.argmax(res, L - 1)
    prog.vec(vop=isa.VecOp.LAYERNORM, a_row=S, a_lo_row=S + M, wide=1, b_row=GB, dst_row=Y,
             length=L - 1, shift=20, beta=1, **vec)
    y = vector.norm(res, gain, L - 1, 20, False, wide=True, beta=beta)
    prog.vec(vop=isa.VecOp.RMSNORM, a_row=S, a_lo_row=S + M, wide=1, wide_out=1, b_row=GB,
             dst_row=N16, dst_lo_row=N16 + M, length=L, shift=12, beta=1, **vec)
    n16 = vector.norm(res, gain, L, 12, True, wide=True, wide_out=True, beta=beta)
    assert (np.abs(n16) > 127).any()
    prog.fence()
    prog.matmul(weight_addr=W2, act_row=N16, act_stride=1, act_kstep=2 * M, m=2 * M,
                k_tiles=kt, acc_row=0, pair=1, push_next=1)
    prog.store(acc_row=0, m=M, param_tile=0, dram_addr=OUT, dram_stride=4 * C, raw=1,
               pop_prev=1)
    prog.fence()
    y_rows = np.zeros((span, R), np.int8)
    y_rows.reshape(kt, 2, M, R)[:, 0] = y.reshape(M, kt, R).transpose(1, 0, 2)
    want = [isa_model.pair_product(*requant.split_wide(n16), w2, R),
            _pair_layout(*requant.split_wide(res), kt, R),
            y_rows, _pair_layout(*requant.split_wide(n16), kt, R)]
    out = OUT + M * 4 * C
    want.append(_pair_layout(*requant.split_wide(q), kt, R))
    want.append(_pair_layout(*requant.split_wide(prod), kt, R))
    for j, row in enumerate((S, Y, N16, PW, MW)):     # read out through the array
        prog.matmul(weight_addr=IDENT_ADDR, act_row=row, act_stride=1, act_kstep=0,
                    m=span, k_tiles=1, acc_row=0, push_next=1)
        prog.store(acc_row=0, m=span, param_tile=0, dram_addr=out + j * span * 4 * C,
                   dram_stride=4 * C, raw=1, pop_prev=1)
        prog.fence()
    prog.matmul(weight_addr=IDENT_ADDR, act_row=AM, act_stride=1, act_kstep=0, m=M,
                k_tiles=1, acc_row=0, push_next=1)
    prog.store(acc_row=0, m=M, param_tile=0, dram_addr=out + 5 * span * 4 * C,
               dram_stride=4 * C, raw=1, pop_prev=1)
    prog.end()
    rows = np.zeros((M, C), np.int64)
    for e in range(min(C, 8)):
        rows[:, e] = ((idx >> (8 * e)) & 0xFF).astype(np.uint8).view(np.int8)
    want.append(rows)
    image[IDENT_ADDR:IDENT_ADDR + R * C] = _identity(cfg).view(np.uint8).ravel()
    image[PROG:PROG + len(prog) * isa.INSN_BYTES] = prog.to_array()
    return image, PROG, len(prog), np.concatenate([w.reshape(-1, C) for w in want]), OUT


def test_wide_rows_on_amaranths_simulator(rng):
    """16-bit values (``STORE wide``, ``VEC ADD wide``, ``VEC MUL wide``, norms of 16-bit
    rows into int8 and into 16 bits, a ``pair`` ``MATMUL``) on the whole accelerator under
    Amaranth's simulator: the specification's rows, and the golden model's whole
    memory."""
    from serrano.sim.amaranth_system import run_program as run_amaranth
    image, prog_addr, prog_len, want, out = _wide_program(TINY, rng)
    gold = isa_model.run_program(TINY, image, prog_addr, prog_len)
    assert gold.error == isa.Error.NONE
    got = gold.mem[out:out + want.size * 4].view("<i4").reshape(want.shape)
    np.testing.assert_array_equal(got, want)
    rtl = run_amaranth(TINY, image, prog_addr, prog_len, timeout_cycles=100_000)
    assert not rtl.timed_out
    np.testing.assert_array_equal(rtl.image, gold.mem)


def _wide_rows_match_golden(cfg, simulator, rng):
    """The 16-bit rows program on ``cfg``: the golden model's whole memory and the
    specification's result."""
    image, prog_addr, prog_len, want, out = _wide_program(cfg, rng, M=5, kt=2)
    rtl = run_rtl(cfg, image, prog_addr, prog_len, simulator)
    layout = _Layout(image, prog_len)
    layout.prog_addr = prog_addr
    check_against_golden(cfg, layout, rtl)
    got = rtl.image[out:out + want.size * 4].view("<i4").reshape(want.shape)
    np.testing.assert_array_equal(got, want)


def test_wide_rows_match_golden(simulator, rng):
    _wide_rows_match_golden(TINY, simulator, rng)


def test_wide_norm_error_against_float_is_within_its_bound(rng):
    """A 16-bit vector's norms against float, in output steps: half a step, the terms of
    the int8 bound (``z``'s resolution, ``r``'s 16 bits, the mean rounded to one unit of
    ``X``), and the gain's rounding (``|x_hat| 4096 / 2**(shift+1)``)."""
    for _ in range(200):
        L = int(rng.integers(2, 600))
        x = np.clip(np.round(rng.normal(rng.uniform(-3000, 3000), rng.uniform(20, 8000), L)),
                    -isa.WIDE_MAX, isa.WIDE_MAX).astype(np.int64)
        x[int(rng.integers(L))] = int(rng.choice([-1, 1])) * isa.WIDE_MAX     # an outlier
        gamma = rng.uniform(-3, 3, L)
        s_y = rng.uniform(0.02, 0.1)
        g, sh = vector.norm_gain(gamma, s_y)
        for rms in (False, True):
            c = x if rms else x - x.mean()
            denom = np.sqrt((c.astype(float) ** 2).mean())
            ref = gamma * c / denom / s_y
            y = vector.norm(x[None], g, L, sh, rms, wide=True)[0]
            xhat = c / denom
            bound = (0.5 + np.abs(gamma) / s_y * ((1 + np.abs(xhat) / 2) / 4096
                                                  + (0 if rms else 1 / (2 * denom)))
                     + np.abs(xhat) * 4096 / 2 ** (sh + 1) + 1e-9)
            keep = np.abs(ref) < 127
            assert (np.abs(y - ref) <= bound)[keep].all()


def _softmax16_case(rng, cfg, rows=3, count=4, length=9):
    """Softmax into 16 bits (``wide_out``): high halves then low halves, contiguous;
    expected rows from the specification."""
    R = cfg.rows
    x = _int8(rng, (rows * count, R))
    mul, shift = vector.softmax_multiplier(0.02)            # flat: small probabilities
    n = rows * count
    ops = [dict(vop=isa.VecOp.SOFTMAX, a_row=0, dst_row=n, dst_lo_row=2 * n, wide_out=1,
                rows=rows, count=count, length=length, causal=1, mul_a=mul, shift=shift)]
    p16 = vector.softmax(x.reshape(count, rows * R), length + np.arange(count), mul, shift,
                         wide_out=True)
    p8 = vector.softmax(x.reshape(count, rows * R), length + np.arange(count), mul, shift)
    assert (np.abs(p16 - 256 * p8.astype(np.int64)) <= 128).all()     # 8 more bits
    hi, lo = requant.split_wide(p16)
    return x, ops, np.concatenate([hi.reshape(n, R), lo.reshape(n, R)]), n


def _dynq_case(rng, cfg, rows, count, length, wide=True, stride=0):
    """``DYNQ`` of ``count`` vectors of ``rows`` rows: 16-bit (``wide``: high rows, then
    low rows) or int8, each vector at a magnitude of its own so that the codes run from
    0 to the largest (a vector of zeros, one at each code's limit and one past it, the
    most negative 16-bit value). Returns the rows, the op, the expected int8 rows, the
    output row and the expected codes."""
    R = cfg.rows
    n = rows * count
    top = isa.WIDE_MAX if wide else 127
    lims = [v for v in isa.DYNQ_LIMITS if v <= top]
    valid = max(1, min(length, rows * R))
    x = np.zeros((count, rows * R), np.int64)
    for i in range(1, count):       # at code c's limit, or one past it (code c + 1)
        c = (i - 1) % len(lims)
        past = i % 2 == 0 if count <= len(lims) else (i - 1) // len(lims) % 2 == 1
        p = min(lims[c] + past, top)
        x[i] = rng.integers(-p, p + 1, rows * R)
        x[i, (7 * i) % valid] = p if i % 4 < 2 else -p
    x[0] = 0                                      # all zeros: code 0, zeros out
    if count > 1 and wide:
        x[-1, -1] = -128 * 257                    # the most negative 16-bit value
    if wide:
        hi, lo = requant.split_wide(np.clip(x, -isa.WIDE_MAX, isa.WIDE_MAX))
        hi, lo = hi.astype(np.int64), lo.astype(np.int64)
        if count > 1:
            hi[-1, -1], lo[-1, -1] = -128, -128
        x = 256 * hi + lo
        data = np.concatenate([hi.reshape(n, R), lo.reshape(n, R)]).astype(np.int8)
    else:
        data = x.reshape(n, R).astype(np.int8)
    off = isa_model.vec_offsets(rows, count, stride)
    order = np.argsort(off.ravel())               # interleaved: vector i's rows apart
    src = np.zeros_like(data)
    src[:n][off.ravel()] = data[:n]
    if wide:
        src[n:][off.ravel()] = data[n:]
    del order
    out = (1 + wide) * n
    op = dict(vop=isa.VecOp.DYNQ, a_row=0, dst_row=out, rows=rows, count=count,
              length=length, stride=stride, b_row=3, wide=int(wide),
              a_lo_row=n if wide else 0)
    y, k = vector.dynq(x, length)
    want = np.zeros((n, R), np.int8)
    want[off.ravel()] = y.reshape(n, R)
    return src, op, want, out, k


@pytest.mark.parametrize("rows, count, length, wide, stride", [
    (1, 1, 1, True, 0), (3, 12, 40, True, 0), (2, 19, 32, True, 0), (2, 6, 9, False, 0),
    (2, 4, 20, True, 4), (1, 3, 0, True, 0)])
def test_dynq_matches_golden(simulator, rng, rows, count, length, wide, stride):
    """``DYNQ``: every code, rows at their code's limit and one past it, all zeros, the
    most negative value, a vector of one row, lengths that leave lanes out, interleaved
    vectors, int8 input; the specification's rows and the golden model's memory."""
    data, op, want, out, k = _dynq_case(rng, TINY, rows, count, length, wide, stride)
    if count == 19:
        assert set(k) == set(range(isa.ROWSCALE_CODES))     # every code
    image, prog_len = _program(TINY, data, [op], out_row=out, n_out=len(want))
    gold = _golden(TINY, image, prog_len)
    np.testing.assert_array_equal(gold.rowscale[3:3 + count], k)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, len(want)), want)


def test_dynq_on_amaranths_simulator(rng):
    data, op, want, out, _ = _dynq_case(rng, TINY, 2, 19, 30)
    _on_amaranths_simulator(data, [op], out, want)


def test_dynq_through_the_deep_pipeline(simulator, rng):
    data, op, want, out, _ = _dynq_case(rng, TINY_DEEP, 2, 19, 30, stride=19)
    image, prog_len = _program(TINY_DEEP, data, [op], out_row=out, n_out=len(want))
    rtl = run_rtl(TINY_DEEP, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY_DEEP, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY_DEEP, rtl.image, len(want)), want)


def test_dynq_codes_are_the_smallest_scale_that_holds_the_row(rng):
    """The code search against exact rationals: ``sigma_k`` is the smallest of the 18
    scales with ``round(m / sigma_k) <= 127`` (to within the multiplier's rounding),
    every element is within half a step of ``x / sigma_k``, and the hardware's table of
    limits gives the same codes."""
    m = np.concatenate([np.arange(0, 2000), rng.integers(0, 1 << 15, 5000),
                        np.asarray(isa.DYNQ_LIMITS[:-1]), np.asarray(isa.DYNQ_LIMITS[:-1]) + 1])
    x = np.stack([m, -m, m // 3], axis=1)
    y, k = vector.dynq(x, 3)
    sigma = vector.rowscale_sigma(k)
    assert (np.abs(y[:, 0]) <= 127).all() and (np.abs(y[:, 1]) <= 127).all()
    np.testing.assert_array_less(np.abs(y - x / sigma[:, None]), 0.5 + 1e-3)
    up = k > 0                                    # the next smaller scale would not do
    assert (m[up] / vector.rowscale_sigma(k[up] - 1) >= 127.5 - 0.01).all()
    np.testing.assert_array_equal(k, (m[:, None] > np.asarray(isa.DYNQ_LIMITS)).sum(1))
    big = m >= 128
    assert (np.abs(y[big, 0]) >= 84).all()        # a row's maximum reaches 85..127


def _softmax_wide_case(rng, cfg, rows, count, length, causal, wide_out, big=False):
    """Softmax of 16-bit scores (``wide``: high rows, then low rows), into int8 or 16
    bits; one element the most negative 16-bit value, one the largest; ``big``: a
    multiplier that drives ``t`` far past the exponent's 16 steps."""
    R = cfg.rows
    n = rows * count
    x = rng.integers(-isa.WIDE_MAX, isa.WIDE_MAX + 1, (count, rows * R))
    x[0, 1] = isa.WIDE_MAX
    hi, lo = requant.split_wide(x)
    hi, lo = hi.reshape(n, R), lo.reshape(n, R)
    hi[0, 0] = lo[0, 0] = -128                              # -128 * 257
    x[0, 0] = -128 * 257
    mul, shift = (65535, 2) if big else vector.softmax_multiplier(40.0 / isa.WIDE_MAX)
    ops = [dict(vop=isa.VecOp.SOFTMAX, wide=1, a_row=0, a_lo_row=n, dst_row=2 * n,
                dst_lo_row=3 * n, wide_out=wide_out, rows=rows, count=count, length=length,
                causal=causal, mul_a=mul, shift=shift)]
    p = vector.softmax(x, length + causal * np.arange(count), mul, shift,
                       wide_out=bool(wide_out), wide=True)
    if not big:                          # within the int8 softmax's documented bound
        z = x * (40.0 / isa.WIDE_MAX)
        for i in range(count):
            k = min(length + causal * i, rows * R)
            if k:
                ref = np.exp(z[i, :k] - z[i, :k].max())
                one = vector.SOFTMAX_ONE * (256 if wide_out else 1)
                assert np.abs(p[i, :k] / one - ref / ref.sum()).max() <= 0.5 / 127 + 0.003
    ph, pl = requant.split_wide(p.astype(np.int64)) if wide_out else (p, None)
    want = [ph.reshape(n, R)] + ([pl.reshape(n, R)] if wide_out else [])
    return np.concatenate([hi, lo]), ops, np.concatenate(want), 2 * n


@pytest.mark.parametrize("rows, count, length, causal, wide_out, big", [
    (3, 4, 9, 1, 1, False), (2, 3, 8, 0, 0, False), (2, 2, 5, 1, 1, True)])
def test_softmax_of_16_bits_matches_golden(simulator, rng, rows, count, length, causal,
                                          wide_out, big):
    x, ops, want, out = _softmax_wide_case(rng, TINY, rows, count, length, causal,
                                           wide_out, big)
    image, prog_len = _program(TINY, x, ops, out_row=out, n_out=len(want))
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, len(want)), want)


def test_softmax_of_16_bits_on_amaranths_simulator(rng):
    x, ops, want, out = _softmax_wide_case(rng, TINY, 3, 4, 9, 1, 1)
    _on_amaranths_simulator(x, ops, out, want)


def test_softmax_into_16_bits_on_amaranths_simulator(rng):
    x, ops, want, n = _softmax16_case(rng, TINY)
    _on_amaranths_simulator(x, ops, n, want)


def test_softmax_into_16_bits_matches_golden(simulator, rng):
    x, ops, want, n = _softmax16_case(rng, TINY, rows=2, count=3, length=5)
    image, prog_len = _program(TINY, x, ops, out_row=n, n_out=2 * n)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, 2 * n), want)


def test_corners_on_amaranths_simulator(rng):
    """The corner program on the whole accelerator on Amaranth's simulator, with its
    per-cycle property monitors, against the specification and the golden model."""
    data, ops, want, out = _corner_program(TINY)
    _on_amaranths_simulator(data, ops, out, want, timeout_cycles=200_000)


def test_corners_match_golden(simulator):
    data, ops, want, out = _corner_program(TINY)
    image, prog_len = _program(TINY, data, ops, out_row=out, n_out=len(want))
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, len(want)), want)


def test_softmax_error_against_float_is_within_its_bound(rng):
    """Documented bound (docs/vector.md): ``|p / 127 - softmax| <= 0.5 / 127 + 0.003``."""
    for _ in range(200):
        L = int(rng.integers(1, 300))
        s = float(rng.uniform(0.01, 0.3))
        x = rng.integers(-128, 128, (1, L)).astype(np.int8)
        length = int(rng.integers(1, L + 1))
        mul, sh = vector.softmax_multiplier(s)
        p = vector.softmax(x, length, mul, sh)[0].astype(float) / 127
        z = x[0, :length] * s
        ref = np.exp(z - z.max())
        ref /= ref.sum()
        assert np.abs(p[:length] - ref).max() <= 0.5 / 127 + 0.003
        assert not p[length:].any()


@pytest.mark.parametrize("rms", [False, True])
def test_norm_error_against_float_is_within_its_bound(rng, rms):
    """Documented bound: ``|y s_y - gamma x_hat| <= s_y / 2 + |gamma| ((1 + |x_hat| / 2)
    / 4096 + 1 / (512 sigma))`` where the output does not saturate (``sigma`` the input's
    standard deviation in int8 steps; the last term is the mean's rounding to 1/256 of a
    step, LayerNorm only)."""
    for _ in range(100):
        L = int(rng.integers(2, 400))
        x = np.clip(np.round(rng.normal(rng.uniform(-30, 30), rng.uniform(0.5, 60), (1, L))),
                    -128, 127).astype(np.int8)
        gamma = rng.uniform(-3, 3, L)
        s_y = float(rng.uniform(0.01, 0.1))
        gain, shift = vector.norm_gain(gamma, s_y)
        y = vector.norm(x, gain, L, shift, rms)[0].astype(float) * s_y
        xf = x[0].astype(float)
        c = xf if rms else xf - xf.mean()
        denom = np.sqrt((c ** 2).mean())
        if denom == 0:
            assert not y.any()
            continue
        xhat = c / denom
        ref = gamma * xhat
        keep = np.abs(ref) < 127 * s_y
        bound = s_y / 2 + np.abs(gamma) * ((1 + np.abs(xhat) / 2) / 4096
                                           + (0 if rms else 1 / (512 * denom))) + 1e-9
        assert (np.abs(y - ref) <= bound)[keep].all()


@pytest.mark.parametrize("fault, fields, error", [
    ("vop", dict(vop=10), isa.Error.BAD_VOP),
    ("vop_15", dict(vop=15), isa.Error.BAD_VOP),
    ("count", dict(count=0), isa.Error.BAD_COUNT),
    ("rope_odd", dict(vop=isa.VecOp.ROPE, rows=3), isa.Error.BAD_COUNT),
    ("table", dict(vop=isa.VecOp.LUT, table=2), isa.Error.BAD_BUFFER),
    ("table_fill", dict(vop=isa.VecOp.TABLE, rows=65, count=1), isa.Error.BAD_BUFFER),
    ("dst", dict(dst_row=1021), isa.Error.BAD_BUFFER),
    ("gains", dict(vop=isa.VecOp.RMSNORM, b_row=1017), isa.Error.BAD_BUFFER),
    ("stride_below_count", dict(count=3, stride=2), isa.Error.BAD_BUFFER),
    ("interleaved_dst", dict(count=2, stride=300, dst_row=130), isa.Error.BAD_BUFFER),
    ("interleaved_b", dict(count=2, stride=300, b_row=123), isa.Error.BAD_BUFFER),
    ("repeating_b", dict(count=2, stride=300, b_row=1021, b_repeat=1),
     isa.Error.BAD_BUFFER),
    ("wide_lut", dict(vop=isa.VecOp.LUT, wide=1, a_lo_row=40), isa.Error.BAD_VOP),
    ("wide_out_add", dict(wide_out=1, dst_lo_row=40), isa.Error.BAD_VOP),
    ("wide_add_dst_lo", dict(wide=1, a_lo_row=40, b_lo_row=44, dst_lo_row=1021),
     isa.Error.BAD_BUFFER),
    ("wide_lo_rows", dict(vop=isa.VecOp.RMSNORM, wide=1, a_lo_row=1021),
     isa.Error.BAD_BUFFER)])
def test_bad_vec_stops_with_its_error(simulator, rng, fault, fields, error):
    """A bad ``VEC`` stops with its code at dispatch, after the good instructions
    before it, and writes nothing."""
    x = _int8(rng, (4, TINY.rows))
    op = dict(vop=isa.VecOp.ADD, a_row=0, b_row=0, dst_row=8, rows=4, count=1) | fields
    image, prog_len = _program(TINY, x, [op])
    gold, rtl = run_faulty(TINY, image, PROG_ADDR, prog_len, simulator)
    assert gold.error == error
    np.testing.assert_array_equal(rtl.image, image)


def _ring_program(cfg, rng, blocks=3):
    """GEMM -> requantized rows into the buffer -> vector op -> GEMM -> raw rows out, for
    ``blocks`` blocks of rows, ordered by tokens alone (no FENCE between the blocks): seven
    of the eight token counters carry a dependency (all but exec -> load, which the GEMM
    programs use)."""
    R, C = cfg.rows, cfg.cols
    m = 3
    image = np.zeros(32768, np.uint8)
    w1 = _int8(rng, (R, C))
    w2 = _int8(rng, (R, C))
    a = _int8(rng, (blocks * m, R))
    table = _int8(rng, isa.TABLE_ENTRIES)
    W1, W2, A, P, T, OUT, PROG = 0, 256, 512, 1024, 2048, 8192, 16384
    image[W1:W1 + R * C] = w1.view(np.uint8).ravel()
    image[W2:W2 + R * C] = w2.view(np.uint8).ravel()
    image[A:A + a.size] = a.view(np.uint8).ravel()
    bias = rng.integers(-500, 500, C)
    mult, shift = np.full(C, 1 << 30), np.full(C, 37)
    image[P:P + isa.PARAM_BEATS * cfg.bus_bytes] = isa_model.pack_params(bias, mult, shift, cfg)
    image[T:T + table.size] = table.view(np.uint8)
    prog = isa_model.Program()
    trows = isa.TABLE_ENTRIES // R
    prog.load_act(dram_addr=T, dram_stride=R, rows=trows, row_beats=1, buf_row=200,
                  buf_row_step=1, buf_beat_step=0)
    prog.load_param(dram_addr=P, n_tiles=1, param_tile=0)
    prog.fence()
    prog.vec(vop=isa.VecOp.TABLE, a_row=200, rows=trows, table=1)
    Y, Z = 300, 400                          # requantized rows, vector results
    for b in range(blocks):
        first = b == 0
        prog.load_act(dram_addr=A + b * m * R, dram_stride=R, rows=m, row_beats=1,
                      buf_row=b * m, buf_row_step=1, buf_beat_step=0, push_next=1)
        prog.matmul(weight_addr=W1, act_row=b * m, act_stride=1, act_kstep=0, m=m,
                    k_tiles=1, acc_row=0, pop_prev=1, pop_next=int(not first), push_next=1)
        # The store reuses the Y rows: it waits for the vector unit to have read them.
        prog.store(acc_row=0, m=m, param_tile=0, buf_row=Y, to_buf=1, pop_prev=1,
                   pop_side=int(not first), push_prev=1, push_side=1)
        # The vector unit reuses the Z rows: it waits for the exec unit to have read them.
        prog.vec(vop=isa.VecOp.LUT, a_row=Y, dst_row=Z, rows=m, table=1, pop_prev=1,
                 pop_next=int(not first), push_prev=1, push_next=1)
        prog.matmul(weight_addr=W2, act_row=Z, act_stride=1, act_kstep=0, m=m, k_tiles=1,
                    acc_row=cfg.acc_buf_rows, pop_side=1, push_side=1, push_next=1,
                    pop_next=int(not first))
        prog.store(acc_row=cfg.acc_buf_rows, m=m, param_tile=0,
                   dram_addr=OUT + b * m * 4 * C, dram_stride=4 * C, raw=1, pop_prev=1,
                   push_prev=1)
    prog.end()
    image[PROG:PROG + len(prog) * isa.INSN_BYTES] = prog.to_array()
    y = requant.requantize(a.astype(np.int64) @ w1, bias, mult, shift)
    z = vector.lut(y, table)
    want = z.astype(np.int64) @ w2
    return image, PROG, len(prog), want


def test_token_ring_orders_a_pipeline_without_fences(simulator, rng):
    image, prog_addr, prog_len, want = _ring_program(TINY, rng)
    gold = isa_model.run_program(TINY, image, prog_addr, prog_len)   # tokens + races
    assert gold.error == isa.Error.NONE
    pushed = {c for op, hdr, _ in isa_model.decode_program(image[prog_addr:])
              if op in isa_model._UNIT_OF for c in isa_model._pushes(op, hdr)}
    assert len(pushed) == 7 and (1, 0) not in pushed
    got = gold.mem[8192:8192 + want.size * 4].view("<i4").reshape(want.shape)
    np.testing.assert_array_equal(got, want)
    rtl = run_rtl(TINY, image, prog_addr, prog_len, simulator)
    layout = _Layout(image, prog_len)
    layout.prog_addr = prog_addr
    check_against_golden(TINY, layout, rtl)


def test_vector_work_overlaps_the_gemm_verilator():
    """The layer benchmark on ``tiny``: the RTL's memory equals the golden model's, and
    the program with both the GEMM and the vector work takes fewer cycles than the two
    apart (the vector unit works while the array computes)."""
    from serrano.sw import vector_bench
    from tests.conftest import require_simulator
    require_simulator("verilator")
    c = vector_bench.measure(TINY, 1, "verilator", vector_bench.SMALL_LAYER)
    assert c["both"] < c["gemm"] + c["vector"] - c["loads"]
    assert c["hidden_share"] > 0.5


@pytest.fixture(params=["golden", "verilator", "icarus", "amaranth"])
def backend_name(request):
    from serrano.sw.backends import backend_names
    from tests.conftest import require_simulator, selected_simulators
    assert request.param in backend_names()
    if request.param in ("verilator", "icarus"):
        if request.param not in selected_simulators():
            pytest.skip(f"SIM excludes {request.param}")
        require_simulator(request.param)
    return request.param


def test_every_backend_runs_vector_programs(backend_name):
    """The corner program through the device interface on every backend (the golden
    model's run checked against each call, byte for byte: ``check="every"``)."""
    from serrano.sw.runtime import Device
    data, ops, want, out = _corner_program(TINY)
    image, prog_len = _program(TINY, data, ops, out_row=out, n_out=len(want))
    with Device(TINY, backend_name, mem_bytes=len(image), check="every") as dev:
        assert dev.alloc(len(image)) == 0
        dev.write(0, image)
        dev.run(PROG_ADDR, prog_len, name="vector corners")
        got = dev.read(OUT_ADDR, len(want) * 4 * TINY.cols)
    np.testing.assert_array_equal(got.view("<i4").reshape(len(want), -1), want)


def test_soft_reset_mid_vector_work_then_correct_run(simulator):
    """A soft reset while the vector unit works (at cycle 1,600 of about 3,500; its
    vector work runs from about 300 to 2,800), then the whole program again: the memory
    equals the golden model's."""
    data, ops, want, out = _corner_program(TINY)
    image, prog_len = _program(TINY, data, ops, out_row=out, n_out=len(want))
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator, soft_reset_after=1600,
                  pause=0.2, seed=5)
    assert rtl.reset_status == 0, f"not idle after soft reset: {rtl.reset_status:#x}"
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, len(want)), want)
