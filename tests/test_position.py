"""Position-relative instructions (``hw/isa.py``, "Position-relative instructions"): one
program whose addresses, tile counts and softmax length follow the ``position`` register,
and whose guarded instructions run only at positions that reach their tile.

The expectation is the same program written out by hand for each position (every field
as the specification says the position makes it, the guarded instructions kept or
dropped); the golden model runs both, and every backend runs the position-relative one.
"""

import numpy as np
import pytest

from serrano.hw import isa, regs
from serrano.hw.config import get_preset
from serrano.sw import isa_model, requant
from serrano.sw.isa_model import Program
from serrano.sw.runtime import Device

TINY = get_preset("tiny")
MEM = 1 << 16
ROWS = 8                          # activation rows loaded from the position on
TILES = 8                         # guarded stores, one per tile of 4 positions
SHR = 2                           # a tile of R = 4 positions
PARAM_SPACING = 64                # parameter sets 64 bytes apart (a power of two)


def _layout(cfg, rng):
    """The device memory: a table of rows (one bus beat each), weights, parameter sets,
    zero rows and the output regions; ``(image, addresses)``."""
    R, C, B = cfg.rows, cfg.cols, cfg.bus_bytes
    at, parts = {}, []

    def put(name, data):
        at[name] = sum(len(p) for p in parts)
        data = np.asarray(data, np.uint8).ravel()
        parts.append(np.concatenate([data, np.zeros(-len(data) % 64, np.uint8)]))

    put("table", rng.integers(-128, 128, (64, B)).astype(np.int8).view(np.uint8))
    w = rng.integers(-128, 128, (TILES * R, C))
    put("weights", isa_model.pack_weights(w, cfg))
    put("eye", isa_model.pack_weights(np.eye(R, C, dtype=np.int64), cfg))
    sets = []
    for s in range(4):
        bias = rng.integers(-1000, 1000, C)
        mult = rng.integers(1 << 20, 1 << 30, C)
        shift = rng.integers(30, 40, C)
        p = isa_model.pack_params(bias, mult, shift, cfg)
        sets.append(np.concatenate([p, np.zeros(PARAM_SPACING - len(p), np.uint8)]))
    put("params", np.concatenate(sets))
    put("zeros", np.zeros(ROWS * B, np.uint8))
    put("out_raw", np.zeros(64 * 4 * C, np.uint8))
    put("out_guard", np.zeros(TILES * 4 * C, np.uint8))
    put("out_q", np.zeros(64 * C, np.uint8))
    put("out_soft", np.zeros(ROWS * 4 * C, np.uint8))
    put("end", np.zeros(64, np.uint8))
    return np.concatenate(parts), at


def _program(cfg, at, position=None):
    """The test program: position-relative (``position`` None) or written out for
    ``position``. FENCEs order its stages (no tokens)."""
    C = cfg.cols
    rel = position is None
    P = position or 0
    t = P >> SHR

    prog = Program()
    # Rows ROWS..: zeros for the softmax's results (the rows it leaves are read too).
    prog.load_act(dram_addr=at["zeros"], dram_stride=cfg.bus_bytes, rows=ROWS, row_beats=1,
                  buf_row=ROWS, buf_row_step=1, buf_beat_step=0)
    # Table rows P .. P + ROWS - 1 to buffer rows 0 ..: dram_addr + (P << 2).
    load = dict(dram_stride=cfg.bus_bytes, rows=ROWS, row_beats=1, buf_row=0,
                buf_row_step=1, buf_beat_step=0)
    if rel:
        prog.load_act(dram_addr=at["table"], **load, at=dict(rel=1, shl=2))
    else:
        prog.load_act(dram_addr=at["table"] + (P << 2), **load)
    # The parameter set of tile t // 2: dram_addr + ((P >> 3) << 6).
    if rel:
        prog.load_param(dram_addr=at["params"], n_tiles=1, param_tile=0,
                        at=dict(rel=1, shr=3, shl=6))
    else:
        prog.load_param(dram_addr=at["params"] + ((P >> 3) << 6), n_tiles=1, param_tile=0)
    prog.fence()
    # One row through 1 + t K-tiles: k_tiles + (P >> 2).
    mm = dict(weight_addr=at["weights"], act_row=0, act_stride=1, act_kstep=1, m=1,
              acc_row=0)
    if rel:
        prog.matmul(k_tiles=1, **mm, at=dict(rel=1, shr=SHR))
    else:
        prog.matmul(k_tiles=1 + t, **mm)
    prog.fence()
    # Its raw sums to out_raw + (P << 4); requantized to out_q + (P << 2).
    raw = dict(acc_row=0, m=1, param_tile=0, raw=1, dram_stride=4 * C)
    q = dict(acc_row=0, m=1, param_tile=0, dram_stride=C)
    if rel:
        prog.store(dram_addr=at["out_raw"], **raw, at=dict(rel=1, shl=4))
        prog.store(dram_addr=at["out_q"], **q, at=dict(rel=1, shl=2))
    else:
        prog.store(dram_addr=at["out_raw"] + (P << 4), **raw)
        prog.store(dram_addr=at["out_q"] + (P << 2), **q)
    # One guarded store per tile g: only where g <= P >> 2.
    for g in range(TILES):
        st = dict(acc_row=0, m=1, param_tile=0, raw=1, dram_stride=4 * C,
                  dram_addr=at["out_guard"] + g * 4 * C)
        if rel:
            prog.store(**st, at=dict(guard=1, shr=SHR, gtile=g))
        elif g <= t:
            prog.store(**st)
    prog.fence()
    # A causal softmax of one vector over 1 + t rows, its first 1 + P elements valid.
    sm = dict(vop=isa.VecOp.SOFTMAX, a_row=0, dst_row=ROWS, count=1, causal=0, mul_a=369,
              shift=8)
    if rel:
        prog.vec(rows=1, length=1, **sm, at=dict(rel=1, shr=SHR))
    else:
        prog.vec(rows=1 + t, length=1 + P, **sm)
    prog.fence()
    # The softmax's rows out through the identity: ROWS rows, raw.
    prog.matmul(weight_addr=at["eye"], act_row=ROWS, act_stride=1, act_kstep=1, m=ROWS,
                k_tiles=1, acc_row=ROWS)
    prog.fence()
    prog.store(acc_row=ROWS, m=ROWS, param_tile=0, raw=1, dram_addr=at["out_soft"],
               dram_stride=4 * C)
    prog.end()
    return prog


POSITIONS = (0, 1, 3, 4, 5, 13, 31)


def test_at_position_follows_the_op_table():
    """Each op's position fields, offset by their terms modulo their widths; a guard
    drops the instruction below its tile; no ``rel``: unchanged."""
    hdr = {"rel": 1, "guard": 0, "shr": 4, "shl": 6, "gtile": 0}
    P = 37
    t = P >> 4
    body = {"dram_addr": 0xFFFF_FFC0, "dram_stride": 64, "rows": 1, "row_beats": 1,
            "buf_row": 0, "buf_row_step": 1, "buf_beat_step": 0}
    got = isa.at_position(isa.Op.LOAD_ACT, hdr, body, P)
    assert got["dram_addr"] == (0xFFFF_FFC0 + (t << 6)) % (1 << 32)
    assert {k: v for k, v in got.items() if k != "dram_addr"} == {
        k: v for k, v in body.items() if k != "dram_addr"}
    vec = {"rows": 0xFFFF, "length": 3, "count": 1}
    got = isa.at_position(isa.Op.VEC, hdr, vec, P)
    assert got == {"rows": (0xFFFF + t) % (1 << 16), "length": 3 + P, "count": 1}
    mm = {"k_tiles": 2, "m": 5}
    assert isa.at_position(isa.Op.MATMUL, hdr, mm, P) == {"k_tiles": 2 + t, "m": 5}
    assert isa.at_position(isa.Op.MATMUL, {**hdr, "rel": 0}, mm, P) == mm
    guard = {**hdr, "rel": 0, "guard": 1, "gtile": t + 1}
    assert isa.at_position(isa.Op.END, guard, {}, P) is None
    assert isa.at_position(isa.Op.END, {**guard, "gtile": t}, {}, P) == {}
    # The header round-trips through the encoding.
    raw = isa.encode(isa.Op.FENCE, rel=1, guard=1, shr=15, shl=31, gtile=2047)
    assert {k: isa.decode_op(raw)[1][k] for k in isa.POSITION_FIELDS} == dict(
        rel=1, guard=1, shr=15, shl=31, gtile=2047)
    with pytest.raises(ValueError, match="gtile=2048 does not fit in 11 bits"):
        isa.encode(isa.Op.FENCE, gtile=2048)
    with pytest.raises(ValueError, match="at= takes rel, guard, shr, shl, gtile, not shift"):
        Program().fence(at={"shift": 1})


@pytest.mark.parametrize("position", POSITIONS)
def test_golden_runs_the_program_as_written_out(position):
    """The golden model at ``position`` runs the position-relative program as the one
    written out for that position: the same memory, the same retired count."""
    image, at = _layout(TINY, np.random.default_rng(7))
    rel = _program(TINY, at)
    out = _program(TINY, at, position)
    results = []
    for prog, pos in ((rel, position), (out, 0)):
        mem = np.concatenate([image, np.zeros(MEM - len(image), np.uint8)])
        addr = len(image)
        mem[addr:addr + len(prog) * isa.INSN_BYTES] = prog.to_array()
        res = isa_model.run_program(TINY, mem, addr, len(prog), position=pos)
        assert res.error == isa.Error.NONE
        results.append(res)
    a, b = results
    assert np.array_equal(a.mem[:len(image)], b.mem[:len(image)])
    assert a.instructions == b.instructions == len(out)
    # Not vacuous: the outputs move with the position.
    C = TINY.cols
    assert a.mem[at["out_raw"] + (position << 4):][:4 * C].any()
    guarded = a.mem[at["out_guard"]:at["out_guard"] + TILES * 4 * C].reshape(TILES, -1)
    assert [bool(r.any()) for r in guarded] == [g <= position >> SHR for g in range(TILES)]
    # The requantized row follows the parameter set of the position (spec: requant).
    acc = np.frombuffer(a.mem[at["out_raw"] + (position << 4):][:4 * C].tobytes(), "<i4")
    p = a.params
    assert np.array_equal(
        a.mem[at["out_q"] + (position << 2):][:C].view(np.int8),
        requant.requantize(acc[None], p.bias[0], p.mult[0], p.shift[0])[0])


def test_every_backend_follows_the_position(backend):
    """The position-relative program on each backend at several positions: memory
    bit-exact against the golden model, the skipped instructions not counted."""
    image, at = _layout(TINY, np.random.default_rng(11))
    prog = _program(TINY, at)
    positions = POSITIONS if backend in ("golden", "verilator") else (0, 5, 31)
    with Device(TINY, backend, mem_bytes=MEM, check="every") as dev:
        base = dev.put(image)
        assert base == 0
        prog_addr = dev.put(prog.to_array())
        for position in positions:
            dev.write(0, image)
            stats = dev.run(prog_addr, len(prog), name=f"at {position}", position=position)
            assert stats.bit_exact in (True, None)
            retired = len(_program(TINY, at, position))
            if stats.counters is not None:
                assert stats.counters["instructions"] == retired
            assert dev.backend.read_reg("position") == position
            guarded = dev.read(at["out_guard"], TILES * 4 * TINY.cols).reshape(TILES, -1)
            assert [bool(r.any()) for r in guarded] == [g <= position >> SHR
                                                         for g in range(TILES)]


def test_position_register_in_the_map():
    assert regs.address("position") == 4 * (len(regs.REGISTERS) - 1)
    assert [r.name for r in regs.REGISTERS][-1] == "position"
