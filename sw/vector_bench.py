"""The vector unit on the RTL: its cycles for one Llama-style layer's non-GEMM work, and how
much of them the array's work hides.

``python -m serrano.sw.vector_bench [--preset P] [--sim S] [--tokens N ...]`` prints, for
each token count, the cycles of three programs on the RTL (each after the same loads and
a ``FENCE``):

* **gemm**: the layer's largest GEMM (``tokens x hidden x ffn``, int8 weights, raw out),
  compiled by :func:`sw.compiler.compile_gemm`;
* **vector**: the layer's vector work for ``tokens`` tokens (:func:`layer_vector_ops`:
  two RMSNorms, rotary embeddings of the query and key heads, a causal softmax per
  head, two residual adds, SiLU and the SwiGLU product) on rows of its own;
* **both**: the two in one program, the ``VEC`` instructions spread evenly through the
  GEMM's (as a scheduler places them), nothing ordering them against the GEMM (they touch
  different rows);

and ``hidden`` = ``both - gemm`` over ``vector - loads``: the share of the vector work
that the GEMM did not hide (0 when all of it overlaps).
"""

import argparse

import numpy as np

from serrano.hw import isa
from serrano.hw.config import get_preset
from . import compiler, isa_model, vector

__all__ = ["LAYER", "SMALL_LAYER", "rope_rows", "layer_vector_ops", "programs", "measure", "main"]

#: SmolLM2-135M's layer shape.
LAYER = dict(hidden=576, ffn=1536, heads=9, kv_heads=3, head_dim=64)
#: A small layer of the same form, for the ``tiny`` preset's buffers.
SMALL_LAYER = dict(hidden=64, ffn=128, heads=4, kv_heads=2, head_dim=16)


def rope_rows(cfg, layer=LAYER):
    """Whether ``ROPE`` runs on the layer's heads on ``cfg``: it pairs the rows of a
    head's first half with those of its second, so a head must span an even number of
    rows (SmolLM2's head of 64 is one row of the 64-wide array: not supported there)."""
    dh = layer["head_dim"] // cfg.rows
    return dh >= 2 and dh % 2 == 0


def layer_vector_ops(cfg, tokens, base, layer=LAYER, rng=None):
    """``(rows, ops)``: int8 data rows to load at activation row ``base`` and the ``VEC``
    instructions (dicts for :meth:`sw.isa_model.Program.vec`) of one layer's non-GEMM
    work for ``tokens`` tokens (their attention over ``tokens`` positions); without the
    rotary embeddings where :func:`rope_rows` says ``ROPE`` cannot run."""
    rng = np.random.default_rng(0) if rng is None else rng
    R = cfg.rows
    h, f = layer["hidden"] // R, layer["ffn"] // R
    dh = layer["head_dim"] // R
    heads, kvh = layer["heads"], layer["kv_heads"]
    pos_rows = -(-tokens // R)
    regions = {}
    top = base

    def region(name, n):
        nonlocal top
        regions[name] = top
        top += n

    region("x", tokens * h)                  # the residual stream
    region("y", tokens * h)                  # a norm's output / the attention output
    region("gains", 2 * h)
    region("q", tokens * heads * dh)
    region("k", tokens * kvh * dh)
    region("rope", dh)
    region("scores", heads * tokens * pos_rows)
    region("gate", tokens * f)
    region("up", tokens * f)
    region("table", isa.TABLE_ENTRIES // R)
    rows = rng.integers(-128, 128, (top - base, R)).astype(np.int8)
    cos, sin = vector.rope_tables(7, layer["head_dim"], 10000.0)
    rows[regions["rope"] - base:regions["rope"] - base + dh] = np.concatenate(
        [cos, sin]).reshape(dh, R)
    silu = vector.make_table(lambda x: x / (1 + np.exp(-x)), 0.05, 0.05)
    rows[regions["table"] - base:] = silu.reshape(-1, R)
    ma, mb, sh = vector.add_multipliers(0.05, 0.05, 0.1)
    m_mul, s_mul = vector.mul_multiplier(0.05, 0.05, 0.05)
    m_rope, s_rope = vector.rope_multiplier(1.0, 1.0)
    m_sm, s_sm = vector.softmax_multiplier(0.08)
    V = isa.VecOp
    r = regions
    ops = [dict(vop=V.TABLE, a_row=r["table"], rows=isa.TABLE_ENTRIES // R, table=0),
           dict(vop=V.RMSNORM, a_row=r["x"], b_row=r["gains"], dst_row=r["y"], rows=h,
                count=tokens, length=h * R, shift=14)]
    if rope_rows(cfg, layer):
        ops += [dict(vop=V.ROPE, a_row=r["q"], b_row=r["rope"], dst_row=r["q"], rows=dh,
                     count=tokens * heads, mul_a=m_rope, shift=s_rope, b_repeat=1),
                dict(vop=V.ROPE, a_row=r["k"], b_row=r["rope"], dst_row=r["k"], rows=dh,
                     count=tokens * kvh, mul_a=m_rope, shift=s_rope, b_repeat=1)]
    for head in range(heads):              # causal: query i sees positions 0..i
        s0 = r["scores"] + head * tokens * pos_rows
        ops.append(dict(vop=V.SOFTMAX, a_row=s0, dst_row=s0, rows=pos_rows, count=tokens,
                        length=1, causal=1, mul_a=m_sm, shift=s_sm))
    ops += [dict(vop=V.ADD, a_row=r["x"], b_row=r["y"], dst_row=r["x"], rows=tokens * h,
                 mul_a=ma, mul_b=mb, shift=sh),
            dict(vop=V.RMSNORM, a_row=r["x"], b_row=r["gains"], dst_row=r["y"], rows=h,
                 count=tokens, length=h * R, shift=14),
            dict(vop=V.LUT, a_row=r["gate"], dst_row=r["gate"], rows=tokens * f, table=0),
            dict(vop=V.MUL, a_row=r["gate"], b_row=r["up"], dst_row=r["gate"],
                 rows=tokens * f, mul_a=m_mul, shift=s_mul),
            dict(vop=V.ADD, a_row=r["x"], b_row=r["y"], dst_row=r["x"], rows=tokens * h,
                 mul_a=ma, mul_b=mb, shift=sh)]
    return rows, ops


def programs(cfg, tokens, layer=LAYER, seed=0):
    """``{name: (image, prog_addr, prog_len)}`` for ``gemm``, ``vector``, ``both`` and
    ``loads`` (the common prologue alone)."""
    rng = np.random.default_rng(seed)
    R = cfg.rows
    a = rng.integers(-128, 128, (tokens, layer["hidden"]))
    w = rng.integers(-128, 128, (layer["hidden"], layer["ffn"]))
    lay = compiler.compile_gemm(cfg, a, w, np.zeros(layer["ffn"], np.int64),
                                np.zeros(layer["ffn"], np.int64),
                                np.zeros(layer["ffn"], np.int64), raw=True)
    gemm = isa_model.decode_program(lay.image[lay.prog_addr:])
    assert gemm[-1][0] == isa.Op.END
    gemm_code = lay.image[lay.prog_addr:lay.prog_addr
                          + (len(gemm) - 1) * isa.INSN_BYTES]
    rows, ops = layer_vector_ops(cfg, tokens, 0, layer, rng)
    base = cfg.act_buf_rows - len(rows)     # the GEMM's rows are at the bottom
    rows, ops = layer_vector_ops(cfg, tokens, base, layer, np.random.default_rng(seed))
    data_addr = -(-len(lay.image) // 4096) * 4096
    prog_room = data_addr + rows.size
    out = {}
    for name in ("loads", "gemm", "vector", "both"):
        prog = isa_model.Program()
        prog.load_act(dram_addr=data_addr, dram_stride=R, rows=len(rows), row_beats=1,
                      buf_row=base, buf_row_step=1, buf_beat_step=0)
        prog.fence()
        code = prog.to_array()
        vec = isa_model.Program()
        for op in ops:
            vec.vec(**op)
        vec_insns = vec.to_array().reshape(-1, isa.INSN_BYTES)
        gemm_insns = gemm_code.reshape(-1, isa.INSN_BYTES)
        if name == "vector":
            code = np.concatenate([code, vec_insns.ravel()])
        elif name == "gemm":
            code = np.concatenate([code, gemm_code])
        elif name == "both":
            # Spread the VEC instructions evenly through the GEMM's, as a scheduler
            # would, so that dispatch never waits long on one unit's full queue.
            at = np.linspace(0, len(gemm_insns), len(vec_insns), endpoint=False).astype(int)
            merged = []
            for i, insn in enumerate(gemm_insns):
                merged += [vec_insns[j] for j in np.flatnonzero(at == i)]
                merged.append(insn)
            code = np.concatenate([code] + merged)
        end = isa_model.Program()
        end.end()
        code = np.concatenate([code, end.to_array()])
        prog_addr = -(-prog_room // 64) * 64
        image = np.zeros(prog_addr + code.size, np.uint8)
        image[:len(lay.image)] = lay.image
        image[data_addr:data_addr + rows.size] = rows.view(np.uint8).ravel()
        image[prog_addr:] = code
        out[name] = (image, prog_addr, code.size // isa.INSN_BYTES)
    return out


def measure(cfg, tokens, sim="verilator", layer=LAYER, check=True):
    """Cycles of each program of :func:`programs` on ``sim`` (a dict), the golden model's
    memory image checked against the RTL's for ``both``."""
    from serrano.sim.system import run_system
    cycles = {}
    for name, (image, prog_addr, prog_len) in programs(cfg, tokens, layer).items():
        rtl = run_system(cfg, image, prog_addr, prog_len, sim)
        if rtl.error != isa.Error.NONE or rtl.timed_out:
            raise RuntimeError(f"{name}: error {rtl.error!r}, timed out {rtl.timed_out}")
        if check and name == "both":
            gold = isa_model.run_program(cfg, image, prog_addr, prog_len)
            if not np.array_equal(gold.mem, rtl.image):
                raise RuntimeError("the RTL's memory differs from the golden model's")
        cycles[name] = int(rtl.counters["cycles"])
    work = cycles["vector"] - cycles["loads"]
    cycles["hidden_share"] = 1 - (cycles["both"] - cycles["gemm"]) / work if work else 1.0
    return cycles


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m serrano.sw.vector_bench",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--small", action="store_true",
                    help="a small layer (hidden 64, FFN 128) instead of SmolLM2's")
    args = ap.parse_args(argv)
    cfg = get_preset(args.preset)
    layer = SMALL_LAYER if args.small else LAYER
    print(f"preset {cfg.name}, {args.sim}; a layer's vector work beside its "
          f"{layer['hidden']}x{layer['ffn']} GEMM")
    print(f"{'tokens':>6} {'loads':>9} {'gemm':>10} {'vector':>10} {'both':>10} "
          f"{'hidden':>7}")
    for t in args.tokens:
        c = measure(cfg, t, args.sim, layer)
        print(f"{t:6d} {c['loads']:9,d} {c['gemm']:10,d} {c['vector']:10,d} "
              f"{c['both']:10,d} {c['hidden_share']:7.1%}", flush=True)


if __name__ == "__main__":
    main()
