"""The device executor, first form: a graph's GEMMs on the accelerator, the rest on the host.

Every ``linear`` node runs on a :class:`sw.runtime.Device`; every other op (norms,
activations, rotary embeddings, attention, residual adds) runs on the host in float32 with
the float executor's own code (:func:`sw.nn.float_exec.eval_node`), as the "host ops" path
of an accelerator without a vector unit. Linear nodes that read the same value run as
one call (Q, K and V; gate and up).

Quantization (stated here, once; ``docs/quantization.md`` has what each step gained):

* weights: int8 symmetric per output channel (:func:`sw.quant.quantize_linear`),
  ``w ~ s_w[n] * q_w``;
* the GEMM input, per token (per row), computed at run time, so nothing is calibrated:
  ``act_bits = 8``: ``s[m] = max|x[m, :]| / 127``, ``q = round(x / s)`` in int8;
  ``act_bits = 16`` (the default): ``s[m] = max|x[m, :]| / 32639`` and
  ``q = round(x / s)`` in ``[-32639, 32639]``, sent as two int8 rows, ``q = 256 * hi +
  lo`` with ``lo = ((q + 128) mod 256) - 128`` and ``hi = (q - lo) / 256``, both in
  ``[-128, 127]``. The two rows stream through the same weight tiles (one ``MATMUL`` of
  ``2M`` rows): at decode the array is idle while weights arrive, so the second row costs
  no bus cycle;
* the output: the int32 accumulators themselves (a raw ``STORE``), dequantized on the
  host: ``y[m, n] = (256 * acc_hi[m, n] + acc_lo[m, n]) * s[m] * s_w[n]`` (``acc`` alone
  for 8 bits). Nothing is rounded after the product, so outputs that feed the residual
  stream keep their full range and resolution;
* a linear node's bias (BERT and GPT have them) is added on the host, in float, to the
  dequantized output.
"""

from dataclasses import dataclass

import numpy as np

from .. import compiler, isa_model
from ..quant import quantize_linear
from . import float_exec

__all__ = ["ACT_BITS", "split16", "DeviceExecutor"]

#: Bits of the per-token GEMM inputs: 16 (two int8 passes) or 8.
ACT_BITS = 16
_TOP = {8: 127, 16: 127 * 256 + 127}


def _linear_nodes(graph):
    return [n for n in graph.nodes if n.op == "linear"]


def split16(q):
    """``q`` (int32, |q| <= 32639) as int8 ``(hi, lo)`` with ``q == 256 * hi + lo``."""
    q = np.asarray(q, np.int32)
    lo = ((q + 128) & 0xFF) - 128
    return ((q - lo) >> 8).astype(np.int8), lo.astype(np.int8)


def quantize_rows(x, bits):
    """Per-row symmetric quantization of ``x`` (2-D) to ``bits`` (8 or 16): ``(q, s)``,
    ``q`` int32 with ``|q| <= top``, ``x ~ q * s[:, None]``."""
    x = np.asarray(x, np.float64)
    peak = np.abs(x).max(axis=-1)
    s = np.where(peak > 0, peak / _TOP[bits], 1.0)
    return np.clip(np.round(x / s[:, None]), -_TOP[bits], _TOP[bits]).astype(np.int32), s


@dataclass
class _Linear:
    w_scale: np.ndarray
    k: int
    n: int
    w_addr: int
    b: np.ndarray = None


class DeviceExecutor:
    """``graph`` with its ``params`` on ``dev``: the int8 weights of every linear node go
    into device memory once (:meth:`__init__`); :meth:`run` then executes the graph for
    new inputs, one device call per group of linear nodes that share an input, with
    ``act_bits`` (8 or 16) per-token inputs (see the module docstring)."""

    def __init__(self, dev, graph, params, *, act_bits=ACT_BITS):
        if act_bits not in _TOP:
            raise ValueError(f"act_bits must be 8 or 16, not {act_bits!r}")
        self.dev, self.graph, self.params = dev, graph, params
        self.act_bits = act_bits
        cfg = dev.cfg
        self.linears = {}
        for n in _linear_nodes(graph):
            w = params[n.attrs["w"]]
            b = n.attrs.get("b")
            ql = quantize_linear(w, np.zeros(w.shape[1]))
            self.linears[n.out] = _Linear(
                w_scale=np.asarray(ql.w_scale, np.float64), k=w.shape[0], n=w.shape[1],
                w_addr=dev.put(isa_model.pack_weights(ql.wq, cfg)),
                b=None if b is None else np.asarray(params[b], np.float64))
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
        q, s = quantize_rows(x2, self.act_bits)
        mark = dev.mark()                      # this call's scratch, freed when read
        rows = np.concatenate(split16(q)) if self.act_bits == 16 else q.astype(np.int8)
        a_addr = dev.put(compiler.pack_acts(rows, cfg))
        b = dev.builder()
        outs = []
        for name in names:
            lin = self.linears[name]
            nbytes = compiler.out_bytes(cfg, len(rows), lin.n, raw=True)
            y_addr = dev.alloc(nbytes)
            b.gemm(compiler.Gemm(len(rows), lin.k, lin.n, a_addr, lin.w_addr, None, y_addr,
                                 raw=True))
            outs.append((name, y_addr, nbytes))
        dev.call(" + ".join(names), b)
        result = {}
        for name, y_addr, nbytes in outs:
            lin = self.linears[name]
            acc = compiler.unpack_raw(dev.read(y_addr, nbytes), len(rows), lin.n,
                                      cfg).astype(np.int64)
            if self.act_bits == 16:
                acc = 256 * acc[:M] + acc[M:]
            y = acc * s[:, None] * lin.w_scale
            if lin.b is not None:
                y = y + lin.b
            result[name] = y.astype(np.float32).reshape(*x.shape[:-1], lin.n)
        dev.release(mark)
        return result

    def run(self, feeds, state, *, keep=()):
        """Run the graph on ``feeds`` with ``state`` (the KV cache, on the host); the
        graph's outputs and the values named in ``keep``. Scratch device memory is freed
        at the end."""
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
        return {name: values[name] for name in (*self.graph.outputs, *keep)}
