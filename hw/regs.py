"""serrano's register map: one list, read by the hardware, the driver and README.

All registers are 32 bits wide on the AXI4-Lite port ``s_axil``, register ``i`` at byte
address ``4 * i``. 64-bit counters are two registers: read ``_lo`` first (that latches
``_hi``), then ``_hi``. Counters restart from zero at every ``start``.
"""

from .csr import Register, counter64, register_map

__all__ = ["MAGIC", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "STATUS_CODE_SHIFT",
           "Outcome", "program_registers", "read_counters", "start", "collect", "run_program",
           "soft_reset", "drive", "CTRL_START", "CTRL_SOFT_RESET", "REGISTERS", "COUNTERS",
           "address", "REGISTER_MAP"]

MAGIC = 0x53524E4F                      # "SRNO"

CTRL_START = 1 << 0
CTRL_SOFT_RESET = 1 << 1

STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
STATUS_CODE_SHIFT = 8                   # bits 11:8: hw.isa.Error code

COUNTERS = (
    ("cycles", "clock cycles from start to done or error"),
    ("array_cycles", "cycles in which an activation row entered the array (R*C MACs each)"),
    ("dma_read_bytes", "bytes read over AXI4 (instructions, activations, parameters, weights)"),
    ("dma_write_bytes", "bytes written over AXI4"),
    ("stall_weight", "cycles exec waited for weights"),
    ("stall_act", "cycles exec waited for a load or vector token (activations)"),
    ("stall_store", "cycles exec waited for a store token (accumulator space)"),
    ("stall_insn", "cycles exec had no instruction while the program ran"),
    ("instructions", "instructions retired"),
    ("vec_busy", "cycles the vector unit worked on a VEC (its tokens taken)"),
    ("vec_insns", "VEC instructions the vector unit finished"),
)

REGISTERS = (
    Register("magic", access="ro", doc='constant 0x53524E4F ("SRNO")'),
    Register("geometry", access="ro", doc="bits 7:0 rows R, 15:8 cols C, 23:16 bus bytes"),
    Register("act_rows", access="ro", doc="activation buffer rows"),
    Register("acc_rows", access="ro", doc="accumulator rows (both halves)"),
    Register("param_slots", access="ro", doc="requantization parameter sets"),
    Register("ctrl", width=2, access="w1s", doc="bit 0 start, bit 1 soft reset"),
    Register("status", width=12, access="ro",
             doc="bit 0 busy, bit 1 done, bit 2 error, bits 11:8 error code"),
    Register("irq_enable", width=1, access="rw", doc="raise irq when the program ends"),
    Register("irq_status", width=1, access="w1c",
             doc="set when the program ends (done or error); write 1 to clear"),
    Register("prog_addr", access="rw", doc="byte address of the first instruction"),
    Register("prog_len", access="rw", doc="program length in instructions"),
    Register("base", access="rw", doc="lowest byte address the DMA may touch"),
    Register("limit", access="rw", init=0, doc="first byte address the DMA may not touch"),
) + tuple(reg for name, doc in COUNTERS for reg in counter64(name, doc)) + (
    Register("position", access="rw",
             doc="the position P of position-relative instructions (hw.isa), latched at start"),
)

REGISTER_MAP = register_map(REGISTERS)


def address(name):
    """Byte address of register ``name``."""
    for entry in REGISTER_MAP:
        if entry.name == name:
            return entry.address
    raise KeyError(f"no register named {name!r}")


# ---- the host's register sequences, written once ------------------------------------
#
# Each sequence is a generator that yields the register operations a host performs and
# receives their results ("sans-I/O"), so the one text below drives every backend: the
# driver's backends call it synchronously (:func:`drive`), the cocotb testbenches
# asynchronously (:func:`sim.tb.common.drive`), the Amaranth harness cycle by cycle.
# The operations:
#
#   ("write", name, value)     write register ``name``; receives None
#   ("read", name)             read register ``name``; receives its 32-bit value
#   ("wait_irq", cycles)       wait until ``irq`` is high, at most ``cycles`` clocks;
#                              receives True if it came, False on the time-out
#
# A sequence's return value is its result.

from dataclasses import dataclass as _dataclass


@_dataclass(frozen=True)
class Outcome:
    """What :func:`run_program` saw: the ``status`` register after the end, every counter
    of :data:`COUNTERS` (64-bit), and whether the interrupt never came (``timed_out``)."""
    status: int
    counters: dict
    timed_out: bool

    @property
    def busy(self):
        return bool(self.status & STATUS_BUSY)

    @property
    def done(self):
        return bool(self.status & STATUS_DONE)

    @property
    def error_code(self):
        return (self.status >> STATUS_CODE_SHIFT) & 0xF


def program_registers(prog_addr, prog_len, base, limit, position=0):
    """Write the program's address and length, the DMA window ``[base, limit)``, the
    ``position`` of its position-relative instructions and enable the interrupt (a hard
    reset clears them all)."""
    for name, value in (("base", base), ("limit", limit), ("prog_addr", prog_addr),
                        ("prog_len", prog_len), ("position", position), ("irq_enable", 1)):
        yield ("write", name, value)


def read_counters():
    """Every 64-bit counter: ``_lo`` first (it latches ``_hi``), then ``_hi``."""
    counters = {}
    for name, _doc in COUNTERS:
        lo = yield ("read", f"{name}_lo")
        hi = yield ("read", f"{name}_hi")
        counters[name] = lo | (hi << 32)
    return counters


def start(prog_addr, prog_len, base, limit, position=0):
    """Program the registers and start the program."""
    yield from program_registers(prog_addr, prog_len, base, limit, position)
    yield ("write", "ctrl", CTRL_START)


def collect(timeout_cycles):
    """Wait for the interrupt (at most ``timeout_cycles``), read the status and every
    counter, clear the interrupt. Returns an :class:`Outcome`. After a time-out the
    program may still run: the caller soft-resets (:func:`soft_reset`)."""
    came = yield ("wait_irq", timeout_cycles)
    status = yield ("read", "status")
    counters = yield from read_counters()
    yield ("write", "irq_status", 1)
    return Outcome(status=status, counters=counters, timed_out=not came)


def run_program(prog_addr, prog_len, base, limit, timeout_cycles, position=0):
    """Launch one program and collect its end (:func:`start`, then :func:`collect`):
    the one sequence every host runs. Returns an :class:`Outcome`."""
    yield from start(prog_addr, prog_len, base, limit, position)
    return (yield from collect(timeout_cycles))


def soft_reset(polls=10_000):
    """Request a soft reset and poll ``status`` until not busy (at most ``polls`` reads);
    clear the interrupt. Returns ``(first status read that is not busy, or the last one
    read, status read after it)``."""
    yield ("write", "ctrl", CTRL_SOFT_RESET)
    status = None
    for _ in range(polls):
        status = yield ("read", "status")
        if not status & STATUS_BUSY:
            break
    settled = yield ("read", "status")
    yield ("write", "irq_status", 1)
    return status, settled


def drive(sequence, *, write, read, wait_irq):
    """Run ``sequence`` synchronously with the three callables (``write(name, value)``,
    ``read(name) -> int``, ``wait_irq(cycles) -> bool``); return its result."""
    try:
        op = next(sequence)
        while True:
            if op[0] == "write":
                op = sequence.send(write(op[1], op[2]))
            elif op[0] == "read":
                op = sequence.send(read(op[1]))
            elif op[0] == "wait_irq":
                op = sequence.send(wait_irq(op[1]))
            else:
                raise ValueError(f"unknown register operation {op!r}")
    except StopIteration as stop:
        return stop.value
