"""The vector unit: its arithmetic (``sw/vector.py``) against float and integer references,
and ``VEC`` programs on the RTL, bit for bit against the golden ISA model.

The activation buffer is not visible from memory, so each program reads the vector
unit's rows out through the array: a ``MATMUL`` with identity weights (``acc = a``) and a
raw ``STORE``. That path also exercises the vector -> exec token.
"""

import numpy as np
import pytest

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sim.accel import run_rtl
from serrano.sw import isa_model, vector
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


def _program(cfg, rows, ops, *, tables=None, out_row=None, image_bytes=32768):
    """A memory image and program: ``rows`` (n x R int8) loaded at buffer row 0, the
    ``tables`` (each 256 int8) at rows after them, then the ``ops`` (dicts for
    :meth:`Program.vec`), then the ``len(rows)`` rows at ``out_row`` read out through an
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


def _norm_case(rng, cfg, rows, count, length, vop, spread=40.0):
    R = cfg.rows
    L = rows * R
    x = np.clip(np.round(rng.normal(rng.uniform(-20, 20), spread, (count, L))), -128,
                127).astype(np.int8)
    shift = int(rng.integers(12, 20))
    gain = rng.integers(-(1 << (shift - 6)), 1 << (shift - 6), L)    # mostly in range
    gain[:2] = (-(1 << 15), (1 << 15) - 1)                             # and the extremes
    g = gain.reshape(rows, R)
    gain_rows = np.concatenate([(g & 0xFF).astype(np.uint8).view(np.int8),
                                (g >> 8).astype(np.int8)])
    data = np.concatenate([x.reshape(rows * count, R), gain_rows])
    ops = [dict(vop=vop, a_row=0, b_row=rows * count, dst_row=rows * count + 2 * rows,
                rows=rows, count=count, length=length, shift=shift)]
    want = vector.norm(x, gain, length, shift, rms=vop == isa.VecOp.RMSNORM)
    return data, ops, want.reshape(rows * count, R), rows * count + 2 * rows


@pytest.mark.parametrize("vop", [isa.VecOp.LAYERNORM, isa.VecOp.RMSNORM])
@pytest.mark.parametrize("rows, count, length", [(1, 1, 1), (3, 3, 10), (5, 2, 20),
                                                 (2, 1, 0), (4, 2, 13)])
def test_norm_matches_golden(simulator, rng, vop, rows, count, length):
    data, ops, want, out = _norm_case(rng, TINY, rows, count, length, vop)
    image, prog_len = _program(TINY, data, ops, out_row=out)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, rows * count), want)


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
                dst_row=rows * count + rows, rows=rows, count=count, mul_a=mul, shift=shift)]
    want = vector.rope(x, cos, sin, mul, shift).reshape(-1, R)
    image, prog_len = _program(TINY, data, ops, out_row=rows * count + rows)
    rtl = run_rtl(TINY, image, PROG_ADDR, prog_len, simulator)
    check_against_golden(TINY, _Layout(image, prog_len), rtl)
    np.testing.assert_array_equal(_readout(TINY, rtl.image, rows * count), want)


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
