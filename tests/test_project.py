"""``serrano project``: projections composed from the RTL's measured cycles."""

import json

import pytest

from serrano.hw.config import get_preset
from serrano.sw import cli, project, scaling
from serrano.sw.gemm import run_gemm
from serrano.sw.runtime import Device
from tests.conftest import require_simulator

MEASURED = scaling.load()


def _entries():
    return [(name, e) for name, p in MEASURED["presets"].items() for e in p["gemms"]]


@pytest.mark.parametrize("preset,entry", _entries(),
                         ids=[f"{n}-{e['name'].replace(' ', '-')}" for n, e in _entries()])
def test_projection_reproduces_each_measured_gemm(preset, entry):
    """A measured shape is projected at its measured cycles; the efficiency model alone
    (the table's lookup off) passes through its points, shapes of one roofline (a matrix
    and its transpose) sharing their mean, within 1.5 %."""
    side = MEASURED["presets"][preset]["rows"]
    shape = (side, entry["m"], entry["k"], entry["n"], entry["weights"])
    assert project.gemm_cycles(*shape) == entry["cycles"]
    model = project.gemm_cycles(*shape, lookup=False)
    assert abs(model - entry["cycles"]) <= 0.015 * entry["cycles"]


@pytest.mark.parametrize("preset,name", [
    ("default", "decode q_o int4"), ("default", "decode gate_up int8"),
    ("default", "prefill k_v int8"), ("default", "prefill down int4"),
    # x32's fast simulator takes about 5 minutes to build; x64's 14 (its runs are in
    # the study itself, `python -m serrano.sw.scaling --presets x64`).
    ("x32", "decode gate_up int4"), ("x32", "prefill q_o int8")])
def test_measured_table_is_todays_rtl(preset, name):
    """The study's numbers are what the RTL gives today (a stale table fails here):
    projected cycles equal freshly measured cycles, bit-exact against the golden model."""
    require_simulator("verilator")
    cfg = get_preset(preset)
    e = next(e for e in MEASURED["presets"][preset]["gemms"] if e["name"] == name)
    backend = scaling._backend(cfg)
    try:
        with Device(cfg, backend) as dev:
            r = run_gemm(cfg, e["m"], e["k"], e["n"], "verilator", device=dev,
                         weights=e["weights"])
    finally:
        backend.close()
    assert r["bit_exact"]
    assert project.gemm_cycles(cfg.rows, e["m"], e["k"], e["n"], e["weights"]) \
        == r["cycles"]


def test_smollm2_shape_is_the_files():
    from serrano.sw.models import llama as LM
    s = LM.load_smollm2().shape
    m = project.model_shape("smollm2")
    assert (m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["ffn"], m["vocab"]) == \
        (s.layers, s.hidden, s.heads, s.kv_heads, s.ffn, s.vocab)


def test_unmeasured_shapes_are_interpolated_and_said():
    notes = set()
    side = MEASURED["presets"]["default"]["rows"]
    c = project.gemm_cycles(side, 1, 2048, 2048, "int4", notes=notes)
    lo = project.gemm_cycles(side, 1, 1536, 576, "int4")
    hi = project.gemm_cycles(side, 1, 4096, 4096, "int4")
    assert lo < c < hi
    assert not notes                         # bracketed by the measured GEMVs
    project.gemm_cycles(side, 1, 16384, 16384, "int4", notes=notes)
    assert any("outside the measured range" in n for n in notes)
    notes.clear()
    project.gemm_cycles(256, 1, 4096, 4096, "int4", notes=notes)
    assert any("256x256 array was not measured" in n for n in notes)


def test_decode_is_bound_by_the_bus():
    r = project.project("llama-2-7b", array="64x64", clock_ghz=1.0, bandwidth_gbps=64.0)
    weights = 7e9 / 2                               # about 3.5 GB of 4-bit weights
    assert r["decode"]["bytes_per_step_per_chip"] > weights
    assert r["decode"]["bus_utilization"] > 0.9
    assert r["tokens_per_s"] < 64e9 / weights
    # The bus caps what a faster memory gives; a slower one slows decode.
    assert project.project("llama-2-7b", array="64x64", bandwidth_gbps=640.0)[
        "tokens_per_s"] == pytest.approx(r["tokens_per_s"])
    assert project.project("llama-2-7b", array="64x64", bandwidth_gbps=32.0)[
        "tokens_per_s"] < 0.6 * r["tokens_per_s"]


def test_chips_and_batch():
    one = project.project("llama-3-8b", array="64x64", chips=1)
    four = project.project("llama-3-8b", array="64x64", chips=4)
    assert 3 * one["tokens_per_s"] < four["tokens_per_s"] < 4 * one["tokens_per_s"]
    assert four["decode"]["allreduce_bytes_per_chip"] == \
        2 * 32 * (2 * 3 / 4 * 4096 * 2)          # 2 per layer, ring, 16-bit values
    batched = project.project("llama-3-8b", array="64x64", batch=16)
    assert batched["tokens_per_s"] > 8 * one["tokens_per_s"]
    assert batched["joules_per_token"] < one["joules_per_token"] / 4


def test_json_and_table(capsys):
    assert cli.main(["project", "--model", "smollm2", "--array", "32x32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("tokens_per_s", "prefill_tokens_per_s", "latency_s_per_token",
                "joules_per_token", "energy", "assumptions"):
        assert key in r
    assert any("not a measurement" in a for a in r["assumptions"])
    assert cli.main(["project", "--table"]) == 0
    out = capsys.readouterr().out
    assert "gpt-fast" in out and "ML.ENERGY" in out and "serrano 64x64" in out


@pytest.mark.parametrize("argv,msg", [
    (["--array", "48x48"], "power-of-two"), (["--array", "32x16"], "square"),
    (["--model", "gpt-5"], "unknown model"), (["--chips", "0"], "positive integer"),
    (["--model", "smollm2", "--chips", "4"], "KV heads"), (["--bandwidth", "0"], "positive"),
])
def test_bad_input_is_one_line(capsys, argv, msg):
    assert cli.main(["project", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and msg in err


def test_plot(tmp_path):
    path = tmp_path / "at_scale.png"
    assert cli.main(["project", "--plot", str(path), "--model", "smollm2", "--array", "16x16",
                     "--bandwidth", "16"]) == 0
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
