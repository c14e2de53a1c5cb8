"""The ``serrano`` command line.

Subcommands::

    serrano verilog --preset P [-o FILE] [--array]
    serrano gemm    --preset P --m M --k K --n N --backend B [--check every|none]
                    [--weights int8|int4]
                    [--mem-latency CYCLES] [--seed S] [--json]
    serrano gemm    --array ... --backend {verilator,icarus,amaranth}
    serrano lint    --preset P [--array]
    serrano bench   [--preset P] [--backend B] [--quick] [--out DIR] [--json]
    serrano fpga    [--preset fpga] [--board ulx3s] [--freq MHZ] [--json]
    serrano project [--model M] [--array RxC] [--clock GHZ] [--bandwidth GBPS] [--chips N]
                    [--batch B] [--energy 45nm|7nm-hbm2] [--table] [--json]
    serrano regress [--seeds N] [--sim verilator|icarus|both] [--seed S]
    serrano run     --model {minilm,bert-tiny,gpt-tiny} [--layers N] [--seq S]
                    [--text "..."] --backend B [--check every|none] --preset P [--json]
    serrano generate --model {smollm2,llama-tiny,gpt-tiny} [--prompt TEXT] [--chat]
                    [--max-tokens N] --backend B --preset P [--clock GHZ] [--json]

B is a backend of :mod:`sw.backends`: golden, verilator, icarus or amaranth.

Bad input ends with one line on stderr and exit status 2; a result that is not
bit-exact ends with exit status 1.
"""

import argparse
import contextlib
import json
import os
import sys

import numpy as np

from serrano.hw.clock_gate import GATINGS
from serrano.hw.config import ConfigError, get_preset, preset_names
from serrano.sim.runner import SimulationFailed
from serrano.sim.toolenv import ToolNotFound
from serrano.sw.backends import backend_names
from serrano.sw.q4 import WEIGHTS
from serrano.sw.models.llama import ModelNotInstalled as LlamaNotInstalled
from serrano.sw.models.minilm import ModelNotInstalled
from serrano.sw.nn.lower import DEFAULT_GEMM_INPUTS, GEMM_INPUTS
from serrano.sw.runtime import CHECKS, DeviceError

__all__ = ["main"]


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Bad arguments end with one line (``serrano gemm: error: ...``), not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _natural(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _preset(text):
    try:
        return get_preset(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _backend(text):
    if text not in backend_names():
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; choose one of: "
                                         f"{', '.join(backend_names())}")
    return text


def _add_backend(parser, default):
    parser.add_argument("--backend", type=_backend, default=default,
                        help=f"{', '.join(backend_names())} (default: {default})")


def _add_check(parser):
    parser.add_argument("--check", choices=CHECKS, default="every",
                        help="on an RTL backend, run each call on the golden model too and "
                             "compare device memory byte for byte (every, the default), "
                             "or not (none)")


def _parser():
    p = _Parser(prog="serrano", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("verilog", help="write the Verilog of a preset")
    v.add_argument("--preset", type=_preset, default=get_preset("default"),
                   help=f"one of {', '.join(preset_names())} (default: default)")
    v.add_argument("-o", "--output", help="file to write (default: stdout)")
    v.add_argument("--array", action="store_true",
                   help="the bare systolic array instead of the whole accelerator")
    v.add_argument("--gating", choices=GATINGS, default="clock",
                   help="clock: the units' clock gates (the default, what the simulators "
                        "run); none: without them (what the FPGA flow synthesizes)")

    g = sub.add_parser("gemm", help="a random requantized int8 GEMM on the accelerator")
    g.add_argument("--preset", type=_preset, default=get_preset("default"),
                   help=f"one of {', '.join(preset_names())} (default: default)")
    g.add_argument("--m", type=_positive, required=True, help="rows of A and of the result")
    g.add_argument("--k", type=_positive, required=True, help="columns of A, rows of W")
    g.add_argument("--n", type=_positive, required=True, help="columns of W and of the result")
    _add_backend(g, "verilator")
    _add_check(g)
    g.add_argument("--mem-latency", type=_positive, default=30, metavar="CYCLES",
                   help="memory read latency of the simulated memory (default: 30)")
    g.add_argument("--array", action="store_true",
                   help="feed the bare array cycle by cycle; int32 results, K summed outside")
    g.add_argument("--weights", choices=WEIGHTS, default="int8",
                   help="weight format: int8, or 4-bit codes with block scales (sw/q4.py)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json", action="store_true", help="print one JSON object")

    r = sub.add_parser("run", help="run a transformer on the accelerator vs its float model")
    r.add_argument("--model", required=True, help="minilm, bert-tiny or gpt-tiny")
    r.add_argument("--layers", type=_positive, help="encoder layers to run (minilm: 1-6)")
    r.add_argument("--seq", type=_positive, help="sequence length (minilm: pad the text to it)")
    r.add_argument("--text", action="append",
                   help="a sentence (minilm; repeat for a batch, run as one program on "
                        "chip; default: 8 mixed sentences)")
    _add_backend(r, "golden")
    _add_check(r)
    r.add_argument("--preset", type=_preset, default=get_preset("default"),
                   help=f"one of {', '.join(preset_names())} (default: default)")
    r.add_argument("--mem-latency", type=_positive, default=30, metavar="CYCLES")
    _add_act_bits(r)
    r.add_argument("--host-ops", action="store_true",
                   help="run the non-GEMM ops on the host in float (default: every op on "
                        "the chip, one program per forward pass, where the model is "
                        "lowered: minilm, bert-tiny)")
    r.add_argument("--gemm-inputs", choices=GEMM_INPUTS, default=DEFAULT_GEMM_INPUTS,
                   help="on the chip, how a 16-bit value enters a GEMM: smoothed and int8 "
                        "with a scale per token (dynamic, the default: VEC DYNQ, STORE "
                        "rowscale; a short sequence's as smoothed pairs) or its two "
                        "halves through one weight stream (pair)")
    r.add_argument("--per-layer", action="store_true",
                   help="minilm: read every layer's output out too (cosine per layer; on "
                        "the chip the readouts take cycles of the same program; default: "
                        "the forward pass alone, the last layer's output)")
    r.add_argument("--stall-profile", nargs="?", type=_positive, const=64, metavar="CYCLES",
                   help="minilm on the chip, verilator: sample the counters every CYCLES "
                        "(64) and report the exec unit's stalls by graph node")
    r.add_argument("--json", action="store_true", help="print one JSON object")

    gn = sub.add_parser("generate", help="a language model, token by token, on the "
                                         "accelerator")
    gn.add_argument("--model", required=True, help="smollm2, llama-tiny or gpt-tiny")
    gn.add_argument("--prompt", help="the prompt (default: a short question)")
    gn.add_argument("--chat", action="store_true",
                    help="render the prompt with the model's chat template (smollm2)")
    gn.add_argument("--max-tokens", type=int, default=16, metavar="N")
    _add_backend(gn, "golden")
    _add_check(gn)
    gn.add_argument("--preset", type=_preset, default=get_preset("default"),
                    help=f"one of {', '.join(preset_names())} (default: default)")
    gn.add_argument("--clock", type=float, default=1.0, metavar="GHZ",
                    help="clock for tokens per second (default: 1 GHz)")
    gn.add_argument("--mem-latency", type=_positive, default=30, metavar="CYCLES")
    _add_act_bits(gn)
    gn.add_argument("--score", action="append", metavar="TEXT",
                    help="instead of generating: the teacher-forced top-1 agreement of "
                         "the device path with the float model over TEXT (repeatable)")
    gn.add_argument("--gguf", metavar="PATH",
                    help="with --model smollm2: run this Llama-architecture GGUF file (its "
                         "weights, tokenizer and chat template) instead of the packaged one")
    gn.add_argument("--score-file", metavar="PATH",
                    help="as --score, for each text of PATH (texts separated by lines "
                         "holding only %%%%; e.g. docs/heldout.txt)")
    gn.add_argument("--ops", choices=("host", "chip"), default="host",
                    help="host: the GEMMs on the accelerator, the other ops on the host, "
                         "scales per token (default); chip: every op on the chip, one "
                         "program per prefill and per token, static scales")
    gn.add_argument("--json", action="store_true", help="print one JSON object")

    rg = sub.add_parser("regress", help="constrained-random regression, RTL vs golden model")
    rg.add_argument("--seeds", type=_positive, default=20, help="how many seeds (default 20)")
    rg.add_argument("--first-seed", type=int, default=0)
    rg.add_argument("--seed", type=int, help="replay this one seed")
    rg.add_argument("--sim", default="both", help="verilator, icarus or both")
    rg.add_argument("--workers", type=_natural, default=None,
                    help="worker processes of the local Dask cluster (default: this "
                         "machine's cores; 0: every seed in this process)")
    rg.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                    help="run on an existing Dask scheduler (default: "
                         "DASK_SCHEDULER_ADDRESS if set, else a local cluster)")
    rg.add_argument("--scheduler-file", default=None,
                    help="the scheduler's JSON file (dask scheduler --scheduler-file)")
    rg.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a progress bar on standard error (default: on a terminal)")

    from serrano.sw import bench
    bench.add_arguments(sub.add_parser("bench", help="the benchmark suite: cycles, roofline, "
                                                     "SCALE-Sim, energy per token"))

    from serrano.sw import fpga
    fpga.add_arguments(sub.add_parser("fpga", help="synthesize, place and route for the "
                                                   "ECP5 LFE5U-85F with YoWASP"))

    from serrano.sw import project
    project.add_arguments(sub.add_parser("project", help="tokens/s and J/token of a model "
                                                         "on a scaled serrano (a projection "
                                                         "from RTL cycles)"))

    lint = sub.add_parser("lint", help="lint the preset's Verilog with verilator -Wall")
    lint.add_argument("--preset", type=_preset, default=get_preset("default"))
    lint.add_argument("--array", action="store_true", help="lint the bare array only")
    return p


def _cmd_verilog(args):
    from serrano.sim.verilog import array_verilog, top_verilog, write_verilog
    what = "bare array serrano_array" if args.array else "accelerator serrano_top"
    if args.output:
        path = write_verilog(args.preset, args.output, top=not args.array,
                             gating=args.gating)
        print(f"wrote {path}: {what}, preset {args.preset.name} "
              f"({args.preset.rows}x{args.preset.cols} array)", file=sys.stderr)
    else:
        cfg = args.preset
        sys.stdout.write(array_verilog(cfg) if args.array
                         else top_verilog(cfg, args.gating))
    return 0


def _cmd_gemm(args):
    from serrano.sw import gemm
    cfg = args.preset
    if args.array:
        if args.weights != "int8":
            raise UsageError("--array feeds int8 weights only; drop --array for "
                             f"--weights {args.weights}")
        if args.backend not in gemm.ARRAY_BACKENDS:
            raise UsageError(f"unknown backend {args.backend!r} for --array; choose one of: "
                             f"{', '.join(gemm.ARRAY_BACKENDS)}")
        report = gemm.run_array_gemm(cfg, args.m, args.k, args.n, args.backend,
                                     seed=args.seed)
    else:
        report = gemm.run_gemm(cfg, args.m, args.k, args.n, args.backend, seed=args.seed,
                               mem_latency=args.mem_latency, check=args.check,
                               weights=args.weights)
    if args.json:
        print(json.dumps(report))
        return 0 if report["bit_exact"] else 1
    r = report
    mode = "bare array" if args.array else "accelerator, program and data in memory"
    print(f"serrano gemm  {r['m']}x{r['k']} @ {r['k']}x{r['n']}  preset {r['preset']} "
          f"({cfg.rows}x{cfg.cols} array)  backend {r['backend']}  "
          f"weights {r.get('weights', 'int8')}  [{mode}]")
    print(f"  bit-exact vs golden model : {'yes' if r['bit_exact'] else 'NO'}")
    if r["cycles"] is not None:
        print(f"  cycles                    : {r['cycles']}")
        print(f"  MAC utilization           : {r['mac_utilization']:.3f}")
    if not args.array and r["cycles"] is not None:
        print(f"  DMA read / written        : {r['dma_read_bytes']} / "
              f"{r['dma_write_bytes']} bytes  (read utilization "
              f"{r['dma_read_utilization']:.3f} of {r['bus_bytes_per_cycle']} B/cycle, "
              f"memory latency {r['mem_latency']} cycles)")
        s = r["stall_cycles"]
        print(f"  exec stalls (cycles)      : weights {s['weight']}, activations {s['act']}, "
              f"store {s['store']}, instructions {s['insn']}")
        print(f"  instructions              : {r['instructions']}")
    print(f"  simulation wall time      : {r['sim_wall_s']:.2f} s"
          + (f" (golden check {r['check_wall_s']:.2f} s)" if r.get("check_wall_s") else ""))
    return 0 if report["bit_exact"] else 1


class _Progress:
    """A one-line progress bar on stderr: calls done, cycles simulated, current op."""

    def __init__(self, stream):
        self.stream = stream
        self.calls = 0
        self.cycles = 0
        self.tty = stream.isatty()

    def __call__(self, ev):
        if ev["event"] == "start":
            line = (f"[{self.calls:3d} calls | {self.cycles:>11,} cycles] "
                    f"running {ev['name']} ({ev['macs']:,} MACs)")
        else:
            self.calls += 1
            self.cycles += ev["cycles"] or 0
            line = (f"[{self.calls:3d} calls | {self.cycles:>11,} cycles] "
                    f"done {ev['name']} in {ev['wall_s']:.1f} s")
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


def _print_json(report):
    """``--json``: one object; exit 1 if the RTL disagreed with the golden model."""
    print(json.dumps(report))
    return 0 if report["bit_exact_vs_golden"] in (True, None) else 1


def _cmd_run(args):
    from serrano.sw.run import run_model
    progress = _Progress(sys.stderr)
    try:
        r = run_model(args.preset, args.model, args.backend, layers=args.layers,
                      seq=args.seq, text=args.text, progress=progress,
                      mem_latency=args.mem_latency, check=args.check,
                      act_bits=args.act_bits, weights=args.weights, host_ops=args.host_ops,
                      gemm_inputs=args.gemm_inputs, per_layer=args.per_layer,
                      stall_profile=args.stall_profile)
    finally:
        progress.close()
    if args.json:
        return _print_json(r)
    cfg = args.preset
    print(f"serrano run  {r['model']}  {r['layers']} layer(s), sequence {r['seq']}  "
          f"preset {r['preset']} ({cfg.rows}x{cfg.cols})  backend {r['backend']}  "
          f"{r['weights']} weights, "
          + (f"every op on the chip, {r['gemm_inputs']} GEMM inputs" if r["ops"] == "chip"
             else "non-GEMM ops on the host"))
    print(f"  cosine vs float32         : {r['cosine_vs_float']:.5f} (final output"
          + (", worst of the texts)" if r["model"] == "minilm" else ")"))
    if r["cosine_per_layer"] is not None:
        print("  cosine per layer          : "
              + ", ".join(f"{c:.5f}" for c in r["cosine_per_layer"]))
    be = r["bit_exact_vs_golden"]
    print(f"  bit-exact vs golden model : {_bit_exact_text(r, be)}")
    if r["cycles"]:
        print(f"  accelerator cycles        : {r['cycles']:,}  (MAC utilization "
              f"{r['mac_utilization']:.3f})")
        e, n = r["energy"], r["tokens_processed"]
        print(f"  energy per token (model)  : {r['joules_per_token'] * 1e6:.2f} uJ (MAC "
              f"{e['mac_j'] / n * 1e6:.2f}, SRAM {e['sram_j'] / n * 1e6:.2f}, DRAM "
              f"{e['dram_j'] / n * 1e6:.2f}; {n} tokens)")
    print(f"  MACs                      : {r['macs']:,}")
    if r.get("stall_profile"):
        sp = r["stall_profile"]
        print(f"  exec unit stalls by MATMUL node (act, insn: before it starts; "
              f"weight: while it runs; sampled every {sp['every']} cycles):")
        print(f"    {'node':<24} {'matmuls':>8} {'act':>10} {'insn':>10} {'weight':>10}")
        for row in sp["by_node"][:12]:
            print(f"    {row['node']:<24} {row['matmuls']:>8,} {row['act']:>10,} "
                  f"{row['insn']:>10,} {row['weight']:>10,}")
        print(f"  vector unit working, by VEC node and op ({r['vector_busy_cycles']:,} "
              f"cycles in all):")
        print(f"    {'node':<24} {'op':<10} {'VECs':>6} {'cycles':>10}")
        for row in sp["vector"][:12]:
            print(f"    {row['node']:<24} {row['vop']:<10} {row['vecs']:>6,} "
                  f"{row['busy']:>10,}")
    print(f"  DMA read / written        : {r['dma_read_bytes']:,} / {r['dma_write_bytes']:,} "
          "bytes")
    print(f"  host round trips          : {r['host_round_trips']}  (host moved "
          f"{r['host_bytes_to_device']:,} bytes in, {r['host_bytes_from_device']:,} out)")
    print(f"  wall time                 : {r['wall_s']:.1f} s (simulation "
          f"{r['sim_wall_s']:.1f} s, golden check {r['check_wall_s']:.1f} s)")
    return 0 if be in (True, None) else 1


def _add_act_bits(p):
    p.add_argument("--act-bits", type=int, choices=(8, 16), default=None,
                   help="bits of the per-token GEMM inputs: 16 (two int8 passes through "
                        "each weight tile; the default) or 8")
    p.add_argument("--weights", choices=WEIGHTS, default=None,
                   help="weight format: int4 (4-bit codes with block scales; the default "
                        "for a 4-bit GGUF file, its own codes) or int8 (the default "
                        "otherwise)")


def _bit_exact_text(r, be):
    if be is not None:
        return be
    return "n/a (golden backend)" if r["backend"] == "golden" else "not checked (--check none)"


def _ops_text(r):
    if r["ops"] == "chip":
        return "every op on chip" + (", int8 GEMM inputs per token"
                                     if r.get("gemm_inputs") == "dynamic" else "")
    return f"{r['act_bits']}-bit inputs per token, host ops"


def _cmd_generate(args):
    from serrano.sw.generate import agreement, generate, read_texts
    if args.score or args.score_file:
        texts = list(args.score or []) + (read_texts(args.score_file) if args.score_file
                                          else [])
        r = agreement(args.preset, args.model, args.backend, texts,
                      act_bits=args.act_bits, mem_latency=args.mem_latency,
                      check=args.check, gguf=args.gguf, weights=args.weights, ops=args.ops)
        if args.json:
            return _print_json(r)
        print(f"serrano generate --score  {r['model']}  backend {r['backend']}: top-1 "
              f"agreement vs float {r['top1_agreement_vs_float']:.3f} over "
              f"{r['positions']} positions ({r['weights']} weights, {_ops_text(r)}; "
              "per text: "
              + ", ".join(f"{t['top1']:.3f}/{t['positions']}" for t in r["per_text"]) + ")")
        return 0 if r["bit_exact_vs_golden"] in (True, None) else 1

    def progress(ev):
        cyc = ("" if ev["cycles"] is None else
               f"{ev['cycles']:,} cycles, bus {ev['bus_utilization']:.3f} busy, ")
        sys.stderr.write(f"[token {ev['index']:3d}] {cyc}{ev['calls']} calls, "
                         f"{ev['wall_s']:.1f} s: {ev['text']!r}\n")
        sys.stderr.flush()

    r = generate(args.preset, args.model, args.backend, prompt=args.prompt, chat=args.chat,
                 max_tokens=args.max_tokens, clock_ghz=args.clock,
                 mem_latency=args.mem_latency, check=args.check, progress=progress,
                 act_bits=args.act_bits, gguf=args.gguf, weights=args.weights, ops=args.ops)
    if args.json:
        return _print_json(r)
    cfg = args.preset
    print(f"serrano generate  {r['model']}  preset {r['preset']} ({cfg.rows}x{cfg.cols})  "
          f"backend {r['backend']}  {r['weights']} weights, {_ops_text(r)}")
    print(f"  prompt ({r['prefill_tokens']} tokens)  : {r['prompt']!r}")
    print(f"  generated ({len(r['generated_ids'])} tokens): {r['text']!r}")
    if r["prefill_cycles"] is not None:
        per = r["decode_cycles_per_token"]
        print(f"  prefill cycles            : {r['prefill_cycles']:,}")
        if per:
            util = r["bus_utilization_per_token"]
            print(f"  cycles per decoded token  : {int(np.mean(per)):,} (read channel "
                  f"{min(util):.3f}-{max(util):.3f} busy; "
                  f"{max(r['cycles_over_bus_roofline']):.3f}x "
                  f"its read+write bytes at the bus peak)")
            print(f"  tokens per second         : {r['tokens_per_s']:.1f} at {r['clock_ghz']} GHz")
            e = r["energy"]
            print(f"  energy per token (model)  : {r['joules_per_token'] * 1e3:.3f} mJ "
                  f"(MAC {e['mac_j'] * 1e3:.3f}, SRAM {e['sram_j'] * 1e3:.3f}, "
                  f"DRAM {e['dram_j'] * 1e3:.3f})")
    if r["host_round_trips_per_token"] is not None:
        print(f"  host round trips per token: {r['host_round_trips_per_token']}")
    print(f"  top-1 agreement vs float  : {r['top1_agreement_vs_float']:.3f} (teacher-forced)")
    same = "the same" if r["same_as_float_greedy"] else f"differs: {r['float_greedy_text']!r}"
    print(f"  float model's greedy text : {same}")
    be = r["bit_exact_vs_golden"]
    print(f"  bit-exact vs golden model : {_bit_exact_text(r, be)}")
    check = (f", golden check {r['check_wall_s']:.1f} s beside it" if r["check_wall_s"]
             else "")
    print(f"  wall time                 : {r['wall_s']:.1f} s (simulation "
          f"{r['sim_wall_s']:.1f} s{check})")
    return 0 if be in (True, None) else 1


def _cmd_regress(args):
    from serrano.sw.regress import run_campaign
    sims = {"both": ("verilator", "icarus"), "verilator": ("verilator",),
            "icarus": ("icarus",)}.get(args.sim)
    if sims is None:
        raise UsageError(f"--sim must be verilator, icarus or both, not {args.sim!r}")
    if args.seed is not None:                  # a replay: here, with its traceback
        ok, _ = run_campaign(1, sims, first_seed=args.seed, progress=False, shrink=True)
    else:
        workers = (os.cpu_count() or 1) if args.workers is None else args.workers
        ok, _ = run_campaign(args.seeds, sims, first_seed=args.first_seed, workers=workers,
                             scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                             progress=args.progress)
    return 0 if ok else 1


def _cmd_bench(args):
    from serrano.sw import bench
    return bench.run(args)


def _cmd_fpga(args):
    from serrano.sw import fpga
    return fpga.run(args)


def _cmd_project(args):
    from serrano.sw import project
    return project.run(args)


def _cmd_lint(args):
    from serrano.sim.lint import lint_report
    ok, text = lint_report(args.preset, top=not args.array)
    print(text)
    return 0 if ok else 1


def _host_threads(args):
    """The BLAS thread pool of a command that simulates the RTL: one thread. The
    simulator's thread and the golden model's (:mod:`sw.runtime`) keep this 2-core
    machine's cores busy; BLAS threads waiting for work beside them only take cycles
    from them (``make demo``, one run each: 4 min 15 s and 5 min 19 s of CPU with
    OpenBLAS's default pool, 4 min 11 s and 4 min 45 s with one thread)."""
    if getattr(args, "backend", "golden") == "golden":
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(limits=1, user_api="blas")


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        with _host_threads(args):
            return {"verilog": _cmd_verilog, "gemm": _cmd_gemm, "lint": _cmd_lint,
                    "run": _cmd_run, "regress": _cmd_regress, "generate": _cmd_generate,
                    "bench": _cmd_bench, "fpga": _cmd_fpga,
                    "project": _cmd_project}[args.command](args)
    except (UsageError, ConfigError, ValueError) as e:
        print(f"serrano: error: {e}", file=sys.stderr)
        return 2
    except (ToolNotFound, ModelNotInstalled, LlamaNotInstalled) as e:
        print(f"serrano: error: {e}", file=sys.stderr)
        return 2
    except SimulationFailed as e:
        print(f"serrano: simulation failed: {e}", file=sys.stderr)
        return 1
    except DeviceError as e:
        print(f"serrano: device error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("serrano: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
