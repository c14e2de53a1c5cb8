"""cocotb tests of the DMA engines (``sim.tb_tops.DMATop``) against cocotbext-axi's AxiRam.

Every AXI channel of the RAM gets a random pause generator, the command and data streams
get random idle cycles and back-pressure. The testbench checks the handshake rules on
what the DUT drives (a VALID stays up until READY, with its payload unchanged), records
every AR/AW burst and every beat, and hands them back; data and bursts are compared with
``sw.dma_model`` by ``tests/test_dma.py``.

Signals are driven at falling edges; a handshake happens at the next rising edge iff VALID
and READY are both high once the falling edge's writes have settled. Monitors therefore
sample in the ReadOnly phase after the falling edge; drivers read only READY or VALID
signals that do not depend on what they themselves drive in that cycle.
"""

import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiRam

from serrano.sim.tb.common import CLOCK_NS, load_case, save_result, start, watchdog_ns

PAUSE_PROBABILITY = 0.3      # each AXI channel of the RAM stalls in 30 % of cycles
IDLE_PROBABILITY = 0.25      # the command / data sources idle, the data sink stalls


def _pauses(rng, p):
    while True:
        yield rng.random() < p


def _make_ram(dut, case, rng):
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi_"), dut.clk, dut.rst, size=case["mem_size"])
    ram.write(0, bytes.fromhex(case["mem"]))
    for channel in (ram.read_if.ar_channel, ram.read_if.r_channel,
                    ram.write_if.aw_channel, ram.write_if.w_channel,
                    ram.write_if.b_channel):
        channel.set_pause_generator(_pauses(random.Random(rng.random()), PAUSE_PROBABILITY))
    return ram


def _idle_inputs(dut, case):
    dut.base.value = case["base"]
    dut.limit.value = case["limit"]
    for name in ("rd_cmd__valid", "wr_cmd__valid", "rd_data__ready", "wr_data__valid",
                 "rd_clear", "wr_clear"):
        getattr(dut, name).value = 0
    dut.rd_cmd__payload.value = 0
    dut.wr_cmd__payload.value = 0
    dut.wr_data__payload.value = 0
    # The RAM drives its outputs from its first transfer on; start them at 0, not X.
    for name in ("rid", "rdata", "rresp", "rlast", "rvalid", "bid", "bresp", "bvalid",
                 "arready", "awready", "wready"):
        getattr(dut, f"m_axi__{name}").value = 0


class _Held:
    """VALID once high stays high until READY, with the payload unchanged."""

    def __init__(self, name):
        self.name = name
        self.pending = None

    def step(self, valid, ready, payload):
        if self.pending is not None:
            assert valid, f"{self.name}: VALID withdrawn before READY"
            assert payload == self.pending, f"{self.name}: payload changed before READY"
        self.pending = payload if valid and not ready else None


async def _send(dut, valid, payload, ready, items, rng):
    """Present ``items`` one by one on a valid/ready input stream, with random idles."""
    for item in items:
        while rng.random() < IDLE_PROBABILITY:
            valid.value = 0
            await FallingEdge(dut.clk)
        valid.value = 1
        payload.value = item
        while True:
            taken = int(ready.value)
            await FallingEdge(dut.clk)
            if taken:
                break
    valid.value = 0


def _channel(dut, prefix, names):
    return tuple(int(getattr(dut, f"m_axi__{prefix}{n}").value) for n in names)


async def _monitor_addr(dut, kind, record, state):
    """Record each AR or AW burst at its handshake; check the channel every cycle."""
    held = _Held(kind.upper())
    while not state["done"]:
        await FallingEdge(dut.clk)
        await ReadOnly()
        valid = int(getattr(dut, f"m_axi__{kind}valid").value)
        ready = int(getattr(dut, f"m_axi__{kind}ready").value)
        addr, length, size, burst = _channel(dut, kind, ("addr", "len", "size", "burst"))
        held.step(valid, ready, (addr, length, size, burst))
        if valid and ready:
            record.append([addr, length + 1, size, burst])


@cocotb.test()
async def dma_read(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    _idle_inputs(dut, case)
    _make_ram(dut, case, rng)
    await start(dut)
    state = {"done": False}
    ars, beats = [], []
    cocotb.start_soon(_monitor_addr(dut, "ar", ars, state))
    cocotb.start_soon(_send(dut, dut.rd_cmd__valid, dut.rd_cmd__payload, dut.rd_cmd__ready,
                            case["commands"], random.Random(rng.random())))

    async def sink():
        held = _Held("data")
        sink_rng = random.Random(rng.random())
        while len(beats) < case["beats"] or int(dut.rd_busy.value):
            ready = sink_rng.random() >= IDLE_PROBABILITY
            dut.rd_data__ready.value = ready
            valid = int(dut.rd_data__valid.value)
            payload = int(dut.rd_data__payload.value) if valid else None
            held.step(valid, ready, payload)
            if valid and ready:
                beats.append(f"{payload:x}")
            await FallingEdge(dut.clk)
            assert len(beats) <= case["beats"], "more beats than the commands move"

    await with_timeout(sink(), watchdog_ns(40 * case["beats"]), "ns")
    state["done"] = True
    for _ in range(4):
        await FallingEdge(dut.clk)
    save_result({"beats": beats, "ar": ars, "cycles": get_sim_time("ns") // CLOCK_NS,
                 "bytes_read": int(dut.rd_bytes.value),
                 "error_valid": int(dut.rd_error_valid.value)})


@cocotb.test()
async def dma_write(dut):
    case = load_case()
    rng = random.Random(case["seed"])
    bus_bytes = case["bus_bytes"]
    _idle_inputs(dut, case)
    ram = _make_ram(dut, case, rng)
    await start(dut)
    state = {"done": False}
    aws = []
    w_beats = [0]
    payload = bytes.fromhex(case["payload"])
    words = [int.from_bytes(payload[i:i + bus_bytes], "little")
             for i in range(0, len(payload), bus_bytes)]
    cocotb.start_soon(_monitor_addr(dut, "aw", aws, state))
    cmds = cocotb.start_soon(_send(dut, dut.wr_cmd__valid, dut.wr_cmd__payload,
                                   dut.wr_cmd__ready, case["commands"],
                                   random.Random(rng.random())))
    data = cocotb.start_soon(_send(dut, dut.wr_data__valid, dut.wr_data__payload,
                                   dut.wr_data__ready, words, random.Random(rng.random())))

    async def monitor_w():
        held = _Held("W")
        full = (1 << bus_bytes) - 1
        while not state["done"]:
            await FallingEdge(dut.clk)
            await ReadOnly()
            valid, ready = int(dut.m_axi__wvalid.value), int(dut.m_axi__wready.value)
            beat = (int(dut.m_axi__wdata.value), int(dut.m_axi__wstrb.value),
                    int(dut.m_axi__wlast.value))
            held.step(valid, ready, beat)
            if valid and ready:
                assert beat[1] == full, f"partial strobe {beat[1]:#x}"
                w_beats[0] += 1

    cocotb.start_soon(monitor_w())

    async def finish():
        await cmds
        await data
        while not int(dut.wr_idle.value):
            await FallingEdge(dut.clk)

    await with_timeout(finish(), watchdog_ns(40 * len(words)), "ns")
    state["done"] = True
    for _ in range(4):
        await FallingEdge(dut.clk)
    save_result({"mem": ram.read(0, case["mem_size"]).hex(), "aw": aws,
                 "cycles": get_sim_time("ns") // CLOCK_NS,
                 "w_beats": w_beats[0], "bytes_written": int(dut.wr_bytes.value),
                 "error_valid": int(dut.wr_error_valid.value)})
