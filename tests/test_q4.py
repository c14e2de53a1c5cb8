"""Block weight formats (``MATMUL`` ``wfmt = Q4``, ``Q8``): the formats of ``sw/q4.py``,
the array's two-rows-per-beat load, and whole Q4 and Q8 GEMMs on the RTL against the
golden model."""

import numpy as np
import pytest
from serrano.hw import isa
from serrano.hw.config import get_preset
from serrano.sim.accel import run_rtl
from serrano.sim.amaranth_sim import run_array_plan
from serrano.sw import array_plan, compiler, golden, isa_model, q4, requant
from serrano.sw.gemm import random_q4, random_q8
from tests.test_accel_rtl import check_against_golden, run_faulty
from tests.stimulus import requant_gemm_operands

TINY = get_preset("tiny")


# ---- the format --------------------------------------------------------------------------

def test_integer_weights_follow_the_formula_element_by_element(rng):
    q = random_q4(70, 5, 1, TINY)
    W = q.integer()
    for k in range(70):
        for n in range(5):
            b = k // TINY.weight_block
            assert W[k, n] == int(q.d[b, n]) * (16 * int(q.codes[k, n]) - 120 + int(q.f[b, n]))


@pytest.mark.parametrize("cfg", [get_preset(p) for p in ("tiny", "fpga", "default")],
                         ids=lambda c: c.name)
@pytest.mark.parametrize("shape", [(32, 16), (70, 5), (16, 33), (100, 40)])
def test_pack_then_unpack_gives_the_integer_weights(cfg, shape):
    K, N = shape
    q = random_q4(K, N, K + N, cfg)
    raw = q4.pack(q, cfg)
    assert len(raw) == q4.matrix_bytes(cfg, K, N)
    kt = -(-K // cfg.rows)
    per_tile = q4.matmul_bytes(cfg, kt)
    for j in range(-(-N // cfg.cols)):
        W = q4.unpack(raw[j * per_tile:(j + 1) * per_tile], cfg, kt)
        want = np.zeros((K, cfg.cols), np.int64)
        cols = q.integer()[:, j * cfg.cols:(j + 1) * cfg.cols]
        want[:, :cols.shape[1]] = cols
        # Padding columns have zero scale and offset, so W = 0 there; padding rows (past
        # K) meet zero activations, whatever their weight.
        np.testing.assert_array_equal(W[:K], want)
        assert W.shape == (kt * cfg.rows, cfg.cols)


def test_from_blocks_reproduces_q4_1_and_q4_0_weights(rng):
    K, N, B = 96, 24, 32
    codes = rng.integers(0, 16, (K, N)).astype(np.uint8)
    scale = rng.uniform(0.001, 0.05, (K // B, N))
    scale[0, 0] *= 40                                 # one block much coarser than the rest
    minimum = -7.5 * scale + rng.uniform(-7, 7, scale.shape) * scale
    b = np.arange(K) // B
    for mins in (minimum, -8 * scale):               # Q4_1, then Q4_0
        w = scale[b] * codes + mins[b]
        q = q4.from_blocks(codes, scale, mins, B)
        assert np.array_equal(q.codes, codes)        # the file's codes, untouched
        err = np.abs(q.dequantize() - w)
        # Within half a step of the 8-bit scale and of the offset, per block.
        bound = scale[b] * (15 / 2 / q.d[b].clip(1) + 1 / 32) + 1e-7
        assert np.all(err <= bound * 1.01)
        assert np.linalg.norm(q.dequantize() - w) / np.linalg.norm(w) < 0.01


def test_from_blocks_flips_codes_of_a_negative_scale():
    codes = np.arange(32, dtype=np.uint8)[:, None] % 16
    scale, minimum = np.array([[-0.5]]), np.array([[3.0]])
    q = q4.from_blocks(codes, scale, minimum, 32)
    np.testing.assert_allclose(q.dequantize()[:, 0], -0.5 * codes[:, 0] + 3.0, atol=0.02)


def test_quantize_keeps_each_block_within_its_range(rng):
    w = rng.standard_normal((64, 8)) * np.linspace(0.1, 3, 8)
    q = q4.quantize(w, 32)
    err = np.abs(q.dequantize() - w)
    step = (w.reshape(2, 32, 8).max(1) - w.reshape(2, 32, 8).min(1)) / 15
    assert np.all(err.reshape(2, 32, 8) <= step[:, None, :] * 0.6)


@pytest.mark.parametrize("field, value, message", [
    ("codes", 16, r"codes holds values outside \[0, 15\]"),
    ("d", 256, r"d holds values outside \[0, 255\]"),
    ("f", -129, r"f holds values outside \[-128, 127\]"),
])
def test_bad_weights_are_one_line_errors(field, value, message):
    q = random_q4(32, 4, 0, TINY)
    arrays = {"codes": q.codes.astype(np.int64), "d": q.d.astype(np.int64),
              "f": q.f.astype(np.int64)}
    arrays[field].flat[3] = value
    with pytest.raises(ValueError, match=message):
        q4.Q4Weights(arrays["codes"], arrays["d"], arrays["f"], q.unit, 32)


def test_q8_from_blocks_keeps_codes_and_scales_to_half_a_step(rng):
    K, N = 64, 10
    codes = rng.integers(-127, 128, (K, N))
    scale = rng.uniform(1e-4, 1e-2, (2, N))
    scale[1, 3] = -scale[1, 3]                     # a negative scale negates its codes
    q = q4.from_q8_blocks(codes, scale, 32)
    b = np.arange(K) // 32
    w = scale[b] * codes
    err = np.abs(q.dequantize() - w)
    assert np.all(err <= 0.5 * q.unit[None, :] * np.abs(codes) * 1.0001 + 1e-9)
    assert np.array_equal(q.codes[:32], codes[:32])


@pytest.mark.parametrize("cfg", [get_preset(p) for p in ("tiny", "default")],
                         ids=lambda c: c.name)
def test_q8_pack_then_unpack_gives_the_integer_weights(cfg):
    q = random_q8(70, 21, 5, cfg)
    kt = -(-70 // cfg.rows)
    per = q4.matmul_bytes(cfg, kt, isa.WeightFormat.Q8)
    raw = q4.pack(q, cfg)
    assert len(raw) == q4.matrix_bytes(cfg, 70, 21, isa.WeightFormat.Q8)
    W = q4.unpack(raw[:per], cfg, kt, isa.WeightFormat.Q8)
    np.testing.assert_array_equal(W[:70], q.integer()[:, :cfg.cols])


def test_pack_refuses_another_block_size():
    q = q4.quantize(np.ones((64, 4)), 64)
    with pytest.raises(ValueError, match="blocks of 64, the config 32"):
        q4.pack(q, TINY)


# ---- the array: two rows of codes per beat -------------------------------------------------

def _plan(cfg, loads, acts):
    """An :class:`sw.array_plan.ArrayPlan` from per-cycle lists: ``loads[t]`` is ``None``
    or ``(row, bank, pair, C bytes)``, ``acts[t]`` is ``None`` or ``(bank, R int8)``;
    padded with idle cycles until the last result has left."""
    T = max(len(loads), len(acts)) + cfg.latency + 2
    loads = list(loads) + [None] * (T - len(loads))
    acts = list(acts) + [None] * (T - len(acts))
    entered = [t for t, a in enumerate(acts) if a is not None]
    return array_plan.ArrayPlan(
        R=cfg.rows, C=cfg.cols,
        act_valid=np.array([a is not None for a in acts]),
        act_data=np.array([a[1] if a else [0] * cfg.rows for a in acts]),
        act_bank=np.array([a[0] if a else 0 for a in acts]),
        w_valid=np.array([ld is not None for ld in loads]),
        w_data=np.array([np.asarray(ld[3], np.uint8).view(np.int8) if ld else [0] * cfg.cols
                         for ld in loads]),
        w_row=np.array([ld[0] if ld else 0 for ld in loads]),
        w_bank=np.array([ld[1] if ld else 0 for ld in loads]),
        w_pair=np.array([ld[2] if ld else 0 for ld in loads]),
        row_tile=np.zeros(len(entered), int), expected=None,
        first_act_cycle=entered[0], last_act_cycle=entered[-1])


def test_array_loads_two_rows_of_codes_per_beat_between_int8_tiles(rng):
    """Tiles alternate int8 and 4-bit codes (every code 0..15 appears), each loaded into
    the idle bank while the other computes: R / 2 beats for codes, R for int8; every
    result exact and ``latency`` cycles after its row."""
    cfg = TINY
    R, C = cfg.rows, cfg.cols
    tiles = []
    for i in range(6):
        if i % 2:
            codes = (np.arange(R * C).reshape(R, C) + i) % 16
            tiles.append(("pair", codes))
        else:
            tiles.append(("int8", rng.integers(-128, 128, (R, C))))

    def beats(kind, w, bank):
        if kind == "pair":
            packed = (w[0::2] | (w[1::2] << 4)).astype(np.uint8)
            return [(2 * j, bank, 1, packed[j]) for j in range(R // 2)]
        return [(r, bank, 0, w[r].astype(np.int8).view(np.uint8)) for r in range(R)]

    loads, acts, expect = [], [], []
    loads += beats(*tiles[0], 0)
    acts += [None] * len(loads)
    for i, (kind, w) in enumerate(tiles):
        m = R + int(rng.integers(0, 3))
        a = rng.integers(-128, 128, (m, R))
        a[0] = -128
        nxt = beats(*tiles[i + 1], (i + 1) % 2) if i + 1 < len(tiles) else []
        for t in range(max(m, len(nxt))):
            acts.append((i % 2, a[t]) if t < m else None)
            loads.append(nxt[t] if t < len(nxt) else None)
        expect.append(a @ w)
    rows, cycles = run_array_plan(cfg, _plan(cfg, loads, acts))
    np.testing.assert_array_equal(rows, golden.wrap_int32(np.concatenate(expect)))
    entered = [t for t, a in enumerate(acts) if a is not None]
    np.testing.assert_array_equal(cycles, np.array(entered) + cfg.latency)


# ---- whole Q4 GEMMs on the RTL -------------------------------------------------------------

def q4_gemm(rng, cfg, m, k, n, relu=False, base=0, fmt="q4"):
    a, _, bias, mult, shift = requant_gemm_operands(rng, m, k, n, bias_bound=5000,
                                                    scale_range=(0.5, 3.0))
    draw = random_q4 if fmt == "q4" else random_q8
    w = draw(k, n, int(rng.integers(1 << 16)), cfg)
    acc = golden.wrap_int32(a.astype(np.int64) @ w.integer().astype(np.int64))
    # Requantization scaled to this GEMM's range, so the outputs use int8.
    peak = np.maximum(np.abs(acc).max(axis=0), 1)
    pairs = [requant.quantize_multiplier(100.0 / p) for p in peak]
    mult = np.array([p[0] for p in pairs])
    shift = np.array([p[1] for p in pairs])
    layout = compiler.compile_gemm(cfg, a, w, bias, mult, shift, relu=relu, base=base)
    expect = requant.requantize(acc, bias, mult, shift, relu=relu)
    return layout, expect


@pytest.mark.parametrize("fmt", ["q4", "q8"])
@pytest.mark.parametrize("shape", [(1, 32, 4), (3, 40, 7), (9, 100, 13), (2, 4, 1)])
def test_block_gemm_matches_golden(simulator, rng, shape, fmt):
    """K not a multiple of the block (or below one tile), N not a multiple of C."""
    layout, expect = q4_gemm(rng, TINY, *shape, fmt=fmt)
    rtl = run_rtl(TINY, layout.image, layout.prog_addr, layout.prog_len, simulator)
    check_against_golden(TINY, layout, rtl, expect)


def test_q4_gemm_under_random_bus_pauses(simulator, rng):
    """Random idle and back-pressure on every AXI channel, several M-blocks and N-tiles."""
    layout, expect = q4_gemm(rng, TINY, 37, 72, 10, relu=True, base=4096 - 64)
    rtl = run_rtl(TINY, layout.image, layout.prog_addr, layout.prog_len, simulator,
                  pause=0.3, seed=int(rng.integers(1 << 16)))
    check_against_golden(TINY, layout, rtl, expect)


def test_program_mixing_int8_q4_and_q8_matmuls(simulator, rng):
    """An int8, a Q4, an int8 and a Q8 GEMM in one program, reading one activation
    matrix: the format switches between instructions with nothing in between."""
    cfg = TINY
    M, K, N = 5, 40, 6
    a = rng.integers(-128, 128, (M, K))
    w8 = rng.integers(-128, 128, (K, N))
    w4 = random_q4(K, N, 3, cfg)
    mem = compiler.Memory(0)
    prog_addr = mem.alloc(compiler.program_bytes_bound(cfg, [(M, K, N)] * 3))
    apack = compiler.pack_acts(a, cfg)
    a_addr = mem.alloc(len(apack), apack)
    w8pack = isa_model.pack_weights(w8, cfg)
    w8_addr = mem.alloc(len(w8pack), w8pack)
    w4pack = q4.pack(w4, cfg)
    w4_addr = mem.alloc(len(w4pack), w4pack)
    wq8 = random_q8(K, N, 4, cfg)
    q8pack = q4.pack(wq8, cfg)
    q8_addr = mem.alloc(len(q8pack), q8pack)
    nbytes = compiler.out_bytes(cfg, M, N, raw=True)
    outs = [mem.alloc(nbytes) for _ in range(4)]
    b = compiler.Builder(cfg)
    for y, (w_addr, fmt) in zip(outs, [(w8_addr, isa.WeightFormat.INT8),
                                       (w4_addr, isa.WeightFormat.Q4),
                                       (w8_addr, isa.WeightFormat.INT8),
                                       (q8_addr, isa.WeightFormat.Q8)]):
        b.gemm(compiler.Gemm(M, K, N, a_addr, w_addr, None, y, raw=True, wfmt=fmt))
    prog = np.frombuffer(b.finish(), np.uint8)
    mem.chunks.append((prog_addr, prog))
    image = mem.image()
    rtl = run_rtl(cfg, image, prog_addr, len(prog) // isa.INSN_BYTES, simulator)
    gold = isa_model.run_program(cfg, image, prog_addr, len(prog) // isa.INSN_BYTES)
    assert rtl.error == isa.Error.NONE and rtl.done and not rtl.timed_out
    np.testing.assert_array_equal(rtl.image, gold.mem)
    got = [compiler.unpack_raw(rtl.image[y:y + nbytes], M, N, cfg) for y in outs]
    np.testing.assert_array_equal(got[0], golden.matmul(a, w8))
    np.testing.assert_array_equal(got[1], a @ w4.integer())
    np.testing.assert_array_equal(got[2], got[0])
    np.testing.assert_array_equal(got[3], golden.wrap_int32(a @ wq8.integer().astype(np.int64)))


def test_undefined_weight_format_stops_with_bad_format(simulator, rng):
    layout, _ = q4_gemm(rng, TINY, 2, 32, 4)
    image = layout.image.copy()
    prog = isa_model.Program()
    prog.matmul(weight_addr=layout.w_addr, act_row=0, act_stride=1, act_kstep=1, m=1,
                k_tiles=1, acc_row=0, wfmt=3)
    prog.end()
    raw = prog.to_array()
    image[layout.prog_addr:layout.prog_addr + len(raw)] = raw
    gold, rtl = run_faulty(TINY, image, layout.prog_addr, len(prog), simulator)
    assert rtl.error == isa.Error.BAD_FORMAT
    np.testing.assert_array_equal(rtl.image, image)


def test_q4_scales_outside_the_window_stop_with_dma_window(simulator, rng):
    """A Q4 MATMUL whose second block group (its scales first) lies past ``limit``: the
    documented DMA_WINDOW error, and nothing written."""
    layout, _ = q4_gemm(rng, TINY, 2, 64, 4)
    image = layout.image.copy()
    prog = isa_model.Program()
    group = TINY.q4_group_beats * TINY.bus_bytes
    prog.matmul(weight_addr=layout.w_addr, act_row=0, act_stride=1, act_kstep=1, m=1,
                k_tiles=2 * TINY.block_tiles, acc_row=0, wfmt=isa.WeightFormat.Q4)
    prog.store(acc_row=0, m=1, param_tile=0, dram_addr=layout.y_addr, dram_stride=4)
    prog.end()
    raw = prog.to_array()
    image[layout.prog_addr:layout.prog_addr + len(raw)] = raw
    gold, rtl = run_faulty(TINY, image, layout.prog_addr, len(prog), simulator, base=0,
                           limit=layout.w_addr + group + TINY.bus_bytes)
    assert rtl.error == isa.Error.DMA_WINDOW
    np.testing.assert_array_equal(rtl.image, image)


def test_q4_on_the_default_preset_verilator(rng):
    """The 16 x 16 accelerator with the Verilog memory model: a decode-shaped and a
    prefill-shaped Q4 GEMM."""
    from serrano.sim.system import run_system
    from tests.conftest import require_simulator
    require_simulator("verilator")
    cfg = get_preset("default")
    for shape in [(1, 96, 40), (20, 72, 33)]:
        layout, expect = q4_gemm(rng, cfg, *shape)
        rtl = run_system(cfg, layout.image, layout.prog_addr, layout.prog_len, "verilator",
                         mem_latency=30)
        check_against_golden(cfg, layout, rtl, expect)
