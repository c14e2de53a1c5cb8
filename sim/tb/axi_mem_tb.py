"""cocotb tests of ``serrano_axi_mem`` (sim/hdl/axi_mem.v), the Verilog AXI4 memory model.

The memory's contents come in and go out through files (``+mem_init``/``+mem_dump``
plusargs, set by the harness); this module only drives the bus and reports what it saw.
Every expectation (data, responses, final image) is computed by the pytest side.

* ``traffic`` runs rounds of concurrent reads and writes from cocotbext-axi's
  :class:`AxiMaster`, with random pause generators on all five channels, and hands back
  every read's data and response, every write's response and the beat counters; at the
  end it raises ``dump`` for one cycle.
* ``timing`` measures, cycle by cycle on the bus, the read latency and throughput of
  back-to-back bursts, the write latency and the write throughput.
* ``raw`` drives the five channels directly (no master), one burst at a time: W data
  before its AW, sparse strobes, IDs, and any AxSIZE/AxBURST (an illegal one must end
  the simulation); it also hands back each burst's handshake cycles.
"""

import random

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiMaster
from cocotbext.axi.axi_channels import (AxiARBus, AxiARSource, AxiAWBus, AxiAWSource,
                                        AxiBBus, AxiBSink, AxiRBus, AxiRSink, AxiWBus,
                                        AxiWSource)

from serrano.sim.tb.common import load_case, save_result, start, watchdog_ns

PREFIX = "s_axi"


def _set_controls(dut, case):
    dut.read_latency.value = case["read_latency"]
    dut.write_latency.value = case["write_latency"]
    dut.err_lo.value = case.get("err_lo", 0)
    dut.err_hi.value = case.get("err_hi", 0)
    dut.dump.value = 0
    dut.dump_len.value = 0
    dut.load.value = 0


def _pauses(rnd, probability):
    while True:
        yield rnd.random() < probability


async def _cycles(dut, n):
    for _ in range(n):
        await FallingEdge(dut.clk)


async def _dump(dut):
    """Raise ``dump`` for exactly one rising edge."""
    await FallingEdge(dut.clk)
    dut.dump.value = 1
    await FallingEdge(dut.clk)
    dut.dump.value = 0
    await FallingEdge(dut.clk)


def _counters(dut):
    return {"reads_beats": int(dut.reads_beats.value),
            "write_beats": int(dut.write_beats.value)}


# ----------------------------------------------------------------------------- traffic

async def _traffic(dut, case):
    master = AxiMaster(AxiBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)
    rnd = random.Random(case["seed"])
    channels = {"aw": master.write_if.aw_channel, "w": master.write_if.w_channel,
                "b": master.write_if.b_channel, "ar": master.read_if.ar_channel,
                "r": master.read_if.r_channel}
    for name, probability in case["pause"].items():
        if probability:
            channels[name].set_pause_generator(_pauses(rnd, probability))
    _set_controls(dut, case)
    await start(dut)

    rounds = []
    for ops in case["rounds"]:
        tasks = []
        for op in ops:
            if op["kind"] == "read":
                tasks.append(cocotb.start_soon(master.read(op["addr"], op["length"])))
            else:
                tasks.append(cocotb.start_soon(
                    master.write(op["addr"], bytes.fromhex(op["data"]))))
        answers = []
        for op, task in zip(ops, tasks):
            resp = await task
            answers.append({"resp": int(resp.resp),
                            "data": resp.data.hex() if op["kind"] == "read" else None})
        rounds.append(answers)
    for channel in channels.values():
        channel.clear_pause_generator()
    if case.get("dump"):
        await _dump(dut)
    else:
        await _cycles(dut, 2)
    return {"rounds": rounds, **_counters(dut)}


@cocotb.test()
async def traffic(dut):
    case = load_case()
    result = await with_timeout(_traffic(dut, case), watchdog_ns(case["max_cycles"]), "ns")
    save_result(result)


# ----------------------------------------------------------------------------- timing

class BusLog:
    """Per-cycle handshakes, sampled mid-cycle (at the falling edge), numbered by cycle."""

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        self.ar, self.r, self.aw, self.w, self.w_last, self.b_valid = [], [], [], [], [], []
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        while True:
            await FallingEdge(d.clk)
            self.cycle += 1
            if int(d.s_axi_arvalid.value) and int(d.s_axi_arready.value):
                self.ar.append(self.cycle)
            if int(d.s_axi_rvalid.value) and int(d.s_axi_rready.value):
                self.r.append(self.cycle)
            if int(d.s_axi_awvalid.value) and int(d.s_axi_awready.value):
                self.aw.append(self.cycle)
            if int(d.s_axi_wvalid.value) and int(d.s_axi_wready.value):
                self.w.append(self.cycle)
                if int(d.s_axi_wlast.value):
                    self.w_last.append(self.cycle)
            if int(d.s_axi_bvalid.value):
                self.b_valid.append(self.cycle)

    def clear(self):
        for log in (self.ar, self.r, self.aw, self.w, self.w_last, self.b_valid):
            log.clear()

    def snapshot(self):
        return {"ar": list(self.ar), "r": list(self.r), "aw": list(self.aw),
                "w": list(self.w), "w_last": list(self.w_last), "b_valid": list(self.b_valid)}


async def _timing(dut, case):
    master = AxiMaster(AxiBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)
    _set_controls(dut, case)
    await start(dut)
    log = BusLog(dut)
    await _cycles(dut, 2)
    bytes_per_burst = case["beats"] * case["data_bytes"]
    out = {}

    # Reads: n bursts issued back to back.
    tasks = [cocotb.start_soon(master.read(case["base"] + i * bytes_per_burst,
                                           bytes_per_burst))
             for i in range(case["n_bursts"])]
    reads = [await task for task in tasks]
    out["read_data"] = b"".join(r.data for r in reads).hex()
    out["reads"] = log.snapshot()
    await _cycles(dut, 4)
    log.clear()

    # Many one-beat reads back to back: how many ARs the model holds.
    tasks = [cocotb.start_soon(master.read(case["base"] + i * case["data_bytes"],
                                           case["data_bytes"]))
             for i in range(case["n_short"])]
    for task in tasks:
        await task
    out["short_reads"] = log.snapshot()
    await _cycles(dut, 4)
    log.clear()

    # One write on its own: its B latency.
    await master.write(case["base"], bytes(range(256))[:case["data_bytes"]] * 4)
    await _cycles(dut, 4)
    out["single_write"] = log.snapshot()
    log.clear()

    # Writes: n bursts back to back.
    payload = bytes((i * 7 + 3) & 0xFF for i in range(bytes_per_burst))
    tasks = [cocotb.start_soon(master.write(case["base"] + i * bytes_per_burst, payload))
             for i in range(case["n_bursts"])]
    for task in tasks:
        await task
    await _cycles(dut, 4)
    out["writes"] = log.snapshot()
    return {**out, **_counters(dut)}


@cocotb.test()
async def timing(dut):
    case = load_case()
    result = await with_timeout(_timing(dut, case), watchdog_ns(case["max_cycles"]), "ns")
    save_result(result)


# ----------------------------------------------------------------------------- raw

class RawPort:
    """The five channels as independent cocotbext-axi sources and sinks."""

    def __init__(self, dut):
        self.aw = AxiAWSource(AxiAWBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)
        self.w = AxiWSource(AxiWBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)
        self.b = AxiBSink(AxiBBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)
        self.ar = AxiARSource(AxiARBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)
        self.r = AxiRSink(AxiRBus.from_prefix(dut, PREFIX), dut.clk, dut.rst)


async def _raw_write(dut, port, step):
    aw = port.aw._transaction_obj(awid=step["id"], awaddr=step["addr"],
                                  awlen=step.get("awlen", len(step["beats"]) - 1),
                                  awsize=step["size"],
                                  awburst=step.get("burst", 1))
    beats = [port.w._transaction_obj(wdata=int(data, 16), wstrb=strb,
                                     wlast=int(i == len(step["beats"]) - 1))
             for i, (data, strb) in enumerate(step["beats"])]
    if step["w_first"]:
        for beat in beats:
            await port.w.send(beat)
        await _cycles(dut, step["gap"])
        await port.aw.send(aw)
    else:
        await port.aw.send(aw)
        await _cycles(dut, step["gap"])
        for beat in beats:
            await port.w.send(beat)
    b = await port.b.recv()
    return {"id": int(b.bid), "resp": int(b.bresp)}


async def _raw_read(port, step):
    await port.ar.send(port.ar._transaction_obj(
        arid=step["id"], araddr=step["addr"], arlen=step["len"], arsize=step["size"],
        arburst=step.get("burst", 1)))
    beats = []
    while True:
        r = await port.r.recv()
        beats.append({"id": int(r.rid), "data": f"{int(r.rdata):x}", "resp": int(r.rresp),
                      "last": int(r.rlast)})
        if int(r.rlast) or len(beats) > 256:
            return beats


async def _raw(dut, case):
    port = RawPort(dut)
    _set_controls(dut, case)
    await start(dut)
    log = BusLog(dut)
    await _cycles(dut, 2)
    out, logs = [], []
    for step in case["steps"]:
        log.clear()
        if step["kind"] == "write":
            out.append(await _raw_write(dut, port, step))
        else:
            out.append(await _raw_read(port, step))
        await _cycles(dut, 1)
        logs.append(log.snapshot())
    await _cycles(dut, 2)
    return {"steps": out, "logs": logs, **_counters(dut)}


@cocotb.test()
async def raw(dut):
    case = load_case()
    result = await with_timeout(_raw(dut, case), watchdog_ns(case["max_cycles"]), "ns")
    save_result(result)


@cocotb.test()
async def dump_without_path(dut):
    """``dump`` high with no ``+mem_dump``: the model must end the simulation."""
    case = load_case()
    _set_controls(dut, case)
    await start(dut)
    await _dump(dut)
    await RisingEdge(dut.clk)
    save_result({"survived": True})
