"""Compiles an int8 GEMM with requantization into a serrano program and memory image.

``Y = requantize(A @ W + bias, mult, shift)``, A (M x K) int8, W (K x N) int8, Y (M x N)
int8. Layout in memory, each region aligned to ``ALIGN`` bytes:

* the program;
* W packed tile after tile in the order the array consumes it (:func:`pack_weights`):
  one ``MATMUL`` streams all K-tiles of one N-tile as one contiguous run;
* A in *k-tile-major* layout: ``ceil(K/R)`` blocks of ``M`` rows of ``R`` bytes
  (:func:`pack_acts`), so one ``LOAD_ACT`` moves each M-block as long bursts;
* the parameter sets, one per N-tile;
* Y in *n-tile-major* layout: ``ceil(N/C)`` blocks of ``M`` rows of ``C`` bytes, each
  ``STORE`` one contiguous run (:func:`unpack_out` turns it back into M x N).

Schedule: the parameters are loaded once; A is cut into M-blocks that fit half of the
activation buffer and half of the accumulator; blocks alternate between the buffer
halves (load of block b+1 overlaps the matmuls of block b), output tiles alternate
between the accumulator halves (store of tile t overlaps the matmul of tile t+1), all
ordered by dependency tokens (see :mod:`hw.isa`).
"""

from dataclasses import dataclass

import numpy as np

from hw import isa
from . import golden
from .isa_model import Program, pack_params, pack_weights

__all__ = ["ALIGN", "GemmLayout", "compile_gemm", "pack_acts", "unpack_out", "choose_block"]

ALIGN = 64


def _tiles(n, size):
    return -(-n // size)


def _align(n):
    return -(-n // ALIGN) * ALIGN


def pack_acts(a, cfg):
    """A (M x K) int8 as ``ceil(K/R)`` blocks of M rows of R bytes (zero padded)."""
    a = golden.check_int8("a", a)
    M, K = a.shape
    kt = _tiles(K, cfg.rows)
    padded = np.zeros((M, kt * cfg.rows), np.int8)
    padded[:, :K] = a
    return padded.reshape(M, kt, cfg.rows).transpose(1, 0, 2).ravel().view(np.uint8).copy()


def unpack_out(raw, M, N, cfg):
    """Inverse of the n-tile-major output layout: an M x N int8 array."""
    nt = _tiles(N, cfg.cols)
    y = np.asarray(raw, np.uint8).view(np.int8).reshape(nt, M, cfg.cols)
    return y.transpose(1, 0, 2).reshape(M, nt * cfg.cols)[:, :N].copy()


def choose_block(cfg, M, K):
    """Rows per M-block: half the activation buffer and half the accumulator."""
    kt = _tiles(K, cfg.rows)
    rows = min(M, (cfg.act_buf_rows // 2) // kt, cfg.acc_buf_rows)
    if rows < 1:
        raise ValueError(f"K = {K} does not fit the activation buffer of preset "
                         f"{cfg.name!r} ({cfg.act_buf_rows} rows of {cfg.rows})")
    return rows


@dataclass
class GemmLayout:
    image: np.ndarray        # the whole memory image, uint8
    prog_addr: int
    prog_len: int
    w_addr: int
    a_addr: int
    p_addr: int
    y_addr: int
    y_bytes: int
    M: int
    K: int
    N: int

    def output(self, image, cfg):
        return unpack_out(image[self.y_addr:self.y_addr + self.y_bytes], self.M, self.N, cfg)


def compile_gemm(cfg, a, w, bias, mult, shift, *, relu=False, base=0, block=None):
    """The memory image and program of one requantized GEMM (see module docstring)."""
    a = golden.check_int8("a", a)
    w = golden.check_int8("w", w)
    M, K = a.shape
    if w.shape[0] != K:
        raise ValueError(f"cannot multiply shapes {a.shape} and {w.shape}")
    N = w.shape[1]
    R, C = cfg.rows, cfg.cols
    kt, nt = _tiles(K, R), _tiles(N, C)
    if nt > cfg.param_tiles:
        raise ValueError(f"N = {N} needs {nt} parameter sets; preset {cfg.name!r} "
                         f"holds {cfg.param_tiles}")
    mb = block or choose_block(cfg, M, K)
    blocks = [(s, min(mb, M - s)) for s in range(0, M, mb)]
    half_act = cfg.act_buf_rows // 2
    half_acc = cfg.acc_buf_rows

    wpack = pack_weights(w, cfg)
    apack = pack_acts(a, cfg)
    ppack = pack_params(bias, mult, shift, cfg)
    n_insns = 2 + len(blocks) * (1 + 2 * nt)

    prog_addr = _align(base)
    w_addr = _align(prog_addr + n_insns * isa.INSN_BYTES)
    a_addr = _align(w_addr + len(wpack))
    p_addr = _align(a_addr + len(apack))
    y_addr = _align(p_addr + len(ppack))
    y_bytes = nt * M * C
    end = _align(y_addr + y_bytes)

    prog = Program()
    prog.load_param(dram_addr=p_addr, n_tiles=nt, param_tile=0)
    t = 0
    for b, (m0, rows) in enumerate(blocks):
        half = b % 2
        # k-tile i of this block: rows m0.. of A's block i, into half `half`, row m at
        # buffer row half*half_act + m*kt + i.
        prog.load_act(dram_addr=a_addr + m0 * R, dram_stride=M * R, rows=kt, row_beats=rows,
                      buf_row=half * half_act, buf_row_step=1, buf_beat_step=kt,
                      pop_next=int(b >= 2), push_next=1)
        for j in range(nt):
            acc_row = (t % 2) * half_acc
            prog.matmul(weight_addr=w_addr + j * kt * R * C, act_row=half * half_act,
                        act_stride=kt, act_kstep=1, m=rows, k_tiles=kt, acc_row=acc_row,
                        accumulate=0, pop_prev=int(j == 0), push_prev=int(j == nt - 1),
                        pop_next=int(t >= 2), push_next=1)
            prog.store(acc_row=acc_row, m=rows, param_tile=j,
                       dram_addr=y_addr + (j * M + m0) * C, dram_stride=C, relu=int(relu),
                       pop_prev=1, push_prev=1)
            t += 1
    prog.end()
    assert len(prog) == n_insns

    image = np.zeros(end, np.uint8)
    image[prog_addr:prog_addr + n_insns * isa.INSN_BYTES] = prog.to_array()
    image[w_addr:w_addr + len(wpack)] = wpack
    image[a_addr:a_addr + len(apack)] = apack
    image[p_addr:p_addr + len(ppack)] = ppack
    return GemmLayout(image=image, prog_addr=prog_addr, prog_len=n_insns, w_addr=w_addr,
                      a_addr=a_addr, p_addr=p_addr, y_addr=y_addr, y_bytes=y_bytes,
                      M=M, K=K, N=N)
