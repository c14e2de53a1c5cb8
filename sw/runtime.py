"""The runtime: one device memory, accelerator calls, and backends behind one interface.

A :class:`Device` holds the device memory image (weights stay in it for the whole run,
as they would in DRAM), allocates regions in it, lets the host write and read regions
(counted: every byte the host moves is a host<->device transfer), and runs programs on
its backend. A *call* is one program run to ``END``: one host round trip.

Backends: ``golden`` (the numpy ISA model, :mod:`sw.isa_model`), ``verilator`` and
``icarus`` (the RTL, :mod:`sim.system`: accelerator plus Verilog memory). On an RTL
backend every call is also run on the golden model and the two memory images are
compared byte for byte (``bit_exact_vs_golden``).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from hw import isa
from . import isa_model
from .compiler import ALIGN, Builder

__all__ = ["BACKENDS", "DeviceError", "CallStats", "Device"]

BACKENDS = ("golden", "verilator", "icarus")


class DeviceError(RuntimeError):
    """The accelerator stopped with an error, or disagreed with the golden model."""


@dataclass
class CallStats:
    name: str
    macs: int
    cycles: int | None
    counters: dict | None
    wall_s: float


@dataclass
class Device:
    cfg: object
    backend: str = "golden"
    mem_latency: int = 30
    progress: object = None                 # callable(event dict) or None
    image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    calls: list = field(default_factory=list)
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    bit_exact: bool | None = None
    sim_wall_s: float = 0.0
    golden_read_bytes: int = 0           # DMA traffic as the golden model counts it
    golden_write_bytes: int = 0

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of: "
                             f"{', '.join(BACKENDS)}")
        if self.backend != "golden":
            self.bit_exact = True

    # ---- memory -----------------------------------------------------------------------

    def alloc(self, nbytes):
        """A fresh zeroed region of ``nbytes``, aligned to ``ALIGN``; returns its address."""
        addr = len(self.image)
        size = -(-max(int(nbytes), 1) // ALIGN) * ALIGN
        self.image = np.concatenate([self.image, np.zeros(size, np.uint8)])
        return addr

    def put(self, data):
        """Allocate a region for ``data`` and write it there (a host-to-device transfer)."""
        data = np.asarray(data).view(np.uint8).ravel()
        addr = self.alloc(len(data))
        self.write(addr, data)
        return addr

    def write(self, addr, data):
        data = np.asarray(data).view(np.uint8).ravel()
        self.image[addr:addr + len(data)] = data
        self.bytes_to_device += len(data)

    def mark(self):
        """The current end of memory: :meth:`release` frees everything allocated after."""
        return len(self.image)

    def release(self, mark):
        """Free every region allocated since ``mark`` (a stack discipline: scratch data of
        one layer; weights are allocated before and stay)."""
        self.image = self.image[:mark].copy()

    def read(self, addr, nbytes):
        self.bytes_from_device += nbytes
        return self.image[addr:addr + nbytes].copy()

    # ---- calls --------------------------------------------------------------------------

    def call(self, name, builder):
        """Run the program of ``builder`` (:class:`sw.compiler.Builder`) as one call."""
        prog = np.frombuffer(builder.finish(), np.uint8)
        prog_addr = self.alloc(len(prog))
        self.image[prog_addr:prog_addr + len(prog)] = prog        # the program is data too
        self.bytes_to_device += len(prog)
        n = len(prog) // isa.INSN_BYTES
        macs = sum(g.macs for g in builder.gemms)
        if self.progress:
            self.progress({"event": "start", "name": name, "macs": macs})
        t0 = time.perf_counter()
        gold = isa_model.run_program(self.cfg, self.image, prog_addr, n, check_deps=False)
        if gold.error != isa.Error.NONE:
            raise DeviceError(f"{name}: the golden model stopped with {gold.error.name}")
        self.golden_read_bytes += gold.dma_read_bytes
        self.golden_write_bytes += gold.dma_write_bytes
        counters = None
        if self.backend == "golden":
            self.image = gold.mem
        else:
            from sim.system import run_system
            rtl = run_system(self.cfg, self.image, prog_addr, n, self.backend,
                             mem_latency=self.mem_latency)
            if rtl.timed_out or not rtl.done:
                raise DeviceError(f"{name}: the accelerator stopped with status "
                                  f"{rtl.status:#x} ({rtl.error.name})")
            counters = rtl.counters
            if not np.array_equal(rtl.image, gold.mem):
                self.bit_exact = False
            self.image = rtl.image
        wall = time.perf_counter() - t0
        self.sim_wall_s += wall
        stats = CallStats(name=name, macs=macs, counters=counters, wall_s=wall,
                          cycles=counters["cycles"] if counters else None)
        self.calls.append(stats)
        if self.progress:
            self.progress({"event": "end", "name": name, "macs": macs,
                           "cycles": stats.cycles, "wall_s": wall})
        return stats

    # ---- totals -------------------------------------------------------------------------

    @property
    def host_round_trips(self):
        return len(self.calls)

    def totals(self):
        """Sums over every call: cycles, MACs, DMA bytes, stalls (None on golden)."""
        out = {"macs": sum(c.macs for c in self.calls)}
        if self.backend == "golden":
            out.update({k: None for k in ("cycles", "array_cycles", "dma_read_bytes",
                                          "dma_write_bytes")})
            return out
        for key in ("cycles", "array_cycles", "dma_read_bytes", "dma_write_bytes",
                    "stall_weight", "stall_act", "stall_store", "stall_insn"):
            out[key] = sum(c.counters[key] for c in self.calls)
        return out

    def builder(self):
        return Builder(self.cfg)
