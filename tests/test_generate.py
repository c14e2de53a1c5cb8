"""``serrano generate``: a Llama-architecture model token by token on the accelerator."""

import json
import subprocess
import sys

import pytest

from serrano.hw.config import get_preset
from serrano.sw.generate import generate
from tests.conftest import require_simulator

TINY = get_preset("tiny")
KEYS = {"model", "backend", "preset", "prompt_ids", "generated_ids", "text", "prefill_cycles",
        "decode_cycles_per_token", "bus_utilization_per_token", "tokens_per_s",
        "joules_per_token", "energy", "host_round_trips_per_token",
        "top1_agreement_vs_float", "bit_exact_vs_golden", "sim_wall_s", "check_wall_s",
        "act_bits",
        "float_greedy_ids", "same_as_float_greedy"}


def test_llama_tiny_on_golden():
    r = generate(TINY, "llama-tiny", "golden", prompt="abc", max_tokens=5)
    assert KEYS <= set(r)
    assert r["prompt_ids"] == [97, 98, 99] and len(r["generated_ids"]) == 5
    assert r["prefill_cycles"] is None and r["bit_exact_vs_golden"] is None
    assert 0.0 <= r["top1_agreement_vs_float"] <= 1.0


def test_llama_tiny_on_verilator_counts_every_token():
    require_simulator("verilator")
    r = generate(TINY, "llama-tiny", "verilator", prompt="hi", max_tokens=3)
    g = generate(TINY, "llama-tiny", "golden", prompt="hi", max_tokens=3)
    assert r["bit_exact_vs_golden"] is True and r["check_wall_s"] > 0
    assert r["generated_ids"] == g["generated_ids"] and g["check_wall_s"] == 0
    assert len(r["decode_cycles_per_token"]) == 2 and r["prefill_cycles"] > 0
    for util, over in zip(r["bus_utilization_per_token"], r["cycles_over_bus_roofline"]):
        assert 0 < util <= 1 and over > 0.5     # reads and writes: two AXI channels
    assert r["joules_per_token"] > r["energy"]["dram_j"] > 0
    assert r["host_round_trips_per_token"] == 2 * 6 + 1


def test_every_op_on_chip_one_round_trip_per_token():
    """``ops="chip"``: one program for the prefill and one per decoded token, bit-exact on
    the RTL, the same tokens as the float model (llama-tiny: its head of 16 is whole
    rows of the tiny preset's 4-element ones)."""
    require_simulator("verilator")
    r = generate(TINY, "llama-tiny", "verilator", prompt="hi there", max_tokens=3,
                 ops="chip")
    assert r["ops"] == "chip" and r["act_bits"] is None
    assert r["bit_exact_vs_golden"] is True and r["host_round_trips_per_token"] == 1
    assert r["top1_agreement_vs_float"] == 1.0 and r["same_as_float_greedy"]


def test_ops_chip_errors_are_one_line():
    for args, msg in ((["--model", "gpt-tiny"], "runs Llama-style models"),
                      (["--model", "llama-tiny"], "head size 16 is not a whole")):
        proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "generate", *args,
                               "--ops", "chip", "--max-tokens", "1"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_smollm2_answers_on_golden():
    """SmolLM2 from its GGUF file through the accelerator's arithmetic (golden backend):
    the chat answer follows the float model's greedy tokens most of the way."""
    r = generate(get_preset("default"), "smollm2", "golden", chat=True, max_tokens=4)
    assert r["prompt"].startswith("<|im_start|>system")
    assert len(r["prompt_ids"]) == 37
    assert r["top1_agreement_vs_float"] >= 0.5
    assert r["text"].strip()


@pytest.mark.parametrize("argv, message", [
    (["--model", "llama-tiny", "--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--model", "llama-tiny", "--prompt", "x" * 600], "exceed the context of 512"),
    (["--model", "gpt-5"], "unknown model 'gpt-5'"),
    (["--model", "llama-tiny", "--chat"], "llama-tiny has no chat template"),
    (["--model", "llama-tiny", "--backend", "board"], "unknown backend 'board'"),
])
def test_bad_input_is_one_line(argv, message):
    proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "generate", "--preset",
                           "tiny", *argv], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_json_output():
    proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "generate", "--model",
                           "llama-tiny", "--preset", "tiny", "--max-tokens", "2", "--json"],
                          capture_output=True, text=True, check=True)
    assert KEYS <= set(json.loads(proc.stdout))


def test_score_held_out_text():
    """``--score``: the device path's teacher-forced agreement with the float model over
    given text (llama-tiny; its tokens are the text's bytes)."""
    from serrano.sw.generate import agreement
    r = agreement(TINY, "llama-tiny", "golden", ["a held-out line", "and another"])
    assert r["positions"] == len("a held-out line") + len("and another")
    assert 0.0 <= r["top1_agreement_vs_float"] <= 1.0
    assert [t["positions"] for t in r["per_text"]] == [15, 11] and r["act_bits"] == 16
    r8 = agreement(TINY, "llama-tiny", "golden", ["a held-out line"], act_bits=8)
    assert r8["act_bits"] == 8
    with pytest.raises(ValueError, match="act_bits must be 8 or 16"):
        agreement(TINY, "llama-tiny", "golden", ["x"], act_bits=4)
    with pytest.raises(ValueError, match="a text to score is empty"):
        agreement(TINY, "llama-tiny", "golden", [""])


def test_gpt_tiny_generates_on_verilator_bit_exact():
    """gpt-tiny as a byte-level language model: every call on the RTL bit-exact, the
    tokens those of the golden backend and of the float model's greedy answer."""
    require_simulator("verilator")
    r = generate(TINY, "gpt-tiny", "verilator", prompt="hello", max_tokens=3)
    g = generate(TINY, "gpt-tiny", "golden", prompt="hello", max_tokens=3)
    assert r["bit_exact_vs_golden"] is True and r["generated_ids"] == g["generated_ids"]
    assert r["host_round_trips_per_token"] == 6 + 1          # one layer; the LM head
    assert r["same_as_float_greedy"] and len(r["decode_cycles_per_token"]) == 2


def test_bad_gguf_files_are_one_line(gguf_files):
    """``--gguf``: a truncated file, or one of an architecture serrano does not run, ends
    with one line naming the problem and exit status 2; a good file runs."""
    from serrano.sw.models import llama as LM
    for key, message in (("cut", "not a readable GGUF file"),
                         ("gpt2", "architecture 'gpt2' is not supported"),
                         ("missing", "no such GGUF file")):
        proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "generate", "--model",
                               "smollm2", "--gguf", str(gguf_files[key]), "--preset",
                               "tiny"],
                              capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "generate", "--model",
                           "llama-tiny", "--gguf", str(gguf_files["good"]), "--preset",
                           "tiny"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--gguf replaces smollm2's file" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "generate", "--model",
                           "smollm2", "--gguf", str(LM.smollm2_path()), "--prompt", "Paris is",
                           "--max-tokens", "1", "--preset", "tiny", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["generated_ids"]) == 1
