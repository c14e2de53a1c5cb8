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
calibrated. With ``ops="chip"`` every op runs on the chip instead
(:mod:`sw.nn.lower_decoder`: one program for the prefill, one per decoded token, the
logits of the last position read back), at static scales calibrated on
:data:`LLM_CALIBRATION`.

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
from .nn import archs, device_exec, float_exec, lower_decoder
from .runtime import CHECKS, Device

__all__ = ["MODELS", "OPS", "WEIGHTS", "DEFAULT_PROMPT", "LLM_CALIBRATION", "generate",
           "agreement", "read_texts", "open_executor"]

#: Where the non-GEMM ops run: on the host (float32), or on the chip.
OPS = ("host", "chip")

MODELS = ("smollm2", "llama-tiny", "gpt-tiny")
DEFAULT_PROMPT = "What is the capital of France?"

#: The on-chip executor's calibration texts (its static scales): none of the measured
#: texts (``docs/heldout.txt``, the prompts of the README, the bench and the tests);
#: prose, code, a chat exchange, lists and figures, one word to about 200 tokens.
LLM_CALIBRATION = (
    "Good morning",
    "Thanks a lot, that helped!",
    "<|im_start|>user\nHow many moons does Mars have?<|im_end|>\n<|im_start|>assistant\n"
    "Mars has two small moons, Phobos and Deimos. Both are irregular in shape and are "
    "thought to be captured asteroids or debris from an ancient impact.<|im_end|>\n",
    "function clamp(value, low, high) {\n  if (value < low) return low;\n"
    "  if (value > high) return high;\n  return value;\n}\n\n"
    "const scores = [12, 48, 97, 105];\nconsole.log(scores.map(s => clamp(s, 0, 100)));",
    "Ingredients: 250 g flour, 2 eggs, 300 ml milk, a pinch of salt, butter for the pan.\n"
    "1. Whisk the flour and salt.\n2. Beat in the eggs, then the milk, a little at a "
    "time.\n3. Rest the batter for 30 minutes.\n4. Cook thin layers in a hot pan.",
    "The earth's outer shell is broken into plates that drift a few centimetres a year. "
    "Where two plates pull apart, magma rises and forms new crust along mid-ocean ridges; "
    "where they collide, one plate may sink beneath the other, building mountain ranges "
    "and volcanic arcs. Earthquakes cluster along these boundaries, and geologists read "
    "the history of the oceans in the magnetic stripes frozen into the sea floor. In 1912 "
    "Alfred Wegener proposed that the continents had once formed a single landmass, but "
    "his idea was dismissed for decades because no one could explain what moved them. "
    "Only in the 1960s, with maps of the ocean floor and measurements of its age, did "
    "plate tectonics become the framework of modern geology. Today satellites measure the "
    "motion directly: Australia moves north by about seven centimetres each year, while "
    "the Atlantic widens at roughly the rate a fingernail grows.",
    "Quarterly report: revenue reached $4.2 million, up 18% from the same period last year. "
    "Operating costs fell to $3.1 million after the move to the new warehouse in October, "
    "and the team grew from 27 to 35 people.",
)


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


class _Executor:
    """The model on ``dev``: host ops (:class:`sw.nn.device_exec.DeviceExecutor`) or
    every op on the chip (:class:`sw.nn.lower_decoder.OnChipDecoder`, calibrated on
    :data:`LLM_CALIBRATION`), one interface: :meth:`run` of tokens at positions."""

    def __init__(self, dev, model, encode, graph, params, q4, act_bits, positions, ops):
        if ops not in OPS:
            raise ValueError(f"unknown ops {ops!r}; choose one of: {', '.join(OPS)}")
        self.ops = ops
        self.graph, self.params, self.act_bits = graph, params, act_bits
        if ops == "host":
            self.ex = device_exec.DeviceExecutor(dev, graph, params, act_bits=act_bits,
                                                 positions=positions, q4=q4)
            return
        if not isinstance(model, LM.Llama):
            raise lower_decoder.NotLowered("--ops chip runs Llama-style models (smollm2, "
                                           "llama-tiny); use --ops host")
        calib = []
        for text in LLM_CALIBRATION:
            ids = np.array(encode(text))[:model.shape.context]
            calib.append({"ids": ids, "pos": np.arange(len(ids))})
        peaks = lower_decoder.calibrate(graph, params, calib)
        self.ex = lower_decoder.OnChipDecoder(dev, graph, params, peaks, positions=positions,
                                              q4=q4)

    def run(self, ids, p0, state, last=False):
        feeds = {"ids": np.asarray(ids), "pos": np.arange(p0, p0 + len(ids))}
        if self.ops == "host":
            return self.ex.run(feeds, state, last=last)["logits"]
        return self.ex.run(feeds, last=last)["logits"]

    def next_token(self, ids, p0, state):
        """The greedy next token after ``ids`` (at positions ``p0 ..``): the argmax of
        the last logits on the host, or (on the chip) the token id the program returns."""
        if self.ops == "host":
            return int(np.argmax(self.run(ids, p0, state, last=True)[-1]))
        feeds = {"ids": np.asarray(ids), "pos": np.arange(p0, p0 + len(ids))}
        return self.ex.run(feeds, argmax=True)["token"]


def open_executor(dev, model, *, positions, ops="host", weights=None, act_bits=None,
                  encode=None):
    """The executor of ``model`` (:func:`_load`'s) on the open device ``dev`` for up to
    ``positions`` positions: ``.next_token(ids, p0, state)`` gives the greedy next token
    after ``ids`` at positions ``p0 ..`` (the KV cache in ``state`` and in device
    memory), ``.run`` the logits, ``.graph`` and ``.params`` the model's graph (for its
    float reference), ``.act_bits``; and the weights' format. ``encode`` (the model's
    tokenizer) is for the on-chip path's calibration texts: by default the GGUF file's,
    or bytes for a model without one."""
    graph, params = _model_graph(model)
    q4, weights = _q4(dev.cfg, model, graph, params, weights)
    act_bits = device_exec.ACT_BITS if act_bits is None else act_bits
    if encode is None:
        encode = (_Bytes.encode if getattr(model, "path", None) is None
                  else (lambda t: LM.tokenize(model, t)))
    return _Executor(dev, model, encode, graph, params, q4, act_bits, positions,
                     ops), weights


def agreement(cfg, model_name, backend, texts, *, act_bits=None, mem_latency=30,
              check="every", gguf=None, weights=None, ops="host"):
    """Teacher-forced top-1 agreement of the device path with the float model over
    ``texts`` (each run as one prompt; every position's next-token argmax compared):
    ``{"top1_agreement_vs_float", "positions", "per_text", "act_bits", ...}``."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of: {', '.join(MODELS)}")
    if not texts:
        raise ValueError("no text to score")
    model, encode, _ = _load(model_name, gguf)
    same = total = 0
    per_text = []
    all_ids = [np.array(encode(text)) for text in texts]
    for ids in all_ids:
        if not len(ids):
            raise ValueError("a text to score is empty")
        if len(ids) > model.shape.context:
            raise ValueError(f"a text to score has {len(ids)} tokens, more than the "
                             f"context of {model.shape.context}")
    with Device(cfg, backend, mem_latency=mem_latency, check=check) as dev:
        ex, weights = open_executor(dev, model, positions=max(map(len, all_ids)), ops=ops,
                                    weights=weights, act_bits=act_bits, encode=encode)
        graph, params, act_bits = ex.graph, ex.params, ex.act_bits
        for ids in all_ids:
            feeds = {"ids": ids, "pos": np.arange(len(ids))}
            got = ex.run(ids, 0, {}).argmax(axis=-1)
            want = float_exec.run(graph, params, feeds, {})["logits"].argmax(axis=-1)
            hits = int((got == want).sum())
            per_text.append({"positions": len(ids), "top1": hits / len(ids)})
            same += hits
            total += len(ids)
        bit_exact = dev.bit_exact
    return {"model": model_name, "backend": backend, "top1_agreement_vs_float": same / total,
            "positions": total, "per_text": per_text, "ops": ops,
            "act_bits": act_bits if ops == "host" else None,
            "weights": weights,
            "bit_exact_vs_golden": bit_exact}


def generate(cfg, model_name, backend, *, prompt=None, chat=False, max_tokens=16,
             clock_ghz=1.0, mem_latency=30, check="every", progress=None, constants=None,
             act_bits=None, gguf=None, weights=None, ops="host"):
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
    stop = model.eos_id if model_name == "smollm2" else None
    with Device(cfg, backend, mem_latency=mem_latency, check=check) as dev:
        ex, weights = open_executor(dev, model, positions=len(ids) + max_tokens, ops=ops,
                                    weights=weights, act_bits=act_bits, encode=encode)
        graph, params, act_bits = ex.graph, ex.params, ex.act_bits
        state = {}
        n0 = len(dev.calls)
        nxt = ex.next_token(ids, 0, state)
        prefill_calls = dev.calls[n0:]
        generated, per_token = [], []
        for step in range(max_tokens):
            generated.append(nxt)
            if nxt == stop or step + 1 == max_tokens:
                break
            n0, t0 = len(dev.calls), time.perf_counter()
            fed, nxt = nxt, ex.next_token([nxt], len(ids) + step, state)
            calls = dev.calls[n0:]
            stats = _token_stats(cfg, calls) if dev.timed else None
            per_token.append((calls, time.perf_counter() - t0, stats))
            if progress:
                progress({"event": "token", "index": step + 1, "token": fed,
                          "text": decode([fed]),
                          "cycles": stats and stats["cycles"],
                          "bus_utilization": stats and stats["bus_utilization"],
                          "calls": len(calls), "wall_s": per_token[-1][1]})
        timed = dev.timed
        bit_exact = dev.bit_exact
        sim_wall, check_wall = dev.sim_wall_s, dev.check_wall_s
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
        "ops": ops, "act_bits": act_bits if ops == "host" else None, "weights": weights,
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
        "check_wall_s": round(check_wall, 3),
        "wall_s": round(time.perf_counter() - t_start, 3),
    }
    return report
