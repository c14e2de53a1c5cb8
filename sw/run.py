"""``serrano run``: a transformer on the accelerator, against its float32 model.

Models:

* ``minilm``: all-MiniLM-L6-v2 (6 BERT encoder layers, hidden 384, 12 heads, FFN 1536)
  from real text: tokenize, embed (host), run ``--layers`` encoder layers on the
  accelerator, mean-pool and L2-normalise (host).
* ``bert-tiny``: one synthetic encoder layer (hidden 64, 4 heads, FFN 256), seeded.
* ``gpt-tiny``: one synthetic pre-LN decoder layer: prefill of ``--seq`` tokens, then one
  decode step against its KV cache.

Each model is its graph (:mod:`sw.nn.archs`) on one of two device executors:

* **on chip** (the default where the graph is lowered: ``minilm``, ``bert-tiny``;
  :mod:`sw.nn.lower`): every op on the accelerator, one program per forward pass (one
  host round trip), static scales calibrated on :data:`MINILM_CALIBRATION` (never the
  texts it is measured on) or on a separate random draw;
* **host ops** (``host_ops=True``, ``--host-ops``; and ``gpt-tiny``, whose causal
  attention and KV cache are not lowered yet; :mod:`sw.nn.device_exec`): every linear
  layer on the accelerator with int8 weights and per-token 16-bit inputs (``act_bits``),
  the int32 results dequantized on the host, the other ops (attention, LayerNorm, GELU,
  residual adds) on the host in float32; every scale the current token's own.
"""

import time

import numpy as np

from . import energy
from . import stall_profile as stall_profiling
from .models import layers as L
from .backends import check_backend
from .nn import archs, device_exec, lower
from .q4 import WEIGHTS
from .runtime import CHECKS, Device

__all__ = ["MODELS", "DEFAULT_TEXTS", "MINILM_CALIBRATION", "run_model", "run_model_on",
           "cosine"]

MODELS = ("minilm", "bert-tiny", "gpt-tiny")

# Measured: a mixed set (short, long, questions, code-like, numbers, other topics).
DEFAULT_TEXTS = (
    "The accelerator streams weights from memory while the array computes.",
    "A man is playing a guitar on the street corner.",
    "What is the capital of France?",
    "Quantum computers use qubits that can be in superposition.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "def add(a, b): return a + b",
    "Stock markets fell sharply after the announcement on Tuesday.",
    "She has been learning to play the violin for 12 years.",
)

# The on-chip executor's calibration inputs: other sentences than those it is measured on
# (DEFAULT_TEXTS, docs/heldout.txt, the tests'), one word to about forty tokens.
MINILM_CALIBRATION = (
    "Hi",
    "Thanks!",
    "How do I reset my password?",
    "The weather today is sunny with a light breeze from the west.",
    "Researchers trained the network on millions of labelled photographs of animals.",
    "for i in range(10): print(i * i)",
    "The committee postponed its decision until the auditors had reviewed every invoice "
    "from the previous three financial years, including those filed late.",
    "My grandmother grows tomatoes, beans and sunflowers in her small garden by the river.",
    "Is it safe to drink tap water in Lisbon?",
    "Prices rose by 4.5% in March, the fastest increase since 1991.",
)


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _summary(dev, cfg, tokens):
    """The run's totals; with a timed backend, its energy from the energy model
    (:mod:`sw.energy`) in all and per token (``tokens``: the real tokens processed)."""
    t = dev.totals()
    cycles = t["cycles"]
    e = energy.calls_estimate(cfg, dev.calls, tokens) if cycles else None
    return {
        "bit_exact_vs_golden": dev.bit_exact,
        "cycles": cycles,
        "macs": t["macs"],
        "mac_utilization": (t["macs"] / (cycles * cfg.macs)) if cycles else None,
        "dma_read_bytes": t["dma_read_bytes"] if cycles else dev.golden_read_bytes,
        "dma_write_bytes": t["dma_write_bytes"] if cycles else dev.golden_write_bytes,
        "stall_cycles": ({k: t[f"stall_{k}"] for k in ("weight", "act", "store", "insn")}
                         if cycles else None),
        "vector_busy_cycles": t["vec_busy"] if cycles else None,
        "host_round_trips": dev.host_round_trips,
        "host_bytes_to_device": dev.bytes_to_device,
        "host_bytes_from_device": dev.bytes_from_device,
        "sim_wall_s": round(dev.sim_wall_s, 3),
        "check_wall_s": round(dev.check_wall_s, 3),
        "per_op": [{"name": c.name, "cycles": c.cycles, "macs": c.macs} for c in dev.calls],
        "tokens_processed": tokens,
        "energy": e,
        "joules_per_token": e["joules_per_token"] if e else None,
    }


def _sentences(model, texts, seq=None):
    """Feeds of each text on its own (its tokens, or padded to ``seq``)."""
    from .models import minilm
    ids, mask = minilm.tokenize(model, list(texts), max_seq=seq)
    return _feeds(minilm.embed(model, ids), mask, seq)


def _feeds(x, mask, seq):
    """Each text on its own: padded to ``seq`` rows if given, else its own tokens (a
    padded position changes no real token's result: the mask hides it)."""
    return [{"x": x[t:t + 1, :n], "mask": mask[t:t + 1, :n]}
            for t, n in enumerate(len(m) if seq is not None else int(m.sum())
                                  for m in mask)]


def _run_minilm(new_device, layers, seq, texts, executor, per_layer=False):
    from .models import minilm
    model = minilm.load_minilm()
    layers = minilm._layer_count(model, layers)
    graph = archs.bert_encoder(model.shape, layers, eps=model.eps)
    params = archs.bert_params(model.layers[:layers])
    ids, mask = minilm.tokenize(model, list(texts), max_seq=seq)
    ref = minilm.forward_ids(model, ids, mask, layers)
    x = minilm.embed(model, ids)
    dev = new_device()
    ex = executor(dev, graph, params,
                  lambda: _sentences(model, MINILM_CALIBRATION))
    # The graph's output is the last layer's; with ``per_layer`` every layer's output is
    # read out too, in the same program (on the chip: its rows to memory as they are
    # made, which costs the array and the store unit cycles the forward pass does not).
    names = [f"blk.{i}.y" for i in range(layers)] if per_layer else []
    last = graph.outputs[0]
    assert not names or names[-1] == last
    layer_cos = [[] for _ in names]
    final = []
    feeds = _feeds(x, mask, seq)
    if hasattr(ex, "run_batch"):          # on chip: every sentence in one program
        outs = ex.run_batch(feeds, keep=names)
    else:
        outs = [ex.run(feed, {}, keep=names) for feed in feeds]
    for t, (feed, out) in enumerate(zip(feeds, outs)):
        n = feed["x"].shape[1]
        keep = mask[t, :n].astype(bool)
        for i, name in enumerate(names):
            layer_cos[i].append(cosine(out[name][0][keep],
                                       ref["hidden_states"][i + 1][t][:n][keep]))
        h = np.zeros_like(x[t])
        h[:n] = out[last][0]
        final.append(h)
    pooled = minilm.l2_normalize(minilm.mean_pool(np.stack(final), mask))
    emb_cos = [cosine(pooled[t], ref["sentence_embedding"][t]) for t in range(len(texts))]
    out = {
        "layers": layers, "seq": int(ids.shape[1]),
        "cosine_vs_float": min(emb_cos),
        "cosine_per_text": emb_cos,
        "cosine_per_layer": [min(c) for c in layer_cos] if per_layer else None,
        "texts": list(texts),
        "tokens": [int(m.sum()) for m in mask],
        "tokens_processed": int(mask.sum()),
    }
    if layers == len(model.layers):
        out["embedding"] = [float(v) for v in pooled[0]]
    return dev, out


def _run_bert_tiny(new_device, seq, executor):
    from .models import synthetic
    w, shape = synthetic.bert_tiny(0)
    graph, params = archs.bert_encoder(shape, 1), archs.bert_params([w])
    x = synthetic.random_inputs(shape, seq, seed=1)
    dev = new_device()
    calib = synthetic.random_inputs(shape, seq, seed=2)
    y = executor(dev, graph, params,
                 lambda: [{"x": calib, "mask": np.ones((1, seq), np.int64)}]).run(
        {"x": x, "mask": np.ones((1, seq), np.int64)}, {})["blk.0.y"]
    c = cosine(y, L.encoder_layer(x, w, shape))
    return dev, {"layers": 1, "seq": seq, "cosine_vs_float": c, "cosine_per_layer": [c],
                 "tokens_processed": seq}


def _run_gpt_tiny(new_device, seq, executor):
    from .models import synthetic
    w, shape = synthetic.gpt_tiny(0)
    graph, params = archs.gpt_decoder(shape, 1), archs.gpt_params([w])
    x = synthetic.random_inputs(shape, seq + 1, seed=1)
    dev = new_device()
    ex = executor(dev, graph, params, None)
    state = {}
    y = ex.run({"x": x[:seq]}, state)["blk.0.y"]
    y_new = ex.run({"x": x[seq:]}, state)["blk.0.y"][0]
    ref, ref_cache = L.decoder_prefill(x[:seq], w, shape)
    ref_new, _ = L.decoder_decode(x[seq], w, shape, ref_cache)
    c_pre, c_dec = cosine(y, ref), cosine(y_new, ref_new)
    return dev, {"layers": 1, "seq": seq, "cosine_vs_float": min(c_pre, c_dec),
                 "cosine_prefill": c_pre, "cosine_decode": c_dec,
                 "cosine_per_layer": [min(c_pre, c_dec)], "tokens_processed": seq + 1}


def run_model(cfg, model, backend, *, layers=None, seq=None, text=None, progress=None,
              mem_latency=30, check="every", act_bits=None, weights=None, host_ops=False,
              gemm_inputs=lower.DEFAULT_GEMM_INPUTS, per_layer=False, stall_profile=None):
    """Run ``model`` on ``backend``; return the report dict of ``serrano run --json``.
    ``per_layer`` (minilm): read every layer's output out too, for ``cosine_per_layer``
    (else null); the forward pass alone reads out only the last layer's.
    ``stall_profile`` (minilm on the chip, verilator): sample the counters every that
    many cycles and report the exec unit's stalls by graph node (:mod:`sw.stall_profile`)."""
    report, dev = run_model_on(cfg, model, backend, layers=layers, seq=seq, text=text,
                               progress=progress, mem_latency=mem_latency, check=check,
                               act_bits=act_bits, weights=weights, host_ops=host_ops,
                               gemm_inputs=gemm_inputs, per_layer=per_layer,
                               stall_profile=stall_profile)
    dev.close()
    return report


def run_model_on(cfg, model, backend, *, layers=None, seq=None, text=None, progress=None,
                 mem_latency=30, check="every", act_bits=None, weights=None,
                 host_ops=False, gemm_inputs=lower.DEFAULT_GEMM_INPUTS, per_layer=False,
                 stall_profile=None):
    """:func:`run_model`, also returning the :class:`sw.runtime.Device` it ran on (open:
    its ``calls`` hold each call's program and GEMM shapes; close it when done)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    check_backend(backend)
    if gemm_inputs not in lower.GEMM_INPUTS:
        raise ValueError(f"unknown gemm_inputs {gemm_inputs!r}; choose one of: "
                         f"{', '.join(lower.GEMM_INPUTS)}")
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; choose one of: {', '.join(CHECKS)}")
    if seq is not None and (not isinstance(seq, int) or seq < 1):
        raise ValueError(f"--seq must be a positive integer, not {seq!r}")
    act_bits = device_exec.ACT_BITS if act_bits is None else act_bits
    weights = "int8" if weights is None else weights
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of: {', '.join(WEIGHTS)}")

    # Every op on the chip where the graph is lowered (calib: its calibration feeds).
    on_chip = not host_ops and model != "gpt-tiny"
    if on_chip and weights != "int8":
        raise ValueError(f"{weights} weights run with --host-ops only (the on-chip "
                         f"executor takes int8 weights)")
    ops, chips = [], []
    sampler = None
    if stall_profile is not None:
        if model != "minilm" or not on_chip or backend != "verilator":
            raise ValueError("--stall-profile takes minilm, every op on the chip, on the "
                             "verilator backend")
        sampler = stall_profiling.Sampler(stall_profile)

    def executor(dev, graph, params, calib):
        if on_chip:
            ops.append("chip")
            chips.append(lower.OnChip(dev, graph, params,
                                      lower.calibrate(graph, params, calib()),
                                      gemm_inputs=gemm_inputs))
            return chips[-1]
        ops.append("host")
        # int4: every linear map quantized to 4-bit codes with block scales (sw/q4.py).
        q4 = (device_exec.q4_weights(graph, params, cfg.weight_block) if weights == "int4"
              else None)
        return device_exec.DeviceExecutor(dev, graph, params, act_bits=act_bits, q4=q4)

    def new_device():
        dev = Device(cfg, backend, mem_latency=mem_latency, progress=progress, check=check)
        if sampler is not None:
            sampler.attach(dev.backend)
        return dev

    t0 = time.perf_counter()
    if model == "minilm":
        texts = (DEFAULT_TEXTS if text is None else (text,) if isinstance(text, str)
                 else tuple(text))
        dev, out = _run_minilm(new_device, 6 if layers is None else layers, seq, texts,
                               executor, per_layer)
    else:
        if layers not in (None, 1):
            raise ValueError(f"{model} has 1 layer, not {layers}")
        if text is not None:
            raise ValueError(f"{model} takes random inputs, not --text")
        if per_layer:
            raise ValueError(f"{model} has 1 layer: --per-layer is for minilm")
        runner = _run_bert_tiny if model == "bert-tiny" else _run_gpt_tiny
        dev, out = runner(new_device, 16 if seq is None else seq, executor)
    if sampler is not None:
        (built,) = chips[0].programs.values()           # one program: the batch
        out["stall_profile"] = dict(
            every=sampler.every,
            by_node=stall_profiling.by_node(
                stall_profiling.attribute(built["program"], sampler.samples),
                built["tags"]),
            vector=stall_profiling.vector_by_node(
                stall_profiling.attribute_vector(built["program"], sampler.samples),
                built["program"], built["tags"]))
    report = {"model": model, "backend": backend, "preset": cfg.name, "check": dev.check,
              "ops": ops[0], "act_bits": act_bits if ops[0] == "host" else None,
              "gemm_inputs": gemm_inputs if ops[0] == "chip" else None,
              "weights": weights,
              **out, **_summary(dev, cfg, out["tokens_processed"]),
              "wall_s": round(time.perf_counter() - t0, 3)}
    return report, dev
