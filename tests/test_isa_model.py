"""The golden ISA model (sw/isa_model.py) against numpy written here from hw/isa.py's text.

Expected values are computed in this file with plain loops and numpy (and, for the
requantization arithmetic, sw.requant.requantize, which is the arithmetic's
specification); nothing is taken from the model's internals.
"""

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from serrano.hw import isa
from serrano.hw.config import Config, get_preset
from serrano.sw import golden, requant
from serrano.sw.isa_model import (Program, run_program, check_tokens, check_races, decode_program,
                          pack_weights, pack_params, DeadlockError, RaceError,
                          Machine)

TINY = get_preset("tiny")
DEFAULT = get_preset("default")
PROG = 0            # programs live at address 0 (up to 128 instructions)
DATA = 4096         # operands from here
E = isa.Error


def image(size, rng=None):
    """A memory image: random bytes (so stray writes and reads show), or zeros."""
    if rng is None:
        return np.zeros(size, np.uint8)
    return rng.integers(0, 256, size, dtype=np.uint8)


def run(cfg, mem, prog, *, prog_addr=PROG, n_insns=None, **kw):
    """Copy ``prog`` into ``mem`` (in place: afterwards ``mem`` is the image the model
    started from) at ``prog_addr`` and run it."""
    code = np.frombuffer(bytes(prog), np.uint8)
    mem[prog_addr:prog_addr + len(code)] = code
    n = len(prog) if n_insns is None else n_insns
    return run_program(cfg, mem, prog_addr, n, **kw)


def int8_bytes(a):
    return np.asarray(a, np.int8).view(np.uint8).ravel()


def expected_load_act(cfg, mem, act, *, dram_addr, dram_stride, rows, row_beats, buf_row,
                      buf_row_step, buf_beat_step):
    """hw/isa.py's LOAD_ACT, beat by beat, in the stated order (later beats win)."""
    bb = cfg.bus_bytes
    act = act.copy()
    for r in range(rows):
        for b in range(row_beats):
            a = dram_addr + r * dram_stride + b * bb
            act[buf_row + r * buf_row_step + b * buf_beat_step] = mem[a:a + bb].view(np.int8)
    return act


def fill_act(cfg, prog, mem, rng, n_rows, addr=DATA):
    """Emit a LOAD_ACT of ``n_rows`` random buffer rows 0..n_rows-1; return them."""
    rows = rng.integers(-128, 128, (n_rows, cfg.rows)).astype(np.int8)
    mem[addr:addr + rows.size] = int8_bytes(rows)
    prog.load_act(dram_addr=addr, dram_stride=cfg.bus_bytes, rows=n_rows, row_beats=1,
                  buf_row=0, buf_row_step=1, buf_beat_step=0)
    return rows.astype(np.int64)


# ---------------------------------------------------------------------------------------
# Encoding


OP_FIELDS = {op: [(name, f.width) for name, f in layout] for op, layout in
             isa.body_layouts.items()}
BUILDER = {isa.Op.LOAD_ACT: "load_act", isa.Op.LOAD_PARAM: "load_param",
           isa.Op.MATMUL: "matmul", isa.Op.STORE: "store", isa.Op.VEC: "vec"}
SIDE = (isa.Op.MATMUL, isa.Op.STORE)          # the builders that take side flags
NO_TOKENS = dict.fromkeys(["load->exec", "exec->load", "exec->store", "exec->vector",
                           "store->exec", "store->vector", "vector->exec", "vector->store"], 0)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_encode_decode_round_trip(data):
    op = data.draw(st.sampled_from(list(isa.Op)))
    fields = {name: data.draw(st.integers(-(1 << width - 1), (1 << width - 1) - 1)
                              if op == isa.Op.VEC and name in isa.SIGNED_FIELDS
                              else st.integers(0, (1 << width) - 1))
              for name, width in OP_FIELDS[op]}
    names = ("pop_prev", "pop_next", "push_prev", "push_next")
    if op in SIDE:
        names += ("pop_side", "push_side")
    flags = {name: data.draw(st.integers(0, 1)) for name in names}
    prog = Program()
    if op in BUILDER:
        raw = getattr(prog, BUILDER[op])(**fields, **flags)
    else:
        flags = dict.fromkeys(flags, 0)
        raw = prog.fence(**fields) if op == isa.Op.FENCE else prog.end()
    assert raw == isa.encode(op, **flags, **fields)
    assert len(raw) == isa.INSN_BYTES and bytes(prog) == raw
    dop, hdr, body = isa.decode_op(raw)
    assert dop == op and body == fields
    assert {k: hdr[k] for k in flags} == flags and hdr["opcode"] == op
    assert all(hdr[k] == 0 for k in isa.POSITION_FIELDS)
    # The opcode sits in the low 4 bits of byte 0, the flags in bits 4..7.
    assert raw[0] == int(op) | sum(flags[k] << (4 + i) for i, k in
                                   enumerate(("pop_prev", "pop_next", "push_prev",
                                              "push_next")))
    assert raw[1] & 3 == flags.get("pop_side", 0) | flags.get("push_side", 0) << 1
    assert decode_program(bytes(prog)) == [(op, hdr, body)]


def test_program_builder_rejects_bad_fields():
    with pytest.raises(ValueError, match="rows=65536 does not fit in 16 bits"):
        Program().load_act(dram_addr=0, dram_stride=0, rows=1 << 16, row_beats=1, buf_row=0,
                           buf_row_step=0, buf_beat_step=0)
    with pytest.raises(TypeError):
        Program().matmul(weight_addr=0)
    with pytest.raises(ValueError, match="an instruction is 32 bytes, not 31"):
        Program().raw(bytes(31))


def test_decode_program_stops_at_end_and_bad_opcode():
    p = Program()
    p.fence()
    p.end()
    p.fence()
    assert [op for op, _, _ in decode_program(p)] == [isa.Op.FENCE, isa.Op.END]
    q = Program()
    q.fence()
    q.raw(bytes(32))
    q.end()
    assert [op for op, _, _ in decode_program(bytes(q))] == [isa.Op.FENCE]
    with pytest.raises(ValueError, match="a program is a multiple of 32 bytes, not 33"):
        decode_program(bytes(33))


# ---------------------------------------------------------------------------------------
# Operand layouts


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=lambda c: c.name)
def test_pack_weights_layout(cfg, rng):
    R, C = cfg.rows, cfg.cols
    k, n = 2 * R + 3, C + 1
    w = rng.integers(-128, 128, (k, n))
    out = pack_weights(w, cfg)
    kt, nt = 3, 2
    assert out.dtype == np.uint8 and out.shape == (nt * kt * R * C,)
    for j in range(nt):
        for i in range(kt):
            base = (j * kt + i) * R * C
            for r in range(R):
                for c in range(C):
                    kk, nn = i * R + r, j * C + c
                    want = w[kk, nn] if kk < k and nn < n else 0
                    assert out[base + r * C + c].astype(np.int8) == want
    with pytest.raises(ValueError, match="outside int8"):
        pack_weights(np.array([[128]]), cfg)


def test_pack_params_layout(rng):
    cfg = TINY
    n = 6
    bias = rng.integers(-(1 << 31), 1 << 31, n)
    mult = rng.integers(0, 1 << 31, n)
    shift = rng.integers(0, 64, n)
    out = pack_params(bias, mult, shift, cfg).tobytes()
    want = b""
    for j in range(2):
        idx = range(4 * j, 4 * j + 4)
        want += struct.pack("<4i", *[int(bias[i]) if i < n else 0 for i in idx])
        want += struct.pack("<4I", *[int(mult[i]) if i < n else 0 for i in idx])
        want += struct.pack("<4I", *[int(shift[i]) if i < n else 0 for i in idx])
    assert out == want
    assert len(out) == 2 * isa.PARAM_BEATS * cfg.bus_bytes
    with pytest.raises(ValueError, match=r"mult holds values outside \[0, 2147483647\]"):
        pack_params([0], [1 << 31], [0], cfg)
    with pytest.raises(ValueError, match=r"shift holds values outside \[0, 63\]"):
        pack_params([0], [0], [64], cfg)
    with pytest.raises(ValueError, match="must have one length"):
        pack_params([0, 1], [0], [0], cfg)


# ---------------------------------------------------------------------------------------
# LOAD_ACT


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=lambda c: c.name)
def test_load_act_strides_and_steps(cfg, rng):
    bb = cfg.bus_bytes
    mem = image(DATA + 64 * 1024, rng)
    before = mem.copy()
    geos = [
        dict(dram_addr=DATA, dram_stride=3 * bb, rows=5, row_beats=3, buf_row=7,
             buf_row_step=1, buf_beat_step=5),
        dict(dram_addr=DATA + 40 * bb, dram_stride=8 * bb, rows=4, row_beats=2, buf_row=40,
             buf_row_step=3, buf_beat_step=1),
        # Overlapping buffer rows (step 0): the later beat wins.
        dict(dram_addr=DATA + 200 * bb, dram_stride=bb, rows=3, row_beats=2, buf_row=100,
             buf_row_step=0, buf_beat_step=1),
        # dram_stride 0: every row reads the same bytes.
        dict(dram_addr=DATA + 300 * bb, dram_stride=0, rows=3, row_beats=1, buf_row=200,
             buf_row_step=2, buf_beat_step=0),
    ]
    prog = Program()
    want = np.zeros((cfg.act_buf_rows, cfg.rows), np.int8)
    for g in geos:
        prog.load_act(**g)
        want = expected_load_act(cfg, before, want, **g)
    prog.end()
    res = run(cfg, mem, prog)
    assert res.error == E.NONE and res.error_insn is None
    assert np.array_equal(res.act, want)
    assert np.array_equal(res.mem, mem)                     # loads write no memory
    assert not res.acc.any()


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 6), row_beats=st.integers(1, 4), stride_beats=st.integers(0, 8),
       addr_beats=st.integers(0, 64), buf_row=st.integers(0, 40),
       buf_row_step=st.integers(0, 5), buf_beat_step=st.integers(0, 5),
       seed=st.integers(0, 2**32 - 1))
def test_load_act_property(rows, row_beats, stride_beats, addr_beats, buf_row, buf_row_step,
                           buf_beat_step, seed):
    cfg = TINY
    bb = cfg.bus_bytes
    mem = image(DATA + 1024, np.random.default_rng(seed))
    g = dict(dram_addr=DATA + addr_beats * bb, dram_stride=stride_beats * bb, rows=rows,
             row_beats=row_beats, buf_row=buf_row, buf_row_step=buf_row_step,
             buf_beat_step=buf_beat_step)
    prog = Program()
    prog.load_act(**g)
    prog.end()
    res = run(cfg, mem, prog)
    assert res.error == E.NONE
    want = expected_load_act(cfg, mem, np.zeros_like(res.act), **g)
    assert np.array_equal(res.act, want)
    assert res.dma_read_bytes == 2 * 32 + rows * row_beats * bb


# ---------------------------------------------------------------------------------------
# LOAD_PARAM


def test_load_param(rng):
    cfg = TINY
    C = cfg.cols
    mem = image(DATA + 4096, rng)
    n_tiles, first = 3, 5
    bias = rng.integers(-(1 << 31), 1 << 31, (n_tiles, C))
    mult = rng.integers(0, 1 << 31, (n_tiles, C))
    shift = rng.integers(0, 64, (n_tiles, C))
    blob = b"".join(struct.pack(f"<{C}i{C}I{C}I", *bias[t], *mult[t], *shift[t])
                    for t in range(n_tiles))
    mem[DATA:DATA + len(blob)] = np.frombuffer(blob, np.uint8)
    prog = Program()
    prog.load_param(dram_addr=DATA, n_tiles=n_tiles, param_tile=first)
    prog.end()
    res = run(cfg, mem, prog)
    assert res.error == E.NONE
    slots = slice(first, first + n_tiles)
    assert np.array_equal(res.params.bias[slots], bias)
    assert np.array_equal(res.params.mult[slots], mult)
    assert np.array_equal(res.params.shift[slots], shift)
    others = np.ones(cfg.param_tiles, bool)
    others[slots] = False
    assert not res.params.bias[others].any() and not res.params.mult[others].any()
    assert res.dma_read_bytes == 2 * 32 + n_tiles * isa.PARAM_BEATS * cfg.bus_bytes


def test_load_param_keeps_register_widths():
    """Out-of-contract words: the model keeps the low 31 (mult) and 6 (shift) bits."""
    cfg = TINY
    mem = image(DATA + 256)
    blob = struct.pack("<4i4I4I", -1, 0, 0, 0, 0xFFFF_FFFF, 1 << 31, 5, 0, 64 + 3, 0, 0, 0)
    mem[DATA:DATA + 48] = np.frombuffer(blob, np.uint8)
    prog = Program()
    prog.load_param(dram_addr=DATA, n_tiles=1, param_tile=0)
    prog.end()
    res = run(cfg, mem, prog)
    assert list(res.params.mult[0]) == [(1 << 31) - 1, 0, 5, 0]
    assert list(res.params.shift[0]) == [3, 0, 0, 0]
    assert res.params.bias[0, 0] == -1


# ---------------------------------------------------------------------------------------
# MATMUL


def expected_matmul(cfg, act, acc, w_tiles, *, weight_addr, act_row, act_stride, act_kstep,
                    m, k_tiles, acc_row, accumulate):
    """hw/isa.py's MATMUL (weights from ``w_tiles``), tile by tile and row by row, in
    int64 then wrapped."""
    acc = acc.astype(np.int64).copy()
    for i in range(k_tiles):
        for j in range(m):
            a = act[act_row + i * act_kstep + j * act_stride].astype(np.int64)
            prev = acc[acc_row + j] if (accumulate or i > 0) else 0
            acc[acc_row + j] = golden.wrap_int32(prev + a @ w_tiles[i])
    return golden.wrap_int32(acc)


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=lambda c: c.name)
@pytest.mark.parametrize("accumulate", [0, 1])
def test_matmul(cfg, accumulate, rng):
    R, C = cfg.rows, cfg.cols
    mem = image(DATA + 64 * 1024, rng)
    prog = Program()
    act = np.zeros((cfg.act_buf_rows, R), np.int64)
    act[:24] = fill_act(cfg, prog, mem, rng, 24)
    waddr = DATA + 32 * 1024
    k_tiles = 3
    w_tiles = rng.integers(-128, 128, (k_tiles + 1, R, C))
    mem[waddr:waddr + w_tiles.size] = int8_bytes(w_tiles)
    prog.fence()
    acc = np.zeros((2 * cfg.acc_buf_rows, C), np.int64)
    calls = [
        # first: k_tiles 1 into fresh rows; then k_tiles 3 with strides over the result.
        dict(weight_addr=waddr + R * C, act_row=0, act_stride=1, act_kstep=0, m=4, k_tiles=1,
             acc_row=10, accumulate=accumulate),
        dict(weight_addr=waddr, act_row=2, act_stride=2, act_kstep=7, m=4, k_tiles=k_tiles,
             acc_row=10, accumulate=accumulate),
        dict(weight_addr=waddr, act_row=23, act_stride=0, act_kstep=0, m=1, k_tiles=2,
             acc_row=2 * cfg.acc_buf_rows - 1, accumulate=accumulate),
    ]
    for call in calls:
        prog.matmul(**call)
        first = (call["weight_addr"] - waddr) // (R * C)
        acc = expected_matmul(cfg, act, acc, w_tiles[first:], **call)
    prog.end()
    res = run(cfg, mem, prog)
    assert res.error == E.NONE
    assert res.acc.dtype == np.int32
    assert np.array_equal(res.acc, acc)
    assert res.macs == (4 * 1 + 4 * 3 + 1 * 2) * R * C
    assert res.array_rows == 4 * 1 + 4 * 3 + 1 * 2
    assert [o.get("macs") for o in res.ops if o["op"] == "MATMUL"] == \
        [4 * R * C, 12 * R * C, 2 * R * C]


def test_matmul_accumulate_wraps_int32():
    """Extreme operands summed many times overflow int32: the accumulator wraps."""
    cfg = TINY
    R, C = cfg.rows, cfg.cols
    n_calls, k_tiles = 9, 4096    # 9 * 4096 * R * 128 * 128 = 2**31 * 1.125
    mem = image(DATA + 64 + k_tiles * R * C)
    prog = Program()
    mem[DATA:DATA + R] = int8_bytes(np.full(R, -128))
    prog.load_act(dram_addr=DATA, dram_stride=0, rows=1, row_beats=1, buf_row=0,
                  buf_row_step=0, buf_beat_step=0)
    prog.fence()
    mem[DATA + 64:DATA + 64 + k_tiles * R * C] = int8_bytes(np.full((k_tiles, R, C), -128))
    for i in range(n_calls):
        prog.matmul(weight_addr=DATA + 64, act_row=0, act_stride=0, act_kstep=0, m=1,
                    k_tiles=k_tiles, acc_row=0, accumulate=int(i > 0))
    prog.end()
    res = run(cfg, mem, prog)
    total = n_calls * k_tiles * R * 128 * 128
    assert total > 2**31
    want = (total + 2**31) % 2**32 - 2**31
    assert list(res.acc[0]) == [want] * C


# ---------------------------------------------------------------------------------------
# STORE


def store_setup(cfg, rng, m):
    """A program filling accumulator rows 0..m-1 with large values and loading parameter
    slot 2; returns (prog, mem, acc rows, bias, mult, shift)."""
    R, C = cfg.rows, cfg.cols
    mem = image(DATA + 64 * 1024, rng)
    prog = Program()
    act = fill_act(cfg, prog, mem, rng, m)
    waddr = DATA + 16 * 1024
    k_tiles = 4
    w = rng.integers(-128, 128, (k_tiles, R, C))
    mem[waddr:waddr + w.size] = int8_bytes(w)
    bias = rng.integers(-(1 << 12), 1 << 12, C)
    mult = rng.integers(1 << 29, 1 << 31, C)
    shift = rng.integers(37, 41, C)
    paddr = DATA + 32 * 1024
    blob = struct.pack(f"<{C}i{C}I{C}I", *bias, *mult, *shift)
    mem[paddr:paddr + len(blob)] = np.frombuffer(blob, np.uint8)
    prog.load_param(dram_addr=paddr, n_tiles=1, param_tile=2)
    prog.fence()
    prog.matmul(weight_addr=waddr, act_row=0, act_stride=1, act_kstep=0, m=m,
                k_tiles=k_tiles, acc_row=0, accumulate=0)
    prog.fence()
    acc = act @ w.sum(axis=0)
    return prog, mem, acc, bias, mult, shift


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=lambda c: c.name)
@pytest.mark.parametrize("relu", [0, 1])
def test_store_to_memory_with_stride(cfg, relu, rng):
    C = cfg.cols
    m = 6
    prog, mem, acc, bias, mult, shift = store_setup(cfg, rng, m)
    out, stride = DATA + 48 * 1024, 3 * cfg.bus_bytes
    prog.store(acc_row=0, m=m, param_tile=2, dram_addr=out, dram_stride=stride, relu=relu)
    prog.end()
    res = run(cfg, mem, prog)
    before = mem.copy()
    assert res.error == E.NONE
    y = requant.requantize(acc, bias, mult, shift, bool(relu))
    # Not a trivial case: positive, negative (or zero under ReLU) and unsaturated values.
    assert (y > 0).any() and ((y == 0) if relu else (y < 0)).any() and (abs(y) < 127).any()
    want = before.copy()
    for r in range(m):
        want[out + r * stride:out + r * stride + C] = int8_bytes(y[r])
    assert np.array_equal(res.mem, want)
    assert res.dma_write_bytes == m * C
    assert not (res.act[m:]).any()


def test_store_overlapping_rows_later_wins(rng):
    cfg = TINY
    m = 3
    prog, mem, acc, bias, mult, shift = store_setup(cfg, rng, m)
    out = DATA + 48 * 1024
    prog.store(acc_row=0, m=m, param_tile=2, dram_addr=out, dram_stride=0)
    prog.end()
    res = run(cfg, mem, prog)
    y = requant.requantize(acc, bias, mult, shift)
    assert np.array_equal(res.mem[out:out + cfg.cols].view(np.int8), y[-1])


@pytest.mark.parametrize("relu", [0, 1])
def test_store_to_buffer(relu, rng):
    cfg = DEFAULT
    m = 5
    prog, mem, acc, bias, mult, shift = store_setup(cfg, rng, m)
    buf_row = cfg.act_buf_rows - m
    prog.store(acc_row=0, m=m, param_tile=2, buf_row=buf_row, to_buf=1, relu=relu,
               dram_addr=1, dram_stride=3)         # ignored: nothing goes to memory
    prog.end()
    res = run(cfg, mem, prog)
    before = mem.copy()
    assert res.error == E.NONE
    y = requant.requantize(acc, bias, mult, shift, bool(relu))
    if relu:
        assert (y >= 0).all()
    assert np.array_equal(res.act[buf_row:], y)
    assert np.array_equal(res.mem, before)
    assert res.dma_write_bytes == 0


@pytest.mark.parametrize("stride_rows", [1, 3])
def test_raw_store_writes_the_int32_accumulators(stride_rows, rng):
    """A raw STORE writes each accumulator row as C little-endian int32 (parameters and
    relu unused); rows ``dram_stride`` apart; the window covers the last row's 4C bytes."""
    cfg = DEFAULT
    m = 5
    prog, mem, acc, *_ = store_setup(cfg, rng, m)
    row = 4 * cfg.cols
    out = DATA + 48 * 1024
    prog.store(acc_row=0, m=m, param_tile=2, raw=1, relu=1, dram_addr=out,
               dram_stride=row * stride_rows)
    prog.end()
    res = run(cfg, mem, prog)
    before = mem.copy()                            # run() wrote the program into mem
    assert res.error == E.NONE and res.dma_write_bytes == m * row
    for r in range(m):
        got = res.mem[out + r * row * stride_rows:][:row].view("<i4")
        assert np.array_equal(got, acc[r])
    written = np.zeros(len(mem), bool)
    for r in range(m):
        written[out + r * row * stride_rows:][:row] = True
    assert np.array_equal(res.mem[~written], before[~written])
    # The last row's last byte must fit the window; to_buf with raw is refused.
    for fields, error in ((dict(dram_addr=len(mem) - row), E.NONE),
                          (dict(dram_addr=len(mem) - row + cfg.bus_bytes), E.DMA_WINDOW),
                          (dict(dram_addr=out, to_buf=1), E.BAD_BUFFER)):
        p = Program()
        p.store(acc_row=0, m=1, param_tile=0, raw=1, dram_stride=row, **fields)
        p.end()
        assert run(cfg, mem, p).error == error, fields


def test_store_unloaded_slot_gives_zero(rng):
    cfg = TINY
    prog, mem, acc, *_ = store_setup(cfg, rng, 2)
    prog.store(acc_row=0, m=2, param_tile=7, buf_row=500, to_buf=1)
    prog.end()
    res = run(cfg, mem, prog)
    assert acc.any() and not res.act[500:502].any()


# ---------------------------------------------------------------------------------------
# The worked example: a whole GEMM with requantization


def gemm_program(cfg, m, k, n, *, a_addr, w_addr, p_addr, out_addr, relu):
    """Load A, the parameters; one MATMUL and one STORE per N-tile, ordered by tokens."""
    R, C = cfg.rows, cfg.cols
    kt, nt = -(-k // R), -(-n // C)
    p = Program()
    # Row r of A, K-tile i -> buffer row r + i*m: MATMUL walks K with act_kstep = m.
    p.load_act(dram_addr=a_addr, dram_stride=kt * R, rows=m, row_beats=kt, buf_row=0,
               buf_row_step=1, buf_beat_step=m)
    p.load_param(dram_addr=p_addr, n_tiles=nt, param_tile=0, push_next=1)
    for j in range(nt):
        p.matmul(weight_addr=w_addr + j * kt * R * C, act_row=0, act_stride=1, act_kstep=m,
                 m=m, k_tiles=kt, acc_row=j * m, pop_prev=int(j == 0), push_next=1)
        p.store(acc_row=j * m, m=m, param_tile=j, dram_addr=out_addr + j * C,
                dram_stride=nt * C, relu=relu, pop_prev=1)
    p.end()
    return p


@pytest.mark.parametrize("cfg,m,k,n", [(TINY, 5, 9, 7), (TINY, 1, 4, 4),
                                       (DEFAULT, 7, 40, 33), (DEFAULT, 16, 16, 16)],
                         ids=["tiny-5x9x7", "tiny-1x4x4", "default-7x40x33",
                              "default-16x16x16"])
@pytest.mark.parametrize("relu", [0, 1])
def test_gemm_example(cfg, m, k, n, relu, rng):
    R, C = cfg.rows, cfg.cols
    kt, nt = -(-k // R), -(-n // C)
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    a.flat[0], w.flat[0] = -128, -128
    bias = rng.integers(-(1 << 16), 1 << 16, n)
    mult, shift = zip(*(requant.quantize_multiplier(s)
                        for s in rng.uniform(1e-4, 4e-3, n)))
    mult, shift = np.array(mult), np.array(shift)
    a_addr, w_addr = DATA, DATA + 4096
    p_addr = w_addr + nt * kt * R * C
    out_addr = p_addr + nt * isa.PARAM_BEATS * cfg.bus_bytes
    size = out_addr + m * nt * C + 256
    mem = image(size, rng)
    a_rows = np.zeros((m, kt * R), np.int8)            # row r: K bytes, zero padded
    a_rows[:, :k] = a
    mem[a_addr:a_addr + a_rows.size] = a_rows.view(np.uint8).ravel()
    mem[w_addr:p_addr] = pack_weights(w, cfg)
    mem[p_addr:out_addr] = pack_params(bias, mult, shift, cfg)
    prog = gemm_program(cfg, m, k, n, a_addr=a_addr, w_addr=w_addr, p_addr=p_addr,
                        out_addr=out_addr, relu=relu)
    res = run(cfg, mem, prog)
    before = mem.copy()
    assert res.error == E.NONE and res.error_insn is None
    want = requant.requantize(golden.matmul(a, w), bias, mult, shift, bool(relu))
    assert (want != 0).any() and (abs(want.astype(int)) < 127).any()   # not degenerate
    got = res.mem[out_addr:out_addr + m * nt * C].view(np.int8).reshape(m, nt * C)
    assert np.array_equal(got[:, :n], want)
    # Nothing but the output block changed.
    changed = np.flatnonzero(res.mem != before)
    assert changed.size == 0 or (changed.min() >= out_addr
                                 and changed.max() < out_addr + m * nt * C)
    # Counters.
    assert res.instructions == len(prog) == 3 + 2 * nt
    assert res.macs == nt * m * kt * R * C
    assert res.array_rows == nt * m * kt
    assert res.dma_read_bytes == (32 * len(prog) + m * kt * R + nt * kt * R * C
                                  + nt * isa.PARAM_BEATS * cfg.bus_bytes)
    assert res.dma_write_bytes == m * nt * C
    assert [o["op"] for o in res.ops] == ["LOAD_ACT", "LOAD_PARAM"] + \
        ["MATMUL", "STORE"] * nt + ["END"]
    assert res.tokens == NO_TOKENS


# ---------------------------------------------------------------------------------------
# Errors


def assert_stopped(res, mem_before, error, insn, retired):
    assert res.error == error
    assert res.error_insn == insn
    assert res.instructions == retired
    assert np.array_equal(res.mem, mem_before)


def test_bad_opcode_on_zeroed_memory():
    cfg = TINY
    mem = image(4096)
    res = run_program(cfg, mem, 0, 10)
    assert_stopped(res, mem, E.BAD_OPCODE, 0, 0)
    assert res.dma_read_bytes == 32                   # the fetch happened
    assert not res.act.any() and not res.acc.any()


@pytest.mark.parametrize("opcode", [0, 8, 9, 15])
def test_bad_opcode_after_good_instructions(opcode, rng):
    cfg = TINY
    mem = image(DATA + 1024, rng)
    prog = Program()
    prog.load_act(dram_addr=DATA, dram_stride=4, rows=3, row_beats=1, buf_row=0,
                  buf_row_step=1, buf_beat_step=0)
    prog.fence()
    raw = bytearray(isa.encode(isa.Op.END))
    raw[0] = (raw[0] & 0xF0) | opcode
    prog.raw(raw)
    prog.end()
    res = run(cfg, mem, prog)
    before = mem.copy()
    assert_stopped(res, before, E.BAD_OPCODE, 2, 2)
    # The LOAD_ACT before the fault kept its effect.
    assert np.array_equal(res.act[:3].ravel(), mem[DATA:DATA + 12].view(np.int8))


def acc_rows(cfg):
    return 2 * cfg.acc_buf_rows


# (builder, fields that exactly fit, a field to bump by one to overflow): each case is
# checked both ways so the limit is pinned exactly.
def buffer_cases(cfg):
    A, P, Q = cfg.act_buf_rows, cfg.param_tiles, acc_rows(cfg)
    la = dict(dram_addr=DATA, dram_stride=0, rows=3, row_beats=2, buf_row_step=5,
              buf_beat_step=7)
    mm = dict(weight_addr=DATA, m=3, k_tiles=2, act_stride=4, act_kstep=9)
    st_ = dict(dram_addr=DATA, dram_stride=cfg.bus_bytes)
    return [
        ("load_act", dict(la, buf_row=A - 1 - 2 * 5 - 7), "buf_row"),
        ("load_act", dict(la, buf_row=A - 1 - 2 * 5 - 7), "buf_row_step"),
        ("load_act", dict(la, buf_row=A - 1 - 2 * 5 - 7), "buf_beat_step"),
        ("load_param", dict(dram_addr=DATA, n_tiles=2, param_tile=P - 2), "param_tile"),
        ("load_param", dict(dram_addr=DATA, n_tiles=2, param_tile=P - 2), "n_tiles"),
        ("matmul", dict(mm, act_row=A - 1 - 9 - 2 * 4, acc_row=0), "act_row"),
        ("matmul", dict(mm, act_row=A - 1 - 9 - 2 * 4, acc_row=0), "act_kstep"),
        ("matmul", dict(mm, act_row=A - 1 - 9 - 2 * 4, acc_row=0), "act_stride"),
        ("matmul", dict(mm, act_row=0, acc_row=Q - 3), "acc_row"),
        ("matmul", dict(mm, act_row=0, acc_row=Q - 3), "m"),
        ("store", dict(st_, acc_row=Q - 3, m=3, param_tile=0), "acc_row"),
        ("store", dict(st_, acc_row=0, m=3, param_tile=P - 1), "param_tile"),
        ("store", dict(acc_row=0, m=3, param_tile=0, to_buf=1, buf_row=A - 3), "buf_row"),
        ("store", dict(acc_row=0, m=3, param_tile=0, to_buf=1, buf_row=A - 3), "m"),
    ]


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=lambda c: c.name)
def test_bad_buffer_limits(cfg, rng):
    mem = image(DATA + 64 * 1024, rng)
    for builder, fields, bump in buffer_cases(cfg):
        for extra, error in ((0, E.NONE), (1, E.BAD_BUFFER)):
            prog = Program()
            prog.fence()
            getattr(prog, builder)(**dict(fields, **{bump: fields[bump] + extra}))
            prog.end()
            m = mem.copy()
            res = run(cfg, m, prog)
            assert res.error == error, (builder, bump, extra)
            if error != E.NONE:
                assert_stopped(res, m, error, 1, 1)
                assert not res.act.any() and not res.acc.any() and not res.params.mult.any()


def test_store_buf_row_ignored_when_not_to_buf(rng):
    cfg = TINY
    mem = image(DATA + 1024, rng)
    prog = Program()
    prog.store(acc_row=0, m=2, param_tile=0, dram_addr=DATA, dram_stride=4, buf_row=0xFFFF)
    prog.end()
    assert run(cfg, mem, prog).error == E.NONE


@pytest.mark.parametrize("builder,fields,zero", [
    ("load_act", dict(dram_addr=DATA, dram_stride=4, rows=2, row_beats=2, buf_row=0,
                      buf_row_step=2, buf_beat_step=1), "rows"),
    ("load_act", dict(dram_addr=DATA, dram_stride=4, rows=2, row_beats=2, buf_row=0,
                      buf_row_step=2, buf_beat_step=1), "row_beats"),
    ("load_param", dict(dram_addr=DATA, n_tiles=1, param_tile=0), "n_tiles"),
    ("matmul", dict(weight_addr=DATA, act_row=0, act_stride=1, act_kstep=0, m=2, k_tiles=1,
                    acc_row=0), "m"),
    ("matmul", dict(weight_addr=DATA, act_row=0, act_stride=1, act_kstep=0, m=2, k_tiles=1,
                    acc_row=0), "k_tiles"),
    ("store", dict(dram_addr=DATA, dram_stride=4, acc_row=0, m=1, param_tile=0), "m"),
])
def test_bad_count(builder, fields, zero, rng):
    cfg = TINY
    mem = image(DATA + 1024, rng)
    prog = Program()
    getattr(prog, builder)(**fields)                     # valid: it runs
    getattr(prog, builder)(**dict(fields, **{zero: 0}))
    prog.end()
    res = run(cfg, mem, prog, check_deps=False)
    before = mem.copy()
    if builder == "store":
        before[DATA:DATA + cfg.cols] = 0     # the valid STORE's output: zeros (no params)
    assert_stopped(res, before, E.BAD_COUNT, 1, 1)


def test_bad_count_before_bad_buffer():
    cfg = TINY
    prog = Program()
    prog.load_act(dram_addr=DATA, dram_stride=4, rows=0, row_beats=1, buf_row=0xFFFF,
                  buf_row_step=0, buf_beat_step=0)
    assert run(cfg, image(DATA + 64), prog).error == E.BAD_COUNT


def dma_cases(cfg):
    """For each DMA-using instruction: (fields given its first byte's address, the span
    in bytes from its first to its last byte + 1)."""
    bb, R, C = cfg.bus_bytes, cfg.rows, cfg.cols
    la_bytes = 2 * 3 * bb + 2 * bb                    # rows=3, stride 3 beats, 2 beats
    return {
        "load_act": (lambda a: dict(dram_addr=a, dram_stride=3 * bb, rows=3, row_beats=2,
                                    buf_row=0, buf_row_step=2, buf_beat_step=1),
                     la_bytes),
        "load_param": (lambda a: dict(dram_addr=a, n_tiles=2, param_tile=0),
                       2 * isa.PARAM_BEATS * bb),
        "matmul": (lambda a: dict(weight_addr=a, act_row=0, act_stride=1, act_kstep=1, m=2,
                                  k_tiles=3, acc_row=0), 3 * R * C),
        "store": (lambda a: dict(dram_addr=a, dram_stride=2 * bb, acc_row=0, m=3,
                                 param_tile=0), 2 * 2 * bb + C),
    }


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=lambda c: c.name)
@pytest.mark.parametrize("builder", ["load_act", "load_param", "matmul", "store"])
def test_dma_window_at_base_and_limit(cfg, builder, rng):
    bb = cfg.bus_bytes
    base, limit = DATA, DATA + 8192
    mem = image(limit + 4096, rng)
    fields_at, nbytes = dma_cases(cfg)[builder]
    cases = [   # (first byte, window [base + db, limit + dl), expected)
        (base, 0, 0, E.NONE),                          # first byte at base
        (base - bb, 0, 0, E.DMA_WINDOW),               # one beat below base
        (base, 1, 0, E.DMA_WINDOW),                    # one byte below base
        (limit - nbytes, 0, 0, E.NONE),                # last byte at limit - 1
        (limit - nbytes + bb, 0, 0, E.DMA_WINDOW),     # one beat beyond
        (limit - nbytes, 0, -1, E.DMA_WINDOW),         # last byte at limit
        (2**32 - bb, 0, 0, E.DMA_WINDOW),              # beyond 32 bits: never wraps
    ]
    for addr, db, dl, error in cases:
        prog = Program()
        prog.fence()
        getattr(prog, builder)(**fields_at(addr))
        prog.end()
        m = mem.copy()
        # The program lies inside the window, in the middle, away from the data.
        res = run(cfg, m, prog, prog_addr=base + 4096, base=base + db, limit=limit + dl)
        assert res.error == error, (builder, addr, db, dl)
        if error != E.NONE:
            assert res.error_insn == 1 and res.instructions == 1
            assert np.array_equal(res.mem, m)
            assert not res.act.any() and not res.acc.any() and not res.params.mult.any()
            assert res.dma_read_bytes == 2 * 32


def test_dma_window_store_to_memory_only():
    """A STORE to the buffer touches no memory, so its dram_addr is not checked."""
    cfg = TINY
    prog = Program()
    prog.store(acc_row=0, m=1, param_tile=0, dram_addr=2**32 - 3, dram_stride=7, to_buf=1,
               buf_row=0)
    prog.end()
    assert run(cfg, image(DATA), prog).error == E.NONE


@pytest.mark.parametrize("builder,what", [
    ("load_act", "addr"), ("load_act", "stride"), ("load_param", "addr"),
    ("matmul", "addr"), ("store", "addr"), ("store", "stride")])
def test_dma_align(builder, what, rng):
    cfg = DEFAULT
    fields_at, _ = dma_cases(cfg)[builder]
    fields = fields_at(DATA)
    addr_key = "weight_addr" if builder == "matmul" else "dram_addr"
    if what == "addr":
        fields[addr_key] += cfg.bus_bytes // 2
    else:
        fields["dram_stride"] += 1
    mem = image(DATA + 64 * 1024, rng)
    prog = Program()
    prog.fence()
    getattr(prog, builder)(**fields)
    prog.end()
    res = run(cfg, mem, prog)
    before = mem.copy()
    assert_stopped(res, before, E.DMA_ALIGN, 1, 1)


def test_dma_align_checked_before_window():
    cfg = TINY
    prog = Program()
    prog.load_param(dram_addr=2**32 - 2, n_tiles=1, param_tile=0)
    assert run(cfg, image(DATA), prog).error == E.DMA_ALIGN


def test_fetch_errors(rng):
    cfg = DEFAULT
    mem = image(DATA, rng)
    prog = Program()
    prog.fence()
    prog.fence()
    prog.end()
    code = np.frombuffer(bytes(prog), np.uint8)
    # Misaligned program address.
    m = mem.copy()
    m[1024 + 8:1024 + 8 + 96] = code
    res = run_program(cfg, m, 1024 + 8, 3)
    assert_stopped(res, m, E.DMA_ALIGN, 0, 0)
    assert res.dma_read_bytes == 0
    # Program straddling the limit: instruction 2 is fetched from beyond it.
    m = mem.copy()
    m[1024:1024 + 96] = code
    res = run_program(cfg, m, 1024, 3, limit=1024 + 64)
    assert_stopped(res, m, E.DMA_WINDOW, 2, 2)
    assert res.dma_read_bytes == 64
    # Exactly fitting below the limit is fine; the program below base is not.
    assert run_program(cfg, m, 1024, 3, limit=1024 + 96).error == E.NONE
    res = run_program(cfg, m, 1024, 3, base=1024 + 16)
    assert_stopped(res, m, E.DMA_WINDOW, 0, 0)
    # Beyond the end of the image with limit None.
    m[len(m) - 32:] = code[:32]
    res = run_program(cfg, m, len(m) - 32, 2)
    assert_stopped(res, m, E.DMA_WINDOW, 1, 1)
    res = run_program(cfg, m, len(m), 1)
    assert_stopped(res, m, E.DMA_WINDOW, 0, 0)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_no_end(n, rng):
    cfg = TINY
    mem = image(DATA + 64, rng)
    prog = Program()
    for _ in range(n):
        prog.fence()
    prog.end()                              # beyond n_insns: never reached
    before = mem.copy()
    before[:len(bytes(prog))] = np.frombuffer(bytes(prog), np.uint8)
    res = run(cfg, mem, prog, n_insns=n)
    assert_stopped(res, before, E.NO_END, n, n)
    assert res.dma_read_bytes == 32 * n


def test_error_keeps_earlier_outputs(rng):
    """A STORE before a faulting instruction keeps its output; nothing else changes."""
    cfg = TINY
    m = 4
    prog, mem, acc, bias, mult, shift = store_setup(cfg, rng, m)
    out = DATA + 48 * 1024
    prog.store(acc_row=0, m=m, param_tile=2, dram_addr=out, dram_stride=4)
    prog.fence()
    prog.store(acc_row=0, m=m, param_tile=2, dram_addr=out + 64, dram_stride=4,
               buf_row=0)
    prog.store(acc_row=0, m=m, param_tile=cfg.param_tiles, dram_addr=out + 128,
               dram_stride=4)
    prog.end()
    res = run(cfg, mem, prog)
    before = mem.copy()
    assert res.error == E.BAD_BUFFER and res.error_insn == len(prog) - 2
    y = int8_bytes(requant.requantize(acc, bias, mult, shift))
    want = before.copy()
    want[out:out + 16] = y
    want[out + 64:out + 80] = y
    assert np.array_equal(res.mem, want)


# ---------------------------------------------------------------------------------------
# Dependency tokens


def test_deadlock_pop_without_push():
    prog = Program()
    prog.load_act(dram_addr=DATA, dram_stride=4, rows=1, row_beats=1, buf_row=0,
                  buf_row_step=0, buf_beat_step=0)
    prog.matmul(weight_addr=DATA, act_row=0, act_stride=0, act_kstep=0, m=1, k_tiles=1,
                acc_row=0, pop_prev=1)
    prog.end()
    with pytest.raises(DeadlockError, match=r"insn 1 MATMUL \(exec unit\) waits for a token "
                                            r"on load->exec") as info:
        check_tokens(prog)
    assert info.value.stuck == [1, 2]
    with pytest.raises(DeadlockError):
        run(TINY, image(DATA + 64), prog)


def test_deadlock_push_behind_fence():
    """The matching push exists, but behind a FENCE that waits for the popping unit."""
    prog = Program()
    prog.store(acc_row=0, m=1, param_tile=0, dram_addr=DATA, dram_stride=0, pop_prev=1)
    prog.fence()
    prog.matmul(weight_addr=DATA, act_row=0, act_stride=0, act_kstep=0, m=1, k_tiles=1,
                acc_row=0, push_next=1)
    prog.end()
    with pytest.raises(DeadlockError, match="dispatcher at insn 1 FENCE waits for the units"):
        check_tokens(prog)
    # Without the FENCE the store waits, the MATMUL pushes, and all completes.
    ok = Program()
    ok.store(acc_row=0, m=1, param_tile=0, dram_addr=DATA, dram_stride=0, pop_prev=1)
    ok.matmul(weight_addr=DATA, act_row=0, act_stride=0, act_kstep=0, m=1, k_tiles=1,
              acc_row=0, push_next=1)
    ok.end()
    assert check_tokens(ok) == NO_TOKENS


def test_deadlock_full_queue():
    """With 1-entry queues the dispatcher blocks on a busy exec queue before it reaches
    the load that would unblock it."""
    prog = Program()
    for _ in range(2):
        prog.matmul(weight_addr=DATA, act_row=0, act_stride=0, act_kstep=0, m=1,
                    k_tiles=1, acc_row=0, pop_prev=1)
    prog.load_act(dram_addr=DATA, dram_stride=0, rows=1, row_beats=1, buf_row=1,
                  buf_row_step=0, buf_beat_step=0, push_next=1)
    prog.load_act(dram_addr=DATA, dram_stride=0, rows=1, row_beats=1, buf_row=1,
                  buf_row_step=0, buf_beat_step=0, push_next=1)
    prog.end()
    assert check_tokens(prog)["load->exec"] == 0
    with pytest.raises(DeadlockError, match="waits for room in the exec queue"):
        check_tokens(prog, queue_depth=1)
    with pytest.raises(ValueError, match="queue_depth must be None or a positive integer, "
                                         "not 0"):
        check_tokens(prog, queue_depth=0)


def test_tokens_ignored_flags_and_leftovers():
    """LOAD's pop_prev/push_prev and STORE's pop_next/push_next name absent units."""
    prog = Program()
    prog.load_param(dram_addr=DATA, n_tiles=1, param_tile=0, pop_prev=1, push_prev=1,
                    push_next=1)
    prog.store(acc_row=0, m=1, param_tile=0, dram_addr=DATA, dram_stride=0, pop_next=1,
               push_next=1, push_prev=1)
    prog.end()
    assert check_tokens(prog) == NO_TOKENS | {"load->exec": 1, "store->exec": 1}


def test_race_without_tokens(rng):
    """A MATMUL reading rows a LOAD_ACT writes, with no token between them, is a race;
    the token (or a FENCE) makes it legal and gives the program-order result."""
    cfg = TINY
    mem = image(DATA + 1024, rng)

    def build(sync):
        p = Program()
        p.load_act(dram_addr=DATA, dram_stride=4, rows=2, row_beats=1, buf_row=0,
                   buf_row_step=1, buf_beat_step=0, push_next=int(sync == "token"))
        if sync == "fence":
            p.fence()
        p.matmul(weight_addr=DATA + 64, act_row=0, act_stride=1, act_kstep=0, m=2,
                 k_tiles=1, acc_row=0, pop_prev=int(sync == "token"))
        p.end()
        return p

    with pytest.raises(RaceError, match="insn 1 MATMUL reads act row 0 that insn 0 "
                                        "LOAD_ACT touched") as info:
        check_races(cfg, build(None))
    assert (info.value.first, info.value.second) == (0, 1)
    with pytest.raises(RaceError):
        run(cfg, mem.copy(), build(None))
    a = mem[DATA:DATA + 8].view(np.int8).reshape(2, 4).astype(np.int64)
    w = mem[DATA + 64:DATA + 80].view(np.int8).reshape(4, 4).astype(np.int64)
    for sync in ("token", "fence"):
        res = run(cfg, mem.copy(), build(sync))
        assert res.error == E.NONE and np.array_equal(res.acc[:2], a @ w)
    # The model alone (checks off) still runs the racy program in program order.
    res = run(cfg, mem.copy(), build(None), check_deps=False)
    assert np.array_equal(res.acc[:2], a @ w)


def test_race_write_after_read_and_transitive_order():
    cfg = TINY
    # exec reads act row 0, then a later load overwrites it without waiting: a race.
    p = Program()
    p.matmul(weight_addr=DATA, act_row=0, act_stride=0, act_kstep=0, m=1, k_tiles=1,
             acc_row=0)
    p.load_act(dram_addr=DATA, dram_stride=0, rows=1, row_beats=1, buf_row=0,
               buf_row_step=0, buf_beat_step=0)
    p.end()
    with pytest.raises(RaceError, match="insn 1 LOAD_ACT writes act row 0"):
        check_races(cfg, p)
    # Store writes memory that a later LOAD_ACT reads: ordered through exec by tokens.
    q = Program()
    q.store(acc_row=0, m=1, param_tile=0, dram_addr=DATA, dram_stride=0, push_prev=1)
    q.matmul(weight_addr=DATA + 64, act_row=5, act_stride=0, act_kstep=0, m=1, k_tiles=1,
             acc_row=9, pop_next=1, push_prev=1)
    q.load_act(dram_addr=DATA, dram_stride=0, rows=1, row_beats=1, buf_row=0,
               buf_row_step=0, buf_beat_step=0, pop_next=1)
    q.end()
    check_races(cfg, q)
    # A MATMUL's weights are read at dispatch: a token cannot order a store before them.
    r = Program()
    r.store(acc_row=0, m=1, param_tile=0, dram_addr=DATA, dram_stride=0, push_prev=1)
    r.matmul(weight_addr=DATA, act_row=5, act_stride=0, act_kstep=0, m=1, k_tiles=1,
             acc_row=9, pop_next=1)
    r.end()
    with pytest.raises(RaceError, match="insn 1 MATMUL reads memory beat"):
        check_races(cfg, r)


def test_a_stores_fence_orders_the_stores_alone():
    """``FENCE stores`` orders every earlier ``STORE`` (its memory writes) before what
    follows, and nothing else: a weight read after it is ordered, a write over rows an
    earlier ``VEC`` reads is not (a full ``FENCE`` orders both)."""
    cfg = TINY

    def build(fence, vec_first):
        p = Program()
        if vec_first:
            p.vec(vop=isa.VecOp.ADD, a_row=0, b_row=1, dst_row=2, rows=1)
        p.store(acc_row=0, m=1, param_tile=0, dram_addr=DATA, dram_stride=0)
        if fence:
            p.fence(stores=int(fence == "stores"))
        p.matmul(weight_addr=DATA, act_row=5, act_stride=0, act_kstep=0, m=1, k_tiles=1,
                 acc_row=9)
        if vec_first:
            p.load_act(dram_addr=DATA + 64, dram_stride=0, rows=1, row_beats=1, buf_row=0,
                       buf_row_step=0, buf_beat_step=0)
        p.end()
        return p

    with pytest.raises(RaceError, match="MATMUL reads memory beat"):
        check_races(cfg, build(None, False))
    check_races(cfg, build("stores", False))
    check_races(cfg, build("all", False))
    with pytest.raises(RaceError, match="insn 4 LOAD_ACT writes act row 0 that insn 0 VEC"):
        check_races(cfg, build("stores", True))
    check_races(cfg, build("all", True))


# ---------------------------------------------------------------------------------------
# Arguments


def test_argument_checks():
    mem = image(256)
    with pytest.raises(TypeError, match="cfg must be a Config, not 'tiny'"):
        run_program("tiny", mem, 0, 1)
    with pytest.raises(ValueError, match="prog_addr must be a non-negative integer, not -1"):
        run_program(TINY, mem, -1, 1)
    with pytest.raises(ValueError, match="n_insns must be a non-negative integer, not 1.0"):
        run_program(TINY, mem, 0, 1.0)
    with pytest.raises(ValueError, match="base must be a non-negative integer, not -4"):
        run_program(TINY, mem, 0, 1, base=-4)
    with pytest.raises(ValueError, match=r"limit must be None or an integer in "
                                         r"\[base, len\(mem\)\] = \[0, 256\], not 257"):
        run_program(TINY, mem, 0, 1, limit=257)
    with pytest.raises(TypeError, match="mem must be a 1-D numpy uint8 array or bytes"):
        run_program(TINY, mem.astype(np.int8), 0, 1)
    with pytest.raises(TypeError, match="cfg must be a Config"):
        pack_weights(np.zeros((1, 1), np.int8), None)


def test_input_image_not_modified_and_bytes_accepted(rng):
    cfg = TINY
    mem = image(DATA + 64, rng)
    prog = Program()
    prog.store(acc_row=0, m=1, param_tile=0, dram_addr=DATA, dram_stride=0)
    prog.end()
    code = prog.to_array()
    mem[:len(code)] = code
    before = mem.copy()
    res = run_program(cfg, mem, 0, len(prog))
    assert np.array_equal(mem, before)
    assert not res.mem[DATA:DATA + 4].any() and res.mem[DATA:DATA + 4].dtype == np.uint8
    res2 = run_program(cfg, bytes(mem), 0, len(prog))
    assert np.array_equal(res.mem, res2.mem)


def test_machine_is_steppable(rng):
    cfg = Config(name="odd", rows=8, cols=8, act_buf_rows=40, acc_buf_rows=3,
                 weight_fifo_rows=16, bus_bytes=8, param_tiles=2, weight_block=8)
    machine = Machine(cfg, image(4096, rng))
    assert machine.act.shape == (40, 8) and machine.acc.shape == (6, 8)
    assert machine.params.bias.shape == (2, 8)
    ok = isa.encode(isa.Op.MATMUL, weight_addr=0, act_row=39, act_stride=0, act_kstep=0,
                    m=6, k_tiles=1, acc_row=0)
    bad = isa.encode(isa.Op.MATMUL, weight_addr=0, act_row=0, act_stride=0, act_kstep=0,
                     m=7, k_tiles=1, acc_row=0)
    assert machine.execute(ok) == E.NONE and machine.instructions == 1
    assert machine.execute(bad) == E.BAD_BUFFER and machine.instructions == 1
    assert machine.macs == 6 * 64
