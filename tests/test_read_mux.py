# amaranth: UnusedElaboratable=no
"""The read mux on Amaranth's simulator: three clients with random commands, a fake read
engine with random back-pressure, every beat routed to the client that asked for it."""

from collections import deque

import pytest
from amaranth.sim import Simulator

from serrano.hw.config import get_preset
from serrano.hw.read_mux import ReadMux


def _run(rng, n_clients, n_cmds, p_valid, p_ready, p_beat, max_cycles=20_000):
    cfg = get_preset("tiny")
    dut = ReadMux(cfg, n_clients)
    # Each client's commands: (addr, rows, row_beats); addr is a unique tag.
    wanted = [[(1000 * i + j, int(rng.integers(1, 4)), int(rng.integers(1, 5)))
               for j in range(n_cmds)] for i in range(n_clients)]
    got = [[] for _ in range(n_clients)]
    issued = []                      # commands seen accepted on dma_cmd, in order

    async def tb(ctx):
        queues = [deque(w) for w in wanted]
        presenting = [None] * n_clients
        engine = deque()             # beats to return: (addr, index)
        held = None                  # dma_cmd presented and not yet accepted
        out_beat = None
        for t in range(max_cycles):
            for i in range(n_clients):
                if presenting[i] is None and queues[i] and rng.random() < p_valid:
                    presenting[i] = queues[i].popleft()
                cmd = getattr(dut, f"cmd_{i}")
                ctx.set(cmd.valid, presenting[i] is not None)
                if presenting[i] is not None:
                    a, r, b = presenting[i]
                    ctx.set(cmd.payload, {"addr": a, "rows": r, "row_beats": b,
                                          "stride": 0})
                ctx.set(getattr(dut, f"data_{i}").ready, bool(rng.random() < p_ready))
            engine_ready = bool(rng.random() < p_ready)
            ctx.set(dut.dma_cmd.ready, engine_ready)
            if out_beat is None and engine and rng.random() < p_beat:
                out_beat = engine.popleft()
            ctx.set(dut.dma_data.valid, out_beat is not None)
            if out_beat is not None:
                ctx.set(dut.dma_data.payload, out_beat[0] * 256 + out_beat[1])

            # dma_cmd is a register: held until taken, payload stable.
            valid = ctx.get(dut.dma_cmd.valid)
            payload = (ctx.get(dut.dma_cmd.payload.addr), ctx.get(dut.dma_cmd.payload.rows),
                       ctx.get(dut.dma_cmd.payload.row_beats))
            if held is not None:
                assert valid and payload == held, f"cycle {t}: dma_cmd changed before READY"
            held = payload if valid and not engine_ready else None
            if valid and engine_ready:
                issued.append(payload)
                a, r, b = payload
                engine.extend((a, k) for k in range(r * b))
            # Handshakes.
            for i in range(n_clients):
                cmd = getattr(dut, f"cmd_{i}")
                if presenting[i] is not None and ctx.get(cmd.ready):
                    presenting[i] = None
                data = getattr(dut, f"data_{i}")
                if ctx.get(data.valid) and ctx.get(data.ready):
                    word = ctx.get(data.payload)
                    got[i].append((word // 256, word % 256))
            if out_beat is not None and ctx.get(dut.dma_data.ready):
                out_beat = None
            idle = (not any(queues) and all(p is None for p in presenting) and not engine
                    and out_beat is None and not ctx.get(dut.busy))
            if idle:
                return
            await ctx.tick()
        raise AssertionError("watchdog: the read mux did not finish")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return wanted, got, issued


@pytest.mark.parametrize("knobs", [(1.0, 1.0, 1.0), (0.5, 0.6, 0.7), (0.9, 0.3, 0.4)])
def test_routes_every_beat_to_its_client(rng, knobs):
    wanted, got, issued = _run(rng, 3, 12, *knobs)
    for i, cmds in enumerate(wanted):
        expect = [(a, k) for a, r, b in cmds for k in range(r * b)]
        assert got[i] == expect, f"client {i}"
    # Every command passed exactly once, and each client's in its own order.
    assert sorted(issued) == sorted(c for cmds in wanted for c in cmds)
    for i, cmds in enumerate(wanted):
        assert [c for c in issued if c[0] // 1000 == i] == cmds


def test_command_is_registered_and_full_rate():
    """A command presented in cycle t is on dma_cmd in t + 1, not in t; with everything
    ready, one command per cycle goes through."""
    cfg = get_preset("tiny")
    dut = ReadMux(cfg, 2)
    seen = []

    async def tb(ctx):
        ctx.set(dut.dma_cmd.ready, 1)
        for t in range(6):
            ctx.set(dut.cmd_1.valid, t < 4)
            ctx.set(dut.cmd_1.payload, {"addr": 16 * t, "rows": 1, "row_beats": 1,
                                        "stride": 0})
            seen.append((ctx.get(dut.dma_cmd.valid), ctx.get(dut.dma_cmd.payload.addr),
                         ctx.get(dut.cmd_1.ready)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert [s[0] for s in seen] == [0, 1, 1, 1, 1, 0]
    assert [s[1] for s in seen[1:5]] == [0, 16, 32, 48]
    assert [s[2] for s in seen[:4]] == [1, 1, 1, 1]


def test_constructor_checks():
    with pytest.raises(TypeError, match="n_clients must be a positive integer, not 0"):
        ReadMux(get_preset("tiny"), 0)
