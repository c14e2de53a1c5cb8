"""Decoders with every op on the chip (:mod:`sw.nn.lower_decoder`): a prefill is one
program and each decoded token another, against the float model, the golden model and
the RTL."""

import dataclasses

import numpy as np
import pytest

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sw import isa_model
from serrano.sw.models import llama as LM
from serrano.sw.nn import archs, float_exec
from serrano.sw.nn import lower_decoder as LD
from serrano.sw.run import cosine
from serrano.sw.runtime import Device

DEFAULT = get_preset("default")


def _tiny(layers=2):
    """llama-tiny with a head of 32 (two 16-element rows a half: the rotary embedding
    rotates whole rows) and grouped-query attention (4 query heads, 2 KV heads)."""
    model = LM.llama_tiny(0, layers=layers, hidden=128, heads=4, kv_heads=2, ffn=256)
    graph, params = LM.graph(model), archs.llama_params(model)
    rng = np.random.default_rng(5)
    calib = [{"ids": rng.integers(0, 256, n), "pos": np.arange(n)} for n in (40, 17, 90)]
    return graph, params, LD.calibrate(graph, params, calib)


def _sink(peaks, factor=4.0):
    """The calibration as if the first position's residual stream and SwiGLU values
    stood ``factor`` times above the others', and its attention values far below (the
    others' peak taken 2.5 times higher: a trained model's attention sink), so that
    those values get a scale of their own there."""
    first = dict(peaks.first)
    for name in first:
        if name.rsplit(".", 1)[-1] in ("h", "y", "gate", "up", "gate_act", "swiglu",
                                       "ffn_down"):
            first[name] = factor * peaks.rest[name]
    heads_rest = {name: 2.5 * np.maximum(p, peaks.heads_first[name])
                  if name.endswith(".v") else p for name, p in peaks.heads_rest.items()}
    return dataclasses.replace(peaks, first=first, heads_rest=heads_rest)


def _programs(dev):
    out = []
    for call in dev.calls:
        prog = isa_model.Program()
        prog.insns = [call.program[i:i + isa.INSN_BYTES]
                      for i in range(0, len(call.program), isa.INSN_BYTES)]
        out.append(prog)
    return out


def _run(backend, peaks, ids, prefill, block=None, layers=2, cfg=DEFAULT):
    graph, params, _ = _tiny(layers)
    with Device(cfg, backend) as dev:
        chip = LD.OnChipDecoder(dev, graph, params, peaks, positions=64)
        first = chip.run({"ids": ids[:prefill], "pos": np.arange(prefill)},
                         block=block)["logits"]
        steps = [chip.run({"ids": ids[p:p + 1], "pos": np.array([p])}, last=True)["logits"][0]
                 for p in range(prefill, len(ids))]
        # The next token found on the chip: the argmax of the 16-bit logits.
        token = chip.run({"ids": ids[:prefill], "pos": np.arange(prefill)},
                         argmax=True)["token"]
        return first, np.array(steps), dev, token


def test_prefill_and_decode_are_one_program_each_near_float():
    """A prefill of 21 tokens, then 4 decoded tokens (their keys appended inside a
    position tile: the tile reloaded and transposed again): one call each, near the
    float model at every position, each program ordered by its tokens and fences."""
    graph, params, peaks = _tiny()
    ids = np.random.default_rng(9).integers(0, 256, 25)
    first, steps, dev, token = _run("golden", peaks, ids, 21)
    assert len(dev.calls) == 6 and dev.host_round_trips == 6
    assert token == int(first[-1].argmax())
    state = {}
    want = float_exec.run(graph, params, {"ids": ids[:21], "pos": np.arange(21)},
                          state)["logits"]
    assert min(cosine(a, b) for a, b in zip(first, want)) > 0.999
    for p, got in zip(range(21, 25), steps):
        ref = float_exec.run(graph, params, {"ids": ids[p:p + 1], "pos": np.array([p])},
                             state)["logits"][0]
        assert cosine(got, ref) > 0.999
        assert got.argmax() == ref.argmax()
    # Each program ordered as it runs (the decode program at its positions 21 .. 24),
    # and no token left over whichever key tiles its guards skip.
    for prog, position in zip(_programs(dev), [0, 21, 22, 23, 24, 0]):
        for at in {position, 1, 16, 63}:
            isa_model.check_races(DEFAULT, prog, at)
            assert not any(isa_model.check_tokens(prog, position=at).values())
    ops = [isa.decode_op(raw) for raw in _programs(dev)[0].insns]
    vops = {isa.VecOp(b["vop"]) for op, _, b in ops if op == isa.Op.VEC}
    assert {isa.VecOp.RMSNORM, isa.VecOp.ROPE, isa.VecOp.SOFTMAX, isa.VecOp.MUL,
            isa.VecOp.LUT, isa.VecOp.ADD} <= vops
    assert any(op == isa.Op.VEC and b["vop"] == isa.VecOp.SOFTMAX and b["causal"]
               for op, _, b in ops)
    assert any(op == isa.Op.VEC and b["vop"] == isa.VecOp.MUL and b["wide"]
               for op, _, b in ops)
    assert any(op == isa.Op.STORE and b["transpose"] for op, _, b in ops)
    assert any(op == isa.Op.MATMUL and b["pair"] for op, _, b in ops)


def test_token_blocks_give_the_same_integers():
    """A prefill in blocks of 16 tokens (each block through every layer, its keys and
    values appended as it goes) gives the logits of the whole prefill at once."""
    _, _, peaks = _tiny()
    ids = np.random.default_rng(3).integers(0, 256, 40)
    whole = _run("golden", peaks, ids, 40)[0]
    blocks = _run("golden", peaks, ids, 40, block=16)[0]
    np.testing.assert_array_equal(whole, blocks)


def test_first_position_scales_split_the_instructions():
    """Values whose first-position peak stands far above the rest get a scale of their
    own there: the instructions split that row off, and the result stays near float."""
    graph, params, peaks = _tiny()
    sink = _sink(peaks)
    ids = np.random.default_rng(4).integers(0, 256, 18)
    first, _, dev, _ = _run("golden", sink, ids, 18)
    want = float_exec.run(graph, params, {"ids": ids, "pos": np.arange(18)}, {})["logits"]
    assert min(cosine(a, b) for a, b in zip(first, want)) > 0.999
    ops = [isa.decode_op(raw) for raw in _programs(dev)[0].insns]
    assert any(op == isa.Op.VEC and b["count"] == 1 for op, _, b in ops)
    # the first key's probabilities rescaled for its values' own scale
    assert any(op == isa.Op.VEC and b["vop"] == isa.VecOp.MUL and b["b_repeat"]
               and b["rows"] == 1 for op, _, b in ops)
    assert any(op == isa.Op.STORE and b["m"] == 1 for op, _, b in ops)
    # Few parameter slots: the split GEMMs' two groups of sets wrap round them often;
    # each pair stays one run of slots, and every program stays ordered.
    few = dataclasses.replace(DEFAULT, name="default, 10 parameter slots", param_tiles=10)
    again, _, dev, _ = _run("golden", sink, ids, 18, cfg=few)
    np.testing.assert_array_equal(again, first)
    for prog in _programs(dev):
        isa_model.check_races(few, prog)


def test_one_decode_program_serves_every_position():
    """Decoded tokens at positions 15 to 34 (three key tiles; 16 and 32 each start
    one): one program, built once and run with the position register at each position,
    gives the logits of the programs built for each position, bit for bit, and counts
    their MACs (but where a token starts a key tile: the one program reloads that tile,
    16 rows, where the built one transposes its one row)."""
    graph, params, peaks = _tiny()
    ids = np.random.default_rng(12).integers(0, 256, 35)

    def decode(one):
        with Device(DEFAULT, "golden") as dev:
            chip = LD.OnChipDecoder(dev, graph, params, peaks, positions=64)
            assert chip.one_program is None
            if not one:
                chip.one_program = "programs built per position, for the comparison"
            chip.run({"ids": ids[:15], "pos": np.arange(15)})
            steps = [chip.run({"ids": ids[p:p + 1], "pos": np.array([p])},
                              last=True)["logits"][0] for p in range(15, 35)]
            calls = dev.calls[1:]
            return np.array(steps), {c.program for c in calls}, [c.macs for c in calls]

    one, one_progs, one_macs = decode(True)
    per, per_progs, per_macs = decode(False)
    np.testing.assert_array_equal(one, per)
    assert len(one_progs) == 1 and len(per_progs) == 20
    C = DEFAULT.cols
    assert [m for p, m in zip(range(15, 35), one_macs) if p % C] == \
        [m for p, m in zip(range(15, 35), per_macs) if p % C]
    # Guards and position fields are there: the key tiles past the position skipped.
    ops = [isa.decode_op(raw) for raw in _programs_of(one_progs.pop())]
    assert sum(h["guard"] for _, h, _ in ops) >= 4 * 2      # 4 tiles x 2 KV heads
    assert {op for op, h, _ in ops if h["rel"]} == {
        isa.Op.LOAD_ACT, isa.Op.STORE, isa.Op.MATMUL, isa.Op.VEC}


def _programs_of(raw):
    return [raw[i:i + isa.INSN_BYTES] for i in range(0, len(raw), isa.INSN_BYTES)]


def test_decoder_on_chip_bit_exact_on_rtl(simulator):
    """One layer: a prefill (with the first position's own scales), decoded tokens
    (the one decode program; on Verilator at positions 15, 16 and 17, inside a key tile
    and into the next, on Icarus, a thousand times slower, at position 5) and a prefill
    that returns its next token (``ARGMAX wide``), on the RTL: memory bit for bit as the
    golden model's after every call."""
    _, _, peaks = _tiny(1)
    n, prefill = (18, 15) if simulator == "verilator" else (6, 5)
    ids = np.random.default_rng(7).integers(0, 256, n)
    gold = _run("golden", _sink(peaks), ids, prefill, layers=1)
    rtl = _run(simulator, _sink(peaks), ids, prefill, layers=1)
    assert rtl[2].bit_exact is True
    np.testing.assert_array_equal(rtl[0], gold[0])
    np.testing.assert_array_equal(rtl[1], gold[1])
    assert rtl[3] == gold[3] == int(gold[0][-1].argmax())


def test_bad_positions_are_one_line_errors():
    graph, params, peaks = _tiny()
    with Device(DEFAULT, "golden") as dev:
        chip = LD.OnChipDecoder(dev, graph, params, peaks, positions=32)
        chip.run({"ids": np.arange(5), "pos": np.arange(5)})
        with pytest.raises(ValueError, match="holds 5 positions"):
            chip.run({"ids": np.arange(2), "pos": np.arange(7, 9)})
        with pytest.raises(LD.TooLong, match="exceed the KV cache"):
            chip.run({"ids": np.arange(40), "pos": np.arange(40)})
        with pytest.raises(ValueError, match="consecutive"):
            chip.run({"ids": np.arange(2), "pos": np.array([5, 7])})
