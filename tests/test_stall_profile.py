"""The stall profile: counters sampled as a program runs, stalls given to MATMULs."""

import pytest

from serrano.hw.config import get_preset
from serrano.sw import isa_model
from serrano.sw.run import run_model
from serrano.sw.stall_profile import (Sampler, attribute, attribute_vector, by_node,
                                       vector_by_node)


def _program():
    """FENCE, MATMUL (4 rows, 2 tiles: array counts 0..8), VEC, MATMUL (3 rows, 1 tile:
    8..11), END."""
    p = isa_model.Program()
    p.fence()
    p.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=4, m=4, k_tiles=2, acc_row=0)
    p.vec(vop=0, a_row=0, rows=1)
    p.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=4, m=3, k_tiles=1, acc_row=0)
    p.end()
    return p.to_array().tobytes()


def test_stalls_go_to_the_matmul_the_array_count_names():
    # (array_cycles, stall_act, stall_insn, stall_weight), cumulative.
    samples = [(0, 0, 5, 0, 0, 0),       # no instruction yet: before MATMUL 1 (index 1)
               (0, 7, 5, 2, 0, 0),       # a token, then weights for its first tile
               (3, 7, 5, 4, 0, 3),       # running MATMUL 1, waiting for weights; VEC 2
               (8, 20, 5, 4, 0, 9),      # MATMUL 1 done, MATMUL 3 waits for a token
               (10, 20, 5, 4, 1, 10),    # nothing stalled; VEC 2 done
               (11, 20, 6, 4, 1, 10)]    # after the last MATMUL
    assert attribute_vector(_program(), samples) == [(2, 10)]
    assert vector_by_node([(2, 10)], _program(), [None, "m", "blk.3.v", "m"]) == [
        dict(node="blk.*.v", vop="ADD", busy=10, vecs=1)]
    got = attribute(_program(), samples)
    assert got == [(1, 7, 5, 4), (3, 13, 1, 0)]
    assert sum(r[1] for r in got) == samples[-1][1]
    rows = by_node(got, ["setup", "blk.0.a", "blk.0.v", "blk.1.a", None])
    assert rows == [dict(node="blk.*.a", total=30, act=20, insn=6, weight=4, matmuls=2)]


def test_sampler_needs_a_backend_that_runs_in_steps():
    class Golden:
        name = "golden"
    with pytest.raises(ValueError, match="needs verilator"):
        Sampler().attach(Golden())
    with pytest.raises(ValueError, match="positive number"):
        Sampler(0)


def test_stall_profile_accounts_for_every_stall_cycle_on_rtl():
    """MiniLM, two layers on the 16 x 16 RTL: the profile's stalls add up to the
    counters' totals, and sampling changes neither the cycles nor the results."""
    from tests.conftest import require_simulator, selected_simulators
    if "verilator" not in selected_simulators():
        pytest.skip("SIM excludes verilator")
    require_simulator("verilator")
    text = "Sampling the counters must not change what the accelerator does."
    cfg = get_preset("default")
    r = run_model(cfg, "minilm", "verilator", layers=2, text=text, stall_profile=32)
    plain = run_model(cfg, "minilm", "verilator", layers=2, text=text)
    assert r["bit_exact_vs_golden"] is True
    assert r["cycles"] == plain["cycles"] and r["cosine_per_text"] == plain["cosine_per_text"]
    rows = r["stall_profile"]["by_node"]
    for kind in ("act", "insn", "weight"):
        assert sum(row[kind] for row in rows) == r["stall_cycles"][kind]
    assert r["stall_cycles"]["act"] > 0
    vec = r["stall_profile"]["vector"]
    assert sum(row["busy"] for row in vec) == r["vector_busy_cycles"] > 0
    assert {row["vop"] for row in vec} >= {"LAYERNORM", "SOFTMAX", "DYNQ", "ADD", "MUL"}
    assert {row["node"] for row in rows} <= {
        "blk.*." + n for n in ("q_proj", "k_proj", "v_proj", "attn_out", "ctx_heads",
                               "ffn_up.0", "ffn_up.1", "ffn_down.0", "ffn_down.1",
                               "y")} | {"(program)"}
    with pytest.raises(ValueError, match="--stall-profile takes"):
        run_model(cfg, "minilm", "golden", layers=1, text=text, stall_profile=64)
