"""The runtime: one accelerator with its device memory, and accelerator calls on it.

A :class:`Device` opens one backend (:mod:`sw.backends`: ``golden``, ``verilator``,
``icarus``, ``amaranth``) and keeps it for its whole life, as a host keeps a board:
weights written once stay in device memory across calls. The host allocates regions
(:meth:`Device.alloc`, one bump allocator with marks), writes and reads them (every byte
counted as a host<->device transfer), and runs programs: :meth:`Device.call` writes a
program built by :class:`sw.compiler.Builder` and runs it to ``END``, one host round
trip, through :mod:`hw.regs`'s register sequences.

Checking (``check``): with ``"every"`` (the default on an RTL backend) each call also
runs on a golden model of the same device memory and the two memories are compared byte
for byte (``bit_exact``). ``"none"`` runs the backend alone. The memories are equal
before a call (they were after the last one, and the host writes both), so after it they
can differ only where one of them wrote: when both backends say which pages they wrote
(``take_written_pages``: the fast simulator's memory model marks every page a write beat
changes), a call compares those pages; otherwise, and whenever the memories are not known
equal, everything allocated. :attr:`Device.bit_exact` adds one comparison of everything
allocated when it is read (and at :meth:`Device.close`) after unchecked pages.
The golden model runs in a thread of its own while the backend simulates (the fast
simulator releases Python's lock for its whole run), so on a machine with a second core
the check costs little more than the comparison; the watchdog of a checked call is set
from the golden model's work once that run has ended.

Errors are one line: a region outside device memory, a program at a misaligned address,
a launch on a busy device, an unknown backend (:class:`ValueError`); a program that
stops with an error code or never raises its interrupt (:class:`DeviceError`, after which
the device has been soft-reset and takes the next call).
"""

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from serrano.hw import isa, regs
from .backends import DEFAULT_MEM_BYTES, check_backend, check_region, open_backend
from .compiler import ALIGN, Builder, Memory

__all__ = ["CHECKS", "DeviceError", "CallStats", "Device"]

CHECKS = ("every", "none")


#: Cycles the backend simulates at a time while the golden model's run of the same call
#: has not ended (then the watchdog is known and the backend runs on to it).
WAIT_CHUNK = 1 << 20


def _runs(pages):
    """Runs of consecutive page indices in ascending ``pages``: ``(first, end)`` pairs."""
    if len(pages) == 0:
        return []
    cut = np.flatnonzero(np.diff(pages) != 1) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(pages)]])
    return list(zip(pages[starts].tolist(), (pages[ends - 1] + 1).tolist()))


class _Shadow(threading.Thread):
    """The golden model's run of one call (a register sequence on the golden backend),
    beside the backend's; ``outcome``, ``error`` and ``seconds`` once it has ended."""

    def __init__(self, device, sequence):
        super().__init__(name="serrano-golden-check", daemon=True)
        self.device, self.sequence = device, sequence
        self.outcome = self.error = None
        self.seconds = 0.0

    def run(self):
        t0 = time.perf_counter()
        try:
            self.outcome = self.device._sequence(self.device.golden, self.sequence)
        except BaseException as e:        # re-raised by the caller's thread
            self.error = e
        self.seconds = time.perf_counter() - t0


class DeviceError(RuntimeError):
    """The accelerator stopped with an error or never finished; the message says which."""

    def __init__(self, message, outcome=None):
        super().__init__(message)
        self.outcome = outcome


@dataclass
class CallStats:
    """One call: its program, its GEMM shapes, what it cost."""
    name: str
    macs: int
    cycles: int | None          # None on an untimed backend (golden)
    counters: dict | None
    wall_s: float               # the backend's run, launch to collected end (no golden wait)
    check_s: float = 0.0        # the golden check of the call
    program: bytes = field(default=b"", repr=False)
    gemms: list = field(default_factory=list)
    bit_exact: bool | None = None


class Device:
    """One accelerator on ``backend`` with ``mem_bytes`` of device memory.

    ``mem_latency`` is the memory's read latency in cycles (RTL backends); ``progress``
    a callable receiving ``{"event": "start"|"end", ...}`` per call; ``timeout_cycles``
    the watchdog of each call (default: from the golden model's work when checking,
    else from the memory in use); ``waveform`` a VCD file of every signal of the whole
    run (``verilator``; a slower, traced build). ``backend`` is a backend's name, or a
    backend already open (:func:`sw.backends.open_backend`), which the device uses with
    its memory zeroed and leaves open.
    """

    def __init__(self, cfg, backend="golden", *, mem_bytes=DEFAULT_MEM_BYTES,
                 mem_latency=30, check="every", progress=None, timeout_cycles=None,
                 waveform=None):
        self._owned = isinstance(backend, str)
        if self._owned:
            check_backend(backend)
        if check not in CHECKS:
            raise ValueError(f"unknown check {check!r}; choose one of: {', '.join(CHECKS)}")
        self.cfg = cfg
        self.backend_name = backend if self._owned else backend.name
        self.check = check if self.backend_name != "golden" else "none"
        self.mem_latency = mem_latency
        self.progress = progress
        self.timeout_cycles = timeout_cycles
        if self._owned:
            self.backend = open_backend(backend, cfg, mem_bytes=mem_bytes,
                                        mem_latency=mem_latency, waveform=waveform)
        else:
            # A backend already open (a simulator kept running across devices): its
            # memory is this device's, zeroed as a new one's, its own size and latency.
            if backend.cfg != cfg:
                raise ValueError(f"the backend runs preset {backend.cfg.name}, "
                                 f"not {cfg.name}")
            self.backend, mem_bytes = backend, backend.mem_bytes
            backend.write_mem(0, np.zeros(mem_bytes, np.uint8))
            if hasattr(backend, "page_bytes"):            # forget earlier writes
                backend.take_written_pages(backend.page_bytes)
        self.golden = (open_backend("golden", cfg, mem_bytes=mem_bytes)
                       if self.check == "every" else None)
        self.mem_bytes = mem_bytes
        self.heap = Memory(0, mem_bytes)
        self.calls = []
        self.bytes_to_device = 0
        self.bytes_from_device = 0
        self._bit_exact = True if self.golden else None
        self._equal = True          # the memories are known equal up to the last call
        self._whole = True          # ... and everything allocated was compared since
        self._paged = self.golden is not None and all(
            hasattr(b, "take_written_pages") for b in (self.backend, self.golden))
        if self._paged:
            self.golden.track_writes = True
            self._page = self.backend.page_bytes    # the granule the simulator marks
        self.sim_wall_s = 0.0
        self.check_wall_s = 0.0
        self.golden_read_bytes = 0
        self.golden_write_bytes = 0
        self.busy = False
        self._pending = None

    # ---- lifetime -------------------------------------------------------------------------

    def close(self):
        if self.backend is not None:
            self._compare_all()
        for b in (self.backend if self._owned else None, self.golden):
            if b is not None:
                b.close()
        self.backend = self.golden = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def bit_exact(self):
        """Whether every checked call left the same memory as the golden model's (None
        unchecked); after calls checked on their written pages, everything allocated is
        compared once more when this is read."""
        self._compare_all()
        return self._bit_exact

    def _compare_all(self):
        if self.golden is not None and self.backend is not None and not self._whole:
            n = self.heap.top
            self._whole = True
            if not np.array_equal(self.backend.view_mem(0, n), self.golden.view_mem(0, n)):
                self._bit_exact = self._equal = False

    def _resync(self):
        """Give the golden model the backend's memory (after a call the backend did not
        finish as the golden model did): the two are equal again."""
        n = self.heap.top
        self.golden.write_mem(0, self.backend.view_mem(0, n))
        if self._paged:
            for b in (self.backend, self.golden):
                b.take_written_pages(self._page)
        self._equal = True

    def _same_memory(self, n):
        """Whether the backend's and the golden model's memories agree on ``[0, n)`` after
        a call: on the pages either wrote, when the two were known equal before it."""
        if self._paged:
            pb = self._page
            pages = np.union1d(self.backend.take_written_pages(pb),
                               self.golden.take_written_pages(pb))
        if self._paged and self._equal:
            self._whole = False
            a, b = self.backend.view_mem(0, n), self.golden.view_mem(0, n)
            for lo, hi in _runs(pages):
                if not np.array_equal(a[lo * pb:hi * pb], b[lo * pb:hi * pb]):
                    return False
            return True
        self._whole = True
        return np.array_equal(self.backend.view_mem(0, n), self.golden.view_mem(0, n))

    @property
    def timed(self):
        return self.backend.timed

    # ---- memory ---------------------------------------------------------------------------

    def alloc(self, nbytes):
        """A region of ``nbytes``, aligned to :data:`sw.compiler.ALIGN`; its address.
        (Not zeroed: write it before a program reads it.)"""
        return self.heap.alloc(nbytes)

    def put(self, data):
        """Allocate a region for ``data`` and write it there (a host-to-device transfer)."""
        data = np.asarray(data).view(np.uint8).ravel()
        addr = self.alloc(len(data))
        self.write(addr, data)
        return addr

    def write(self, addr, data):
        """Write ``data`` at ``addr`` (counted in ``bytes_to_device``)."""
        data = np.asarray(data).view(np.uint8).ravel()
        check_region(self, addr, len(data))
        self._idle("write memory")
        self.backend.write_mem(addr, data)
        if self.golden:
            self.golden.write_mem(addr, data)
        self.bytes_to_device += len(data)

    def read(self, addr, nbytes):
        """A copy of ``nbytes`` at ``addr`` (counted in ``bytes_from_device``)."""
        check_region(self, addr, nbytes)
        self._idle("read memory")
        self.bytes_from_device += nbytes
        return self.backend.read_mem(addr, nbytes)

    def mark(self):
        """The current top of the allocator: :meth:`release` frees everything after it."""
        return self.heap.mark()

    def release(self, mark):
        """Free every region allocated since ``mark`` (scratch data of one layer; weights
        allocated before it stay)."""
        self.heap.release(mark)

    def snapshot(self):
        """The allocated device memory, uncounted (for :meth:`restore`)."""
        return self.backend.read_mem(0, self.heap.top)

    def restore(self, image):
        """Make the device memory start with ``image`` (allocated, uncounted): a state
        prepared on another device, as a benchmark's starting point."""
        image = np.asarray(image, np.uint8).ravel()
        check_region(self, 0, len(image))
        self.backend.write_mem(0, image)
        if self.golden:
            self.golden.write_mem(0, image)
        self.heap.top = max(self.heap.top, -(-len(image) // ALIGN) * ALIGN)

    # ---- calls ----------------------------------------------------------------------------

    def builder(self):
        return Builder(self.cfg)

    def _idle(self, what):
        if self.busy:
            raise ValueError(f"cannot {what}: the device is running a program "
                             f"(wait for it first)")

    def _sequence(self, backend, seq):
        return regs.drive(seq, write=backend.write_reg, read=backend.read_reg,
                          wait_irq=backend.wait_irq)

    def call(self, name, builder):
        """Run the program of ``builder`` (:class:`sw.compiler.Builder`) as one call."""
        prog = np.frombuffer(builder.finish(), np.uint8)
        prog_addr = self.put(prog)                    # the program is data too
        return self.run(prog_addr, len(prog) // isa.INSN_BYTES, name=name,
                        macs=sum(g.macs for g in builder.gemms), program=prog.tobytes(),
                        gemms=[(g.M, g.K, g.N) for g in builder.gemms])

    def run(self, prog_addr, n_insns, *, name="program", macs=0, program=b"", gemms=(),
            position=0):
        """Run ``n_insns`` instructions at ``prog_addr`` to ``END``; a :class:`CallStats`."""
        self.launch(prog_addr, n_insns, name=name, macs=macs, program=program, gemms=gemms,
                    position=position)
        return self.wait()

    def launch(self, prog_addr, n_insns, *, name="program", macs=0, program=b"", gemms=(),
               position=0):
        """Start a program and return at once (:meth:`wait` collects its end). The DMA
        window is everything allocated, ``[0, top)``; ``position`` is the ``position``
        register of its position-relative instructions (:mod:`hw.isa`)."""
        self._idle("start a program")
        unit = min(self.cfg.bus_bytes, isa.INSN_BYTES)
        if not isinstance(prog_addr, (int, np.integer)) or prog_addr % unit:
            raise ValueError(f"program address {prog_addr!r} is not a multiple of {unit} "
                             f"(the instruction fetch alignment)")
        if not isinstance(n_insns, (int, np.integer)) or n_insns < 1:
            raise ValueError(f"a program has at least one instruction, not {n_insns!r}")
        check_region(self, prog_addr, n_insns * isa.INSN_BYTES)
        if (not isinstance(position, (int, np.integer)) or isinstance(position, bool)
                or not 0 <= position < 1 << 32):
            raise ValueError(f"position must be an integer in [0, 2**32), not {position!r}")
        limit = self.heap.top
        if self.progress:
            self.progress({"event": "start", "name": name, "macs": macs})
        t0 = time.perf_counter()
        self._sequence(self.backend, regs.start(prog_addr, n_insns, 0, limit, position))
        # The golden model's run starts after the backend's register writes and ends
        # before its reads (:meth:`_wait_irq`), so that the backend's many short calls
        # never wait for Python's lock while the golden model holds it.
        shadow = None
        if self.golden:
            shadow = _Shadow(self, regs.run_program(prog_addr, n_insns, 0, limit, 1,
                                                    position))
            shadow.start()
        self.busy = True
        self._pending = dict(name=name, macs=macs, program=bytes(program), gemms=list(gemms),
                             shadow=shadow, settle_s=0.0, t0=t0, timeout=self.timeout_cycles,
                             limit=limit)

    def _wait_irq(self, p):
        """The backend's interrupt, within the call's watchdog (``p["timeout"]``, or one
        from the golden model's work, known when its run has ended)."""
        spent, shadow, timeout = 0, p["shadow"], p["timeout"]
        while shadow is not None and shadow.is_alive():
            step = WAIT_CHUNK if timeout is None else min(WAIT_CHUNK, timeout - spent)
            if step <= 0:
                return False
            if self.backend.wait_irq(step):
                self._settle(p)
                return True
            spent += step
        if timeout is None:
            timeout = p["timeout"] = self._watchdog(p["limit"])
        return timeout > spent and self.backend.wait_irq(timeout - spent)

    @staticmethod
    def _settle(p):
        """Wait for the golden model's run of the call ``p`` to end (its wait counted in
        ``p["settle_s"]``, not in the backend's time); the shadow, or None."""
        shadow = p["shadow"] if p else None
        if shadow is not None and shadow.is_alive():
            t0 = time.perf_counter()
            shadow.join()
            p["settle_s"] += time.perf_counter() - t0
        return shadow

    def _watchdog(self, limit):
        if self.golden and self.golden.last is not None:
            r = self.golden.last
            work = (r.dma_read_bytes + r.dma_write_bytes) // self.cfg.bus_bytes
            return 200_000 + 4 * (work + r.array_rows + 64 * r.instructions)
        return 1_000_000 + 8 * limit

    def wait(self):
        """Collect the end of the program :meth:`launch` started; a :class:`CallStats`.
        Raises :class:`DeviceError` if it stopped with an error or never ended (the
        device is then soft-reset, ready for the next call)."""
        if not self.busy:
            raise ValueError("no program is running (launch one first)")
        p = self._pending
        out = regs.drive(regs.collect(None), write=self.backend.write_reg,
                         read=self.backend.read_reg, wait_irq=lambda _: self._wait_irq(p))
        shadow = self._settle(p)
        # The backend's time: without the wait for a golden run slower than it.
        wall = time.perf_counter() - p["t0"] - p["settle_s"]
        self.busy = False
        self._pending = None
        self.sim_wall_s += wall
        name = p["name"]
        if out.timed_out or not out.done:
            self._sequence(self.backend, regs.soft_reset())
            if self.golden:
                # The hardware may have done part of the failed program that the golden
                # model did not: the shadow takes the device's memory, as it is now.
                self._resync()
            if out.timed_out:
                raise DeviceError(f"{name}: {isa.Error.WATCHDOG.name}: watchdog: no "
                                  f"interrupt within {p['timeout']:,} cycles (status "
                                  f"{out.status:#x}); the device was soft-reset", out)
            raise DeviceError(f"{name}: the accelerator stopped with "
                              f"{isa.Error(out.error_code).name} (status {out.status:#x})",
                              out)
        if shadow is not None and shadow.error is not None:
            raise shadow.error
        bit_exact = None
        check_s = None
        if shadow is not None:
            t0 = time.perf_counter()
            gold = shadow.outcome
            self.golden_read_bytes += gold.counters["dma_read_bytes"]
            self.golden_write_bytes += gold.counters["dma_write_bytes"]
            same = self._same_memory(p["limit"])
            bit_exact = bool(gold.status == out.status and same)
            self._equal = same
            self._bit_exact = self._bit_exact and bit_exact
            check_s = shadow.seconds + time.perf_counter() - t0
            self.check_wall_s += check_s
        elif not self.timed:
            self.golden_read_bytes += out.counters["dma_read_bytes"]
            self.golden_write_bytes += out.counters["dma_write_bytes"]
        counters = out.counters if self.timed else None
        stats = CallStats(name=name, macs=p["macs"], counters=counters, wall_s=wall,
                          cycles=counters["cycles"] if counters else None,
                          check_s=check_s or 0.0, program=p["program"],
                          gemms=p["gemms"], bit_exact=bit_exact)
        self.calls.append(stats)
        if self.progress:
            self.progress({"event": "end", "name": name, "macs": p["macs"],
                           "cycles": stats.cycles, "wall_s": wall})
        return stats

    def soft_reset(self):
        """Soft-reset the accelerator (stops a running program); returns the status."""
        status, _ = self._sequence(self.backend, regs.soft_reset())
        self.busy = False
        if self._settle(self._pending) is not None:   # the abandoned call's golden run
            self._resync()
        self._pending = None
        return status

    # ---- totals ---------------------------------------------------------------------------

    @property
    def host_round_trips(self):
        return len(self.calls)

    def totals(self):
        """Sums over every call: cycles, MACs, DMA bytes, stalls (None when untimed)."""
        out = {"macs": sum(c.macs for c in self.calls)}
        keys = ("cycles", "array_cycles", "dma_read_bytes", "dma_write_bytes",
                "stall_weight", "stall_act", "stall_store", "stall_insn", "vec_busy")
        if not self.timed:
            out.update({k: None for k in keys})
            return out
        for key in keys:
            out[key] = sum(c.counters[key] for c in self.calls)
        return out
