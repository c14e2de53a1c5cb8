"""A short slice of the constrained-random campaign (``serrano regress``) for CI: the
first seeds that draw the ``tiny`` preset with one fault kind among them, on the
simulators ``SIM`` selects."""

import io

from sw.regress import _case, run_campaign
from tests.conftest import require_simulator, selected_simulators


def test_regress_slice():
    sims = selected_simulators()
    for sim in sims:
        require_simulator(sim)
    seeds = [s for s in range(200) if _case(s, sims)[2].name == "tiny"][:4]
    out = io.StringIO()
    ok = True
    for seed in seeds:
        passed, _ = run_campaign(1, sims, first_seed=seed, out=out)
        ok &= passed
    text = out.getvalue()
    assert ok, text
    assert text.count("1 passed, 0 failed") == len(seeds)
