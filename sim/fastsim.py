"""The fast simulator: the Verilated accelerator in a C++ harness, driven through ctypes.

:func:`build` compiles ``serrano_top`` of a configuration, a small Verilog wrapper and
``sim/fast/harness.cpp`` (an AXI4 memory model on a host buffer and an AXI4-Lite host,
both in C++) into one shared library, once per design; :class:`FastSim` loads it and
keeps one accelerator running for as long as the object lives.

Why a shared library loaded with ``ctypes`` (and not a process behind a pipe): device
memory is a host buffer that numpy views in place (:attr:`FastSim.mem`), so writing a
region costs one ``memcpy`` and nothing is serialised; a call into the library costs
about a microsecond; and the harness turns Verilog ``$finish``/``$stop`` and Verilator's
fatal errors into error returns (``VL_USER_*`` hooks), so the model cannot end the host
process.

The memory model follows ``sim/hdl/axi_mem.v`` cycle for cycle (read latency, write
latency, queue depths, SLVERR window, DECERR beyond the memory): a program takes the
same cycles here as in the cocotb runs of :mod:`sim.system` (``tests/test_backends.py``
checks it). Build options and what each gained are in README ("Simulation speed").
"""

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from serrano.hw.axi import AXI4LiteSignature, AXI4Signature
from serrano.hw.top import CSR_ADDR_WIDTH
from . import toolenv
from .runner import _locked, build_root
from .verilog import TOP, top_verilog

__all__ = ["HARNESS_TOP", "VERILATOR_ARGS", "STUDY", "FastSimError", "harness_verilog",
           "build", "FastSim"]

HARNESS_TOP = "serrano_harness"
_HARNESS_CPP = Path(__file__).resolve().parent / "fast" / "harness.cpp"
LIB_NAME = "libserrano_fast.so"
# Verilator's own optimisation and X handling (see README, "Simulation speed"): every
# register starts at zero (randReset(0)), assertions are off in the fast model.
# -fno-reloop: Verilator otherwise rolls runs of assignments to consecutive array elements
# back into loops; straight-line code runs faster here (1.4 % fewer instructions per
# cycle on `default`, callgrind).
_SPEED_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
               "-fno-reloop"]
_LINT_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]
VERILATOR_ARGS = _SPEED_ARGS + _LINT_ARGS
# The C++ compiler: position-independent for the shared library, the Verilog stop hooks;
# -fno-semantic-interposition and -fno-plt make calls between the model's functions
# inside the library direct, not through the PLT (0.8 % fewer instructions per cycle).
_CALL_FLAGS = ["-fno-semantic-interposition", "-fno-plt"]
CXX_FLAGS = ["-fPIC", *_CALL_FLAGS, "-DVL_USER_FINISH", "-DVL_USER_STOP", "-DVL_USER_FATAL"]
# verilated.mk compiles the per-cycle code with OPT_FAST and the cold set-up code with
# OPT_SLOW (-Os): -O2 everywhere would only lengthen the build.
OPT_FAST = "-O2"
# Profile-guided optimisation (GCC): the instrumented build writes its profile (.gcda,
# beside each object) when the training process exits; the final build reads it. Code
# the training never ran keeps the ordinary optimisation (-fprofile-partial-training),
# a profile that does not match its source is ignored, not an error, and the counts of a
# multi-threaded model (--threads, counted without atomics) are made consistent
# (-fprofile-correction).
PGO_GENERATE = ["-fprofile-generate", "-fprofile-update=single"]
PGO_USE = ["-fprofile-use", "-fprofile-partial-training", "-fprofile-correction",
           "-Wno-missing-profile", "-Wno-coverage-mismatch"]


class FastSimError(RuntimeError):
    """The fast simulator could not be built, or its model stopped with an error."""


def _width(shape):
    return shape.width if hasattr(shape, "width") else int(shape)


def harness_verilog(cfg, gating="clock"):
    """Verilog of ``serrano_harness``: ``serrano_top`` (its units clock-gated unless
    ``gating`` is ``"none"``: :mod:`hw.clock_gate`) with plain port names (``ax_*`` for
    the AXI4 memory port, ``lite_*`` for the AXI4-Lite host port) for the C++ harness."""
    buses = (("ax", "m_axi", AXI4Signature(addr_width=cfg.addr_width,
                                            data_bytes=cfg.bus_bytes)),
             ("lite", "s_axil", AXI4LiteSignature(addr_width=CSR_ADDR_WIDTH)))
    ports = ["  input wire clk,", "  input wire rst,", "  output wire irq,"]
    conns = ["    .clk(clk), .rst(rst), .irq(irq),"]
    for short, prefix, sig in buses:
        for name, member in sig.members.items():
            # AXI4 is the accelerator's manager port; AXI4-Lite its subordinate port.
            out_of_top = (member.flow.name == "Out") == (short == "ax")
            width = _width(member.shape)
            rng = f"[{width - 1}:0] " if width > 1 else ""
            ports.append(f"  {'output' if out_of_top else 'input'} wire {rng}{short}_{name},")
            conns.append(f"    .{prefix}__{name}({short}_{name}),")
    ports[-1] = ports[-1].rstrip(",")
    conns[-1] = conns[-1].rstrip(",")
    wrapper = "\n".join([f"module {HARNESS_TOP} (", *ports, ");", f"  {TOP} accel (",
                         *conns, "  );", "endmodule", ""])
    return top_verilog(cfg, gating) + "\n" + wrapper


def _training_source(train):
    """The text of the training command's module or script (``-m MODULE`` or a path), so
    that a changed training set makes a new build."""
    if train[0] == "-m":
        import importlib.util
        spec = importlib.util.find_spec(train[1])
        path = spec.origin if spec else None
    else:
        path = train[0]
    return Path(path).read_text() if path and Path(path).is_file() else ""


def build(cfg, *, verilator_args=None, opt_fast=OPT_FAST, trace=False, train=None,
          gating="clock"):
    """Compile the fast simulator of ``cfg`` once per design; return the library's path.

    The build lives in ``build/sim/fast/<preset>-<hash>/`` (the hash covers the Verilog,
    the harness source, the options and the training command with its module's source),
    under a file lock shared by parallel workers. ``verilator_args`` (default
    :data:`VERILATOR_ARGS`) and ``opt_fast`` (the C++ compiler's options for the per-cycle
    code) are for the study of what each option gains
    (:func:`serrano.sw.bench.build_study`). ``trace`` builds a model that can write a VCD
    waveform of every signal (slower; :class:`FastSim` ``waveform=``). ``gating="none"``
    builds the design without its clock gates (:mod:`hw.clock_gate`; for the check that
    they change no cycle).

    ``train`` (the arguments of a Python command, such as ``("-m", "serrano.sw.pgo")``)
    makes a profile-guided build: the model is compiled with :data:`PGO_GENERATE`, the
    command runs with the instrumented library's path and ``cfg`` as JSON appended (it
    must exercise the library and exit with status 0), and the model is compiled again
    with :data:`PGO_USE` in the same folder, reading the profile it left.
    """
    verilator_args = VERILATOR_ARGS if verilator_args is None else list(verilator_args)
    cxx = CXX_FLAGS + [f"-DBUS_BYTES={cfg.bus_bytes}"]
    if trace:
        verilator_args = verilator_args + ["--trace"]
        cxx = cxx + ["-DSRN_TRACE"]
    text = harness_verilog(cfg, gating)
    harness = _HARNESS_CPP.read_text()
    flags = verilator_args + cxx + [opt_fast] + ([*PGO_GENERATE, *PGO_USE, *train,
                                                  _training_source(train)] if train else [])
    digest = hashlib.sha256("\0".join([text, harness, *flags]).encode()).hexdigest()[:12]
    build_dir = build_root() / "fast" / f"{cfg.name}-{digest}{'-traced' if trace else ''}"
    lib = build_dir / "obj" / LIB_NAME
    with _locked(build_root() / "fast" / f"{cfg.name}-{digest}.lock"):
        if lib.exists():
            return lib
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / f"{HARNESS_TOP}.v").write_text(text)
        t0 = time.perf_counter()
        log = build_dir / "build.log"
        log.write_text("")
        if train:
            # The instrumented library has a name of its own: ``lib`` exists only once
            # the whole build has succeeded.
            gen = lib.with_name("instrumented_" + LIB_NAME)
            _compile(build_dir, verilator_args, cxx + PGO_GENERATE, opt_fast, gen, log)
            _train(build_dir, gen, train, cfg, log)
            for f in lib.parent.iterdir():          # recompile everything, keep the .gcda
                if f.suffix in (".o", ".a", ".so", ".gch"):
                    f.unlink()
            _compile(build_dir, verilator_args, cxx + PGO_USE, opt_fast, lib, log)
        else:
            _compile(build_dir, verilator_args, cxx, opt_fast, lib, log)
        (build_dir / "build_seconds").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return lib


def _compile(build_dir, verilator_args, cxx, opt_fast, lib, log):
    """Verilate and compile the harness into ``lib`` (the C++ flags ``cxx`` also link it),
    appending the tools' output to ``log``."""
    env = {**os.environ, **toolenv.tool_env()}
    env["MAKEFLAGS"] = " ".join([f for f in env["MAKEFLAGS"].split()
                                 if not f.startswith("OPT_FAST=")]
                                + ["OPT_FAST=" + opt_fast.replace(" ", "\\ ")])
    link = ["-shared"] + [f for f in cxx if f.startswith("-fprofile")]
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2",
           "--top-module", HARNESS_TOP, "--Mdir", "obj", "-o", lib.name,
           *verilator_args,
           "-CFLAGS", " ".join(cxx),
           "-LDFLAGS", " ".join(link),
           str(_HARNESS_CPP), f"{HARNESS_TOP}.v"]
    with open(log, "a") as out:
        proc = subprocess.run(cmd, cwd=build_dir, env=env, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not lib.exists():
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise FastSimError(f"Verilator build of the fast simulator failed (exit "
                           f"{proc.returncode}); log: {log}\n" + "\n".join(tail))


def _train(build_dir, lib, train, cfg, log):
    """Run the training command on the instrumented ``lib`` (its profile is written when
    the process exits)."""
    cmd = [sys.executable, *train, str(lib), json.dumps(cfg.to_dict())]
    with open(log, "a") as out:
        out.write(f"training: {' '.join(cmd[:-1])} CONFIG\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=build_dir, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise FastSimError(f"the training run of the profile-guided build failed (exit "
                           f"{proc.returncode}); log: {log}\n" + "\n".join(tail))
    if not any(lib.parent.glob("*.gcda")):
        raise FastSimError(f"the training run wrote no profile into {lib.parent}")


_LIBS = {}


def _load(path):
    """The library at ``path``, loaded once per process, with its functions typed."""
    path = str(path)
    if path in _LIBS:
        return _LIBS[path]
    lib = ctypes.CDLL(path)
    vp, u64, u32, i64 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int64
    sigs = {
        "srn_create": (vp, [u64]),
        "srn_destroy": (None, [vp]),
        "srn_mem": (ctypes.POINTER(ctypes.c_uint8), [vp]),
        "srn_mem_bytes": (u64, [vp]),
        "srn_dirty": (ctypes.POINTER(ctypes.c_uint8), [vp]),
        "srn_page_bytes": (u64, []),
        "srn_pages": (u64, [u64]),
        "srn_bus_bytes": (ctypes.c_int, []),
        "srn_cycle": (u64, [vp]),
        "srn_irq": (ctypes.c_int, [vp]),
        "srn_error": (ctypes.c_char_p, [vp]),
        "srn_clear_error": (None, [vp]),
        "srn_read_beats": (u64, [vp]),
        "srn_write_beats": (u64, [vp]),
        "srn_set_timing": (None, [vp, u32, u32]),
        "srn_set_err_window": (None, [vp, u64, u64]),
        "srn_reset": (i64, [vp, u32]),
        "srn_run": (i64, [vp, u64, ctypes.c_int]),
        "srn_reg_write": (i64, [vp, u32, u32, u64]),
        "srn_reg_read": (i64, [vp, u32, ctypes.POINTER(u32), u64]),
        "srn_bare_loop": (i64, [vp, u64]),
        "srn_trace_open": (ctypes.c_int, [vp, ctypes.c_char_p]),
        "srn_trace_close": (None, [vp]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    _LIBS[path] = lib
    return lib


class FastSim:
    """One running accelerator on the fast simulator, with ``mem_bytes`` of memory.

    ``mem`` is a writable numpy uint8 view of the device memory (the C++ buffer itself).
    ``waveform`` (a path) builds the traced model and writes a VCD waveform of every
    signal, a 10 ns clock, from construction to :meth:`close`.
    Register accesses, runs and resets clock the model; :attr:`cycle` counts every clock
    since construction. Methods raise :class:`FastSimError` when the model stops with an
    error (a Verilog ``$finish``, a bus protocol violation seen by the memory model).
    """

    REG_ACCESS_CYCLES = 1000      # an AXI-Lite access that takes longer is a hang

    def __init__(self, cfg, mem_bytes, *, read_latency=30, write_latency=10, path=None,
                 waveform=None):
        if mem_bytes <= 0 or mem_bytes % cfg.bus_bytes:
            raise ValueError(f"mem_bytes must be a positive multiple of {cfg.bus_bytes}, "
                             f"not {mem_bytes!r}")
        if mem_bytes > 1 << cfg.addr_width:
            raise ValueError(f"mem_bytes {mem_bytes} exceeds the {cfg.addr_width}-bit "
                             f"address space")
        self.cfg = cfg
        self.path = path or build(cfg, trace=waveform is not None)
        self._lib = _load(self.path)
        if self._lib.srn_bus_bytes() != cfg.bus_bytes:
            raise FastSimError(f"{self.path} was built for a {self._lib.srn_bus_bytes()}"
                               f"-byte bus, not {cfg.bus_bytes}")
        self._h = self._lib.srn_create(mem_bytes)
        if not self._h:
            raise MemoryError(f"the fast simulator could not allocate {mem_bytes} bytes "
                              f"of device memory")
        self.mem_bytes = mem_bytes
        ptr = self._lib.srn_mem(self._h)
        self.mem = np.ctypeslib.as_array(ptr, shape=(mem_bytes,))
        self.page_bytes = self._lib.srn_page_bytes()
        self._dirty = np.ctypeslib.as_array(self._lib.srn_dirty(self._h),
                                            shape=(self._lib.srn_pages(mem_bytes),))
        self.set_timing(read_latency, write_latency)
        self.waveform = None
        if waveform is not None:
            self.waveform = Path(waveform)
            self.waveform.parent.mkdir(parents=True, exist_ok=True)
            if self._lib.srn_trace_open(self._h, str(self.waveform).encode()) != 0:
                raise FastSimError(f"{self.path} was built without tracing")

    # -- lifetime

    def close(self):
        if getattr(self, "_h", None):
            self.mem = self._dirty = None   # (the waveform, if any, is flushed and closed)
            self._lib.srn_destroy(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _handle(self):
        if not self._h:
            raise FastSimError("the simulator is closed")
        return self._h

    def _check(self, ret, what):
        if ret == -1:
            msg = self._lib.srn_error(self._h).decode(errors="replace")
            self._lib.srn_clear_error(self._h)
            raise FastSimError(f"{what}: {msg}")
        return ret

    def take_written_pages(self):
        """The pages (of :attr:`page_bytes`, ascending indices) the accelerator's write
        beats changed since the last call, and forget them. Writes through :attr:`mem`
        are the host's and are not counted."""
        self._handle()
        pages = np.flatnonzero(self._dirty)
        self._dirty[pages] = 0
        return pages

    # -- memory model settings

    def set_timing(self, read_latency, write_latency):
        """Memory latencies in cycles (0 to 255; 0 acts as 1), as ``serrano_axi_mem``."""
        for name, v in (("read_latency", read_latency), ("write_latency", write_latency)):
            if not isinstance(v, int) or not 0 <= v <= 255:
                raise ValueError(f"{name} must be an integer in 0..255, not {v!r}")
        self._lib.srn_set_timing(self._handle(), read_latency, write_latency)

    def set_err_window(self, lo, hi):
        """Bursts starting in ``[lo, hi)`` answer SLVERR (``lo >= hi``: none)."""
        self._lib.srn_set_err_window(self._handle(), lo, hi)

    # -- the pins and the clock

    @property
    def cycle(self):
        return self._lib.srn_cycle(self._handle())

    @property
    def irq(self):
        return bool(self._lib.srn_irq(self._handle()))

    @property
    def bus_beats(self):
        """``(read beats, write beats)`` the memory served since the last reset."""
        h = self._handle()
        return self._lib.srn_read_beats(h), self._lib.srn_write_beats(h)

    def reset(self, cycles=4):
        """Hold ``rst`` high for ``cycles`` clocks: the accelerator, its registers and the
        memory model's queues (not the memory's contents)."""
        self._check(self._lib.srn_reset(self._handle(), cycles), "reset")

    def run(self, cycles, *, stop_on_irq=False):
        """Clock up to ``cycles`` times (stopping at ``irq`` if asked); return the count."""
        return self._check(self._lib.srn_run(self._handle(), cycles, int(stop_on_irq)),
                           "run")

    def bare_loop(self, cycles):
        """Clock the model with every input idle and no memory model (the rate ceiling)."""
        return self._check(self._lib.srn_bare_loop(self._handle(), cycles), "bare loop")

    # -- the host port

    def _register(self, ret, what):
        if self._check(ret, what) == -2:
            raise FastSimError(f"{what} got no response in {self.REG_ACCESS_CYCLES} cycles")

    def reg_write(self, addr, value):
        self._register(self._lib.srn_reg_write(self._handle(), addr, value & 0xFFFF_FFFF,
                                               self.REG_ACCESS_CYCLES),
                       f"register write at {addr:#x}")

    def reg_read(self, addr):
        out = ctypes.c_uint32()
        self._register(self._lib.srn_reg_read(self._handle(), addr, ctypes.byref(out),
                                              self.REG_ACCESS_CYCLES),
                       f"register read at {addr:#x}")
        return out.value


# ---- what each build option gains -------------------------------------------------------

#: Build variants of :func:`serrano.sw.bench.build_study`: ``(label, Verilator options,
#: OPT_FAST, profile-guided, gating)``, each up to the chosen build adding one option to
#: the one before, the next two the chosen build with one more, the last two the design
#: without its clock gates (:mod:`hw.clock_gate`): the chosen build, and the reference
#: the device issue measured against (``-O2``, no other option). The C++ call flags are
#: in every variant; they were measured with callgrind, see README.
STUDY = (
    ("Verilator's defaults, verilated.mk's -Os", [], "-Os", False, "clock"),
    ("+ C++ -O2 for the per-cycle code", [], "-O2", False, "clock"),
    ("+ -O3 (Verilator)", _SPEED_ARGS[:1], "-O2", False, "clock"),
    ("+ --x-assign fast --x-initial fast", _SPEED_ARGS[:5], "-O2", False, "clock"),
    ("+ --noassert", _SPEED_ARGS[:6], "-O2", False, "clock"),
    ("+ -fno-reloop", _SPEED_ARGS, "-O2", False, "clock"),
    ("+ profile-guided (the chosen build)", _SPEED_ARGS, "-O2", True, "clock"),
    ("chosen + C++ -O3 -march=native", _SPEED_ARGS, "-O3 -march=native", True, "clock"),
    ("chosen + --threads 2", _SPEED_ARGS + ["--threads", "2"], "-O2", True, "clock"),
    ("chosen, without the clock gates", _SPEED_ARGS, "-O2", True, "none"),
    ("reference: -O2, without the clock gates", [], "-O2", False, "none"),
)
