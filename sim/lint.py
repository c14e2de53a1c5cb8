"""Lint of the generated Verilog: ``verilator --lint-only -Wall`` and an Icarus compile.

Amaranth emits Verilog through Yosys, and that Verilog trips a handful of Verilator's
``-Wall`` style and width warnings by construction. Each such warning class is listed in
:data:`EXPLAINED` with the reason it is harmless (README repeats the list). Any other
warning, or any error, fails the lint.

    python -m serrano.sim.lint --preset tiny
"""

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from serrano.hw.config import get_preset
from serrano.hw.dsp import dsp_family
from . import toolenv
from .tb_tops import MULT18X18D_MODEL, TRELLIS_FF_MODEL
from .verilog import ARRAY_TOP, TOP, array_verilog, top_verilog

__all__ = ["EXPLAINED", "verilator_lint", "icarus_compile", "lint_report"]

EXPLAINED = {
    "DECLFILENAME": "Amaranth writes the whole hierarchy into one file; only the top module "
                    "can match the file name (submodules are named top.pe_0_0 and so on).",
    "UNUSEDSIGNAL": "Yosys keeps a named wire for every lib.data field view and port alias "
                    "(e.g. act__payload.bank) even where only the packed vector is read.",
    "PROCASSINIT": "registers carry their reset value as an initial value in the "
                   "declaration and are also assigned in always blocks; this is how "
                   "Amaranth states reset values and is intended.",
    "WIDTHEXPAND": "Yosys writes signed additions with operands of their natural width "
                   "(a 16-bit product into a 33-bit sum); Verilog sign-extends them as "
                   "the Amaranth source defines.",
    "CASEINCOMPLETE": "Yosys writes an Amaranth m.Switch without m.Default as a casez with "
                      "no default; every signal it drives was given its value before the "
                      "case, as Amaranth's semantics require, so no latch or X results.",
    "WIDTHTRUNC": "Yosys writes a 1-bit logical NOT of a multi-bit equality compare "
                  "(`!x[2:1]`), which is the intended reduction.",
}

_WARNING = re.compile(r"^%Warning-([A-Z0-9_]+):")
_ERROR = re.compile(r"^%Error")


def _write(cfg, directory, top, platform=None):
    name = TOP if top else ARRAY_TOP
    path = Path(directory) / f"{name}.v"   # file named after its module (DECLFILENAME)
    text = top_verilog(cfg, platform=platform) if top else array_verilog(cfg, platform)
    if dsp_family(platform) == "ecp5":     # the ECP5 cells' simulation models beside it
        text += "\n" + MULT18X18D_MODEL.read_text()
        if "TRELLIS_FF" in text:
            text += "\n" + TRELLIS_FF_MODEL.read_text()
    path.write_text(text)
    return name, path


def verilator_lint(cfg, top=True, platform=None):
    """Return ``(Counter of warning codes, list of error lines)``. ``platform``: lint the
    design as elaborated for it (:data:`hw.dsp.ECP5`: the DSP-block form, with
    ``sim/hdl/mult18x18d.v``)."""
    toolenv.apply()
    with tempfile.TemporaryDirectory() as d:
        name, path = _write(cfg, d, top, platform)
        proc = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", name,
                               str(path)], capture_output=True, text=True)
    codes, errors = Counter(), []
    for line in proc.stderr.splitlines():
        m = _WARNING.match(line)
        if m:
            codes[m.group(1)] += 1
        elif _ERROR.match(line) and not line.startswith("%Error: Exiting due to"):
            errors.append(line)
    return codes, errors


def icarus_compile(cfg, top=True, platform=None):
    """Compile with ``iverilog -g2012``; return ``(ok, messages)``."""
    if not toolenv.have_iverilog():
        raise toolenv.ToolNotFound(toolenv.icarus_skip_reason())
    with tempfile.TemporaryDirectory() as d:
        name, path = _write(cfg, d, top, platform)
        proc = subprocess.run(["iverilog", "-g2012", "-o", str(Path(d) / "a.vvp"),
                               "-s", name, str(path)], capture_output=True, text=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def lint_report(cfg, top=True):
    """Run both checks; return ``(ok, human-readable report)``."""
    codes, errors = verilator_lint(cfg, top)
    lines = [f"verilator --lint-only -Wall, {TOP if top else ARRAY_TOP}, preset {cfg.name}:"]
    unexplained = [c for c in codes if c not in EXPLAINED]
    for code, count in sorted(codes.items()):
        note = EXPLAINED.get(code, "NOT EXPLAINED: fix the design or document it")
        lines.append(f"  {code:14s} x{count:<5d} {note}")
    if not codes:
        lines.append("  no warnings")
    lines += [f"  {e}" for e in errors]
    ok_icarus, msg = icarus_compile(cfg, top)
    lines.append(f"iverilog -g2012: {'compiles' if ok_icarus else 'FAILED'}"
                 + (f"\n  {msg}" if msg else ""))
    ok = not unexplained and not errors and ok_icarus
    lines.append("lint: OK" if ok else "lint: FAILED")
    return ok, "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m serrano.sim.lint")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--array", action="store_true", help="lint the bare array only")
    args = p.parse_args(argv)
    ok, text = lint_report(get_preset(args.preset), top=not args.array)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
