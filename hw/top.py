"""The whole accelerator: control registers, front end, four units, buffers, DMA."""

from amaranth import ClockDomain, ClockSignal, DomainRenamer, Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from . import isa, regs
from .axi import AXI4Signature, AXI4LiteSignature
from .buffers import ActivationBuffer, Accumulator, ParamBuffer
from .clock_gate import check, gate
from .csr import CSRBlock
from .dma import DMAError
from .dma_read import DMARead
from .dma_write import DMAWrite
from .exec_unit import ExecUnit
from .frontend import FrontEnd
from .load_unit import LoadUnit
from .read_mux import ReadMux
from .store_unit import StoreUnit
from .vector_unit import VectorUnit

__all__ = ["Core", "Serrano", "CSR_ADDR_WIDTH"]

CSR_ADDR_WIDTH = 8
TOKEN_BITS = 8

_DMA_TO_ISA = {
    DMAError.WINDOW: isa.Error.DMA_WINDOW,
    DMAError.ALIGN: isa.Error.DMA_ALIGN,
    DMAError.SLVERR: isa.Error.AXI_SLVERR,
    DMAError.DECERR: isa.Error.AXI_DECERR,
}


class Core(wiring.Component):
    """Everything but the registers; a soft reset resets all of it.

    Ports
    -----
    bus : Out(AXI4Signature)       the memory port (reads: fetch, loads, weights; writes:
                                   stores)
    start : In (pulse); prog_addr, prog_len, position, base, limit : In(32)
    abort : In                     stop issuing work (soft reset requested)
    running : Out                  from start until done, or until an error has drained
    done : Out (pulse)             the program reached END and everything is written
    failed : Out (pulse)           an error stopped the program; all bursts have drained
    error : Out(4)                 the first error's :class:`hw.isa.Error` code (sticky)
    quiet : Out                    no AXI transaction in flight
    <counter> : Out(64)            :data:`hw.regs.COUNTERS`, cleared at start

    ``gating`` (:mod:`hw.clock_gate`): ``"clock"`` clocks the load, store and vector units,
    and the store unit's requantizer, through clock gates, ``"none"`` on the core's clock;
    the same cycles either way.
    """

    def __init__(self, cfg, gating="none"):
        self.cfg = cfg
        self.gating = check(gating)
        members = {
            "bus": Out(AXI4Signature(addr_width=cfg.addr_width, data_bytes=cfg.bus_bytes)),
            "start": In(1), "prog_addr": In(32), "prog_len": In(32), "position": In(32),
            "base": In(cfg.addr_width), "limit": In(cfg.addr_width), "abort": In(1),
            "running": Out(1), "done": Out(1), "failed": Out(1), "error": Out(4),
            "quiet": Out(1),
        }
        for name, _doc in regs.COUNTERS:
            members[name] = Out(64)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg

        m.submodules.front = front = FrontEnd(cfg)
        m.submodules.exec = exe = ExecUnit(cfg)
        # The units idle through most of a program's cycles (the load and store units
        # around a GEMM, the vector unit around a layer's GEMMs) tick only when they have
        # work (hw/clock_gate.py).
        load, vec = LoadUnit(cfg), VectorUnit(cfg)
        store = StoreUnit(cfg, gating=self.gating)
        # The store unit's clock also ticks for the vector unit's writes to the row-scale
        # file it holds (VEC DYNQ's codes), idle or not.
        wakes = {"store": store.insn.valid | store.rs_en}
        for name, unit in (("load", load), ("store", store), ("vec", vec)):
            m.submodules[name] = gate(m, f"{name}_clk", unit, self.gating,
                                      wake=wakes.get(name))
        m.submodules.rmux = rmux = ReadMux(cfg, 3)
        m.submodules.rd = rd = DMARead(cfg, max_outstanding=8)
        m.submodules.wr = wr = DMAWrite(cfg, max_outstanding=8)
        m.submodules.act = act = ActivationBuffer(cfg)
        m.submodules.acc = acc = Accumulator(cfg)
        m.submodules.params = params = ParamBuffer(cfg)

        # Memory port: reads from the read engine, writes from the write engine.
        for name in ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "rready"):
            m.d.comb += getattr(self.bus, name).eq(getattr(rd.bus, name))
        for name in ("arready", "rid", "rdata", "rresp", "rlast", "rvalid"):
            m.d.comb += getattr(rd.bus, name).eq(getattr(self.bus, name))
        for name in ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata",
                     "wstrb", "wlast", "wvalid", "bready"):
            m.d.comb += getattr(self.bus, name).eq(getattr(wr.bus, name))
        for name in ("awready", "wready", "bid", "bresp", "bvalid"):
            m.d.comb += getattr(wr.bus, name).eq(getattr(self.bus, name))
        for engine in (rd, wr):
            m.d.comb += [engine.base.eq(self.base), engine.limit.eq(self.limit),
                         engine.clear.eq(0)]

        # Read clients: 0 instruction fetch, 1 loads, 2 weights.
        connect(m, front.fcmd, rmux.cmd_0)
        connect(m, rmux.data_0, front.fdata)
        connect(m, load.cmd, rmux.cmd_1)
        connect(m, rmux.data_1, load.data)
        connect(m, exe.wcmd, rmux.cmd_2)
        connect(m, rmux.data_2, exe.wdata)
        connect(m, rmux.dma_cmd, rd.cmd)
        connect(m, rd.data, rmux.dma_data)
        connect(m, store.wcmd, wr.cmd)
        connect(m, store.wdata, wr.data)

        # Instruction queues.
        connect(m, front.load_q, load.insn)
        connect(m, front.exec_q, exe.insn)
        connect(m, front.store_q, store.insn)
        connect(m, front.vec_q, vec.insn)

        # Buffers.
        m.d.comb += [
            act.load_addr.eq(load.act_addr), act.load_data.eq(load.act_data),
            act.load_en.eq(load.act_en),
            act.store_addr.eq(store.buf_addr), act.store_data.eq(store.buf_data),
            act.store_valid.eq(store.buf_valid), store.buf_ready.eq(act.store_ready),
            act.vrd_addr.eq(vec.rd_addr), act.vrd_en.eq(vec.rd_en),
            vec.rd_data.eq(act.vrd_data),
            act.vec_addr.eq(vec.wr_addr), act.vec_data.eq(vec.wr_data),
            act.vec_valid.eq(vec.wr_valid), vec.wr_ready.eq(act.vec_ready),
            act.rd_addr.eq(exe.act_rd_addr), act.rd_en.eq(exe.act_rd_en),
            exe.act_rd_data.eq(act.rd_data),
            acc.upd_valid.eq(exe.acc_valid), acc.upd_addr.eq(exe.acc_addr),
            acc.upd_accumulate.eq(exe.acc_accumulate), acc.upd_shr8.eq(exe.acc_shr8),
            acc.upd_data.eq(exe.acc_data),
            acc.rd_addr.eq(store.acc_addr), acc.rd_en.eq(store.acc_en),
            store.acc_data.eq(acc.rd_data),
            params.wr_addr.eq(load.param_addr), params.wr_data.eq(load.param_data),
            params.wr_en.eq(load.param_en),
            params.rd_addr.eq(store.param_addr), params.rd_en.eq(store.param_en),
            store.param_data.eq(params.rd_data),
            store.rs_addr.eq(vec.rs_addr), store.rs_data.eq(vec.rs_data),
            store.rs_en.eq(vec.rs_en),
        ]

        # Dependency tokens between neighbouring units.
        # Every program starts with all counters at zero. A give is registered before it
        # is counted (the consumer sees the token one cycle later, which is always safe,
        # and the producer's issue logic stays out of the counter's cycle); a take counts
        # at once, so a consumer never takes the same token twice. No give is pending at a
        # start: gives come from running units, and a start needs the program done and
        # several register writes.
        def token(name, give, take):
            count = Signal(TOKEN_BITS, name=f"tokens_{name}")
            give_q = Signal(name=f"give_{name}")
            m.d.sync += give_q.eq(give)
            with m.If(self.start & ~self.running):
                m.d.sync += count.eq(0)
            with m.Else():
                m.d.sync += count.eq(count + give_q - take)
            return count != 0
        m.d.comb += [
            exe.l2e_avail.eq(token("l2e", load.l2e_give, exe.l2e_take)),
            load.e2l_avail.eq(token("e2l", exe.e2l_give, load.e2l_take)),
            store.e2s_avail.eq(token("e2s", exe.e2s_give, store.e2s_take)),
            exe.s2e_avail.eq(token("s2e", store.s2e_give, exe.s2e_take)),
            vec.s2v_avail.eq(token("s2v", store.s2v_give, vec.s2v_take)),
            store.v2s_avail.eq(token("v2s", vec.v2s_give, store.v2s_take)),
            exe.v2e_avail.eq(token("v2e", vec.v2e_give, exe.v2e_take)),
            vec.e2v_avail.eq(token("e2v", exe.e2v_give, vec.e2v_take)),
        ]

        # Errors: the first one is kept; everything stops issuing; bursts drain.
        error = Signal(4)
        errored = Signal()
        new_error = Signal(4)
        with m.If(front.error_valid):
            m.d.comb += new_error.eq(front.error)
        for engine in (rd, wr):
            with m.If(engine.error_valid):
                with m.Switch(engine.error):
                    for dma_code, isa_code in _DMA_TO_ISA.items():
                        with m.Case(dma_code):
                            m.d.comb += new_error.eq(isa_code)
        with m.If(~errored & (new_error != 0)):
            m.d.sync += [errored.eq(1), error.eq(new_error)]
        stop = Signal()
        m.d.comb += stop.eq(errored | rd.error_valid | wr.error_valid | self.abort)
        for unit in (front, load, exe, store, vec):
            m.d.comb += unit.abort.eq(stop)
        m.d.comb += [rd.abort.eq(stop), wr.abort.eq(stop)]

        m.d.comb += [
            front.start.eq(self.start & ~self.running),
            front.prog_addr.eq(self.prog_addr), front.prog_len.eq(self.prog_len),
            front.position.eq(self.position),
            front.units_idle.eq(load.idle & exe.idle & store.idle & vec.idle & wr.idle),
            front.stores_idle.eq(store.idle & wr.idle),
            self.quiet.eq(~rd.busy & ~wr.busy),
            self.error.eq(error),
        ]

        running = Signal()
        m.d.comb += self.running.eq(running)
        with m.If(self.start & ~running):
            m.d.sync += running.eq(1)
        with m.If(front.done):
            m.d.sync += running.eq(0)
            m.d.comb += self.done.eq(1)
        with m.If(running & errored & self.quiet):
            m.d.sync += running.eq(0)
            m.d.comb += self.failed.eq(1)

        # Performance counters.
        events = {
            "cycles": running,
            "array_cycles": exe.array_active,
            "stall_weight": running & exe.stall_weight,
            "stall_act": running & exe.stall_act,
            "stall_store": running & exe.stall_store,
            "stall_insn": running & exe.stall_insn & ~errored,
            "instructions": front.dispatched,
            "vec_busy": running & vec.working,
            "vec_insns": vec.retired,
        }
        for name, event in events.items():
            counter = getattr(self, name)
            with m.If(self.start & ~running):
                m.d.sync += counter.eq(0)
            with m.Elif(event):
                m.d.sync += counter.eq(counter + 1)
        # DMA byte counts: the engines count since reset; report the change since start.
        for name, total in (("dma_read_bytes", rd.bytes_read),
                            ("dma_write_bytes", wr.bytes_written)):
            at_start = Signal(64, name=f"{name}_at_start")
            with m.If(self.start & ~running):
                m.d.sync += at_start.eq(total)
            m.d.comb += getattr(self, name).eq(total - at_start)
        return m


class Serrano(wiring.Component):
    """serrano: an int8 transformer-inference accelerator behind AXI4 and AXI4-Lite.

    The host writes a program into memory, its address and length into ``prog_addr`` and
    ``prog_len``, the DMA window into ``base`` and ``limit``, and sets ``ctrl.start``.
    The accelerator fetches and runs the program (:mod:`hw.isa`), then sets
    ``status.done`` (or ``status.error`` with a code) and ``irq_status``; ``irq`` is
    ``irq_status & irq_enable``. ``ctrl.soft_reset`` stops issuing, waits for every AXI
    burst in flight to complete (no write is issued after the request), then resets
    everything but the registers and returns to idle; ``status.busy`` stays set until
    the core's reset has taken effect. Register map: :mod:`hw.regs`.

    Reset: ``rst`` is synchronous and active high; it resets the registers at once and
    the core one cycle later, through the flip-flop ``core_rst`` that is the core's only
    reset (a short, registered reset net; the datapath registers have none). While
    ``core_rst`` is high the memory port's ``arvalid``, ``rready``, ``awvalid``,
    ``wvalid`` and ``bready`` are held low, so a single-cycle ``rst`` is enough.

    Ports
    -----
    m_axi : Out(AXI4Signature(addr_width=32, data_bytes=bus_bytes))   memory (manager)
    s_axil : In(AXI4LiteSignature(addr_width=8))                      registers
    irq : Out(1)                                                      level interrupt

    ``gating``: ``"none"`` (the default: Amaranth's simulator, the FPGA flow) or
    ``"clock"`` (clock-gated units: the Verilog that Verilator and Icarus run); see
    :class:`Core` and :mod:`hw.clock_gate`.
    """

    def __init__(self, cfg, gating="none"):
        self.cfg = cfg
        self.gating = check(gating)
        super().__init__({
            "m_axi": Out(AXI4Signature(addr_width=cfg.addr_width, data_bytes=cfg.bus_bytes)),
            "s_axil": In(AXI4LiteSignature(addr_width=CSR_ADDR_WIDTH)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.csr = csr = CSRBlock(regs.REGISTERS, addr_width=CSR_ADDR_WIDTH)
        connect(m, flipped(self.s_axil), csr.bus)

        # The core runs in its own domain on the same clock, reset by one register:
        # high while `rst` is (through its initial value) and for one cycle at a soft
        # reset. A flip-flop drives the core's reset net, with no logic between.
        core_reset = Signal(init=1)
        m.domains.core = cd_core = ClockDomain("core", local=True)
        m.d.comb += [cd_core.clk.eq(ClockSignal("sync")), cd_core.rst.eq(core_reset)]
        core = Core(cfg, self.gating)
        m.submodules.core = DomainRenamer("core")(core)
        # The memory port. The core's reset lags `rst` by one cycle; in that cycle its
        # registers still hold their old state, so its handshake outputs are masked
        # while `core_rst` is high: a memory that left reset with `rst` sees no request
        # and gives no beat away.
        handshakes = ("arvalid", "rready", "awvalid", "wvalid", "bready")
        for name, member in self.m_axi.signature.members.items():
            if member.flow == Out:
                value = getattr(core.bus, name)
                if name in handshakes:
                    value = value & ~core_reset
                m.d.comb += getattr(self.m_axi, name).eq(value)
            else:
                m.d.comb += getattr(core.bus, name).eq(getattr(self.m_axi, name))

        # Soft reset: stop issuing, wait for the bus to drain, then reset the core.
        resetting = Signal()
        with m.If(csr.ctrl[1]):
            m.d.sync += resetting.eq(1)
        with m.If(resetting & core.quiet):
            m.d.sync += [core_reset.eq(1), resetting.eq(0)]
        with m.Else():
            m.d.sync += core_reset.eq(0)

        done = Signal()
        failed = Signal()
        with m.If(core.done):
            m.d.sync += done.eq(1)
        with m.If(core.failed):
            m.d.sync += failed.eq(1)
        with m.If((csr.ctrl[0] & ~core.running) | core_reset):
            m.d.sync += [done.eq(0), failed.eq(0)]

        m.d.comb += [
            core.start.eq(csr.ctrl[0] & ~resetting & ~core_reset),
            core.prog_addr.eq(csr.prog_addr), core.prog_len.eq(csr.prog_len),
            core.position.eq(csr.position),
            core.base.eq(csr.base), core.limit.eq(csr.limit),
            core.abort.eq(resetting | csr.ctrl[1]),
            csr.magic.eq(regs.MAGIC),
            csr.geometry.eq(cfg.rows | (cfg.cols << 8) | (cfg.bus_bytes << 16)),
            csr.act_rows.eq(cfg.act_buf_rows),
            csr.acc_rows.eq(2 * cfg.acc_buf_rows),
            csr.param_slots.eq(cfg.param_tiles),
            csr.status.eq((core.running | resetting | core_reset) * regs.STATUS_BUSY
                          | done * regs.STATUS_DONE
                          | failed * regs.STATUS_ERROR
                          | Mux(failed, core.error, 0) << regs.STATUS_CODE_SHIFT),
            csr.irq_status_set.eq(core.done | core.failed),
            self.irq.eq(csr.irq_status & csr.irq_enable),
        ]
        for name, _doc in regs.COUNTERS:
            counter = getattr(core, name)
            m.d.comb += [getattr(csr, f"{name}_lo").eq(counter[:32]),
                         getattr(csr, f"{name}_hi").eq(counter[32:])]
        return m
