"""The on-chip executor (sw/nn/lower.py): a whole encoder as one program, every op on the
chip, against float references and, on the simulators, bit for bit against the golden
model."""

import subprocess
import sys

import numpy as np
import pytest

from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sw import isa_model
from serrano.sw.models import layers as L, synthetic
from serrano.sw.nn import archs, lower
from serrano.sw.nn.lower import _tiles
from serrano.sw.run import cosine, run_model, run_model_on
from serrano.sw.runtime import Device

DEFAULT = get_preset("default")


def _bert_tiny(seq, seed=1):
    w, shape = synthetic.bert_tiny(0)
    graph, params = archs.bert_encoder(shape, 1), archs.bert_params([w])
    calib = [{"x": synthetic.random_inputs(shape, seq, seed=100 + s),
              "mask": np.ones((1, seq), np.int64)} for s in range(3)]
    return w, shape, graph, params, lower.calibrate(graph, params, calib)


def _opcodes(program):
    return [isa.decode_op(program[i:i + isa.INSN_BYTES])
            for i in range(0, len(program), isa.INSN_BYTES)]


def test_bert_tiny_is_one_program_with_every_op_on_chip():
    """One call: the input in, the output out; its program holds the vector unit's
    operations, the transposed keys and the 16-bit GEMMs, and the result is near float
    (static scales from other inputs)."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    x = synthetic.random_inputs(shape, 16, seed=1)
    with Device(DEFAULT, "golden") as dev:
        chip = lower.OnChip(dev, graph, params, peaks)
        y = chip.run({"x": x})["blk.0.y"]
        assert len(dev.calls) == 1 and dev.host_round_trips == 1
        ops = _opcodes(dev.calls[0].program)
    assert cosine(y, L.encoder_layer(x, w, shape)) > 0.999
    vops = {isa.VecOp(b["vop"]) for op, _, b in ops if op == isa.Op.VEC}
    assert {isa.VecOp.ADD, isa.VecOp.LAYERNORM, isa.VecOp.LUT, isa.VecOp.SOFTMAX,
            isa.VecOp.TABLE} <= vops
    assert any(op == isa.Op.STORE and b["transpose"] for op, _, b in ops)
    assert any(op == isa.Op.STORE and b["wide"] for op, _, b in ops)
    assert any(op == isa.Op.MATMUL and b["pair"] for op, _, b in ops)
    # Ordered by its fences and tokens: every conflicting access pair.
    code = dev.calls[0].program
    isa_model.check_races(DEFAULT, code)
    assert not any(isa_model.check_tokens(code).values())     # every token taken
    fences = sum(op == isa.Op.FENCE for op, _, _ in ops)
    assert fences <= 6, fences      # tokens, not fences, order the steps


def test_padding_changes_no_real_token():
    """A padded sequence (mask of ones, then zeros) gives the same rows for its tokens
    as the same tokens alone, to the output's resolution: padded keys are masked out of
    every softmax."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    x = synthetic.random_inputs(shape, 11, seed=5)
    pad = np.concatenate([x, np.zeros((9, shape.hidden), np.float32)])
    mask = np.r_[np.ones(11), np.zeros(9)].astype(np.int64)
    with Device(DEFAULT, "golden") as dev:
        chip = lower.OnChip(dev, graph, params, peaks)
        alone = chip.run({"x": x})["blk.0.y"]
        padded = chip.run({"x": pad, "mask": mask})["blk.0.y"][:11]
    np.testing.assert_array_equal(alone, padded)


def test_one_block_streams_no_padding_row():
    """A sequence that fits one block runs as it is: every ``MATMUL`` streams its 11
    tokens' rows (22 for a 16-bit input's two halves), none of a padding to 16."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    x = synthetic.random_inputs(shape, 11, seed=5)
    with Device(DEFAULT, "golden") as dev:
        lower.OnChip(dev, graph, params, peaks).run({"x": x})
        ops = _opcodes(dev.calls[0].program)
    rows = {b["m"] for op, _, b in ops if op == isa.Op.MATMUL}
    assert rows == {11, 22}, rows


def test_token_blocks_stream_no_padding_row():
    """Past one block: blocks of whole tiles, each ``MATMUL`` within one accumulator
    half (a 16-bit input's pair counts twice), the last block the rows left, so no
    ``MATMUL`` streams a padding row. (270 tokens of bert-tiny had been one block of 272
    rows whose pair ``MATMUL``s overran the accumulator half: ``BAD_BUFFER``.)"""
    seq, cfg = 270, DEFAULT
    r, dev = run_model_on(cfg, "bert-tiny", "golden", seq=seq, check="none")
    with dev:
        rows = {b["m"] for op, _, b in isa_model.decode_program(dev.calls[0].program)
                if op == isa.Op.MATMUL}
    T = max(rows) // 2
    last = seq - (-(-seq // T) - 1) * T
    assert T % cfg.rows == 0 and T < seq and 2 * T <= cfg.acc_buf_rows
    assert rows == {T, 2 * T, last, 2 * last}, rows
    assert r["cosine_vs_float"] > 0.999


def test_token_blocks_bit_exact_on_verilator():
    """The token blocks' program of 270 tokens on the RTL (Verilator: half a million
    cycles), memory bit for bit as the golden model's."""
    r = run_model(DEFAULT, "bert-tiny", "verilator", seq=270)
    assert r["bit_exact_vs_golden"] is True and r["cycles"] > 0


@pytest.mark.parametrize("seq", [16, 11])
def test_bert_tiny_on_chip_bit_exact_on_rtl(simulator, seq):
    """The same program on the RTL: memory bit for bit as the golden model's (a whole
    tile of tokens, and a sequence that leaves its last position tile part empty)."""
    r = run_model(DEFAULT, "bert-tiny", simulator, seq=seq)
    assert r["ops"] == "chip" and r["host_round_trips"] == 1
    assert r["bit_exact_vs_golden"] is True and r["cycles"] > 0
    g = run_model(DEFAULT, "bert-tiny", "golden", seq=seq)
    assert r["cosine_vs_float"] == g["cosine_vs_float"] > 0.999


def test_dynamic_gemm_inputs_are_int8_per_token():
    """``gemm_inputs="dynamic"``: each 16-bit GEMM input is smoothed (``VEC MUL wide``),
    quantized a token at a time (``VEC DYNQ``) and read once (no ``pair``), its GEMMs'
    ``STORE``s multiply each row back by its scale (``rowscale``); every access ordered;
    near float; half the array rows of the ``pair`` program."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    x = synthetic.random_inputs(shape, 11, seed=5)
    ref = L.encoder_layer(x, w, shape)
    rows, ys, pairs = {}, {}, {}
    for mode in ("dynamic", "pair"):
        with Device(DEFAULT, "golden") as dev:
            ys[mode] = lower.OnChip(dev, graph, params, peaks, gemm_inputs=mode).run(
                {"x": x})["blk.0.y"]
            prog = isa_model.decode_program(dev.calls[0].program)
            rows[mode] = sum(b["m"] * b["k_tiles"] for op, _, b in prog
                             if op == isa.Op.MATMUL)
            pairs[mode] = sum(b["m"] * b["k_tiles"] for op, _, b in prog
                              if op == isa.Op.MATMUL and b["pair"])
            if mode == "dynamic":
                ops = prog
                isa_model.check_races(DEFAULT, dev.calls[0].program)
    vops = [isa.VecOp(b["vop"]) for op, _, b in ops if op == isa.Op.VEC]
    # x and the GELU output's two halves (lower.split_ffn); h's own norm goes on through
    # DYNQ (VEC LAYERNORM dynq)
    assert vops.count(isa.VecOp.DYNQ) == 3 and isa.VecOp.MUL in vops
    assert sum(b["dynq"] for op, _, b in ops if op == isa.Op.VEC) == 1
    # pairs left: the probabilities times V, the context into the output projection
    assert pairs["dynamic"] < 0.3 * pairs["pair"], pairs
    assert any(op == isa.Op.STORE and b["rowscale"] and b["transpose"] for op, _, b in ops)
    assert cosine(ys["dynamic"], ref) > 0.999
    assert rows["dynamic"] < 0.6 * rows["pair"], rows


def test_split_ffn_is_the_same_map_in_float():
    w, shape, graph, params, _ = _bert_tiny(16)
    split, sp = lower.split_ffn(graph, params)
    names = [n.out for n in split.nodes]
    assert names.index("blk.0.ffn_up.1") < names.index("blk.0.ffn_down.0")
    assert "blk.0.ffn_up" not in names and split.outputs == graph.outputs
    assert lower.split_ffn(split, sp)[0] is split
    x = synthetic.random_inputs(shape, 9, seed=4)
    from serrano.sw.nn import float_exec
    feeds = {"x": x, "mask": np.ones((1, 9), np.int64)}
    a = float_exec.run(graph, params, feeds)["blk.0.y"]
    b = float_exec.run(split, sp, feeds)["blk.0.y"]
    assert np.abs(a - b).max() < 1e-4 * np.abs(a).max()


def test_each_ffn_half_goes_to_int8_under_the_other_halfs_gemm():
    """``dynamic`` inputs: the GELU output's first half is quantized (``DYNQ``) behind
    the second up projection's first ``MATMUL``, the second half behind the first down
    projection's, each to row-scale slots of its own that its down projection's
    ``STORE``s read; every access ordered."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    x = synthetic.random_inputs(shape, 11, seed=6)
    with Device(DEFAULT, "golden") as dev:
        chip = lower.OnChip(dev, graph, params, peaks, gemm_inputs="dynamic")
        chip.run({"x": x})
        (built,) = chip.programs.values()
        code = dev.calls[0].program
    ops, tags = isa_model.decode_program(code), built["tags"]
    slots = {}
    for node, half in (("blk.0.ffn_up.1", 0), ("blk.0.ffn_down.0", 1)):
        mine = [i for i, t in enumerate(tags) if t == node]
        mms = [i for i in mine if ops[i][0] == isa.Op.MATMUL]
        dq = [i for i in mine if ops[i][0] == isa.Op.VEC
              and ops[i][2]["vop"] == isa.VecOp.DYNQ]
        assert len(dq) == 1 and mms[0] < dq[0] < mms[-1], (node, mms, dq)
        slots[half] = ops[dq[0]][2]["b_row"]
    assert slots[0] != slots[1]
    for half in (0, 1):
        stores = [b["scale_row"] for i, (op, _, b) in enumerate(ops)
                  if op == isa.Op.STORE and tags[i] == f"blk.0.ffn_down.{half}"]
        assert stores and set(stores) == {slots[half]}
    isa_model.check_races(DEFAULT, code)


@pytest.mark.parametrize("fold", [True, False])
def test_a_norm_into_a_gemm_has_its_smoothing_folded(fold, monkeypatch):
    """``dynamic`` inputs (:data:`FOLD_SMOOTHING`): the LayerNorm the up projection
    reads runs first with the smoothing in its gains and ``beta``, on through ``DYNQ``
    into the int8 rows the GEMM reads (``VEC LAYERNORM dynq``: no ``VEC MUL``, no
    ``DYNQ`` of its own), and then as itself, in place, for the residual; near float
    either way (without the fold: the norm, the ``MUL``, the ``DYNQ``). Each norm adds
    its own ``beta`` (``VEC LAYERNORM beta``: no ``ADD``)."""
    monkeypatch.setattr(lower, "FOLD_SMOOTHING", fold)
    w, shape, graph, params, peaks = _bert_tiny(16)
    x = synthetic.random_inputs(shape, 11, seed=6)
    with Device(DEFAULT, "golden") as dev:
        chip = lower.OnChip(dev, graph, params, peaks, gemm_inputs="dynamic")
        y = chip.run({"x": x})["blk.0.y"]
        (built,) = chip.programs.values()
        code = dev.calls[0].program
    ops, tags = isa_model.decode_program(code), built["tags"]
    vecs = [b for i, (op, _, b) in enumerate(ops) if op == isa.Op.VEC and tags[i] == "blk.0.h"]
    chain = [(isa.VecOp(b["vop"]).name, b["a_row"], b["dst_row"]) for b in vecs]
    assert all(b["beta"] for b in vecs if b["vop"] == isa.VecOp.LAYERNORM)
    names = [c[0] for c in chain]
    if fold:
        assert names == ["LAYERNORM", "LAYERNORM"], chain
        assert vecs[0]["dynq"] and not vecs[1]["dynq"]
        assert chain[1][2] == chain[0][1] != chain[0][2]          # the second in place
    else:
        assert names == ["LAYERNORM", "MUL", "DYNQ"], chain
    isa_model.check_races(DEFAULT, code)
    assert cosine(y, L.encoder_layer(x, w, shape)) > 0.999


def _short_dynamic(backend, n=5):
    """bert-tiny on an ``n``-token sequence with ``dynamic`` inputs: ``(y, ref,
    device, program, executor)``."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    x = synthetic.random_inputs(shape, n, seed=7)
    with Device(DEFAULT, backend) as dev:
        chip = lower.OnChip(dev, graph, params, peaks, gemm_inputs="dynamic")
        y = chip.run({"x": x})["blk.0.y"]
        return y, L.encoder_layer(x, w, shape), dev, dev.calls[-1].program, chip


def test_dynamic_inputs_of_a_short_sequence_are_smoothed_pairs():
    """With ``dynamic`` inputs a sequence whose tokens' two rows stream through a weight
    tile in no more cycles than the tile takes to arrive (5 tokens, 10 rows, against 16
    on ``default``) takes its smoothed 16-bit inputs as pairs: ``VEC MUL`` but no
    ``DYNQ``, no ``STORE rowscale``, every linear layer's ``MATMUL`` a pair; near float;
    a sequence of 9 tokens (18 rows) goes through ``DYNQ``."""
    y, ref, _, code, chip = _short_dynamic("golden")
    ops = isa_model.decode_program(code)
    vops = [isa.VecOp(b["vop"]) for op, _, b in ops if op == isa.Op.VEC]
    assert isa.VecOp.MUL in vops and isa.VecOp.DYNQ not in vops
    assert not any(op == isa.Op.STORE and b["rowscale"] for op, _, b in ops)
    linear = [b for op, _, b in ops if op == isa.Op.MATMUL and b["m"] == 10
              and b["weight_addr"] != chip.identity]
    assert linear and all(b["pair"] for b in linear)
    isa_model.check_races(DEFAULT, code)
    assert not any(isa_model.check_tokens(code, queue_depth=1).values())
    assert cosine(y, ref) > 0.999
    code9 = _short_dynamic("golden", 9)[3]
    assert any(op == isa.Op.VEC and b["vop"] == isa.VecOp.DYNQ
               for op, _, b in isa_model.decode_program(code9))


def test_dynamic_inputs_of_a_short_sequence_bit_exact_on_rtl(simulator):
    """The short sequence's program on the RTL: memory bit for bit as the golden
    model's."""
    y, ref, dev, _, _ = _short_dynamic(simulator)
    assert dev.bit_exact is True and cosine(y, ref) > 0.999


def _context_matmuls(chip, code):
    """The output projection's ``MATMUL``s (the weights of the linear map that reads
    the attention's context) in ``code``."""
    (ctx,) = chip.dyn_raw
    (o,) = [n.out for n in chip.graph.nodes if n.op == "linear" and n.ins[0] == ctx]
    w = chip.lin[o]["w_addr"]
    return [b for op, _, b in isa_model.decode_program(code)
            if op == isa.Op.MATMUL and b["weight_addr"] == w]


@pytest.mark.parametrize("n, int8", [(lower.CONTEXT_DYNQ_TOKENS, True),
                                     (lower.CONTEXT_DYNQ_TOKENS - 1, False)])
def test_the_context_is_int8_per_token_in_long_sequences(n, int8):
    """With ``dynamic`` inputs the attention's context goes to int8 per token (``VEC
    DYNQ`` of the value itself, not smoothed; the output projection's ``MATMUL``s read
    int8 rows and its ``STORE``s take the row scales) in a sequence of at least
    ``CONTEXT_DYNQ_TOKENS`` tokens, and streams as a 16-bit pair in a shorter one (the
    same weights and parameter sets either way); near float, every access ordered."""
    y, ref, _, code, chip = _short_dynamic("golden", n)
    mm = _context_matmuls(chip, code)
    assert mm and all(b["pair"] != int8 for b in mm)
    assert not chip.dyn_raw & set(chip.dyn)
    isa_model.check_races(DEFAULT, code)
    assert not any(isa_model.check_tokens(code, queue_depth=1).values())
    assert cosine(y, ref) > 0.995


def test_the_context_int8_per_token_bit_exact_on_rtl(simulator):
    """The long sequence's program (its context int8 per token) on the RTL: memory bit
    for bit as the golden model's."""
    y, ref, dev, code, chip = _short_dynamic(simulator, lower.CONTEXT_DYNQ_TOKENS + 2)
    assert not any(b["pair"] for b in _context_matmuls(chip, code))
    assert dev.bit_exact is True and cosine(y, ref) > 0.995


@pytest.mark.parametrize("mode", lower.GEMM_INPUTS)
def test_the_schedule_overlaps_the_units(mode):
    """Two layers in one block: the values stay in the buffer from stage to stage (the
    only ``LOAD_ACT``s bring the input and the vector unit's parameters; no value goes to
    memory but the keys, the values and the output); the GELU (and, ``dynamic``, the
    down projection's smoothing) runs between the up projection's ``MATMUL``s, behind
    their ``STORE``s; each tile's ``STORE`` follows the next tile's ``MATMUL``; and the
    program cannot deadlock with one-entry queues (the store unit takes one ``STORE`` at
    a time), every access ordered."""
    w, shape = synthetic.bert_tiny(0)
    graph, params = archs.bert_encoder(shape, 2), archs.bert_params([w, w])
    calib = [{"x": synthetic.random_inputs(shape, 12, seed=100 + s),
              "mask": np.ones((1, 12), np.int64)} for s in range(2)]
    peaks = lower.calibrate(graph, params, calib)
    x = synthetic.random_inputs(shape, 12, seed=3)
    with Device(DEFAULT, "golden") as dev:
        chip = lower.OnChip(dev, graph, params, peaks, gemm_inputs=mode)
        y = chip.run({"x": x})["blk.1.y"]
        code = dev.calls[0].program
    ops = isa_model.decode_program(code)
    kt = -(-shape.hidden // DEFAULT.rows)
    assert sum(op == isa.Op.LOAD_ACT for op, _, _ in ops) == 1 + kt
    up = chip.lin["blk.0.ffn_up" if mode == "pair" else "blk.0.ffn_up.0"]
    mm = [i for i, (op, _, b) in enumerate(ops) if op == isa.Op.MATMUL
          and up["w_addr"] <= b["weight_addr"] < up["w_addr"] + up["n"] * up["k"]]
    between = [isa.VecOp(ops[i][2]["vop"]) for i in range(mm[0], mm[-1])
               if ops[i][0] == isa.Op.VEC]
    assert isa.VecOp.LUT in between and isa.VecOp.ADD in between, between
    assert (isa.VecOp.MUL in between) == (mode == "dynamic"), between
    assert [ops[i][0] for i in mm[0:2] + [mm[1] + 1]] == [isa.Op.MATMUL] * 2 + [
        isa.Op.STORE], ops[mm[0]:mm[1] + 2]
    isa_model.check_races(DEFAULT, code)
    assert not any(isa_model.check_tokens(code, queue_depth=1).values())
    assert cosine(y, L.encoder_layer(L.encoder_layer(x, w, shape), w, shape)) > 0.998


def _batch(mode, backend):
    """bert-tiny on sequences of 12, 5 and 16 tokens, each alone and then as one batch:
    ``(alone, batched, device, the batch's program, the executor)``."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    xs = [synthetic.random_inputs(shape, n, seed=10 + n) for n in (12, 5, 16)]
    with Device(DEFAULT, backend) as dev:
        chip = lower.OnChip(dev, graph, params, peaks, gemm_inputs=mode)
        alone = [chip.run({"x": x})["blk.0.y"] for x in xs]
        calls = len(dev.calls)
        batched = [o["blk.0.y"] for o in chip.run_batch([{"x": x} for x in xs])]
        assert len(dev.calls) == calls + 1                  # one program, one round trip
        return alone, batched, dev, dev.calls[-1].program, chip


@pytest.mark.parametrize("mode", lower.GEMM_INPUTS)
def test_a_batch_is_one_program(mode):
    """A batch of sequences is one program (``OnChip.run_batch``): each sequence's
    output bit for bit its output alone; the first two as two streams whose nodes
    alternate (each in half the buffer: their ``MATMUL``s interleave), the third after
    them; every access ordered, no deadlock with one-entry queues."""
    alone, batched, _, code, chip = _batch(mode, "golden")
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a, b)
    ops = isa_model.decode_program(code)
    half = chip.vbase // 2
    mm = [(i, b["act_row"] >= half) for i, (op, _, b) in enumerate(ops)
          if op == isa.Op.MATMUL and b["weight_addr"] != chip.identity]
    first_b = min(i for i, upper in mm if upper)
    assert any(not upper and i > first_b for i, upper in mm)     # interleaved
    isa_model.check_races(DEFAULT, code)
    assert not any(isa_model.check_tokens(code, queue_depth=1).values())


def test_a_batch_bit_exact_on_rtl(simulator):
    """The batch's program on the RTL: memory bit for bit as the golden model's."""
    alone, batched, dev, _, _ = _batch("dynamic", simulator)
    assert dev.bit_exact is True
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a, b)


def _stacked(backend):
    """bert-tiny on two short sequences (9 and 10 tokens, int8 inputs a token: each
    alone would wait for its weights), alone and as one batch: ``(alone, batched,
    device, the batch's program, the executor)``."""
    w, shape, graph, params, peaks = _bert_tiny(16)
    xs = [synthetic.random_inputs(shape, n, seed=20 + n) for n in (9, 10)]
    with Device(DEFAULT, backend) as dev:
        chip = lower.OnChip(dev, graph, params, peaks, gemm_inputs="dynamic")
        alone = [chip.run({"x": x})["blk.0.y"] for x in xs]
        batched = [o["blk.0.y"] for o in chip.run_batch([{"x": x} for x in xs])]
        return alone, batched, dev, dev.calls[-1].program, chip


def test_short_sequences_are_stacked():
    """Sequences too short to keep the array busy while a weight tile arrives run
    stacked: their rows one after another through each linear layer's weight tiles,
    each tile streamed once for both (one ``MATMUL`` of all 19 rows), attention each on
    its own rows and keys (9 and 10 query rows, their probabilities 18 and 20 rows in
    16 bits); each output bit for bit its output
    alone, every access ordered."""
    alone, batched, _, code, chip = _stacked("golden")
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a, b)
    tile = DEFAULT.rows * DEFAULT.cols
    spans = [(lin["w_addr"], lin["w_addr"] + _tiles(lin["k"], DEFAULT.rows)
              * _tiles(lin["n"], DEFAULT.cols) * tile) for lin in chip.lin.values()]
    mm = [b for op, _, b in isa_model.decode_program(code) if op == isa.Op.MATMUL
          and b["weight_addr"] != chip.identity]
    linear = [b for b in mm if any(lo <= b["weight_addr"] < hi for lo, hi in spans)]
    tiles = sum(_tiles(lin["n"], DEFAULT.cols) for lin in chip.lin.values())
    # 19 int8 rows; the attention's 16-bit context enters the output projection as a
    # pair (38 rows).
    assert len(linear) == tiles and {b["m"] for b in linear} == {19, 38}
    assert len({b["weight_addr"] for b in linear}) == tiles       # each tile once
    assert {b["m"] for b in mm if b not in linear} == {9, 10, 18, 20}  # scores, contexts
    isa_model.check_races(DEFAULT, code)
    assert not any(isa_model.check_tokens(code, queue_depth=1).values())


def test_stacked_sequences_bit_exact_on_rtl(simulator):
    """The stacked program on the RTL: memory bit for bit as the golden model's."""
    alone, batched, dev, _, _ = _stacked(simulator)
    assert dev.bit_exact is True
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seq", [11])
def test_dynamic_gemm_inputs_bit_exact_on_rtl(simulator, seq):
    """The per-token int8 program (``VEC DYNQ``, ``STORE rowscale``) on the RTL: memory
    bit for bit as the golden model's."""
    r = run_model(DEFAULT, "bert-tiny", simulator, seq=seq, gemm_inputs="dynamic")
    assert r["bit_exact_vs_golden"] is True and r["cycles"] > 0
    g = run_model(DEFAULT, "bert-tiny", "golden", seq=seq, gemm_inputs="dynamic")
    assert r["cosine_vs_float"] == g["cosine_vs_float"] > 0.999


@pytest.mark.parametrize("words", [1, 3, 8, 33, 90, 200])
def test_minilm_on_chip_every_length(words):
    """Six MiniLM layers, every op on the chip, one program: the sentence embedding
    within cosine 0.99 of float from one word to 256 tokens (past 48 tokens in token
    blocks)."""
    words_ = ("After the storm the fishermen mended their nets, counted the boats that had "
              "come back and walked up the hill to the old chapel to give thanks for the "
              "calm morning.").split()
    text = " ".join((words_ * 8)[:words])
    r = run_model(DEFAULT, "minilm", "golden", text=text)
    assert r["ops"] == "chip" and r["host_round_trips"] == 1
    assert r["tokens"][0] <= 256
    assert r["cosine_vs_float"] >= 0.99, (r["tokens"], r["cosine_per_text"])


def test_too_long_and_not_lowered_are_one_line_errors():
    proc = subprocess.run([sys.executable, "-m", "serrano.sw.cli", "run", "--model", "minilm",
                           "--layers", "1", "--text", "word", "--preset", "tiny"],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "too long for one program" in proc.stderr and "--host-ops" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    w, shape = synthetic.gpt_tiny(0)
    graph = archs.gpt_decoder(shape, 1)
    with Device(DEFAULT, "golden") as dev, pytest.raises(lower.NotLowered, match="kv_append"):
        lower.OnChip(dev, graph, archs.gpt_params([w]), {})


@pytest.mark.parametrize("fresh", [False, True])
def test_a_vec_into_reused_rows_waits_for_the_matmuls_that_read_them(fresh):
    """The emitter's write-after-read order: a value stored, a ``FENCE`` (parameter
    slots wrapping), a ``MATMUL`` that reads rows ``A`` with its ``STORE``, then a
    ``VEC`` that reads the value (ordered by the fence alone) and writes into ``A``,
    freed after the ``MATMUL``. Only with ``fresh`` does the ``VEC`` wait for the
    ``STORE`` behind the ``MATMUL``; without, the race checker finds the race."""
    cfg = get_preset("tiny")
    prog = lower._Emitter(cfg)
    prog.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=4, m=4, k_tiles=1,
                acc_row=0)
    prog.store(acc_row=0, m=4, param_tile=0, buf_row=8, to_buf=1)
    prog.made_by("q", "store")
    prog.fence()                               # (parameter slots wrapping)
    prog.matmul(weight_addr=0, act_row=16, act_stride=1, act_kstep=4, m=4, k_tiles=1,
                acc_row=0)
    prog.store(acc_row=0, m=4, param_tile=0, dram_addr=4096, dram_stride=16)
    prog.vec(reads=["q"], fresh=fresh, vop=isa.VecOp.ADD, a_row=8, b_row=8, dst_row=16,
             rows=4, mul_a=1, mul_b=0)
    program = prog.program()
    if fresh:
        isa_model.check_races(cfg, program)
        assert not any(isa_model.check_tokens(program).values())
    else:
        with pytest.raises(isa_model.RaceError, match="VEC writes act row 16"):
            isa_model.check_races(cfg, program)
