"""cocotb testbench of the whole accelerator, memory from cocotbext-axi's ``AxiRam``.

The harness (:mod:`sim.accel`) hands over a memory image, the program's address and
length, the DMA window, the register addresses and the pause patterns; this module
loads the image, programs the registers through ``AxiLiteMaster``, starts the program,
waits for the interrupt (with a watchdog), reads every counter, and returns the status,
the counters and the final memory image. A protocol checker watches the AXI4 port every
cycle: a VALID never drops before its READY, the payload stays stable while waiting,
and no burst crosses a 4 KiB boundary.
"""

import itertools
import random

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from sim.tb.common import load_case, save_result, start

CHANNELS = {
    "ar": ("arvalid", "arready", ("araddr", "arlen", "arsize", "arburst", "arid")),
    "aw": ("awvalid", "awready", ("awaddr", "awlen", "awsize", "awburst", "awid")),
    "w": ("wvalid", "wready", ("wdata", "wstrb", "wlast")),
}


async def protocol_checker(dut, errors, bus_bytes):
    """Every cycle: VALID held until READY with a stable payload; bursts within 4 KiB."""
    held = {}
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        for ch, (valid, ready, payload) in CHANNELS.items():
            v = int(getattr(dut, f"m_axi__{valid}").value)
            r = int(getattr(dut, f"m_axi__{ready}").value)
            if not v and ch not in held:
                continue
            values = [getattr(dut, f"m_axi__{name}").value for name in payload]
            if v and not all(x.is_resolvable for x in values):
                errors.append(f"{ch}: X or Z on the payload while VALID")
                continue
            p = tuple(int(x) if x.is_resolvable else None for x in values)
            if ch in held:
                if not v:
                    errors.append(f"{ch}: VALID dropped before READY")
                elif p != held[ch]:
                    errors.append(f"{ch}: payload changed while waiting for READY")
            if v and ch in ("ar", "aw"):
                addr, length = p[0], p[1] + 1
                if addr // 4096 != (addr + length * bus_bytes - 1) // 4096:
                    errors.append(f"{ch}: burst at {addr:#x} of {length} beats crosses 4 KiB")
            if v and not r:
                held[ch] = p
            else:
                held.pop(ch, None)
        if len(errors) > 20:
            return


def pauses(seed, density):
    rng = random.Random(seed)
    return itertools.cycle([int(rng.random() < density) for _ in range(97)])


@cocotb.test()
async def run_program(dut):
    case = load_case()
    bus_bytes = case["bus_bytes"]
    regs = case["regs"]
    await start(dut)
    image = bytes.fromhex(case["image"])
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=len(image))
    ram.write(0, image)
    host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil_"), dut.clk, dut.rst)
    if case.get("pause"):
        seed = case.get("seed", 0)
        for i, ch in enumerate((ram.write_if.aw_channel, ram.write_if.w_channel,
                                ram.write_if.b_channel, ram.read_if.ar_channel,
                                ram.read_if.r_channel)):
            ch.set_pause_generator(pauses(seed * 10 + i, case["pause"]))
    errors = []
    cocotb.start_soon(protocol_checker(dut, errors, bus_bytes))

    async def write(name, value):
        await host.write_dword(regs[name], value)

    async def read(name):
        return await host.read_dword(regs[name])

    magic = await read("magic")
    await write("base", case["base"])
    await write("limit", case["limit"])
    await write("prog_addr", case["prog_addr"])
    await write("prog_len", case["prog_len"])
    await write("irq_enable", 1)
    reset_status = None
    if case.get("soft_reset_after") is not None:
        # Start, let it run a while, soft-reset it mid-run, check it is idle again.
        await write("ctrl", 1)
        await ClockCycles(dut.clk, case["soft_reset_after"])
        await write("ctrl", 2)
        for _ in range(10_000):
            reset_status = await read("status")
            if not reset_status & 1:
                break
        await write("irq_status", 1)
    await write("ctrl", 1)
    cycles = 0
    limit = case["timeout_cycles"]
    while not int(dut.irq.value) and cycles < limit:
        await ClockCycles(dut.clk, 16)
        cycles += 16
    timed_out = not int(dut.irq.value)
    status = await read("status")
    dut._log.info("irq after %d cycles, status %#x", cycles, status)
    counters = {}
    for name in case["counters"]:
        lo = await read(f"{name}_lo")
        hi = await read(f"{name}_hi")
        counters[name] = lo | (hi << 32)
    await write("irq_status", 1)
    await ClockCycles(dut.clk, 4)
    irq_after_clear = int(dut.irq.value)
    save_result({
        "magic": magic, "status": status, "timed_out": timed_out, "counters": counters,
        "image": ram.read(0, len(image)).hex(), "protocol_errors": errors,
        "irq_after_clear": irq_after_clear, "reset_status": reset_status,
    })
    assert not errors, errors[:5]
