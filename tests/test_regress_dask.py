"""The regression campaign on Dask: a local cluster gives every seed the result a serial
run gives, and a worker killed in the middle of a campaign loses no seed."""

import io
import os
import signal
import threading
import time

import pytest

from serrano.sw.regress import _case, run_campaign
from tests.conftest import require_simulator

SIMS = ("verilator",)


def _seeds(n):
    """The first ``n`` seeds that draw a small preset (quick on Verilator)."""
    return [s for s in range(200) if _case(s, SIMS)[2].name in ("tiny", "fpga")][:n]


@pytest.fixture(scope="module")
def serial():
    """Per-seed results of four small seeds, run in this process."""
    require_simulator("verilator")
    seeds, results = _seeds(4), {}
    ok, _ = run_campaign(seeds, SIMS, out=io.StringIO(), results=results)
    return seeds, results, ok


def _cluster(workers):
    from dask.distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0")   # any free port: two clusters may run at once
    return cluster, Client(cluster)


def test_dask_campaign_equals_serial(serial):
    seeds, want, ok = serial
    assert ok and sorted(want) == seeds
    cluster, client = _cluster(2)
    try:
        got, out = {}, io.StringIO()
        ok, _ = run_campaign(seeds, SIMS, out=out, client=client, results=got)
    finally:
        client.close()
        cluster.close()
    assert ok
    assert got == want
    text = out.getvalue()
    assert f"{len(seeds)} passed, 0 failed" in text and "Dask, 2 workers" in text


def test_killed_worker_loses_no_seed(serial):
    """A worker process killed (SIGKILL) while it runs a seed: its nanny starts a new one,
    the scheduler runs the seed again, and the summary counts every seed once with the
    serial run's results."""
    seeds, want, _ = serial
    cluster, client = _cluster(2)
    killed = []

    def kill_one():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                time.sleep(1.0)                       # well inside the seed's run
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one, daemon=True)
    try:
        got, out = {}, io.StringIO()
        killer.start()
        ok, _ = run_campaign(seeds, SIMS, out=out, client=client, results=got)
        killer.join()
        pids = set(client.run(os.getpid).values())
    finally:
        client.close()
        cluster.close()
    assert killed and killed[0] not in pids            # the worker died and was replaced
    assert ok and got == want
    text = out.getvalue()
    assert f"{len(seeds)} passed, 0 failed" in text
    assert sorted(int(line.split()[1][:-1]) for line in text.splitlines()
                  if line.startswith("seed ")) == seeds
