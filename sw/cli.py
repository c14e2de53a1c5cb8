"""The ``serrano`` command line.

Subcommands::

    serrano verilog --preset P [-o FILE]
    serrano gemm    --preset P --m M --k K --n N --backend {amaranth,verilator,icarus}
                    [--seed S] [--json]
    serrano lint    --preset P

Bad input ends with one line on stderr and exit status 2; a result that is not
bit-exact ends with exit status 1.
"""

import argparse
import json
import sys

from hw.config import ConfigError, get_preset, preset_names
from sim.runner import SimulationFailed
from sim.toolenv import ToolNotFound

__all__ = ["main"]


class UsageError(Exception):
    pass


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _preset(text):
    try:
        return get_preset(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser():
    p = argparse.ArgumentParser(prog="serrano", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verilog", help="write the Verilog of a preset")
    v.add_argument("--preset", type=_preset, default=get_preset("default"),
                   help=f"one of {', '.join(preset_names())} (default: default)")
    v.add_argument("-o", "--output", help="file to write (default: stdout)")

    g = sub.add_parser("gemm", help="multiply random int8 matrices on the array")
    g.add_argument("--preset", type=_preset, default=get_preset("default"),
                   help=f"one of {', '.join(preset_names())} (default: default)")
    g.add_argument("--m", type=_positive, required=True, help="rows of A and of the result")
    g.add_argument("--k", type=_positive, required=True, help="columns of A, rows of W")
    g.add_argument("--n", type=_positive, required=True, help="columns of W and of the result")
    g.add_argument("--backend", default="verilator",
                   help="amaranth, verilator or icarus (default: verilator)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json", action="store_true", help="print one JSON object")

    lint = sub.add_parser("lint", help="lint the preset's Verilog with verilator -Wall")
    lint.add_argument("--preset", type=_preset, default=get_preset("default"))
    return p


def _cmd_verilog(args):
    from sim.verilog import array_verilog, write_verilog
    if args.output:
        path = write_verilog(args.preset, args.output)
        print(f"wrote {path} (preset {args.preset.name}, "
              f"{args.preset.rows}x{args.preset.cols} array)", file=sys.stderr)
    else:
        sys.stdout.write(array_verilog(args.preset))
    return 0


def _cmd_gemm(args):
    from sim.array_backends import BACKENDS
    from sw.gemm import run_gemm
    if args.backend not in BACKENDS:
        raise UsageError(f"unknown backend {args.backend!r}; choose one of: "
                         f"{', '.join(BACKENDS)}")
    report = run_gemm(args.preset, args.m, args.k, args.n, args.backend, seed=args.seed)
    if args.json:
        print(json.dumps(report))
    else:
        r = report
        print(f"serrano gemm  {r['m']}x{r['k']} @ {r['k']}x{r['n']}  preset {r['preset']} "
              f"({args.preset.rows}x{args.preset.cols} array)  backend {r['backend']}")
        print(f"  bit-exact vs golden model : {'yes' if r['bit_exact'] else 'NO'}")
        print(f"  cycles                    : {r['cycles']}  ({r['tiles']} weight tiles)")
        print(f"  MAC utilization           : {r['mac_utilization']:.3f}")
        print(f"  simulation wall time      : {r['sim_wall_s']:.2f} s")
    return 0 if report["bit_exact"] else 1


def _cmd_lint(args):
    from sim.lint import lint_report
    ok, text = lint_report(args.preset)
    print(text)
    return 0 if ok else 1


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return {"verilog": _cmd_verilog, "gemm": _cmd_gemm, "lint": _cmd_lint}[args.command](args)
    except (UsageError, ConfigError, ValueError) as e:
        print(f"serrano: error: {e}", file=sys.stderr)
        return 2
    except ToolNotFound as e:
        print(f"serrano: error: {e}", file=sys.stderr)
        return 2
    except SimulationFailed as e:
        print(f"serrano: simulation failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("serrano: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
