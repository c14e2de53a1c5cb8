"""``serrano project``: a language model on a scaled serrano, composed from the RTL's cycles.

**These are projections from a simulated design and an energy model, not measurements of
silicon.** What is measured is the RTL's cycles for the GEMMs of the scaling study
(:mod:`sw.scaling`, ``sw/scaling_measured.json``: arrays of 16x16, 32x32 and 64x64 with
buses of 16, 32 and 64 bytes); the projection composes them.

A decode step of ``--batch B`` sequences (each at ``--context L`` tokens) on one chip is
the GEMMs of every layer and the LM head, each over its share of the weights under
tensor parallelism (``--chips N``: queries, keys, values, gate, up and the LM head split
by output columns, the output and down projections by input rows; the heads split
between the chips), plus the attention of each sequence over its KV cache as the
accelerator runs it (``Q K^T`` and ``P V`` with the int8 cache as their weights), plus
the all-reduce of the activations after the attention and the FFN of every layer
(a ring: ``2 (N - 1) / N`` of ``B * hidden`` 16-bit values each way per chip at
``--link-gbps``, and ``2 (N - 1)`` hops of ``--link-latency-us``). A prefill is the same
with ``--prompt P`` tokens of one sequence (attention over all ``P`` positions: the
causal half is not subtracted). Tokens enter the array as two int8 rows each (16-bit
activations, as serrano runs SmolLM2); ``--act-bits 8`` halves that.

Each GEMM is lowered by the compiler (:class:`sw.compiler.Builder`) for the array
``RxC``, and its structure (:func:`sw.energy.program_counts`) gives the rows through the
array and the bytes each way. Its cycles are its roofline, ``max(array rows, bytes / bus
bytes a cycle)``, over the efficiency the RTL reached on the same array for GEMMs of the
same kind (bound by the array or by the bus) and weight format: the measured shapes'
efficiencies interpolated in the logarithm of their roofline, held at the nearest end
outside the measured range (said in ``assumptions``). A shape the study measured on the
array gets its measured cycles (:func:`gemm_cycles` reproduces them exactly, a test
checks). An array the study did not measure takes the nearest measured array's
efficiencies (said). The bus moves ``min(bandwidth / clock, C)`` bytes a cycle: the
DMA moves one weight row of ``C`` bytes a beat, so a memory faster than that is not
used (said), and a slower one slows the bus-bound GEMMs.

Energy: :func:`sw.energy.estimate` of the counted events of every GEMM with the chosen
constants (``--energy 45nm``, Horowitz ISSCC 2014, the default of ``serrano generate``,
or ``--energy 7nm-hbm2``: the update of that table to 7 nm with HBM2 in Jouppi et al.,
ISCA 2021, ``sw/energy_7nm_hbm2.json``); the interconnect's energy is not counted.
The vector unit's norms, rotary embeddings, softmax and activations add the cycles the
study measured them not to hide under the layer's GEMM (:func:`_vector_cycles`); their
energy is not counted, nor is leakage.
"""

import functools
import json
import math
from pathlib import Path

from serrano.hw import isa
from serrano.hw.config import Config, get_preset
from . import compiler, energy, scaling

__all__ = ["MODELS", "GPUS", "ENERGY", "model_shape", "array_config", "gemm_cycles",
           "project", "comparison", "add_arguments", "run"]

#: Model shapes: the published configuration of each (``smollm2`` is checked against its
#: GGUF file's metadata by the tests).
MODELS = {
    "smollm2": dict(layers=30, hidden=576, heads=9, kv_heads=3, ffn=1536, vocab=49152,
                    source="SmolLM2-135M-Instruct (HuggingFaceTB), the GGUF file serrano runs"),
    "llama-2-7b": dict(layers=32, hidden=4096, heads=32, kv_heads=32, ffn=11008,
                       vocab=32000, source="meta-llama/Llama-2-7b-hf, config.json"),
    "llama-3-8b": dict(layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336,
                       vocab=128256, source="meta-llama/Meta-Llama-3-8B, config.json"),
}

#: Energy constants by name.
ENERGY = {"45nm": energy.DEFAULT_CONSTANTS_PATH,
          "7nm-hbm2": Path(__file__).with_name("energy_7nm_hbm2.json")}

#: Published figures to set the projections beside (each with its source and date).
GPUS = [
    dict(system="A100-80GB (gpt-fast, fp16)", model="llama-2-7b", batch=1,
         tokens_per_s=104.9, bandwidth_gbps=1397.3, joules_per_token=None,
         source="pytorch-labs/gpt-fast README (2023-11-30): batch 1, 330 W power limit; "
                "1,397 GB/s achieved"),
    dict(system="A100-80GB (gpt-fast, int8 weights)", model="llama-2-7b", batch=1,
         tokens_per_s=155.6, bandwidth_gbps=1069.2, joules_per_token=None,
         source="pytorch-labs/gpt-fast README (2023-11-30)"),
    dict(system="A100-80GB (gpt-fast, int4 weights, groups of 32)", model="llama-2-7b",
         batch=1, tokens_per_s=196.8, bandwidth_gbps=862.7, joules_per_token=None,
         source="pytorch-labs/gpt-fast README (2023-11-30)"),
    dict(system="H100 (ML.ENERGY leaderboard v3.0, vLLM)", model="llama-3-8b", batch=64,
         tokens_per_s=None, bandwidth_gbps=None, joules_per_token=0.12,
         source="ML.ENERGY, 'LLM Inference Energy: A Longitudinal Analysis' (leaderboard "
                "v3.0, 2025-12): Llama-3.1-8B, batch 64, 0.12 J per token (0.20 J in v2.0)"),
    dict(system="KV260 FPGA (4-bit weights, W4A16)", model="llama-2-7b", batch=1,
         tokens_per_s=5.0, bandwidth_gbps=19.2, joules_per_token=None,
         source="Li et al., arXiv 2502.10659 (2025-02): about 5 tokens/s, 85 % of the "
                "bandwidth bound of 64-bit DDR4-2400"),
]


def model_shape(name):
    """The shape dict of ``name`` (:data:`MODELS`), or a one-line ``ValueError``."""
    try:
        return dict(MODELS[name], head_dim=MODELS[name]["hidden"] // MODELS[name]["heads"])
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") \
            from None


def _parse_array(text):
    try:
        r, c = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"--array must be RxC (for example 64x64), not {text!r}") from None
    if r != c or r < 4 or r & (r - 1):
        raise ValueError(f"--array must be square with a power-of-two side of at least 4 "
                         f"(one weight row a bus beat), not {text!r}")
    return r


@functools.lru_cache(maxsize=None)
def array_config(side):
    """A configuration of a ``side x side`` array (bus ``side`` bytes), with the buffer
    bytes of ``default``: the measured preset when there is one."""
    for name in scaling.PRESETS:
        cfg = get_preset(name)
        if cfg.rows == side:
            return cfg
    return Config(name=f"{side}x{side}", rows=side, cols=side,
                  act_buf_rows=max(256, 16384 * 16 // side), acc_buf_rows=512,
                  weight_fifo_rows=max(64, 2 * side), bus_bytes=side, param_tiles=128,
                  weight_block=max(32, side))


def _wfmt(cfg, weights):
    if weights == "int8":
        return isa.WeightFormat.INT8
    if weights == "int4":
        return isa.WeightFormat.Q4
    raise ValueError(f"unknown weights {weights!r}; choose int8 or int4")


@functools.lru_cache(maxsize=4096)
def _structure(side, m, k, n, weights):
    """The compiled GEMM's counts (rows through the array, bytes each way, ...)."""
    cfg = array_config(side)
    b = compiler.Builder(cfg)
    big = 1 << 30
    b.gemm(compiler.Gemm(m, k, n, 0, big, 2 * big - (1 << 24), big + big // 2,
                         wfmt=_wfmt(cfg, weights)))
    return energy.program_counts(cfg, [b.finish()])


def _roofline(counts, bus):
    moved = counts["expected_dma_read_bytes"] + counts["expected_dma_write_bytes"]
    array, memory = counts["array_rows"], moved / bus
    return max(array, memory), ("bus" if memory >= array else "array")


@functools.lru_cache(maxsize=None)
def _measured(path=None):
    return scaling.load(path or scaling.MEASURED)


def _points(side, weights, kind, measured):
    """``[(log roofline, efficiency)]`` of the measured GEMMs on the array of ``side``
    (or the nearest measured one) of ``weights`` and roofline ``kind``; the preset
    used."""
    presets = measured["presets"]
    name = min(presets, key=lambda p: abs(math.log2(presets[p]["rows"] / side)))
    pts = []
    for e in presets[name]["gemms"]:
        if e["weights"] != weights:
            continue
        counts = _structure(presets[name]["rows"], e["m"], e["k"], e["n"], weights)
        roof, k = _roofline(counts, presets[name]["bus_bytes"])
        if k == kind:
            pts.append((math.log(roof), roof / e["cycles"]))
    # Shapes of one roofline (a K x N matrix and its transpose) share a point: their mean.
    merged = {}
    for x, eff in pts:
        merged.setdefault(round(x, 9), []).append(eff)
    return sorted((x, sum(v) / len(v)) for x, v in merged.items()), name


def gemm_cycles(side, m, k, n, weights, bus=None, measured=None, notes=None, lookup=True):
    """Projected cycles of an ``m x k`` by ``k x n`` GEMM on a ``side x side`` array whose
    bus moves ``bus`` bytes a cycle (default ``side``); ``notes`` (a set) collects what
    was extrapolated. A shape the study measured on this array at its own bus returns
    the measured cycles (``lookup``; the efficiency model alone gives them to within
    1.5 %: shapes of one roofline share one efficiency, tested)."""
    measured = measured or _measured()
    bus = side if bus is None else min(bus, side)
    for p in measured["presets"].values() if lookup else ():
        if p["rows"] == side and bus == p["bus_bytes"]:
            for e in p["gemms"]:
                if (e["m"], e["k"], e["n"], e["weights"]) == (m, k, n, weights):
                    return e["cycles"]
    counts = _structure(side, m, k, n, weights)
    roof, kind = _roofline(counts, bus)
    pts, preset = _points(side, weights, kind, measured)
    if not pts:
        # (x64's int8 prompt GEMMs of 64 rows stream weights as fast as they use them:
        # bound by the bus, none by the array.) The other format's, which differ from
        # int8's by under 1 % where both were measured bound by the array.
        other = "int4" if weights == "int8" else "int8"
        pts, preset = _points(side, other, kind, measured)
        if not pts:
            raise ValueError(f"the scaling study has no GEMM bound by the {kind} on "
                             f"{preset}")
        if notes is not None:
            notes.add(f"{weights} GEMMs bound by the {kind} on {preset} take the {other} "
                      f"ones' efficiency (none of {weights} was measured bound by it)")
    if notes is not None and measured["presets"][preset]["rows"] != side:
        notes.add(f"a {side}x{side} array was not measured: the efficiencies of {preset} "
                  f"({measured['presets'][preset]['rows']}x"
                  f"{measured['presets'][preset]['cols']}) are used")
    x = math.log(roof)
    if x <= pts[0][0] or x >= pts[-1][0]:
        eff = pts[0][1] if x <= pts[0][0] else pts[-1][1]
        if notes is not None and not (pts[0][0] == x or pts[-1][0] == x):
            notes.add(f"GEMMs bound by the {kind} outside the measured range on {preset} "
                      f"take the efficiency of the nearest measured one")
    else:
        for (x0, e0), (x1, e1) in zip(pts, pts[1:]):
            if x0 <= x <= x1:
                eff = e0 + (e1 - e0) * (x - x0) / (x1 - x0) if x1 > x0 else e0
                break
    # Rounded, not ceiled: at a measured point roof / eff is its cycles to within float.
    return max(1, round(roof / eff))


def _step_gemms(shape, chips, rows, weights, lm_head=True):
    """``[(m, k, n, weights, count)]``: the weight GEMMs of one forward step on one of
    ``chips`` chips, ``rows`` array rows (tokens times rows a token): every layer's
    queries, keys and values, output, gate and up, and down projections (each chip's
    share), and the LM head (its int8 blocks). The attention is
    :func:`_attention_gemms`."""
    H, F, d = shape["hidden"], shape["ffn"], shape["head_dim"]
    heads = math.ceil(shape["heads"] / chips)
    kv = math.ceil(shape["kv_heads"] / chips)
    L = shape["layers"]
    out = [(rows, H, heads * d, weights, L), (rows, H, kv * d, weights, 2 * L),
           (rows, heads * d, H, weights, L),
           (rows, H, math.ceil(F / chips), weights, 2 * L),
           (rows, math.ceil(F / chips), H, weights, L)]
    if lm_head:
        out.append((rows, H, math.ceil(shape["vocab"] / chips), "int8", 1))
    return out


def _attention_gemms(shape, chips, rows_per_seq, seqs, context):
    """The attention's GEMMs on one chip: per sequence and KV head, ``Q K^T`` and ``P V``
    of the group's rows, the int8 cache as weights."""
    d = shape["head_dim"]
    group = shape["heads"] // shape["kv_heads"]
    kv = math.ceil(shape["kv_heads"] / chips)
    m = group * rows_per_seq
    n = seqs * kv * shape["layers"]
    return [(m, d, context, "int8", n), (m, context, d, "int8", n)]


def _allreduce_s(shape, chips, tokens, link_gbps, link_latency_us):
    if chips == 1:
        return 0.0, 0
    size = tokens * shape["hidden"] * 2                     # 16-bit values
    per = 2 * (chips - 1) / chips * size                    # ring: sent by each chip
    count = 2 * shape["layers"]                             # after attention and FFN
    seconds = count * (per / (link_gbps * 1e9) + 2 * (chips - 1) * link_latency_us * 1e-6)
    return seconds, int(count * per)


def _vector_cycles(side, shape, tokens, chips, measured, notes):
    """The vector unit's cycles not hidden under the GEMMs, per chip, for ``tokens``
    tokens through every layer: measured on SmolLM2's layer beside its largest GEMM
    (:func:`sw.scaling.measure_vector`) on the array (or the nearest measured one),
    per token at one token (a decode step of one) or at the larger count, scaled by the
    model's elements per token (norms, rotary, activations) over SmolLM2's."""
    presets = {n: p for n, p in measured["presets"].items() if "vector" in p}
    if not presets:
        notes.add("the scaling study has no vector-unit measurement: vector ops not counted")
        return 0
    name = min(presets, key=lambda p: abs(math.log2(presets[p]["rows"] / side)))
    runs = {int(t): v for t, v in presets[name]["vector"].items()}
    t = 1 if tokens == 1 else max(runs)
    per_token = max(0, runs[t]["both"] - runs[t]["gemm"]) / t

    def elements(m):
        return 4 * m["hidden"] + (m["heads"] + m["kv_heads"]) * m["head_dim"] + 2 * m["ffn"]
    ratio = elements(shape) / elements(model_shape("smollm2")) / chips
    notes.add("vector ops: cycles not hidden under the GEMMs as measured on SmolLM2's layer "
              f"on {name}, scaled by elements per token (softmax over long contexts not "
              "scaled)")
    return math.ceil(per_token * tokens * ratio * shape["layers"])


def _phase(side, gemms, bus, measured, constants, notes):
    """Cycles, bytes moved and :func:`sw.energy.estimate` of ``gemms`` on one chip: the
    programs' structure counts summed (as :func:`sw.energy.calls_estimate` does), the
    counters taken as the structure says they read (:func:`sw.energy.counter_mismatches`'
    pairs)."""
    cycles = 0
    counts = {}
    for m, k, n, weights, count in gemms:
        cycles += count * gemm_cycles(side, m, k, n, weights, bus, measured, notes)
        for key, value in _structure(side, m, k, n, weights).items():
            counts[key] = counts.get(key, 0) + count * value
    counts.update(array_cycles=counts["array_rows"],
                  dma_read_bytes=counts["expected_dma_read_bytes"],
                  dma_write_bytes=counts["expected_dma_write_bytes"])
    moved = counts["dma_read_bytes"] + counts["dma_write_bytes"]
    return cycles, moved, energy.estimate(array_config(side), counts, constants)


def project(model="llama-2-7b", *, array="64x64", clock_ghz=1.0, bandwidth_gbps=64.0,
            chips=1, batch=1, context=512, prompt=512, weights="int4", act_bits=16,
            link_gbps=100.0, link_latency_us=1.0, energy_name="45nm", measured=None):
    """The projection's report (the ``--json`` object)."""
    shape = model_shape(model)
    side = _parse_array(array)
    for name, v in (("--clock", clock_ghz), ("--bandwidth", bandwidth_gbps),
                    ("--link-gbps", link_gbps)):
        if not (isinstance(v, (int, float)) and 0 < v < float("inf")):
            raise ValueError(f"{name} must be a positive number, not {v!r}")
    for name, v in (("--chips", chips), ("--batch", batch), ("--context", context),
                    ("--prompt", prompt)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    if not link_latency_us >= 0:
        raise ValueError(f"--link-latency-us must be at least 0, not {link_latency_us!r}")
    if act_bits not in (8, 16):
        raise ValueError(f"--act-bits must be 8 or 16, not {act_bits!r}")
    if energy_name not in ENERGY:
        raise ValueError(f"unknown --energy {energy_name!r}; choose one of: "
                         f"{', '.join(ENERGY)}")
    if chips > shape["kv_heads"]:
        raise ValueError(f"--chips {chips} exceeds {model}'s {shape['kv_heads']} KV heads "
                         f"(tensor parallelism splits the heads)")
    constants = energy.load_constants(ENERGY[energy_name])
    measured = measured or _measured()
    notes = set()
    per_row = act_bits // 8
    bus_per_cycle = bandwidth_gbps / clock_ghz              # bytes a cycle from memory
    bus = min(side, int(bus_per_cycle)) if bus_per_cycle >= 1 else 1
    if bus_per_cycle > side:
        notes.add(f"the memory's {bandwidth_gbps:g} GB/s exceed what one {side}x{side} array "
                  f"takes at {clock_ghz:g} GHz ({side * clock_ghz:g} GB/s: one weight row "
                  f"of {side} bytes a cycle); the rest is not used")
    hz = clock_ghz * 1e9

    # Decode: B sequences, one token each.
    dec = _step_gemms(shape, chips, batch * per_row, weights)
    dec += _attention_gemms(shape, chips, per_row, batch, context)
    d_cycles, d_bytes, d_energy = _phase(side, dec, bus, measured, constants, notes)
    d_vec = _vector_cycles(side, shape, batch, chips, measured, notes)
    d_cycles += d_vec
    d_comm_s, d_comm_bytes = _allreduce_s(shape, chips, batch, link_gbps, link_latency_us)
    step_s = d_cycles / hz + d_comm_s
    # Prefill: one sequence of P tokens (only the last position's logits).
    pre = _step_gemms(shape, chips, prompt * per_row, weights, lm_head=False)
    pre += _step_gemms(shape, chips, per_row, weights)[-1:]
    pre += _attention_gemms(shape, chips, prompt * per_row, 1, prompt)
    p_cycles, p_bytes, p_energy = _phase(side, pre, bus, measured, constants, notes)
    p_cycles += _vector_cycles(side, shape, prompt, chips, measured, notes)
    p_comm_s, _ = _allreduce_s(shape, chips, prompt, link_gbps, link_latency_us)
    prefill_s = p_cycles / hz + p_comm_s

    joules_step = d_energy["total_j"] * chips
    report = {
        "model": model, "array": f"{side}x{side}", "clock_ghz": clock_ghz,
        "bandwidth_gbps": bandwidth_gbps, "chips": chips, "batch": batch,
        "context": context, "prompt": prompt, "weights": weights, "act_bits": act_bits,
        "tokens_per_s": batch / step_s,
        "prefill_tokens_per_s": prompt / prefill_s,
        "latency_s_per_token": step_s,
        "joules_per_token": joules_step / batch,
        "energy": {"per_token_j": {k: v * chips / batch for k, v in d_energy.items()
                                   if k.endswith("_j")},
                   "constants": constants["source"]},
        "decode": {"cycles_per_step": d_cycles, "vector_cycles_per_step": d_vec,
                   "bytes_per_step_per_chip": d_bytes,
                   "bus_bytes_per_cycle": bus,
                   "bus_utilization": d_bytes / (d_cycles * bus),
                   "allreduce_s": d_comm_s, "allreduce_bytes_per_chip": d_comm_bytes,
                   "seconds_per_step": step_s},
        "prefill": {"cycles": p_cycles, "bytes_per_chip": p_bytes, "allreduce_s": p_comm_s,
                    "seconds": prefill_s,
                    "mac_utilization": p_energy["events"]["array_cycles"] / p_cycles},
        "assumptions": sorted(notes) + [
            "projection from a simulated design and an energy model, not a measurement",
            f"RTL cycles from the scaling study of {measured['date']} (commit "
            f"{measured['commit']}, `{measured['command']}`)",
            f"model shape: {shape['source']}",
            f"tensor parallelism over {chips} chip(s); ring all-reduce of 16-bit "
            f"activations at {link_gbps:g} GB/s and {link_latency_us:g} us a hop; "
            "interconnect energy not counted" if chips > 1 else "one chip",
            "leakage and the vector unit's energy not counted",
            f"energy constants: {constants['source']}",
            f"attention over {context} cached positions per sequence at decode, all "
            f"{prompt} at prefill (the causal half not subtracted)",
        ],
    }
    return report


def comparison(rows=None):
    """The published figures beside serrano's projections of the same models: a list of
    dicts (system, model, batch, tokens/s, J/token, bandwidth, source)."""
    out = [dict(g, kind="published") for g in GPUS]
    for label, kw in (rows or _TABLE):
        r = project(**kw)
        out.append(dict(system=label, model=kw["model"], batch=kw.get("batch", 1),
                        tokens_per_s=r["tokens_per_s"], joules_per_token=r["joules_per_token"],
                        bandwidth_gbps=kw["bandwidth_gbps"] * kw.get("chips", 1),
                        kind="projected", source="serrano project (this repository)"))
    return out


#: serrano's rows of the comparison table.
_TABLE = [
    ("serrano 64x64, 1 GHz, 64 GB/s, 1 chip", dict(model="llama-2-7b", array="64x64",
                                                  clock_ghz=1.0, bandwidth_gbps=64.0)),
    ("serrano 64x64, 1.4 GHz, 16 chips (1,434 GB/s in all)",
     dict(model="llama-2-7b", array="64x64", clock_ghz=1.4, bandwidth_gbps=89.6, chips=16)),
    ("serrano 64x64, 1.4 GHz, 16 chips, 7nm/HBM2 energy",
     dict(model="llama-2-7b", array="64x64", clock_ghz=1.4, bandwidth_gbps=89.6, chips=16,
          energy_name="7nm-hbm2")),
    ("serrano 64x64, 1 GHz, 8 chips, batch 64, 7nm/HBM2 energy",
     dict(model="llama-3-8b", array="64x64", clock_ghz=1.0, bandwidth_gbps=64.0, chips=8,
          batch=64, energy_name="7nm-hbm2")),
]


#: The plot's sweep: arrays, and memory bandwidths of one chip (GB/s) at 1 GHz.
PLOT_ARRAYS = (16, 32, 64, 128)
PLOT_BANDWIDTHS = (8, 16, 32, 64, 128, 256)


def plot(path, model="llama-2-7b", chips_sweep=(1, 4, 16)):
    """``path`` (PNG): decode tokens/s and joules per token of ``model`` against the total
    memory bandwidth, one line per array size (one chip) and per chip count (64x64),
    with the published figures of the same model as points."""
    from .bench import _pyplot
    _, plt = _pyplot()
    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(12, 4.8))
    for side in PLOT_ARRAYS:
        xs, ts, es = [], [], []
        for bw in PLOT_BANDWIDTHS:
            if bw > side:                       # the array's bus takes no more
                continue
            r = project(model, array=f"{side}x{side}", bandwidth_gbps=float(bw))
            xs.append(bw)
            ts.append(r["tokens_per_s"])
            es.append(r["joules_per_token"])
        style = "--" if side not in (16, 32, 64) else "-"
        for ax, ys in ((ax_t, ts), (ax_e, es)):
            ax.plot(xs, ys, style, marker="o", label=f"{side}x{side}, 1 chip")
    for chips in [c for c in chips_sweep[1:] if c <= model_shape(model)["kv_heads"]]:
        r = project(model, array="64x64", bandwidth_gbps=64.0, chips=chips)
        for ax, y in ((ax_t, r["tokens_per_s"]), (ax_e, r["joules_per_token"])):
            ax.plot([64 * chips], [y], marker="s", linestyle="none",
                    label=f"64x64 x {chips} chips")
    for g in GPUS:
        if g["model"] == model and g["tokens_per_s"] and g["bandwidth_gbps"]:
            ax_t.plot([g["bandwidth_gbps"]], [g["tokens_per_s"]], marker="*", markersize=12,
                      linestyle="none", label=g["system"])
    for g in GPUS:                          # a measured energy, another model and batch
        if g["joules_per_token"]:
            ax_e.axhline(g["joules_per_token"], color="grey", linestyle=":",
                         label=f"{g['system']}: {g['model']}, batch {g['batch']}")
    ax_e.legend(fontsize=7)
    for ax, label in ((ax_t, "decode tokens/s (batch 1)"), (ax_e, "J per token (45 nm model)")):
        ax.set_xscale("log")
        ax.set_yscale("log" if ax is ax_t else "linear")
        ax.set_xlabel("memory bandwidth in all, GB/s (1 GHz)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(f"{model}, 4-bit weights: serrano projected from RTL cycles (dashed: array "
                 f"not measured) vs published GPU/FPGA figures")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def add_arguments(parser):
    parser.add_argument("--model", default="llama-2-7b", help=f"one of {', '.join(MODELS)}")
    parser.add_argument("--array", default="64x64", help="RxC, square (default: 64x64)")
    parser.add_argument("--clock", type=float, default=1.0, metavar="GHZ")
    parser.add_argument("--bandwidth", type=float, default=64.0, metavar="GBPS",
                        help="memory bandwidth of one chip, GB/s (default: 64)")
    parser.add_argument("--chips", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=512,
                        help="cached positions per sequence at decode (default: 512)")
    parser.add_argument("--prompt", type=int, default=512, help="prefill tokens (default: 512)")
    parser.add_argument("--weights", choices=("int4", "int8"), default="int4")
    parser.add_argument("--act-bits", type=int, choices=(8, 16), default=16)
    parser.add_argument("--link-gbps", type=float, default=100.0,
                        help="chip-to-chip bandwidth each way, GB/s (default: 100)")
    parser.add_argument("--link-latency-us", type=float, default=1.0)
    parser.add_argument("--energy", choices=tuple(ENERGY), default="45nm")
    parser.add_argument("--table", action="store_true",
                        help="print the comparison with published figures instead")
    parser.add_argument("--plot", metavar="PNG", default=None,
                        help="also write the sweep plot (tokens/s and J/token against "
                             "bandwidth and array size, published points) to PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table_markdown(rows):
    lines = ["| system | model | batch | tokens/s | J/token | bandwidth GB/s | source |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['model']} | {r['batch']} | "
                     f"{_fmt(r['tokens_per_s'], ',.1f')} | {_fmt(r['joules_per_token'], '.3f')} | "
                     f"{_fmt(r['bandwidth_gbps'], ',.0f')} | {r['source']} |")
    return "\n".join(lines)


def run(args):
    if args.plot:
        plot(args.plot, args.model)
    if args.table:
        rows = comparison()
        print(json.dumps(rows, indent=1) if args.json else table_markdown(rows))
        return 0
    r = project(args.model, array=args.array, clock_ghz=args.clock,
                bandwidth_gbps=args.bandwidth, chips=args.chips, batch=args.batch,
                context=args.context, prompt=args.prompt, weights=args.weights,
                act_bits=args.act_bits, link_gbps=args.link_gbps,
                link_latency_us=args.link_latency_us, energy_name=args.energy)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    e = r["energy"]["per_token_j"]
    print(f"serrano project  {r['model']}  {r['array']} at {r['clock_ghz']:g} GHz, "
          f"{r['bandwidth_gbps']:g} GB/s, {r['chips']} chip(s), batch {r['batch']}, "
          f"{r['weights']} weights  (a projection, not a measurement)")
    print(f"  decode            : {r['tokens_per_s']:,.1f} tokens/s, "
          f"{r['latency_s_per_token'] * 1e3:,.2f} ms a step, bus "
          f"{r['decode']['bus_utilization']:.3f} busy")
    print(f"  prefill           : {r['prefill_tokens_per_s']:,.0f} tokens/s "
          f"({r['prompt']} tokens)")
    print(f"  energy per token  : {r['joules_per_token']:.4f} J (MAC {e['mac_j']:.2e}, SRAM "
          f"{e['sram_j']:.2e}, DRAM {e['dram_j']:.2e})")
    for a in r["assumptions"]:
        print(f"  - {a}")
    return 0
