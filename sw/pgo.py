"""The training run of the fast simulator's profile-guided build.

:func:`sim.fastsim.build` compiles the Verilated accelerator twice: once instrumented
(GCC's ``-fprofile-generate``), then, after this module has run that library on a few
accelerator programs in a process of its own (the profile is written when the process
exits), again with ``-fprofile-use``, so that the compiler lays out and inlines the
per-cycle code for the branches a real run takes.

The programs are a sample of what the accelerator runs, sized to the configuration and
none of them a benchmark's own program: a prefill-shaped int8 GEMM, a decode-shaped
4-bit GEMV (the weights streamed once), a language model's prompt GEMM (4-bit weights,
two int8 rows per token) and LM-head GEMV (int8 codes with block scales), and one
layer's vector work interleaved with a GEMM (:func:`sw.vector_bench.programs`: norms,
rotary embeddings, softmax, SiLU, adds). The bare loop (every input idle) is not trained
on.

``python -m serrano.sw.pgo LIB CONFIG_JSON`` runs them on the library ``LIB`` for the
configuration ``CONFIG_JSON`` (:meth:`hw.config.Config.to_dict`) and exits; a failing
program is an error (exit status 1), so a broken instrumented build never yields a
profile silently.
"""

import json
import sys

import numpy as np

from serrano.hw import isa, regs
from serrano.hw.config import Config
from . import compiler, gemm as G, golden, q4, vector_bench
from .backends import VerilatorBackend

__all__ = ["COMMAND", "programs", "run_all", "train", "main"]

#: The command :func:`sim.fastsim.build` runs, the library's path and the configuration's
#: JSON appended.
COMMAND = ("-m", "serrano.sw.pgo")


def programs(cfg):
    """``[(name, image, prog_addr, prog_len)]``: the training programs for ``cfg``."""
    R, C = cfg.rows, cfg.cols
    out = []
    a, w = G.random_operands(4 * R, 12 * R, 8 * C, 1)
    lay = compiler.compile_gemm(cfg, a, w, *G.random_requant(golden.matmul(a, w), 1))
    out.append(("prefill gemm", lay.image, lay.prog_addr, lay.prog_len))
    rng = np.random.default_rng(2)
    k, n = 2 * cfg.weight_block * max(1, R // 4), 16 * C
    wq = q4.quantize(rng.normal(size=(k, n)), cfg.weight_block)
    a = rng.integers(-128, 128, (1, k))
    lay = compiler.compile_gemm(cfg, a, wq, None, None, None, raw=True)
    out.append(("decode gemv, 4-bit", lay.image, lay.prog_addr, lay.prog_len))
    # A language model's own shapes: a prompt's 4-bit GEMM with 16-bit inputs (two int8
    # rows per token) and the int8 block-scaled GEMV of an LM head, raw int32 outputs.
    k = 4 * cfg.weight_block * max(1, R // 4)
    wq = q4.quantize(rng.normal(size=(k, 8 * C)), cfg.weight_block)
    lay = compiler.compile_gemm(cfg, rng.integers(-128, 128, (6 * R, k)), wq, None, None,
                                None, raw=True)
    out.append(("prompt gemm, 4-bit, 16-bit inputs", lay.image, lay.prog_addr, lay.prog_len))
    n = 24 * C
    w8 = q4.from_q8_blocks(rng.integers(-127, 128, (k, n)).astype(np.int8),
                           rng.uniform(0.01, 0.1, (k // cfg.weight_block, n)),
                           cfg.weight_block)
    lay = compiler.compile_gemm(cfg, rng.integers(-128, 128, (2, k)), w8, None, None, None,
                                raw=True)
    out.append(("lm head gemv, int8 blocks", lay.image, lay.prog_addr, lay.prog_len))
    layer = vector_bench.LAYER if R >= 16 else vector_bench.SMALL_LAYER
    image, prog_addr, prog_len = vector_bench.programs(cfg, 2, layer)["both"]
    out.append(("vector work beside a gemm", image, prog_addr, prog_len))
    return out


def run_all(cfg, lib):
    """Run :func:`programs` one after another on the fast simulator library ``lib``, each
    on zeroed memory; yield ``(name, regs.drive result, memory)`` for each. Raises if a
    program does not end cleanly."""
    progs = programs(cfg)
    size = max(len(p[1]) for p in progs)
    mem = -(-size // (1 << 20)) << 20
    be = VerilatorBackend(cfg, mem_bytes=mem, path=lib)
    try:
        for name, image, prog_addr, prog_len in progs:
            be.mem[:] = 0
            be.write_mem(0, image)
            out = regs.drive(regs.run_program(prog_addr, prog_len, 0, len(image), 10**8),
                             write=be.write_reg, read=be.read_reg, wait_irq=be.wait_irq)
            if out.timed_out or not out.done or out.error_code != isa.Error.NONE:
                raise RuntimeError(f"training program {name!r} did not end cleanly "
                                   f"(status {out.status:#x}, timed out {out.timed_out})")
            yield name, out, np.array(be.read_mem(0, mem))     # a copy
    finally:
        be.close()


def train(cfg, lib):
    """Run :func:`programs` on the fast simulator library ``lib``; raise on an error."""
    for _ in run_all(cfg, lib):
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m serrano.sw.pgo LIB CONFIG_JSON", file=sys.stderr)
        return 2
    train(Config(**json.loads(argv[1])), argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
