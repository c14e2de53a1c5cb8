"""Transformer architectures written once, as graphs of ops.

A :class:`Graph` is a list of :class:`Node` in execution order, each one op of
:data:`OPS` reading named values (graph inputs, parameters, earlier nodes' outputs) and
writing one named value. An architecture (:mod:`sw.nn.archs`) builds its graph once from
its shape; executors run it:

* the float executor (:func:`sw.nn.float_exec.run`) is the float32 reference, and its
  ``observe`` hook gives every tensor to calibration;
* a device executor lowers the same nodes to the accelerator (quantization, packing,
  layouts, calls): the next step of the LLM work, not built yet.

Values are named ``"<scope>.<name>"`` (``"blk.3.q"``) so that calibration statistics,
device regions and error messages can all name them. Parameters are referenced by name
too (``"blk.3.wq"``) and supplied as a dict when the graph runs; graph inputs are
``ids`` (token ids), ``x`` (embeddings made on the host), ``mask`` (a padding mask, 1 =
token) and ``pos`` (positions, for rotary embeddings and the causal mask). State that
outlives a run (the KV cache) lives in a dict the caller passes and keeps, one entry per
``kv_append`` node's ``slot``.

Layouts: activations are ``(seq, hidden)`` (or with leading batch axes); after
``split_heads`` they are ``(heads, seq, head_dim)``.
"""

from dataclasses import dataclass, field

__all__ = ["OpSpec", "OPS", "Node", "Graph"]


@dataclass(frozen=True)
class OpSpec:
    """An op's inputs (value names, in order; ``?`` marks an optional one), its
    attributes (parameter names and constants) and what it computes."""
    ins: tuple
    attrs: tuple
    doc: str


#: Every op an architecture may use, with its meaning (the float executor's semantics).
OPS = {
    "embed": OpSpec(("ids",), ("table",), "rows ``table[ids]``"),
    "linear": OpSpec(("x",), ("w", "b?"), "``x @ w + b``, ``w`` ``(in, out)``: a GEMM"),
    "layernorm": OpSpec(("x",), ("g", "b", "eps"), "LayerNorm over the last axis"),
    "rmsnorm": OpSpec(("x",), ("g", "eps"), "``x / sqrt(mean(x**2) + eps) * g``"),
    "gelu": OpSpec(("x",), (), "exact GELU (erf)"),
    "silu": OpSpec(("x",), (), "``x * sigmoid(x)``"),
    "mul": OpSpec(("a", "b"), (), "elementwise product (SwiGLU's gate times up)"),
    "add": OpSpec(("a", "b"), (), "elementwise sum (residual)"),
    "split_heads": OpSpec(("x",), ("heads",), "``(seq, heads*d)`` to ``(heads, seq, d)``"),
    "merge_heads": OpSpec(("x",), (), "``(heads, seq, d)`` to ``(seq, heads*d)``"),
    "rope": OpSpec(("x", "pos"), ("base",),
                   "rotary embedding of ``(heads, seq, d)`` at positions ``pos``: pairs "
                   "``(i, i + d/2)`` rotated by ``pos * base**(-2i/d)``"),
    "kv_append": OpSpec(("x",), ("slot",),
                        "append ``(heads, seq, d)`` to the state's ``slot`` along seq; the "
                        "whole cached tensor"),
    "scores": OpSpec(("q", "k"), ("group",),
                     "``q k^T / sqrt(d)`` per head, ``(heads, sq, sk)``; ``group`` query "
                     "heads share each KV head (grouped-query attention)"),
    "softmax": OpSpec(("s", "mask?"), ("causal",),
                      "softmax over keys of the scores plus their bias: ``causal`` masks "
                      "later keys (the queries are the last positions), ``mask`` pads"),
    "context": OpSpec(("p", "v"), ("group",), "``p v`` per head, ``(heads, sq, d)``"),
}


@dataclass(frozen=True)
class Node:
    op: str
    out: str
    ins: tuple
    attrs: dict = field(default_factory=dict, hash=False)


class Graph:
    """Nodes in execution order; :meth:`add` checks each against :data:`OPS`."""

    def __init__(self, name):
        self.name = name
        self.nodes = []
        self.inputs = []
        self.outputs = []
        self._values = set()

    def input(self, name):
        if name in self._values:
            raise ValueError(f"{self.name}: value {name!r} defined twice")
        self.inputs.append(name)
        self._values.add(name)
        return name

    def add(self, op, out, *ins, **attrs):
        """Append ``out = op(*ins, **attrs)``; returns ``out``."""
        spec = OPS.get(op)
        if spec is None:
            raise ValueError(f"{self.name}: unknown op {op!r}")
        required = [i for i in spec.ins if not i.endswith("?")]
        if not len(required) <= len(ins) <= len(spec.ins):
            raise ValueError(f"{self.name}: {op} takes inputs {spec.ins}, got {ins}")
        for name in ins:
            if name not in self._values:
                raise ValueError(f"{self.name}: {op} {out!r} reads {name!r}, defined nowhere "
                                 f"before it")
        allowed = {a.rstrip("?") for a in spec.attrs}
        missing = {a for a in spec.attrs if not a.endswith("?")} - set(attrs)
        if set(attrs) - allowed or missing:
            raise ValueError(f"{self.name}: {op} takes attributes {spec.attrs}, got "
                             f"{sorted(attrs)}")
        if out in self._values:
            raise ValueError(f"{self.name}: value {out!r} defined twice")
        self.nodes.append(Node(op, out, tuple(ins), dict(attrs)))
        self._values.add(out)
        return out

    def output(self, name):
        if name not in self._values:
            raise ValueError(f"{self.name}: output {name!r} is defined nowhere")
        self.outputs.append(name)
        return name

    def params(self):
        """Every parameter name the nodes reference (attributes naming weights)."""
        names = []
        for n in self.nodes:
            for key in ("table", "w", "b", "g"):
                v = n.attrs.get(key)
                if isinstance(v, str) and v not in names:
                    names.append(v)
        return names

    def __len__(self):
        return len(self.nodes)

    def __repr__(self):
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, outputs {self.outputs})"
