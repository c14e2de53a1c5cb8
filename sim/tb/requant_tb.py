"""cocotb test of the requantizer (top ``serrano_requant``): streams groups of rows.

The case (written by ``tests/test_requant.py``) holds, per group, the packed ``bias``,
``mult`` and ``shift`` words, ``relu`` and the packed input rows; and two 0/1 patterns
indexed by the cycle (cycled when shorter than the run): ``valid`` says in which cycles
a new row may be offered on ``i`` (a gap otherwise), ``ready`` drives ``o__ready``.

Inputs are driven just after the falling edge; outputs are sampled in the read-only
phase after it, so ``i__ready`` (combinational in ``o__ready``) is seen settled. A row
offered on ``i`` stays offered until accepted, as the stream rules require. A group's
parameters change only once all of its rows have left. The testbench checks the stream
rules it can see (``o`` holds its row while stalled, no output without a row in flight,
nothing leaves after the last row) and returns the raw output words with the cycles of
every accept and delivery; values are compared with the golden model outside.
"""

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, with_timeout

from serrano.sim.tb.common import load_case, save_result, start, watchdog_ns


async def _stream(dut, case):
    valid_pat, ready_pat = case["valid"], case["ready"]
    max_cycles = case["max_cycles"]
    groups_out = []
    cycle = 0
    in_flight = 0
    stalled_word = None

    async def step(offer, payload):
        """Drive one cycle; return (accepted, delivered word or None)."""
        nonlocal cycle, in_flight, stalled_word
        if cycle >= max_cycles:
            raise AssertionError(f"watchdog: still running after {max_cycles} cycles")
        dut.i__valid.value = int(offer)
        if offer:
            dut.i__payload.value = payload
        o_ready = ready_pat[cycle % len(ready_pat)]
        dut.o__ready.value = o_ready
        await ReadOnly()
        i_ready = int(dut.i__ready.value)
        o_valid = int(dut.o__valid.value)
        word = int(dut.o__payload.value) if o_valid else None
        if stalled_word is not None:
            assert o_valid and word == stalled_word, \
                f"cycle {cycle}: o changed while stalled ({stalled_word:#x} -> {word})"
        stalled_word = word if o_valid and not o_ready else None
        if o_valid:
            assert in_flight > 0, f"cycle {cycle}: o.valid with no row in flight"
        accepted = bool(offer and i_ready)
        delivered = word if o_valid and o_ready else None
        in_flight += int(accepted) - int(delivered is not None)
        await FallingEdge(dut.clk)
        cycle += 1
        return accepted, delivered

    for group in case["groups"]:
        dut.bias.value = group["bias"]
        dut.mult.value = group["mult"]
        dut.shift.value = group["shift"]
        dut.relu.value = group["relu"]
        dut.wide.value = group["wide"]
        rows = group["rows"]
        sent = 0
        offering = False
        out, accept_at, deliver_at = [], [], []
        while len(out) < len(rows):
            if not offering and sent < len(rows) and valid_pat[cycle % len(valid_pat)]:
                offering = True
            t = cycle
            accepted, delivered = await step(offering, rows[sent] if offering else 0)
            if accepted:
                accept_at.append(t)
                sent += 1
                offering = False
            if delivered is not None:
                out.append(delivered)
                deliver_at.append(t)
        groups_out.append({"out": out, "accept_at": accept_at, "deliver_at": deliver_at})

    # Drained: nothing more may leave, whatever o.ready does.
    for _ in range(8):
        _, delivered = await step(False, 0)
        assert delivered is None, "a row left after the last one was delivered"
    return groups_out


@cocotb.test()
async def stream_rows(dut):
    case = load_case()
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await start(dut)
    groups = await with_timeout(_stream(dut, case), watchdog_ns(case["max_cycles"]), "ns")
    save_result({"groups": groups})
