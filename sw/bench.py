"""``serrano bench``: the benchmark suite, with roofline, SCALE-Sim comparison and energy.

Every number in the report is measured in this run (the accelerator's own counters,
read at the end of each program) or computed from measured numbers by a formula stated
here; nothing is copied from an earlier run.

The suite (``--preset default`` unless told otherwise; ``--quick`` runs a reduced set):

* **GEMMs**: prefill ``M = 128`` and decode ``M = 1`` with ``(K, N)`` in
  :data:`GEMM_SHAPES`, through :func:`sw.gemm.run_gemm` (random int8 operands, checked
  bit-exactly against numpy and the golden ISA model), and :data:`INT4_GEMMS` again with
  4-bit weights (``sw/q4.py``).
* **layer**: one MiniLM encoder layer at sequence 128 on a fixed sentence
  (:func:`sw.run.run_model`, 16-bit inputs); 6 accelerator calls (Q, K and V; scores;
  context; the output projection; FFN up; FFN down), softmax, LayerNorm, GELU and the
  residual adds on the host between them.
* **llm**: SmolLM2's prefill of :data:`LLM_PREFILL` tokens and its next decoded token, two
  entries (``llm_prefill``, ``llm_decode``; ``--quick``: llama-tiny), every call on the
  backend, 16-bit inputs as two int8 rows per token; once with int8 weights, once with
  the file's own 4-bit codes.

The report pairs each 4-bit entry with its int8 twin (:func:`int4_pairs`): the speed-up
in cycles against the ratio of bytes read, and the energy of each.
* **decode**: one decode step of the tiny decoder (``gpt-tiny``) against a KV cache of
  128 tokens; the prefill that builds the cache runs on the golden backend, only the
  decode step on the RTL (:func:`run_decode_step`).

Per entry, besides the counters: ``roofline_cycles = max(ceil(MACs / (R*C)),
ceil(DMA bytes / bus_bytes))`` (DMA bytes read plus written: one DRAM data bus), the
ratio of measured cycles to it, SCALE-Sim's weight-stationary estimate
(:func:`scalesim_ws_cycles`, summed over the GEMMs of a layer or decode step) and the
ratio to it, and the energy estimate of :mod:`sw.energy` (a model from counted events,
not a measurement of silicon). The simulation rate of Verilator and Icarus is measured on
one small ``tiny``-preset GEMM run on both, in the same run.

Outputs in ``--out`` (default ``build/bench``): ``report.json``, ``report.md``,
``roofline.png`` and ``layer_breakdown.png``. Progress goes to stderr.
"""

import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

from serrano.hw.config import get_preset
from . import energy

__all__ = ["GEMM_SHAPES", "PREFILL_M", "DECODE_M", "LAYER_SEQ", "DECODE_CACHE", "LAYER_TEXT",
           "add_arguments", "run", "run_suite", "suite", "scalesim_ws_cycles",
           "roofline_cycles", "gemm_program", "run_decode_step", "measure_sim_rate",
           "int4_pairs", "INT4_GEMMS",
           "write_outputs", "markdown"]

#: ``(K, N)`` of the suite's GEMMs: MiniLM's projections (384 -> 384, 384 -> 1536,
#: 1536 -> 384) and a BERT-base-sized square one.
GEMM_SHAPES = ((384, 384), (384, 1536), (1536, 384), (768, 768))
PREFILL_M = 128
DECODE_M = 1
LAYER_SEQ = 128
DECODE_CACHE = 128
LAYER_TEXT = "The accelerator streams weights from memory while the array computes."
#: The language-model entries: SmolLM2's prefill of the first ``LLM_PREFILL`` tokens of
#: ``LLM_PROMPT``, then one decoded token (--quick: llama-tiny, ``QUICK_LLM_PREFILL``).
LLM_PREFILL = 64
LLM_PROMPT = ("Write a short story about a lighthouse keeper who finds a message in a bottle "
              "on a stormy night. The story should be about three paragraphs long, with a "
              "calm beginning, a tense middle when the storm is at its worst, and a hopeful "
              "ending at dawn, when the keeper walks slowly down to the old stone harbour.")
QUICK_LLM_PREFILL = 12
#: GEMMs the suite also runs with 4-bit weights (``sw/q4.py``), beside their int8 runs.
INT4_GEMMS = ((PREFILL_M, 768, 768), (DECODE_M, 768, 768))
INT4_SUFFIX = ", int4 weights"

# --quick: two GEMMs, the tiny encoder layer, the decode step (fast enough for tests).
QUICK_GEMMS = ((16, 32, 32), (1, 32, 32))
QUICK_LAYER_SEQ = 16
QUICK_DECODE_CACHE = 32

# Simulation rate: GEMMs (M, K, N) on the tiny preset, run on both simulators; the rate
# is taken on the last one. The full suite also runs one of half the length, so the
# report shows how much of a run's wall time is its fixed cost (process start, memory
# image in and out) rather than simulation.
SIM_RATE_PRESET = "tiny"
SIM_RATE_WORKLOADS = ((64, 64, 64), (128, 64, 64))
QUICK_SIM_RATE_WORKLOADS = ((32, 32, 32),)
BARE_LOOP_CYCLES = 300_000
STALLS = ("weight", "act", "store", "insn")


# ---- formulas ------------------------------------------------------------------------------

def _ceil_div(a, b):
    return -(-a // b)


def scalesim_ws_cycles(m, k, n, rows, cols):
    """SCALE-Sim's weight-stationary cycle count of an ``M x K`` by ``K x N`` GEMM on an
    ``R x C`` array: ``ceil(K/R) * ceil(N/C) * (2R + C + M - 2)``.

    Each of the ``ceil(K/R) * ceil(N/C)`` weight tiles costs ``R`` cycles to load (not
    overlapped with compute), ``M`` rows streamed, and ``R + C - 2`` of fill and drain
    (A. Samajdar et al., "SCALE-Sim: Systolic CNN Accelerator Simulator", 2018, and
    "A Systematic Methodology for Characterizing Scalability of DNN Accelerators using
    SCALE-Sim", ISPASS 2020: the analytical runtime of the weight-stationary dataflow).
    """
    for name, v in (("m", m), ("k", k), ("n", n), ("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    return _ceil_div(k, rows) * _ceil_div(n, cols) * (2 * rows + cols + m - 2)


def roofline_cycles(cfg, macs, dma_bytes):
    """The fewest cycles the work can take: ``max(ceil(macs / (R*C)),
    ceil(dma_bytes / bus_bytes))`` (the compute roof and the memory-bus roof)."""
    return max(_ceil_div(macs, cfg.macs), _ceil_div(dma_bytes, cfg.bus_bytes))


# ---- programs and runs ------------------------------------------------------------------------

def gemm_program(cfg, m, k, n, weights="int8"):
    """The program :func:`sw.gemm.run_gemm` runs for an ``m x k`` by ``k x n`` GEMM (its
    structure depends only on the shapes and the weight format), as bytes."""
    from serrano.hw.isa import INSN_BYTES
    from .compiler import compile_gemm
    from . import q4
    zeros = np.zeros(n, np.int64)
    w = np.zeros((k, n), np.int8)
    if weights == "int4":
        nb = -(-k // cfg.weight_block)
        w = q4.Q4Weights(np.zeros((k, n), np.uint8), np.zeros((nb, n), np.uint8),
                         np.zeros((nb, n), np.int8), np.ones(n), cfg.weight_block)
    layout = compile_gemm(cfg, np.zeros((m, k), np.int8), w, zeros, zeros, zeros)
    start = layout.prog_addr
    return layout.image[start:start + layout.prog_len * INSN_BYTES].tobytes()


def run_decode_step(cfg, backend, cache_len=DECODE_CACHE, progress=None, mem_latency=30):
    """One decode step of ``gpt-tiny`` against a KV cache of ``cache_len`` tokens.

    The prefill that builds the cache runs on the golden backend; the decode step then
    runs on ``backend`` from a copy of that device memory (weights stay where the prefill
    put them). Returns ``(device, info)``: the device (open) holds only the decode step's
    calls, ``info`` the cosine of the step's output against the float32
    decoder and the host traffic.
    """
    from . import transformer as T
    from .models import layers as L
    from .models import synthetic
    from .run import cosine
    from .runtime import Device
    w, shape = synthetic.gpt_tiny(0)
    samples = [synthetic.random_inputs(shape, cache_len + 1, seed=100 + s) for s in range(4)]
    q = T.calibrate_decoder(w, shape, samples)
    x = synthetic.random_inputs(shape, cache_len + 1, seed=1)
    with Device(cfg, "golden") as gold:
        _, cache = T.decoder_prefill(gold, q, x[:cache_len])
        state = gold.snapshot()
    dev = Device(cfg, backend, mem_latency=mem_latency, progress=progress)
    dev.restore(state)                            # weights and cache state, not counted
    y_new, _ = T.decoder_decode(dev, q, x[cache_len], cache)
    _, ref_cache = L.decoder_prefill(x[:cache_len], w, shape)
    ref_new, _ = L.decoder_decode(x[cache_len], w, shape, ref_cache)
    return dev, {"cosine_vs_float": cosine(y_new, ref_new),
                 "host_bytes_to_device": dev.bytes_to_device,
                 "host_bytes_from_device": dev.bytes_from_device}


# ---- entries ------------------------------------------------------------------------------

def _entry(cfg, *, name, kind, cycles, macs, counters, structure, scalesim, constants,
           extra=None, tokens=None, host_round_trips=None):
    """One report entry from measured counters and the program structure."""
    dma_rd, dma_wr = counters["dma_read_bytes"], counters["dma_write_bytes"]
    roof = roofline_cycles(cfg, macs, dma_rd + dma_wr)
    counts = {"array_cycles": counters["array_cycles"], "dma_read_bytes": dma_rd,
              "dma_write_bytes": dma_wr,
              **{k: structure[k] for k in (*energy.COUNT_KEYS, "store_raw_rows", "block_rows")
                 if k in structure}}
    if tokens is not None:
        counts["tokens"] = tokens
    if host_round_trips is not None:
        counts["host_round_trips"] = host_round_trips
    mismatches = energy.counter_mismatches(structure, counters)
    return {
        "name": name, "kind": kind,
        **(extra or {}),
        "cycles": cycles, "macs": macs,
        "array_cycles": counters["array_cycles"],
        "mac_utilization": macs / (cycles * cfg.macs),
        "dma_read_bytes": dma_rd, "dma_write_bytes": dma_wr,
        "dma_read_utilization": dma_rd / (cycles * cfg.bus_bytes),
        "operational_intensity": macs / (dma_rd + dma_wr),
        "macs_per_cycle": macs / cycles,
        "roofline_cycles": roof,
        "roofline_bound": ("compute" if _ceil_div(macs, cfg.macs)
                           >= _ceil_div(dma_rd + dma_wr, cfg.bus_bytes) else "memory"),
        "cycles_over_roofline": cycles / roof,
        "stall_cycles": {s: counters[f"stall_{s}"] for s in STALLS},
        "host_round_trips": host_round_trips,
        "instructions": counters.get("instructions"),
        "scalesim_ws_cycles": scalesim,
        "cycles_over_scalesim": cycles / scalesim,
        "structure_matches_counters": not mismatches,
        "structure_mismatches": mismatches,
        "energy": energy.estimate(cfg, counts, constants),
    }


def _gemm_entry(cfg, m, k, n, weights, backend, constants, mem_latency):
    from .gemm import run_gemm
    r = run_gemm(cfg, m, k, n, backend, mem_latency=mem_latency, weights=weights)
    structure = energy.program_counts(cfg, [gemm_program(cfg, m, k, n, weights)])
    counters = {"array_cycles": r["array_cycles"], "dma_read_bytes": r["dma_read_bytes"],
                "dma_write_bytes": r["dma_write_bytes"], "instructions": r["instructions"],
                **{f"stall_{s}": v for s, v in r["stall_cycles"].items()}}
    label = "prefill GEMM" if m > 1 else "decode GEMV"
    return _entry(cfg, name=f"{label} {m}x{k}x{n}{_suffix(weights)}", kind="gemm",
                  cycles=r["cycles"],
                  macs=r["macs"], counters=counters, structure=structure,
                  scalesim=scalesim_ws_cycles(m, k, n, cfg.rows, cfg.cols),
                  constants=constants,
                  extra={"m": m, "k": k, "n": n, "weights": weights,
                         "bit_exact": r["bit_exact"],
                         "sim_wall_s": r["sim_wall_s"]}), r["bit_exact"]


def _suffix(weights):
    """Entry names: int8 entries keep their plain names, 4-bit ones say so."""
    return INT4_SUFFIX if weights == "int4" else ""


def _device_counters(calls):
    keys = ("cycles", "array_cycles", "dma_read_bytes", "dma_write_bytes", "instructions",
            *(f"stall_{s}" for s in STALLS))
    return {k: sum(c.counters[k] for c in calls) for k in keys}


def _per_op(calls):
    ops = []
    for c in calls:
        cnt = c.counters
        stalls = {s: cnt[f"stall_{s}"] for s in STALLS}
        ops.append({"name": c.name, "cycles": c.cycles, "macs": c.macs,
                    "array_cycles": cnt["array_cycles"], "stall_cycles": stalls,
                    "other_cycles": c.cycles - cnt["array_cycles"] - sum(stalls.values()),
                    "dma_read_bytes": cnt["dma_read_bytes"],
                    "dma_write_bytes": cnt["dma_write_bytes"]})
    return ops


def _device_entry(cfg, dev, *, name, kind, tokens, constants, extra, calls=None):
    """An entry of ``calls`` (default: every call ``dev`` made), one host round trip
    each."""
    calls = dev.calls if calls is None else calls
    counters = _device_counters(calls)
    from .isa_model import decode_program
    structure = energy.program_counts(cfg, [decode_program(c.program) for c in calls])
    gemms = [g for c in calls for g in c.gemms]
    scalesim = sum(scalesim_ws_cycles(m, k, n, cfg.rows, cfg.cols) for m, k, n in gemms)
    macs = sum(c.macs for c in calls)
    e = _entry(cfg, name=name, kind=kind, cycles=counters["cycles"], macs=macs,
               counters=counters, structure=structure, scalesim=scalesim,
               constants=constants, tokens=tokens, host_round_trips=len(calls),
               extra=extra)
    e["gemms"] = [list(g) for g in gemms]
    e["per_op"] = _per_op(calls)
    return e


def _layer_entry(cfg, backend, constants, mem_latency, quick, progress):
    if quick:
        model, kw = "bert-tiny", {"seq": QUICK_LAYER_SEQ}
    else:
        model, kw = "minilm", {"layers": 1, "seq": LAYER_SEQ, "text": LAYER_TEXT}
    from .run import run_model_on
    r, dev = run_model_on(cfg, model, backend, progress=progress, mem_latency=mem_latency,
                          host_ops=True, **kw)
    extra = {"model": model, "seq": r["seq"],
             "bit_exact": r["bit_exact_vs_golden"], "cosine_vs_float": r["cosine_vs_float"],
             "host_bytes_to_device": r["host_bytes_to_device"],
             "host_bytes_from_device": r["host_bytes_from_device"],
             "sim_wall_s": r["sim_wall_s"], "wall_s": r["wall_s"]}
    if model == "minilm":
        extra.update({"text": LAYER_TEXT, "text_tokens": r["tokens"][0]})
    e = _device_entry(cfg, dev, name=f"{model} layer, seq {r['seq']}", kind="layer",
                      tokens=r["seq"], constants=constants, extra=extra)
    # Cross-check with run_model's own totals (the same counters, summed by sw.run).
    for key in ("cycles", "macs", "dma_read_bytes", "dma_write_bytes", "host_round_trips"):
        if e[key] != r[key]:
            raise RuntimeError(f"{key}: recorded {e[key]} but run_model reports {r[key]}")
    dev.close()
    return e, bool(r["bit_exact_vs_golden"])


def _decode_entry(cfg, backend, constants, mem_latency, quick, progress):
    cache = QUICK_DECODE_CACHE if quick else DECODE_CACHE
    dev, info = run_decode_step(cfg, backend, cache, progress=progress,
                                mem_latency=mem_latency)
    extra = {"model": "gpt-tiny", "cache_tokens": cache, "bit_exact": dev.bit_exact,
             **info, "sim_wall_s": round(dev.sim_wall_s, 3)}
    e = _device_entry(cfg, dev, name=f"gpt-tiny decode step, cache {cache}", kind="decode",
                      tokens=1, constants=constants, extra=extra)
    dev.close()
    return e, bool(dev.bit_exact)


def _llm_entries(cfg, weights, backend, constants, mem_latency, quick, progress):
    """A language model's prefill and its next decoded token, as two entries, with
    ``weights`` (``int4``: SmolLM2's own 4-bit codes, llama-tiny's quantized)."""
    from . import generate as G
    from .nn.device_exec import DeviceExecutor
    from .runtime import Device
    name = "llama-tiny" if quick else "smollm2"
    model, encode, _ = G._load(name)
    graph, params = G._model_graph(model)
    q4, _ = G._q4(cfg, model, graph, params, weights)
    ids = np.array(encode(LLM_PROMPT))[:QUICK_LLM_PREFILL if quick else LLM_PREFILL]
    with Device(cfg, backend, mem_latency=mem_latency, progress=progress) as dev:
        ex = DeviceExecutor(dev, graph, params, positions=len(ids) + 1, q4=q4)
        state = {}
        logits = ex.run({"ids": ids, "pos": np.arange(len(ids))}, state)["logits"]
        n0 = len(dev.calls)
        ex.run({"ids": np.array([int(np.argmax(logits[-1]))]),
                "pos": np.array([len(ids)])}, state)
        extra = {"model": name, "act_bits": ex.act_bits, "weights": weights,
                 "bit_exact": dev.bit_exact}

        def wall(calls):
            return {"sim_wall_s": round(sum(c.wall_s for c in calls), 3)}
        pre = _device_entry(cfg, dev,
                            name=f"{name} prefill, {len(ids)} tokens{_suffix(weights)}",
                            kind="llm_prefill", tokens=len(ids), constants=constants,
                            extra=dict(extra, tokens=len(ids), **wall(dev.calls[:n0])),
                            calls=dev.calls[:n0])
        dec = _device_entry(cfg, dev,
                            name=f"{name} decode, 1 token after {len(ids)}{_suffix(weights)}",
                            kind="llm_decode", tokens=1, constants=constants,
                            extra=dict(extra, cache_tokens=len(ids), **wall(dev.calls[n0:])),
                            calls=dev.calls[n0:])
        good = dev.bit_exact in (True, None)
    return [pre, dec], good


def suite(quick=False):
    """The entries the suite runs, in order: ``(kind, parameters)``."""
    if quick:
        gemms = [(*g, "int8") for g in QUICK_GEMMS] + [(*QUICK_GEMMS[-1], "int4")]
    else:
        gemms = ([(m, k, n, "int8") for m in (PREFILL_M, DECODE_M) for k, n in GEMM_SHAPES]
                 + [(m, k, n, "int4") for m, k, n in INT4_GEMMS])
    return ([("gemm", g) for g in gemms] + [("layer", None), ("decode", None),
                                             ("llm", ("int8",)), ("llm", ("int4",))])


# ---- simulation rate ------------------------------------------------------------------------

def bare_loop_rate(cfg, cycles=BARE_LOOP_CYCLES, repeats=3):
    """Cycles per second of the fast simulator's bare loop on ``cfg``: the Verilated model
    clocked with every input idle and no memory model, the ceiling of any harness for
    this RTL (best of ``repeats`` runs of ``cycles``)."""
    from serrano.sim.fastsim import FastSim
    from .backends import verilator_library
    with FastSim(cfg, 1 << 20, path=verilator_library(cfg)) as sim:
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            sim.bare_loop(cycles)
            best = max(best, cycles / (time.perf_counter() - t0))
    return best


def measure_sim_rate(workloads=SIM_RATE_WORKLOADS, log=None, mem_latency=30):
    """Simulated cycles per wall-clock second of every backend on the same ``tiny``-preset
    GEMMs, and the bare loop.

    Each backend gets one :class:`sw.runtime.Device` (``check="none"``), built before the
    clock starts and kept for every workload; a run's wall time is the backend's, from
    the launch of the program to its collected end (register accesses included). The
    rate is taken on the last workload. ``golden`` counts no cycles: its rate is the RTL's
    cycles of the same program over the ISA model's wall time. ``runs`` lists
    ``[m, k, n, cycles, wall_s]`` of every run."""
    from serrano.sim import toolenv
    from .backends import available, backend_names
    from .gemm import run_gemm
    from .runtime import Device
    cfg = get_preset(SIM_RATE_PRESET)
    out = {"workload": {"preset": cfg.name, "gemms": [list(w) for w in workloads],
                        "rate_on": list(workloads[-1])}}
    runs = out["runs"] = {}
    order = ["verilator"] + [b for b in backend_names() if b != "verilator"]
    for name in order:
        ok, reason = available(name)
        if not ok:
            out[f"{name}_cycles_per_s"] = None
            out[f"{name}_missing"] = reason
            if log:
                log(f"sim rate: {name} not available ({reason})")
            continue
        runs[name] = []
        with Device(cfg, name, mem_latency=mem_latency, check="none") as dev:
            for i, (m, k, n) in enumerate(workloads):
                r = run_gemm(cfg, m, k, n, name, mem_latency=mem_latency, check="none",
                             device=dev)
                if not r["bit_exact"]:
                    raise RuntimeError(f"sim-rate GEMM {m}x{k}x{n} on {name} is wrong")
                cycles = r["cycles"]
                if cycles is None:            # golden: the RTL's cycles of this workload
                    cycles = (runs["verilator"][i][3] if runs.get("verilator") else None)
                runs[name].append([m, k, n, cycles, r["sim_wall_s"]])
                if log:
                    log(f"sim rate: {name} {m}x{k}x{n} on {cfg.name}: "
                        f"{_n(cycles)} cycles in {r['sim_wall_s']:.3f} s")
        *_, cycles, wall = runs[name][-1]
        out[f"{name}_cycles_per_s"] = cycles / wall if cycles and wall else None
        out[f"{name}_cycles"] = cycles
        out[f"{name}_wall_s"] = wall
    v, i = out.get("verilator_cycles_per_s"), out.get("icarus_cycles_per_s")
    out["ratio"] = v / i if v and i else None
    if toolenv.have_verilator():
        out["bare_loop_cycles_per_s"] = {cfg.name: bare_loop_rate(cfg)}
        if log:
            log(f"sim rate: bare loop on {cfg.name}: "
                f"{out['bare_loop_cycles_per_s'][cfg.name]:,.0f} cycles/s")
    return out


def call_overhead(cfg, backend, calls=50, mem_latency=30):
    """Wall seconds of one accelerator call of a one-instruction program (``END``) on a
    running :class:`sw.runtime.Device` (``check="none"``), the median of ``calls``:
    the fixed cost of a call (register sequences, the start and the interrupt)."""
    from .isa_model import Program
    from .runtime import Device
    prog = Program()
    prog.end()
    with Device(cfg, backend, mem_latency=mem_latency, check="none") as dev:
        addr = dev.put(np.frombuffer(bytes(prog), np.uint8))
        walls = []
        for _ in range(calls):
            t0 = time.perf_counter()
            dev.run(addr, 1)
            walls.append(time.perf_counter() - t0)
    return float(np.median(walls))


def _gemm_rate(backend, lay):
    """Cycles and cycles per second of one run of the compiled GEMM ``lay`` on a
    backend (its memory written first, not timed)."""
    from serrano.hw import regs
    backend.write_mem(0, lay.image)
    t0 = time.perf_counter()
    out = regs.drive(regs.run_program(lay.prog_addr, lay.prog_len, 0, len(lay.image), 10**9),
                     write=backend.write_reg, read=backend.read_reg,
                     wait_irq=backend.wait_irq)
    return out.counters["cycles"], out.counters["cycles"] / (time.perf_counter() - t0)


def build_study(preset="default", cycles=200_000, rounds=7, gemm=(128, 768, 768),
                log=None):
    """What each build option of the fast simulator gains: build every variant of
    :data:`sim.fastsim.STUDY` for ``preset`` (each adds one option to the one before),
    load them all in this process and measure them in turns, round after round, so that
    the machine's drift hits every variant alike: the bare loop (``rounds`` runs of
    ``cycles``; median and best) and one GEMM through the accelerator (``rounds // 2``
    runs). Returns a list of dicts."""
    from serrano.sim.fastsim import _LINT_ARGS, STUDY, build
    from .pgo import COMMAND as PGO_COMMAND
    from . import compiler, gemm as G, golden
    from .backends import VerilatorBackend
    cfg = get_preset(preset)
    m, k, n = gemm
    a, w = G.random_operands(m, k, n, 0)
    lay = compiler.compile_gemm(cfg, a, w, *G.random_requant(golden.matmul(a, w), 0))
    rows, backends = [], []
    for label, args, opt, pgo, gating in STUDY:
        t0 = time.perf_counter()
        path = build(cfg, verilator_args=args + _LINT_ARGS, opt_fast=opt,
                     train=PGO_COMMAND if pgo else None, gating=gating)
        rows.append({"variant": label, "verilator_args": " ".join(args), "opt_fast": opt,
                     "profile_guided": pgo, "gating": gating,
                     "build_s": round(time.perf_counter() - t0, 1), "bare": [], "gemm": []})
        backends.append(VerilatorBackend(cfg, mem_bytes=64 << 20, path=path))
        if log:
            log(f"built: {label}")
    try:
        for r in range(rounds):
            for row, be in zip(rows, backends):
                t0 = time.perf_counter()
                be.sim.bare_loop(cycles)
                row["bare"].append(cycles / (time.perf_counter() - t0))
                if r < max(1, rounds // 2):
                    row["gemm_cycles"], rate = _gemm_rate(be, lay)
                    row["gemm"].append(rate)
            if log:
                log(f"round {r + 1}/{rounds}")
    finally:
        for be in backends:
            be.close()
    for row in rows:
        bare, g = row.pop("bare"), row.pop("gemm")
        row.update(bare_loop_cycles_per_s=round(float(np.median(bare))),
                   bare_loop_best=round(max(bare)),
                   gemm_cycles_per_s=round(float(np.median(g))), gemm_best=round(max(g)))
        if log:
            log(json.dumps(row))
    return rows


def suite_sim_rates(cfg, backend, entries, log=None):
    """The simulation rate of each suite entry (cycles over the backend's wall time) and,
    on Verilator, the bare loop of the suite's preset and each rate's fraction of it."""
    bare = bare_loop_rate(cfg) if backend == "verilator" else None
    rows = []
    for e in entries:
        wall = e.get("sim_wall_s")
        if not wall:
            continue
        rate = e["cycles"] / wall
        rows.append({"name": e["name"], "cycles": e["cycles"], "sim_wall_s": wall,
                     "cycles_per_s": rate, "of_bare_loop": rate / bare if bare else None})
    overhead = call_overhead(cfg, backend) if backend == "verilator" else None
    if log and bare:
        log(f"bare loop on {cfg.name}: {bare:,.0f} cycles/s; one-instruction call "
            f"{overhead * 1e3:.2f} ms")
    return {"preset": cfg.name, "backend": backend, "bare_loop_cycles_per_s": bare,
            "call_overhead_s": overhead, "entries": rows}


# ---- the suite --------------------------------------------------------------------------------

class _Log:
    """Progress lines on stderr: one per entry, and one per accelerator call."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        self.stream.write(f"[bench {time.perf_counter() - self.t0:7.1f} s] {msg}\n")
        self.stream.flush()

    def device(self, ev):
        if ev["event"] == "end":
            self(f"    call {ev['name']}: {ev['cycles']:,} cycles, {ev['macs']:,} MACs, "
                 f"{ev['wall_s']:.1f} s")


def run_suite(cfg, backend, *, quick=False, constants=None, mem_latency=30, log=None):
    """Run the suite on ``cfg`` and ``backend``; return the report dict (without
    ``command``). ``log`` is a callable taking one line (default: stderr)."""
    _check_timed(backend)
    log = log or _Log()
    dev_progress = getattr(log, "device", None)
    k = energy.load_constants(constants)
    plan = suite(quick)
    entries, ok = [], True
    for i, (kind, params) in enumerate(plan, 1):
        what = f"{kind} {' '.join(map(str, params))}" if params else kind
        log(f"({i}/{len(plan)}) {what} on {cfg.name} ({cfg.rows}x{cfg.cols}), {backend}")
        t0 = time.perf_counter()
        if kind == "gemm":
            es, good = _gemm_entry(cfg, *params, backend, k, mem_latency)
        elif kind == "layer":
            es, good = _layer_entry(cfg, backend, k, mem_latency, quick, dev_progress)
        elif kind == "decode":
            es, good = _decode_entry(cfg, backend, k, mem_latency, quick, dev_progress)
        else:
            es, good = _llm_entries(cfg, *params, backend, k, mem_latency, quick,
                                    dev_progress)
        for e in es if isinstance(es, list) else [es]:
            ok &= good and e["structure_matches_counters"]
            for msg in e["structure_mismatches"]:
                log(f"    WARNING: program structure and counters disagree: {msg}")
            log(f"    {e['name']}: {e['cycles']:,} cycles, MAC utilization "
                f"{e['mac_utilization']:.3f}, {e['cycles_over_roofline']:.3f} x roofline, "
                f"{e['energy']['total_j'] * 1e6:.2f} uJ (model), bit-exact {good}, "
                f"{time.perf_counter() - t0:.1f} s")
            entries.append(e)
    log("simulation rate: every backend on the same tiny-preset GEMM, and the bare loop")
    rate = measure_sim_rate(QUICK_SIM_RATE_WORKLOADS if quick else SIM_RATE_WORKLOADS,
                            log=log, mem_latency=mem_latency)
    rate["suite"] = suite_sim_rates(cfg, backend, entries, log=log)
    report = {
        "preset": cfg.name, "backend": backend, "quick": quick,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": cfg.to_dict(), "mem_latency": mem_latency,
        "all_bit_exact": ok,
        "energy_note": energy.NOTE,
        "energy_constants": k,
        "entries": entries,
        "sim_rate": rate,
    }
    report["int4_vs_int8"] = int4_pairs(report)
    return report


# ---- outputs --------------------------------------------------------------------------------

def _n(v):
    return "" if v is None else f"{v:,}"


def int4_pairs(report):
    """Each 4-bit entry beside its int8 twin: ``name``, both entries' ``cycles``, read
    bytes and joules, ``speedup`` (int8 cycles over int4 cycles), ``byte_ratio`` (int8
    read bytes over int4 read bytes) and ``speedup_of_byte_ratio``."""
    by_name = {e["name"]: e for e in report["entries"]}
    rows = []
    for e in report["entries"]:
        if not e["name"].endswith(INT4_SUFFIX):
            continue
        twin = by_name.get(e["name"][:-len(INT4_SUFFIX)])
        if twin is None:
            continue
        speedup = twin["cycles"] / e["cycles"]
        ratio = twin["dma_read_bytes"] / e["dma_read_bytes"]
        rows.append({"name": twin["name"], "int8_cycles": twin["cycles"],
                     "int4_cycles": e["cycles"], "int8_read_bytes": twin["dma_read_bytes"],
                     "int4_read_bytes": e["dma_read_bytes"], "speedup": speedup,
                     "byte_ratio": ratio, "speedup_of_byte_ratio": speedup / ratio,
                     "int8_j": twin["energy"]["total_j"], "int4_j": e["energy"]["total_j"],
                     "int4_cycles_over_roofline": e["cycles_over_roofline"],
                     "int4_mac_utilization": e["mac_utilization"]})
    return rows


def markdown(report):
    """The report as Markdown: the main table, the energy table, the simulation rate."""
    cfg = report["config"]
    lines = [
        f"# serrano bench: preset `{report['preset']}` ({cfg['rows']}x{cfg['cols']}, "
        f"{cfg['bus_bytes']} B/cycle bus), backend {report['backend']}",
        "",
        f"`{report.get('command', '')}`, {report['date']}, memory read latency "
        f"{report['mem_latency']} cycles. Every number is measured in this run or computed "
        "from measured counters; the energies are **model estimates from counted events, "
        "not measurements of silicon**.",
        "",
        "| entry | kind | cycles | MACs | MAC util | DMA read / write bytes | DMA read util "
        "| roofline cycles | cycles / roofline | SCALE-Sim WS cycles | cycles / SCALE-Sim "
        "| stalls weight / act / store / insn | host round trips | bit-exact |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in report["entries"]:
        s = e["stall_cycles"]
        lines.append(
            f"| {e['name']} | {e['kind']} | {_n(e['cycles'])} | {_n(e['macs'])} "
            f"| {e['mac_utilization']:.3f} | {_n(e['dma_read_bytes'])} / "
            f"{_n(e['dma_write_bytes'])} | {e['dma_read_utilization']:.3f} "
            f"| {_n(e['roofline_cycles'])} ({e['roofline_bound']}) "
            f"| {e['cycles_over_roofline']:.3f} | {_n(e['scalesim_ws_cycles'])} "
            f"| {e['cycles_over_scalesim']:.3f} "
            f"| {s['weight']:,} / {s['act']:,} / {s['store']:,} / {s['insn']:,} "
            f"| {_n(e['host_round_trips'])} | {e['bit_exact']} |")
    lines += [
        "",
        "## Energy (model estimate, Horowitz ISSCC 2014 45 nm; not a silicon measurement)",
        "",
        "| entry | total uJ | MAC uJ | requant uJ | block scaler uJ | SRAM uJ | DRAM uJ "
        "| J per token | pJ per MAC (total / MACs) | host round trips (not in the total) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in report["entries"]:
        en = e["energy"]
        jpt = en.get("joules_per_token")
        lines.append(
            f"| {e['name']} | {en['total_j'] * 1e6:.3f} | {en['mac_j'] * 1e6:.3f} "
            f"| {en['requant_j'] * 1e6:.3f} | {en['scale_j'] * 1e6:.3f} "
            f"| {en['sram_j'] * 1e6:.3f} "
            f"| {en['dram_j'] * 1e6:.3f} "
            f"| {'' if jpt is None else f'{jpt:.3e}'} "
            f"| {en['total_j'] * 1e12 / e['macs']:.2f} "
            f"| {_n(e['host_round_trips'])} |")
    pairs = int4_pairs(report)
    if pairs:
        lines += ["", "## 4-bit weights against int8", "",
                  "| entry | int8 cycles | int4 cycles | speed-up | read bytes int8 / int4 "
                  "| speed-up / byte ratio | int4 cycles / roofline | int4 MAC util "
                  "| energy int8 / int4 uJ (model) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in pairs:
            lines.append(
                f"| {p['name']} | {p['int8_cycles']:,} | {p['int4_cycles']:,} "
                f"| {p['speedup']:.3f} | {p['byte_ratio']:.3f} "
                f"| {p['speedup_of_byte_ratio']:.3f} | {p['int4_cycles_over_roofline']:.3f} "
                f"| {p['int4_mac_utilization']:.3f} "
                f"| {p['int8_j'] * 1e6:.2f} / {p['int4_j'] * 1e6:.2f} |")
    r = report["sim_rate"]
    w = r["workload"]
    lines += ["", "## Simulation rate", "",
              f"GEMM {'x'.join(map(str, w['rate_on']))} on preset `{w['preset']}`, the same "
              "workload on every backend, one device each, built before the clock starts; "
              "cycles / wall time of the backend's run (launch to collected end):", ""]
    for name, runs in r["runs"].items():
        rate = r.get(f"{name}_cycles_per_s")
        note = " (the RTL's cycles over the ISA model's time)" if name == "golden" else ""
        lines.append(f"* {name}: " + (f"{rate:,.0f} cycles/s{note} ({_n(r[f'{name}_cycles'])} "
                                      f"cycles in {r[f'{name}_wall_s']:.3f} s)" if rate
                                      else "no rate"))
    for key, value in r.items():
        if key.endswith("_missing"):
            lines.append(f"* {key[:-len('_missing')]}: not measured ({value})")
    for preset, rate in (r.get("bare_loop_cycles_per_s") or {}).items():
        lines.append(f"* bare loop (Verilated model, inputs idle, no memory model), "
                     f"`{preset}`: {rate:,.0f} cycles/s")
    if r["ratio"]:
        lines.append(f"* Verilator / Icarus: {r['ratio']:.1f}x")
    suite = r.get("suite")
    if suite and suite["entries"]:
        bare = suite["bare_loop_cycles_per_s"]
        over = suite.get("call_overhead_s")
        lines += ["", f"The suite's own runs on `{suite['preset']}` ({suite['backend']})"
                  + (f"; bare loop {bare:,.0f} cycles/s" if bare else "")
                  + (f"; one call of a one-instruction program {over * 1e3:.2f} ms "
                     "(median)" if over else "") + ":", "",
                  "| entry | cycles | simulation s | cycles/s | of the bare loop |",
                  "|---|---:|---:|---:|---:|"]
        for e in suite["entries"]:
            frac = e["of_bare_loop"]
            lines.append(f"| {e['name']} | {e['cycles']:,} | {e['sim_wall_s']:.3f} "
                         f"| {e['cycles_per_s']:,.0f} | "
                         f"{'' if frac is None else f'{frac:.2f}'} |")
    return "\n".join(lines) + "\n"


MATPLOTLIB_PIN = "matplotlib==3.11.2"


def _pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported on first use."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError(f"the bench plots need matplotlib: .venv/bin/pip install "
                         f"{MATPLOTLIB_PIN}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    return matplotlib, plt


def _plot_roofline(report, path):
    matplotlib, plt = _pyplot()
    cfg = report["config"]
    peak, bus = cfg["rows"] * cfg["cols"], cfg["bus_bytes"]
    entries = report["entries"]
    xs = [e["operational_intensity"] for e in entries]
    lo = min(min(xs), peak / bus) / 4
    hi = max(max(xs), peak / bus) * 4
    grid = np.geomspace(lo, hi, 200)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    ax.plot(grid, np.minimum(peak, bus * grid), color="black", lw=2, label="roofline")
    ax.plot(grid, bus * grid, color="gray", lw=1, ls=":",
            label=f"bandwidth roof: {bus} B/cycle x intensity")
    ax.axhline(peak, color="gray", lw=1, ls="--", label=f"compute roof: R*C = {peak} MACs/cycle")
    markers = {"gemm": "o", "layer": "s", "decode": "D", "llm_prefill": "^",
               "llm_decode": "v"}
    colors = plt.get_cmap("tab20").colors
    for idx, e in enumerate(entries):
        ax.scatter(e["operational_intensity"], e["macs_per_cycle"], s=60, zorder=3,
                   marker=markers[e["kind"]], color=colors[idx % len(colors)],
                   edgecolors="black", linewidths=0.5, label=e["name"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ys = [e["macs_per_cycle"] for e in entries]
    ax.set_ylim(min(min(ys), bus * lo) / 2, peak * 2)
    ax.set_xlabel("operational intensity (MACs per DRAM byte, read + written)")
    ax.set_ylabel("achieved MACs per cycle")
    ax.set_title(f"serrano roofline: preset {report['preset']} "
                 f"({cfg['rows']}x{cfg['cols']}), {report['backend']}, measured cycles")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_breakdown(report, path):
    matplotlib, plt = _pyplot()
    layer = next(e for e in report["entries"] if e["kind"] == "layer")
    ops = layer["per_op"]
    parts = [("array (rows issued)", lambda o: o["array_cycles"], "tab:green"),
             ("stall: weights", lambda o: o["stall_cycles"]["weight"], "tab:red"),
             ("stall: activations", lambda o: o["stall_cycles"]["act"], "tab:orange"),
             ("stall: store", lambda o: o["stall_cycles"]["store"], "tab:purple"),
             ("stall: no instruction (start, final drain)",
              lambda o: o["stall_cycles"]["insn"], "tab:gray"),
             ("other (instruction start-up)", lambda o: max(o["other_cycles"], 0),
              "tab:blue")]
    fig, ax = plt.subplots(figsize=(10, 2.2 + 0.8 * len(ops)), dpi=110)
    labels = [f"{i + 1}. {o['name']}" for i, o in enumerate(ops)]
    y = np.arange(len(ops))[::-1]
    left = np.zeros(len(ops))
    for label, get, color in parts:
        vals = np.array([get(o) for o in ops], float)
        ax.barh(y, vals, left=left, color=color, label=label, height=0.6)
        left += vals
    for yi, o in zip(y, ops):
        ax.text(left[len(ops) - 1 - yi] * 1.01, yi, f"{o['cycles']:,} cycles", va="center",
                fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, left.max() * 1.2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("accelerator cycles (the counters of each call)")
    ax.set_title(f"{layer['name']}: cycles per accelerator call, {layer['cycles']:,} total, "
                 f"{layer['host_round_trips']} host round trips (host time not shown)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3,
              frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(report, out_dir):
    """Write ``report.json``, ``report.md``, ``roofline.png``, ``layer_breakdown.png``
    into ``out_dir``; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md",
             "roofline": out / "roofline.png", "breakdown": out / "layer_breakdown.png"}
    paths["json"].write_text(json.dumps(report, indent=1) + "\n")
    paths["md"].write_text(markdown(report))
    _plot_roofline(report, paths["roofline"])
    _plot_breakdown(report, paths["breakdown"])
    return paths


# ---- command line ---------------------------------------------------------------------------

def _check_timed(backend):
    from .backends import BACKENDS, check_backend
    check_backend(backend)
    timed = [name for name, cls in BACKENDS.items() if cls.timed]
    if backend not in timed:
        raise ValueError(f"bench measures cycles: choose a backend that counts them "
                         f"({', '.join(timed)}), not {backend!r}")


def add_arguments(parser):
    """The flags of ``serrano bench``."""
    parser.add_argument("--preset", default="default",
                        help="tiny, fpga or default (default: default)")
    parser.add_argument("--backend", default="verilator",
                        help="a backend that counts cycles: verilator, icarus or amaranth "
                             "(default: verilator)")
    parser.add_argument("--quick", action="store_true",
                        help="a reduced set: two GEMMs, the tiny encoder layer, a decode step")
    parser.add_argument("--out", default="build/bench", metavar="DIR",
                        help="directory for report.json, report.md and the plots "
                             "(default: build/bench)")
    parser.add_argument("--energy", metavar="FILE", default=None,
                        help="energy constants JSON (default: sw/energy_default.json)")
    parser.add_argument("--json", action="store_true", help="print report.json to stdout")
    parser.add_argument("--build-study", action="store_true",
                        help="instead of the suite: build the fast simulator of --preset "
                             "with each build option added in turn and measure what each "
                             "gains (bare loop and a 128x768x768 GEMM); prints JSON lines")


def _command(args):
    parts = ["serrano", "bench", "--preset", str(getattr(args.preset, "name", args.preset)),
             "--backend", args.backend]
    if args.quick:
        parts.append("--quick")
    parts += ["--out", str(args.out)]
    if args.energy:
        parts += ["--energy", str(args.energy)]
    if args.json:
        parts.append("--json")
    return " ".join(parts)


def run(args):
    """Run ``serrano bench``; 0 when every entry is bit-exact and its program structure
    agrees with the counters, else 1. Bad input raises ``ValueError``/``ConfigError``."""
    cfg = get_preset(args.preset)
    if getattr(args, "build_study", False):
        rows = build_study(cfg.name, log=_Log())
        print(json.dumps(rows, indent=1))
        return 0
    _check_timed(args.backend)
    constants = energy.load_constants(args.energy)
    _pyplot()                               # fail before the runs, not after them
    log = _Log()
    report = run_suite(cfg, args.backend, quick=args.quick, constants=constants, log=log)
    report = {"command": _command(args), **report}
    paths = write_outputs(report, args.out)
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.json:
        print(json.dumps(report))
    else:
        print(markdown(report))
    return 0 if report["all_bit_exact"] else 1
