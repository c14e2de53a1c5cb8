"""The device executor, second form: a whole graph lowered to **one program**, every op on
the chip.

:class:`OnChip` takes a graph (:mod:`sw.nn.archs`), its parameters and calibration
statistics (:func:`calibrate`), puts the weights, requantization parameter sets, norm
gains and biases and lookup tables into device memory once, and for each input runs a
single program: one host round trip per forward pass (the input rows in, the output rows
out). ``linear`` runs on the array with its bias and requantization in the ``STORE``;
``add``, ``layernorm``, ``gelu`` and ``softmax`` on the vector unit (``VEC``, arithmetic
in :mod:`sw.vector`); attention's keys leave the array through a transposing ``STORE`` as
the weights of ``Q K^T``, its values through a plain one as the weights of ``P V``.

Precision. The residual stream, every GEMM input but attention's and the attention
probabilities are **16-bit**, as two int8 halves ``q = 256 hi + lo`` (post-LN BERT
carries a few channels far above the rest through its residual stream and its norms'
gains; an int8 scale that holds them rounds the rest away): ``STORE wide`` writes a
GEMM's output that feeds an ``add`` in 16 bits, ``VEC ADD wide`` adds two 16-bit rows,
the norms read and write 16 bits, the GELU takes a 16-bit input and gives a 16-bit
result (:data:`GELU_CLAMP`: ``relu(x)`` in 16 bits plus ``-g`` of ``x`` saturated to
int8 through two tables), the softmax writes 16-bit probabilities, the attention's
context is 16-bit, and a 16-bit GEMM input streams its high and low rows past one weight
stream (``MATMUL pair``) or, with ``gemm_inputs="dynamic"``, is smoothed and quantized
to int8 with a scale per token (``VEC MUL wide``, ``VEC DYNQ``, ``STORE rowscale``;
not the context, which stays a pair). Q, K, V and the scores are int8; V with a
scale per channel.

Layouts. Every value lives in the activation buffer in the array's k-tile-major layout:
``M`` rows (the tokens of the block) of ``ceil(K/R)`` k-tiles. An int8 value
holds k-tile ``t`` of token ``m`` at ``base + t*M + m``; a 16-bit value holds its high
halves at ``base + 2tM + m`` and its low halves ``M`` rows later (the pair layout: one
``MATMUL pair`` reads both with ``act_kstep = 2M``). ``VEC`` reads a token's vector with
``stride`` = ``M`` or ``2M``. ``split_heads`` and ``merge_heads`` cost nothing (head ``h``
is k-tiles ``h*d/R ..``). Buffer rows are allocated by liveness (best fit); an input
too long for the buffer is a one-line error.

Quantization (static, calibrated, stated once here): weights int8 per output channel
(:func:`sw.quant.quantize_linear`); an int8 value at ``max|v| / 127`` over the
calibration inputs, a 16-bit one at ``WIDE_HEADROOM * max|v| / WIDE_MAX`` (room for
inputs beyond the calibration's range at 14 bits of resolution); ``probs`` at
``1/(127 * 256)``;
``linear``: ``requantize(acc + round(b / (s_x s_w)), s_x s_w / s_y)`` per channel;
``scores``: ``s_q s_k / sqrt(d) / s_s``; ``context``: ``s_v[c] / 127 / s_c`` a column
(``s_v[c]``: twice channel ``c``'s peak, at most the tensor's, over 127) (a ``pair``
product counts at 1/256; so does a 16-bit input's: ``s_x = 256`` times its scale, and a
per-token int8 input's after ``rowscale``, at its smoothed scale); ``add``:
:func:`sw.vector.add_multipliers`; ``layernorm``: ``gamma x_hat + beta`` at ``s_y``, one
``VEC LAYERNORM beta`` (``beta`` 16-bit at ``s_y``, added to the rounded product);
``gelu``: :func:`sw.vector.make_wide_tables` of ``gelu - relu`` at ``GELU_CLAMP / 127``.

Ordering: dependency tokens between the units (:class:`_Emitter`), a ``FENCE`` only
where memory orders two steps or the parameter slots wrap (a ``FENCE stores`` where
what ``STORE``s wrote to memory is read: the keys and values of attention). Long inputs run in token
blocks (:class:`_Lowering`); an input that fits one block keeps every value in the
buffer (``resident``).

Overlap (the units run at once wherever the data allow): each tile's ``STORE`` is
emitted after the next tile's ``MATMUL`` (the store unit takes one ``STORE`` at a time
and the front end dispatches in order); an elementwise op on a GEMM's output (the
residual ``add``, the ``gelu`` and the smoothing after it) runs :data:`FUSE_TILES`
N-tiles at a time behind the GEMM's ``STORE``; attention makes every head's scores
while the vector unit runs the softmaxes, then the value projection, then the contexts.
What stays exposed is the vector work between two GEMMs that needs whole rows (the
norms, ``DYNQ``).

Lowered: the ops of :func:`sw.nn.archs.bert_encoder` (MiniLM, bert-tiny), one sequence
per program (:meth:`OnChip.run`) or a batch of them (:meth:`OnChip.run_batch`: short
sequences stacked, their rows through each weight tile at once; two stacks at a time as
two streams of one emitter). Other ops raise :class:`NotLowered` naming them.
"""

import math
from dataclasses import dataclass

import numpy as np

from serrano.hw import isa
from .. import isa_model, vector
from ..models import layers as L
from ..quant import quantize_linear, requant_params
from ..requant import split_wide
from . import float_exec
from .graph import Graph

__all__ = ["LOWERED", "WIDE_HEADROOM", "SMOOTH_ALPHA", "CONTEXT_DYNQ_TOKENS", "GEMM_INPUTS",
           "DEFAULT_GEMM_INPUTS", "Peaks", "calibrate",
           "wide_rows", "read_rows", "OnChip", "NotLowered", "TooLong"]

#: 16-bit values are calibrated to ``WIDE_MAX / WIDE_HEADROOM``.
WIDE_HEADROOM = 2.0
#: The GELU of a 16-bit input: ``relu(x) - g(x)`` with ``g = relu - gelu`` (even, at
#: most 0.17, below 1.3e-4 past ``|x| = 4``) read from a table of ``x`` saturated to
#: ``+-GELU_CLAMP`` in int8 (steps of ``GELU_CLAMP / 127``).
GELU_CLAMP = 4.0
#: SmoothQuant's migration strength: a GEMM input's channel ``c`` is divided by
#: ``s_c = (max|x_c|)**ALPHA / (max|W_c|)**(1 - ALPHA)`` and its weights' row ``c``
#: multiplied by it.
SMOOTH_ALPHA = 0.5
#: With ``dynamic`` inputs the attention's context (the output projection's input) goes
#: to int8 per token (``VEC DYNQ`` of the 16-bit value itself: not smoothed, so the
#: output projection keeps its weights and parameter sets) only in a lowering whose
#: every sequence has at least this many tokens; in shorter ones it streams as a 16-bit
#: pair. Per token it saves the pair's second row in every output-projection tile (the
#: 23-token sentence of README: 1,305,303 -> 1,237,182 cycles, cosine 0.99768 ->
#: 0.99797), but it costs accuracy on short sentences, whose mean-pooled embedding
#: averages few tokens' errors (with this set to 0, ``serrano run --model minilm
#: --backend golden --json --text "Can you help me with this?"``: 0.9911, against
#: 0.9936 as a pair).
CONTEXT_DYNQ_TOKENS = 16
#: With ``dynamic`` inputs, each feed-forward block in two halves of its intermediate
#: columns (:func:`split_ffn`), each to int8 per token on its own, so that the ``DYNQ``
#: of one half runs under the other half's GEMM.
SPLIT_FFN = True
#: A LayerNorm whose output a GEMM takes smoothed (``dynamic`` inputs) runs twice: first
#: with the smoothing folded into its gains and ``beta`` (``gamma / smooth``, ``beta /
#: smooth``, into the smoothed rows: no ``VEC MUL`` between the norm and the ``DYNQ``
#: the GEMM waits for), then, under that GEMM, as itself for the other readers.
FOLD_SMOOTHING = True
#: N-tiles of a GEMM between the ``VEC`` chunks of the elementwise op that reads its
#: output (a residual ``add``, the ``gelu``), which run behind the GEMM's ``STORE``s.
FUSE_TILES = 4
#: Chunks of :data:`FUSE_TILES` N-tiles in the ring that holds the up projection's
#: saturated rows while the GELU reads them.
RING_CHUNKS = 3
#: How a 16-bit value enters a GEMM: ``"dynamic"`` (smoothed, then int8 per token,
#: ``VEC MUL`` and ``VEC DYNQ``, ``STORE rowscale``) or ``"pair"`` (its two halves
#: through one weight stream, ``MATMUL pair``).
GEMM_INPUTS = ("dynamic", "pair")
#: The default: ``dynamic`` streams half the rows of ``pair`` through the array, and a
#: short sequence takes its smoothed inputs as pairs anyway (:meth:`OnChip._short`).
DEFAULT_GEMM_INPUTS = "dynamic"

#: The ops this executor lowers.
LOWERED = ("linear", "split_heads", "merge_heads", "scores", "softmax", "context", "add",
           "layernorm", "gelu")


class NotLowered(ValueError):
    """A graph uses an op (or a form of one) the on-chip executor does not lower yet."""


class TooLong(ValueError):
    """The input's values do not fit the activation buffer (or a block's rows one
    accumulator half) in one program."""


class Peaks(dict):
    """Calibration maxima: ``{value: max |value|}``, and in :attr:`channels` each
    value's maxima per channel (its last axis)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels = {}


def split_ffn(graph, params):
    """``graph`` with each feed-forward block ``A = add(h, D(gelu(U(h))))`` in two
    halves of its intermediate columns: ``U.0``, ``gelu.0``, ``U.1``, ``gelu.1``,
    ``D.0`` (the first half of ``D``'s rows, its bias), ``A.0 = add(h, D.0)``, ``D.1``
    (the second half, no bias), ``A = add(A.0, D.1)``: the same map in float. On the
    chip each half goes to int8 per token on its own (``DYNQ`` of half the row, a scale
    a token each), so that one half's ``DYNQ`` runs under the other half's GEMM instead
    of between the up and the down projection (:data:`SPLIT_FFN`). Returns ``(graph,
    params)``, new objects (the inputs unchanged); the graph as given if it has no such
    block."""
    if getattr(graph, "ffn_split", False):
        return graph, params
    users = {}
    for n in graph.nodes:
        for i in n.ins:
            users.setdefault(i, []).append(n)
    blocks = {}
    for u in graph.nodes:
        if u.op != "linear" or [x.op for x in users.get(u.out, ())] != ["gelu"]:
            continue
        g = users[u.out][0]
        if [x.op for x in users.get(g.out, ())] != ["linear"]:
            continue
        d = users[g.out][0]
        if [x.op for x in users.get(d.out, ())] != ["add"] or d.out in graph.outputs:
            continue
        a = users[d.out][0]
        if np.asarray(params[u.attrs["w"]]).shape[1] % 2:
            continue
        blocks[u.out] = (u, g, d, a)
    if not blocks:
        return graph, params
    out, new = Graph(graph.name), dict(params)
    out.ffn_split = True
    for name in graph.inputs:
        out.input(name)
    skip = {x.out for b in blocks.values() for x in b[1:]}
    for n in graph.nodes:
        if n.out in skip:
            continue
        if n.out not in blocks:
            out.add(n.op, n.out, *n.ins, **n.attrs)
            continue
        u, g, d, a = blocks[n.out]
        wu, wd = np.asarray(params[u.attrs["w"]]), np.asarray(params[d.attrs["w"]])
        half = wu.shape[1] // 2
        bu = params[u.attrs["b"]] if u.attrs.get("b") else np.zeros(wu.shape[1])
        for k, cols in enumerate((slice(0, half), slice(half, None))):
            new[f"{u.attrs['w']}.{k}"] = wu[:, cols]
            new[f"{u.attrs['w']}.{k}~b"] = np.asarray(bu)[cols]
            new[f"{d.attrs['w']}.{k}"] = wd[cols, :]
            out.add("linear", f"{u.out}.{k}", *u.ins, w=f"{u.attrs['w']}.{k}",
                    b=f"{u.attrs['w']}.{k}~b")
            out.add("gelu", f"{g.out}.{k}", f"{u.out}.{k}")
        h = a.ins[0] if a.ins[1] == d.out else a.ins[1]
        for k in range(2):
            attrs = dict(w=f"{d.attrs['w']}.{k}")
            if k == 0 and d.attrs.get("b"):
                attrs["b"] = d.attrs["b"]
            out.add("linear", f"{d.out}.{k}", f"{g.out}.{k}", **attrs)
            out.add("add", f"{a.out}.0" if k == 0 else a.out,
                    h if k == 0 else f"{a.out}.0", f"{d.out}.{k}")
    for name in graph.outputs:
        out.output(name)
    return out, new


def calibrate(graph, params, feeds_list):
    """:class:`Peaks` of float runs of ``graph`` on each feeds dict (the graph's inputs
    included), and of the values :func:`split_ffn` adds (from runs of its graph)."""
    peak = Peaks()
    split, split_params = split_ffn(graph, params)
    if split is not graph:
        extra = {n.out for n in split.nodes} - {n.out for n in graph.nodes}
        sub = calibrate(split, split_params, feeds_list)
        for name in extra:
            peak[name] = sub[name]
            peak.channels[name] = sub.channels[name]

    def observe(name, value):
        a = np.abs(np.asarray(value, np.float64))
        v = float(a.max(initial=0.0))
        peak[name] = max(peak.get(name, 0.0), v)
        if a.ndim and a.size:
            ch = a.reshape(-1, a.shape[-1]).max(axis=0)
            old = peak.channels.get(name)
            peak.channels[name] = ch if old is None or old.shape != ch.shape else \
                np.maximum(old, ch)

    for feeds in feeds_list:
        for name in graph.inputs:
            if name != "mask":
                observe(name, feeds[name])
        float_exec.run(graph, params, feeds, observe=observe)
    return peak


@dataclass(eq=False)
class _Region:
    """Buffer rows of a value: ``tiles`` k-tiles ``kstep`` rows apart, ``M`` tokens
    each; a 16-bit value's low halves ``M`` rows after its high halves."""
    base: int
    M: int
    tiles: int
    wide: bool
    kstep: int
    #: The latest ``VEC`` that may still read or write rows of this region (rows freed
    #: by earlier values, allocated again): what its writers must wait for first.
    vsync: int = -1

    @property
    def lo(self):
        return self.base + self.M


class _Buffer:
    """Best-fit allocation of activation-buffer rows from ``lo`` to below ``limit``."""

    def __init__(self, limit, lo=0):
        self.limit, self.lo = limit, lo
        self.used = []                                  # (base, rows), sorted

    def alloc(self, rows, what, top=False, avoid=()):
        """``rows`` rows for ``what``: the smallest gap that holds them, or (``top``, for
        the largest values) the top of the highest one, so that big and small values
        do not interleave; outside the free ``(base, rows)`` runs of ``avoid`` if it
        can."""
        runs = []                        # avoid's free parts, merged
        for b, n in sorted(avoid):
            if any(b < ub + un and ub < b + n for ub, un in self.used):
                continue
            if runs and b <= runs[-1][0] + runs[-1][1]:
                e = max(runs[-1][0] + runs[-1][1], b + n)
                runs[-1] = (runs[-1][0], e - runs[-1][0])
            else:
                runs.append((b, n))
        if runs:
            saved = self.used
            self.used = sorted(saved + runs)
            try:
                at = self.alloc(rows, what, top)
            except TooLong:
                at = None
            self.used = saved
            if at is not None:
                self.used = sorted(saved + [(at, rows)])
                return at
        ends = [self.lo] + [b + n for b, n in self.used]
        starts = [b for b, _ in self.used] + [self.limit]
        gaps = [(s - e, e, s) for e, s in zip(ends, starts) if s - e >= rows]
        if gaps:
            at = max(gaps, key=lambda g: g[2])[2] - rows if top else min(gaps)[1]
        else:
            run = max(s - e for e, s in zip(ends, starts))
            raise TooLong(f"{what} needs {rows} activation-buffer rows, the longest free run "
                          f"is {run}: the input is too long for one program on this preset "
                          f"(use a shorter input, a larger preset or --host-ops)")
        self.used = sorted(self.used + [(at, rows)])
        return at

    def free(self, base):
        self.used = [(b, n) for b, n in self.used if b != base]


def _tiles(n, size):
    return -(-n // size)


def param_rows(values, R):
    """int8 ``values`` as whole rows of ``R`` (zeros past them): a vector parameter's
    buffer rows."""
    v = np.zeros(_tiles(len(values), R) * R, np.int8)
    v[:len(values)] = values
    return v.reshape(-1, R)


def wide_rows(q, P, cfg):
    """16-bit ``q`` (``rows x K``, ``rows <= P``) as a value in memory: k-tile-major over
    ``P`` rows (zeros past ``rows``), each row its high halves' ``R`` bytes then its low
    halves' (a two-beat ``LOAD_ACT`` brings a block back as a ``pair``)."""
    R = cfg.rows
    rows, K = q.shape
    kt = _tiles(K, R)
    full = np.zeros((P, kt * R), np.int64)
    full[:rows, :K] = q
    hi, lo = split_wide(full)
    out = np.stack([hi.reshape(P, kt, R), lo.reshape(P, kt, R)], axis=2)   # (P, kt, 2, R)
    return out.transpose(1, 0, 2, 3).ravel().view(np.uint8).copy()


def read_rows(dev, spill, P, cfg):
    """A value's ``P x kt*R`` rows from memory (int8, or 16-bit from its halves)."""
    R, kt, wide = cfg.rows, spill["kt"], spill["wide"]
    raw = dev.read(spill["addr"], kt * P * R * (1 + wide)).view(np.int8).astype(np.int64)
    if wide:
        t = raw.reshape(kt, P, 2, R)
        return (256 * t[:, :, 0] + t[:, :, 1]).transpose(1, 0, 2).reshape(P, kt * R)
    return raw.reshape(kt, P, R).transpose(1, 0, 2).reshape(P, kt * R)


class _ScalarParams:
    """Parameter sets that scale every column by one factor (or each column by its
    own), put into device memory once per tuple of factors (``self._pcache``,
    ``self.dev``, ``self.cfg``)."""

    def _scalar_params(self, factors):
        """Parameter sets, one per factor, each scaling every column by it (no bias); a
        factor may be a tuple of ``C``, one a column."""
        if factors not in self._pcache:
            C = self.cfg.cols
            sets = []
            for f in factors:
                _, mult, shift = requant_params(1.0, np.broadcast_to(np.asarray(
                    f, np.float64), (C,)), 1.0)
                sets.append(isa_model.pack_params(np.zeros(C, np.int64), mult, shift,
                                                  self.cfg))
            self._pcache[factors] = self.dev.put(np.concatenate(sets))
        return self._pcache[factors]


class OnChip(_ScalarParams):
    """``graph`` with ``params`` on ``dev``, every op on the chip, one program per run.

    ``peaks`` are the calibration maxima (:func:`calibrate`). :meth:`run` takes the
    graph's feeds for one sequence (``x``: ``(S, hidden)`` or ``(1, S, hidden)``; a
    ``mask`` of ones, if given) and returns the outputs in float.
    """

    def __init__(self, dev, graph, params, peaks, *, gemm_inputs=DEFAULT_GEMM_INPUTS):
        if gemm_inputs not in GEMM_INPUTS:
            raise ValueError(f"gemm_inputs must be one of {', '.join(GEMM_INPUTS)}, not "
                             f"{gemm_inputs!r}")
        for n in graph.nodes:
            if n.op not in LOWERED:
                raise NotLowered(f"{graph.name}: op {n.op!r} ({n.out}) is not lowered to "
                                 f"the chip yet (lowered: {', '.join(LOWERED)})")
            if n.op == "softmax" and n.attrs["causal"]:
                raise NotLowered(f"{graph.name}: causal attention ({n.out}) is not lowered "
                                 f"to the chip yet")
        if gemm_inputs == "dynamic" and SPLIT_FFN:
            graph, params = split_ffn(graph, params)
        self.dev, self.graph, self.params = dev, graph, params
        cfg = self.cfg = dev.cfg
        R, C = cfg.rows, cfg.cols
        self.maker = {n.out: n for n in graph.nodes}
        self.users = {}
        for n in graph.nodes:
            for i in n.ins:
                self.users.setdefault(i, []).append(n)
        # 16-bit values: the graph's input, every add, norm and GELU output, and the
        # linear outputs that an add reads.
        self.wide = {graph.inputs[0]}
        for n in graph.nodes:
            if n.op in ("add", "layernorm", "gelu", "context"):
                self.wide.add(n.out)
            if n.op == "merge_heads" and n.ins[0] in self.wide:
                self.wide.add(n.out)
            if n.op == "add":
                self.wide.update(v for v in n.ins
                                 if v in self.maker and self.maker[v].op == "linear")
        self.scale = {}
        for name, peak in peaks.items():
            top = isa.WIDE_MAX / WIDE_HEADROOM if name in self.wide else 127.0
            self.scale[name] = peak / top if peak > 0 else 1.0
        for n in graph.nodes:
            if n.op in ("split_heads", "merge_heads"):
                self.scale[n.out] = self.scale[n.ins[0]]
            elif n.op == "softmax":                 # 16-bit probabilities
                self.scale[n.out] = 1.0 / (vector.SOFTMAX_ONE * 256)
        # 16-bit GEMM inputs as int8 per token: each channel smoothed (``VEC MUL`` by a
        # 16-bit factor, into ``s``), then its own scale a row (``VEC DYNQ``).
        self.dyn, self.dyn_raw = {}, set()
        channels = getattr(peaks, "channels", {})
        for name in sorted(self.wide) if gemm_inputs == "dynamic" else ():
            readers = [u for u in self.users.get(name, ()) if u.op == "linear"]
            made = self.maker.get(name)
            if made is not None and made.op == "merge_heads":
                # The context: not smoothed (its output projection's weights and
                # parameter sets stay those of its pair), to int8 per token in long
                # sequences only (CONTEXT_DYNQ_TOKENS).
                if readers:
                    self.dyn_raw.add(name)
            elif readers and name in channels:
                self.dyn[name] = self._smoothing(name, readers, channels[name])
        # Weights once: int8 per channel, packed, with their parameter sets.
        self.lin, self.vscale = {}, {}
        for n in graph.nodes:
            if n.op != "linear":
                continue
            w = np.asarray(params[n.attrs["w"]], np.float64)
            b = params[n.attrs["b"]] if n.attrs.get("b") else np.zeros(w.shape[1])
            if n.ins[0] in self.dyn:                # the input smoothed: W's rows times it
                w = w * self.dyn[n.ins[0]]["smooth"][:, None]
            ql = quantize_linear(w, np.asarray(b, np.float64))
            role = self._role(n.out)
            if role == "v":           # attention's values: an int8 scale per channel
                ch = np.asarray(getattr(peaks, "channels", {}).get(
                    n.out, np.full(w.shape[1], peaks.get(n.out, 0.0))), np.float64)
                top = max(ch.max(), 1e-12)        # twice the channel's peak, at most
                self.vscale[n.out] = np.minimum(2 * np.maximum(ch, top * 1e-3), top) / 127
            if role == "gelu":        # two sets a tile: relu(x) in 16 bits, x saturated
                s_relu = WIDE_HEADROOM * max(peaks.get(n.out, 0.0), 1e-12) / isa.WIDE_MAX
                sets = [isa_model.pack_params(*requant_params(
                    self.acc_scale(n.ins[0]), ql.w_scale, s_y, ql.b), cfg).reshape(
                        -1, isa.PARAM_BEATS * cfg.bus_bytes)
                        for s_y in (s_relu, GELU_CLAMP / 127)]
                params_bytes = np.stack(sets, axis=1).ravel()
                self.scale[n.out + "~relu"] = s_relu
            else:
                params_bytes = isa_model.pack_params(*requant_params(
                    self.acc_scale(n.ins[0]), ql.w_scale,
                    self.vscale.get(n.out, self.scale[n.out]), ql.b), cfg)
            self.lin[n.out] = dict(
                k=w.shape[0], n=w.shape[1], role=role,
                w_addr=dev.put(isa_model.pack_weights(ql.wq, cfg)),
                p_addr=dev.put(params_bytes), sets=1 + (role == "gelu"))
        # What the vector unit reads besides activations (norm gains and biases, tables):
        # rows loaded once per program into the top of the buffer.
        self.vrows, self.vparam = [], {}
        for name, d in self.dyn.items():
            d["b_hi"] = self._vrows(d.pop("hi"))
            d["b_lo"] = self._vrows(d.pop("lo"))
        for n in graph.nodes:
            if n.op == "layernorm":
                self._layernorm_params(n)
            elif n.op == "gelu":
                self._gelu_params(n)
        self.identity = dev.put(np.eye(R, C, dtype=np.int8).view(np.uint8).ravel())
        rows = np.concatenate(self.vrows) if self.vrows else np.zeros((0, R), np.int8)
        self.nvrows = len(rows)
        self.vbase = cfg.act_buf_rows - self.nvrows
        self.vaddr = dev.put(rows.view(np.uint8).ravel()) if self.nvrows else None
        self._pcache = {}
        self.programs = {}

    # ---- set-up --------------------------------------------------------------------

    def acc_scale(self, name):
        """The scale of a GEMM's accumulators per unit weight with ``name`` its input: a
        16-bit input's ``pair`` product counts at 1/256, and so does a per-token int8
        one's after ``STORE rowscale`` (at its smoothed value's scale)."""
        if name in self.dyn:
            return self.dyn[name]["s"] * 256
        return self.scale[name] * (256 if name in self.wide else 1)

    def _smoothing(self, name, readers, amax):
        """The smoothing of 16-bit value ``name`` for the linear maps ``readers``: the
        factors ``smooth`` (:data:`SMOOTH_ALPHA`), the ``VEC MUL wide`` by
        ``round(1 / smooth / s_b)`` (16-bit, high and low rows ``hi``, ``lo``) with its
        ``shift``, and the smoothed value's scale ``s``."""
        w_max = np.max([np.abs(np.asarray(self.params[u.attrs["w"]], np.float64)).max(axis=1)
                        for u in readers], axis=0)
        amax = np.asarray(amax, np.float64)
        if amax.shape != w_max.shape:
            raise ValueError(f"{name}: {amax.shape[0]} calibrated channels, the weights "
                             f"have {w_max.shape[0]}")
        floor = 1e-6
        smooth = (np.maximum(amax, floor * max(amax.max(), floor)) ** SMOOTH_ALPHA
                  / np.maximum(w_max, floor * max(w_max.max(), floor)) ** (1 - SMOOTH_ALPHA))
        inv = 1.0 / smooth
        s_b = inv.max() / isa.WIDE_MAX
        b = np.maximum(np.round(inv / s_b), 1).astype(np.int64)
        smooth = 1.0 / (b * s_b)                      # the factors the chip applies
        s_min = WIDE_HEADROOM * max((amax / smooth).max(), 1e-12) / isa.WIDE_MAX
        shift, s = vector.wide_mul_shift(self.scale[name], s_b, s_min)
        hi, lo = split_wide(b)
        return dict(smooth=smooth, hi=hi, lo=lo, shift=shift, s=s)

    def _role(self, name):
        """How a linear output leaves the array: ``"k"``/``"v"`` (attention's keys or
        values, to memory), ``"wide"`` (16-bit, into the buffer), ``"gelu"`` (int8 into
        the rows of the GELU's 16-bit result) or ``"act"`` (int8)."""
        users = self.users.get(name, ())
        for u in users:
            if u.op == "split_heads":
                for w in self.users.get(u.out, ()):
                    if w.op in ("scores", "context") and w.ins[1] == u.out:
                        return "k" if w.op == "scores" else "v"
        if name in self.wide:
            return "wide"
        if len(users) == 1 and users[0].op == "gelu":
            return "gelu"
        return "act"

    def _vrows(self, values):
        """Append int8 ``values`` (padded to whole rows) to the vector unit's parameter
        rows; their first row's offset there."""
        at = sum(len(r) for r in self.vrows)
        self.vrows.append(param_rows(values, self.cfg.rows))
        return at

    def _layernorm_params(self, n):
        """The gains and ``beta`` rows of LayerNorm ``n`` (``gamma x_hat + beta`` at its
        scale ``s_y``, ``VEC LAYERNORM beta``: the gains' low and high bytes, then
        ``beta``'s), and with ``fold`` those of the norm into its smoothed rows
        (:data:`FOLD_SMOOTHING`: ``gamma`` and ``beta`` divided by the smoothing
        factors, ``s_y`` the smoothed value's scale)."""
        g = np.asarray(self.params[n.attrs["g"]], np.float64)
        beta = np.asarray(self.params[n.attrs["b"]], np.float64)
        if len(g) % self.cfg.rows:
            raise NotLowered(f"{n.out}: a norm over {len(g)} elements, not whole rows")

        def rows(g, beta, s_y):
            gain, shift = vector.norm_gain(g, s_y)
            bias = np.clip(np.round(beta / s_y), -isa.WIDE_MAX, isa.WIDE_MAX)
            (g_lo, g_hi), (b_lo, b_hi) = (vector.gain_bytes(np.asarray(v, np.int64))
                                          for v in (gain, bias))
            at = self._vrows(g_lo)                     # the gains' bytes, then beta's
            for b in (g_hi, b_lo, b_hi):
                self._vrows(b)
            return dict(gains=at, shift=shift)

        self.vparam[n.out] = rows(g, beta, self.scale[n.out])
        d = self.dyn.get(n.out)
        if FOLD_SMOOTHING and d is not None:
            inv = 1.0 / d["smooth"]
            self.vparam[n.out]["fold"] = rows(g * inv, beta * inv, d["s"])

    def _gelu_params(self, n):
        """The tables of ``-g`` (16-bit, at ``s_g``) of the saturated input, and the
        ``ADD`` of ``relu(x)`` and ``-g`` into the GELU's scale."""
        if n.ins[0] + "~relu" not in self.scale:
            raise NotLowered(f"{n.out}: a GELU whose input is not a linear map's alone")
        s_c = GELU_CLAMP / 127

        def minus_g(v):
            return L.gelu(v) - np.maximum(v, 0)

        g_max = float(np.abs(minus_g(np.arange(-128, 128) * s_c)).max())
        s_g = WIDE_HEADROOM * g_max / isa.WIDE_MAX
        hi, lo = vector.make_wide_tables(minus_g, s_c, s_g)
        self.vparam[n.out] = dict(
            hi=self._vrows(hi), lo=self._vrows(lo),
            add=vector.add_multipliers(self.scale[n.ins[0] + "~relu"], s_g,
                                       self.scale[n.out]))

    def _width(self, name):
        """Columns of value ``name``."""
        n = self.maker.get(name)
        if n is None:
            for u in self.users[name]:
                if u.op == "linear":
                    return self.lin[u.out]["k"]
            raise ValueError(f"cannot tell the width of {name!r}")
        if n.op == "linear":
            return self.lin[n.out]["n"]
        return self._width(n.ins[0])

    def _heads(self, name):
        for u in self.users[name]:
            if u.op == "split_heads":
                return u.attrs["heads"]
        raise NotLowered(f"{name} is not split into heads")

    # ---- the program ---------------------------------------------------------------

    def _short(self, rows):
        """Whether a sequence of ``rows`` rows takes its smoothed 16-bit GEMM inputs as
        pairs rather than per-token int8 (``dynamic`` inputs): when both rows of each of
        its tokens stream through a weight tile in no more cycles than the tile takes to
        arrive, so the pair costs no cycle (and per-token int8 is least accurate on the
        shortest inputs: one word is three tokens)."""
        cfg = self.cfg
        return bool(self.dyn) and 2 * rows <= cfg.rows * cfg.cols // cfg.bus_bytes

    def _kind(self, shape):
        """How a sequence of ``shape`` (``(rows, S)``) takes its GEMM inputs, which the
        sequences stacked with it share: 0 smoothed pairs (:meth:`_short`), 1 int8 per
        token but the attention's context, 2 the context too
        (:data:`CONTEXT_DYNQ_TOKENS`); so a sequence's output is the same stacked or
        alone."""
        rows, S = shape
        if self._short(rows):
            return 0
        return 2 if self.context_int8(S) else 1

    def context_int8(self, tokens):
        """Whether the attention's context (``dyn_raw``) goes to int8 per token in a
        sequence of ``tokens`` tokens (not a short one: :meth:`_kind`)."""
        return bool(self.dyn_raw) and tokens >= CONTEXT_DYNQ_TOKENS

    def _stacks(self, shapes):
        """The sequences of ``shapes`` (``(rows, S)`` each) in stacks, ordered by their
        first sequence: each stack takes sequences until its rows stream at least as
        many cycles through a weight tile as the tile takes to arrive (``R C /
        bus_bytes`` rows, a 16-bit input's two rows each), the last sequences joining
        the last stack; sequences stack among those of their kind (:meth:`_kind`). A
        short sequence alone waits for weights; stacked, each weight tile streams once
        for them all."""
        cfg = self.cfg
        need = cfg.rows * cfg.cols // cfg.bus_bytes
        stacks, cur = {k: [] for k in range(3)}, {k: [] for k in range(3)}
        for i, shape in enumerate(shapes):
            kind = self._kind(shape)
            per = 1 if self.dyn and kind else 2           # rows a token streams
            cur[kind].append(i)
            if sum(shapes[j][0] for j in cur[kind]) * per >= need:
                stacks[kind].append(cur[kind])
                cur[kind] = []
        for kind in range(3):
            if cur[kind] and stacks[kind]:
                stacks[kind][-1] += cur[kind]
            elif cur[kind]:
                stacks[kind].append(cur[kind])
        return sorted(sum(stacks.values(), []))

    def _program(self, shapes, keep):
        """The program for sequences of ``shapes`` (``(rows, S)`` each: input rows, ``S``
        of them tokens) that also reads out the values in ``keep``, built once per
        shapes. Short sequences are stacked (:meth:`_stacks`: their rows one after
        another through every GEMM, attention each on its own). Two stacks at a time
        run as two streams of one emitter, their nodes alternating, so that one's
        vector work runs under the other's GEMMs (each resident in half the buffer, its
        row-scale codes in half the file); the stacks that do not fit that way run
        alone with the whole buffer, restacked into the longest runs of their sequences
        that fit it (a sequence too long for it alone: :meth:`_emit_alone`, in token
        blocks). No padding row streams through the
        array: the last position tile of the keys and values may be partly empty, and
        the softmax's length leaves it out. ``members[k]``: the sequences lowering
        ``seqs[k]`` holds, in the order of its ``segs``."""
        key = (tuple(shapes), tuple(keep))
        if key not in self.programs:
            half = self.vbase // 2
            prog = _Emitter(self.cfg)
            if self.nvrows:               # the vector unit's parameters, once a program
                prog.load_act(dram_addr=self.vaddr, dram_stride=0, rows=1,
                              row_beats=self.nvrows, buf_row=self.vbase, buf_row_step=0,
                              buf_beat_step=1)

            def segs(stack):
                o, out = 0, []
                for i in stack:
                    out.append((o, *shapes[i]))
                    o += shapes[i][0]
                return o, tuple(out)

            seqs, members = [], []

            def place(stack, lowerings):
                """The lowerings made for ``stack``: each takes the next of its
                sequences, one per stacked sequence."""
                for low in lowerings:
                    members.append(stack[:len(low.segs)])
                    stack = stack[len(low.segs):]
                    seqs.append(low)

            def dynq(stack):
                return self._kind(shapes[stack[0]]) > 0

            def streams(pair):
                """Two stacks as two streams, if each fits half the buffer."""
                saved = self._checkpoint(prog)
                try:
                    two = []
                    for j, stack in enumerate(pair):
                        rows, sg = segs(stack)
                        two.append(_Lowering(self, rows, rows, keep, T=rows,
                                             resident=True, prog=prog, sid=j,
                                             rows=(j * half, (j + 1) * half), segs=sg,
                                             dynq=dynq(stack)))
                    live = [s.steps() for s in two]
                    while live:
                        for gen in list(live):
                            if next(gen, None) is None:
                                live.remove(gen)
                except TooLong:
                    self._restore(prog, saved)
                    return False
                for stack, low in zip(pair, two):
                    place(stack, [low])
                return True

            def stacked(stack):
                """``stack`` stacked alone with the whole buffer, resident, or None."""
                saved = self._checkpoint(prog)
                try:
                    rows, sg = segs(stack)
                    low = _Lowering(self, rows, rows, keep, T=rows, resident=True,
                                    prog=prog, segs=sg, dynq=dynq(stack))
                    for _ in low.steps():
                        pass
                    return low, saved
                except TooLong:
                    self._restore(prog, saved)
                    return None

            def alone(waiting):
                """Sequences that run alone with the whole buffer: as few stacks as
                the buffer holds, each the longest run of them that fits."""
                while waiting:
                    n = 0
                    for k in range(1, len(waiting) + 1):      # the longest that fits
                        got = stacked(waiting[:k])
                        if got is None:
                            break
                        self._restore(prog, got[1])
                        n = k
                    if n:
                        place(waiting[:n], [stacked(waiting[:n])[0]])
                    else:                             # one sequence, in token blocks
                        n = 1
                        place(waiting[:1], [self._emit_alone(prog, *shapes[waiting[0]],
                                                             keep)])
                    waiting = waiting[n:]

            stacks, a = self._stacks(shapes), 0
            waiting = {k: [] for k in range(3)}   # by kind: a stack is of one kind
            while a < len(stacks):
                if a + 1 < len(stacks) and streams(stacks[a:a + 2]):
                    a += 2
                    continue
                waiting[self._kind(shapes[stacks[a][0]])] += stacks[a]
                a += 1
            for of_kind in waiting.values():
                alone(sorted(of_kind))
            code = prog.program().to_array()
            self.programs[key] = dict(
                seqs=[s.finish() for s in seqs], members=members,
                prog_addr=self.dev.put(code), n_insns=len(code) // isa.INSN_BYTES,
                program=code.tobytes(), macs=sum(s.macs for s in seqs),
                tags=prog.insn_tags)
        return self.programs[key]

    def _emit_alone(self, prog, rows, S, keep):
        """One sequence into ``prog`` with the whole buffer: in one block of exactly
        ``rows`` rows if the buffer holds it (every value resident, then through memory
        between stages), else in the largest token blocks of whole tiles it holds, the
        last block what is left."""
        R = self.cfg.rows
        tries = [(rows, True), (rows, False),
                 *((T, False) for T in range((rows - 1) // R * R, 0, -R))]
        for T, resident in tries:
            saved = self._checkpoint(prog)
            try:
                seq = _Lowering(self, rows, S, keep, T=T, resident=resident, prog=prog,
                                dynq=not self._short(rows))
                for _ in seq.steps():
                    pass
                return seq
            except TooLong:
                self._restore(prog, saved)
                if (T, resident) == tries[-1]:
                    raise

    def _checkpoint(self, prog):
        return prog.checkpoint(), self.dev.mark()

    def _restore(self, prog, saved):
        """Undo what was emitted since :meth:`_checkpoint`: the instructions, the
        memory allocated, and the parameter sets cached there."""
        state, mark = saved
        prog.restore(state)
        self.dev.release(mark)
        self._pcache = {f: a for f, a in self._pcache.items() if a < mark}

    # ---- running -------------------------------------------------------------------

    def _input(self, feeds, keep):
        """``(x as int rows, rows, S, leading axes)`` of one sequence's feeds."""
        g = self.graph
        x = np.asarray(feeds[g.inputs[0]], np.float64)
        if x.ndim == 3 and x.shape[0] != 1:
            raise ValueError(f"the on-chip executor runs one sequence per program, not a "
                             f"batch of {x.shape[0]} (run_batch takes a list)")
        lead = x.shape[:-2]
        x = x.reshape(x.shape[-2:])
        rows = len(x)
        mask = feeds.get("mask")
        S = rows if mask is None else int(np.asarray(mask).sum())
        if mask is not None and not np.asarray(mask).ravel()[:S].all():
            raise ValueError("the on-chip executor takes a padding mask: ones, then zeros")
        for name in keep:
            if name not in self.maker:
                raise ValueError(f"cannot keep {name!r}: no node makes it")
            if self.lin.get(name, {}).get("role") in ("k", "v") or \
                    self.maker[name].op in ("scores", "softmax"):
                raise ValueError(f"cannot keep {name!r}: attention's keys, values, scores "
                                 f"and probabilities are not read out")
        top = isa.WIDE_MAX
        xq = np.clip(np.round(x / self.scale[g.inputs[0]]), -top, top).astype(np.int64)
        return xq, rows, S, lead

    def run(self, feeds, state=None, *, keep=()):
        """One forward pass: one program, one host round trip. Returns the graph's
        outputs and the values named in ``keep`` (read out as they are made, in the same
        program), float32, one row per input row (with the input's leading axes).
        ``mask`` (ones, then zeros for
        padding) may pad the sequence; ``state`` is unused (no KV cache here)."""
        return self.run_batch([feeds], keep=keep)[0]

    def run_batch(self, feeds_list, *, keep=()):
        """A batch of sequences (a list of :meth:`run`'s feeds) in **one program**, one
        host round trip (:meth:`_program`). Returns :meth:`run`'s outputs, a dict per
        sequence."""
        ins = [self._input(f, keep) for f in feeds_list]
        built = self._program([(rows, S) for _, rows, S, _ in ins], tuple(keep))
        lowered = list(zip(built["seqs"], built["members"]))
        for b, held in lowered:                 # stacked sequences' rows one after another
            xq = np.concatenate([ins[i][0] for i in held])
            self.dev.write(b["x_addr"], wide_rows(xq, b["P"], self.cfg))
        self.dev.run(built["prog_addr"], built["n_insns"], name=self.graph.name,
                     macs=built["macs"], program=built["program"])
        out = [{} for _ in ins]
        for b, held in lowered:
            for name in (*self.graph.outputs, *keep):
                sp, width = b["outs"][name]
                q = read_rows(self.dev, sp, b["P"], self.cfg)
                for i, (o, rows, _) in zip(held, b["segs"]):
                    lead = ins[i][3]
                    out[i][name] = (q[o:o + rows, :width] * self.scale[name]).astype(
                        np.float32).reshape(*lead, rows, width)
        return out


class _Emitter:
    """Instructions in program order, with the dependency tokens that order them.

    Each value records the unit whose instruction made it last (:meth:`made`); an
    instruction that reads it (``reads``) is ordered after that one: a ``VEC`` after a
    ``STORE`` by the store -> vector token (``push_side`` on the store unit's latest
    ``STORE``, ``pop_prev`` on the ``VEC``), a ``MATMUL`` after a ``VEC`` by the vector
    -> exec token (``push_next``, ``pop_side``), and a ``MATMUL`` after a ``STORE`` (rows
    into the buffer, or memory it reads as weights) by a ``FENCE``. Units run their
    queues in order, so one token orders everything the unit did before. The
    accumulator's halves alternate over the whole program (``MATMUL`` ``t`` waits for
    ``STORE`` ``t - 2``), and the parameter slots are used round the buffer, a
    ``FENCE`` when they wrap."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.ops = []                   # (kind, fields)
        self.tags = []                  # the graph node each op is for (``tag``)
        self.tag = None
        self.stream = 0                 # whose ops are being emitted (:meth:`last`)
        self.made = {}                  # (stream, value) -> (unit, op index)
        self._last = {}                 # stream -> {unit: its latest op}
        self.synced = {"store": -1, "vector": -1}     # last op another unit waited for
        self.fenced = -1
        self.store_fenced = -1          # the latest FENCE stores, or FENCE
        self.stores = []                # op index of each MATMUL-tile's STORE
        self.tiles = 0                  # MATMULs but the guarded ones
        # ``param_tokens``: a parameter load waits for the STOREs that read its slots
        # last by a token (:meth:`params`), not a FENCE.
        self.param_tokens = False
        self.slot_tile = {}             # slot -> the tile whose STORE read it last
        self.mm_ops = []                # op index of each tile's MATMUL
        self.load_synced = -1           # the latest tile whose MATMUL a load waited for
        self.slot = 0
        self.load_pending = False
        self.guard = None               # (tile, shr): the guarded ops' guard
        self.journal = []               # (op, flag, value before) of flags set on earlier ops

    def _flag(self, i, key):
        """Set flag ``key`` of the earlier op ``i`` (a token it gives), journaled for
        :meth:`restore`."""
        fields = self.ops[i][1]
        self.journal.append((i, key, fields.get(key)))
        fields[key] = 1

    def checkpoint(self):
        """What :meth:`restore` needs to undo everything emitted after this call: the
        op count, the journal's length and a copy of the bookkeeping (not of the ops,
        which later calls only append to or flag through :meth:`_flag`)."""
        def copied(v):
            if isinstance(v, list):
                return list(v)
            if isinstance(v, dict):
                return {k: dict(x) if isinstance(x, dict) else x for k, x in v.items()}
            return v
        state = {k: copied(v) for k, v in self.__dict__.items()
                 if k not in ("ops", "tags", "journal", "cfg")}
        return len(self.ops), len(self.journal), state

    def restore(self, saved):
        n_ops, n_journal, state = saved
        for i, key, before in reversed(self.journal[n_journal:]):
            if i < n_ops:
                if before is None:
                    del self.ops[i][1][key]
                else:
                    self.ops[i][1][key] = before
        del self.journal[n_journal:]
        del self.ops[n_ops:]
        del self.tags[n_ops:]
        self.__dict__.update(state)

    @property
    def last(self):
        """The latest ``STORE`` and ``VEC`` of the current stream. Streams (independent
        sequences in one program) touch disjoint buffer rows, so one stream's ops wait
        only for its own: the units then run one stream's work under the other's."""
        return self._last.setdefault(self.stream, {"store": -1, "vector": -1})

    def _add(self, kind, **fields):
        if self.guard is not None:
            fields["at"] = {**(fields.get("at") or {}), "guard": 1, "shr": self.guard[1],
                            "gtile": self.guard[0]}
        self.ops.append((kind, fields))
        self.tags.append(self.tag)
        return len(self.ops) - 1

    def guarded(self, tile, shr):
        """The next ops run only at positions ``P`` with ``tile <= P >> shr`` (a guard,
        :mod:`hw.isa`) until :meth:`unguarded`. A guarded ``MATMUL`` and its ``STORE``s
        pair their own token and nothing else: the ``MATMUL`` writes the accumulator
        rows it is given (half 0, never alternated, not waited for) and its ``STORE``s
        are no ``MATMUL``'s to wait for; a ``FENCE`` before the first guarded op and
        after the last (:meth:`unguarded`) keeps every other token balanced whichever of
        them run."""
        if self.guard is None:
            self.fence()
        self.guard = (tile, shr)

    def unguarded(self):
        self.guard = None
        self.fence()

    def fence(self, stores=False):
        """A ``FENCE`` (everything before done), or with ``stores`` a ``FENCE stores``
        (every ``STORE`` before done, its memory written; the other units run on)."""
        if (self.ops and self.ops[-1][0] == "fence"
                and (stores or not self.ops[-1][1].get("stores"))):
            return
        if stores:
            self.store_fenced = self._add("fence", stores=1)
        else:
            self.fenced = self.store_fenced = self._add("fence")

    def made_by(self, value, unit):
        """``value`` was made by the latest instruction of ``unit`` (``store``,
        ``vector``, ``memory``: a ``STORE`` to memory, or ``load``)."""
        self.made[self.stream, value] = (unit, len(self.ops) - 1)

    def _wait(self, reader, reads, exact=False):
        """Order the next ``reader`` (``exec`` or ``vector``) after what made ``reads``
        (and, unless ``exact``, after everything that unit was given before them: the
        rows the reader's work overwrites may be rows one of those reads); returns the
        flags it pops."""
        token = {"vector": ("store", "push_side", "pop_prev"),
                 "exec": ("vector", "push_next", "pop_side")}[reader]
        pending = [self.made.get((self.stream, v), ("load", -1)) for v in reads]
        pending = [(u, i) for u, i in pending if i > self.fenced and u != reader
                   and not (u == "memory" and i <= self.store_fenced)]
        if any(u != token[0] for u, _ in pending):
            if any(u not in (token[0], "memory") for u, _ in pending):
                self.fence()                   # no token orders it: everything before
                return {}
            # Values in memory (a STORE's): a FENCE stores, the other units run on.
            self.fence(stores=True)
            pending = [(u, i) for u, i in pending if u == token[0]]
        last = max((i for _, i in pending), default=-1)
        if last > self.synced[token[0]]:
            # ``exact``: the token from the instruction that made the newest of them, so
            # that a later one (another head's softmax) need not finish first. Tokens
            # pair in order: each push is on a later instruction than the last.
            last = last if exact else self.last[token[0]]
            self._flag(last, token[1])
            self.synced[token[0]] = last
            return {token[2]: 1}
        return {}

    def vec(self, reads=(), fresh=False, exact=False, **fields):
        """A ``VEC`` after what made ``reads``; ``fresh``: it writes rows just allocated,
        which earlier matrix products may still be reading, so it also waits for the store
        unit's latest ``STORE`` (each ``MATMUL``'s ``STORE`` follows it, and the exec unit
        runs in order)."""
        fields.update(self._wait("vector", reads, exact))
        if fresh:
            self._after_latest("store", fields, "push_side", "pop_prev")
        self.last["vector"] = self._add("vec", **fields)

    def _after_latest(self, unit, flags, push, pop):
        """Order the op being made after ``unit``'s latest op of this stream, unless a
        token already does: that op gives ``push``, ``flags`` get ``pop``."""
        last = self.last[unit]
        if pop not in flags and last > max(self.synced[unit], self.fenced):
            self._flag(last, push)
            self.synced[unit] = last
            flags[pop] = 1

    def reserve(self, n):
        """Make the next ``n`` parameter slots one run: back to slot 0 if they would
        wrap (for sets loaded by several :meth:`params` calls that are used together),
        with a ``FENCE`` unless :attr:`param_tokens`."""
        if self.slot + n > self.cfg.param_tiles:
            if not self.param_tokens:
                self.fence()
            self.slot = 0

    def params(self, dram_addr, n, push=True):
        """Parameter sets into ``n`` slots, round the buffer: the first slot. The next
        ``MATMUL`` waits for them (``push``; else for a later ``params`` call's, which
        the load unit runs after these)."""
        self.reserve(n)
        first = self.slot
        flags = {}
        if self.param_tokens:
            # The slots' last readers: the STOREs of tiles up to ``t``; MATMUL ``t + 2``
            # starts after STORE ``t`` has read its set (it waits for the accumulator
            # half), so the load waits for that MATMUL (exec -> load token).
            t = max((self.slot_tile.get(k, -1) for k in range(first, first + n)),
                    default=-1)
            if t >= 0 and self.stores[t] > self.fenced and t + 2 > self.load_synced:
                if t + 2 >= len(self.mm_ops):
                    self.fence()                # that MATMUL is not emitted yet
                else:
                    self._flag(self.mm_ops[t + 2], "push_prev")
                    self.load_synced = t + 2
                    flags["pop_next"] = 1
        self._add("load_param", dram_addr=dram_addr, n_tiles=n, param_tile=first,
                  push_next=int(push), **flags)
        self.load_pending |= push
        self.slot += n
        return first

    def matmul(self, reads=(), exact=False, fresh=-1, **fields):
        """A ``MATMUL`` of the next accumulator half; its ``acc_row`` half is chosen
        here (``acc_row`` given is the offset in it). ``fresh``: its ``STORE``s write
        rows just allocated, which the ``VEC`` of that index (and earlier ones) may still
        be reading, so it also waits for that ``VEC`` (not for later ones: a norm's
        second run, say, goes on under this GEMM)."""
        flags = self._wait("exec", reads, exact)
        if fresh > max(self.synced["vector"], self.fenced):
            assert "pop_side" not in flags, "a MATMUL pops one vector token"
            self._flag(fresh, "push_next")
            self.synced["vector"] = fresh
            flags["pop_side"] = 1
        t = self.tiles
        if self.guard is not None:
            # Its own rows, in half 0 (the FENCE before the guarded ops freed them).
            assert not flags and not (self.load_pending and self.guard[0]), \
                "a guarded MATMUL waits for nothing its guard may skip"
        else:
            self.tiles += 1
            fields["acc_row"] += (t % 2) * self.cfg.acc_buf_rows
            if t >= 2:
                self._flag(self.stores[t - 2], "push_prev")
                flags["pop_next"] = 1
        if self.load_pending:
            flags["pop_prev"] = 1
            self.load_pending = False
        i = self._add("matmul", push_next=1, **fields, **flags)
        if self.guard is None:
            self.mm_ops.append(i)
        return fields["acc_row"]

    def store(self, more=False, **fields):
        """The ``STORE`` of the next ``MATMUL`` tile without one (the ``STORE``s follow
        their ``MATMUL``s in order, one ``MATMUL`` ahead at most, since a ``MATMUL`` waits
        for the ``STORE`` two before it); ``more``: another one of the same tile (its rows
        elsewhere), after the first in the store unit's queue."""
        self.last["store"] = i = self._add("store", pop_prev=int(not more), **fields)
        if self.guard is not None:
            return                          # no MATMUL waits for a guarded STORE
        if more:
            self.stores[-1] = i
        else:
            self.stores.append(i)
        self.slot_tile[fields["param_tile"]] = len(self.stores) - 1

    def load_act(self, **fields):
        self._add("load_act", **fields)

    def program(self):
        prog = isa_model.Program()
        self.insn_tags = []             # the node each instruction is for, in order
        for (kind, fields), tag in zip(self.ops, self.tags):
            getattr(prog, kind)(**fields)
            self.insn_tags += [tag] * (len(prog.insns) - len(self.insn_tags))
        prog.end()
        self.insn_tags.append(None)
        return prog


class _Regions:
    """Buffer regions of a block's values (``self.M`` rows, ``self.buf``,
    ``self.region``)."""

    #: ``(base, rows, the latest VEC then)`` of the rows freed since the vector unit's
    #: last token (a lowering that frees none, the decoder's, keeps this).
    freed = ()

    def new(self, name, cols, wide, top=False):
        """A region for value ``name`` of ``cols`` columns (16-bit: two rows a row), at
        the best-fit gap (``top``: the top of the highest one)."""
        M, R = self.M, self.cfg.rows
        kt = _tiles(cols, R)
        k = 2 * M if wide else M
        # Rows freed since the vector unit's last token: a VEC may still use them.
        synced = max(self.prog.synced["vector"], self.prog.fenced)
        self.freed = [f for f in self.freed if f[2] > synced]
        r = _Region(self.buf.alloc(k * kt, f"{name} ({M} x {cols})", top,
                                   [f[:2] for f in self.freed]), M, kt, wide, k)
        for base, n, vec in self.freed:
            if base < r.base + k * kt and r.base < base + n:
                r.vsync = max(r.vsync, vec)
        self.region[name] = r
        return r


class _Lowering(_Regions):
    """One program: the graph's nodes for ``M`` rows (``S`` of them tokens), in token
    blocks of ``T`` rows (a multiple of ``R`` unless ``T = M``), the last one of the
    rows left.

    The nodes fall into stages, a new one at each attention (whose keys and values must
    be complete for every block first). Each stage runs block by block: the values it
    reads from an earlier stage come from memory into the buffer, its nodes run on the
    block's rows (attention: the block's queries against every key), and the values a
    later stage (or the host) reads go to memory through the array (identity weights;
    16-bit values as two beats a row). Keys and values go to memory as they are made.
    ``T = M`` is one block; with ``resident`` its values stay in the buffer from stage
    to stage (no spill, no reload, no ``FENCE`` between stages but the attention's), if
    the buffer holds them all."""

    def __init__(self, chip, M, S, keep=(), T=None, resident=False, prog=None, sid=0,
                 rows=None, segs=None, dynq=True):
        """``prog``: an emitter shared with other sequences of the program (this one is
        its stream ``sid``: its buffer rows ``rows = (lo, hi)``, its row-scale slots
        from ``sid * rowscale_slots / 2``). ``segs``: the sequences stacked in the
        ``M`` rows, ``(first row, rows, tokens)`` each (one block only): every node but
        attention runs on all the rows at once (each weight tile streams once for them
        all), attention on each sequence's own rows and keys. ``dynq``: with
        ``dynamic`` inputs, the smoothed 16-bit GEMM inputs to int8 per token (``VEC
        DYNQ``, ``STORE rowscale``), else streamed as pairs (short sequences,
        :meth:`OnChip._short`)."""
        self.chip, self.P, self.keep = chip, M, tuple(keep)
        self.dynq = dynq
        self.segs = tuple(segs) if segs else ((0, M, S),)
        # The attention's context too (``chip.dyn_raw``), if every sequence is long
        # enough.
        self.dynq_ctx = dynq and all(chip.context_int8(s[2]) for s in self.segs)
        if len(self.segs) > 1 and T not in (None, M):
            raise ValueError("stacked sequences run in one block")
        self.T = T or M                 # rows of a block but the last (its stride)
        self.M = self.T                 # rows of the block being built (node methods' M)
        self.nb = _tiles(M, self.T)
        self.cfg = cfg = chip.cfg
        self.dev = chip.dev
        self.prog = prog or _Emitter(cfg)
        self.prog.param_tokens = True
        self.sid = sid
        self.rows = rows or (0, chip.vbase)
        self.rs_base = sid * (cfg.rowscale_slots // 2)
        # Row-scale codes in ranges of M slots used in turn, so that a DYNQ made early
        # (:meth:`quantize_early`) does not write the codes a GEMM's STOREs still read;
        # early quantization needs three (the FFN's input and its two halves).
        self.rs_ranges = max(1, min(3, cfg.rowscale_slots // 2 // max(M, 1)))
        self.rs_turn = 0
        self.rs_slot = {}               # per-token int8 value -> its codes' first slot
        self.early = []                 # GELU halves made, to int8 at the next GEMM
        self.late = {}                  # value -> its vector work, behind the next GEMM
        self.freed = []                 # (base, rows, the latest VEC then)
        self.macs = 0
        self.memory = {}
        self.spills = {}
        self.fused = set()              # nodes run behind their linear's STOREs
        self.pending = {}               # a fused node's state between its chunks
        self.quantized = set()          # per-token int8 values made (``name~q``)
        self.deferred = {}              # value projections made inside their attention
        self.ring = {}                  # tiles of a ring region (the GELU's saturated rows)
        self.tile = cfg.rows * cfg.cols
        g = chip.graph
        # Stages: a new one at each scores node (its softmax and context follow).
        self.stage, k = [], 0
        for i, n in enumerate(g.nodes):
            k += int(n.op == "scores" and i > 0)
            self.stage.append(k)
        self.n_stages = k + 1
        # Where each value is last read; attention's scores and softmax are lowered with
        # their context, so what they read is read there.
        # ``resident`` (one block): every value stays in the buffer from stage to stage;
        # only the graph's input and what the host reads go through memory. The value
        # projection is then made inside its attention, while the softmaxes run
        # (:meth:`attention`), so what it reads is read there.
        self.resident = resident and self.nb == 1
        at = list(range(len(g.nodes)))
        for i, n in enumerate(g.nodes):
            if n.op == "context":
                sm = chip.maker[n.ins[0]]
                vp = chip.maker.get(self.source(n.ins[1])) if self.resident else None
                for j, m in enumerate(g.nodes):
                    if m is sm or m is chip.maker[sm.ins[0]] or m is vp:
                        at[j] = i
        # Values read in a later stage than theirs go through memory (the graph's input
        # is there already); keys and values are there anyway.
        self.made_stage = made = {v: -1 for v in g.inputs if v != "mask"}
        for i, n in enumerate(g.nodes):
            made[n.out] = self.stage[i]
        self.last_use, self.crossing = {}, set()
        for i, n in enumerate(g.nodes):
            for v in n.ins:
                src = self.source(v)
                for name in {v, src}:                 # a view keeps its source alive
                    self.last_use[name] = max(self.last_use.get(name, -1), at[i])
                if src in made and chip.lin.get(src, {}).get("role") not in ("k", "v") \
                        and made[src] < self.stage[at[i]]:
                    self.crossing.add(src)
        # A 16-bit value's per-token int8 form (``name~q``) lives until its last linear.
        for i, n in enumerate(g.nodes):
            if n.op == "linear" and (n.ins[0] in chip.dyn or n.ins[0] in chip.dyn_raw):
                q = n.ins[0] + "~q"
                self.last_use[q] = max(self.last_use.get(q, -1), at[i])
            if n.op == "gelu":                        # its saturated input's rows
                self.last_use[n.ins[0] + "~c"] = at[i]
        self.ends = set(g.outputs) | set(self.keep)     # values the host reads
        self.crossing |= {self.source(v) for v in self.ends}
        if self.resident:
            self.crossing = {g.inputs[0]} | {self.source(v) for v in self.ends}

    def source(self, v):
        """The value ``v`` is a view of (through ``split_heads``, ``merge_heads``)."""
        n = self.chip.maker.get(v)
        while n is not None and n.op in ("split_heads", "merge_heads"):
            v = n.ins[0]
            n = self.chip.maker.get(v)
        return v

    # -- helpers

    def fence(self):
        self.prog.fence()

    def gemm(self, a, k_tiles, w_addr, w_stride, nt, store, p_addr=None, reads=(),
             slot=0, sets=1, after=None, exact=False, fresh=-1, tail=False):
        """``nt`` N-tiles of a GEMM of ``a`` (a :class:`_Region`, 16-bit ones as pairs;
        or ``(base, kstep[, m])`` of int8 rows) by packed weights, each N-tile's ``STORE`` from
        ``store(slot, j, acc_row)``; its parameter sets from ``p_addr`` (``sets`` a
        tile, in slots ``slot ..``; else the ``slot`` already loaded). ``reads``: the
        values it reads (for the ordering). ``after(j0, j1)``: called behind the
        ``STORE`` of every :data:`FUSE_TILES` N-tiles ``j0 .. j1 - 1`` (and the last).
        ``fresh``: the latest ``VEC`` that may use the rows its ``STORE``s write
        (:meth:`_Emitter.matmul`). ``tail``: the last N-tile a chunk of its own, so that
        the part of ``after``'s work left once the GEMM is done is one tile's."""
        cfg, prog, M = self.cfg, self.prog, self.M
        if isinstance(a, _Region):
            base, kstep, pair = a.base, a.kstep, a.wide
            rows = a.M
            m = 2 * rows if pair else rows
        else:
            (base, kstep, *m), pair = a, False
            m = rows = m[0] if m else M
        if m > cfg.acc_buf_rows:              # a MATMUL's rows stay in one half
            raise TooLong(f"a MATMUL of {m} rows exceeds an accumulator half "
                          f"({cfg.acc_buf_rows} rows): the input is too long for one "
                          f"block on this preset")
        # Each tile's STOREs are emitted after the next tile's MATMUL: the store unit
        # takes one STORE at a time, so the front end would otherwise hold the next
        # MATMUL back until this tile's last STORE began, and the array would idle.
        pend, j0 = None, 0

        def flush():
            nonlocal pend, j0
            if pend is not None:
                s, j, acc_row = pend
                store(s, j, acc_row)
                pend = None
                if after is not None and (j + 1 - j0 == FUSE_TILES or j == nt - 1
                                          or tail and j == nt - 2):
                    after(j0, j + 1)
                    j0 = j + 1

        # Half the slots at most a load (with tokens, not FENCEs, a load must not take
        # the slots the latest STOREs read).
        per = max(1, cfg.param_tiles // (2 if prog.param_tokens else 1) // sets)
        for c0 in range(0, nt, per):
            chunk = range(c0, min(nt, c0 + per))
            if p_addr is not None:
                flush()                         # before its slots are loaded again
                slot = prog.params(p_addr + c0 * sets * isa.PARAM_BEATS * cfg.bus_bytes,
                                   len(chunk) * sets)
            for j in chunk:
                acc_row = prog.matmul(reads=reads, exact=exact,
                                      fresh=fresh if j == 0 else -1,
                                      weight_addr=w_addr + j * w_stride,
                                      act_row=base, act_stride=1, act_kstep=kstep,
                                      m=m, k_tiles=k_tiles, acc_row=0, pair=int(pair))
                if j == 0:
                    self.quantize_early()
                flush()
                pend = (slot + sets * (j - c0) if p_addr is not None else slot, j, acc_row)
                self.macs += rows * k_tiles * cfg.rows * cfg.cols
        flush()

    def in_place(self, name, i):
        """``name``'s region if node ``i`` is its last reader (its rows can take the
        result), else None."""
        return self.r(name) if self.last_use.get(name) == i else None

    # -- the nodes

    def r(self, name):
        """The buffer region of ``name`` (or of the value it is a view of), its vector
        work held in :attr:`late` made first (whatever reads the rows comes after it)."""
        self.run_late({self.source(name)})
        return self.region[name] if name in self.region else self.region[self.source(name)]

    def steps(self):
        """Emit the sequence's instructions, yielding before each node of matrix
        products (so that another sequence's can go between; the emitter's ``stream``
        is set to this one's :attr:`sid` at every resumption)."""
        chip, cfg, dev, prog = self.chip, self.cfg, self.dev, self.prog
        R, C = cfg.rows, cfg.cols
        g = chip.graph
        for v in sorted(self.crossing):             # k-tile-major over all P rows
            wide, kt = v in chip.wide, _tiles(chip._width(v), R)
            self.spills[v] = dict(addr=dev.alloc(kt * self.P * C * (1 + wide)), wide=wide,
                                  kt=kt)
        for k in range(self.n_stages):
            nodes = [i for i, st in enumerate(self.stage) if st == k]
            needed = sorted(v for v in {self.source(v) for i in nodes
                                        for v in g.nodes[i].ins} & self.crossing
                            if self.made_stage[v] < k)   # made in an earlier stage
            for b in range(self.nb):
                prog.stream = self.sid
                self.b = b
                self.M = min(self.T, self.P - b * self.T)
                if not (self.resident and k):
                    prog.fence()                    # the last block's rows are free
                    self.buf = _Buffer(self.rows[1], self.rows[0])
                    self.freed = []
                    self.region = {}
                    self.quantized = set()
                for v in needed:
                    if v not in self.region:
                        self.reload(v)
                for i in nodes:
                    n = g.nodes[i]
                    if n.op == "context" or n.op == "linear" and not self.defers(n):
                        # Another stream's turn before this node's matrix products (after
                        # its input's per-token quantization, vector work): so each
                        # stream's vector work is dispatched before the other's GEMMs.
                        if n.op == "linear" and (n.ins[0] in chip.dyn or
                                                 self.per_token_int8(n.ins[0])):
                            self.per_token(n.ins[0])
                        yield i
                        prog.stream = self.sid
                    self.node(i)
                self.run_late(set(self.late))

    def defers(self, n):
        """Whether linear node ``n`` is made inside its attention (a resident block's
        value projection, :meth:`attention`)."""
        return self.resident and self.chip.lin[n.out]["role"] == "v"

    def finish(self):
        """Where the sequence's input goes and its outputs come from, once built."""
        chip, g = self.chip, self.chip.graph
        outs = {name: (self.spills[self.source(name)], chip._width(name))
                for name in self.ends}
        return dict(x_addr=self.spills[g.inputs[0]]["addr"], outs=outs, P=self.P,
                    segs=self.segs)

    def node(self, i):
        n = self.chip.graph.nodes[i]
        self.prog.tag = n.out
        if n.op in ("split_heads", "merge_heads"):
            pass                                     # views: self.r and self.source
        elif n.op == "linear" and self.defers(n):
            self.deferred[n.out] = i                 # made inside its attention
        elif n.op == "linear":
            self.linear(n, i)
        elif n.op == "context":
            self.attention(n)
        elif i in self.fused:
            pass                                     # run behind its GEMM's STOREs
        elif n.op == "add":
            self.add(n, i)
        elif n.op == "gelu":
            self.gelu(n)
        elif n.op == "layernorm":
            self.layernorm(n, i)
        # scores and softmax: with their context
        if n.out in self.crossing:
            self.spill(n.out)
        # Free the rows no later node reads (values share rows in place and through
        # split_heads and merge_heads).
        live = {id(r) for v, r in self.region.items() if self.last_use.get(v, -1) > i}
        for r in {id(r): r for r in self.region.values() if id(r) not in live}.values():
            self.freed.append((r.base, r.kstep * r.tiles, self.prog.last["vector"]))
            self.buf.free(r.base)
        self.region = {v: r for v, r in self.region.items() if id(r) in live}

    def reload(self, v):
        """Block ``b`` of value ``v`` from memory into the buffer (16-bit rows as a
        pair: two beats a row, the low halves ``M`` rows after the high ones; a block
        starts ``T`` rows after the one before)."""
        sp, T, b, C = self.spills[v], self.T, self.b, self.cfg.cols
        M = self.M
        r = self.new(v, sp["kt"] * self.cfg.rows, sp["wide"])
        width = C * (1 + sp["wide"])
        for t in range(sp["kt"]):
            self.prog.load_act(dram_addr=sp["addr"] + (t * self.P + b * T) * width,
                               dram_stride=width, rows=M, row_beats=1 + sp["wide"],
                               buf_row=r.base + t * r.kstep, buf_row_step=1,
                               buf_beat_step=M if sp["wide"] else 0)
        self.prog.made_by(v, "load")

    def spill(self, v):
        """Block ``b`` of value ``v`` to memory through the array (identity weights,
        requantized by 1: exact; a 16-bit value's high and low rows as ``2M`` int8 rows,
        each half's ``STORE`` to its beat of the row)."""
        chip, prog, T, b, C = self.chip, self.prog, self.T, self.b, self.cfg.cols
        M = self.M
        r, sp = self.r(v), self.spills[v]
        width = C * (1 + sp["wide"])
        slot = prog.params(chip._scalar_params((1.0,)), 1)
        for t in range(r.tiles):
            def store(_, j, acc_row, t=t):
                at = sp["addr"] + (t * self.P + b * T) * width
                prog.store(acc_row=acc_row, m=M, param_tile=slot, dram_addr=at,
                           dram_stride=width)
                if sp["wide"]:
                    prog.store(more=True, acc_row=acc_row + M, m=M, param_tile=slot,
                               dram_addr=at + C, dram_stride=width)
            a = (r.base + t * r.kstep, r.kstep, 2 * M if r.wide else M)
            self.gemm(a, 1, chip.identity, 0, 1, store, reads=[v], slot=slot)

    def fusable(self, i):
        """The node after linear node ``i`` if it is elementwise on the linear's output
        (``gelu``, or an ``add`` whose other input is in the buffer) and can run N-tile
        by N-tile behind the GEMM's ``STORE``s (the output is not read out first)."""
        g, n = self.chip.graph, self.chip.graph.nodes[i]
        if i + 1 >= len(g.nodes) or n.out in self.crossing:
            return None
        m = g.nodes[i + 1]
        role = self.chip.lin[n.out]["role"]
        if m.op == "gelu" and m.ins[0] == n.out and role == "gelu":
            return i + 1
        if m.op == "add" and role == "wide" and n.out in m.ins and all(
                v == n.out or v in self.region or self.source(v) in self.region
                for v in m.ins):
            return i + 1
        return None

    def linear(self, n, i):
        chip, prog, M, tile = self.chip, self.prog, self.M, self.tile
        R, C = self.cfg.rows, self.cfg.cols
        lin = chip.lin[n.out]
        kt, nt = _tiles(lin["k"], R), _tiles(lin["n"], C)
        role = lin["role"]
        if self.per_token_int8(n.ins[0]):      # int8 per token: its scale in the STORE
            q = self.per_token(n.ins[0])
            a, reads = (q.base, q.kstep, M), [n.ins[0] + "~q"]
            rs = dict(rowscale=1, scale_row=self.rs_slot[n.ins[0] + "~q"])
        elif n.ins[0] in chip.dyn:        # smoothed, 16 bits, a pair: the same sets
            a, reads, rs = self.per_token(n.ins[0]), [n.ins[0] + "~q"], {}
        else:
            a, reads, rs = self.r(n.ins[0]), [self.source(n.ins[0])], {}
        f = self.fusable(i)
        if role == "gelu":            # relu(x) in 16 bits, and x saturated to int8
            out = self.new(n.out, lin["n"], True, top=True)
            # The saturated rows: with the GELU behind the STOREs, a ring of RING_CHUNKS
            # chunks (a chunk's STOREs wait for the GELU of the chunk whose rows they
            # take, a vector -> store token), else every tile.
            ring = RING_CHUNKS * FUSE_TILES if f is not None and nt > RING_CHUNKS * \
                FUSE_TILES else nt
            clamp = self.new(n.out + "~c", ring * C, True)
            self.ring[n.out + "~c"] = ring

            def store(slot, j, acc_row):
                row = out.base + j * out.kstep
                prog.store(acc_row=acc_row, m=M, param_tile=slot, buf_row=row, to_buf=1,
                           wide=1, relu=1, lo_row=row + M, **rs)
                prog.store(more=True, acc_row=acc_row, m=M, param_tile=slot + 1,
                           buf_row=clamp.base + j % ring * clamp.kstep, to_buf=1,
                           pop_side=int(j >= ring and j % FUSE_TILES == 0), **rs)
        elif role in ("act", "wide"):
            out = self.new(n.out, lin["n"], role != "act")

            def store(slot, j, acc_row):
                row = out.base + j * out.kstep
                prog.store(acc_row=acc_row, m=M, param_tile=slot, buf_row=row, to_buf=1,
                           wide=int(role == "wide"), lo_row=row + M if role == "wide" else 0,
                           **rs)
        else:                         # keys or values of every position, in memory
            # A region of its own for each stacked sequence (its positions from tile 0).
            heads = chip._heads(n.out)
            dt = _tiles(lin["n"] // heads, C)
            if n.out not in self.memory:
                mems = []
                for _, rows, _ in self.segs:            # one sequence: all P rows
                    pt = _tiles(rows, C)
                    hb = dt * pt * tile
                    mems.append(dict(addr=self.dev.alloc(heads * hb), head_bytes=hb,
                                     dt=dt, pt=pt))
                self.memory[n.out] = mems
            mems = self.memory[n.out]
            p0 = self.b * self.T              # this block's first position
            one = len(self.segs) == 1

            def store(slot, j, acc_row):
                h, jj = divmod(j, dt)
                for s, ((o, rows, _), mem) in enumerate(zip(self.segs, mems)):
                    addr, hb, pt = mem["addr"], mem["head_bytes"], mem["pt"]
                    at = dict(more=s > 0, acc_row=acc_row + o, m=M if one else rows,
                              param_tile=slot)
                    if rs:
                        at.update(rs, scale_row=rs["scale_row"] + o)
                    if role == "k":   # K^T: per position block, the d-tiles
                        prog.store(dram_addr=addr + h * hb + (p0 // C) * dt * tile
                                   + jj * tile, dram_stride=dt * tile, transpose=1, **at)
                    else:             # V: per d-tile, the position tiles
                        prog.store(dram_addr=addr + h * hb + jj * pt * tile + p0 * C,
                                   dram_stride=C, **at)
        after = None
        self.fused.discard(i + 1)
        if f is not None:            # the next node, tile by tile behind the STOREs
            self.fused.add(f)
            m = chip.graph.nodes[f]

            def after(j0, j1):
                prog.made_by(n.out, "store")
                if role == "gelu":
                    prog.made_by(n.out + "~c", "store")
                if m.op == "gelu":
                    self.gelu(m, (j0, j1))
                else:
                    self.add(m, f, (j0, j1))
        # Its STOREs write rows just allocated: rows an earlier VEC may still read.
        fresh = -1
        if role in ("gelu", "act", "wide"):
            fresh = max(r.vsync for r in [out] + ([clamp] if role == "gelu" else []))
        self.gemm(a, kt, lin["w_addr"], kt * tile, nt, store, p_addr=lin["p_addr"],
                  reads=reads, sets=lin["sets"], after=after, fresh=fresh,
                  tail=f is not None and m.op == "add")
        prog.made_by(n.out, "store" if role in ("act", "gelu", "wide") else "memory")
        if role == "gelu":
            prog.made_by(n.out + "~c", "store")

    def per_token(self, name):
        """16-bit value ``name`` as int8 rows at a scale of their own (made once a block):
        smoothed (:meth:`smooth`, unless the op that made ``name`` did it tile by tile),
        then ``VEC DYNQ`` in place, each token's scale code to slot ``m`` of the
        row-scale file (the high rows then hold the int8 rows, ``2M`` apart a k-tile).
        The ``DYNQ`` waits for the latest ``STORE`` (``fresh``), so no earlier ``STORE
        rowscale`` still reads the slots it writes."""
        q = name + "~q"
        if q in self.quantized:
            return self.region[q]
        raw = name in self.chip.dyn_raw         # not smoothed: DYNQ of the value itself
        if raw:
            self.region[q] = self.r(name)
        elif q not in self.region:
            self.smooth(name)
        r = self.region[q]
        if self.per_token_int8(name):
            self.prog.vec(reads=[self.source(name)] if raw else (), fresh=True,
                          vop=isa.VecOp.DYNQ, a_row=r.base, a_lo_row=r.lo,
                          dst_row=r.base, b_row=self.next_rs(q),
                          length=self.chip._width(name), stride=r.kstep, rows=r.tiles,
                          count=self.M, wide=1)
        self.prog.made_by(q, "vector")
        self.quantized.add(q)
        return r

    def next_rs(self, q):
        """The row-scale slots of per-token int8 value ``q``: the next range in turn."""
        self.rs_slot[q] = self.rs_base + self.rs_turn * self.M
        self.rs_turn = (self.rs_turn + 1) % self.rs_ranges
        return self.rs_slot[q]

    def quantize_early(self):
        """The GELU halves already made to int8 per token now, behind the first
        ``MATMUL`` of a GEMM that does not read them (:func:`split_ffn`): their
        ``DYNQ`` runs under that GEMM, not between it and theirs."""
        early, self.early = self.early, []
        for name in early:
            self.per_token(name)
        self.run_late(set(self.late))

    def run_late(self, names):
        """Emit the vector work :attr:`late` holds for ``names`` now (behind a GEMM's
        first ``MATMUL``, or as :meth:`r` gives their rows to a reader)."""
        for name in sorted(names & set(self.late)):
            self.late.pop(name)()

    def per_token_int8(self, name):
        """Whether 16-bit GEMM input ``name`` goes to int8 per token (``VEC DYNQ``) here,
        or streams as a pair: a smoothed one (``chip.dyn``) with ``dynq``, the
        attention's context (``chip.dyn_raw``) only if every sequence also has
        :data:`CONTEXT_DYNQ_TOKENS` tokens."""
        if name in self.chip.dyn_raw:
            return self.dynq_ctx
        return name in self.chip.dyn and self.dynq

    def smooth(self, name, tiles=None, into=None):
        """``VEC MUL wide`` of 16-bit value ``name`` by its smoothing factors into fresh
        rows (``name~q``, allocated with the first k-tiles; ``into``: a region of the
        same shape whose rows are free as each tile is reached); ``tiles``: k-tiles
        ``(j0, j1)`` only."""
        chip, M = self.chip, self.M
        a, d = self.r(name), chip.dyn[name]
        j0, j1 = tiles or (0, a.tiles)
        if j0 == 0 and into is None:
            self.new(name + "~q", a.tiles * self.cfg.rows, True)
        elif j0 == 0:
            self.region[name + "~q"] = into
        r = self.region[name + "~q"]
        oa, orr = j0 * a.kstep, j0 * r.kstep
        self.prog.vec(reads=[self.source(name)], fresh=j0 == 0 and into is None,
                      vop=isa.VecOp.MUL,
                      a_row=a.base + oa, a_lo_row=a.lo + oa,
                      b_row=chip.vbase + d["b_hi"] + j0, b_lo_row=chip.vbase + d["b_lo"] + j0,
                      b_repeat=1, dst_row=r.base + orr, dst_lo_row=r.lo + orr,
                      shift=d["shift"], stride=a.kstep, rows=j1 - j0, count=M, wide=1)

    def attention(self, n):
        """``scores``, ``softmax`` and ``context`` head by head: head ``h``'s scores into
        a buffer region, its softmax in place, its context into its k-tiles of the
        ``ctx_heads`` value. The keys and values came through memory: a ``FENCE`` first
        (from the emitter); then the store -> vector -> exec tokens order each head.
        Stacked sequences (:attr:`segs`): each one's queries against its own keys and
        values, one after another, each in its own rows of the context.

        With a region for every sequence's and head's scores (``resident``, if the
        buffer holds them): every head's scores and softmax, the value projection
        (deferred to here, so the array makes the values while the vector unit runs the
        softmaxes), a ``FENCE`` (the values in memory), then every head's context. Else
        two regions: head ``h+1``'s scores while head ``h``'s softmax runs."""
        chip, prog, tile = self.chip, self.prog, self.tile
        R, C = self.cfg.rows, self.cfg.cols
        sm = chip.maker[n.ins[0]]
        sc = chip.maker[sm.ins[0]]
        if len(sm.ins) > 1 and sm.ins[1] not in chip.graph.inputs:
            raise NotLowered(f"{sm.out}: a mask that is not the graph's padding mask")
        q = self.r(sc.ins[0])
        vname, kname = self.source(n.ins[1]), self.source(sc.ins[1])
        dv = self.deferred.pop(vname, None)           # the value projection's node
        if q.wide:
            raise NotLowered(f"{sc.out}: 16-bit queries")
        if sc.attrs["group"] != 1 or n.attrs["group"] != 1:
            raise NotLowered(f"{sc.out}: grouped-query attention")
        heads = chip.maker[sc.ins[0]].attrs["heads"]
        d = q.tiles * R // heads
        dt = d // R
        s_q, s_k = chip.scale[sc.ins[0]], chip.scale[sc.ins[1]]
        s_s, s_c = chip.scale[sc.out], chip.scale[n.out]
        # The context's sets: one per head and d-tile, each column its value channel's
        # scale (the values int8 per channel).
        s_v = chip.vscale.get(vname)
        s_v = np.full(heads * d, chip.scale[n.ins[1]]) if s_v is None else s_v
        ctx_sets = tuple(tuple(s_v[h * d + j * C:h * d + (j + 1) * C]
                               / vector.SOFTMAX_ONE / s_c)
                         for h in range(heads) for j in range(dt))
        s_scores = s_q * s_k / math.sqrt(d) / s_s
        out = self.new(n.out, heads * d, True)
        # Each sequence's first row, queries, tokens and positions: one sequence's block
        # of queries against every key, or each stacked sequence against its own.
        if len(self.segs) == 1:
            segs = [(0, self.M, self.segs[0][2], self.P)]
        else:
            segs = [(o, rows, S, rows) for o, rows, S in self.segs]
        size = [_tiles(P, C) * 2 * M for _, M, _, P in segs]

        def alloc(name, rows):
            """Rows for a sequence's scores (int8 in the high rows, then their
            probabilities in 16 bits over them), freed after the node."""
            self.region[name] = r = _Region(self.buf.alloc(rows, f"{name} ({rows} rows)"),
                                            rows, 1, False, rows)
            return r.base

        def view(base, s):
            _, M, _, P = segs[s]
            return _Region(base, M, _tiles(P, C), True, 2 * M)

        regions = None                    # [sequence][head] with a region for each
        if dv is not None:
            try:
                regions = [[alloc(f"{sc.out}~{s}~{h}", size[s]) for h in range(heads)]
                           for s in range(len(segs))]
            except TooLong:
                for name in [v for v in self.region if v.startswith(sc.out + "~")]:
                    self.buf.free(self.region.pop(name).base)
                self.linear(chip.graph.nodes[dv], dv)   # the values first, then two
                dv = None
        if regions is None:
            bases = [alloc(sc.out + "~0", max(size))]
            try:
                bases.append(alloc(sc.out + "~1", max(size)))
            except TooLong:
                pass
        mul, shift = vector.softmax_multiplier(s_s)
        prog.fence(stores=True)                   # the keys (and values) are in memory
        if dv is None:
            slot = prog.params(chip._scalar_params((s_scores, *ctx_sets)),
                               1 + len(ctx_sets))
            ctx_slot = slot + 1
        else:
            slot = prog.params(chip._scalar_params((s_scores,)), 1)

        def head_scores(s, h, base):
            o, M, S, _ = segs[s]
            r, k = view(base, s), self.memory[kname][s]

            def st_scores(_, g, acc_row):
                prog.store(acc_row=acc_row, m=M, param_tile=slot,
                           buf_row=r.base + g * r.kstep, to_buf=1)
            self.gemm((q.base + h * dt * q.kstep + o, q.kstep, M), dt,
                      k["addr"] + h * k["head_bytes"], dt * tile, r.tiles, st_scores,
                      reads=[self.source(sc.ins[0]), kname])
            prog.made_by((sc.out, s, h), "store")
            prog.vec(reads=[(sc.out, s, h)], exact=True, vop=isa.VecOp.SOFTMAX,
                     a_row=r.base, dst_row=r.base, dst_lo_row=r.lo, wide_out=1,
                     rows=r.tiles, count=M, stride=r.kstep, length=S, mul_a=mul,
                     shift=shift)
            prog.made_by((sm.out, s, h), "vector")

        def head_context(s, h, base):
            o, M, _, _ = segs[s]
            r, v = view(base, s), self.memory[vname][s]

            def st_ctx(_, j, acc_row):
                row = out.base + (h * dt + j) * out.kstep + o
                prog.store(acc_row=acc_row, m=M, param_tile=ctx_slot + h * dt + j,
                           buf_row=row, to_buf=1, wide=1, lo_row=row + out.M)
            self.gemm(r, r.tiles, v["addr"] + h * v["head_bytes"], r.tiles * tile, dt,
                      st_ctx, reads=[(sm.out, s, h), vname], exact=True)

        if regions is not None:
            for s in range(len(segs)):
                for h in range(heads):
                    head_scores(s, h, regions[s][h])
            self.linear(chip.graph.nodes[dv], dv)
            ctx_slot = prog.params(chip._scalar_params(ctx_sets), len(ctx_sets))
            for s in range(len(segs)):          # after a FENCE: the values in memory
                for h in range(heads):
                    head_context(s, h, regions[s][h])
        else:
            # With two regions: scores 0, then scores h+1 before context h (the exec
            # unit runs head h+1's scores while the vector unit runs head h's softmax;
            # scores h+2 overwrite region h's rows after context h has read them, in
            # exec order; the next sequence's after this one's last context).
            lag = len(bases) - 1
            for s in range(len(segs)):
                for h in range(heads + lag):
                    if h < heads:
                        head_scores(s, h, bases[h % len(bases)])
                    if h >= lag:
                        head_context(s, h - lag, bases[(h - lag) % len(bases)])
        prog.made_by(n.out, "store")

    def add(self, n, i, tiles=None):
        """Two 16-bit values into a 16-bit sum (``VEC ADD wide``), in place if it can;
        ``tiles``: k-tiles ``(j0, j1)`` only (run behind the GEMM that makes one input,
        :meth:`fusable`; the rows are chosen with the first)."""
        chip = self.chip
        a, b = (self.r(v) for v in n.ins)
        if not (a.wide and b.wide):
            raise NotLowered(f"{n.out}: the chip adds two 16-bit values")
        first = tiles is None or tiles[0] == 0
        if first:
            free = [r for r in (self.in_place(v, i) for v in n.ins) if r is not None]
            dst = (min(free, key=lambda r: r.base) if free  # the lower rows: less scatter
                   else self.new(n.out, a.tiles * self.cfg.rows, True))
            self.pending[n.out] = dst, not free
        dst, fresh = self.pending[n.out]
        j0, j1 = tiles or (0, a.tiles)
        ma, mb, sh = vector.add_multipliers(chip.scale[n.ins[0]], chip.scale[n.ins[1]],
                                            chip.scale[n.out])
        off = j0 * a.kstep
        self.prog.vec(reads=[self.source(v) for v in n.ins], fresh=fresh and first,
                      vop=isa.VecOp.ADD,
                      a_row=a.base + off, a_lo_row=a.lo + off,
                      b_row=b.base + off, b_lo_row=b.lo + off, dst_row=dst.base + off,
                      dst_lo_row=dst.lo + off,
                      wide=1, rows=j1 - j0, count=self.M, stride=a.kstep, mul_a=ma,
                      mul_b=mb, shift=sh)
        self.prog.made_by(n.out, "vector")
        self.region[n.out] = dst

    def gelu(self, n, tiles=None):
        """``relu(x) - g(x)`` (:data:`GELU_CLAMP`): ``-g`` of the saturated int8 rows
        through two tables into 16 bits (the low halves' table first, then the high
        halves' in place), then added to ``relu(x)`` (16-bit) in place; ``tiles``:
        k-tiles ``(j0, j1)`` only (behind the up projection's ``STORE``s, the tables
        loaded with the first)."""
        chip, prog = self.chip, self.prog
        u, c = self.r(n.ins[0]), self.region[n.ins[0] + "~c"]
        ring = self.ring.get(n.ins[0] + "~c", u.tiles)
        p = chip.vparam[n.out]
        j0, j1 = tiles or (0, u.tiles)
        if j0 == 0:
            trows = isa.TABLE_ENTRIES // self.cfg.rows
            prog.vec(vop=isa.VecOp.TABLE, a_row=chip.vbase + p["hi"], rows=trows, table=0)
            prog.vec(vop=isa.VecOp.TABLE, a_row=chip.vbase + p["lo"], rows=trows, table=1)
        vec = dict(rows=j1 - j0, count=self.M)
        oc, ou = j0 % ring * c.kstep, j0 * u.kstep
        # The ADD reads the chunk's ring rows last: a token for the STOREs that take them.
        last = ring < u.tiles and j0 // FUSE_TILES + RING_CHUNKS < _tiles(u.tiles, FUSE_TILES)
        for table, dst in ((1, c.lo), (0, c.base)):
            prog.vec(reads=[n.ins[0] + "~c"], vop=isa.VecOp.LUT, a_row=c.base + oc,
                     dst_row=dst + oc, stride=c.kstep, table=table, **vec)
        ma, mb, sh = p["add"]
        prog.vec(reads=[self.source(n.ins[0])], vop=isa.VecOp.ADD, wide=1,
                 a_row=u.base + ou, a_lo_row=u.lo + ou, b_row=c.base + oc,
                 b_lo_row=c.lo + oc, dst_row=u.base + ou, dst_lo_row=u.lo + ou,
                 stride=u.kstep, mul_a=ma, mul_b=mb, shift=sh, push_prev=int(last), **vec)
        prog.made_by(n.out, "vector")
        self.region[n.out] = u
        if n.out in chip.dyn:        # the down projection's smoothing, tile by tile too,
            self.smooth(n.out, tiles,          # in place (if nothing else reads the GELU)
                        into=None if n.out in self.crossing else u)
            # Made: to int8 behind the next GEMM's first MATMUL (a no-op if that GEMM
            # reads it, whose DYNQ comes first), with codes in a range of their own.
            if j1 == u.tiles and self.rs_ranges == 3 and self.per_token_int8(n.out):
                self.early.append(n.out)

    def layernorm(self, n, i):
        """A 16-bit value's LayerNorm with its ``beta`` into 16 bits. If a
        GEMM takes it smoothed (:data:`FOLD_SMOOTHING`), first the norm with the
        smoothing folded in, into the smoothed rows (``name~q``), on through ``DYNQ``
        (``VEC LAYERNORM dynq``: int8 a token, as :meth:`per_token` makes them) or, for
        a pair, in 16 bits; then, under that GEMM, the norm itself for its other
        readers."""
        chip, prog = self.chip, self.prog
        a = self.r(n.ins[0])
        p = chip.vparam[n.out]
        vec = dict(rows=a.tiles, count=self.M, stride=a.kstep)

        def norm(p, dst, fresh, slots=None):
            out = (dict(wide_out=1, dst_lo_row=dst.lo) if slots is None
                   else dict(dynq=1, b_lo_row=slots))      # int8 a token, its codes
            prog.vec(reads=[self.source(n.ins[0])], fresh=fresh, vop=isa.VecOp.LAYERNORM,
                     a_row=a.base, a_lo_row=a.lo, wide=1, beta=1,
                     b_row=chip.vbase + p["gains"], dst_row=dst.base,
                     length=chip._width(n.ins[0]), shift=p["shift"], **out, **vec)

        own = self.in_place(n.ins[0], i)
        if "fold" in p:
            q = n.out + "~q"
            r = self.new(q, a.tiles * self.cfg.rows, True)
            if self.per_token_int8(n.out):    # the norm on through DYNQ (VEC dynq)
                norm(p["fold"], r, True, slots=self.next_rs(q))
                self.prog.made_by(q, "vector")
                self.quantized.add(q)
            else:
                norm(p["fold"], r, True)
                self.per_token(n.out)
        dst = own or self.new(n.out, a.tiles * self.cfg.rows, True)
        self.region[n.out] = dst

        def itself():
            tag, prog.tag = prog.tag, n.out
            norm(p, dst, own is None)
            prog.made_by(n.out, "vector")
            prog.tag = tag

        if "fold" in p and self.resident:
            self.late[n.out] = itself          # under the GEMM that waits for the DYNQ
        else:
            itself()
