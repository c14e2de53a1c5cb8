"""Shares one read DMA among several clients and routes the beats back to each."""

from amaranth import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .dma import dma_command

__all__ = ["ReadMux"]


class ReadMux(wiring.Component):
    """``n`` read clients in front of one :class:`~hw.dma_read.DMARead`.

    A command from client ``i`` on ``cmd_i`` (fixed priority, client 0 first) is taken
    into a one-command output register that drives ``dma_cmd``; its client number, row
    count and beats per row go into a route queue. Beats returning on ``dma_data`` (in
    command order, as the engine guarantees) are handed to ``data_i`` of the client at the
    head of the queue, counted by a beat-in-row and a row counter (no multiplier).

    Clients should reserve room for their beats before asking (the weight streamer and
    the instruction fetcher count credits; the load unit writes SRAM), so ``dma_data``
    is never held up; if a client does stall, the stall propagates to the engine.

    Latency: a command taken in cycle ``t`` is on ``dma_cmd`` from cycle ``t + 1``; no
    combinational path runs from any ``cmd_i`` to ``dma_cmd``. Beats pass through
    combinationally. Throughput: one command per cycle (the register refills in the cycle
    it is emptied) and one beat per cycle.

    Ports
    -----
    cmd_i : In(stream(dma_command)); data_i : Out(stream(8 * bus_bytes))
        Client ``i``'s requests and its data.
    dma_cmd : Out(stream(dma_command)); dma_data : In(stream(8 * bus_bytes))
        To and from the engine.
    busy : Out(1)
        Some routed command still has beats to deliver.
    """

    def __init__(self, cfg, n_clients, *, route_depth=8):
        if not isinstance(n_clients, int) or n_clients <= 0:
            raise TypeError(f"n_clients must be a positive integer, not {n_clients!r}")
        self.cfg = cfg
        self.n_clients = n_clients
        self.route_depth = route_depth
        members = {
            "dma_cmd": Out(stream.Signature(dma_command(cfg))),
            "dma_data": In(stream.Signature(8 * cfg.bus_bytes)),
            "busy": Out(1),
        }
        for i in range(n_clients):
            members[f"cmd_{i}"] = In(stream.Signature(dma_command(cfg)))
            members[f"data_{i}"] = Out(stream.Signature(8 * cfg.bus_bytes))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self.n_clients
        route = data.StructLayout({"client": range(n), "rows": 16, "row_beats": 16})
        m.submodules.routes = routes = fifo.SyncFIFOBuffered(width=route.size,
                                                              depth=self.route_depth)
        cmds = [getattr(self, f"cmd_{i}") for i in range(n)]
        outs = [getattr(self, f"data_{i}") for i in range(n)]

        # Grant: the lowest-numbered client with a command, when the output register is
        # free (or being emptied) and the route queue has room.
        grant = Signal(range(n))
        any_valid = Signal()
        for i in reversed(range(n)):
            with m.If(cmds[i].valid):
                m.d.comb += [grant.eq(i), any_valid.eq(1)]
        out_valid = Signal()
        out = Signal.like(self.dma_cmd.payload, reset_less=True)
        m.d.comb += [self.dma_cmd.valid.eq(out_valid), self.dma_cmd.payload.eq(out)]
        take = Signal()
        m.d.comb += take.eq(any_valid & (~out_valid | self.dma_cmd.ready) & routes.w_rdy)
        entry = Signal(route)
        with m.Switch(grant):
            for i in range(n):
                with m.Case(i):
                    with m.If(take):
                        m.d.sync += out.eq(cmds[i].payload)
                    m.d.comb += [
                        entry.rows.eq(cmds[i].payload.rows),
                        entry.row_beats.eq(cmds[i].payload.row_beats),
                    ]
        with m.If(take):
            m.d.sync += out_valid.eq(1)
        with m.Elif(self.dma_cmd.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += [
            entry.client.eq(grant),
            routes.w_data.eq(entry),
            routes.w_en.eq(take),
        ]
        for i in range(n):
            m.d.comb += cmds[i].ready.eq((grant == i) & take)

        # Route: beats go to the head entry's client until its rows are all delivered.
        head = Signal(route)
        m.d.comb += head.eq(routes.r_data)
        beat = Signal(16)
        row = Signal(16)
        ready = Signal()
        with m.Switch(head.client):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += ready.eq(outs[i].ready)
        for i in range(n):
            m.d.comb += [
                outs[i].payload.eq(self.dma_data.payload),
                outs[i].valid.eq(self.dma_data.valid & routes.r_rdy & (head.client == i)),
            ]
        m.d.comb += self.dma_data.ready.eq(routes.r_rdy & ready)
        with m.If(self.dma_data.valid & self.dma_data.ready):
            with m.If(beat + 1 == head.row_beats):
                m.d.sync += beat.eq(0)
                with m.If(row + 1 == head.rows):
                    m.d.sync += row.eq(0)
                    m.d.comb += routes.r_en.eq(1)
                with m.Else():
                    m.d.sync += row.eq(row + 1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        m.d.comb += self.busy.eq(routes.r_rdy | out_valid)
        return m
