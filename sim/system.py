"""Fast whole-accelerator runs: ``serrano_top`` wired to the Verilog memory model.

``serrano_system`` (Verilog generated here) instantiates the accelerator and
``serrano_axi_mem`` (:mod:`sim.hdl`) and wires the AXI4 port between them, so every
clock of a long run happens inside the simulator. Python only writes the registers
through cocotbext-axi's ``AxiLiteMaster`` (idle between accesses), waits for the
interrupt with a watchdog timer, and moves the memory image in and out in bulk
(``$readmemh`` / ``$writememh``). This is what ``serrano gemm`` and the driver use; the
protocol tests use cocotbext-axi's ``AxiRam`` instead (:mod:`sim.accel`).

For the regression campaign (:mod:`sw.regress`) a run can also be reset part-way (soft,
through ``ctrl``, or hard, through the ``rst`` pin, which resets the memory model's
queues but not its contents) and then run in full, and can be soft-reset after it ends;
the memory's SLVERR window and its DECERR beyond ``memory_bytes`` inject bus errors.
"""

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serrano.hw import regs
from serrano.hw.axi import AXI4Signature
from . import runner
from .accel import RtlResult
from .hdl import axi_mem_verilog, read_hex, write_hex
from .verilog import TOP, top_verilog

__all__ = ["SYSTEM_TOP", "RESET_KINDS", "SystemResult", "system_verilog", "memory_words",
           "run_system"]

SYSTEM_TOP = "serrano_system"
# The memory size is a build parameter: a few size classes keep the builds few.
MEMORY_CLASSES = (4 << 20, 16 << 20, 64 << 20)


def memory_words(cfg, n_bytes):
    """Memory words for an image of ``n_bytes``: the smallest size class that holds it."""
    for size in MEMORY_CLASSES:
        if n_bytes <= size:
            return size // cfg.bus_bytes
    raise ValueError(f"a memory image of {n_bytes} bytes exceeds the largest simulated "
                     f"memory ({MEMORY_CLASSES[-1]} bytes)")


def system_verilog(cfg, words):
    """Verilog of ``serrano_system``: the accelerator plus a memory of ``words`` words."""
    sig = AXI4Signature(addr_width=cfg.addr_width, data_bytes=cfg.bus_bytes)
    wires, top_ports, mem_ports = [], [], []
    for name, member in sig.members.items():
        width = member.shape.width if hasattr(member.shape, "width") else member.shape
        wires.append(f"  wire [{width - 1}:0] axi_{name};")
        top_ports.append(f"    .m_axi__{name}(axi_{name}),")
        mem_ports.append(f"    .s_axi_{name}(axi_{name}),")
    aw = cfg.addr_width
    wrapper = "\n".join([
        f"module {SYSTEM_TOP} (",
        "  input wire clk, input wire rst,",
        "  input wire [7:0] s_axil__awaddr, input wire [2:0] s_axil__awprot,",
        "  input wire s_axil__awvalid, output wire s_axil__awready,",
        "  input wire [31:0] s_axil__wdata, input wire [3:0] s_axil__wstrb,",
        "  input wire s_axil__wvalid, output wire s_axil__wready,",
        "  output wire [1:0] s_axil__bresp, output wire s_axil__bvalid,",
        "  input wire s_axil__bready,",
        "  input wire [7:0] s_axil__araddr, input wire [2:0] s_axil__arprot,",
        "  input wire s_axil__arvalid, output wire s_axil__arready,",
        "  output wire [31:0] s_axil__rdata, output wire [1:0] s_axil__rresp,",
        "  output wire s_axil__rvalid, input wire s_axil__rready,",
        "  output wire irq,",
        "  input wire [7:0] mem_read_latency, input wire [7:0] mem_write_latency,",
        f"  input wire [{aw - 1}:0] mem_err_lo, input wire [{aw - 1}:0] mem_err_hi,",
        "  input wire mem_dump, input wire [31:0] mem_dump_len, input wire mem_load",
        ");",
        *wires,
        "  wire [31:0] mem_reads, mem_writes;",
        f"  {TOP} accel (",
        "    .clk(clk), .rst(rst), .irq(irq),",
        *(f"    .s_axil__{p}(s_axil__{p})," for p in (
            "awaddr", "awprot", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready",
            "bresp", "bvalid", "bready", "araddr", "arprot", "arvalid", "arready", "rdata",
            "rresp", "rvalid")),
        "    .s_axil__rready(s_axil__rready),",
        *top_ports[:-1], top_ports[-1].rstrip(","),
        "  );",
        f"  serrano_axi_mem #(.DATA_BYTES({cfg.bus_bytes}), .ADDR_WIDTH({aw}), "
        f".WORDS({words}), .ID_WIDTH(1)) mem (",
        "    .clk(clk), .rst(rst),",
        *mem_ports,
        "    .read_latency(mem_read_latency), .write_latency(mem_write_latency),",
        "    .err_lo(mem_err_lo), .err_hi(mem_err_hi), .dump(mem_dump),",
        "    .dump_len(mem_dump_len), .load(mem_load),",
        "    .reads_beats(mem_reads), .write_beats(mem_writes)",
        "  );",
        "endmodule",
    ])
    return top_verilog(cfg) + "\n" + axi_mem_verilog() + "\n" + wrapper + "\n"


@dataclass
class SystemResult(RtlResult):
    """:class:`sim.accel.RtlResult` plus what the reset options of :func:`run_system` saw.

    ``reset_status`` (inherited) is the status register read right after the mid-run
    reset (``None`` without one); ``reset_mid_run`` whether the program was still running
    when the reset came (``irq`` low); ``end_reset_status`` the status read after the soft
    reset that ``soft_reset_at_end`` issues once the run has ended: the first read that
    is not busy, which must already be idle, and ``end_reset_settled`` the read after it
    (both ``None`` without it).
    """
    reset_mid_run: bool = None
    end_reset_status: int = None
    end_reset_settled: int = None


RESET_KINDS = ("soft", "hard")
TESTBENCH = "serrano.sim.tb.system_tb"


def _run_in_session(cfg, built, image, limit, words, case):
    """``(result, final image)`` of ``case`` on the running simulation of ``built``."""
    s = runner.session(built, TESTBENCH, lambda d: [f"+mem_load={d / 'load.hex'}",
                                                    f"+mem_dump={d / 'dump.hex'}"])
    # Bytes an earlier case of this simulation may have written (its window) read as
    # zero again, as in a simulation of its own.
    dirty = s.state.get("dirty_bytes", 0)
    padded = np.zeros(min(max(len(image), dirty), words * cfg.bus_bytes), np.uint8)
    padded[:len(image)] = image
    write_hex(s.dir / "load.hex", padded, cfg.bus_bytes)
    s.state["dirty_bytes"] = min(max(dirty, len(image), limit), words * cfg.bus_bytes)
    result = s.run(case)
    final = np.frombuffer(read_hex(s.dir / "dump.hex", len(image), cfg.bus_bytes),
                          np.uint8).copy()
    return result, final


def run_system(cfg, image, prog_addr, prog_len, sim, *, base=0, limit=None,
               mem_latency=30, write_latency=10, err_window=(0, 0), timeout_cycles=None,
               memory_bytes=None, reset_after=None, reset_kind="soft",
               hard_reset_cycles=4, soft_reset_at_end=False, persistent=False, position=0):
    """Run a program on ``serrano_system``; same result shape as :func:`sim.accel.run_rtl`
    (a :class:`SystemResult`). ``position`` goes into the ``position`` register.

    ``mem_latency`` is the memory's read latency in cycles (AR accepted to first beat);
    ``err_window`` = ``(lo, hi)`` makes bursts starting in ``[lo, hi)`` answer SLVERR
    (reads and writes; a write burst in it changes nothing); bytes beyond
    ``memory_bytes`` (default: the image, rounded up to a size class) answer DECERR.

    ``reset_after`` starts the program, waits that many cycles, then resets the
    accelerator, ``reset_kind`` ``"soft"`` (``ctrl.soft_reset``, then status polled until
    not busy) or ``"hard"`` (the ``rst`` pin high for ``hard_reset_cycles`` cycles: the
    accelerator, its registers included, and the memory model's queues, not its
    contents; the accelerator's core is reset through a register, one cycle behind
    ``rst``, so a 1-cycle pulse lets it drive its old AXI requests for one more cycle);
    records the status read right after (``reset_status``), programs the
    registers again and runs the whole program from the start. ``soft_reset_at_end``
    soft-resets the accelerator after the run has ended (done, error or watchdog) and
    records the status then (``end_reset_status``, ``end_reset_settled``).

    ``persistent`` runs the case on this process's running simulation of the design
    (:func:`sim.runner.session`; started on first use): its rows loaded through the
    memory's ``load`` input, the memory a previous case may have written beyond this
    image zeroed, the accelerator and the memory's queues reset through ``rst`` first,
    as at the start of a simulation; the result is the same, without the simulator's
    start-up (about 2 s) per run. A case that fails there is run again in a simulation
    of its own, whose failure names its waveform.
    """
    image = np.asarray(image, dtype=np.uint8)
    if reset_kind not in RESET_KINDS:
        raise ValueError(f"reset_kind must be one of {RESET_KINDS}, not {reset_kind!r}")
    if reset_after is not None and (not isinstance(reset_after, (int, np.integer))
                                    or isinstance(reset_after, bool) or reset_after <= 0):
        raise ValueError(f"reset_after must be None or a positive integer, "
                         f"not {reset_after!r}")
    if (not isinstance(hard_reset_cycles, int) or isinstance(hard_reset_cycles, bool)
            or hard_reset_cycles <= 0):
        raise ValueError(f"hard_reset_cycles must be a positive integer, "
                         f"not {hard_reset_cycles!r}")
    words = memory_words(cfg, memory_bytes or len(image))
    if limit is None:
        limit = len(image)
    if timeout_cycles is None:
        timeout_cycles = 1_000_000 + 8 * len(image)
    text = system_verilog(cfg, words)
    tag = f"{cfg.name}-{words}w"
    built = runner.build(sim, SYSTEM_TOP, text, tag=tag)
    case = {
        "regs": {e.name: e.address for e in regs.REGISTER_MAP},
        "prog_addr": prog_addr, "prog_len": prog_len, "base": base, "limit": limit,
        "position": int(position), "mem_latency": mem_latency, "write_latency": write_latency,
        "err_lo": err_window[0], "err_hi": err_window[1],
        "timeout_cycles": timeout_cycles,
        "reset_after": None if reset_after is None else int(reset_after),
        "reset_kind": reset_kind, "hard_reset_cycles": hard_reset_cycles,
        "soft_reset_at_end": bool(soft_reset_at_end),
        "dump_words": -(-len(image) // cfg.bus_bytes),
    }
    def fresh():
        """The case in a simulation of its own (a failure replays with a waveform)."""
        with tempfile.TemporaryDirectory(dir=runner.build_root()) as tmp:
            init = Path(tmp) / "init.hex"
            dump = Path(tmp) / "dump.hex"
            write_hex(init, image, cfg.bus_bytes)    # the model zeroes the rest
            result, _ = runner.run(built, TESTBENCH, "run_program", case,
                                   verilog_text=text, tag=tag,
                                   plusargs=[f"+mem_init={init}", f"+mem_dump={dump}"])
            return result, np.frombuffer(read_hex(dump, len(image), cfg.bus_bytes),
                                         np.uint8).copy()

    t0 = time.perf_counter()
    if persistent:
        try:
            result, final = _run_in_session(cfg, built, image, limit, words, case)
        except runner.CaseFailed as e:
            fresh()
            raise runner.SimulationFailed(f"{e}\n(the case passes in a simulation of its "
                                          f"own: state carried over between runs)") from e
    else:
        result, final = fresh()
    wall = time.perf_counter() - t0
    return SystemResult(
        image=final, status=result["status"], counters=result["counters"], wall_s=wall,
        timed_out=result["timed_out"], irq_cleared=True, magic=result["magic"],
        reset_status=result["reset_status"], reset_mid_run=result["reset_mid_run"],
        end_reset_status=result["end_reset_status"],
        end_reset_settled=result["end_reset_settled"])
