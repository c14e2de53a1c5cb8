"""The device executor, first form: a graph's GEMMs on the accelerator, the rest on the host.

Every ``linear`` node, and attention's two products (``scores``: ``Q K^T``, ``context``:
``P V``), run on a :class:`sw.runtime.Device`; the other ops (norms, activations, rotary
embeddings, softmax, residual adds) run on the host in float32 with the float executor's
own code (:func:`sw.nn.float_exec.eval_node`), as the "host ops" path of an accelerator
without a vector unit. Linear nodes that read the same value run as one call (Q, K and
V; gate and up); the scores of every KV head are one call, their contexts another.

Attention on the device (:class:`KVCache`): each KV head's keys are kept in device memory
as the weights of ``Q K^T`` (``K^T``, ``d x positions``, N-tiles along positions) and its
values as the weights of ``P V`` (``positions x d``, room for ``capacity`` positions
along K), int8 with one scale per position. A ``kv_append`` writes only the tiles that
hold the new positions; nothing already in the cache moves again. The query heads of a
group are rows of one GEMM against their KV head's keys (grouped-query attention without
copying K or V). Scores: ``(256 acc_hi + acc_lo) * s_q[row] * s_k[pos] / sqrt(d)``.
Context: the probabilities times each position's value scale, ``P[row, pos] * s_v[pos]``,
are the GEMM's 16-bit rows, so ``ctx = acc * s_row``.

Quantization (stated here, once; ``docs/quantization.md`` has what each step gained):

* weights: int8 symmetric per output channel (:func:`sw.quant.quantize_linear`),
  ``w ~ s_w[n] * q_w``; or, for the linear nodes given in ``q4``, a block format of
  :mod:`sw.q4` (4-bit codes with block scales and offsets, or int8 codes with block
  scales: a model file's own codes, or :func:`sw.q4.quantize`), ``w = u[n] * W``, where
  ``u`` plays the part of ``s_w``;
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

import math

import numpy as np

from serrano.hw import isa
from .. import compiler, isa_model
from .. import q4 as q4_format
from ..quant import quantize_linear
from ..requant import split_wide
from . import float_exec

__all__ = ["ACT_BITS", "split16", "quantize_rows", "q4_weights", "KVCache",
           "DeviceExecutor"]

#: Bits of the per-token GEMM inputs: 16 (two int8 passes) or 8.
ACT_BITS = 16
_TOP = {8: 127, 16: 127 * 256 + 127}


def _linear_nodes(graph):
    return [n for n in graph.nodes if n.op == "linear"]


def split16(q):
    """``q`` (int32, |q| <= 32639) as int8 ``(hi, lo)`` with ``q == 256 * hi + lo``: the
    hardware's own split of a 16-bit value (:func:`sw.requant.split_wide`)."""
    return split_wide(q)


def quantize_rows(x, bits):
    """Per-row symmetric quantization of ``x`` (2-D) to ``bits`` (8 or 16): ``(q, s)``,
    ``q`` int32 with ``|q| <= top``, ``x ~ q * s[:, None]``."""
    x = np.asarray(x, np.float64)
    peak = np.abs(x).max(axis=-1)
    s = np.where(peak > 0, peak / _TOP[bits], 1.0)
    return np.clip(np.round(x / s[:, None]), -_TOP[bits], _TOP[bits]).astype(np.int32), s


class KVCache:
    """Keys (``role="k"``) or values (``role="v"``) of ``heads`` KV heads of width ``d`` in
    device memory, room for ``capacity`` positions, int8 with a scale per (head,
    position); laid out as the weights of the attention product that reads them (see
    the module docstring). :meth:`append` adds positions; ``len`` is the positions held."""

    def __init__(self, dev, role, heads, d, capacity):
        cfg = dev.cfg
        R, C = cfg.rows, cfg.cols
        self.dev, self.role, self.heads, self.d = dev, role, heads, d
        self.capacity = -(-capacity // max(R, C)) * max(R, C)
        self.n = 0
        self.q = np.zeros((heads, self.capacity, d), np.int8)      # host mirror of tiles
        self.scale = np.ones((heads, self.capacity))
        if role == "k":                 # K^T: d x positions, N-tiles along positions
            self.kt, self.nt = -(-d // R), self.capacity // C
        else:                           # V: positions x d, K-tiles along positions
            self.kt, self.nt = self.capacity // R, -(-d // C)
        self.head_bytes = self.kt * self.nt * R * C
        self.addr = dev.alloc(heads * self.head_bytes)

    def __len__(self):
        return self.n

    def append(self, x):
        """Quantize ``x`` (``heads x new x d``) per position and write the tiles that
        hold the new positions."""
        x = np.asarray(x, np.float64)
        new = x.shape[-2]
        if self.n + new > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions; "
                             f"{self.n + new} do not fit")
        p0, p1 = self.n, self.n + new
        q, s = quantize_rows(x.reshape(-1, self.d), 8)       # a scale per (head, position)
        self.q[:, p0:p1] = q.reshape(self.heads, new, self.d)
        self.scale[:, p0:p1] = s.reshape(self.heads, new)
        self.n = p1
        cfg = self.dev.cfg
        R, C = cfg.rows, cfg.cols
        tile = R * C
        if self.role == "k":
            for h in range(self.heads):
                for j in range(p0 // C, -(-p1 // C)):
                    wt = np.zeros((self.kt * R, C), np.int8)
                    wt[:self.d] = self.q[h, j * C:(j + 1) * C].T
                    blob = wt.reshape(self.kt, R, C)
                    self.dev.write(self.addr + h * self.head_bytes + j * self.kt * tile,
                                   blob.view(np.uint8).ravel())
        else:
            for h in range(self.heads):
                for i in range(p0 // R, -(-p1 // R)):
                    rows = np.zeros((R, self.nt * C), np.int8)
                    rows[:, :self.d] = self.q[h, i * R:(i + 1) * R]
                    for j in range(self.nt):
                        self.dev.write(self.addr + h * self.head_bytes
                                       + (j * self.kt + i) * tile,
                                       rows[:, j * C:(j + 1) * C].copy().view(np.uint8)
                                       .ravel())

    def gemm(self, h, M, a_addr, y_addr):
        """The raw GEMM of ``M`` rows at ``a_addr`` against head ``h``."""
        cfg = self.dev.cfg
        base = self.addr + h * self.head_bytes
        if self.role == "k":
            return compiler.Gemm(M, self.d, self.n, a_addr, base, None, y_addr, raw=True)
        return compiler.Gemm(M, self.n, self.d, a_addr, base, None, y_addr, raw=True,
                             w_stride=self.kt * cfg.rows * cfg.cols)


@dataclass
class _Linear:
    w_scale: np.ndarray
    k: int
    n: int
    w_addr: int
    b: np.ndarray = None
    wfmt: int = isa.WeightFormat.INT8


def q4_weights(graph, params, block, given=None):
    """Block-format weights for the linear nodes of ``graph``: ``given`` (a model file's
    own codes, :class:`sw.q4.Q4Weights` or :class:`sw.q4.Q8Weights` keyed by parameter
    name) if given, else :func:`sw.q4.quantize` of every float weight."""
    if given is not None:
        return dict(given)
    return {n.attrs["w"]: q4_format.quantize(params[n.attrs["w"]], block)
            for n in _linear_nodes(graph)}


class DeviceExecutor:
    """``graph`` with its ``params`` on ``dev``: the int8 weights of every linear node go
    into device memory once, and so do the KV caches, with room for ``positions``
    positions (:meth:`__init__`); :meth:`run` then executes the graph for new inputs, one
    device call per group of linear nodes that share an input and one per attention
    product, with ``act_bits`` (8 or 16) per-token inputs (see the module docstring).
    One sequence at a time: a new ``state`` dict starts a new one (and empties the
    caches)."""

    def __init__(self, dev, graph, params, *, act_bits=ACT_BITS, positions=512, q4=None):
        if act_bits not in _TOP:
            raise ValueError(f"act_bits must be 8 or 16, not {act_bits!r}")
        if not isinstance(positions, int) or positions < 1:
            raise ValueError(f"positions must be a positive integer, not {positions!r}")
        self.dev, self.graph, self.params = dev, graph, params
        self.act_bits = act_bits
        cfg = dev.cfg
        self.linears = {}
        q4 = q4 or {}
        for n in _linear_nodes(graph):
            w = params[n.attrs["w"]]
            b = n.attrs.get("b")
            b = None if b is None else np.asarray(params[b], np.float64)
            qw = q4.get(n.attrs["w"])
            if qw is not None:
                if qw.shape != w.shape:
                    raise ValueError(f"the 4-bit {n.attrs['w']} is {qw.shape}, the weight "
                                     f"{w.shape}")
                self.linears[n.out] = _Linear(
                    w_scale=np.asarray(qw.unit, np.float64), k=w.shape[0], n=w.shape[1],
                    w_addr=dev.put(q4_format.pack(qw, cfg)), b=b,
                    wfmt=q4_format.weight_format(qw))
                continue
            ql = quantize_linear(w, np.zeros(w.shape[1]))
            self.linears[n.out] = _Linear(
                w_scale=np.asarray(ql.w_scale, np.float64), k=w.shape[0], n=w.shape[1],
                w_addr=dev.put(isa_model.pack_weights(ql.wq, cfg)), b=b)
        # Linear nodes that read the same value run together, where the first one is.
        self.groups = {}
        first = {}
        for n in graph.nodes:
            if n.op == "linear":
                key = first.setdefault(n.ins[0], n.out)
                self.groups.setdefault(key, []).append(n.out)
        # One device KV cache per kv_append slot, for the whole executor's life.
        maker = {n.out: n for n in graph.nodes}
        role = {}
        for n in graph.nodes:
            if n.op in ("scores", "context"):
                role[n.ins[1]] = "k" if n.op == "scores" else "v"
        self.caches = {}
        for n in graph.nodes:
            if n.op != "kv_append":
                continue
            src = maker[n.ins[0]]
            while src.op != "split_heads":
                src = maker[src.ins[0]]
            heads = src.attrs["heads"]
            width = self.linears[src.ins[0]].n
            self.caches[n.attrs["slot"]] = KVCache(dev, role[n.out], heads, width // heads,
                                                   positions)
        self._sequence = None

    def _rows(self, x):
        """Per-row quantized int8 rows of ``x`` (2-D) for a GEMM (two per row at 16 bits),
        their scales, and how to recombine the GEMM's int32 rows."""
        q, s = quantize_rows(x, self.act_bits)
        if self.act_bits == 16:
            return np.concatenate(split16(q)), s, \
                (lambda acc: 256 * acc[:len(q)] + acc[len(q):])
        return q.astype(np.int8), s, (lambda acc: acc)

    def _device_call(self, name, jobs):
        """One device call of raw GEMMs: ``jobs`` is a list of ``(x, gemm, n)``, ``x`` the
        float input rows, ``gemm(M, a_addr, y_addr)`` its :class:`sw.compiler.Gemm`, ``n``
        its output width. Returns each job's ``acc * s_row`` in float64."""
        dev, cfg = self.dev, self.dev.cfg
        mark = dev.mark()                      # this call's scratch, freed when read
        b = dev.builder()
        pending = []
        for x, gemm, n in jobs:
            rows, s, combine = self._rows(x)
            a_addr = dev.put(compiler.pack_acts(rows, cfg))
            nbytes = compiler.out_bytes(cfg, len(rows), n, raw=True)
            y_addr = dev.alloc(nbytes)
            b.gemm(gemm(len(rows), a_addr, y_addr))
            pending.append((y_addr, nbytes, len(rows), n, s, combine))
        dev.call(name, b)
        out = []
        for y_addr, nbytes, M, n, s, combine in pending:
            acc = compiler.unpack_raw(dev.read(y_addr, nbytes), M, n, cfg).astype(np.int64)
            out.append(combine(acc) * s[:, None])
        dev.release(mark)
        return out

    def _call(self, names, x):
        x2 = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
        jobs = []
        for name in names:
            lin = self.linears[name]
            jobs.append((x2, (lambda M, a, y, lin=lin: compiler.Gemm(
                M, lin.k, lin.n, a, lin.w_addr, None, y, raw=True, wfmt=lin.wfmt)), lin.n))
        result = {}
        for name, y in zip(names, self._device_call(" + ".join(names), jobs)):
            lin = self.linears[name]
            y = y * lin.w_scale
            if lin.b is not None:
                y = y + lin.b
            result[name] = y.astype(np.float32).reshape(*x.shape[:-1], lin.n)
        return result

    @staticmethod
    def _heads(x, what):
        """``x`` as ``(heads, s, n)``: one sequence (leading dimensions of size 1)."""
        x = np.asarray(x)
        if int(np.prod(x.shape[:-3], dtype=np.int64)) != 1:
            raise ValueError(f"the device runs {what} for one sequence at a time, not a "
                             f"batch of shape {x.shape[:-3]}")
        return x.reshape(x.shape[-3:])

    def _cache_of(self, kv, role):
        """A :class:`KVCache` as it is, or an array ``(heads, s, d)`` put into a scratch
        one (attention without a cache: BERT)."""
        if isinstance(kv, KVCache):
            return kv
        kv = self._heads(kv, "attention")
        cache = KVCache(self.dev, role, kv.shape[0], kv.shape[2], kv.shape[1])
        cache.append(kv)
        return cache

    def _scores(self, n, q, kv):
        lead = np.shape(q)[:-3]
        q = self._heads(q, "attention")
        cache = self._cache_of(kv, "k")
        heads, S, d = q.shape
        group, P = n.attrs["group"], len(cache)
        jobs = [(q[h * group:(h + 1) * group].reshape(group * S, d),
                 (lambda M, a, y, h=h: cache.gemm(h, M, a, y)), P)
                for h in range(cache.heads)]
        out = np.empty((heads, S, P))
        for h, acc in enumerate(self._device_call(n.out, jobs)):
            out[h * group:(h + 1) * group] = (acc * cache.scale[h, :P] / math.sqrt(d)
                                              ).reshape(group, S, P)
        return out.astype(np.float32).reshape(*lead, heads, S, P)

    def _context(self, n, p, kv):
        lead = np.shape(p)[:-3]
        p = self._heads(p, "attention")
        cache = self._cache_of(kv, "v")
        heads, S, P = p.shape
        group, d = n.attrs["group"], cache.d
        jobs = [((p[h * group:(h + 1) * group] * cache.scale[h, :P]).reshape(group * S, P),
                 (lambda M, a, y, h=h: cache.gemm(h, M, a, y)), d)
                for h in range(cache.heads)]
        out = np.empty((heads, S, d))
        for h, acc in enumerate(self._device_call(n.out, jobs)):
            out[h * group:(h + 1) * group] = acc.reshape(group, S, d)
        return out.astype(np.float32).reshape(*lead, heads, S, d)

    def run(self, feeds, state, *, keep=(), last=False):
        """Run the graph on ``feeds`` with ``state`` (this sequence's KV caches, in device
        memory: pass the same dict from step to step, a new one for a new sequence); the
        graph's outputs and the values named in ``keep``. With ``last``, an output that a
        linear computes (a language model's logits) is computed for the last position
        only, all a generator needs: a prefill's LM head then streams its weights past
        one row, not every prompt position's (rows are quantized each on its own scale,
        so that row is the same either way). Scratch device memory is freed at the
        end."""
        dev = self.dev
        if self.caches and state.get("_sequence") is not self:
            if state:
                raise ValueError("this state belongs to another executor or sequence")
            for cache in self.caches.values():         # a new sequence: empty caches
                cache.n = 0
            state.update(self.caches, _sequence=self)
            self._sequence = state
        elif self.caches and self._sequence is not state:
            raise ValueError("the device KV caches hold a newer sequence than this state")
        values = float_exec.feed(self.graph, feeds)
        mark = dev.mark()
        try:
            for n in self.graph.nodes:
                if n.out in values:
                    continue                          # computed with its group
                x = [values[i] for i in n.ins]
                if n.op == "linear":
                    xin = x[0]
                    if last and set(self.groups[n.out]) <= set(self.graph.outputs):
                        xin = xin.reshape(-1, xin.shape[-1])[-1:]
                    values.update(self._call(self.groups[n.out], xin))
                elif n.op == "kv_append":
                    cache = state[n.attrs["slot"]]
                    cache.append(self._heads(x[0], "a KV cache"))
                    values[n.out] = cache
                elif n.op == "scores":
                    values[n.out] = self._scores(n, x[0], x[1])
                elif n.op == "context":
                    values[n.out] = self._context(n, x[0], x[1])
                else:
                    values[n.out] = float_exec.eval_node(n, x, self.params, state)
        finally:
            dev.release(mark)
        return {name: values[name] for name in (*self.graph.outputs, *keep)}
