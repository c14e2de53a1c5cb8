# amaranth: UnusedElaboratable=no
"""The processing element on Amaranth's simulator, against a cycle model written here."""

import pytest
from amaranth.sim import Simulator

from serrano.hw.pe import PE


def run_pe(pe, stimulus):
    """Apply one dict of input values per cycle; return the outputs seen in each cycle."""
    seen = []

    async def tb(ctx):
        for values in stimulus:
            for name, value in values.items():
                ctx.set(getattr(pe, name), value)
            seen.append({"psum_out": ctx.get(pe.psum_out), "a_out": ctx.get(pe.a_out),
                         "w_out": ctx.get(pe.w_out.data)})
            await ctx.tick()

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return seen


def weight(row, bank, value, valid=1):
    return {"w_in": {"valid": valid, "row": row, "bank": bank, "data": value}}


@pytest.mark.parametrize("pipe", [0, 1])
def test_mac_pipeline_and_banks(rng, pipe):
    """psum_out(t+3+p) = psum_in(t+2+p) + a(t) * w[bank(t)], a_out(t+1) = a(t), where p is
    the multiplier's pipeline registers."""
    pe = PE(row=2, rows=4, mult_pipeline=pipe)
    stim = [weight(2, 0, -128) | {"a_in": 0}, weight(2, 1, 127) | {"a_in": 0}]
    n = 40
    a = rng.integers(-128, 128, n)
    a[:4] = [-128, 127, -128, 127]
    banks = rng.integers(0, 2, n)
    psum = rng.integers(-2**31, 2**31, n)
    for t in range(n):
        stim.append({"a_in": int(a[t]), "a_bank_in": int(banks[t]), "psum_in": int(psum[t]),
                     "w_in": {"valid": 0, "row": 0, "bank": 0, "data": 0}})
    stim += [{"a_in": 0, "psum_in": 0}] * 5
    seen = run_pe(pe, stim)
    w = {0: -128, 1: 127}
    for t in range(n):
        cyc = t + 2                           # index in stim/seen of a[t]
        late = t + 2 + pipe                   # the psum_in added to a[t]'s product
        expect = (int(psum[late]) if late < n else 0) + int(a[t]) * w[int(banks[t])]
        expect = (expect + 2**31) % 2**32 - 2**31
        assert seen[cyc + 3 + pipe]["psum_out"] == expect, t
        assert seen[cyc + 1]["a_out"] == a[t]


def test_weight_latch_only_on_own_row_tag():
    pe = PE(row=1, rows=4)
    stim = [weight(1, 0, 5), weight(0, 0, 99), weight(2, 0, 98), weight(1, 0, 77, valid=0),
            {"a_in": 3, "a_bank_in": 0, "w_in": {"valid": 0, "row": 0, "bank": 0, "data": 0}},
            {"a_in": 0}, {"a_in": 0}, {"a_in": 0}, {"a_in": 0}]
    seen = run_pe(pe, stim)
    assert seen[7]["psum_out"] == 15        # only the write tagged row 1 and valid landed
    assert seen[1]["w_out"] == 5            # weights pass down one cycle later


def test_write_visible_next_cycle_and_other_bank_undisturbed():
    """A write lands at the end of its cycle: the same cycle still multiplies the old
    weight; a write into bank 1 never changes results that use bank 0."""
    pe = PE(row=0, rows=2)
    idle_w = {"valid": 0, "row": 0, "bank": 0, "data": 0}
    stim = [weight(0, 0, 2), weight(0, 1, 7),
            {"a_in": 1, "a_bank_in": 0} | weight(0, 0, 3),     # multiplies old w0 = 2
            {"a_in": 1, "a_bank_in": 0, "w_in": idle_w},       # multiplies new w0 = 3
            {"a_in": 1, "a_bank_in": 0} | weight(0, 1, -5),    # bank 0 unaffected: 3
            {"a_in": 1, "a_bank_in": 1, "w_in": idle_w},       # bank 1 now -5
            {"a_in": 0}, {"a_in": 0}, {"a_in": 0}, {"a_in": 0}]
    seen = run_pe(pe, stim)
    assert [seen[t + 3]["psum_out"] for t in range(2, 6)] == [2, 3, 3, -5]


@pytest.mark.parametrize("row, rows, message", [
    (0, 0, "rows must be a positive integer, not 0"),
    (4, 4, "row must be an integer in range(4), not 4"),
    (-1, 4, "row must be an integer in range(4), not -1"),
])
def test_bad_arguments(row, rows, message):
    with pytest.raises((TypeError, ValueError), match=message.replace("(", r"\(").replace(")", r"\)")):
        PE(row, rows)
