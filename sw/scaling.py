"""The scaling study: the same work on arrays of 16x16, 32x32 and 64x64, measured on the RTL.

``python -m serrano.sw.scaling [--presets default x32 x64] [--out FILE]`` runs, on the
fast simulator (Verilator) of each preset, the GEMMs of one SmolLM2-135M layer (and one
square 4096 x 4096 matrix, a 7B-class model's shape) as a prompt of 64 rows and as a
decoded token's one row, with int8 and with 4-bit block weights (and a 4096 x 11008 FFN
matrix as a decoded token's), the vector unit's work for one layer
(:func:`measure_vector`), then one whole SmolLM2
layer: 64 prompt tokens and the next token through the device executor (every GEMM and
the attention on the accelerator, the norms on the host), the file's weights as int8.
Every run is checked against the golden model. The results (cycles, bytes each way,
array cycles, simulator time) go to ``FILE`` (default :data:`MEASURED`, the file
:mod:`sw.project` composes its projections from), with the date, the commit and the
command.

The three presets share their buffer bytes and differ in the array and the bus (one
weight row of ``C`` bytes a beat), so the study isolates the array's size. ``default``
uses the profile-guided build the rest of serrano uses; ``x32`` and ``x64`` a plain
build (profile guidance changes the simulator's speed, not a cycle).
"""

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from serrano.hw.config import get_preset

__all__ = ["MEASURED", "PRESETS", "SHAPES", "DECODE_SHAPES", "PROMPT_ROWS", "VECTOR_TOKENS",
           "workloads", "measure_gemms", "measure_vector", "measure_layer", "measure", "load",
           "main"]

#: Where the measured study is kept (read by :mod:`sw.project`).
MEASURED = Path(__file__).with_name("scaling_measured.json")
#: The presets of the study, smallest first.
PRESETS = ("default", "x32", "x64")
#: ``K x N`` of the measured matrices: SmolLM2-135M's layer (queries and output, keys
#: and values, gate and up, down) and a 7B-class model's square projection.
SHAPES = {"q_o": (576, 576), "k_v": (576, 192), "gate_up": (576, 1536),
          "down": (1536, 576), "square_4096": (4096, 4096)}
#: Measured as decode GEMVs only: a 7B-class model's FFN matrix (its prompt GEMM would
#: take minutes of simulation on the larger arrays).
DECODE_SHAPES = {"ffn_11008": (4096, 11008)}
#: Rows of the prompt GEMMs (the decode GEMVs have one).
PROMPT_ROWS = 64
#: The layer's prompt (tokens) before the decoded token.
LAYER_PROMPT = 64


def workloads():
    """``[(name, m, k, n, weights)]``: every shape as a decode GEMV and a prompt GEMM,
    with int8 and 4-bit weights."""
    out = []
    for kind, m in (("decode", 1), ("prefill", PROMPT_ROWS)):
        shapes = {**SHAPES, **DECODE_SHAPES} if m == 1 else SHAPES
        for shape, (k, n) in shapes.items():
            for weights in ("int8", "int4"):
                out.append((f"{kind} {shape} {weights}", m, k, n, weights))
    return out


def _backend(cfg):
    from .backends import VerilatorBackend
    if cfg.name == "default":
        return VerilatorBackend(cfg)
    from serrano.sim.fastsim import build
    return VerilatorBackend(cfg, path=build(cfg))


def measure_gemms(cfg, backend, log=print):
    """Each of :func:`workloads` on ``backend`` (an open backend of ``cfg``); a list of
    entries with the cycles, bytes and checks of each."""
    from .gemm import run_gemm
    from .runtime import Device
    entries = []
    with Device(cfg, backend) as dev:
        for name, m, k, n, weights in workloads():
            r = run_gemm(cfg, m, k, n, "verilator", device=dev, weights=weights)
            if not r["bit_exact"]:
                raise RuntimeError(f"{cfg.name} {name}: the RTL differs from the golden model")
            entries.append({
                "name": name, "m": m, "k": k, "n": n, "weights": weights,
                "cycles": r["cycles"], "array_cycles": r["array_cycles"],
                "dma_read_bytes": r["dma_read_bytes"],
                "dma_write_bytes": r["dma_write_bytes"],
                "mac_utilization": round(r["mac_utilization"], 5),
                "dma_read_utilization": round(r["dma_read_utilization"], 5),
                "sim_wall_s": r["sim_wall_s"], "bit_exact": True})
            log(f"  {cfg.name:8s} {name:30s} {r['cycles']:>10,d} cycles  "
                f"MAC {r['mac_utilization']:.3f}  bus {r['dma_read_utilization']:.3f}  "
                f"{r['sim_wall_s']:.1f} s")
    return entries


#: Token counts of the vector-unit measurement (a decoded token, a prompt).
VECTOR_TOKENS = (1, 32)


def measure_vector(cfg, backend, log=print):
    """The vector unit's cycles for one SmolLM2 layer's non-GEMM work
    (:mod:`sw.vector_bench`: norms, rotary embeddings, causal softmax, residual adds,
    SiLU and the SwiGLU product) for each of :data:`VECTOR_TOKENS`, alone and beside the
    layer's largest GEMM, on ``backend``; each run's memory checked against the golden
    model. ``{tokens: {"loads", "gemm", "vector", "both", "hidden_share"}}``."""
    from serrano.hw import isa, regs
    from . import isa_model, vector_bench
    out = {}
    for tokens in VECTOR_TOKENS:
        cycles = {}
        progs = vector_bench.programs(cfg, tokens)
        span = max(len(image) for image, _, _ in progs.values())
        if span > backend.mem_bytes:
            raise RuntimeError(f"{span} bytes of programs exceed the device memory")
        for name, (image, prog_addr, prog_len) in progs.items():
            # The window: the image, to its last whole beat (a program whose last
            # instruction ends mid-beat is fetched in whole beats).
            limit = -(-len(image) // cfg.bus_bytes) * cfg.bus_bytes
            image = np.concatenate([image, np.zeros(limit - len(image), np.uint8)])
            backend.mem[:span + cfg.bus_bytes] = 0
            backend.write_mem(0, image)
            r = regs.drive(regs.run_program(prog_addr, prog_len, 0, limit, 10**9),
                           write=backend.write_reg, read=backend.read_reg,
                           wait_irq=backend.wait_irq)
            if r.timed_out or not r.done or r.error_code != isa.Error.NONE:
                raise RuntimeError(f"{cfg.name} vector {name}: status {r.status:#x}")
            gold = isa_model.run_program(cfg, image, prog_addr, prog_len)
            if not np.array_equal(gold.mem, backend.mem[:len(gold.mem)]):
                raise RuntimeError(f"{cfg.name} vector {name}: the RTL differs from the "
                                   f"golden model")
            cycles[name] = int(r.counters["cycles"])
        work = cycles["vector"] - cycles["loads"]
        cycles["hidden_share"] = round(1 - (cycles["both"] - cycles["gemm"]) / work, 4)
        cycles["rope"] = vector_bench.rope_rows(cfg)
        out[str(tokens)] = cycles
        log(f"  {cfg.name:8s} vector, {tokens:3d} tokens: {work:>9,d} cycles alone, "
            f"{cycles['hidden_share']:.1%} hidden under the GEMM"
            + ("" if cycles["rope"] else " (no ROPE: a head of one row)"))
    return out


def _one_layer(model):
    """SmolLM2 cut to its first layer (its embedding, final norm and LM head kept)."""
    import dataclasses
    return dataclasses.replace(model, layers=model.layers[:1],
                               shape=dataclasses.replace(model.shape, layers=1))


def measure_layer(cfg, backend, log=print):
    """One SmolLM2 layer on ``backend``: ``LAYER_PROMPT`` tokens, then the next one, int8
    weights (the file's, dequantized and requantized per channel), every GEMM and the
    attention on the accelerator. Cycles of the layer's calls (the LM head's apart)."""
    from . import generate as G
    from .models import llama as LM
    from .nn.device_exec import DeviceExecutor
    from .runtime import Device
    full = LM.load_smollm2()
    model = _one_layer(full)
    graph, params = G._model_graph(model)
    ids = np.array(LM.tokenize(full, _LAYER_TEXT))[:LAYER_PROMPT]
    if len(ids) < LAYER_PROMPT:
        raise RuntimeError(f"the layer's text has {len(ids)} tokens, not {LAYER_PROMPT}")
    out = {"prompt_tokens": LAYER_PROMPT, "weights": "int8"}
    with Device(cfg, backend) as dev:
        ex = DeviceExecutor(dev, graph, params, positions=LAYER_PROMPT + 1)
        state = {}
        for phase, feed in (("prefill", (ids, np.arange(LAYER_PROMPT))),
                            ("decode", (ids[-1:], np.array([LAYER_PROMPT])))):
            n0 = len(dev.calls)
            ex.run({"ids": feed[0], "pos": feed[1]}, state, last=True)
            calls = [c for c in dev.calls[n0:] if c.name.startswith("blk.0.")]
            out[phase] = {
                "cycles": sum(c.cycles for c in calls),
                "calls": len(calls),
                "dma_read_bytes": sum(c.counters["dma_read_bytes"] for c in calls),
                "dma_write_bytes": sum(c.counters["dma_write_bytes"] for c in calls),
                "gemms": [list(g) for c in calls for g in c.gemms],
                "sim_wall_s": round(sum(c.wall_s for c in calls), 3)}
            log(f"  {cfg.name:8s} layer {phase:8s} {out[phase]['cycles']:>10,d} cycles in "
                f"{len(calls)} calls")
        out["bit_exact"] = bool(dev.bit_exact)
        if not dev.bit_exact:
            raise RuntimeError(f"{cfg.name} layer: the RTL differs from the golden model")
    return out


_LAYER_TEXT = ("The weight-stationary array keeps one tile of weights in its cells while "
               "rows of activations stream past; a decoded token reads every weight once, "
               "so the bus, not the array, sets its time. A prompt of many tokens reuses "
               "each tile for every row, and the array becomes the bound. Larger arrays "
               "move more bytes a cycle and do more products a cycle; what they lose is "
               "the time to fill and drain a longer pipeline.")


def _commit():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def measure(presets=PRESETS, layer=True, log=print):
    """The study's report (a dict) over ``presets``."""
    report = {"date": datetime.date.today().isoformat(), "commit": _commit(),
              "command": "python -m serrano.sw.scaling --presets " + " ".join(presets),
              "prompt_rows": PROMPT_ROWS, "presets": {}}
    for name in presets:
        cfg = get_preset(name)
        t0 = time.perf_counter()
        log(f"{name}: building the fast simulator (once per design; minutes)")
        backend = _backend(cfg)
        log(f"{name}: built or found in {time.perf_counter() - t0:.0f} s")
        try:
            entry = {"rows": cfg.rows, "cols": cfg.cols, "bus_bytes": cfg.bus_bytes,
                     "weight_block": cfg.weight_block,
                     "gemms": measure_gemms(cfg, backend, log)}
            entry["vector"] = measure_vector(cfg, backend, log)
            if layer:
                entry["layer"] = measure_layer(cfg, backend, log)
        finally:
            backend.close()
        entry["wall_s"] = round(time.perf_counter() - t0, 1)
        entry.update(date=report["date"], commit=report["commit"], command=report["command"])
        report["presets"][name] = entry
    return report


def markdown(report):
    """The study as README tables: per preset, the measured GEMMs (cycles, MAC or bus
    utilization, cycles over the roofline ``max(MACs / (R C), bytes / bus bytes)``), the
    layer and the vector work."""
    from .bench import roofline_cycles
    presets = report["presets"]
    names = list(presets)
    head = "| workload | " + " | ".join(
        f"{n} ({presets[n]['rows']}x{presets[n]['cols']}, {presets[n]['bus_bytes']} B)"
        for n in names) + " |"
    lines = [head, "|---|" + "---:|" * len(names)]
    by = {n: {e["name"]: e for e in presets[n]["gemms"]} for n in names}
    for w in (e["name"] for e in presets[names[0]]["gemms"]):
        cells = []
        for n in names:
            e = by[n].get(w)
            if e is None:
                cells.append("-")
                continue
            util = (f"bus {e['dma_read_utilization']:.3f}" if w.startswith("decode")
                    else f"MAC {e['mac_utilization']:.3f}")
            roof = roofline_cycles(get_preset(n), e["m"] * e["k"] * e["n"],
                                   e["dma_read_bytes"] + e["dma_write_bytes"])
            cells.append(f"{e['cycles']:,} ({util}, {e['cycles'] / roof:.2f}x roof)")
        lines.append(f"| {w} | " + " | ".join(cells) + " |")
    for phase in ("prefill", "decode"):
        cells = [f"{presets[n]['layer'][phase]['cycles']:,}" if "layer" in presets[n]
                 else "-" for n in names]
        what = (f"{report['presets'][names[0]].get('layer', {}).get('prompt_tokens', '')} "
                "tokens" if phase == "prefill" else "the next token")
        lines.append(f"| one SmolLM2 layer, {phase} ({what}) | " + " | ".join(cells) + " |")
    for t in VECTOR_TOKENS:
        cells = []
        for n in names:
            v = presets[n].get("vector", {}).get(str(t))
            cells.append("-" if v is None else
                         f"{v['vector'] - v['loads']:,} ({v['hidden_share']:.1%} hidden)")
        lines.append(f"| vector work of a layer, {t} token(s) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load(path=MEASURED):
    """The measured study (:func:`measure`'s report) from ``path``."""
    return json.loads(Path(path).read_text())


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m serrano.sw.scaling",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--no-layer", action="store_true", help="the GEMMs only")
    ap.add_argument("--out", default=str(MEASURED))
    ap.add_argument("--update", action="store_true",
                    help="replace only these presets' entries of --out, keep the others")
    ap.add_argument("--markdown", action="store_true",
                    help="print the measured study (--out) as README tables and stop")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(load(args.out)))
        return
    report = measure(tuple(args.presets), layer=not args.no_layer,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(args.out)
    if args.update and out.exists():
        # The other presets' entries stay, each with its own date, commit and command.
        old = load(out)
        report["presets"] = {n: report["presets"].get(n, old["presets"].get(n))
                             for n in PRESETS if n in report["presets"] or n in old["presets"]}
        report["command"] = "; ".join(dict.fromkeys(
            p.get("command", old["command"]) for p in report["presets"].values()))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
