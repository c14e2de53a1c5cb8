"""Shared fixtures: which simulators to run, seeded randomness."""

import os
import zlib

import numpy as np
import pytest

from serrano.sim import toolenv
from serrano.sw.backends import backend_names

ALL_SIMULATORS = ("verilator", "icarus")


def selected_simulators():
    """Simulators named by ``SIM`` (verilator, icarus or both; default both)."""
    choice = os.environ.get("SIM", "both").strip().lower()
    if choice in ("", "both", "all"):
        return ALL_SIMULATORS
    if choice not in ALL_SIMULATORS:
        raise pytest.UsageError(f"SIM must be verilator, icarus or both, not {choice!r}")
    return (choice,)


def require_simulator(sim):
    """Skip (with a one-line reason saying how to install it) when ``sim`` is missing."""
    if sim == "icarus" and not toolenv.have_iverilog():
        pytest.skip(toolenv.icarus_skip_reason())
    if sim == "verilator" and not toolenv.have_verilator():
        pytest.skip(toolenv.verilator_skip_reason())


@pytest.fixture(params=selected_simulators())
def simulator(request):
    """Each selected simulator in turn, skipped with a reason when not installed."""
    require_simulator(request.param)
    return request.param


def require_backend(name):
    """Skip an RTL backend's test when ``SIM`` excludes its simulator or it is missing."""
    if name in ALL_SIMULATORS:
        if name not in selected_simulators():
            pytest.skip(f"SIM excludes {name}")
        require_simulator(name)


@pytest.fixture(params=backend_names())
def backend(request):
    """Each backend of the device interface in turn (:func:`require_backend`)."""
    require_backend(request.param)
    return request.param


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's name: reproducible, distinct per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture
def gguf_files(tmp_path):
    """GGUF files for loader tests: ``good`` (llama-tiny), ``cut`` (its first half),
    ``gpt2`` (a file of another architecture) and ``missing`` (no file)."""
    import gguf
    from serrano.sw.models import llama as LM
    good = LM.write_gguf(LM.llama_tiny(6), tmp_path / "tiny.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = gguf.GGUFWriter(str(tmp_path / "gpt2.gguf"), "gpt2")
    other.add_block_count(1)
    other.write_header_to_file()
    other.write_kv_data_to_file()
    other.write_tensors_to_file()
    other.close()
    return {"good": good, "cut": cut, "gpt2": tmp_path / "gpt2.gguf",
            "missing": tmp_path / "missing.gguf"}
