"""Simulations kept running (:class:`sim.runner.Session`): case after case on one
simulator gives what a simulation of its own gives each case, whatever ran before it;
a failing case, a dead simulator and a closed session are reported, not hung on."""

import os
import signal

import numpy as np
import pytest

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sim import runner
from serrano.sim.accel import run_rtl
from serrano.sim.system import run_system
from serrano.sw import compiler, isa_model

CFG = get_preset("tiny")


def _gemm(rng, m, k, n, base=4096):
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-1000, 1000, n).astype(np.int32)
    mult = rng.integers(1, 1 << 15, n).astype(np.int32)
    shift = rng.integers(10, 20, n)
    return compiler.compile_gemm(CFG, a, w, bias, mult, shift, base=base)


def _same(fresh, kept):
    assert np.array_equal(fresh.image, kept.image)
    for field in ("status", "counters", "timed_out", "magic", "reset_status"):
        assert getattr(fresh, field) == getattr(kept, field), field


def _weights_past_the_image(rng, past):
    """A compiled GEMM whose MATMULs read their weights ``past`` bytes beyond the end of
    its image (inside its window, where a simulation of its own reads zeros)."""
    lay = _gemm(rng, 5, 9, 7)
    image = lay.image.copy()
    for i in range(lay.prog_len):
        at = lay.prog_addr + i * isa.INSN_BYTES
        op, hdr, body = isa.decode_op(image[at:at + isa.INSN_BYTES])
        if op == isa.Op.MATMUL:
            body["weight_addr"] += len(image) + past - lay.w_addr
            flags = {k: v for k, v in hdr.items() if k != "opcode"}
            image[at:at + isa.INSN_BYTES] = np.frombuffer(
                isa.encode(op, **flags, **body), np.uint8)
    return lay, image


@pytest.mark.parametrize("kind", ["system", "axiram"])
def test_running_simulation_equals_fresh_runs(simulator, rng, kind):
    """Five different cases (shapes, resets, a program error, random bus pauses) on one
    running simulation each equal the same case in a simulation of its own."""
    runner.close_sessions()
    cases = []
    for i in range(5):
        m, k, n = (int(x) for x in rng.integers(1, 3 * CFG.rows, 3))
        lay = _gemm(rng, m, k, n)
        image = lay.image.copy()
        prog_len = lay.prog_len
        if i == 3:                            # an undefined opcode at the third insn
            at = lay.prog_addr + 2 * isa.INSN_BYTES
            image[at] = (image[at] & 0xF0) | max(set(range(16)) - {int(o) for o in isa.Op})
        cases.append((image, lay.prog_addr, prog_len, i))
    for image, prog_addr, prog_len, i in cases:
        if kind == "system":
            kw = {"mem_latency": 1 + 17 * i, "write_latency": 1 + 5 * i,
                  "soft_reset_at_end": True}
            if i == 1:
                kw.update(reset_after=40, reset_kind="hard")
            if i == 2:
                kw.update(reset_after=60, reset_kind="soft")
            fresh = run_system(CFG, image, prog_addr, prog_len, simulator, **kw)
            kept = run_system(CFG, image, prog_addr, prog_len, simulator, persistent=True,
                              **kw)
            assert fresh.end_reset_status == kept.end_reset_status
        else:
            kw = {"pause": (0.0, 0.3, 0.5, 0.0, 0.2)[i], "seed": i,
                  "soft_reset_after": 50 if i == 4 else None}
            fresh = run_rtl(CFG, image, prog_addr, prog_len, simulator, **kw)
            kept = run_rtl(CFG, image, prog_addr, prog_len, simulator, persistent=True, **kw)
        _same(fresh, kept)
        if i == 3:
            assert kept.error == isa.Error.BAD_OPCODE
    runner.close_sessions()


def test_memory_an_earlier_case_wrote_reads_as_zero(simulator, rng):
    """A case that reads its window beyond its image reads zeros there, as in a
    simulation of its own, after a case that filled that memory with noise (without the
    session's zeroing of what earlier cases reached it would read the noise)."""
    runner.close_sessions()
    lay, image = _weights_past_the_image(rng, 1024)
    limit = len(image) + 4096
    noise = rng.integers(1, 256, limit, dtype=np.uint8)
    noise[:isa.INSN_BYTES] = np.frombuffer(isa.encode(isa.Op.END), np.uint8)
    run_system(CFG, noise, 0, 1, simulator, persistent=True)
    padded = np.zeros(limit, np.uint8)
    padded[:len(image)] = image
    gold = isa_model.run_program(CFG, padded, lay.prog_addr, lay.prog_len,
                                 check_deps=False).mem[:len(image)]
    kept = run_system(CFG, image, lay.prog_addr, lay.prog_len, simulator, limit=limit,
                      persistent=True)
    assert kept.error == isa.Error.NONE
    assert np.array_equal(kept.image, gold)
    assert np.array_equal(run_system(CFG, image, lay.prog_addr, lay.prog_len, simulator,
                                     limit=limit).image, gold)
    runner.close_sessions()


def test_failing_case_is_reported_and_the_session_closed(simulator):
    """A case the testbench raises on ends in :class:`CaseFailed` with its traceback; the
    session is closed and the next :func:`runner.session` starts another."""
    runner.close_sessions()
    from serrano.sim.verilog import TOP, top_verilog
    built = runner.build(simulator, TOP, top_verilog(CFG), tag=CFG.name)
    s = runner.session(built, "serrano.sim.tb.top_tb")
    with pytest.raises(runner.CaseFailed, match="KeyError"):
        s.run({"image": "00" * 64})                     # no registers, no window
    assert not s.alive
    with pytest.raises(runner.SimulationFailed, match="not running"):
        s.run({})
    again = runner.session(built, "serrano.sim.tb.top_tb")
    assert again is not s and again.alive
    runner.close_sessions()


def test_a_killed_simulator_is_reported(simulator, rng):
    """A simulator that dies under a session ends the case with one clear error, and the
    next run starts a new simulation."""
    runner.close_sessions()
    lay = _gemm(rng, 3, 5, 7)
    first = run_system(CFG, lay.image, lay.prog_addr, lay.prog_len, simulator,
                       persistent=True)
    (s,) = runner._SESSIONS.values()
    os.kill(s._pid, signal.SIGKILL)
    with pytest.raises(runner.SimulationFailed, match="ended without answering|not running"):
        s.run({})
    again = run_system(CFG, lay.image, lay.prog_addr, lay.prog_len, simulator,
                       persistent=True)
    assert np.array_equal(first.image, again.image)
    runner.close_sessions()
