"""The public Python API: one installed package, serrano, and its small surface."""

import subprocess
import sys

import numpy as np
import pytest

import serrano


def test_layers_install_under_one_name(tmp_path):
    """From any folder, ``serrano.hw``, ``serrano.sim`` and ``serrano.sw`` import, and no
    bare ``hw``/``sim``/``sw`` module is loaded along the way."""
    code = ("import sys, serrano, serrano.hw.top, serrano.sim.fastsim, serrano.sw.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hw', 'sim', 'sw')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_surface():
    assert serrano.backends() == ("golden", "verilator", "icarus", "amaranth")
    assert serrano.presets() == ("tiny", "fpga", "default", "x32", "x64")
    with serrano.Device("tiny", backend="golden", mem_bytes=1 << 16) as dev:
        addr = dev.put(np.arange(8, dtype=np.uint8))
        np.testing.assert_array_equal(dev.read(addr, 8), np.arange(8))
    report = serrano.run("bert-tiny", preset="tiny", seq=8, host_ops=True)
    assert report["cosine_vs_float"] > 0.99 and report["host_round_trips"] == 6
    report = serrano.run("bert-tiny", seq=8)              # every op on the chip
    assert report["ops"] == "chip" and report["host_round_trips"] == 1
    with pytest.raises(ValueError, match="load_model knows 'minilm' and 'smollm2', not"):
        serrano.load_model("gpt-tiny")
    g = serrano.generate("llama-tiny", preset="tiny", prompt="ab", max_tokens=2)
    assert len(g["generated_ids"]) == 2
    with pytest.raises(ValueError, match="unknown backend"):
        serrano.Device("tiny", backend="board")
