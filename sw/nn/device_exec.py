"""The device executor, first form: a graph's GEMMs on the accelerator, the rest on the host.

Every ``linear`` node runs on a :class:`sw.runtime.Device`; every other op (norms,
activations, rotary embeddings, attention, residual adds) runs on the host in float32 with
the float executor's own code (:func:`sw.nn.float_exec.eval_node`), as the "host ops" path
of an accelerator without a vector unit. Linear nodes that read the same value run as
one call (Q, K and V; gate and up).

Quantization (stated here, once):

* weights: int8 symmetric per output channel (:func:`sw.quant.quantize_linear`);
* the GEMM input: int8 symmetric **per token** (per row), computed at run time:
  ``s[m] = max|x[m, :]| / 127``; at decode a token is a row, so this is a per-token
  dynamic scale;
* the output: int8 in scale ``s[m] * c[n]``, with ``c[n]`` a per-channel factor
  calibrated on sample inputs (:func:`calibrate`: the largest ``|y[m, n]| / s[m]`` seen,
  times :data:`HEADROOM`, over 127). The row's scale cancels in the requantizer's factor
  ``s[m] s_w[n] / (s[m] c[n]) = s_w[n] / c[n]``, so one per-channel multiplier serves
  every token, and the host dequantizes ``y = q * s[m] * c[n]``.
* with ``fine`` (:data:`FINE`, a power of two, or None), each GEMM also stores its
  accumulators a second time through a second set of multipliers, ``fine`` times finer:
  the host takes the fine int8 value where it is not saturated (``|q| < 127``) and the
  coarse one elsewhere, so small outputs keep ``fine`` times the resolution and outliers
  keep their range (two STOREs of the same rows; no hardware change);
* linear nodes with a bias are refused (the bias would need the row's scale): Llama's
  have none.

This is the int8 path the hardware supports today; outputs that feed the residual stream
come back at 8 bits, which is what limits accuracy (README, "SmolLM2").
"""

from dataclasses import dataclass

import numpy as np

from .. import compiler, isa_model, requant
from ..quant import quantize_linear
from . import float_exec

__all__ = ["HEADROOM", "calibrate", "DeviceExecutor"]

#: Margin of the calibrated output factors over the largest value seen (README, "A
#: language model on the accelerator", has the agreement measured at 1x to 8x).
HEADROOM = 4.0
#: The second output's resolution over the first (see the module docstring); off by
#: default: it gains a little agreement and costs decode cycles (README).
FINE = None


def _linear_nodes(graph):
    return [n for n in graph.nodes if n.op == "linear"]


def _row_scales(x):
    peak = np.abs(np.asarray(x, np.float64)).max(axis=-1)
    return np.where(peak > 0, peak / 127.0, 1.0)


def calibrate(graph, params, samples, *, headroom=None):
    """Per-channel output factors ``c`` of every linear node, from float runs of
    ``graph`` on ``samples`` (a list of feeds dicts, each run from a fresh state), with
    ``headroom`` (default :data:`HEADROOM`) over the largest value seen."""
    headroom = HEADROOM if headroom is None else headroom
    if not headroom > 0:
        raise ValueError(f"headroom must be positive, not {headroom!r}")
    nodes = {n.out: n for n in _linear_nodes(graph)}
    inputs = {}
    peak = {}

    def observe(name, value):
        for n in by_input.get(name, ()):
            inputs[n.out] = value
        if name in nodes:
            x = inputs[name].reshape(-1, inputs[name].shape[-1])
            y = np.abs(np.asarray(value, np.float64)).reshape(len(x), -1)
            r = (y / _row_scales(x)[:, None]).max(axis=0)
            peak[name] = r if name not in peak else np.maximum(peak[name], r)

    by_input = {}
    for n in nodes.values():
        by_input.setdefault(n.ins[0], []).append(n)
    for feeds in samples:
        values = float_exec.feed(graph, feeds)
        for name, v in values.items():
            observe(name, v)
        float_exec.run(graph, params, feeds, {}, observe=observe)
    return {name: np.maximum(headroom * p / 127.0, 1e-12) for name, p in peak.items()}


@dataclass
class _Linear:
    c: np.ndarray
    k: int
    n: int
    w_addr: int
    p_addr: int
    p2_addr: int = None


def _requant_sets(cfg, w_scale, c):
    pairs = [requant.quantize_multiplier(f) for f in w_scale / c]
    mult = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    return isa_model.pack_params(np.zeros(len(c), np.int64), mult, shift, cfg)


class DeviceExecutor:
    """``graph`` with its ``params`` on ``dev``: the int8 weights and the requantization
    parameters of every linear node go into device memory once (:meth:`__init__`);
    :meth:`run` then executes the graph for new inputs, one device call per group of
    linear nodes that share an input."""

    def __init__(self, dev, graph, params, factors, *, fine=FINE):
        if fine is not None and (not isinstance(fine, int) or fine < 2 or fine & (fine - 1)):
            raise ValueError(f"fine must be None or a power of two >= 2, not {fine!r}")
        self.dev, self.graph, self.params = dev, graph, params
        self.fine = fine
        cfg = dev.cfg
        self.linears = {}
        for n in _linear_nodes(graph):
            if n.attrs.get("b") is not None:
                raise ValueError(f"{graph.name}: {n.out} has a bias; the per-token device "
                                 f"path takes bias-free linear layers")
            if n.out not in factors:
                raise ValueError(f"{graph.name}: {n.out} was never calibrated")
            w = params[n.attrs["w"]]
            ql = quantize_linear(w, np.zeros(w.shape[1]))
            c = np.asarray(factors[n.out], np.float64)
            self.linears[n.out] = _Linear(
                c=c, k=w.shape[0], n=w.shape[1],
                w_addr=dev.put(isa_model.pack_weights(ql.wq, cfg)),
                p_addr=dev.put(_requant_sets(cfg, ql.w_scale, c)),
                p2_addr=(dev.put(_requant_sets(cfg, ql.w_scale, c / fine)) if fine
                         else None))
        # Linear nodes that read the same value run together, where the first one is.
        self.groups = {}
        first = {}
        for n in graph.nodes:
            if n.op == "linear":
                key = first.setdefault(n.ins[0], n.out)
                self.groups.setdefault(key, []).append(n.out)

    def _call(self, names, x):
        dev, cfg = self.dev, self.dev.cfg
        x2 = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
        M = len(x2)
        s = _row_scales(x2)
        xq = np.clip(np.round(x2 / s[:, None]), -127, 127).astype(np.int8)
        a_addr = dev.put(compiler.pack_acts(xq, cfg))
        b = dev.builder()
        outs = []
        for name in names:
            lin = self.linears[name]
            y_bytes = -(-lin.n // cfg.cols) * M * cfg.cols
            y_addr = dev.alloc(y_bytes)
            y2_addr = dev.alloc(y_bytes) if self.fine else None
            b.gemm(compiler.Gemm(M, lin.k, lin.n, a_addr, lin.w_addr, lin.p_addr, y_addr,
                                 p2_addr=lin.p2_addr, y2_addr=y2_addr))
            outs.append((name, y_addr, y2_addr, y_bytes))
        dev.call(" + ".join(names), b)
        result = {}
        for name, y_addr, y2_addr, y_bytes in outs:
            lin = self.linears[name]
            q = compiler.unpack_out(dev.read(y_addr, y_bytes), M, lin.n, cfg).astype(np.float32)
            c = np.broadcast_to(lin.c.astype(np.float32), q.shape)
            if self.fine:
                qf = compiler.unpack_out(dev.read(y2_addr, y_bytes), M, lin.n, cfg)
                use = np.abs(qf.astype(np.int16)) < 127
                q = np.where(use, qf.astype(np.float32), q)
                c = np.where(use, c / np.float32(self.fine), c)
            y = q * s[:, None].astype(np.float32) * c
            result[name] = y.reshape(*x.shape[:-1], lin.n)
        return result

    def run(self, feeds, state):
        """Run the graph on ``feeds`` with ``state`` (the KV cache, on the host); the
        graph's outputs. Scratch device memory is freed at the end."""
        dev = self.dev
        values = float_exec.feed(self.graph, feeds)
        mark = dev.mark()
        try:
            for n in self.graph.nodes:
                if n.out in values:
                    continue                          # computed with its group
                if n.op == "linear":
                    values.update(self._call(self.groups[n.out], values[n.ins[0]]))
                else:
                    values[n.out] = float_exec.eval_node(
                        n, [values[i] for i in n.ins], self.params, state)
        finally:
            dev.release(mark)
        return {name: values[name] for name in self.graph.outputs}
