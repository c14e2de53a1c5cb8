"""The ``serrano`` command line: verilog, gemm, lint, and its errors."""

import json
import subprocess
import sys

import pytest

from serrano.hw.dsp import ECP5
from serrano.sim.lint import EXPLAINED, verilator_lint, icarus_compile
from serrano.hw.config import get_preset
from serrano.sw.cli import main
from tests.conftest import require_simulator

GEMM_KEYS = {"preset", "backend", "m", "k", "n", "bit_exact", "cycles", "macs",
             "mac_utilization", "sim_wall_s"}


def test_array_gemm_json_amaranth(capsys):
    assert main(["gemm", "--array", "--preset", "tiny", "--m", "9", "--k", "7", "--n", "5",
                 "--backend", "amaranth", "--seed", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert GEMM_KEYS <= set(report)
    assert report["bit_exact"] is True
    assert report["macs"] == 9 * 7 * 5
    cfg = get_preset("tiny")
    tiles = 2 * 2                                   # ceil(7/4) * ceil(5/4)
    # First weight row in to last result row out: R to load the first tile, then the
    # rows of every tile back to back, then the array's latency.
    assert report["cycles"] == cfg.rows + tiles * 9 + cfg.latency
    assert report["mac_utilization"] == pytest.approx(315 / (report["cycles"] * cfg.macs))


def test_array_gemm_human_summary_on_rtl(simulator, capsys):
    assert main(["gemm", "--array", "--preset", "tiny", "--m", "6", "--k", "5", "--n", "3",
                 "--backend", simulator]) == 0
    out = capsys.readouterr().out
    assert "bit-exact vs golden model : yes" in out


ACCEL_KEYS = GEMM_KEYS | {"dma_read_bytes", "dma_write_bytes", "bus_bytes_per_cycle",
                          "dma_read_utilization", "stall_cycles", "instructions",
                          "mem_latency"}


def test_gemm_through_the_accelerator(simulator, capsys):
    """Program, weights and activations in memory; cycles from the accelerator's own
    counter; the whole memory image equal to the golden ISA model's."""
    assert main(["gemm", "--preset", "tiny", "--m", "19", "--k", "10", "--n", "9",
                 "--backend", simulator, "--mem-latency", "7", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert ACCEL_KEYS <= set(r)
    assert r["bit_exact"] is True and r["mem_latency"] == 7
    cfg = get_preset("tiny")
    assert r["bus_bytes_per_cycle"] == cfg.bus_bytes
    assert r["dma_read_utilization"] == pytest.approx(
        r["dma_read_bytes"] / (r["cycles"] * cfg.bus_bytes))
    assert r["dma_write_bytes"] == 19 * 3 * cfg.cols          # 3 N-tiles of int8 rows
    assert set(r["stall_cycles"]) == {"weight", "act", "store", "insn"}
    assert r["mac_utilization"] == pytest.approx(r["macs"] / (r["cycles"] * cfg.macs))


def test_gemm_golden_backend(capsys):
    assert main(["gemm", "--preset", "tiny", "--m", "5", "--k", "6", "--n", "7",
                 "--backend", "golden", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["bit_exact"] is True and r["cycles"] is None


@pytest.mark.parametrize("argv, message", [
    (["gemm", "--preset", "huge", "--m", "1", "--k", "1", "--n", "1"], "unknown preset 'huge'"),
    (["gemm", "--m", "0", "--k", "1", "--n", "1"], "must be positive, not 0"),
    (["gemm", "--m", "1", "--k", "1", "--n", "1", "--backend", "vcs"], "unknown backend 'vcs'"),
    (["gemm", "--m", "1", "--k", "1", "--n", "1", "--check", "some"], "invalid choice"),
    (["run", "--model", "bert-tiny", "--backend", "board"], "unknown backend 'board'"),
])
def test_bad_input_is_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", *argv], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_verilog_command_writes_file(tmp_path):
    out = tmp_path / "a.v"
    assert main(["verilog", "--preset", "tiny", "--array", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module serrano_array(" in text
    for port in ("act__payload", "act__valid", "weight__payload", "weight__valid",
                 "result__payload", "result__valid", "clk", "rst"):
        assert port in text


def test_verilog_command_writes_the_accelerator(tmp_path):
    out = tmp_path / "top.v"
    assert main(["verilog", "--preset", "tiny", "-o", str(out)]) == 0
    text = out.read_text()
    assert "module serrano_top(" in text
    for port in ("m_axi__arvalid", "m_axi__rdata", "m_axi__awaddr", "m_axi__wstrb",
                 "m_axi__bresp", "s_axil__awaddr", "s_axil__rdata", "irq", "clk", "rst"):
        assert port in text



def test_verilog_with_and_without_clock_gates(tmp_path):
    """The default Verilog has one clock gate per gated block (its enable latched on the
    falling edge): the load, store and vector units and the store unit's requantizer;
    ``--gating none`` (the FPGA flow's) has none and no derived clock."""
    for gating, latches in (("clock", 4), ("none", 0)):
        out = tmp_path / f"{gating}.v"
        assert main(["verilog", "--preset", "tiny", "--gating", gating, "-o", str(out)]) == 0
        text = out.read_text()
        assert text.count("negedge") == latches
        for unit in ("load", "store", "vec", "rq"):
            assert (f"{unit}_clk_en_q" in text) == (gating == "clock")

@pytest.mark.parametrize("preset, top, platform", [
    ("tiny", False, None), ("default", False, None), ("tiny", True, None),
    ("default", True, None),
    # The ECP5 form (hw/dsp.py: the PE multipliers as MULT18X18D, with the block's model).
    ("fpga", False, ECP5), ("fpga", True, ECP5)])
def test_verilator_lint_only_explained_warnings(preset, top, platform):
    require_simulator("verilator")
    codes, errors = verilator_lint(get_preset(preset), top, platform)
    assert not errors
    assert set(codes) <= set(EXPLAINED), f"unexplained: {set(codes) - set(EXPLAINED)}"


@pytest.mark.parametrize("preset, top, platform", [
    ("default", False, None), ("default", True, None), ("fpga", False, ECP5),
    ("fpga", True, ECP5)])
def test_icarus_compiles(preset, top, platform):
    require_simulator("icarus")
    ok, msg = icarus_compile(get_preset(preset), top, platform)
    assert ok, msg
