"""Compiles requantized int8 GEMMs into serrano programs and memory images.

One GEMM: ``Y = requantize(A @ W + bias, mult, shift [, relu])``, A (M x K) int8,
W (K x N) int8, Y (M x N) int8. Data layouts in memory:

* **weights**, packed tile after tile in the order the array consumes them
  (:func:`sw.isa_model.pack_weights`): one ``MATMUL`` streams all K-tiles of one N-tile
  as one contiguous run of long bursts;
* **activations** in *k-tile-major* layout (:func:`pack_acts`): ``ceil(K/R)`` blocks of
  ``M`` rows of ``R`` bytes, so one ``LOAD_ACT`` moves an M-block as long bursts;
* **outputs** in *n-tile-major* layout: ``ceil(N/C)`` blocks of ``M`` rows of ``C``
  bytes, one contiguous run per ``STORE`` (a ``raw`` GEMM: rows of ``C`` int32, the
  accumulators unrequantized, :func:`unpack_raw`). With ``R == C`` this is exactly the
  k-tile-major layout of the next GEMM's activations, and, when ``M`` is a multiple of
  ``R``, exactly the packed-weight layout of an ``M x N`` weight matrix: an output can be
  the next GEMM's operand without a host copy (attention's ``P @ V`` uses this).

Schedule of one GEMM: load its parameter sets, then for each M-block (all of A when it
fits the activation buffer, else half of it; at most half of the accumulator) load the
block into one buffer half, one ``LOAD_ACT`` per k-tile (the first output tile's
``MATMUL`` is split by k-tile, each part waiting only for its own load, so compute starts
as soon as the first k-tile has landed), and
run one ``MATMUL`` + ``STORE`` pair per N-tile, output tiles alternating between the
accumulator halves. Tokens order it: the load of block ``b+2`` waits for the last
``MATMUL`` of block ``b``; the ``MATMUL`` of tile ``t+2`` waits for the ``STORE`` of tile
``t``; every ``STORE`` waits for its ``MATMUL``. Every token given is taken within the
GEMM, so the counters are back at zero at its end. GEMMs with more N-tiles than the
parameter slots are split into N-chunks; chunks and GEMMs are separated by ``FENCE``.
"""

from dataclasses import dataclass, field

import numpy as np

from serrano.hw import isa
from . import golden, q4
from .isa_model import Program, pack_params, pack_weights

__all__ = ["ALIGN", "pack_acts", "unpack_out", "unpack_raw", "out_bytes", "choose_block",
           "Memory", "Builder", "GemmLayout", "compile_gemm"]

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


def _unpack(buf, M, N, cfg, dtype):
    nt = _tiles(N, cfg.cols)
    n = nt * M * cfg.cols * np.dtype(dtype).itemsize
    y = np.asarray(buf, np.uint8)[:n].view(dtype).reshape(nt, M, cfg.cols)
    return y.transpose(1, 0, 2).reshape(M, nt * cfg.cols)[:, :N]


def unpack_out(raw, M, N, cfg):
    """Inverse of the n-tile-major output layout: an M x N int8 array."""
    return _unpack(raw, M, N, cfg, np.int8).copy()


def unpack_raw(raw, M, N, cfg):
    """Inverse of the n-tile-major layout of a raw GEMM's output: an M x N int32 array."""
    return _unpack(raw, M, N, cfg, "<i4").astype(np.int32)


def out_bytes(cfg, M, N, raw=False):
    """Bytes of an M x N output in the n-tile-major layout (int8, or int32 if ``raw``)."""
    return _tiles(N, cfg.cols) * M * cfg.cols * (cfg.raw_row_beats if raw else 1)


def choose_block(cfg, M, K, block=None):
    """Rows per M-block: the whole of A when it fits the activation buffer (then its
    weights stream past it once), else half the activation buffer, so the next block
    loads while this one computes; never more than half the accumulator. A requested
    ``block`` smaller than ``M`` is lowered to that half-buffer limit if it exceeds it
    (several blocks alternate between the halves)."""
    kt = _tiles(K, cfg.rows)
    if (block is None or block >= M) and M * kt <= cfg.act_buf_rows \
            and M <= cfg.acc_buf_rows:
        return M
    rows = min(M, block or M, (cfg.act_buf_rows // 2) // kt, cfg.acc_buf_rows)
    if rows < 1:
        raise ValueError(f"K = {K} does not fit the activation buffer of preset "
                         f"{cfg.name!r} ({cfg.act_buf_rows} rows of {cfg.rows})")
    return rows


class Memory:
    """The one bump allocator of device memory, aligned to :data:`ALIGN`.

    ``alloc`` hands out regions from ``base`` up (at most ``size`` bytes in all, if
    given); ``mark``/``release`` free everything allocated after a mark (a stack: scratch
    data of one layer above weights that stay). Regions given ``data`` are kept for
    :meth:`image` (a memory image built on the host, as :func:`compile_gemm` does);
    :class:`sw.runtime.Device` allocates in its device memory with it.
    """

    def __init__(self, base=0, size=None):
        self.base = self.top = _align(base)
        self.size = size
        self.chunks = []

    def alloc(self, nbytes, data=None):
        addr = self.top
        top = _align(addr + max(int(nbytes), 1))
        if self.size is not None and top > self.size:
            raise MemoryError(f"device memory full: {int(nbytes)} more bytes at {addr} "
                              f"exceed its {self.size} bytes")
        self.top = top
        if data is not None:
            self.chunks.append((addr, np.asarray(data, np.uint8).ravel()))
        return addr

    def mark(self):
        return self.top

    def release(self, mark):
        if not self.base <= mark <= self.top:
            raise ValueError(f"mark {mark} is not in [{self.base}, {self.top}]")
        self.top = mark
        self.chunks = [(a, d) for a, d in self.chunks if a < mark]

    def image(self):
        img = np.zeros(self.top, np.uint8)
        for addr, data in self.chunks:
            img[addr:addr + len(data)] = data
        return img


@dataclass
class Gemm:
    """Where one GEMM's operands live, for the program builder."""
    M: int
    K: int
    N: int
    a_addr: int          # k-tile-major activations
    w_addr: int          # packed weights
    p_addr: int          # parameter sets, one per N-tile (unused, may be None, if raw)
    y_addr: int          # n-tile-major outputs
    relu: bool = False
    raw: bool = False    # store the int32 accumulators unrequantized
    # Bytes from one N-tile's weights to the next (default: packed, ``ceil(K/R) * R * C``
    # for int8, ``q4.matmul_bytes(cfg, ceil(K/R), wfmt)`` for Q4 and Q8); larger for a
    # matrix kept with room to grow along K (a KV cache's V).
    w_stride: int = None
    wfmt: int = isa.WeightFormat.INT8     # the weights' format (sw/q4.py for Q4)
    macs: int = field(init=False)

    def __post_init__(self):
        self.macs = self.M * self.K * self.N


class Builder:
    """Appends GEMMs to one program (see the module docstring for the schedule)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.prog = Program()
        self.gemms = []

    def gemm(self, g, *, block=None):
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        kt, nt = _tiles(g.K, R), _tiles(g.N, C)
        mb = choose_block(cfg, g.M, g.K, block)
        blocks = [(s, min(mb, g.M - s)) for s in range(0, g.M, mb)]
        half_act, half_acc = cfg.act_buf_rows // 2, cfg.acc_buf_rows
        # A raw GEMM reads no parameter sets: one chunk, and every STORE names slot 0.
        slots = nt if g.raw else cfg.param_tiles
        row_bytes = C * (cfg.raw_row_beats if g.raw else 1)
        blocked = g.wfmt in isa.BLOCK_FORMATS
        # The first N-tile's MATMULs start where their weights can: at every k-tile for
        # int8, at every block group for Q4 and Q8 (a group's scales come first).
        span = cfg.block_tiles if blocked else 1
        group_bytes = q4.matmul_bytes(cfg, span, g.wfmt) if blocked else 0
        w_stride = g.w_stride or (q4.matmul_bytes(cfg, kt, g.wfmt) if blocked
                                  else kt * R * C)
        if self.prog.insns:
            self.prog.fence()
        for c0 in range(0, nt, slots):
            chunk = range(c0, min(nt, c0 + slots))
            if c0:
                self.prog.fence()
            if not g.raw:
                self.prog.load_param(
                    dram_addr=g.p_addr + c0 * isa.PARAM_BEATS * cfg.bus_bytes,
                    n_tiles=len(chunk), param_tile=0)
            n_tiles_total = len(blocks) * len(chunk)
            t = 0
            for b, (m0, rows) in enumerate(blocks):
                half = b % 2
                # One load per k-tile, each followed by the MATMUL of the first output
                # tile's k-tile it feeds: compute starts as soon as k-tile 0 has landed,
                # and the in-order dispatcher never waits behind a queue of loads.
                for j in chunk:
                    acc_row = (t % 2) * half_acc
                    last_of_block = j == chunk[-1]
                    w_addr = g.w_addr + j * w_stride
                    # (k-tile start, k-tiles, waits for a load) of each MATMUL of tile j
                    parts = ([(i, min(span, kt - i), 1) for i in range(0, kt, span)]
                             if j == chunk[0] else [(0, kt, 0)])
                    for n, (i0, k_tiles, pop) in enumerate(parts):
                        for i in range(i0, i0 + k_tiles) if pop else ():
                            self.prog.load_act(
                                dram_addr=g.a_addr + (i * g.M + m0) * R, dram_stride=0,
                                rows=1, row_beats=rows, buf_row=half * half_act + i,
                                buf_row_step=0, buf_beat_step=kt,
                                pop_next=int(b >= 2 and i == 0),
                                push_next=int(i == i0 + k_tiles - 1))
                        last = n == len(parts) - 1
                        self.prog.matmul(
                            weight_addr=w_addr + (i0 // span * group_bytes if blocked
                                                  else i0 * R * C), wfmt=g.wfmt,
                            act_row=half * half_act + i0, act_stride=kt, act_kstep=1,
                            m=rows, k_tiles=k_tiles, acc_row=acc_row, accumulate=int(i0 > 0),
                            pop_prev=pop,
                            push_prev=int(last and last_of_block and b + 2 < len(blocks)),
                            pop_next=int(t >= 2 and n == 0), push_next=int(last))
                    free = int(t + 2 < n_tiles_total)      # accumulator half released
                    self.prog.store(acc_row=acc_row, m=rows,
                                    param_tile=0 if g.raw else j - c0,
                                    dram_addr=g.y_addr + (j * g.M + m0) * row_bytes,
                                    dram_stride=row_bytes, relu=int(g.relu), raw=int(g.raw),
                                    pop_prev=1, push_prev=free)
                    t += 1
        self.gemms.append(g)
        return g

    def finish(self):
        """Append ``END``; return the program bytes."""
        self.prog.end()
        return bytes(self.prog)


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
    raw: bool = False
    wfmt: int = isa.WeightFormat.INT8

    def output(self, image, cfg):
        unpack = unpack_raw if self.raw else unpack_out
        return unpack(image[self.y_addr:self.y_addr + self.y_bytes], self.M, self.N, cfg)


def program_bytes_bound(cfg, gemms, block=None):
    """An upper bound on the program size of ``gemms`` ((M, K, N) triples), in bytes."""
    n = 1
    for M, K, N in gemms:
        nt = _tiles(N, cfg.cols)
        kt = _tiles(K, cfg.rows)
        blocks = _tiles(M, choose_block(cfg, M, K, block))
        chunks = _tiles(nt, cfg.param_tiles)
        n += 1 + 2 * chunks + blocks * chunks * (2 * kt + 2 * nt)
    return n * isa.INSN_BYTES


def compile_gemm(cfg, a, w, bias, mult, shift, *, relu=False, base=0, block=None,
                 raw=False):
    """The memory image and program of one requantized GEMM (``raw``: of ``A @ W`` as
    int32, with no parameters: ``bias``, ``mult``, ``shift`` and ``relu`` unused).
    ``w`` is an int8 ``K x N`` matrix, or :class:`sw.q4.Q4Weights` or
    :class:`sw.q4.Q8Weights` (a ``Q4`` or ``Q8`` GEMM of their integer weights)."""
    a = golden.check_int8("a", a)
    wfmt = q4.weight_format(w)
    blocked = wfmt in isa.BLOCK_FORMATS
    if not blocked:
        w = golden.check_int8("w", w)
    M, K = a.shape
    if w.shape[0] != K:
        raise ValueError(f"cannot multiply shapes {a.shape} and {w.shape}")
    N = w.shape[1]
    mem = Memory(base)
    prog_addr = mem.alloc(program_bytes_bound(cfg, [(M, K, N)], block))
    wpack = q4.pack(w, cfg) if blocked else pack_weights(w, cfg)
    w_addr = mem.alloc(len(wpack), wpack)
    apack = pack_acts(a, cfg)
    a_addr = mem.alloc(len(apack), apack)
    p_addr = None
    if not raw:
        ppack = pack_params(bias, mult, shift, cfg)
        p_addr = mem.alloc(len(ppack), ppack)
    y_bytes = out_bytes(cfg, M, N, raw)
    y_addr = mem.alloc(y_bytes)
    b = Builder(cfg)
    b.gemm(Gemm(M, K, N, a_addr, w_addr, p_addr, y_addr, relu, raw, wfmt=wfmt), block=block)
    prog = np.frombuffer(b.finish(), np.uint8)
    mem.chunks.append((prog_addr, prog))
    return GemmLayout(image=mem.image(), prog_addr=prog_addr,
                      prog_len=len(prog) // isa.INSN_BYTES, w_addr=w_addr, a_addr=a_addr,
                      p_addr=p_addr, y_addr=y_addr, y_bytes=y_bytes, M=M, K=K, N=N, raw=raw,
                      wfmt=wfmt)
