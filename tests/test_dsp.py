# amaranth: UnusedElaboratable=no
"""The registered multiplier of hw/dsp.py: its ECP5 form (a MULT18X18D instance,
simulated with sim/hdl/mult18x18d.v) and its behavioural form give the same products
with the same latency, under both simulators, against products computed in numpy.

The synthesized netlist's side (every PE's DSP block with its registers on) is checked
in tests/test_fpga.py on the tiny preset."""

import numpy as np
import pytest

from serrano.hw.dsp import ECP5, Multiplier, dsp_family
from serrano.sim import runner
from serrano.sim.tb_tops import DSP_TOP, dsp_pair_verilog

CYCLES = 300


def _signed(x, bits):
    x = np.asarray(x, np.int64) & ((1 << bits) - 1)
    return np.where(x >= 1 << (bits - 1), x - (1 << bits), x)


def _operands(rng, bits, n):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = rng.integers(lo, hi + 1, n)
    x[:6] = [lo, hi, lo, 0, -1, hi]             # the corners first: -2^(w-1) squared
    return x


def run_pair(simulator, rng, a_width, b_width, pipeline, generic_pipeline=None):
    """Drive random operands into both forms; return (a, b, seen) as numpy arrays."""
    a = _operands(rng, a_width, CYCLES)
    b = _operands(rng, b_width, CYCLES)
    b[:6] = [(1 << (b_width - 1)) * -1, -(1 << (b_width - 1)), (1 << (b_width - 1)) - 1,
             5, -1, (1 << (b_width - 1)) - 1]
    text = dsp_pair_verilog(a_width, b_width, pipeline=pipeline,
                            generic_pipeline=generic_pipeline)
    tag = f"{a_width}x{b_width}p{pipeline}{'' if generic_pipeline is None else generic_pipeline}"
    built = runner.build(simulator, DSP_TOP, text, tag=tag)
    case = {"a": [int(x) & ((1 << a_width) - 1) for x in a],
            "b": [int(x) & ((1 << b_width) - 1) for x in b]}
    seen, _ = runner.run(built, "serrano.sim.tb.dsp_tb", "products", case,
                         verilog_text=text, tag=tag)
    pw = a_width + b_width
    out = {}
    for name, values in seen.items():
        # Only the cycles before the first operands arrive may be unknown (X).
        unknown = [t for t, v in enumerate(values) if v is None]
        assert all(t < 3 for t in unknown), (name, unknown)
        out[name] = _signed([0 if v is None else v for v in values],
                            a_width if name.startswith("a_reg") else pw)
    return a, b, out


def products_match(a, b, p, latency):
    """p(t + latency) == a(t) * b(t) for every t whose product has left."""
    want = a.astype(np.int64) * b.astype(np.int64)
    return np.array_equal(p[latency:], want[:len(want) - latency])


@pytest.mark.parametrize("a_width, b_width", [(8, 8), (18, 18), (17, 16)])
@pytest.mark.parametrize("pipeline", [0, 1])
def test_forms_agree(simulator, rng, a_width, b_width, pipeline):
    """The two forms give the product of each cycle's operands 2 + pipeline cycles
    later (the same cycle in both), and a_reg one cycle later."""
    a, b, seen = run_pair(simulator, rng, a_width, b_width, pipeline)
    latency = Multiplier(a_width, b_width, pipeline=pipeline).latency
    assert latency == 2 + pipeline
    np.testing.assert_array_equal(seen["p_ecp5"][latency:], seen["p_generic"][latency:])
    assert products_match(a, b, seen["p_ecp5"], latency)
    assert products_match(a, b, seen["p_generic"], latency)
    for form in ("ecp5", "generic"):
        np.testing.assert_array_equal(seen[f"a_reg_{form}"][1:], a[:-1])


def test_a_latency_mismatch_is_caught(simulator, rng):
    """The comparison fails when the forms' registers differ (a DSP block without the
    pipeline register the behavioural form has): the check can fail."""
    a, b, seen = run_pair(simulator, rng, 8, 8, 0, generic_pipeline=1)
    assert products_match(a, b, seen["p_ecp5"], 2)
    assert products_match(a, b, seen["p_generic"], 3)
    assert not np.array_equal(seen["p_ecp5"][3:], seen["p_generic"][3:])


def test_form_selection():
    assert dsp_family(ECP5) == "ecp5"
    assert dsp_family(None) is None
    assert dsp_family(object()) is None
    with pytest.raises(ValueError, match=r"^pipeline must be 0 or 1, not 2$"):
        Multiplier(8, 8, pipeline=2)
    with pytest.raises(ValueError, match=r"^a_width must be a positive integer, not 0$"):
        Multiplier(0, 8)
