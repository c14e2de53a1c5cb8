"""serrano's register map: one list, read by the hardware, the driver and README.

All registers are 32 bits wide on the AXI4-Lite port ``s_axil``, register ``i`` at byte
address ``4 * i``. 64-bit counters are two registers: read ``_lo`` first (that latches
``_hi``), then ``_hi``. Counters restart from zero at every ``start``.
"""

from .csr import Register, counter64, register_map

__all__ = ["MAGIC", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR", "STATUS_CODE_SHIFT",
           "CTRL_START", "CTRL_SOFT_RESET", "REGISTERS", "COUNTERS", "address", "REGISTER_MAP"]

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
    ("stall_act", "cycles exec waited for a load token (activations)"),
    ("stall_store", "cycles exec waited for a store token (accumulator space)"),
    ("stall_insn", "cycles exec had no instruction while the program ran"),
    ("instructions", "instructions retired"),
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
) + tuple(reg for name, doc in COUNTERS for reg in counter64(name, doc))

REGISTER_MAP = register_map(REGISTERS)


def address(name):
    """Byte address of register ``name``."""
    for entry in REGISTER_MAP:
        if entry.name == name:
            return entry.address
    raise KeyError(f"no register named {name!r}")
