"""``serrano regress``: a constrained-random campaign, RTL against the golden ISA model.

Each seed draws, reproducibly: a preset (``tiny`` or ``fpga``; ``default`` on Verilator
only), a GEMM shape (sizes that are not multiples of the array, ``K = 1``, long ``K``,
more output tiles than parameter slots), the weights' format (int8, or on three seeds in
ten a block format of ``sw/q4.py``: 4-bit codes with block scales and offsets, sometimes
all at their extremes, or 8-bit codes with block scales),
requantization parameters with corners (zero
multiplier, largest shift, saturation both ways, ReLU), an M-block size, a base address
near a 4 KiB boundary, the memory timing (``AxiRam`` with random pauses on all five
channels, or the Verilog memory with a read latency from 1 to 100 cycles and a write
response latency from 1 to 40; ``default`` always the latter), output bytes that start
as random noise (so an unwritten byte shows), and what happens to the run
(:data:`KINDS`, dealt from a shuffled deck of :data:`DECK_SIZE` seeds so that every kind
comes up several times in any 200 seeds). Four clean runs in five also end with random
vector work (:func:`vector_epilogue`: one to three ``VEC`` instructions of any
operation, random multipliers, shifts and lengths, on rows loaded after a ``FENCE`` and
read out through an identity ``MATMUL``). What happens to the run:

* nothing: the final memory must equal the golden model's byte for byte;
* a reset at a random cycle within the run (``reset_soft`` through ``ctrl``,
  ``reset_hard`` through the ``rst`` pin, which resets the memory model's queues too),
  then the whole program: the memory must still equal the golden model's, the status
  read right after the reset must be idle without error, and the run must have been
  under way when the reset came (the reset cycle is drawn below a lower bound of the
  run's length: the golden model's read beats plus one memory latency);
* a program fault (an undefined opcode, a buffer out of range, a zero count, a DMA
  outside the window, a misaligned DMA, a program without ``END``): the golden model's
  error code;
* a bus fault: ``read_error`` answers SLVERR to one burst of the activations, weights,
  parameters or program, ``write_error`` to one burst of the outputs, ``decerr`` moves
  one instruction's DMA beyond the end of memory, which answers DECERR (a read, or a
  write for a ``STORE``). The burst is one that surely starts at its address whatever the
  DMA engines' splitting: the first burst of an instruction's transfer, or one starting
  on a 4 KiB boundary inside a region (no AXI burst crosses one); for an error on the
  program's fetch, the program is placed so that such a boundary falls at a random
  instruction. Three times in four the burst is not the region's first (mid-run).

* random instruction streams (``streams``, :func:`stream_case`): not a compiled GEMM but
  programs of any legal shape that :mod:`sw.progen` draws (every opcode, fields across
  their ranges, random tokens), legal and illegal alternating (each field out of range,
  token misuse that must hang until the host's watchdog), checked against the golden
  model on the whole memory image; :data:`STREAMS_PER_SEED` run one after another on
  one running simulator. A replay shrinks a failing stream to a minimal one and prints
  it;
* a language model generating tokens (``llm``, :func:`llm_case`): a seeded random
  ``llama_tiny`` through the driver, its KV cache in device memory, every call's memory
  against the golden model's (on the fast simulator).

Every RTL run but one in 25 (:data:`FRESH_SHARE`) goes to the worker's running
simulation of its design (:func:`sim.runner.session`: reset through ``rst`` before each
case, as at power-on), which saves the simulator's start-up (about 2 s) per run.

After any error the status must be exactly the error code, memory outside the outputs
unchanged, every output byte either untouched or the golden value (no garbage from
errored reads), and the erroring write burst's first beat untouched. Runs on the Verilog
memory also soft-reset the accelerator after the end: the first status read that is not
busy must already be idle, without done or error. Nothing may hang.

It ends with ``N passed, N failed`` and a coverage table; each failure prints the
one-line command that replays it.
"""

import os
import sys
import time
import traceback
from collections import Counter

import numpy as np

from serrano.hw import isa, regs
from serrano.hw.config import get_preset
from . import compiler, golden, isa_model, progen, q4, requant
from .gemm import random_q4

__all__ = ["KINDS", "PROGRAM_FAULTS", "BUS_FAULTS", "FAULTS", "RESETS", "DECK_SIZE", "BINS",
           "burst_starts", "changed_outside", "bad_outputs", "written_in", "run_case",
           "open_client", "run_campaign"]

PROGRAM_FAULTS = ("bad_opcode", "bad_buffer", "bad_count", "window", "align", "no_end")
BUS_FAULTS = ("read_error", "write_error", "decerr")
FAULTS = PROGRAM_FAULTS + BUS_FAULTS
RESETS = ("reset_soft", "reset_hard")
#: What a seed does to its run (``None``: a clean run; ``"streams"``: random instruction
#: streams instead of a compiled GEMM, :func:`stream_case`; ``"llm"``: a language model
#: generating tokens with its KV cache in device memory, :func:`llm_case`).
KINDS = (None,) + RESETS + FAULTS + ("streams", "llm")
# One deck of DECK_SIZE seeds, shuffled per deck: exact shares, random order.
_DECK = ([None] * 8 + ["reset_soft"] * 4 + ["reset_hard"] * 4 + list(PROGRAM_FAULTS) * 2
         + ["read_error"] * 7 + ["write_error"] * 3 + ["decerr"] * 3 + ["streams"] * 6
         + ["llm"] * 3)
#: Streams a ``streams`` seed runs one after another on one running simulator: the fast
#: simulator under Verilator (soft resets between them), the running Icarus simulation of
#: :func:`sim.system.run_system` (reset between them).
STREAMS_PER_SEED = {"verilator": 12, "icarus": 4}
#: The share of runs in a simulation of their own, from power-on; the others run on the
#: worker's running simulation of the design (:func:`sim.runner.session`).
FRESH_SHARE = 0.04
DECK_SIZE = len(_DECK)
READ_REGIONS = ("act", "weight", "param", "prog")

BINS = (
    [f"op:{op.name}" for op in (isa.Op.LOAD_ACT, isa.Op.LOAD_PARAM, isa.Op.MATMUL,
                                isa.Op.STORE, isa.Op.FENCE, isa.Op.END, isa.Op.VEC)]
    + ["fence:stores"]
    + ["acc:overwrite", "acc:accumulate"]
    + [f"error:{e.name}" for e in (isa.Error.BAD_OPCODE, isa.Error.BAD_BUFFER,
                                   isa.Error.BAD_COUNT, isa.Error.DMA_WINDOW,
                                   isa.Error.DMA_ALIGN, isa.Error.AXI_SLVERR,
                                   isa.Error.AXI_DECERR, isa.Error.NO_END)]
    + ["error:write:AXI_SLVERR", "error:write:AXI_DECERR"]
    + [f"fault:read_error:{r}" for r in READ_REGIONS]
    + ["fault:read_error_mid", "fault:write_error", "fault:write_error_mid",
       "fault:decerr_read", "fault:decerr_write"]
    + ["reset:soft_mid_run", "reset:hard_mid_run", "reset:soft_after_end",
       "reset:soft_after_error"]
    + ["stall:weight", "stall:act", "stall:insn", "burst_crosses_4k", "k_equals_1",
       "several_m_blocks", "saturate_high", "saturate_low", "zero_multiplier", "shift_63",
       "relu", "store_raw", "mem:axiram_pauses", "mem:latency_gt_60", "param_chunks",
       "weights:q4", "weights:q4_partial_block", "weights:q4_extremes", "weights:q8"]
    + [f"vec:{v.name}" for v in isa.VecOp]
    + ["vec:masked", "vec:causal", "vec:in_place", "vec:several_vectors",
       "vec:repeating_b", "vec:interleaved", "vec:wide", "vec:wide_add", "vec:wide_mul",
       "vec:wide_rope", "vec:wide_softmax", "vec:wide_dynq", "vec:norm_beta", "vec:norm_dynq",
       "store:rowscale",
       "vec:wide_argmax", "vec:wide_out", "mm:pair"]
    + [f"stream:{k}" for k in ("legal",) + tuple(progen.ILLEGAL_KINDS)]
    + ["stream:persistent", "stream:position_rel", "stream:guard_skip", "sim:fresh",
       "sim:running"]
    + ["llm:host_ops", "llm:chip_ops", "llm:int8", "llm:int4", "llm:decode",
       "llm:persistent"]
)


def _kind(seed):
    """The kind of run of ``seed``: its card in the shuffled deck it falls in."""
    deck = np.random.default_rng([seed // DECK_SIZE, 0x5EED]).permutation(DECK_SIZE)
    return _DECK[int(deck[seed % DECK_SIZE])]


def _case(seed, sims):
    """``(rng, sim, cfg, m, k, n, kind)`` of ``seed``; ``rng`` continues the draws."""
    rng = np.random.default_rng(seed)
    sim = sims[int(rng.integers(len(sims)))]
    presets = ["tiny", "tiny", "fpga"] + (["default"] if sim == "verilator" else [])
    cfg = get_preset(presets[int(rng.integers(len(presets)))])
    if rng.random() < 0.1:
        # More output tiles than parameter slots (N-chunks), kept cheap: small M and K.
        m = int(rng.integers(1, cfg.rows + 1))
        k = int(rng.integers(1, 2 * cfg.rows + 1))
        n = cfg.param_tiles * cfg.cols + int(rng.integers(1, 2 * cfg.cols + 1))
    else:
        m = int(rng.integers(1, 3 * cfg.rows + 1))
        k = 1 if rng.random() < 0.15 else int(rng.integers(1, 6 * cfg.rows))
        if rng.random() < 0.1:
            k = int(rng.integers(20, 40)) * cfg.rows + int(rng.integers(cfg.rows))  # long K
        n = int(rng.integers(1, 5 * cfg.cols))
    return rng, sim, cfg, m, k, n, _kind(seed)


def _operands(rng, cfg, m, k, n, fmt="int8"):
    """``a``, ``w`` (int8, or :class:`sw.q4.Q4Weights` or :class:`sw.q4.Q8Weights` for
    ``fmt`` ``q4``, ``q8``), requantization parameters, relu, and the int32 ``a @ w`` (of
    the integer weights for a block format)."""
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    extremes = rng.random() < 0.3
    if extremes:                                # large sums: all extremes
        a = np.where(rng.random((m, k)) < 0.5, -128, 127)
        w = np.where(rng.random((k, n)) < 0.5, -128, 127)
    if fmt == "q4":
        w = random_q4(k, n, int(rng.integers(1 << 30)), cfg)
        if extremes:                            # and the format's own extremes
            w.codes[:] = np.where(rng.random(w.codes.shape) < 0.5, 0, q4.CODE_MAX)
            w.d[:] = q4.D_MAX
            w.f[:] = np.where(rng.random(w.f.shape) < 0.5, q4.F_MIN, q4.F_MAX)
    elif fmt == "q8":                           # the int8 draw above as codes, extremes kept
        nb = -(-k // cfg.weight_block)
        w = q4.Q8Weights(w.astype(np.int8),
                         rng.integers(0, q4.D_MAX + 1, (nb, n)).astype(np.uint8),
                         np.ones(n), cfg.weight_block)
        if extremes:
            w.d[:] = q4.D_MAX
    if fmt != "int8":
        acc = golden.wrap_int32(a.astype(np.int64) @ w.integer().astype(np.int64))
    else:
        acc = golden.matmul(a, w)
    acc = acc.astype(np.int64)
    bias = rng.integers(-2**20, 2**20, n)
    peak = np.maximum(np.abs(acc + bias).max(axis=0), 1)
    scales = 127.0 / peak * rng.choice([0.5, 1.0, 4.0, 64.0], n)   # some saturate
    mult, shift = (np.array(v) for v in zip(*(requant.quantize_multiplier(s)
                                               for s in scales)))
    mult[rng.random(n) < 0.1] = 0
    big = rng.random(n) < 0.1
    shift[big] = 63
    return a, w, bias, mult, shift, bool(rng.random() < 0.3), acc, extremes


# --------------------------------------------------------------------------------------
# Where bursts surely start


def _decode(image, prog_addr, n_insns):
    return [isa.decode_op(image[prog_addr + i * isa.INSN_BYTES:
                                prog_addr + (i + 1) * isa.INSN_BYTES])
            for i in range(n_insns)]


def _regions(cfg, layout):
    """``{region: (first, end)}``: the bytes of each operand, every one of them accessed
    by the compiled program (the padding between them is not)."""
    kt = -(-layout.K // cfg.rows)
    nt = -(-layout.N // cfg.cols)
    regions = {
        "act": (layout.a_addr, layout.a_addr + layout.M * kt * cfg.rows),
        "weight": (layout.w_addr, layout.w_addr + nt * isa_model.weight_bytes(
            cfg, {"k_tiles": kt, "wfmt": layout.wfmt})),
        "param": (layout.p_addr, (layout.p_addr or 0) + nt * isa.PARAM_BEATS * cfg.bus_bytes),
        "prog": (layout.prog_addr, layout.prog_addr + layout.prog_len * isa.INSN_BYTES),
        "out": (layout.y_addr, layout.y_addr + layout.y_bytes),
    }
    if layout.raw:                   # a raw GEMM reads no parameters
        del regions["param"]
    return regions


def burst_starts(cfg, layout):
    """``{region: sorted addresses}`` at which some AXI burst of the compiled program
    starts, whatever the engines' burst splitting: each instruction's first DMA address
    (each row's, for a ``LOAD_ACT``, since bursts never span rows), the program's
    address, and every 4 KiB boundary strictly inside a region (all of a region's bytes
    are accessed and no burst crosses a 4 KiB boundary)."""
    regions = _regions(cfg, layout)
    starts = {name: set() for name in regions}
    starts["prog"].add(layout.prog_addr)
    field = {isa.Op.LOAD_ACT: ("act", "dram_addr"), isa.Op.LOAD_PARAM: ("param", "dram_addr"),
             isa.Op.MATMUL: ("weight", "weight_addr"), isa.Op.STORE: ("out", "dram_addr")}
    for op, _hdr, body in _decode(layout.image, layout.prog_addr, layout.prog_len):
        if op in field:
            region, name = field[op]
            rows = body["rows"] if op == isa.Op.LOAD_ACT else 1
            stride = body["dram_stride"] if op == isa.Op.LOAD_ACT else 0
            starts[region].update(body[name] + r * stride for r in range(rows))
    for name, (first, end) in regions.items():
        starts[name].update(range((first // 4096 + 1) * 4096, end, 4096))
        assert all(first <= a < end for a in starts[name]), name
    return {name: sorted(s) for name, s in starts.items()}


# --------------------------------------------------------------------------------------
# What each kind of run does


class _Plan:
    """How one seed runs: the image and program length handed to the RTL, the run's
    keyword arguments, the expected error, the golden result to compare with (or whose
    ops count for coverage), bytes that must stay untouched, a description, bins."""

    def __init__(self, image, n_insns, gold, prog_addr):
        self.image = image
        self.n_insns = n_insns
        self.prog_addr = prog_addr
        self.kw = {}
        self.system = False              # needs the Verilog memory
        self.expect = gold.error
        self.gold = gold                 # compared with when expect is NONE; else ops
        self.ops_ran = True              # gold.ops are what the RTL executed
        self.untouched = None            # (first, end) that must keep the image's bytes
        self.note = ""
        self.bins = set()


def _program_fault(rng, fault, cfg, layout, image, clean):
    image = image.copy()
    n = layout.prog_len
    kw = {}
    at = layout.prog_addr + int(rng.integers(n - 1)) * isa.INSN_BYTES   # before END
    if fault == "bad_opcode":
        image[at] = (image[at] & 0xF0) | int(rng.choice([0, 9, 12, 15]))
    elif fault == "no_end":
        n -= 1
    elif fault in ("bad_buffer", "bad_count", "align"):
        prog = isa_model.Program()
        if fault == "bad_buffer":
            prog.load_act(dram_addr=layout.a_addr, dram_stride=cfg.bus_bytes, rows=2,
                          row_beats=1, buf_row=cfg.act_buf_rows - 1, buf_row_step=1,
                          buf_beat_step=1)
        elif fault == "bad_count":
            prog.store(acc_row=0, m=0, param_tile=0, dram_addr=layout.y_addr, dram_stride=4)
        else:
            prog.load_act(dram_addr=layout.a_addr + 1, dram_stride=cfg.bus_bytes, rows=1,
                          row_beats=1, buf_row=0, buf_row_step=1, buf_beat_step=1)
        image[at:at + isa.INSN_BYTES] = prog.to_array()
    elif fault == "window":
        kw["limit"] = layout.w_addr + int(rng.integers(1, 4)) * cfg.bus_bytes
    gold = isa_model.run_program(cfg, image, layout.prog_addr, n, check_deps=False,
                                 limit=kw.get("limit"))
    plan = _Plan(image, n, gold, layout.prog_addr)
    plan.kw = kw
    return plan


def _bus_fault(rng, fault, region, cfg, layout, image, clean):
    plan = _Plan(image, layout.prog_len, clean, layout.prog_addr)
    plan.system = True
    plan.ops_ran = False
    bb = cfg.bus_bytes
    starts = burst_starts(cfg, layout)
    if fault in ("read_error", "write_error"):
        region = region if fault == "read_error" else "out"
        first = _regions(cfg, layout)[region][0]
        cands = starts[region]
        if len(cands) > 1 and (region == "prog" or rng.random() < 0.75):
            cands = cands[1:]                       # mostly mid-run, not the first burst
        addr = int(cands[int(rng.integers(len(cands)))])
        plan.kw["err_window"] = (addr, addr + bb)
        plan.expect = isa.Error.AXI_SLVERR
        mid = addr > first
        plan.note = f"{fault} {region} burst at {addr:#x}" + (" (mid)" if mid else "")
        if fault == "read_error":
            plan.bins |= {f"fault:read_error:{region}"} | ({"fault:read_error_mid"} if mid
                                                           else set())
        else:
            plan.untouched = (addr, addr + bb)      # the erroring burst's first beat
            plan.bins |= {"fault:write_error"} | ({"fault:write_error_mid"} if mid
                                                  else set())
    else:                                           # decerr: an access beyond memory
        from serrano.sim.system import memory_words
        end = memory_words(cfg, len(image)) * bb
        insns = _decode(image, layout.prog_addr, layout.prog_len)
        addr_field = {isa.Op.LOAD_ACT: "dram_addr", isa.Op.LOAD_PARAM: "dram_addr",
                      isa.Op.MATMUL: "weight_addr", isa.Op.STORE: "dram_addr"}
        write = rng.random() < 0.4
        picks = [i for i, (op, _, _) in enumerate(insns)
                 if op in addr_field and (op == isa.Op.STORE) == write]
        i = picks[int(rng.integers(len(picks)))]
        op, hdr, body = insns[i]
        name = addr_field[op]
        if op == isa.Op.STORE:          # its outputs are never written anywhere
            plan.untouched = (body[name], body[name] + (body["m"] - 1) * body["dram_stride"]
                              + cfg.cols)
        body = dict(body, **{name: body[name] + end})
        flags = {f: hdr[f] for f in ("pop_prev", "pop_next", "push_prev", "push_next")}
        at = layout.prog_addr + i * isa.INSN_BYTES
        plan.image = image.copy()
        plan.image[at:at + isa.INSN_BYTES] = np.frombuffer(isa.encode(op, **flags, **body),
                                                           np.uint8)
        plan.kw.update(limit=2 * end, memory_bytes=end)
        plan.expect = isa.Error.AXI_DECERR
        plan.note = f"decerr insn {i} {op.name} at {body[name]:#x}"
        plan.bins.add("fault:decerr_write" if write else "fault:decerr_read")
    return plan


def _reset(rng, kind, cfg, image, layout, clean, latency):
    plan = _Plan(image, layout.prog_len, clean, layout.prog_addr)
    plan.system = True
    # The run cannot end sooner: every read beat takes a cycle, after one latency.
    # Counting starts a few cycles after the start (the register write's response).
    bound = clean.dma_read_bytes // cfg.bus_bytes + latency - 4
    cycle = int(rng.integers(1, max(2, bound + 1)))
    plan.kw.update(reset_after=cycle, reset_kind=kind.split("_")[1])
    plan.note = f"{kind} after {cycle} cycles"
    if kind == "reset_hard":
        # From 1 cycle: the core's reset is a register one cycle behind `rst`, and the
        # top masks the core's AXI handshakes in that cycle (hw/top.py).
        plan.kw["hard_reset_cycles"] = int(rng.integers(1, 7))
        plan.note += f", rst high {plan.kw['hard_reset_cycles']} cycles"
    return plan


# --------------------------------------------------------------------------------------
# Checks (each returns the addresses that break it, empty when it holds)


def changed_outside(image, final, y_addr, y_bytes):
    """Addresses outside the outputs ``[y_addr, y_addr + y_bytes)`` where ``final``
    differs from ``image``."""
    diff = np.asarray(final) != np.asarray(image)
    diff[y_addr:y_addr + y_bytes] = False
    return np.flatnonzero(diff)


def bad_outputs(image, final, gold, y_addr, y_bytes):
    """Output addresses whose byte in ``final`` is neither the one of ``image`` (not
    written) nor the golden one (``gold``): what a faulted run must never leave."""
    y = slice(y_addr, y_addr + y_bytes)
    f, i, g = np.asarray(final)[y], np.asarray(image)[y], np.asarray(gold)[y]
    return y_addr + np.flatnonzero((f != i) & (f != g))


def written_in(image, final, first, end):
    """Addresses in ``[first, end)`` where ``final`` differs from ``image``."""
    return first + np.flatnonzero(np.asarray(final)[first:end] != np.asarray(image)[first:end])


def _first(addrs):
    return f"{len(addrs)} bytes, first {int(addrs[0]):#x}"


def _check_end_reset(rtl):
    """The soft reset after the end: idle at once, done and error cleared."""
    if rtl.end_reset_settled != 0:
        return f"not idle after a soft reset at the end: status {rtl.end_reset_settled:#x}"
    if rtl.end_reset_status != 0:
        return (f"soft reset at the end: the first status read not busy was "
                f"{rtl.end_reset_status:#x} (done/error not yet cleared), the next 0")
    return None


def _check(plan, kind, layout, clean, rtl):
    """The first broken expectation, as a message, or None."""
    image = plan.image                  # what the RTL started from
    if rtl.timed_out:
        return "watchdog (the accelerator hung)"
    if rtl.error != plan.expect:
        return f"error {rtl.error.name}, expected {plan.expect.name}"
    if plan.expect == isa.Error.NONE:
        if rtl.status != regs.STATUS_DONE:
            return f"status {rtl.status:#x} at the end, expected done ({regs.STATUS_DONE:#x})"
        if not np.array_equal(rtl.image, plan.gold.mem):
            diff = np.flatnonzero(rtl.image != plan.gold.mem)
            return f"memory differs from the golden model at {_first(diff)}"
        if kind in RESETS:
            if rtl.reset_status != 0:
                return f"status {rtl.reset_status:#x} right after the reset, expected idle 0"
            if not rtl.reset_mid_run:
                return "the run had already ended when the reset came"
            if rtl.counters["instructions"] != plan.gold.instructions:
                return (f"{rtl.counters['instructions']} instructions counted after the "
                        f"reset, expected {plan.gold.instructions} (a whole run)")
    else:
        want = regs.STATUS_ERROR | (int(plan.expect) << regs.STATUS_CODE_SHIFT)
        if rtl.status != want:
            return f"status {rtl.status:#x} after the error, expected {want:#x}"
        bad = changed_outside(image, rtl.image, layout.y_addr, layout.y_bytes)
        if len(bad):
            return f"memory outside the outputs changed after a fault: {_first(bad)}"
        bad = bad_outputs(image, rtl.image, clean.mem, layout.y_addr, layout.y_bytes)
        if len(bad):
            return f"outputs neither untouched nor golden after a fault: {_first(bad)}"
        if plan.untouched:
            bad = written_in(image, rtl.image, *plan.untouched)
            if len(bad):
                return f"bytes of the failed write were written: {_first(bad)}"
    if getattr(rtl, "end_reset_status", None) is not None:
        return _check_end_reset(rtl)
    return None


# --------------------------------------------------------------------------------------
# One seed


def _compile(cfg, a, w, bias, mult, shift, relu, base, block, raw=False):
    return compiler.compile_gemm(cfg, a, w, bias, mult, shift, relu=relu, base=base,
                                 block=block, raw=raw)


_BACKENDS = {}


def _backend(sim, cfg):
    """This process's running backend of ``sim`` for ``cfg`` (opened once, kept for
    every ``streams`` and ``llm`` seed the process runs): the fast simulator under
    Verilator, the running simulation of :mod:`sim.system` under Icarus."""
    if (sim, cfg.name) not in _BACKENDS:
        from .backends import open_backend
        _BACKENDS[sim, cfg.name] = open_backend(sim, cfg, mem_bytes=1 << 20, mem_latency=20)
    return _BACKENDS[sim, cfg.name]


#: An ``llm`` seed's longest prompt, and most tokens generated after it.
LLM_PROMPT_MAX = 24
LLM_TOKENS_MAX = 4


def llm_case(rng, sim, cfg):
    """An ``llm`` seed: a Llama-style model of random weights (:func:`llama_tiny` of a
    seed drawn here: grouped-query attention, RMSNorm, rotary embeddings, SwiGLU) reads a
    random prompt of 1 to :data:`LLM_PROMPT_MAX` tokens and generates greedily, its KV
    cache in device memory appended per token, on this process's running simulator (the
    memory and the accelerator's state left by every earlier seed's calls and faults):
    int8 or 4-bit weights with block scales, the non-GEMM ops on the host or on the
    chip (tiny preset). Every call's memory must equal the golden model's."""
    from .generate import open_executor
    from .models.llama import llama_tiny
    from .nn.lower_decoder import NotLowered
    from .runtime import Device
    model = llama_tiny(int(rng.integers(1 << 31)))
    ids = [int(t) for t in rng.integers(0, model.shape.vocab,
                                        int(rng.integers(1, LLM_PROMPT_MAX + 1)))]
    n = int(rng.integers(1, LLM_TOKENS_MAX + 1))
    weights = str(rng.choice(["int8", "int4"]))
    ops = str(rng.choice(["host", "chip"]))
    with Device(cfg, _backend(sim, cfg), check="every") as dev:
        try:
            ex, weights = open_executor(dev, model, positions=len(ids) + n, ops=ops,
                                        weights=weights)
        except NotLowered:
            ops = "host"
            ex, weights = open_executor(dev, model, positions=len(ids) + n, ops=ops,
                                        weights=weights)
        state = {}
        out = [ex.next_token(ids, 0, state)]
        for step in range(n - 1):
            out.append(ex.next_token(out[-1:], len(ids) + step, state))
        calls, exact = len(dev.calls), dev.bit_exact
    what = (f"{sim} {cfg.name} llm: {len(ids)}-token prompt, {n} tokens, {weights} "
            f"weights, {ops} ops, {calls} calls -> {out}")
    if not exact:
        return False, f"{what}: device memory differs from the golden model's", set()
    bins = {f"llm:{ops}_ops", f"llm:{weights}", "llm:persistent"}
    if n > 1:
        bins.add("llm:decode")
    return True, what, bins


def stream_case(rng, sim, cfg, shrink=False):
    """A ``streams`` seed: random instruction streams (:mod:`sw.progen`), legal and
    illegal alternating, checked against the golden model on the whole memory image.
    :data:`STREAMS_PER_SEED` of them run one after another on this process's running
    simulator (under Verilator the fast one, soft-reset after each: faults between
    calls; under Icarus the running simulation of :func:`sim.system.run_system`).
    ``shrink``: a failing stream is cut to a minimal
    one (:func:`sw.progen.shrink`, as a replay does) and both are printed."""
    draw = progen.RngDraw(rng)
    n = STREAMS_PER_SEED[sim]
    first_legal = bool(rng.integers(0, 2))
    bins, kinds = set(), []

    def fails(stream):
        """The stream's problem on the RTL (None: it passed)."""
        if sim == "verilator":
            return progen.run_on(_backend("verilator", cfg), stream)[0]
        return progen.run_rtl(stream, sim, persistent=True)[0]
    for j in range(n):
        legal = (j % 2 == 0) == first_legal
        s = progen.legal_stream(draw, cfg) if legal else progen.illegal_stream(draw, cfg)
        problem = fails(s)
        kinds.append(s.kind)
        if problem:
            what = f"{sim} {cfg.name} streams: stream {j} ({s.kind}): {problem}\n{s.text()}"
            if shrink:
                small = progen.shrink(s, fails)
                what += f"\nminimal stream ({fails(small)}):\n{small.text()}"
            return False, what, set()
        bins.add(f"stream:{s.kind}")
        if s.kind == "legal":
            bins |= _stream_bins(cfg, s)
    if n > 1:
        bins.add("stream:persistent")
    counts = Counter(kinds)
    return True, (f"{sim} {cfg.name} streams: "
                  + ", ".join(f"{c} {k}" for k, c in sorted(counts.items()))), bins


def _stream_bins(cfg, stream):
    """The ``vec:*``, ``mm:pair``, ``weights:*`` and position bins a passing legal
    stream hits."""
    bins = set()
    for insn in stream.insns:
        if insn.at and insn.at.get("rel") and stream.position:
            bins.add("stream:position_rel")
        if insn.role == "skipped":
            bins.add("stream:guard_skip")
        f = insn.fields
        if insn.op == isa.Op.FENCE and f.get("stores"):
            bins.add("fence:stores")
        if insn.role != "body":
            continue
        if insn.op == isa.Op.STORE and f.get("rowscale"):
            bins.add("store:rowscale")
        if insn.op == isa.Op.MATMUL:
            if f["pair"]:
                bins.add("mm:pair")
            fmt = isa.WeightFormat(f["wfmt"])
            if fmt != isa.WeightFormat.INT8:
                bins.add(f"weights:{fmt.name.lower()}")
        if insn.op != isa.Op.VEC:
            continue
        vop = isa.VecOp(f["vop"])
        bins.add(f"vec:{vop.name}")
        if vop == isa.VecOp.TABLE:
            continue
        L = f["rows"] * cfg.rows
        if vop in isa.REDUCE_VOPS and f["length"] < L:
            bins.add("vec:masked")
        if vop in (isa.VecOp.SOFTMAX, isa.VecOp.ARGMAX) and f["causal"] and f["count"] > 1:
            bins.add("vec:causal")
        if f["a_row"] == f["dst_row"]:
            bins.add("vec:in_place")
        if f["count"] > 1:
            bins.add("vec:several_vectors")
            if f["stride"]:
                bins.add("vec:interleaved")
            if f.get("b_repeat"):
                bins.add("vec:repeating_b")
        if f["wide"]:
            bins.add(f"vec:wide_{vop.name.lower()}" if vop in (*isa.PAIR_VOPS, isa.VecOp.SOFTMAX,
                                                               isa.VecOp.ARGMAX, isa.VecOp.DYNQ)
                     else "vec:wide")
        if f["wide_out"]:
            bins.add("vec:wide_out")
        if f.get("beta"):
            bins.add("vec:norm_beta")
        if f.get("dynq"):
            bins.add("vec:norm_dynq")
    return bins & set(BINS)


def run_case(seed, sims=("verilator", "icarus"), shrink=False):
    """Run seed ``seed``; return ``(ok, message, bins hit)``."""
    rng, sim, cfg, m, k, n, kind = _case(seed, sims)
    if kind == "streams":
        return stream_case(rng, sim, cfg, shrink)
    if kind == "llm":
        # A language model's programs run hundreds of thousands of cycles: on the fast
        # simulator (Icarus, at a few thousand cycles a second, takes minutes a seed).
        return llm_case(rng, "verilator" if "verilator" in sims else sim, cfg)
    # Block formats on three seeds in ten: 4-bit codes (two in ten), 8-bit codes (one).
    fmt = str(rng.choice(["int8"] * 7 + ["q4"] * 2 + ["q8"]))
    a, w, bias, mult, shift, relu, acc, extremes = _operands(rng, cfg, m, k, n, fmt)
    base = 4096 - int(rng.integers(0, 8)) * 64
    block = int(rng.integers(1, m + 1)) if rng.random() < 0.3 else None
    latency = int(rng.integers(1, 101))
    write_latency = int(rng.integers(1, 41))
    pause = float(rng.choice([0.0, 0.2, 0.5]))
    coin = rng.random()
    fresh = rng.random() < FRESH_SHARE
    region = READ_REGIONS[int(rng.integers(len(READ_REGIONS)))]
    # A raw GEMM (int32 outputs, no parameters) on a quarter of the fault-free runs.
    raw = kind is None and rng.random() < 0.25
    relu = relu and not raw
    layout = _compile(cfg, a, w, bias, mult, shift, relu, base, block, raw)
    if kind == "read_error" and region == "prog" and layout.prog_len >= 3:
        # Put a 4 KiB boundary at a random instruction: a fetch burst starts there.
        base = 4096 - 64 * int(rng.integers(1, min(63, (layout.prog_len - 1) // 2) + 1))
        layout = _compile(cfg, a, w, bias, mult, shift, relu, base, block)
    image = layout.image.copy()
    image[layout.y_addr:layout.y_addr + layout.y_bytes] = rng.integers(
        0, 256, layout.y_bytes, dtype=np.uint8)          # an unwritten output byte shows
    prog_addr, prog_len, vec_bins = layout.prog_addr, layout.prog_len, set()
    if kind is None and rng.random() < 0.8:
        image, prog_addr, prog_len, vec_bins = vector_epilogue(rng, cfg, image, layout)
    clean = isa_model.run_program(cfg, image, prog_addr, prog_len, check_deps=False)
    if kind in PROGRAM_FAULTS:
        plan = _program_fault(rng, kind, cfg, layout, image, clean)
    elif kind in BUS_FAULTS:
        plan = _bus_fault(rng, kind, region, cfg, layout, image, clean)
    elif kind in RESETS:
        plan = _reset(rng, kind, cfg, image, layout, clean, latency)
    else:
        plan = _Plan(image, prog_len, clean, prog_addr)
    # The 16 x 16 design always gets the Verilog memory: AxiRam serves memory from Python
    # every clock, too slow for it.
    if plan.system or cfg.name == "default" or (kind is None and coin < 0.5):
        from serrano.sim.system import run_system
        rtl = run_system(cfg, plan.image, plan.prog_addr, plan.n_insns, sim,
                         mem_latency=latency, write_latency=write_latency,
                         soft_reset_at_end=True, persistent=not fresh, **plan.kw)
        mem = f"latency {latency} write latency {write_latency}"
    else:
        from serrano.sim.accel import run_rtl
        rtl = run_rtl(cfg, plan.image, plan.prog_addr, plan.n_insns, sim, pause=pause,
                      seed=seed, persistent=not fresh, **plan.kw)
        mem = f"AxiRam pauses {pause}"
    what = (f"{sim} {cfg.name} {m}x{k}x{n}{' raw' if raw else ''}"
            f"{'' if fmt == 'int8' else ' ' + fmt} {mem}{' fresh' if fresh else ''}"
            + (f" {kind}" if kind else "") + (f": {plan.note}" if plan.note else "")
            + (" + vec " + ",".join(sorted(b[4:] for b in vec_bins if b[4:].isupper()))
               if vec_bins else ""))
    problem = _check(plan, kind, layout, clean, rtl)
    if problem:
        return False, f"{what}: {problem}", set()
    blocks = -(-m // compiler.choose_block(cfg, m, k, block))
    bins = _bins(cfg, plan, kind, rtl, layout, k, blocks, mult, shift, relu,
                 (False, False) if raw else _saturates(acc, bias, mult, shift), mem)
    bins.add("sim:fresh" if fresh else "sim:running")
    if rtl.error == isa.Error.NONE:
        bins |= vec_bins
    if fmt == "q8" and rtl.error == isa.Error.NONE:
        bins.add("weights:q8")
    if fmt == "q4" and rtl.error == isa.Error.NONE:
        bins.add("weights:q4")
        if k % cfg.weight_block:
            bins.add("weights:q4_partial_block")
        if extremes:
            bins.add("weights:q4_extremes")
    return True, what, bins


def vector_epilogue(rng, cfg, image, layout):
    """``(image, prog_addr, prog_len, bins)``: ``layout``'s program with random ``VEC``
    instructions before its ``END``, on random rows loaded after a ``FENCE``, their result
    read out through an identity ``MATMUL`` and a raw ``STORE``. The new operands, the
    output and the program go after ``image``'s end."""
    R, C = cfg.rows, cfg.cols
    rows = int(rng.integers(1, 5))
    count = int(rng.integers(1, 4))
    n = rows * count
    L = rows * R
    trows = isa.TABLE_ENTRIES // R
    # Activation rows: x at 0, partners / gains / tables at n, the lookup table, the
    # destination and its low halves (loaded too: the read-out reads them all, and lanes
    # and rows an operation leaves keep the loaded values, nothing from before).
    xb, tb, dst = n, 3 * n, 3 * n + trows
    data = rng.integers(-128, 128, (dst + 2 * n, R))
    if rng.random() < 0.2:
        data = np.where(rng.random(data.shape) < 0.5, -128, 127)
    choices = [v for v in isa.VecOp if v != isa.VecOp.TABLE
               and not (v == isa.VecOp.ROPE and rows % 2)]
    vops = [choices[int(i)] for i in rng.integers(len(choices), size=int(rng.integers(1, 4)))]
    prog = isa_model.Program()
    ops, bins, src = [], set(), 0
    if isa.VecOp.LUT in vops:
        ops.append(dict(vop=isa.VecOp.TABLE, a_row=tb, rows=trows, table=0))
    stride = count if rng.random() < 0.4 else 0     # interleaved vectors, or not
    if stride and count > 1:
        bins.add("vec:interleaved")
    for k, vop in enumerate(vops):
        if vop == isa.VecOp.ROPE and src == dst:
            continue                  # outside the contract: a ROPE in place
        length = int(rng.choice([0, 1, int(rng.integers(1, L + 1)), L, L + 3]))
        op = dict(vop=vop, a_row=src, dst_row=dst, rows=rows, count=count, length=length,
                  causal=int(rng.random() < 0.3), b_row=xb,
                  mul_a=int(rng.integers(-(1 << 15), 1 << 15)),
                  mul_b=int(rng.integers(-(1 << 15), 1 << 15)),
                  shift=int(rng.integers(0, 32)),
                  b_repeat=int(vop in (*isa.BINARY_VOPS, isa.VecOp.ROPE)
                               and rng.random() < 0.3),
                  stride=stride)
        if vop in isa.PAIR_VOPS and rng.random() < 0.3:       # 16-bit a, b and result
            op.update(wide=1, a_lo_row=2 * n, b_lo_row=0, dst_lo_row=dst + n)
            bins.add(f"vec:wide_{vop.name.lower()}")
        if vop in (*isa.NORM_VOPS, isa.VecOp.SOFTMAX) and rng.random() < 0.3:
            op.update(wide_out=1, dst_lo_row=dst + n)            # a 16-bit result
            bins.add("vec:wide_out")
        if vop == isa.VecOp.SOFTMAX:
            op["mul_a"], op["shift"] = int(rng.integers(0, 1 << 16)), int(rng.integers(6, 20))
            if count >= 2 and rng.random() < 0.4:      # of 16-bit scores
                op.update(wide=1, a_lo_row=xb + 2 * rows)
                bins.add("vec:wide_softmax")
        elif vop in isa.NORM_VOPS:
            op["shift"] = int(rng.integers(8, 24))
            if count >= 2 and rng.random() < 0.4:      # 16-bit x: low halves after gains
                op.update(wide=1, a_lo_row=xb + 2 * rows)
                bins.add("vec:wide")
            elif count >= 2 and rng.random() < 0.5:    # a bias: its rows after the gains
                op["beta"] = 1
                bins.add("vec:norm_beta")
            if not op.get("wide_out") and rng.random() < 0.3:   # on through DYNQ
                op.update(dynq=1, b_lo_row=int(rng.integers(0, cfg.rowscale_slots - count + 1)))
                bins.add("vec:norm_dynq")
        elif vop == isa.VecOp.ARGMAX and rng.random() < 0.4:  # of 16-bit values
            op.update(wide=1, a_lo_row=xb + 2 * rows)
            bins.add("vec:wide_argmax")
        elif vop == isa.VecOp.DYNQ:              # codes into row-scale slots
            op["b_row"] = int(rng.integers(0, cfg.rowscale_slots - count + 1))
            if rng.random() < 0.5:              # of 16-bit values
                op.update(wide=1, a_lo_row=xb + 2 * rows)
                bins.add("vec:wide_dynq")
        ops.append(op)
        bins.add(f"vec:{vop.name}")
        if vop in isa.REDUCE_VOPS and length < L:
            bins.add("vec:masked")
        if vop in (isa.VecOp.SOFTMAX, isa.VecOp.ARGMAX) and op["causal"] and count > 1:
            bins.add("vec:causal")
        if src == dst:
            bins.add("vec:in_place")
        if op["b_repeat"] and count > 1:
            bins.add("vec:repeating_b")
        src = dst
    if count > 1:
        bins.add("vec:several_vectors")
    if isa.VecOp.LUT in vops:
        bins.add("vec:TABLE")
    # Memory after the image: identity weights, data rows, outputs, the program.
    def room(addr, nbytes):
        return addr, -(-(addr + nbytes) // 64) * 64
    end = -(-len(image) // 64) * 64
    ident, end = room(end, R * C)
    data_addr, end = room(end, data.size)
    out_addr, end = room(end, 2 * n * 4 * C)          # the result, then its low halves
    old = _decode(image, layout.prog_addr, layout.prog_len)
    assert old[-1][0] == isa.Op.END
    body = image[layout.prog_addr:layout.prog_addr + (layout.prog_len - 1) * isa.INSN_BYTES]
    prog.fence()
    prog.load_act(dram_addr=data_addr, dram_stride=R, rows=len(data), row_beats=1,
                  buf_row=0, buf_row_step=1, buf_beat_step=0)
    prog.fence()
    for k, op in enumerate(ops):
        prog.vec(**op, push_next=int(k == len(ops) - 1))
    # Read out through the array: the result and its low halves as rows, or (pair) as
    # a 16-bit product at 1/256 (hi, plus lo rounded to 1/256: the pair rule).
    pair = rng.random() < 0.3
    if pair:
        bins.add("mm:pair")
    prog.matmul(weight_addr=ident, act_row=dst, act_stride=1, act_kstep=0, m=2 * n,
                k_tiles=1, acc_row=0, pair=int(pair), pop_side=1, push_next=1)
    prog.store(acc_row=0, m=n if pair else 2 * n, param_tile=0, dram_addr=out_addr,
               dram_stride=4 * C, raw=1, pop_prev=1)
    prog.end()
    code = np.concatenate([body, prog.to_array()])
    prog_addr, end = room(end, code.size)
    out = np.zeros(end, np.uint8)
    out[:len(image)] = image
    out[ident:ident + R * C] = np.eye(R, C, dtype=np.int8).view(np.uint8).ravel()
    out[data_addr:data_addr + data.size] = data.astype(np.int8).view(np.uint8).ravel()
    out[out_addr:out_addr + 2 * n * 4 * C] = rng.integers(0, 256, 2 * n * 4 * C,
                                                          dtype=np.uint8)
    out[prog_addr:prog_addr + code.size] = code
    return out, prog_addr, code.size // isa.INSN_BYTES, bins


def _saturates(acc, bias, mult, shift):
    """Whether requantization saturates high and low (before the clamp)."""
    x = golden.wrap_int32(acc + bias).astype(np.int64)
    p = x * np.asarray(mult, np.int64)
    sh = np.asarray(shift, np.int64)
    q = np.where(sh > 0, (p + (np.int64(1) << np.maximum(sh - 1, 0))) >> sh, p)
    return bool((q > 127).any()), bool((q < -128).any())


def _bins(cfg, plan, kind, rtl, layout, k, blocks, mult, shift, relu, sat, mem):
    """Bins of a passing seed. Ops and accumulate flags count only what the golden model
    says ran (not for a bus fault, which stops the RTL at a point the model does not
    know); the shape and data bins only for a run that went to its end."""
    hit = set(plan.bins)
    if plan.ops_ran:
        insns = _decode(plan.image, plan.prog_addr, plan.n_insns)
        for o in plan.gold.ops:
            hit.add(f"op:{o['op']}")
            if o["op"] == "MATMUL":
                acc = insns[o["index"]][2]["accumulate"]
                hit.add("acc:accumulate" if acc else "acc:overwrite")
    if rtl.error != isa.Error.NONE:
        hit.add(f"error:{rtl.error.name}")
        if kind == "write_error" or "fault:decerr_write" in plan.bins:
            hit.add(f"error:write:{rtl.error.name}")
    if kind in RESETS and rtl.reset_mid_run:
        hit.add(f"reset:{kind.split('_')[1]}_mid_run")
    if getattr(rtl, "end_reset_status", None) is not None:
        hit.add("reset:soft_after_error" if rtl.error != isa.Error.NONE
                else "reset:soft_after_end")
    c = rtl.counters
    for cause in ("weight", "act", "insn"):
        if c.get(f"stall_{cause}", 0):
            hit.add(f"stall:{cause}")
    if mem.startswith("AxiRam") and not mem.endswith(" 0.0"):
        hit.add("mem:axiram_pauses")
    if mem.startswith("latency") and int(mem.split()[1]) > 60:       # the read latency
        hit.add("mem:latency_gt_60")
    if rtl.error != isa.Error.NONE:
        return hit
    if k == 1:
        hit.add("k_equals_1")
    if blocks > 1:
        hit.add("several_m_blocks")
    if layout.raw:
        hit.add("store_raw")
    elif -(-layout.N // cfg.cols) > cfg.param_tiles:
        hit.add("param_chunks")
    # A burst crosses 4 KiB only if a transfer spans a boundary (split by the engine).
    regions = _regions(cfg, layout)
    if any(first // 4096 != (end - 1) // 4096 for first, end in regions.values()):
        hit.add("burst_crosses_4k")
    if sat[0]:
        hit.add("saturate_high")
    if sat[1]:
        hit.add("saturate_low")
    if not layout.raw and (np.asarray(mult) == 0).any():
        hit.add("zero_multiplier")
    if not layout.raw and (np.asarray(shift) == 63).any():
        hit.add("shift_63")
    if relu:
        hit.add("relu")
    return hit


# --------------------------------------------------------------------------------------
# The campaign


def _seed_result(seed, sims, shrink=False):
    """Seed ``seed`` wherever it runs (this process or a Dask worker): ``(seed, ok,
    message, bins, traceback)``; a crash is a failure with its traceback."""
    try:
        ok, msg, bins = run_case(seed, sims, shrink)
        return seed, ok, msg, sorted(bins), ""
    except Exception as e:                                      # a crash is a failure
        return seed, False, f"{type(e).__name__}: {e}", [], traceback.format_exc()


def open_client(workers=None, scheduler=None, scheduler_file=None):
    """A ``dask.distributed`` client and the local cluster it made (or None): to the
    scheduler at ``scheduler`` (``tcp://HOST:PORT``), or the one ``scheduler_file``
    describes, or ``DASK_SCHEDULER_ADDRESS``'s (Dask's own configuration); otherwise a
    local cluster of ``workers`` worker processes (default: this machine's cores), one
    thread each, whose nannies restart a worker that dies."""
    import dask
    from dask.distributed import Client, LocalCluster
    if scheduler_file:
        return Client(scheduler_file=scheduler_file), None
    address = scheduler or dask.config.get("scheduler-address", None)
    if address:
        return Client(address), None
    # The scheduler's HTTP server on any free port: two local clusters may run at once.
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, dashboard_address=":0")
    return Client(cluster), cluster


def _results_in_this_process(seeds, sims, shrink=False):
    for seed in seeds:
        yield _seed_result(seed, sims, shrink)


def _results_on_dask(client, seeds, sims):
    """Each seed as a Dask task, results as they complete. A worker that dies loses
    nothing: the scheduler runs its seeds again on another worker (a seed whose runs kill
    ``distributed.scheduler.allowed-failures`` workers is reported failed)."""
    from dask.distributed import as_completed
    futures = {client.submit(_seed_result, seed, sims, pure=False): seed for seed in seeds}
    for fut in as_completed(futures):
        try:
            yield fut.result()
        except Exception as e:
            yield futures[fut], False, f"{type(e).__name__}: {e}", [], ""
        fut.release()


def run_campaign(seeds, sims, first_seed=0, out=sys.stdout, *, workers=0, scheduler=None,
                 scheduler_file=None, client=None, results=None, progress=None,
                 shrink=False):
    """Run ``seeds`` seeds from ``first_seed`` (or the seeds of a list ``seeds``); print
    each seed's line (as it ends), each failure's replay command, the coverage table and
    the summary. Returns ``(all passed,
    coverage)``; ``results`` (a dict), if given, receives ``seed: (ok, message, bins)``.

    Where they run: ``workers=0`` (the default) in this process, one after another;
    otherwise on Dask (:func:`open_client`: ``client``, or a scheduler's address or file,
    or a local cluster of ``workers`` processes). ``progress`` shows a progress bar on
    standard error (seeds done, passed, failed, the rate; default: when it is a
    terminal). ``shrink`` (in this process only: a replay) cuts a failing random stream
    to a minimal one and prints it."""
    from tqdm import tqdm
    passed = failed = 0
    coverage = Counter()
    t0 = time.perf_counter()
    if isinstance(seeds, int):
        seeds = range(first_seed, first_seed + seeds)
    seeds, sims = list(seeds), tuple(sims)
    own = client is None and bool(workers or scheduler or scheduler_file)
    cluster = None
    if own:
        client, cluster = open_client(workers, scheduler, scheduler_file)
    where = ("this process" if client is None
             else f"Dask, {len(client.scheduler_info()['workers'])} workers")
    bar = tqdm(total=len(seeds), unit="seed", file=sys.stderr,
               disable=None if progress is None else not progress, dynamic_ncols=True)
    try:
        stream = (_results_in_this_process(seeds, sims, shrink) if client is None
                  else _results_on_dask(client, seeds, sims))
        for seed, ok, msg, bins, trace in stream:
            if results is not None:
                results[seed] = (ok, msg, set(bins))
            if ok:
                passed += 1
                coverage.update(bins)
                line = f"seed {seed}: pass  {msg}"
            else:
                failed += 1
                if trace:
                    print(trace, file=sys.stderr)
                line = (f"seed {seed}: FAIL  {msg}\n  replay: serrano regress --seed {seed} "
                        f"--sim {'both' if len(sims) > 1 else sims[0]}")
            bar.write(line, file=out)
            bar.set_postfix(passed=passed, failed=failed, refresh=False)
            bar.update(1)
    finally:
        bar.close()
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    print("\ncoverage (passing seeds that hit each bin):", file=out)
    for b in BINS:
        print(f"  {b:26s} {coverage[b]:5d}" + ("   <- never hit" if not coverage[b] else ""),
              file=out)
    elapsed = time.perf_counter() - t0
    print(f"\ncampaign: {len(seeds)} seeds in {elapsed:.0f} s "
          f"({elapsed / max(1, len(seeds)):.1f} s per seed, "
          f"{where})", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return failed == 0, coverage
