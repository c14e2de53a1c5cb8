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


def run_pair(simulator, rng, a_width, b_width, pipeline, generic_pipeline=None,
             enable=False):
    """Drive random operands (and, with ``enable``, a random register enable) into both
    forms; return (a, b, en, seen) as numpy arrays."""
    a = _operands(rng, a_width, CYCLES)
    b = _operands(rng, b_width, CYCLES)
    b[:6] = [(1 << (b_width - 1)) * -1, -(1 << (b_width - 1)), (1 << (b_width - 1)) - 1,
             5, -1, (1 << (b_width - 1)) - 1]
    en = (rng.random(CYCLES) < 0.7).astype(int) if enable else np.ones(CYCLES, int)
    en[:3] = 1                                  # the registers fill before any stall
    text = dsp_pair_verilog(a_width, b_width, pipeline=pipeline,
                            generic_pipeline=generic_pipeline, enable=enable)
    tag = (f"{a_width}x{b_width}p{pipeline}{'' if generic_pipeline is None else generic_pipeline}"
           f"{'e' if enable else ''}")
    built = runner.build(simulator, DSP_TOP, text, tag=tag)
    case = {"a": [int(x) & ((1 << a_width) - 1) for x in a],
            "b": [int(x) & ((1 << b_width) - 1) for x in b], "en": [int(e) for e in en]}
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
    return a, b, en, out


def reference(a, b, en, pipeline):
    """What the registers hold, cycle by cycle, from the contract in hw/dsp.py: the input
    registers, [the pipeline register,] the output register, each loading at a clock
    edge where ``en`` is high. Returns (p, a_reg, known): ``known`` marks the cycles
    whose product comes from operands that were driven."""
    a_q = b_q = pipe = out = None
    p, a_reg, known = [], [], []
    for t in range(len(a)):
        p.append(0 if out is None else out)
        a_reg.append(0 if a_q is None else a_q)
        known.append(out is not None)
        if en[t]:
            product = None if a_q is None else int(a_q) * int(b_q)
            if pipeline:
                out, pipe = pipe, product
            else:
                out = product
            a_q, b_q = a[t], b[t]
    return np.array(p), np.array(a_reg), np.array(known)


@pytest.mark.parametrize("a_width, b_width", [(8, 8), (18, 18), (17, 16)])
@pytest.mark.parametrize("pipeline", [0, 1])
def test_forms_agree(simulator, rng, a_width, b_width, pipeline):
    """The two forms give the product of each cycle's operands 2 + pipeline cycles
    later (the same cycle in both), and a_reg one cycle later."""
    a, b, en, seen = run_pair(simulator, rng, a_width, b_width, pipeline)
    latency = Multiplier(a_width, b_width, pipeline=pipeline).latency
    assert latency == 2 + pipeline
    want = a.astype(np.int64) * b.astype(np.int64)
    for form in ("ecp5", "generic"):
        np.testing.assert_array_equal(seen[f"p_{form}"][latency:], want[:-latency])
        np.testing.assert_array_equal(seen[f"a_reg_{form}"][1:], a[:-1])


@pytest.mark.parametrize("pipeline", [0, 1])
def test_forms_agree_with_enable(simulator, rng, pipeline):
    """With a random register enable (a stalling pipeline): both forms hold and move
    exactly as the reference register chain does."""
    a, b, en, seen = run_pair(simulator, rng, 17, 17, pipeline, enable=True)
    assert 0 < en.sum() < len(en)
    p, a_reg, known = reference(a, b, en, pipeline)
    for form in ("ecp5", "generic"):
        np.testing.assert_array_equal(seen[f"p_{form}"][known], p[known])
        np.testing.assert_array_equal(seen[f"a_reg_{form}"][1:], a_reg[1:])


def test_a_latency_mismatch_is_caught(simulator, rng):
    """The comparison fails when the forms' registers differ (a DSP block without the
    pipeline register the behavioural form has): the check can fail."""
    a, b, en, seen = run_pair(simulator, rng, 8, 8, 0, generic_pipeline=1)
    want = a.astype(np.int64) * b.astype(np.int64)
    np.testing.assert_array_equal(seen["p_ecp5"][2:], want[:-2])
    np.testing.assert_array_equal(seen["p_generic"][3:], want[:-3])
    assert not np.array_equal(seen["p_ecp5"][3:], seen["p_generic"][3:])


def test_form_selection():
    assert dsp_family(ECP5) == "ecp5"
    assert dsp_family(None) is None
    assert dsp_family(object()) is None
    with pytest.raises(ValueError, match=r"^pipeline must be 0 or 1, not 2$"):
        Multiplier(8, 8, pipeline=2)
    with pytest.raises(ValueError, match=r"^a_width must be a positive integer, not 0$"):
        Multiplier(0, 8)
