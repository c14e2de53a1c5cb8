"""The configuration presets and the golden arithmetic."""

import numpy as np
import pytest

from serrano.hw.config import Config, ConfigError, PRESETS, get_preset
from serrano.sw import golden


def test_presets_geometry():
    assert (get_preset("tiny").rows, get_preset("tiny").cols) == (4, 4)
    assert (get_preset("fpga").rows, get_preset("fpga").cols) == (8, 8)
    d = get_preset("default")
    assert (d.rows, d.cols, d.macs) == (16, 16, 256)
    assert d.bus_bytes * 8 == 128                       # one beat = one 16-byte weight row
    assert d.act_buf_bytes >= 256 * 1024                # Gemmini-sized scratchpad
    assert d.acc_buf_bytes >= 64 * 1024                 # Gemmini-sized accumulator
    assert d.act_buf_rows * d.rows >= 128 * 1536        # a 128 x 1536 block stays on chip
    for cfg in PRESETS.values():
        assert cfg.bus_bytes == cfg.cols                # one beat carries one weight row
        assert cfg.latency == cfg.rows + cfg.cols + 1 + cfg.mult_pipeline
        # The DSP block's pipeline register on the FPGA preset only (docs/fpga.md).
        assert cfg.mult_pipeline == (cfg.name == "fpga")
        assert cfg.vec_pipeline == (cfg.name == "fpga")
        assert cfg.vec_div_steps == (1 if cfg.name == "fpga" else 4)
        assert cfg.vec_cache_rows == (0 if cfg.name == "fpga" else 128)


def test_unknown_preset_message():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of: tiny, fpga, default"):
        get_preset("huge")


@pytest.mark.parametrize("field, value, message", [
    ("rows", 0, "rows must be a positive integer, not 0"),
    ("cols", 2.0, "cols must be a positive integer, not 2.0"),
    ("bus_bytes", 12, "bus_bytes must be a power of two, not 12"),
    ("bus_bytes", 8, "rows, cols and bus_bytes must be equal"),
    ("weight_block", 12, "weight_block must be a power-of-two multiple of rows"),
    ("weight_block", 4 * 3 * 2, "weight_block must be a power-of-two multiple of rows"),
    ("weight_block", 32,
     r"weight_fifo_rows must hold a weight request of a block format \(18 beats\)"),
    ("scale_slots", 0, "scale_slots must be a positive integer, not 0"),
    ("mult_pipeline", 2, "mult_pipeline must be 0 or 1, not 2"),
    ("mult_pipeline", True, "mult_pipeline must be 0 or 1, not True"),
    ("vec_pipeline", 2, "vec_pipeline must be 0 or 1, not 2"),
    ("vec_div_steps", 5, "vec_div_steps must be 1, 2, 3, 4 or 6, not 5"),
    ("vec_cache_rows", 2, "vec_cache_rows must be 0 or at least 4, not 2"),
])
def test_config_checks(field, value, message):
    args = dict(name="x", rows=4, cols=4, act_buf_rows=8, acc_buf_rows=8,
                weight_fifo_rows=8, bus_bytes=4, weight_block=8)
    args[field] = value
    with pytest.raises(ConfigError, match=message):
        Config(**args)


def test_wrap_int32():
    x = np.array([2**31 - 1, 2**31, -2**31 - 1, 2**32 + 5, -7])
    np.testing.assert_array_equal(golden.wrap_int32(x), [2**31 - 1, -2**31, 2**31 - 1, 5, -7])


def test_matmul_matches_python_ints(rng):
    a = rng.integers(-128, 128, (5, 300))
    w = rng.integers(-128, 128, (300, 3))
    a[0], w[:, 0] = -128, -128
    got = golden.matmul(a, w)
    for i in range(5):
        for j in range(3):
            s = sum(int(x) * int(y) for x, y in zip(a[i], w[:, j]))
            s = (s + 2**31) % 2**32 - 2**31
            assert got[i, j] == s


def test_matmul_wraps_like_a_32_bit_adder():
    k = 140_000                                  # 140000 * 16384 > 2**31
    a = np.full((1, k), -128)
    w = np.full((k, 1), -128)
    assert golden.matmul(a, w)[0, 0] == (k * 16384 + 2**31) % 2**32 - 2**31


def test_matmul_rejects_bad_input():
    with pytest.raises(ValueError, match="outside int8"):
        golden.matmul(np.array([[200]]), np.array([[1]]))
    with pytest.raises(ValueError, match="cannot multiply shapes"):
        golden.matmul(np.zeros((2, 3), int), np.zeros((2, 3), int))
    with pytest.raises(TypeError, match="must hold integers"):
        golden.matmul(np.zeros((1, 1)), np.zeros((1, 1), int))
