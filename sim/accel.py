"""Runs a program image on the accelerator's RTL, under Verilator or Icarus.

The whole memory image goes in, the whole memory image comes out, with the status
register and every performance counter: the same shape of result as the golden ISA
model (:mod:`sw.isa_model`), so the two can be compared byte for byte.
"""

import time
from dataclasses import dataclass

import numpy as np

from serrano.hw import isa, regs
from . import runner
from .verilog import TOP, top_verilog

__all__ = ["RtlResult", "run_rtl"]

TESTBENCH = "serrano.sim.tb.top_tb"


@dataclass
class RtlResult:
    image: np.ndarray            # final memory, uint8
    status: int                  # the status register at the end
    counters: dict
    wall_s: float
    timed_out: bool
    irq_cleared: bool
    magic: int
    reset_status: int = None

    @property
    def error(self):
        return isa.Error((self.status >> regs.STATUS_CODE_SHIFT) & 0xF)

    @property
    def done(self):
        return bool(self.status & regs.STATUS_DONE)


def run_rtl(cfg, image, prog_addr, prog_len, sim, *, base=0, limit=None, pause=0.0,
            seed=0, timeout_cycles=None, soft_reset_after=None, persistent=False):
    """Run ``prog_len`` instructions at ``prog_addr`` of ``image`` on ``sim``.

    ``pause`` is the probability that each AXI channel of the memory model holds back in
    a given cycle (random back-pressure and idle cycles); ``seed`` picks the pattern.
    ``soft_reset_after`` starts the program, soft-resets it that many cycles later, then
    runs it again from the start; ``reset_status`` is the status read after the reset.

    ``persistent`` runs the case on this process's running simulation
    (:func:`sim.runner.session`): ``rst`` pulsed first, the image written into its one
    memory (bytes an earlier case's window reached beyond it zeroed): the same result
    without the simulator's start-up per run. A case that fails there is run again in a
    simulation of its own, whose failure names its waveform; after a run that timed out
    the simulation is closed (its memory model may still hold the run's requests).
    """
    image = np.asarray(image, dtype=np.uint8)
    if limit is None:
        limit = len(image)
    if timeout_cycles is None:
        timeout_cycles = 200_000 + 40 * len(image)
    text = top_verilog(cfg)
    built = runner.build(sim, TOP, text, tag=cfg.name)
    case = {
        "image": image.tobytes().hex(), "bus_bytes": cfg.bus_bytes,
        "regs": {e.name: e.address for e in regs.REGISTER_MAP},
        "prog_addr": prog_addr, "prog_len": prog_len, "base": base, "limit": limit,
        "pause": pause, "seed": seed, "timeout_cycles": timeout_cycles,
        "soft_reset_after": soft_reset_after,
    }
    t0 = time.perf_counter()
    if persistent:
        s = runner.session(built, TESTBENCH)
        try:
            result = s.run(case)
        except runner.CaseFailed as e:
            # The same case in a simulation of its own: its failure comes with a waveform.
            runner.run(built, TESTBENCH, "run_program", case, verilog_text=text,
                       tag=cfg.name)
            raise runner.SimulationFailed(f"{e}\n(the case passes in a simulation of its "
                                          f"own: state carried over between runs)") from e
        if result["timed_out"]:
            s.close()
    else:
        result, _ = runner.run(built, TESTBENCH, "run_program", case, verilog_text=text,
                               tag=cfg.name)
    wall = time.perf_counter() - t0
    return RtlResult(
        image=np.frombuffer(bytes.fromhex(result["image"]), dtype=np.uint8).copy(),
        status=result["status"], counters=result["counters"], wall_s=wall,
        timed_out=result["timed_out"],
        irq_cleared=not result["irq_after_clear"], magic=result["magic"],
        reset_status=result["reset_status"])
