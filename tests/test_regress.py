"""A short slice of the constrained-random campaign (``serrano regress``) for CI, on a
local two-worker Dask cluster as the campaign runs: on the simulators ``SIM`` selects,
the first seed drawing the ``tiny`` preset for each group of kinds of run: a clean run,
a reset mid-run, a bus fault, a program fault, random instruction streams."""

import io

from serrano.sw import regress
from serrano.sw.regress import _case, run_campaign
from tests.conftest import require_simulator, selected_simulators

GROUPS = ((None,), regress.RESETS, regress.BUS_FAULTS, regress.PROGRAM_FAULTS, ("streams",),
          ("llm",))


def slice_seeds(sims):
    seeds = []
    # A language model's seed runs on the fast simulator (minutes under Icarus alone).
    for group in GROUPS if "verilator" in sims else GROUPS[:-1]:
        seeds.append(next(s for s in range(1000)
                          if _case(s, sims)[2].name == "tiny" and _case(s, sims)[6] in group))
    return seeds


def test_regress_slice():
    sims = selected_simulators()
    for sim in sims:
        require_simulator(sim)
    seeds = slice_seeds(sims)
    out = io.StringIO()
    ok, _ = run_campaign(seeds, sims, out=out, workers=2, progress=False)
    text = out.getvalue()
    assert ok, text
    assert f"{len(seeds)} passed, 0 failed" in text and "Dask, 2 workers" in text
