"""Shared fixtures: which simulators to run, seeded randomness."""

import os
import zlib

import numpy as np
import pytest

from serrano.sim import toolenv

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


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's name: reproducible, distinct per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
