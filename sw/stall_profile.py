"""Where the exec unit waits: a program's stall cycles, by the graph node they hold up.

On the Verilator backend a :class:`Sampler` reads the accelerator's counters
(:data:`hw.regs.COUNTERS`) every ``every`` cycles while a program runs (the accelerator
runs on meanwhile: its cycles and results are those of a run without samples). The exec
unit takes its ``MATMUL``s in program order and counts ``array_cycles`` as their rows
enter the array, a ``MATMUL`` of ``m`` rows and ``k_tiles`` tiles ``m * k_tiles`` of
them, so that count says which ``MATMUL`` it is on. :func:`attribute` gives each
sample's stall cycles to that ``MATMUL``: waiting for a token (``act``: a load or the
vector unit) or for an instruction (``insn``) before it starts, waiting for weights
(``weight``) while it runs. The lowering tags each instruction with the graph node it is
for (:class:`sw.nn.lower.OnChip`'s programs, ``tags``), so the stalls add up by node;
nodes of every layer together (``blk.*.``). The vector unit counts the ``VEC``s it has
finished and the cycles it works (``vec_insns``, ``vec_busy``), so
:func:`attribute_vector` gives its working cycles to each ``VEC``. A sample's cycles go
to one instruction, so a count is exact to ``every`` cycles at each change of
instruction.

``serrano run --model minilm --backend verilator --stall-profile`` prints the table.
"""

import re
from collections import defaultdict

import numpy as np

from serrano.hw import isa, regs

from .isa_model import decode_program

__all__ = ["Sampler", "attribute", "attribute_vector", "by_node", "vector_by_node"]

#: The counters a sample reads.
SAMPLED = ("array_cycles", "stall_act", "stall_insn", "stall_weight", "vec_insns",
           "vec_busy")


class Sampler:
    """Collects the counters of :data:`SAMPLED` from a backend every ``every`` cycles:
    set it as the Verilator backend's ``sampler``."""

    def __init__(self, every=64):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"sample every a positive number of cycles, not {every!r}")
        self.every = every
        self.samples = []

    def attach(self, backend):
        if not hasattr(backend, "sampler"):
            raise ValueError(f"the {backend.name} backend cannot be sampled as it runs "
                             f"(--stall-profile needs verilator)")
        backend.sampler, backend.sample_every = self, self.every

    def __call__(self, backend):
        counters = regs.drive(regs.read_counters(), write=backend.write_reg,
                              read=backend.read_reg, wait_irq=backend.wait_irq)
        self.samples.append([counters[name] for name in SAMPLED])


def attribute(program, samples):
    """Per ``MATMUL`` of ``program`` (bytes, as it runs at position 0), its stall cycles
    from ``samples`` (:class:`Sampler`'s): a list of ``(instruction index, act, insn,
    weight)`` for every ``MATMUL`` that waited."""
    ops = decode_program(program, position=0)
    at, starts = [], [0]
    for i, (op, _hdr, body) in enumerate(ops):
        if op == isa.Op.MATMUL:
            at.append(i)
            starts.append(starts[-1] + body["m"] * body["k_tiles"])
    starts = np.array(starts[:-1], np.int64)
    got = defaultdict(lambda: [0, 0, 0])
    prev = np.zeros(len(SAMPLED), np.int64)
    for row in samples:
        row = np.asarray(row, np.int64)
        d = row - prev
        prev = row
        if not d[1:4].any() or not at:
            continue
        # The MATMUL the exec unit is on: the last that started at or before the count
        # (one that has not started yet when the count is exactly its start).
        j = int(np.searchsorted(starts, row[0], side="right")) - 1
        acc = got[at[max(j, 0)]]
        for k in range(3):
            acc[k] += int(d[1 + k])
    return sorted((i, *v) for i, v in got.items())


def attribute_vector(program, samples):
    """Per ``VEC`` of ``program`` (as it runs at position 0), the cycles the vector unit
    worked on it from ``samples``: a list of ``(instruction index, busy)``, each
    sample's to the ``VEC`` running at its start (the count of those finished)."""
    ops = decode_program(program, position=0)
    at = [i for i, (op, _h, _b) in enumerate(ops) if op == isa.Op.VEC]
    got = defaultdict(int)
    prev = np.zeros(len(SAMPLED), np.int64)
    for row in samples:
        row = np.asarray(row, np.int64)
        busy, k = int(row[5] - prev[5]), int(prev[4])
        prev = row
        if busy and at:
            got[at[min(k, len(at) - 1)]] += busy
    return sorted(got.items())


def _node(tags, i):
    """The graph node instruction ``i`` is for, every layer's as ``blk.*.``."""
    tag = tags[i] if i < len(tags) and tags[i] is not None else "(program)"
    return re.sub(r"blk\.\d+\.", "blk.*.", tag)


def vector_by_node(records, program, tags):
    """:func:`attribute_vector`'s records added up by node and operation: a list of
    dicts (``node``, ``vop``, ``busy``, ``vecs``), most cycles first."""
    ops = decode_program(program, position=0)
    sums = defaultdict(lambda: dict(busy=0, vecs=0))
    for i, busy in records:
        s = sums[_node(tags, i), isa.VecOp(ops[i][2]["vop"]).name]
        s["busy"] += busy
        s["vecs"] += 1
    out = [dict(node=k[0], vop=k[1], **v) for k, v in sums.items()]
    return sorted(out, key=lambda r: -r["busy"])


def by_node(records, tags):
    """:func:`attribute`'s records added up by the node each ``MATMUL`` is for
    (``tags[i]``, the layer's index as ``*``): a list of dicts, most cycles first."""
    sums = defaultdict(lambda: dict(act=0, insn=0, weight=0, matmuls=0))
    for i, act, insn, weight in records:
        s = sums[_node(tags, i)]
        s["act"] += act
        s["insn"] += insn
        s["weight"] += weight
        s["matmuls"] += 1
    out = [dict(node=k, total=v["act"] + v["insn"] + v["weight"], **v)
           for k, v in sums.items()]
    return sorted(out, key=lambda r: -r["total"])
