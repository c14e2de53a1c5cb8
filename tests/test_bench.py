"""The benchmark suite (sw/bench.py): formulas on known numbers, and ``--quick`` on the
tiny preset under Verilator writing every output."""

import argparse
import contextlib
import io
import json
import math

import pytest

from serrano.hw.config import get_preset
from serrano.sw import bench
from tests.conftest import require_simulator, selected_simulators

ENTRY_KEYS = {"name", "kind", "cycles", "macs", "mac_utilization", "dma_read_bytes",
              "dma_write_bytes", "dma_read_utilization", "roofline_cycles",
              "cycles_over_roofline", "stall_cycles", "host_round_trips",
              "scalesim_ws_cycles", "cycles_over_scalesim", "energy"}
ENERGY_KEYS = {"total_j", "mac_j", "sram_j", "dram_j", "events"}


def _args(argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(argv)


def test_scalesim_formula_on_known_numbers():
    # anchors.md: SCALE-Sim's weight-stationary model predicts 73.6 % MAC utilization for a
    # 128x768 by 768x768 GEMM on 16x16, and 2.1 % for M = 1.
    c = bench.scalesim_ws_cycles(128, 768, 768, 16, 16)
    assert c == 48 * 48 * (2 * 16 + 16 + 128 - 2) == 400_896
    assert round(128 * 768 * 768 / (c * 256), 3) == 0.736
    c1 = bench.scalesim_ws_cycles(1, 768, 768, 16, 16)
    assert c1 == 2304 * 47
    assert round(768 * 768 / (c1 * 256), 3) == 0.021
    # Partial tiles round up: K = 5, N = 9 on 4x4 is 2 x 3 tiles.
    assert bench.scalesim_ws_cycles(7, 5, 9, 4, 4) == 6 * (8 + 4 + 7 - 2)
    with pytest.raises(ValueError, match="^m must be a positive integer, not 0$"):
        bench.scalesim_ws_cycles(0, 1, 1, 4, 4)


def test_roofline_formula_on_known_numbers():
    cfg = get_preset("default")                   # 256 MACs and 16 bytes per cycle
    assert bench.roofline_cycles(cfg, 256 * 1000, 16 * 500) == 1000          # compute
    assert bench.roofline_cycles(cfg, 256 * 10, 16 * 37 + 1) == 38           # memory, ceil
    # README's decode GEMV: 768x768 MACs, 602,976 + 768 bytes: the bus bound.
    assert bench.roofline_cycles(cfg, 768 * 768, 602_976 + 768) == 37_734
    tiny = get_preset("tiny")                     # 16 MACs, 4 bytes per cycle
    assert bench.roofline_cycles(tiny, 17, 3) == 2


def test_flags_and_defaults():
    a = _args([])
    assert (a.preset, a.backend, a.quick, a.out, a.json, a.energy) == \
        ("default", "verilator", False, "build/bench", False, None)
    with pytest.raises(ValueError, match="bench measures cycles: .*not 'golden'"):
        bench.run(_args(["--backend", "golden"]))
    with pytest.raises(ValueError, match="unknown backend 'board'"):
        bench.run(_args(["--backend", "board"]))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``--quick --preset tiny`` under Verilator, once for the tests below."""
    if "verilator" not in selected_simulators():
        pytest.skip("SIM excludes verilator, and the bench test runs on Verilator")
    require_simulator("verilator")
    out = tmp_path_factory.mktemp("bench")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = bench.run(_args(["--preset", "tiny", "--quick", "--out", str(out), "--json"]))
    return {"rc": rc, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "report": json.loads((out / "report.json").read_text())}


def test_quick_writes_every_output(quick):
    assert quick["rc"] == 0
    out = quick["out"]
    for name in ("roofline.png", "layer_breakdown.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    r = quick["report"]
    assert json.loads(quick["stdout"]) == r                       # --json prints the report
    assert {"entries", "sim_rate", "preset", "date", "command"} <= set(r)
    assert r["preset"] == "tiny" and r["command"].startswith("serrano bench --preset tiny")
    md = (out / "report.md").read_text()
    assert "not measurements of silicon" in md
    for e in r["entries"]:
        assert e["name"] in md
    # Progress went to stderr, one line per entry at least.
    assert quick["stderr"].count("[bench") >= len(r["entries"])


def test_quick_entries_have_every_key_and_consistent_numbers(quick):
    r = quick["report"]
    cfg = get_preset("tiny")
    assert [e["kind"] for e in r["entries"]] == ["gemm", "gemm", "gemm", "layer", "decode",
                                                 "llm_prefill", "llm_decode",
                                                 "llm_prefill", "llm_decode"]
    assert [e.get("weights") for e in r["entries"]] == [
        "int8", "int8", "int4", None, None, "int8", "int8", "int4", "int4"]
    for e in r["entries"]:
        assert ENTRY_KEYS <= set(e), e["name"]
        assert ENERGY_KEYS <= set(e["energy"])
        assert set(e["stall_cycles"]) == {"weight", "act", "store", "insn"}
        assert e["bit_exact"] is True
        # The program structure explains the counters exactly (MATMUL rows = array
        # cycles, instruction + load + weight bytes = DMA reads, stores = DMA writes).
        assert e["structure_matches_counters"] is True, e["structure_mismatches"]
        cyc, macs = e["cycles"], e["macs"]
        dma = e["dma_read_bytes"] + e["dma_write_bytes"]
        assert e["roofline_cycles"] == max(math.ceil(macs / cfg.macs),
                                           math.ceil(dma / cfg.bus_bytes))
        assert e["cycles_over_roofline"] == pytest.approx(cyc / e["roofline_cycles"])
        assert e["mac_utilization"] == pytest.approx(macs / (cyc * cfg.macs))
        assert e["dma_read_utilization"] == pytest.approx(
            e["dma_read_bytes"] / (cyc * cfg.bus_bytes))
        # Physical bounds: one activation row per cycle, one read beat per cycle.
        assert cyc >= math.ceil(macs / cfg.macs)
        assert cyc >= math.ceil(e["dma_read_bytes"] / cfg.bus_bytes)
        assert e["cycles_over_scalesim"] == pytest.approx(cyc / e["scalesim_ws_cycles"])
        en = e["energy"]
        assert en["total_j"] == pytest.approx(en["mac_j"] + en["requant_j"] + en["scale_j"]
                                              + en["sram_j"] + en["dram_j"])
        assert en["events"]["dram_bytes"] == dma
        assert en["events"]["macs"] == e["array_cycles"] * cfg.macs >= macs
    gemms = [e for e in r["entries"] if e["kind"] == "gemm"]
    for e in gemms:
        assert e["macs"] == e["m"] * e["k"] * e["n"]
        assert e["scalesim_ws_cycles"] == bench.scalesim_ws_cycles(
            e["m"], e["k"], e["n"], cfg.rows, cfg.cols)
        assert e["host_round_trips"] is None and "joules_per_token" not in e["energy"]
    for e in r["entries"][3:]:
        # layer: QKV, scores, context, O, up, down; decode (fused path): QKV, scores,
        # context, O, FFN; llama-tiny: those six per layer for 2 layers, the LM head
        assert e["host_round_trips"] == len(e["per_op"]) == {
            "layer": 6, "decode": 5, "llm_prefill": 13, "llm_decode": 13}[e["kind"]]
        assert e["energy"]["joules_per_token"] == pytest.approx(
            e["energy"]["total_j"] / e["energy"]["tokens"])
        assert e["scalesim_ws_cycles"] == sum(
            bench.scalesim_ws_cycles(m, k, n, cfg.rows, cfg.cols) for m, k, n in e["gemms"])
        assert sum(o["cycles"] for o in e["per_op"]) == e["cycles"]
        for o in e["per_op"]:
            assert o["other_cycles"] >= 0
            assert o["array_cycles"] + sum(o["stall_cycles"].values()) + o["other_cycles"] \
                == o["cycles"]
    layer, decode = r["entries"][3], r["entries"][4]
    # Each 4-bit entry beside its int8 twin: fewer bytes read, and the cycles' speed-up
    # measured against that byte ratio.
    pairs = r["int4_vs_int8"]
    assert [p["name"] for p in pairs] == [r["entries"][1]["name"], r["entries"][5]["name"],
                                          r["entries"][6]["name"]]
    for p in pairs:
        assert p["byte_ratio"] > 1.2
        assert p["speedup"] == pytest.approx(p["int8_cycles"] / p["int4_cycles"])
    assert layer["energy"]["tokens"] == layer["seq"] and decode["energy"]["tokens"] == 1
    assert layer["cosine_vs_float"] > 0.95 and decode["cosine_vs_float"] > 0.95


def test_quick_sim_rate(quick):
    s = quick["report"]["sim_rate"]
    assert {"verilator_cycles_per_s", "icarus_cycles_per_s", "ratio", "workload"} <= set(s)
    assert s["verilator_cycles_per_s"] == pytest.approx(s["verilator_cycles"]
                                                        / s["verilator_wall_s"])
    if s["icarus_cycles_per_s"] is None:
        assert s["ratio"] is None and s["icarus_missing"]
    else:
        assert s["icarus_cycles"] == s["verilator_cycles"]       # the same workload
        assert s["ratio"] == pytest.approx(s["verilator_cycles_per_s"]
                                           / s["icarus_cycles_per_s"])
