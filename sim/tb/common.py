"""Helpers shared by the cocotb test modules: case files, clock, reset, watchdog, and
the loop of a simulation kept running (:func:`serve`)."""

import json
import os
import socket
import traceback

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


async def serve(run_case):
    """The ``serve`` test of a testbench kept running by :class:`sim.runner.Session`:
    connect to its socket (``SERRANO_SERVE``), say this process's id, then answer each
    case (one JSON line; ``null`` or the socket's end stops) with
    ``{"ok": true, "result": await run_case(case)}``, or ``{"ok": false, "error": the
    traceback}`` if it raised. The simulator does not advance while a case is awaited."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(os.environ["SERRANO_SERVE"])
        with sock.makefile("rwb") as f:
            def send(obj):
                f.write(json.dumps(obj).encode() + b"\n")
                f.flush()
            send({"pid": os.getpid()})
            while True:
                line = f.readline()
                case = json.loads(line) if line else None
                if case is None:
                    return
                try:
                    answer = {"ok": True, "result": await run_case(case)}
                except Exception:                         # reported, not fatal here
                    answer = {"ok": False, "error": traceback.format_exc()}
                send(answer)
