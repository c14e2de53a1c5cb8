"""The energy model (sw/energy.py): arithmetic on hand-computed counts, constants from a
file, SRAM interpolation, program-structure counts."""

import json

import pytest

from serrano.hw import isa
from serrano.hw.config import Config, get_preset
from serrano.sw import energy
from serrano.sw.isa_model import Program

# A geometry whose buffers sit on and between the table's points:
# act_buf 8192 rows x 4 B = 32 KiB (20 pJ per 64 bits), accumulator 2 x 256 rows x 16 B =
# 8 KiB (10 pJ), weight FIFO 262144 rows x 4 B = 1 MiB (100 pJ), parameters
# 16 sets x 12 beats x 4 B = 768 B (below the table: the 8 KB value, 10 pJ).
CFG = Config(name="energy-test", rows=4, cols=4, act_buf_rows=8192, acc_buf_rows=256,
             weight_fifo_rows=262144, bus_bytes=4, param_tiles=16)

COUNTS = {"array_cycles": 10, "dma_read_bytes": 1000, "dma_write_bytes": 200,
          "act_load_bytes": 64, "param_load_bytes": 96, "weight_bytes": 128, "store_rows": 8,
          "store_buf_rows": 2, "stores": 2, "tokens": 4, "host_round_trips": 3}


def test_default_constants_are_horowitz():
    k = energy.load_constants()
    assert "Horowitz" in k["source"] and "ISSCC 2014" in k["source"]
    assert k["mac_multiply_pj"] + k["mac_add_pj"] == pytest.approx(0.23)
    assert k["dram_pj_per_64bit_access"] / 8 == pytest.approx(325.0)   # 2.6 nJ per 64 bit
    assert k["sram_pj_per_64bit_access"] == [(8192, 10.0), (32768, 20.0), (1048576, 100.0)]
    assert k["host_round_trip_j"] is None


def test_estimate_on_hand_computed_counts():
    e = energy.estimate(CFG, COUNTS)
    # MACs: 10 array cycles x 16 PEs = 160, at 0.2 + 0.03 pJ.
    assert e["events"]["macs"] == 160
    assert e["mac_j"] == pytest.approx(160 * 0.23e-12)
    # Requantizer: 8 rows x 4 channels = 32 elements at 3.1 + 0.1 pJ.
    assert e["requant_j"] == pytest.approx(32 * 3.2e-12)
    sram = e["sram"]
    # act_buf (32 KiB, 20/8 = 2.5 pJ/B): 10 rows x 4 B read; 64 B loaded + 2 rows x 4 B
    # stored into it.
    assert (sram["act_buf"]["read_bytes"], sram["act_buf"]["write_bytes"]) == (40, 72)
    assert sram["act_buf"]["pj_per_byte"] == pytest.approx(2.5)
    # accumulator (8 KiB, 1.25 pJ/B): (10 updates + 8 stored rows) x 16 B read,
    # 10 x 16 B written.
    assert (sram["accumulator"]["read_bytes"], sram["accumulator"]["write_bytes"]) == \
        (288, 160)
    assert sram["accumulator"]["pj_per_byte"] == pytest.approx(1.25)
    # weight FIFO (1 MiB, 12.5 pJ/B): 128 B in and out.
    assert (sram["weight_fifo"]["read_bytes"], sram["weight_fifo"]["write_bytes"]) == \
        (128, 128)
    assert sram["weight_fifo"]["pj_per_byte"] == pytest.approx(12.5)
    # parameters (768 B, clamped to 1.25 pJ/B): 2 stores x 12 beats x 4 B read, 96 B loaded.
    assert (sram["param_buf"]["read_bytes"], sram["param_buf"]["write_bytes"]) == (96, 96)
    sram_pj = 112 * 2.5 + 448 * 1.25 + 256 * 12.5 + 192 * 1.25          # = 4280 pJ
    assert e["sram_j"] == pytest.approx(sram_pj * 1e-12)
    assert e["sram_j"] == pytest.approx(4280e-12)
    # DRAM: 1200 bytes at 2600/8 = 325 pJ.
    assert e["dram_j"] == pytest.approx(390000e-12)
    total_pj = 36.8 + 102.4 + 4280 + 390000
    assert e["total_j"] == pytest.approx(total_pj * 1e-12)
    assert e["joules_per_token"] == pytest.approx(total_pj * 1e-12 / 4)
    # Host round trips are reported beside the energy, not in it.
    assert e["host_round_trips"] == 3 and e["host_round_trips_in_total"] is False
    assert "host_j" not in e
    assert "not a measurement of silicon" in e["note"]


def test_constants_replaced_from_a_file(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({
        "source": "a test table", "mac_multiply_pj": 1.0, "mac_add_pj": 0.5,
        "requant_multiply_pj": 2.0, "requant_add_pj": 0.0,
        "sram_pj_per_64bit_access": [[1024, 8.0]], "dram_pj_per_64bit_access": 800.0,
        "host_round_trip_j": 1e-6}))
    e = energy.estimate(CFG, COUNTS, str(path))
    assert e["constants"] == "a test table"
    assert e["mac_j"] == pytest.approx(160 * 1.5e-12)
    assert e["requant_j"] == pytest.approx(32 * 2.0e-12)
    # One table point: every buffer 8 pJ per 64 bits = 1 pJ per byte.
    assert all(b["pj_per_byte"] == 1.0 for b in e["sram"].values())
    assert e["sram_j"] == pytest.approx((112 + 448 + 256 + 192) * 1e-12)
    assert e["dram_j"] == pytest.approx(1200 * 100e-12)
    assert e["host_j"] == pytest.approx(3e-6) and e["host_round_trips_in_total"] is True
    assert e["total_j"] == pytest.approx(e["mac_j"] + e["requant_j"] + e["sram_j"]
                                         + e["dram_j"] + 3e-6)
    # The same constants as a dict give the same numbers; the default differs.
    same = energy.estimate(CFG, COUNTS, json.loads(path.read_text()))
    assert same["total_j"] == e["total_j"]
    assert energy.estimate(CFG, COUNTS)["total_j"] != e["total_j"]


def test_sram_interpolation_on_log_size_is_monotone():
    f = energy.sram_pj_per_byte
    assert f(8192) == pytest.approx(10 / 8)
    assert f(32768) == pytest.approx(20 / 8)
    assert f(1 << 20) == pytest.approx(100 / 8)
    assert f(16384) == pytest.approx(15 / 8)              # half way in log2 from 8 to 32 KB
    assert f(1 << 18) == pytest.approx((20 + 80 * 3 / 5) / 8)   # 256 KiB: 3/5 of 32K..1M
    assert f(64) == f(8192) and f(1 << 26) == f(1 << 20)  # held outside the table
    sizes = [int(1.19 ** i) for i in range(1, 130)]
    values = [f(s) for s in sizes]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] > values[0]
    # The default preset's buffers in size order cost in the same order.
    by_size = sorted(energy.buffer_sizes(get_preset("default")).values())
    costs = [f(s) for s in by_size]
    assert costs == sorted(costs)


@pytest.mark.parametrize("change, message", [
    ({"mac_add_pj": -1}, "energy constant mac_add_pj must be a non-negative number, not -1"),
    ({"dram_pj_per_64bit_access": "big"},
     "energy constant dram_pj_per_64bit_access must be a non-negative number, not 'big'"),
    ({"sram_pj_per_64bit_access": [[8192, 10.0], [4096, 20.0]]},
     "sram_pj_per_64bit_access must grow in size and not fall in energy"),
    ({"sram_pj_per_64bit_access": [[8192, 10.0], [32768, 5.0]]},
     "sram_pj_per_64bit_access must grow in size and not fall in energy"),
    ({"sram_pj_per_64bit_access": []},
     "energy constant sram_pj_per_64bit_access must be a non-empty list"),
])
def test_bad_constants_are_refused(change, message):
    raw = json.loads(energy.DEFAULT_CONSTANTS_PATH.read_text())
    raw.update(change)
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[")):
        energy.load_constants(raw)


def test_bad_constants_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match="cannot read energy constants"):
        energy.load_constants(missing)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="are not JSON"):
        energy.load_constants(bad)
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"mac_multiply_pj": 0.2}))
    with pytest.raises(ValueError, match="lack mac_add_pj, requant_multiply_pj"):
        energy.load_constants(partial)


def test_missing_and_bad_counts():
    counts = dict(COUNTS)
    del counts["weight_bytes"]
    with pytest.raises(ValueError, match="^energy estimate needs counts of weight_bytes$"):
        energy.estimate(CFG, counts)
    with pytest.raises(ValueError, match="^count stores must be a non-negative integer, "
                                         "not -1$"):
        energy.estimate(CFG, {**COUNTS, "stores": -1})
    with pytest.raises(ValueError, match="^tokens must be a positive integer, not 0$"):
        energy.estimate(CFG, {**COUNTS, "tokens": 0})


def test_program_counts_from_the_instruction_definitions():
    cfg = CFG
    p = Program()
    p.load_param(dram_addr=0, n_tiles=2, param_tile=0)
    p.load_act(dram_addr=0, dram_stride=64, rows=3, row_beats=5, buf_row=0, buf_row_step=1,
               buf_beat_step=3)
    p.matmul(weight_addr=0, act_row=0, act_stride=3, act_kstep=1, m=5, k_tiles=3, acc_row=0)
    p.matmul(weight_addr=0, act_row=0, act_stride=3, act_kstep=1, m=5, k_tiles=3, acc_row=8)
    p.store(acc_row=0, m=5, param_tile=0, dram_addr=0, dram_stride=4)
    p.store(acc_row=8, m=5, param_tile=1, buf_row=100, to_buf=1)
    p.end()
    c = energy.program_counts(cfg, [p, bytes(p)])           # the same program twice
    bus = cfg.bus_bytes
    assert c["insn_bytes"] == 2 * 7 * isa.INSN_BYTES
    assert c["param_load_bytes"] == 2 * 2 * isa.PARAM_BEATS * bus
    assert c["act_load_bytes"] == 2 * 3 * 5 * bus
    assert c["weight_bytes"] == 2 * 2 * 3 * cfg.rows * cfg.cols
    assert c["array_rows"] == 2 * 2 * 5 * 3
    assert (c["stores"], c["store_rows"], c["store_buf_rows"]) == (4, 20, 10)
    assert c["expected_dma_write_bytes"] == 2 * 5 * cfg.cols
    assert c["expected_dma_read_bytes"] == (c["insn_bytes"] + c["param_load_bytes"]
                                           + c["act_load_bytes"] + c["weight_bytes"])
    counters = {"array_cycles": 60, "dma_read_bytes": c["expected_dma_read_bytes"],
                "dma_write_bytes": 40}
    assert energy.counter_mismatches(c, counters) == []
    assert energy.counter_mismatches(c, {**counters, "array_cycles": 59}) == [
        "array_cycles: program structure 60, counter 59"]


def test_q4_matmuls_count_their_bytes_and_scaler_work():
    """A Q4 MATMUL streams its 4-bit bytes (scales included), and each of its array rows
    puts C elements through the block scaler: two multiplies and two adds each."""
    from serrano.sw import q4
    cfg = get_preset("tiny")
    prog = Program()
    prog.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=1, m=3, k_tiles=10,
                acc_row=0, wfmt=isa.WeightFormat.Q4)
    prog.matmul(weight_addr=0, act_row=0, act_stride=1, act_kstep=1, m=3, k_tiles=10,
                acc_row=0)
    c = energy.program_counts(cfg, [prog])
    # 10 tiles of 4 x 4 codes = 80 bytes, two block groups of 2 x 4 scale bytes: 96.
    assert q4.matmul_bytes(cfg, 10) == 96
    assert c["weight_bytes"] == 96 + 10 * 16
    assert c["block_rows"] == 30 and c["array_rows"] == 60
    e = energy.estimate(CFG, dict(COUNTS, block_rows=5))
    assert e["scale_j"] == pytest.approx(5 * 4 * 2 * 3.2e-12)
    assert e["events"]["scale_elements"] == 20
    assert energy.estimate(CFG, COUNTS)["scale_j"] == 0
    assert e["total_j"] == pytest.approx(energy.estimate(CFG, COUNTS)["total_j"] + e["scale_j"])
