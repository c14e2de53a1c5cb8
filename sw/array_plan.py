"""Plans the cycle-by-cycle stimulus of the bare systolic array.

A *plan* is what a controller (or a testbench standing in for one) presents to the
array's ``weight`` and ``act`` ports in each cycle. It follows the array's contract
(see :class:`hw.array.SystolicArray`): tile ``i`` lives in bank ``i % 2``; its ``R``
weight rows are written after the last activation row that used that bank before (same
cycle allowed) and before its own first activation row, one weight row per cycle. With
``M >= R`` rows per tile, activation rows then follow each other without a gap.

The same plan drives the Amaranth simulator tests, the cocotb tests under Verilator and
Icarus, and ``serrano gemm``.
"""

from dataclasses import dataclass

import numpy as np

from . import golden

__all__ = ["ArrayPlan", "plan_tiles", "gemm_tiles", "gemm_from_rows"]


@dataclass
class ArrayPlan:
    """Per-cycle port values, ``n_cycles`` long, plus where each result row belongs."""

    R: int
    C: int
    act_valid: np.ndarray    # (T,) bool
    act_data: np.ndarray     # (T, R) int8
    act_bank: np.ndarray     # (T,) 0/1
    w_valid: np.ndarray      # (T,) bool
    w_data: np.ndarray       # (T, C) int8
    w_row: np.ndarray        # (T,) int
    w_bank: np.ndarray       # (T,) 0/1
    row_tile: np.ndarray     # (rows,) tile index of each activation row, in order
    expected: np.ndarray     # (rows, C) int32, the golden result of each row, in order
    first_act_cycle: int
    last_act_cycle: int
    # (T,) 0/1: the weight beat carries two rows of 4-bit codes (``weight.payload.pair``);
    # None: int8 rows only.
    w_pair: np.ndarray = None

    @property
    def n_cycles(self):
        return len(self.act_valid)

    @property
    def n_rows(self):
        return len(self.row_tile)

    def total_cycles(self, latency):
        """Cycles from the first weight row in to the last result row out, inclusive."""
        return self.last_act_cycle + latency + 1


def plan_tiles(tiles, R, C, latency):
    """Schedule ``tiles``, a list of ``(W, A)`` pairs (W: R x C int8, A: M_i x R int8).

    The plan is padded with idle cycles so the last result row has left the array.
    """
    if not tiles:
        raise ValueError("plan_tiles needs at least one tile")
    events_w, events_a = [], []          # (cycle, row, bank, data), (cycle, bank, data)
    w_free = 0                           # next cycle the weight port is free
    a_free = 0                           # next cycle the activation port is free
    last_use = [-1, -1]                  # last activation cycle that used each bank
    row_tile, expected = [], []
    for i, (w, a) in enumerate(tiles):
        w = golden.check_int8("weight tile", w)
        a = golden.check_int8("activation block", a)
        if w.shape != (R, C) or a.ndim != 2 or a.shape[1] != R or len(a) == 0:
            raise ValueError(f"tile {i}: want W {R}x{C} and A Mx{R} with M >= 1, "
                             f"got {w.shape} and {a.shape}")
        bank = i % 2
        start = max(w_free, last_use[bank])
        for r in range(R):
            events_w.append((start + r, r, bank, w[r]))
        w_free = start + R
        first = max(a_free, w_free)
        for k, row in enumerate(a):
            events_a.append((first + k, bank, row))
        a_free = first + len(a)
        last_use[bank] = a_free - 1
        row_tile += [i] * len(a)
        expected.append(golden.matmul(a, w))

    first_act = events_a[0][0]
    last_act = events_a[-1][0]
    T = last_act + latency + 1
    plan = ArrayPlan(
        R=R, C=C,
        act_valid=np.zeros(T, bool), act_data=np.zeros((T, R), np.int8),
        act_bank=np.zeros(T, np.uint8),
        w_valid=np.zeros(T, bool), w_data=np.zeros((T, C), np.int8),
        w_row=np.zeros(T, np.int64), w_bank=np.zeros(T, np.uint8),
        row_tile=np.array(row_tile), expected=np.concatenate(expected),
        first_act_cycle=first_act, last_act_cycle=last_act)
    for cyc, r, bank, data in events_w:
        plan.w_valid[cyc] = True
        plan.w_row[cyc] = r
        plan.w_bank[cyc] = bank
        plan.w_data[cyc] = data
    for cyc, bank, data in events_a:
        plan.act_valid[cyc] = True
        plan.act_bank[cyc] = bank
        plan.act_data[cyc] = data
    return plan


def gemm_tiles(a, w, R, C):
    """Cut an M x K by K x N GEMM into array tiles, zero-padding K to R and N to C.

    Returns the tile list for :func:`plan_tiles` (N-tile outer, K-tile inner) and the
    tile grid ``(k_tiles, n_tiles)``.
    """
    a = golden.check_int8("a", a)
    w = golden.check_int8("w", w)
    if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[0]:
        raise ValueError(f"cannot multiply shapes {a.shape} and {w.shape}")
    M, K = a.shape
    N = w.shape[1]
    kt, nt = -(-K // R), -(-N // C)
    a_p = np.zeros((M, kt * R), np.int64)
    a_p[:, :K] = a
    w_p = np.zeros((kt * R, nt * C), np.int64)
    w_p[:K, :N] = w
    tiles = []
    for j in range(nt):
        for i in range(kt):
            tiles.append((w_p[i * R:(i + 1) * R, j * C:(j + 1) * C],
                          a_p[:, i * R:(i + 1) * R]))
    return tiles, (kt, nt)


def gemm_from_rows(rows, M, N, grid, C):
    """Sum the per-tile result rows of :func:`gemm_tiles` across K into the M x N result."""
    kt, nt = grid
    rows = np.asarray(rows, np.int64).reshape(nt, kt, M, C)
    out = rows.sum(axis=1)                       # (nt, M, C)
    out = out.transpose(1, 0, 2).reshape(M, nt * C)[:, :N]
    return golden.wrap_int32(out)
