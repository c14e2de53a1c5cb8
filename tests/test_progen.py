"""Random instruction streams (sw/progen.py): the generator makes what it claims, the
check catches what it must, and every stream runs on the RTL as the golden model says.

The RTL runs keep one simulator per preset running across hundreds of streams, legal
and illegal mixed, each followed by a soft reset: long runs of many calls on one
persistent simulator with faults between them. Hypothesis draws the streams there, so
a failure is shrunk before it is reported; a campaign's replay shrinks with
:func:`sw.progen.shrink`, which a test shows at work on a deliberately wrong golden
model.
"""

import collections
import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from serrano.hw import isa, regs
from serrano.hw.config import get_preset
from serrano.sw import isa_model, progen, vector
from serrano.sw.backends import open_backend
from tests.conftest import require_simulator, selected_simulators

PRESETS = ("tiny", "fpga", "default")


def draw(seed):
    return progen.RngDraw(np.random.default_rng(seed))


def golden(stream, check_deps=True):
    return isa_model.run_program(stream.cfg, stream.image, stream.prog_addr,
                                 stream.n_insns, base=stream.base, limit=stream.limit,
                                 check_deps=check_deps, position=stream.position)


def what(insn):
    if insn.op == isa.Op.VEC:
        return f"VEC:{isa.VecOp(insn.fields['vop']).name}"
    if insn.op == isa.Op.MATMUL:
        f = insn.fields
        return f"MATMUL:{isa.WeightFormat(f['wfmt']).name}" + (":pair" if f["pair"] else "")
    if insn.op == isa.Op.STORE:
        f = insn.fields
        mode = [k for k in ("to_buf", "raw", "transpose", "wide") if f.get(k)]
        return "STORE:" + "+".join(mode or ["mem"])
    return isa.Op(insn.op).name


@pytest.mark.parametrize("preset", PRESETS)
def test_legal_streams_are_legal_and_cover_the_isa(preset):
    """300 streams: each runs on the golden model without an error, its tokens proven
    deadlock- and race-free; together they use every opcode, vector operation, weight
    format and store mode, tokens between every pair of neighbours, rows at the top of
    every buffer, position-relative fields and guards (passing, and failing: skipped
    instructions), and streams whose position matters (run at another, they differ)."""
    cfg = get_preset(preset)
    seen = collections.Counter()
    for seed in range(300):
        s = progen.legal_stream(draw(seed), cfg)
        assert s.kind == "legal" and s.expect == isa.Error.NONE
        assert len(s.insns) <= progen.MAX_INSNS and s.insns[-1].op == isa.Op.END
        res = golden(s)                                 # check_tokens and check_races
        assert res.error == isa.Error.NONE, s.text()
        for insn in s.insns:
            seen[what(insn)] += 1
            seen.update(k for k, v in insn.flags.items() if v)
            seen.update(f"@{k}" for k, v in (insn.at or {}).items() if v and k != "P")
            seen["skipped"] += insn.role == "skipped"
            seen["STORE:rowscale"] += bool(insn.op == isa.Op.STORE
                                           and insn.fields.get("rowscale"))
        if any(insn.at and insn.at.get("rel") for insn in s.insns) and s.position:
            # Position-relative: at another position it runs differently (or fails).
            other = dataclasses.replace(s, position=s.position ^ (1 << 11))
            moved = golden(other, check_deps=False)
            seen["moves"] += (moved.error != isa.Error.NONE
                              or not np.array_equal(moved.mem, res.mem))
        top = [r for r in range(cfg.act_buf_rows - 8, cfg.act_buf_rows) if res.act[r].any()]
        seen["act top"] += bool(top)
    wanted = ([op.name for op in (isa.Op.LOAD_ACT, isa.Op.LOAD_PARAM, isa.Op.FENCE)]
              + [f"VEC:{v.name}" for v in isa.VecOp]
              + [f"MATMUL:{f.name}" for f in isa.WeightFormat] + ["MATMUL:INT8:pair"]
              + [f"STORE:{m}" for m in ("mem", "to_buf", "raw", "transpose", "wide",
                                        "to_buf+wide", "rowscale")]
              + ["pop_prev", "pop_next", "push_prev", "push_next", "pop_side", "push_side",
                 "act top", "@rel", "@guard", "@shr", "@shl", "@gtile", "skipped", "moves"])
    missing = [w for w in wanted if not seen[w]]
    assert not missing, f"never drawn: {missing}"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("kind", sorted(progen.ILLEGAL_KINDS))
def test_illegal_streams_end_in_their_error(preset, kind):
    """Each way of breaking a stream gives the golden model's documented error at the
    broken instruction (``NO_END`` past the last one; a deadlock for token misuse)."""
    cfg = get_preset(preset)
    for seed in range(25):
        s = progen.illegal_stream(draw(seed), cfg, kind)
        assert s.kind == kind and s.expect == progen.ILLEGAL_KINDS[kind]
        if kind == "deadlock":
            with pytest.raises(isa_model.DeadlockError):
                isa_model.check_tokens(progen.encode(s.insns))
            continue
        res = golden(s, check_deps=False)
        assert res.error == s.expect, s.text()
        assert res.error_insn == (s.n_insns if kind == "no_end" else s.broken), s.text()


def test_illegal_kind_checked():
    with pytest.raises(ValueError, match=r"^kind must be one of \["):
        progen.illegal_stream(draw(0), get_preset("tiny"), "bad_idea")


def test_check_catches_what_it_must():
    """The check itself fails on a wrong byte inside or outside the window, a wrong
    status, a hang, a byte no prefix of a faulted program leaves."""
    cfg = get_preset("tiny")
    s = progen.legal_stream(draw(3), cfg, max_body=20)
    gold = golden(s)
    assert progen.check(s, gold.mem, regs.STATUS_DONE, False) is None
    bad = gold.mem.copy()
    bad[s.rw[0]] ^= 1
    assert "differs from the golden model" in progen.check(s, bad, regs.STATUS_DONE, False)
    assert s.base > 0
    bad = gold.mem.copy()
    bad[s.base - 1] ^= 0x80
    assert "outside the window" in progen.check(s, bad, regs.STATUS_DONE, False)
    assert "status 0x4" in progen.check(s, gold.mem, regs.STATUS_ERROR, False)
    assert "hung" in progen.check(s, gold.mem, 0, True)
    f = progen.illegal_stream(draw(5), cfg, "window")
    snaps, error, at = progen.allowed_bytes(f)
    assert error == isa.Error.DMA_WINDOW and at == f.broken
    status = regs.STATUS_ERROR | int(error) << regs.STATUS_CODE_SHIFT
    assert progen.check(f, snaps[-1], status, False) is None
    assert progen.check(f, f.image, status, False) is None         # nothing written
    odd = f.image.copy()
    a = f.rw[0]
    odd[a] = min(set(range(256)) - set(snaps[:, a].tolist()))
    assert "no prefix" in progen.check(f, odd, status, False)
    d = progen.illegal_stream(draw(7), cfg, "deadlock")
    assert "instead of hanging" in progen.check(d, d.image, regs.STATUS_DONE, False)
    assert progen.check(d, d.image, regs.STATUS_BUSY, True) is None


@pytest.fixture(scope="module")
def backends():
    """One running fast simulator per preset, shared by the tests of this module."""
    require_simulator("verilator")
    opened = {}

    def get(preset):
        if preset not in opened:
            opened[preset] = open_backend("verilator", get_preset(preset),
                                          mem_bytes=1 << 20, mem_latency=20)
        return opened[preset]
    yield get
    for b in opened.values():
        b.close()


@pytest.mark.skipif("verilator" not in selected_simulators(), reason="SIM excludes verilator")
@pytest.mark.parametrize("preset", ["tiny", "fpga"])
def test_streams_on_the_rtl(backends, preset):
    """Hypothesis draws 300 streams, legal and illegal, run one after another on one
    simulator: each ends as the golden model says, memory and status."""
    backend = backends(preset)
    cfg = get_preset(preset)

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(progen.streams(cfg, "any"))
    def prop(stream):
        problem, _ = progen.run_on(backend, stream)
        assert problem is None, f"{problem}\n{stream.text()}"
    prop()


@pytest.mark.skipif("verilator" not in selected_simulators(), reason="SIM excludes verilator")
def test_streams_on_the_16x16_rtl(backends):
    """The 16 x 16 design: 150 seeded streams on one simulator."""
    backend = backends("default")
    cfg = get_preset("default")
    for seed in range(150):
        d = draw(seed)
        s = progen.legal_stream(d, cfg) if seed % 2 else progen.illegal_stream(d, cfg)
        problem, _ = progen.run_on(backend, s)
        assert problem is None, f"seed {seed}: {problem}\n{s.text()}"


def test_streams_under_icarus():
    """Icarus (one simulation per stream): a few seeded streams of every kind."""
    if "icarus" not in selected_simulators():
        pytest.skip("SIM excludes icarus")
    require_simulator("icarus")
    cfg = get_preset("tiny")
    for seed, kind in enumerate(["legal", "legal", "window", "deadlock", "bad_buffer"]):
        d = draw(1000 + seed)
        s = progen.legal_stream(d, cfg) if kind == "legal" else \
            progen.illegal_stream(d, cfg, kind)
        problem, _ = progen.run_rtl(s, "icarus")
        assert problem is None, f"{kind}: {problem}\n{s.text()}"


def test_shrink_keeps_the_failure_and_the_kind():
    """:func:`progen.shrink` (what a campaign's replay prints) on the first drawn
    streams that a wrong vector ADD breaks, legal and illegal: the result still fails,
    is still a stream of the same kind ending in the same error, and is much shorter."""
    cfg = get_preset("tiny")
    real = vector.add

    def wrong(a, b, mul_a, mul_b, shift, wide=False):
        y = np.asarray(real(a, b, mul_a, mul_b, shift, wide=wide))
        return y if wide else np.clip(y.astype(np.int16) + 1, -128, 127).astype(np.int8)

    def fails(stream):
        want = golden(stream, check_deps=False).mem
        vector.add = wrong
        try:
            got = golden(stream, check_deps=False).mem
        finally:
            vector.add = real
        return not np.array_equal(want, got)

    for make in (progen.legal_stream, progen.illegal_stream):
        s = next(s for s in (make(draw(seed), cfg) for seed in range(3000))
                 if s.expect is not None and fails(s))
        small = progen.shrink(s, fails)
        assert fails(small) and small.kind == s.kind and small.expect == s.expect
        snaps, error, at = progen.allowed_bytes(small)
        assert error == small.expect
        body = [i for i in small.insns if i.role == "body" and i.op != isa.Op.FENCE]
        assert len(small.insns) < len(s.insns) and len(body) <= 4, small.text()
