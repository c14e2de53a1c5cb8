"""What a host can do with an accelerator on a bus, and the one registry of backends.

A :class:`Backend` is one accelerator with its device memory, seen from the host: write
and read memory regions, write and read registers (by the names of :mod:`hw.regs`), wait
for the interrupt with a time-out, pull the reset pin. Nothing else: launching a program,
waiting for it and reading its counters are :mod:`hw.regs`'s register sequences, run by
:class:`sw.runtime.Device` the same way on every backend (and one day on a board over
PCIe, whose driver would implement these few methods).

Backends (:data:`BACKENDS`, the names every ``--backend`` offers):

``golden``
    The ISA model (:mod:`sw.isa_model`) behind a register file: ``ctrl.start`` runs the
    program at once, in place on the device memory. It counts work, not cycles
    (``timed`` is False: its ``cycles`` counter reads 0).
``verilator``
    The RTL on the fast simulator (:mod:`sim.fastsim`): one Verilated accelerator that
    stays running for the backend's life, its memory a host buffer the host reads and
    writes in place, every clock in C++.
``icarus``
    The RTL under Icarus with cocotb (:mod:`sim.system`), for cross-checks: each program
    runs as one simulation of the accelerator and the Verilog memory model, the memory
    image in and out by file. Slow; exact.
``amaranth``
    The RTL on Amaranth's own simulator (:mod:`sim.amaranth_system`), with the per-cycle
    AXI4 property monitors and the accumulator shadow checking every cycle. Slowest;
    needs no simulator at all.

Every backend gives the same memory image for the same program; the RTL ones give the
same cycle counts for the same memory latency (``tests/test_backends.py``).

Simulated backends that know which memory their programs changed (``golden`` from the
ISA model's stores, ``verilator`` from the write beats its memory model took) also offer
``take_written_pages(page_bytes)``: the pages the accelerator wrote since the last take
(``verilator`` tracks its own ``page_bytes``; ask it for a multiple of that).
:class:`sw.runtime.Device` uses them to compare a checked call's memory with the golden
model's on those pages only. (Not part of :class:`Backend`: a board's host
would not know.)
"""

from typing import Protocol, runtime_checkable

import numpy as np

from serrano.hw import isa, regs
from . import isa_model

__all__ = ["Backend", "BACKENDS", "DEFAULT_MEM_BYTES", "backend_names", "check_backend",
           "check_region", "open_backend", "available", "verilator_library"]

#: Device memory of a backend unless asked otherwise: a 135 M-parameter model at int8
#: with its activations and KV cache fits. Pages are only touched where written.
DEFAULT_MEM_BYTES = 512 << 20
WRITE_LATENCY = 10


@runtime_checkable
class Backend(Protocol):
    """One accelerator and its memory, as a host sees it over a bus."""

    name: str
    cfg: object
    mem_bytes: int
    timed: bool          # whether the ``cycles`` counter counts clock cycles

    def write_mem(self, addr: int, data: np.ndarray) -> None:
        """Write bytes ``data`` at device address ``addr``."""

    def read_mem(self, addr: int, nbytes: int) -> np.ndarray:
        """A copy of ``nbytes`` bytes at ``addr``."""

    def write_reg(self, name: str, value: int) -> None:
        """Write register ``name`` of :data:`hw.regs.REGISTER_MAP`."""

    def read_reg(self, name: str) -> int:
        """Read register ``name``."""

    def wait_irq(self, cycles: int) -> bool:
        """Wait until ``irq`` is high, at most ``cycles`` clocks; True if it is."""

    def reset(self) -> None:
        """Pull the reset pin: the accelerator and its registers (not the memory)."""

    def close(self) -> None:
        """Release the simulator."""


def check_region(device, addr, nbytes):
    """A one-line ``ValueError`` unless ``[addr, addr + nbytes)`` lies in ``device``'s
    memory (anything with ``mem_bytes``)."""
    if (not isinstance(addr, (int, np.integer)) or isinstance(addr, bool) or addr < 0
            or nbytes < 0 or addr + nbytes > device.mem_bytes):
        raise ValueError(f"region [{addr}, {addr} + {nbytes}) is outside device memory "
                         f"[0, {device.mem_bytes})")


class _Memory:
    """Device memory in a numpy buffer ``mem`` (the verilator backend's is the fast
    simulator's own buffer)."""

    def _init_memory(self, cfg, mem_bytes):
        self.cfg = cfg
        self.mem_bytes = mem_bytes
        self.mem = np.zeros(mem_bytes, np.uint8)       # calloc: pages on first touch

    def write_mem(self, addr, data):
        data = np.asarray(data).view(np.uint8).ravel()
        check_region(self, addr, len(data))
        self.mem[addr:addr + len(data)] = data

    def read_mem(self, addr, nbytes):
        check_region(self, addr, nbytes)
        return self.mem[addr:addr + nbytes].copy()

    def view_mem(self, addr, nbytes):
        """The bytes in place (no copy; read only by convention)."""
        return self.mem[addr:addr + nbytes]


class _RegisterFile(_Memory):
    """The register file of a backend that runs a whole program when ``ctrl.start`` is
    written (or when it is waited for): golden, and the RTL batch backends."""

    def _init_registers(self):
        self.regs = {e.name: 0 for e in regs.REGISTER_MAP}
        cfg = self.cfg
        self.regs.update(magic=regs.MAGIC, act_rows=cfg.act_buf_rows,
                         acc_rows=2 * cfg.acc_buf_rows, param_slots=cfg.param_tiles,
                         geometry=cfg.rows | cfg.cols << 8 | cfg.bus_bytes << 16)
        self.pending = False

    def write_reg(self, name, value):
        if name not in self.regs:
            raise KeyError(f"no register named {name!r}")
        value &= 0xFFFF_FFFF
        if name == "ctrl":
            if value & regs.CTRL_SOFT_RESET:
                self.pending = False
                self.regs["status"] = 0
            elif value & regs.CTRL_START and not self.regs["status"] & regs.STATUS_BUSY:
                self.regs["status"] = regs.STATUS_BUSY
                self.regs["irq_status"] = 0
                self.pending = True
                self._started()
        elif name == "irq_status":
            self.regs[name] &= ~value
        else:
            self.regs[name] = value

    def read_reg(self, name):
        if name not in self.regs:
            raise KeyError(f"no register named {name!r}")
        return self.regs[name]

    def wait_irq(self, cycles):
        if self.pending:
            self.pending = False
            self._run(cycles)
        return bool(self.regs["irq_status"] and self.regs["irq_enable"])

    def _started(self):
        """``ctrl.start`` was written (the run may wait for :meth:`wait_irq`)."""

    def _finish(self, status, counters, ended=True):
        self.regs["status"] = status
        for name, value in counters.items():
            self.regs[f"{name}_lo"] = value & 0xFFFF_FFFF
            self.regs[f"{name}_hi"] = value >> 32
        self.regs["irq_status"] = int(ended)

    def reset(self):
        self._init_registers()

    def close(self):
        self.mem = None


def _extent(cfg, limit, mem_bytes):
    """The memory a batch backend hands its simulation: up to the window's ``limit``,
    rounded up to a bus word."""
    return min(-(-max(limit, 1) // cfg.bus_bytes) * cfg.bus_bytes, mem_bytes)


def _status_of(error):
    if error == isa.Error.NONE:
        return regs.STATUS_DONE
    return regs.STATUS_ERROR | int(error) << regs.STATUS_CODE_SHIFT


class GoldenBackend(_RegisterFile):
    """The ISA model behind the register file; runs in place on the device memory."""

    name = "golden"
    timed = False

    def __init__(self, cfg, *, mem_bytes=DEFAULT_MEM_BYTES, mem_latency=30):
        self._init_memory(cfg, mem_bytes)
        self._init_registers()
        self.last = None            # the isa_model.Result of the last program
        self.track_writes = False   # keep the stores' extents for take_written_pages
        self._writes = []

    def _started(self):
        self.pending = False
        r = self.regs
        try:
            res = isa_model.run_program(self.cfg, self.mem, r["prog_addr"], r["prog_len"],
                                        base=r["base"], limit=r["limit"], check_deps=False,
                                        in_place=True, position=r["position"])
        except ValueError:              # a window the model cannot take: DMA_WINDOW
            self._finish(_status_of(isa.Error.DMA_WINDOW), {})
            return
        self.last = res
        if self.track_writes:
            self._writes += res.writes
        self._finish(_status_of(res.error), {
            "cycles": 0, "array_cycles": res.array_rows, "instructions": res.instructions,
            "dma_read_bytes": res.dma_read_bytes, "dma_write_bytes": res.dma_write_bytes,
            **{f"stall_{k}": 0 for k in ("weight", "act", "store", "insn")},
            "vec_busy": 0, "vec_insns": sum(e["op"] == "VEC" for e in res.ops)})


    def take_written_pages(self, page_bytes):
        """The ``page_bytes`` pages (indices, ascending) the programs' stores wrote since
        the last take (since :attr:`track_writes` was set)."""
        pages = isa_model.written_pages(self._writes, page_bytes)
        self._writes = []
        return pages


def verilator_library(cfg):
    """The fast simulator's library for ``cfg``: a profile-guided build, trained on
    :mod:`sw.pgo`'s programs (built once per design; the first call takes minutes)."""
    from serrano.sim.fastsim import build
    from .pgo import COMMAND
    return build(cfg, train=COMMAND)


class VerilatorBackend(_Memory):
    """The RTL on the fast simulator: one running Verilated accelerator, its memory the
    simulator's own buffer (``path``: a library already built, as the build study uses)."""

    name = "verilator"
    timed = True

    def __init__(self, cfg, *, mem_bytes=DEFAULT_MEM_BYTES, mem_latency=30, waveform=None,
                 path=None):
        from serrano.sim.fastsim import FastSim
        self.cfg = cfg
        self.mem_bytes = mem_bytes
        if path is None and waveform is None:
            path = verilator_library(cfg)
        self.sim = FastSim(cfg, mem_bytes, read_latency=mem_latency,
                           write_latency=WRITE_LATENCY, waveform=waveform, path=path)
        self.mem = self.sim.mem
        self.page_bytes = self.sim.page_bytes

    def take_written_pages(self, page_bytes):
        """The ``page_bytes`` pages (indices, ascending; a multiple of
        :attr:`page_bytes`) the accelerator's write beats changed since the last take."""
        if page_bytes % self.page_bytes:
            raise ValueError(f"pages of {page_bytes} bytes are not whole pages of "
                             f"{self.page_bytes}")
        return np.unique(self.sim.take_written_pages() // (page_bytes // self.page_bytes))

    def write_reg(self, name, value):
        self.sim.reg_write(regs.address(name), value)

    def read_reg(self, name):
        return self.sim.reg_read(regs.address(name))

    #: ``sampler(backend)``, if set, is called every :attr:`sample_every` cycles while
    #: a program runs (it may read registers: the accelerator runs on meanwhile, its
    #: counters unchanged; :mod:`sw.stall_profile`).
    sampler = None
    sample_every = 64

    def wait_irq(self, cycles):
        if self.sampler is None:
            self.sim.run(cycles, stop_on_irq=True)
            return self.sim.irq
        done = 0
        while done < cycles and not self.sim.irq:
            done += self.sim.run(min(self.sample_every, cycles - done), stop_on_irq=True)
            self.sampler(self)
        return self.sim.irq

    def reset(self):
        self.sim.reset()

    def close(self):
        self.mem = None
        self.sim.close()


class _BatchRTL(_RegisterFile):
    """An RTL backend that runs each program as one simulation: the memory up to the
    window's ``limit`` goes in when the program is waited for and comes back after."""

    timed = True

    def __init__(self, cfg, *, mem_bytes=DEFAULT_MEM_BYTES, mem_latency=30):
        self._init_memory(cfg, mem_bytes)
        self._init_registers()
        self.mem_latency = mem_latency

    def _run(self, cycles):
        r = self.regs
        top = _extent(self.cfg, r["limit"], self.mem_bytes)
        res = self._simulate(self.mem[:top], r, cycles)
        self.mem[:top] = res.image
        self._finish(res.status, res.counters, ended=not res.timed_out)

    def _simulate(self, image, regs_, cycles):
        """Run the program the registers ``regs_`` describe on ``image``; a result with
        ``image``, ``status``, ``counters`` and ``timed_out``."""
        raise NotImplementedError


class IcarusBackend(_BatchRTL):
    """The RTL under Icarus (cocotb and the Verilog memory model, :mod:`sim.system`): one
    simulation kept running (:func:`sim.runner.session`), the accelerator reset and the
    memory loaded by file before each program, read back by file after it."""

    name = "icarus"

    def __init__(self, cfg, **kw):
        from serrano.sim import toolenv
        if not toolenv.have_iverilog():
            raise RuntimeError(toolenv.icarus_skip_reason())
        super().__init__(cfg, **kw)

    def _simulate(self, image, r, cycles):
        from serrano.sim.system import run_system
        return run_system(self.cfg, image, r["prog_addr"], r["prog_len"], "icarus",
                          base=r["base"], limit=r["limit"], mem_latency=self.mem_latency,
                          write_latency=WRITE_LATENCY, timeout_cycles=cycles,
                          persistent=True, position=r["position"])


class AmaranthBackend(_BatchRTL):
    """The RTL on Amaranth's simulator with the per-cycle property monitors
    (:mod:`sim.amaranth_system`), one simulation per program."""

    name = "amaranth"

    def _simulate(self, image, r, cycles):
        from serrano.sim.amaranth_system import run_program
        return run_program(self.cfg, image, r["prog_addr"], r["prog_len"], base=r["base"],
                           limit=r["limit"], latency=self.mem_latency,
                           timeout_cycles=cycles, position=r["position"])


#: The registry: every ``--backend`` of every command offers these names.
BACKENDS = {
    "golden": GoldenBackend,
    "verilator": VerilatorBackend,
    "icarus": IcarusBackend,
    "amaranth": AmaranthBackend,
}


def backend_names():
    return tuple(BACKENDS)


def check_backend(name):
    """``name`` if it is a backend, else a one-line :class:`ValueError`."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: "
                         f"{', '.join(BACKENDS)}")
    return name


def available(name):
    """``(True, "")`` if backend ``name`` can run here, else ``(False, why)``."""
    check_backend(name)
    from serrano.sim import toolenv
    if name == "verilator" and not toolenv.have_verilator():
        return False, toolenv.verilator_skip_reason()
    if name == "icarus" and not toolenv.have_iverilog():
        return False, toolenv.icarus_skip_reason()
    return True, ""


def open_backend(name, cfg, *, mem_bytes=DEFAULT_MEM_BYTES, mem_latency=30, waveform=None):
    """A new backend ``name`` for ``cfg`` with ``mem_bytes`` of zeroed device memory;
    ``waveform`` (``verilator`` only) is a VCD file of every signal of the whole run."""
    check_backend(name)
    if waveform is not None and name != "verilator":
        raise ValueError(f"waveform= is for the verilator backend, not {name!r} (icarus "
                         f"and the cocotb runs write one for a failing test)")
    if (not isinstance(mem_bytes, int) or mem_bytes <= 0 or mem_bytes % cfg.bus_bytes
            or mem_bytes > 1 << cfg.addr_width):
        raise ValueError(f"mem_bytes must be a positive multiple of {cfg.bus_bytes} within "
                         f"the {cfg.addr_width}-bit address space, not {mem_bytes!r}")
    extra = {} if waveform is None else {"waveform": waveform}
    return BACKENDS[name](cfg, mem_bytes=mem_bytes, mem_latency=mem_latency, **extra)
