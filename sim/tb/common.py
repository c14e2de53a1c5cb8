"""Helpers shared by the cocotb test modules: case files, clock, reset, watchdog."""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

CLOCK_NS = 10


def load_case():
    """The stimulus the harness wrote for this run (``SERRANO_CASE``, a JSON file)."""
    with open(os.environ["SERRANO_CASE"]) as f:
        return json.load(f)


def save_result(result):
    """Hand the run's observations back to the harness (``SERRANO_RESULT``)."""
    with open(os.environ["SERRANO_RESULT"], "w") as f:
        json.dump(result, f)


async def start(dut, reset_cycles=2):
    """Start the clock, hold synchronous reset for ``reset_cycles``, and return at a
    falling edge, the point where the testbenches drive inputs and sample outputs."""
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    for _ in range(reset_cycles):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


def watchdog_ns(cycles):
    """A generous bound on simulated time for a run of ``cycles`` clock cycles."""
    return (2 * cycles + 1000) * CLOCK_NS


async def drive(sequence, *, write, read, wait_irq):
    """Run one of :mod:`hw.regs`'s register sequences with async callables (the cocotb
    form of :func:`hw.regs.drive`); return its result."""
    try:
        op = next(sequence)
        while True:
            if op[0] == "write":
                op = sequence.send(await write(op[1], op[2]))
            elif op[0] == "read":
                op = sequence.send(await read(op[1]))
            elif op[0] == "wait_irq":
                op = sequence.send(await wait_irq(op[1]))
            else:
                raise ValueError(f"unknown register operation {op!r}")
    except StopIteration as stop:
        return stop.value
