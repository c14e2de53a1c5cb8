"""``serrano generate``: a Llama-architecture language model, token by token, on the
accelerator.

The model's graph (:func:`sw.nn.archs.llama`) runs on the device executor
(:mod:`sw.nn.device_exec`): every GEMM (the attention and FFN projections, the LM head)
on the accelerator with int8 weights streamed from device memory for every token, the
other ops on the host. Prefill runs the prompt's tokens as one batch of rows; decode then
runs one token per step against the KV cache, greedily, until the end-of-sequence token
or ``max_tokens``.

Models: ``smollm2`` (SmolLM2-135M-Instruct from its GGUF file), ``llama-tiny`` (seeded,
2 layers) and ``gpt-tiny`` (the seeded GPT decoder layer of ``serrano run``, with a seeded
token embedding tied to its head), the last two with the bytes of the text as token ids.
Every scale is computed at run time, per token (:mod:`sw.nn.device_exec`): nothing is
calibrated.

The report (``--json``): ``prefill_cycles``, ``decode_cycles_per_token``,
``bus_utilization_per_token`` (the busier AXI channel's bytes, reads or writes, over its
peak for the token's cycles), ``cycles_over_bus_roofline`` (the token's cycles over its
read plus write bytes at the bus's peak: below 1 is possible, as AXI reads and writes
travel on separate channels),
``tokens_per_s`` at ``clock_ghz``, ``joules_per_token`` and ``energy`` from the energy
model (:mod:`sw.energy`: counted events, not silicon), ``host_round_trips_per_token``,
``top1_agreement_vs_float`` (teacher-forced: the float model's argmax at each generated
position against the token generated) and ``bit_exact_vs_golden``.
"""

import time

import numpy as np

from . import energy
from .q4 import WEIGHTS
from .backends import check_backend
from .models import llama as LM
from .nn import archs, device_exec, float_exec
from .runtime import CHECKS, Device

__all__ = ["MODELS", "WEIGHTS", "DEFAULT_PROMPT", "generate", "agreement", "read_texts"]

MODELS = ("smollm2", "llama-tiny", "gpt-tiny")
DEFAULT_PROMPT = "What is the capital of France?"


class _Bytes:
    """llama-tiny's tokenizer: a token is a byte of the UTF-8 text."""

    @staticmethod
    def encode(text):
        return list(text.encode())

    @staticmethod
    def decode(ids):
        return bytes(int(i) for i in ids).decode(errors="replace")


class _GptTiny:
    """gpt-tiny as a language model over bytes: its graph and parameters."""

    def __init__(self, context=512):
        from .models import synthetic
        w, shape = synthetic.gpt_tiny(0)
        rng = np.random.default_rng([0x6B7, 1])
        embd = rng.standard_normal((256, shape.hidden)).astype(np.float32)
        self.shape = type("Shape", (), {"context": context})()
        self.graph = archs.gpt_decoder(shape, 1, vocab=256)
        self.params = archs.gpt_params([w], tok_embd=embd)


def _load(name, gguf=None):
    if gguf is not None and name != "smollm2":
        raise ValueError(f"--gguf replaces smollm2's file; {name} is not read from one")
    if name == "smollm2":
        model = LM.load_gguf(gguf) if gguf is not None else LM.load_smollm2()
        return model, (lambda t: LM.tokenize(model, t)), (lambda i: LM.detokenize(model, i))
    model = _GptTiny() if name == "gpt-tiny" else LM.llama_tiny(0)
    return model, _Bytes.encode, _Bytes.decode


def _prompt_text(model, name, prompt, chat):
    if chat:
        if name != "smollm2":
            raise ValueError(f"{name} has no chat template")
        return LM.chat_prompt(model, [{"role": "user", "content": prompt}])
    return prompt


def _token_stats(cfg, calls):
    """Cycles, bytes read and written, and the busier AXI channel's utilization of one
    token's calls."""
    cyc = sum(c.cycles for c in calls)
    rd = sum(c.counters["dma_read_bytes"] for c in calls)
    wr = sum(c.counters["dma_write_bytes"] for c in calls)
    return {"cycles": cyc, "read_bytes": rd, "write_bytes": wr,
            "bus_utilization": max(rd, wr) / (cyc * cfg.bus_bytes)}


def _model_graph(model):
    if isinstance(model, _GptTiny):
        return model.graph, model.params
    return LM.graph(model), archs.llama_params(model)


def _q4(cfg, model, graph, params, weights):
    """The ``q4`` argument of the device executor for ``weights`` (``None``: the model's
    default, ``int4`` for a model read from a GGUF file of 4-bit tensors, else
    ``int8``), and the format's name."""
    codes = (LM.block_codes(model, cfg.weight_block)
             if isinstance(model, LM.Llama) and model.path is not None
             and weights in (None, "int4") else {})
    if weights is None:
        weights = "int4" if codes else "int8"
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of: {', '.join(WEIGHTS)}")
    if weights == "int8":
        return None, weights
    return device_exec.q4_weights(graph, params, cfg.weight_block, codes or None), weights


def read_texts(path):
    """The texts of a ``--score-file``: separated by lines holding only ``%%``; the
    file's leading lines that start with ``#`` are a header, not text."""
    try:
        lines = open(path, encoding="utf-8").read().split("\n")
    except OSError as e:
        raise ValueError(f"cannot read {str(path)!r}: {e.strerror}") from None
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    texts, cur = [], []
    for line in lines + ["%%"]:
        if line == "%%":
            text = "\n".join(cur).strip("\n")
            if text:
                texts.append(text)
            cur = []
        else:
            cur.append(line)
    if not texts:
        raise ValueError(f"{str(path)!r} holds no text")
    return texts


def agreement(cfg, model_name, backend, texts, *, act_bits=None, mem_latency=30,
              check="every", gguf=None, weights=None):
    """Teacher-forced top-1 agreement of the device path with the float model over
    ``texts`` (each run as one prompt; every position's next-token argmax compared):
    ``{"top1_agreement_vs_float", "positions", "per_text", "act_bits", ...}``."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(MODELS)}")
    if not texts:
        raise ValueError("no text to score")
    model, encode, _ = _load(model_name, gguf)
    act_bits = device_exec.ACT_BITS if act_bits is None else act_bits
    graph, params = _model_graph(model)
    same = total = 0
    per_text = []
    all_ids = [np.array(encode(text)) for text in texts]
    for ids in all_ids:
        if not len(ids):
            raise ValueError("a text to score is empty")
        if len(ids) > model.shape.context:
            raise ValueError(f"a text to score has {len(ids)} tokens, more than the "
                             f"context of {model.shape.context}")
    q4, weights = _q4(cfg, model, graph, params, weights)
    with Device(cfg, backend, mem_latency=mem_latency, check=check) as dev:
        ex = device_exec.DeviceExecutor(dev, graph, params, act_bits=act_bits,
                                        positions=max(map(len, all_ids)), q4=q4)
        for ids in all_ids:
            feeds = {"ids": ids, "pos": np.arange(len(ids))}
            got = ex.run(feeds, {})["logits"].argmax(axis=-1)
            want = float_exec.run(graph, params, feeds, {})["logits"].argmax(axis=-1)
            hits = int((got == want).sum())
            per_text.append({"positions": len(ids), "top1": hits / len(ids)})
            same += hits
            total += len(ids)
        bit_exact = dev.bit_exact
    return {"model": model_name, "backend": backend, "top1_agreement_vs_float": same / total,
            "positions": total, "per_text": per_text, "act_bits": act_bits,
            "weights": weights,
            "bit_exact_vs_golden": bit_exact}


def generate(cfg, model_name, backend, *, prompt=None, chat=False, max_tokens=16,
             clock_ghz=1.0, mem_latency=30, check="every", progress=None, constants=None,
             act_bits=None, gguf=None, weights=None):
    """Generate up to ``max_tokens`` tokens of ``model_name`` on ``backend``; the report
    dict of ``serrano generate --json``. ``progress(event)`` sees ``{"event": "token",
    ...}`` after each token."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(MODELS)}")
    check_backend(backend)
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; choose one of: {', '.join(CHECKS)}")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"--max-tokens must be at least 1, not {max_tokens!r}")
    if not clock_ghz > 0:
        raise ValueError(f"--clock must be positive, not {clock_ghz!r}")
    t_start = time.perf_counter()
    model, encode, decode = _load(model_name, gguf)
    text = _prompt_text(model, model_name, DEFAULT_PROMPT if prompt is None else prompt, chat)
    ids = encode(text)
    if not ids:
        raise ValueError("the prompt is empty")
    if len(ids) + max_tokens > model.shape.context:
        raise ValueError(f"the prompt ({len(ids)} tokens) and --max-tokens {max_tokens} "
                         f"exceed the context of {model.shape.context}")
    act_bits = device_exec.ACT_BITS if act_bits is None else act_bits
    graph, params = _model_graph(model)

    q4, weights = _q4(cfg, model, graph, params, weights)
    stop = model.eos_id if model_name == "smollm2" else None
    with Device(cfg, backend, mem_latency=mem_latency, check=check) as dev:
        ex = device_exec.DeviceExecutor(dev, graph, params, act_bits=act_bits,
                                        positions=len(ids) + max_tokens, q4=q4)
        state = {}
        n0 = len(dev.calls)
        logits = ex.run({"ids": np.array(ids), "pos": np.arange(len(ids))}, state)["logits"]
        prefill_calls = dev.calls[n0:]
        generated, per_token = [], []
        for step in range(max_tokens):
            nxt = int(np.argmax(logits[-1]))
            generated.append(nxt)
            if nxt == stop or step + 1 == max_tokens:
                break
            n0, t0 = len(dev.calls), time.perf_counter()
            logits = ex.run({"ids": np.array([nxt]), "pos": np.array([len(ids) + step])},
                            state)["logits"]
            calls = dev.calls[n0:]
            stats = _token_stats(cfg, calls) if dev.timed else None
            per_token.append((calls, time.perf_counter() - t0, stats))
            if progress:
                progress({"event": "token", "index": step + 1, "token": nxt,
                          "text": decode([nxt]),
                          "cycles": stats and stats["cycles"],
                          "bus_utilization": stats and stats["bus_utilization"],
                          "calls": len(calls), "wall_s": per_token[-1][1]})
        timed = dev.timed
        bit_exact = dev.bit_exact
        sim_wall = dev.sim_wall_s
    # Teacher-forced agreement: the float model's next token at each generated position.
    seq = ids + generated[:-1]
    ref = float_exec.run(graph, params, {"ids": np.array(seq), "pos": np.arange(len(seq))},
                         {})["logits"]
    want = ref.argmax(axis=-1)[len(ids) - 1:]
    agreement = float(np.mean(want == np.array(generated)))
    # Free-running: the float model's own greedy answer to the same prompt.
    float_ids, _ = float_exec.greedy(graph, params, ids, len(generated),
                                     stop=-1 if stop is None else stop)

    stats = [st for _, _, st in per_token] if timed else []
    cycles = [st["cycles"] for st in stats]
    reads = [st["read_bytes"] for st in stats]
    writes = [st["write_bytes"] for st in stats]
    moved = [r + w for r, w in zip(reads, writes)]
    energies = [energy.calls_estimate(cfg, calls, 1, constants) for calls, _, _ in per_token
                ] if timed else []
    mean_cycles = float(np.mean(cycles)) if cycles else None
    report = {
        "model": model_name, "backend": backend, "preset": cfg.name, "check": check,
        "act_bits": act_bits, "weights": weights,
        "prompt": text, "prompt_ids": list(map(int, ids)),
        "generated_ids": generated, "text": decode(generated),
        "prefill_tokens": len(ids),
        "prefill_cycles": sum(c.cycles for c in prefill_calls) if timed else None,
        "decode_cycles_per_token": cycles or None,
        "bus_utilization_per_token": [st["bus_utilization"] for st in stats] or None,
        "bytes_per_token": moved or None,
        "read_bytes_per_token": reads or None, "write_bytes_per_token": writes or None,
        "cycles_over_bus_roofline": ([c / -(-b // cfg.bus_bytes) for b, c in zip(moved, cycles)]
                                     if timed else None),
        "clock_ghz": clock_ghz,
        "tokens_per_s": clock_ghz * 1e9 / mean_cycles if mean_cycles else None,
        "joules_per_token": (float(np.mean([e["total_j"] for e in energies]))
                             if energies else None),
        "energy": energies[-1] if energies else None,
        "host_round_trips_per_token": (len(per_token[-1][0]) if per_token else None),
        "top1_agreement_vs_float": agreement,
        "float_greedy_ids": float_ids, "float_greedy_text": decode(float_ids),
        "same_as_float_greedy": float_ids == generated,
        "bit_exact_vs_golden": bit_exact,
        "sim_wall_s": round(sim_wall, 3),
        "wall_s": round(time.perf_counter() - t_start, 3),
    }
    return report
