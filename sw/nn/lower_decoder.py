"""The device executor, second form, for decoders: a Llama-style model (SmolLM2,
llama-tiny) lowered to **one program per call**, every op but the embedding gather on the
chip: a prefill is one program, a decoded token another (its embedding row in, its logits
out).

The same parts as :mod:`sw.nn.lower` (the encoder's lowering: its emitter, buffer
allocation and 16-bit values), with what a decoder adds:

* **A KV cache in device memory**, for the executor's life (``positions`` of them): per
  KV head, the values as the weights of ``P V`` (``positions x d``, written by the ``V``
  projection's ``STORE``), the keys as the weights of ``Q K^T`` (``K^T``, ``d x
  positions``, written by a transposing ``STORE``) and the keys as rows too (one per
  position, ``d`` bytes), from which a call that starts inside a position tile (a decoded
  token) reloads the tile's earlier keys and transposes it whole again. The keys come
  out of the rotation in 16 bits and are narrowed to int8 by the array on their way to
  the cache (``MATMUL pair`` by ``KEY_NARROW`` I, a per-head factor in the ``STORE``).
* **Rotary embeddings** (``VEC ROPE wide``) of the 16-bit queries and keys after their
  projections, with per-position 16-bit cosines and sines (:func:`sw.vector.
  rope_tables`) kept in memory for every position and loaded for the call's positions.
* **Grouped-query attention without copies**: ``wq``'s columns are permuted so that the
  query heads of one KV head come out as stacked rows (k-tile ``(kv, j)`` holds the
  ``group`` heads' rows one after another); one ``Q K^T`` per KV head streams its keys
  once for the whole group, the causal softmax runs head by head (``length + i`` keys for
  query ``i``), and one ``P V`` per KV head streams its values once, its output tile
  leaving through one ``STORE`` per head into the natural layout ``wo`` reads.
* **RMSNorm** (16-bit in and out), **SwiGLU** in 16 bits: ``silu(x) = x sigmoid(x)``
  with the sigmoid read from two tables (``LUT``) at the high half of ``x`` rescaled to
  ``+-SIGMOID_RANGE``, the products by ``VEC MUL wide``.
* Weights: a model file's block codes (``Q4`` layers, ``Q8`` LM head; :mod:`sw.q4`) or int8
  per channel; requantization folds each column's unit ``u[n]`` into the ``STORE``.

Quantization is static as in :mod:`sw.nn.lower` (scales from :func:`sw.nn.lower.
calibrate` over float runs of calibration texts): 16-bit the residual stream, the
norms' outputs and every other GEMM input, the outputs that feed a residual add, the
queries, the keys until the cache, the scores, the probabilities, the context and the
logits; int8 the keys in the cache and the values (the weights of ``Q K^T`` and ``P V``),
at a scale per KV head.

Long prefills run in token blocks: a causal decoder needs no stage split, since block
``b``'s queries read only keys of blocks ``<= b``, already in the cache: each block runs
through every layer, its keys and values appended as it goes.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from serrano.hw import isa
from .. import isa_model, vector
from .. import q4 as q4_format
from ..quant import quantize_linear, requant_params
from ..requant import split_wide
from . import float_exec
from .lower import (WIDE_HEADROOM, NotLowered, TooLong, _Buffer, _Emitter, _Region,
                    _Regions, _ScalarParams, _tiles, param_rows, read_rows,
                    wide_rows)

__all__ = ["LOWERED", "SINK_RATIO", "Peaks", "calibrate", "OnChipDecoder"]

#: A value gets a scale of its own at the first position when its peak there is more
#: than this many times its peak elsewhere (the first token's massive activations).
SINK_RATIO = 2.0

#: Attention's int8 values (per head) are calibrated to ``127 / HEAD_HEADROOM``.
HEAD_HEADROOM = 1.0

#: The weight of the identity that narrows 16-bit keys to int8 (``MATMUL pair``).
KEY_NARROW = 64

#: A 16-bit factor row's one is ``2**FACTOR_SHIFT`` (``VEC MUL wide`` by it, that shift).
FACTOR_SHIFT = 14

#: The 16-bit sigmoid's scale (1 is WIDE_MAX).
SIGMOID_SCALE = 1.0 / isa.WIDE_MAX

#: SiLU's sigmoid is read from a table at the high half of its input rescaled to this
#: range (``+-WIDE_MAX`` is ``+-SIGMOID_RANGE``, saturating): an index step of 1/16.
SIGMOID_RANGE = 8.0

#: A GEMM input's scale keeps the calibration's largest accumulator this many times
#: below 2**31.
ACC_HEADROOM = 2.0

#: Ops whose instructions can give the first position's row its own scale (split in
#: two: that row, then the others): a value with a second scale must be made by one.
_SPLITTABLE = ("add", "rmsnorm", "silu", "mul", "linear")

#: The ops this executor lowers (``embed`` as the gather on the host).
LOWERED = ("embed", "rmsnorm", "linear", "split_heads", "merge_heads", "rope", "kv_append",
           "scores", "softmax", "context", "add", "silu", "mul")


@dataclass
class Peaks:
    """Calibration maxima ``{value: max |value|}``: over every row (``all``), over the
    first position's rows (``first``: a sequence's first token, the attention sink,
    whose residual stream carries values hundreds of times the others') and over the
    rows after it (``rest``)."""
    all: dict
    first: dict
    rest: dict
    #: per output column, ``(all, first, rest)`` of each linear node's output
    columns: dict
    #: per head, every row's, of each ``(heads, seq, d)`` value (attention's)
    heads: dict
    #: per head, the first position's rows' and the others', of the same values
    heads_first: dict = dataclasses.field(default_factory=dict)
    heads_rest: dict = dataclasses.field(default_factory=dict)


def calibrate(graph, params, feeds_list):
    """:class:`Peaks` over float runs of ``graph`` on each feeds dict (whole sequences,
    from position 0)."""
    peaks, first, rest, columns, heads = {}, {}, {}, {}, {}
    heads_first, heads_rest = {}, {}
    linears = {n.out for n in graph.nodes if n.op == "linear"}

    def observe(name, value):
        a = np.abs(np.asarray(value, np.float64))
        if a.ndim == 3:                               # (heads, seq, d): rows by position
            for d, rows in ((heads, a), (heads_first, a[:, :1]), (heads_rest, a[:, 1:])):
                h = rows.reshape(a.shape[0], -1).max(axis=1, initial=0.0)
                d[name] = np.maximum(d[name], h) if name in d else h
            a = a.transpose(1, 0, 2).reshape(a.shape[1], -1)
        if a.ndim < 2:
            return
        peaks[name] = max(peaks.get(name, 0.0), float(a.max(initial=0.0)))
        first[name] = max(first.get(name, 0.0), float(a[0].max(initial=0.0)))
        rest[name] = max(rest.get(name, 0.0), float(a[1:].max(initial=0.0)))
        if name in linears:
            a = a.reshape(-1, a.shape[-1])
            now = (a.max(axis=0), a[0], a[1:].max(axis=0, initial=0.0))
            old = columns.get(name)
            columns[name] = now if old is None else tuple(map(np.maximum, old, now))

    for feeds in feeds_list:
        if np.asarray(feeds["pos"]).ravel()[0] != 0:
            raise ValueError("calibration runs whole sequences, from position 0")
        float_exec.run(graph, params, feeds, {}, observe=observe)
    return Peaks(peaks, first, rest, columns, heads, heads_first, heads_rest)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _permute_columns(w, perm):
    """Weights (float, or :mod:`sw.q4` block weights) with their columns in ``perm``
    order."""
    if isinstance(w, q4_format.Q4Weights):
        return q4_format.Q4Weights(w.codes[:, perm], w.d[:, perm], w.f[:, perm],
                                   w.unit[perm], w.block)
    if isinstance(w, q4_format.Q8Weights):
        return q4_format.Q8Weights(w.codes[:, perm], w.d[:, perm], w.unit[perm], w.block)
    return np.asarray(w)[:, perm]


class OnChipDecoder(_ScalarParams):
    """A Llama-style ``graph`` with ``params`` on ``dev``, every op on the chip.

    ``peaks``: calibration maxima (:func:`calibrate`: every row's, and the first
    position's); ``positions``: the KV
    cache's capacity; ``q4``: block weights by parameter name (else int8 per channel).
    :meth:`run` takes ``ids`` and ``pos`` (the positions after those already in the
    cache, or from 0 for a new sequence) and returns the logits (float32).
    """

    def __init__(self, dev, graph, params, peaks, *, positions, q4=None):
        for n in graph.nodes:
            if n.op not in LOWERED:
                raise NotLowered(f"{graph.name}: op {n.op!r} ({n.out}) is not lowered to "
                                 f"the chip yet (lowered: {', '.join(LOWERED)})")
            if n.op == "softmax" and (not n.attrs["causal"] or len(n.ins) > 1):
                raise NotLowered(f"{graph.name}: {n.out}: the decoder lowering runs causal "
                                 f"attention without a padding mask")
        self.dev, self.graph, self.params = dev, graph, params
        cfg = self.cfg = dev.cfg
        R, C = cfg.rows, cfg.cols
        if R != C:
            raise NotLowered(f"the decoder lowering needs a square array, not {R} x {C}")
        self.maker = {n.out: n for n in graph.nodes}
        self.embed = next(n for n in graph.nodes if n.op == "embed")
        self.users = {}
        for n in graph.nodes:
            for i in n.ins:
                self.users.setdefault(i, []).append(n)
        # The attention's shape (every layer alike).
        sc = next(n for n in graph.nodes if n.op == "scores")
        self.group = sc.attrs["group"]
        self.heads = self._split_of(sc.ins[0]).attrs["heads"]
        self.kv_heads = self.heads // self.group
        width = np.asarray(params[self.maker[self._split_of(sc.ins[0]).ins[0]].attrs["w"]]
                           ).shape[1]
        self.d = width // self.heads
        self.dt = self.d // R
        if self.d % (2 * R):
            raise NotLowered(f"head size {self.d} is not a whole, even number of {R}-element "
                             f"rows (the rotary embedding rotates whole rows)")
        # Scales: 16-bit the embeddings, norms, adds, what feeds an add, the logits.
        self.wide = set()
        for n in graph.nodes:
            if n.op in ("embed", "rmsnorm", "add", "silu", "mul"):
                self.wide.add(n.out)
            if n.op in ("add", "mul", "silu"):
                self.wide.update(v for v in n.ins if self.maker[v].op == "linear")
        self.wide.update(graph.outputs)
        for n in graph.nodes:                    # attention's context, and its view
            if n.op == "context" or (n.op == "merge_heads" and n.ins[0] in self.wide):
                self.wide.add(n.out)
        self._scales(peaks)
        self._head_scales(peaks)
        self._weights(params, q4 or {}, peaks)
        self._vector_params(params)
        self.identity = dev.put(np.eye(R, C, dtype=np.int8).view(np.uint8).ravel())
        # 16-bit keys narrowed to int8 through the array: ``MATMUL pair`` by 64 I gives
        # ``64 hi + round(lo / 4)``, the key in quarters (exact to half a quarter).
        self.identity64 = dev.put((KEY_NARROW * np.eye(R, C, dtype=np.int8))
                                  .view(np.uint8).ravel())
        self._kv_cache(positions)
        self.length = 0
        self._pcache = {}
        # One program for every decoded token (position-relative instructions): its
        # position terms are shifts, so the strides must be powers of two.
        tile = R * C
        pow2 = [v for v in (2 * self.d, self.d, C * self.d, self.dt * tile)
                if v & (v - 1)]
        acc_rows = (self.capacity // C) * self.group
        self.one_program = None
        if pow2:
            self.one_program = f"strides {pow2} are not powers of two"
        elif acc_rows > cfg.acc_buf_rows:
            self.one_program = (f"{self.capacity} positions need {acc_rows} accumulator rows "
                                f"for the scores of one token, over {cfg.acc_buf_rows}")
        self._decode = {}               # (last, argmax) -> the decode step's program

    # ---- set-up --------------------------------------------------------------------

    def _scales(self, peaks):
        """Each value's scale (``scale``; ``scale0`` at the first position)."""
        graph = self.graph
        # Scales: every row's peak; a value whose first-position peak stands far above
        # the others' (SINK_RATIO) gets two: the first position's, and the others'.
        self.scale, self.scale0, self.split = {}, {}, set()
        for n in graph.nodes:
            name = n.out
            if n.op in ("split_heads", "merge_heads", "kv_append"):
                self.scale[name] = self.scale0[name] = self.scale[n.ins[0]]
                continue
            if n.op == "softmax":
                self.scale[name] = self.scale0[name] = 1.0 / (vector.SOFTMAX_ONE * 256)
                continue
            if name not in peaks.all:
                raise ValueError(f"no calibration peak for {name!r}")
            top = isa.WIDE_MAX / WIDE_HEADROOM if name in self.wide else 127.0
            rest = peaks.rest.get(name, 0.0)
            split = self._splittable(name) and peaks.first[name] > SINK_RATIO * rest
            if split:
                self.split.add(name)
            peak = rest if split else peaks.all[name]
            self.scale[name] = peak / top if peak > 0 else 1.0
            self.scale0[name] = peaks.first[name] / top if split else self.scale[name]

    def _head_scales(self, peaks):
        """Attention's scales per head (``head_scale``)."""
        graph = self.graph
        # Attention's values at a scale per head (per KV head for keys and values): a
        # projection's STORE scales each column, a softmax each head, and the scores'
        # STOREs go head by head; the 16-bit rotary embedding keeps its input's scale.
        self.head_scale, self.v_first = {}, {}
        for sc in (n for n in graph.nodes if n.op == "scores"):
            cx = next(u for u in self.users[sc.out] if u.op == "softmax")
            cx = next(u for u in self.users[cx.out] if u.op == "context")
            k_rot = self.maker[sc.ins[1]].ins[0]
            for rot in (sc.ins[0], k_rot):                   # q_rot, k_rot: 16-bit
                split = self.maker[rot].ins[0]
                peak = np.maximum(np.maximum(peaks.heads[split], peaks.heads[rot]), 1e-12)
                s16 = peak * WIDE_HEADROOM / isa.WIDE_MAX     # the rotation keeps it
                self.head_scale[self.source(split)] = self.head_scale[split] = s16
                self.head_scale[rot] = s16
            # The keys in the cache (k_all): int8, narrowed by the array.
            self.head_scale[sc.ins[1]] = (np.maximum(peaks.heads[k_rot], 1e-12)
                                          * HEAD_HEADROOM / 127.0)
            # The values: the first position's (the attention sink's, far smaller in
            # trained models: a coarse shared scale would round away the values that
            # take most of the probability) with a scale of their own per KV head,
            # where it is more than SINK_RATIO times below the rest's.
            v_split = self.maker[cx.ins[1]].ins[0]
            p_all = np.maximum(peaks.heads[v_split], 1e-12)
            p_first = peaks.heads_first.get(v_split, p_all)
            p_rest = np.maximum(peaks.heads_rest.get(v_split, p_all), 1e-12)
            own = p_first * SINK_RATIO < p_rest
            vs = np.where(own, p_rest, p_all) * HEAD_HEADROOM / 127.0
            vs0 = np.where(own, np.maximum(p_first, 1e-12) * HEAD_HEADROOM / 127.0, vs)
            self.head_scale[v_split] = self.head_scale[cx.ins[1]] = vs
            self.head_scale[self.source(v_split)] = vs
            if own.any():
                self.v_first[self.source(v_split)] = self.v_first[cx.out] = vs0
            self.head_scale[sc.out] = (np.maximum(peaks.heads[sc.out], 1e-12)
                                       * WIDE_HEADROOM / isa.WIDE_MAX)        # 16-bit

    def _weights(self, params, q4, peaks):
        """The packed weights and parameter sets of each ``linear`` (``lin``), and the
        GEMM inputs' scales their accumulators need."""
        graph, dev, cfg = self.graph, self.dev, self.cfg
        R, C = cfg.rows, cfg.cols
        # Weights once; the queries' columns group-major (k-tile (kv, j): the group's
        # heads' d-tile j, one after another).
        g, dt, kv = self.group, self.dt, self.kv_heads
        tiles = [((k * g + i) * dt + j) for k in range(kv) for j in range(dt)
                 for i in range(g)]
        qperm = np.concatenate([np.arange(t * C, t * C + C) for t in tiles])
        # The integer weights (int8 per channel, or a file's block codes, whose integer
        # weights reach 16 bits) and, for each GEMM input, the coarsest scale its
        # accumulators need to stay in int32 (ACC_HEADROOM below 2**31 at the
        # calibration's column peaks: acc[n] = y[n] / (u[n] s_x)).
        self.lin = {}
        for n in graph.nodes:
            if n.op != "linear":
                continue
            w = q4.get(n.attrs["w"], params[n.attrs["w"]])
            if q4_format.weight_format(w) == isa.WeightFormat.INT8:
                ql = quantize_linear(np.asarray(w, np.float64), np.zeros(w.shape[1]))
                w, unit = ql.wq, ql.w_scale
            else:
                unit = np.asarray(w.unit, np.float64)
            self.lin[n.out] = dict(w=w, unit=unit, k=w.shape[0], n=w.shape[1],
                                   role=self._role(n.out))
            cols = peaks.columns[n.out]
            need = [float((c / unit).max()) * ACC_HEADROOM / 2**31 / self._pair(n.ins[0])
                    for c in cols]
            x = n.ins[0]
            if self._splittable(x):         # the rows after the first, and the first
                self.scale[x] = max(self.scale[x], need[2 if x in self.split else 0])
                self.scale0[x] = max(self.scale0[x], need[1])
            else:                           # one scale for every row
                self.scale[x] = self.scale0[x] = max(self.scale[x], self.scale0[x],
                                                     need[0])
        # A 16-bit product's scale is its factors' times a power of two (at least what
        # its range, and its GEMM's accumulators, need).
        # (SiLU: its input times its sigmoid, at SIGMOID_SCALE.)
        self.mul_shift = {}
        for n in graph.nodes:
            if n.op in ("mul", "silu"):
                shifts = []
                for sc in (self.scale, self.scale0):
                    b = SIGMOID_SCALE if n.op == "silu" else sc[n.ins[1]]
                    shift, sc[n.out] = vector.wide_mul_shift(sc[n.ins[0]], b, sc[n.out])
                    shifts.append(shift)
                self.mul_shift[n.out] = tuple(shifts)
        for n in graph.nodes:
            if n.op != "linear":
                continue
            lin = self.lin[n.out]
            w, unit = lin.pop("w"), lin.pop("unit")
            if lin["role"] == "q":
                w, unit = _permute_columns(w, qperm), unit[qperm]
            wfmt = q4_format.weight_format(w)
            if wfmt == isa.WeightFormat.INT8:
                data, stride = isa_model.pack_weights(w, cfg), _tiles(w.shape[0], R) * R * C
            else:
                data = q4_format.pack(w, cfg)
                stride = q4_format.matmul_bytes(cfg, _tiles(w.shape[0], R), wfmt)

            def param_sets(s_in, s_out, unit=unit):
                return dev.put(isa_model.pack_params(
                    *requant_params(s_in, unit, s_out, np.zeros(len(unit))), cfg))
            per = self._pair(n.ins[0])
            s_out = s_out0 = self.scale[n.out]
            if n.out in self.head_scale:           # per head, each head's columns
                s_out = s_out0 = np.repeat(self.head_scale[n.out], self.d)
                if lin["role"] == "q":
                    s_out = s_out0 = s_out[qperm]
                if n.out in self.v_first:          # the values at the first position
                    s_out0 = np.repeat(self.v_first[n.out], self.d)
            else:
                s_out0 = self.scale0[n.out]
            scales = (self.scale[n.ins[0]] * per, s_out)
            scales0 = (self.scale0[n.ins[0]] * per, s_out0)
            differ = scales0[0] != scales[0] or np.any(np.asarray(s_out0) != s_out)
            lin.update(wfmt=wfmt, w_addr=dev.put(data), w_stride=stride,
                       p_addr=param_sets(*scales),
                       p_addr0=param_sets(*scales0) if differ else None)

    def _vector_params(self, params):
        """Norm gains and sigmoid tables, in groups (``vgroups``, ``vparam``)."""
        graph, dev, cfg = self.graph, self.dev, self.cfg
        # Vector-unit parameters (norm gains, SiLU tables) in groups, one per stretch
        # between two attentions: group g (read after attention g - 1) is loaded into
        # one of two buffer regions at the top of the buffer, by turns, right after
        # attention g - 1's FENCE (group 0 with the block's inputs).
        self.vgroups, self.vparam, self.vgroup = [[]], {}, {}
        for n in graph.nodes:
            if n.op == "context":
                self.vgroups.append([])
            self.vgroup[n.out] = len(self.vgroups) - 1
            if n.op == "rmsnorm":
                self.vparam[n.out] = p = {}
                for key, sc in (("", self.scale), ("0", self.scale0)):
                    if key and sc[n.out] == self.scale[n.out]:
                        p.update(gains0=p["gains"], shift0=p["shift"])
                        continue
                    gain, shift = vector.norm_gain(params[n.attrs["g"]], sc[n.out])
                    lo_bytes, hi_bytes = vector.gain_bytes(gain)
                    p["gains" + key] = self._vrows(lo_bytes)
                    self._vrows(hi_bytes)
                    p["shift" + key] = shift
                p["length"] = len(params[n.attrs["g"]])
            elif n.op == "context" and n.out in self.v_first:
                # P's first column times s_v0 / s_v (the first position's values are at
                # their own scale): a 16-bit factor row per KV head, 1 past column 0.
                self.vparam[n.out] = p = {}
                ratio = self.v_first[n.out] / self.head_scale[n.ins[1]]
                for kv, r in enumerate(ratio):
                    f = np.full(cfg.rows, 1 << FACTOR_SHIFT, np.int64)
                    f[0] = round(float(r) * (1 << FACTOR_SHIFT))
                    hi, lo = split_wide(f)
                    p[f"first{kv}"] = self._vrows(hi)
                    self._vrows(lo)
            elif n.op == "silu":            # the 16-bit sigmoid of a rescaled input
                p = self.vparam[n.out] = {}
                s_r = SIGMOID_RANGE / isa.WIDE_MAX
                hi, lo = vector.make_wide_tables(_sigmoid, 256 * s_r, SIGMOID_SCALE)
                p["hi"], p["lo"] = self._vrows(hi), self._vrows(lo)
                for key, sc in (("", self.scale), ("0", self.scale0)):
                    p["mul" + key], _, p["shift" + key] = vector.add_multipliers(
                        sc[n.ins[0]], sc[n.ins[0]], s_r)
        self.vgroup_rows = max(sum(map(len, g)) for g in self.vgroups)
        self.vbase = cfg.act_buf_rows - 2 * self.vgroup_rows
        self.vaddr = [dev.put(np.concatenate(g).view(np.uint8).ravel()) if g else None
                      for g in self.vgroups]

    def _kv_cache(self, positions):
        """The rotary tables and the KV cache in device memory, for ``positions``."""
        graph, dev = self.graph, self.dev
        R, C = self.cfg.rows, self.cfg.cols
        dt, kv = self.dt, self.kv_heads
        # Rotary tables for every position, 16-bit: the high halves of the cosines and
        # sines, then their low halves, 2 d bytes a position.
        self.capacity = cap = _tiles(positions, C) * C
        base = next(n.attrs["base"] for n in graph.nodes if n.op == "rope")
        tab = np.stack([np.concatenate(vector.rope_tables(p, self.d, base, wide=True))
                        for p in range(cap)])
        hi, lo = split_wide(tab)
        self.rope_addr = dev.put(np.concatenate([hi, lo], axis=1).view(np.uint8).ravel())
        # The KV cache: per kv_append, per KV head.
        tile = R * C
        self.cache = {}
        for n in graph.nodes:
            if n.op == "kv_append":
                role = "k" if any(u.op == "scores" for u in self.users[n.out]) else "v"
                hb = dt * (cap // C) * tile
                entry = dict(role=role, head_bytes=hb, addr=dev.alloc(kv * hb))
                if role == "k":
                    entry["rows"] = dev.alloc(kv * cap * self.d)
                self.cache[n.out] = entry


    def source(self, v):
        n = self.maker.get(v)
        while n is not None and n.op in ("split_heads", "merge_heads", "kv_append"):
            v = n.ins[0]
            n = self.maker.get(v)
        return v

    def _split_of(self, v):
        n = self.maker[v]
        while n.op != "split_heads":
            n = self.maker[n.ins[0]]
        return n

    def _role(self, name):
        """``q``, ``k``, ``v`` (attention's projections), ``wide`` (16-bit into the
        buffer), ``out`` (a graph output, 16-bit to memory) or ``act`` (int8)."""
        if name in self.graph.outputs:
            return "out"
        for u in self.users.get(name, ()):
            if u.op == "split_heads":
                v = u.out
                while True:
                    nxt = self.users[v][0]
                    if nxt.op in ("scores", "context"):
                        if nxt.op == "context":
                            return "v"
                        return "q" if nxt.ins[0] == v else "k"
                    v = nxt.out
        users = self.users.get(name, ())
        if len(users) == 1 and users[0].op == "silu":
            return "silu"
        return "wide" if name in self.wide else "act"

    def vrow(self, name, key):
        """The buffer row of vector parameter ``key`` of node ``name``."""
        g = self.vgroup[name]
        return self.vbase + (g % 2) * self.vgroup_rows + self.vparam[name][key]

    def _pair(self, name):
        """What a GEMM's accumulators count ``name``'s scale in: 256 for a 16-bit input
        (``MATMUL pair`` adds the low halves at 1/256), else 1."""
        return 256 if name in self.wide else 1

    def _splittable(self, name):
        """Whether the instructions that make ``name`` can give the first position's row
        a scale of its own."""
        n = self.maker[name]
        return n.op in _SPLITTABLE and (n.op != "linear"
                                        or self._role(name) in ("act", "wide", "silu"))

    def _vrows(self, values):
        """Append int8 ``values`` (whole rows) to the current group of vector
        parameters; their first row's offset in the group."""
        group = self.vgroups[-1]
        at = sum(len(r) for r in group)
        group.append(param_rows(values, self.cfg.rows))
        return at

    # ---- running -------------------------------------------------------------------

    def build(self, S, p0, last=False, block=None, argmax=False, anypos=False):
        """The program for ``S`` tokens at positions ``p0 ..`` (logits of the last one
        only with ``last``): in the largest token blocks the buffer holds (or blocks of
        ``block`` tokens). Its device memory is released by the caller (:meth:`run`).
        ``anypos``: one token at whatever position the ``position`` register holds
        (1 and up: :meth:`decode_program`)."""
        if p0 + S > self.capacity:
            raise TooLong(f"{p0 + S} positions exceed the KV cache's {self.capacity} (make "
                          f"the executor with more positions)")
        C = self.cfg.cols
        sizes = [block] if block else (
            [S] + [t for t in (C << k for k in range(12, -1, -1)) if t < S]
            + [t for t in (C >> k for k in range(1, 8)) if 0 < t < S])
        for T in sizes:
            mark = self.dev.mark()
            try:
                return _DecoderLowering(self, S, p0, T, last, argmax, anypos).build()
            except TooLong:
                self.dev.release(mark)
                self._pcache = {f: a for f, a in self._pcache.items() if a < mark}
                if T == sizes[-1]:
                    raise

    def decode_program(self, last=False, argmax=False):
        """The program of one decoded token at any position from 1 on, built once and
        kept in device memory (``None`` when :attr:`one_program` says why it cannot
        be): its KV-cache rows, rotary tables, key tile, attention length and the
        number of key tiles follow the ``position`` register (:mod:`hw.isa`,
        "Position-relative instructions")."""
        if self.one_program is not None:
            return None
        key = (bool(last), bool(argmax))
        if key not in self._decode:
            self._decode[key] = self.build(1, 1, last, None, argmax, anypos=True)
        return self._decode[key]

    def run(self, feeds, state=None, *, last=False, block=None, argmax=False):
        """Tokens ``ids`` at positions ``pos`` (consecutive, from 0 or from the cache's
        length): one program, one host round trip. Returns ``{"logits": ...}`` (float32,
        one row per token, or the last token's with ``last``); ``block``: tokens per block
        (default: as many as the buffer holds). With ``argmax``: ``{"token": id}``, the
        last token's next token, found on the chip (``ARGMAX wide`` of its 16-bit logits;
        the host reads back 16 bytes)."""
        ids = np.asarray(feeds["ids"], np.int64).ravel()
        pos = np.asarray(feeds["pos"], np.int64).ravel()
        if len(ids) == 0 or len(pos) != len(ids):
            raise ValueError("ids and pos must be non-empty and of one length")
        p0 = int(pos[0])
        if not (pos == np.arange(p0, p0 + len(ids))).all():
            raise ValueError("positions must be consecutive")
        if p0 != 0 and p0 != self.length:
            raise ValueError(f"the cache holds {self.length} positions: the next call starts "
                             f"at 0 (a new sequence) or at {self.length}, not {p0}")
        S = len(ids)
        g = self.graph
        emb = self.embed
        x = np.asarray(self.params[emb.attrs["table"]], np.float64)[ids]
        top = isa.WIDE_MAX
        xq = np.clip(np.round(x / self.scale[emb.out]), -top, top).astype(np.int64)
        one = (self.decode_program(last, argmax) if S == 1 and p0 >= 1 and block is None
               else None)              # (built before the mark: it stays)
        mark = self.dev.mark()
        try:
            built = one or self.build(S, p0, last, block, argmax)
            self.dev.write(built["x_addr"], wide_rows(xq, S, self.cfg))
            self.length = p0           # a failed run leaves the cache to this point
            self.dev.run(built["prog_addr"], built["n_insns"], name=g.name,
                         macs=built["macs"] + _position_macs(built["pos_macs"], p0),
                         program=built["program"], position=p0)
            self.length = p0 + S
            out = g.outputs[0]
            if argmax:
                raw = self.dev.read(built["out"]["addr"], 4 * self.cfg.cols).view("<i4")
                b = raw[:8].astype(np.int64) & 0xFF
                return {"token": int(sum(int(v) << (8 * e) for e, v in enumerate(b)))}
            rows = 1 if last else S
            q = read_rows(self.dev, built["out"], rows, self.cfg)
            return {out: (q[:, :built["width"]] * self.scale[out]).astype(np.float32)}
        finally:
            self.dev.release(mark)
            self._pcache = {f: a for f, a in self._pcache.items() if a < mark}


class _DecoderLowering(_Regions):
    """One program: ``S`` tokens at positions ``p0 ..`` in blocks of ``T``."""

    def __init__(self, chip, S, p0, T, last, argmax=False, anypos=False):
        self.chip, self.S, self.p0, self.T, self.last = chip, S, p0, T, last or argmax
        self.argmax = argmax
        self.anypos = anypos            # one token at the position register's position
        self.pos_macs = []              # (gtile or None, shr, MACs): see _position_macs
        self.cfg = chip.cfg
        self.dev = chip.dev
        self.prog = _Emitter(self.cfg)
        self.macs = 0
        self.tile = self.cfg.rows * self.cfg.cols

    # -- helpers

    def r(self, name):
        return self.region[self.chip.source(name)] if name not in self.region \
            else self.region[name]

    @property
    def sink(self):
        """Row 0 of this block is the sequence's first position (its own scales)."""
        return not self.anypos and self.pos == 0

    def at(self, stride, shr=0):
        """``at`` of a position-relative instruction whose address moves by ``stride``
        (a power of two) for each step of ``P >> shr``; ``None`` (the position is in
        the fields) unless :attr:`anypos`."""
        if not self.anypos:
            return None
        return dict(rel=1, shr=shr, shl=stride.bit_length() - 1)

    @property
    def tile_shr(self):
        """``log2 C``: ``P >> tile_shr`` is the position's key tile."""
        return self.cfg.cols.bit_length() - 1

    def gemm(self, act, kt, w_addr, w_stride, nt, store, *, p_addr=None, p_addr0=None,
             slot=0, reads=(), wfmt=isa.WeightFormat.INT8, act_stride=1, guard=None,
             kt_rel=None):
        """``nt`` N-tiles of ``act`` (``(row, kstep, m, pair)``) by packed weights, each
        N-tile's ``STORE`` (or ``STORE``s) from ``store(slot, j, acc_row, slot0)``; its
        parameter sets from ``p_addr`` (else the ``slot`` already loaded), and the first
        position's from ``p_addr0`` (``slot0``; None when it has no sets of its own or
        the block does not hold it). ``guard`` (a shift ``shr``): N-tile ``j`` runs only
        where ``j <= P >> shr`` (:meth:`_Emitter.guarded`); ``kt_rel`` (a shift): the
        ``MATMUL`` instructions take ``kt + (P >> kt_rel)`` K-tiles."""
        cfg, prog = self.cfg, self.prog
        row, kstep, m, pair = act
        assert guard is None or p_addr is None, "guarded tiles use parameters loaded before"
        two = p_addr0 is not None and self.sink
        per = cfg.param_tiles // 2 if two else cfg.param_tiles
        slot0 = None
        for c0 in range(0, nt, per):
            chunk = range(c0, min(nt, c0 + per))
            off = c0 * isa.PARAM_BEATS * cfg.bus_bytes
            if two:                        # both groups of sets in one run of slots
                prog.reserve(2 * len(chunk))
                slot0 = prog.params(p_addr0 + off, len(chunk), push=False)
            if p_addr is not None:
                slot = prog.params(p_addr + off, len(chunk))
            for j in chunk:
                rows = m // 2 if pair else m
                macs = rows * kt * cfg.rows * cfg.cols
                if guard is not None:
                    prog.guarded(j, guard)
                    self.pos_macs.append((j, guard, macs))
                else:
                    self.macs += macs
                if kt_rel is not None:
                    self.pos_macs.append((None, kt_rel, macs // kt))
                acc_row = prog.matmul(reads=reads, weight_addr=w_addr + j * w_stride,
                                      act_row=row, act_stride=act_stride, act_kstep=kstep,
                                      m=m, k_tiles=kt, pair=int(pair), wfmt=int(wfmt),
                                      acc_row=0 if guard is None else j * rows,
                                      at=None if kt_rel is None else dict(rel=1, shr=kt_rel))
                jj = j - c0
                store(slot + jj if p_addr is not None else slot, j, acc_row,
                      slot0 + jj if two else None)
        if guard is not None:
            prog.unguarded()

    def vec(self, reads, first=None, shift_b=False, fresh=False, **fields):
        """A ``VEC`` over the block's ``M`` vectors (``count``); ``first``: the fields that
        differ for the first position's row, when the block holds it: then two, that
        row alone and the others (their rows one on, and ``b``'s with ``shift_b``);
        ``fresh``: it writes rows just allocated (:meth:`_Emitter.vec`)."""
        prog, M = self.prog, self.M
        if not (self.sink and first and any(fields[k] != v for k, v in first.items())):
            prog.vec(reads=reads, count=M, fresh=fresh, **fields)
            return
        prog.vec(reads=reads, count=1, fresh=fresh, **{**fields, **first})
        if M > 1:
            keys = ("a_row", "a_lo_row", "dst_row", "dst_lo_row") + (
                ("b_row", "b_lo_row") if shift_b else ())
            prog.vec(reads=reads, count=M - 1,
                     **{k: v + 1 if k in keys else v for k, v in fields.items()})

    @staticmethod
    def act_of(r):
        return (r.base, r.kstep, 2 * r.M if r.wide else r.M, r.wide)

    # -- the program

    def build(self):
        chip, cfg, dev, prog = self.chip, self.cfg, self.dev, self.prog
        R, C = cfg.rows, cfg.cols
        g = chip.graph
        emb = chip.embed
        width = chip.lin[g.outputs[0]]["n"]
        hidden = np.asarray(chip.params[emb.attrs["table"]]).shape[1]
        hidden_kt = _tiles(hidden, R)
        self.x_addr = dev.alloc(hidden_kt * self.S * 2 * C)
        rows_out = 1 if self.last else self.S
        self.out = dict(addr=dev.alloc(_tiles(width, C) * rows_out * 2 * C), wide=True,
                        kt=_tiles(width, C))
        self.rows_out = rows_out
        for b0 in range(0, self.S, self.T):
            self.b0 = b0
            self.M = M = min(self.T, self.S - b0)
            self.pos = self.p0 + b0                  # the block's first position
            prog.fence()                             # the last block's rows are free
            self.buf = _Buffer(chip.vbase)
            self.region = {}
            # The block's embeddings (16-bit) and rotary tables (queries' and keys'
            # layouts: rows of token m at m + j * stride).
            x = self.new(emb.out, hidden, True)
            for t in range(hidden_kt):
                prog.load_act(dram_addr=self.x_addr + (t * self.S + b0) * 2 * C,
                              dram_stride=2 * C, rows=M, row_beats=2,
                              buf_row=x.base + t * x.kstep, buf_row_step=1, buf_beat_step=M)
            prog.made_by(emb.out, "load")
            gm = chip.group * M
            self.qtab = self.buf.alloc(chip.dt * 2 * gm, "rotary tables")
            self.ktab = self.buf.alloc(chip.dt * 2 * M, "rotary tables")
            for base, n, copies in ((self.qtab, gm, chip.group), (self.ktab, M, 1)):
                for i in range(copies):          # the high halves, then the low ones
                    for half in (0, 1):      # (one position's row: 2 d bytes)
                        prog.load_act(dram_addr=chip.rope_addr + (2 * (0 if self.anypos
                                                                       else self.pos)
                                                                  + half) * chip.d,
                                      dram_stride=2 * chip.d, rows=M,
                                      row_beats=chip.dt, buf_row=base + half * n + i * M,
                                      buf_row_step=1, buf_beat_step=2 * n,
                                      at=self.at(2 * chip.d))
            prog.made_by("rope_tables", "load")
            self.load_vgroup(0)
            prog.made_by("vector parameters", "load")
            # Where each value is last read (attention's scores and softmax read theirs
            # where their context is lowered).
            self.last_use = {}
            for i, n in enumerate(g.nodes):
                at = i
                if n.op in ("scores", "softmax"):
                    at = next(j for j in range(i, len(g.nodes))
                              if g.nodes[j].op == "context")
                for v in n.ins:
                    self.last_use[chip.source(v)] = at
            for i, n in enumerate(g.nodes):
                self.node(i, n)
        code = prog.program().to_array()
        return dict(prog_addr=dev.put(code), n_insns=len(code) // isa.INSN_BYTES,
                    program=code.tobytes(), x_addr=self.x_addr, out=self.out, width=width,
                    macs=self.macs, pos_macs=self.pos_macs)

    def node(self, i, n):
        op = n.op
        if op == "rmsnorm":
            self.rmsnorm(n)
        elif op == "linear":
            self.linear(n)
        elif op == "rope":
            self.rope(n)
        elif op == "kv_append":
            self.kv_append(n)
        elif op == "context":
            self.attention(n)
        elif op == "add":
            self.add(n, i)
        elif op == "silu":
            self.silu(n)
        elif op == "mul":
            self.mul(n, i)
        # embed, split_heads, merge_heads: views; scores, softmax: with their context
        live = {id(r) for v, r in self.region.items() if self.last_use.get(v, -1) > i}
        for r in {id(r): r for r in self.region.values() if id(r) not in live}.values():
            self.buf.free(r.base)
        self.region = {v: r for v, r in self.region.items() if id(r) in live}

    def load_vgroup(self, g):
        chip = self.chip
        if g < len(chip.vgroups) and chip.vaddr[g] is not None:
            rows = sum(map(len, chip.vgroups[g]))
            self.prog.load_act(dram_addr=chip.vaddr[g], dram_stride=0, rows=1,
                               row_beats=rows, buf_row=chip.vbase + (g % 2) * chip.vgroup_rows,
                               buf_row_step=0, buf_beat_step=1)

    def rmsnorm(self, n):
        chip, prog = self.chip, self.prog
        a = self.r(n.ins[0])
        p = chip.vparam[n.out]
        dst = self.new(n.out, a.tiles * self.cfg.rows, True)
        self.vec([chip.source(n.ins[0]), "vector parameters"],
                 dict(b_row=chip.vrow(n.out, "gains0"), shift=p["shift0"]), fresh=True,
                 vop=isa.VecOp.RMSNORM, a_row=a.base, a_lo_row=a.lo, wide=1, wide_out=1,
                 b_row=chip.vrow(n.out, "gains"), dst_row=dst.base, dst_lo_row=dst.lo,
                 length=p["length"], shift=p["shift"], rows=a.tiles, stride=a.kstep)
        prog.made_by(n.out, "vector")

    def linear(self, n):
        chip, prog, M = self.chip, self.prog, self.M
        R, C = self.cfg.rows, self.cfg.cols
        lin = chip.lin[n.out]
        a = self.r(n.ins[0])
        kt, nt = _tiles(lin["k"], R), _tiles(lin["n"], C)
        role = lin["role"]
        act = self.act_of(a)
        if role == "out":                  # 16-bit rows to memory
            out, P = self.out, self.rows_out
            if self.last:
                if self.b0 + M < self.S:
                    return                 # only the last token's logits
                hi = a.base + M - 1        # its high and low rows, M apart
                act = (hi, a.kstep, 2, True) if a.wide else (hi, a.kstep, 1, False)
                row0 = 0
                m = 1
            else:
                row0, m = self.b0, M
            act_stride = M if self.last and a.wide else 1
            # The first position's parameter sets only if the rows start with it.
            first = lin["p_addr0"] if not self.last or self.S == 1 else None
            if self.argmax:
                self.token(n, act, act_stride, kt, nt, lin, first)
                return

            def store(slot, j, acc_row, slot0):
                self.store_rows(slot, slot0, acc_row, m, wide=1, dram_stride=2 * C,
                                dram_addr=out["addr"] + (j * P + row0) * 2 * C)
            self.gemm(act, kt, lin["w_addr"], lin["w_stride"], nt, store, p_addr=lin["p_addr"],
                      p_addr0=first, reads=[chip.source(n.ins[0])], wfmt=lin["wfmt"],
                      act_stride=act_stride)
            prog.made_by(n.out, "memory")
            return
        if role == "v":
            cache = chip.cache[self._append_of(n.out)]
            hb, ptc = cache["head_bytes"], chip.capacity // C

            def store(slot, j, acc_row, slot0):
                h, jj = divmod(j, chip.dt)
                self.store_rows(slot, slot0, acc_row, M, dram_stride=C,
                                dram_addr=cache["addr"] + h * hb + jj * ptc * self.tile
                                + (0 if self.anypos else self.pos) * C, at=self.at(C))
            self.gemm(act, kt, lin["w_addr"], lin["w_stride"], nt, store, p_addr=lin["p_addr"],
                      p_addr0=lin["p_addr0"], reads=[chip.source(n.ins[0])], wfmt=lin["wfmt"])
            prog.made_by(n.out, "memory")
            return
        wide = role in ("wide", "silu", "q", "k")
        out = self.new(n.out, lin["n"], wide, top=role == "silu")
        lo = M
        if role == "q":           # per (KV head, d-tile): the group's high rows, then low
            lo = self.chip.group * M
            out = self.region[n.out] = _Region(out.base, lo, out.tiles // self.chip.group,
                                               True, 2 * lo)

        def store(slot, j, acc_row, slot0):
            t, i = divmod(j, self.chip.group) if role == "q" else (j, 0)
            row = out.base + t * out.kstep + i * M
            self.store_rows(slot, slot0, acc_row, M, buf_row=row, to_buf=1, wide=int(wide),
                            lo_row=row + lo if wide else 0)
        self.gemm(act, kt, lin["w_addr"], lin["w_stride"], nt, store, p_addr=lin["p_addr"],
                  p_addr0=lin["p_addr0"], reads=[chip.source(n.ins[0])], wfmt=lin["wfmt"])
        prog.made_by(n.out, "store")

    def token(self, n, act, act_stride, kt, nt, lin, first):
        """The last token's logits 16-bit into the buffer (``2 * nt`` rows: high and low
        halves of each tile), their ``ARGMAX wide``, and the index row to memory through
        the array (raw: its bytes as int32)."""
        chip, prog, C = self.chip, self.prog, self.cfg.cols
        base = self.buf.alloc(2 * nt, f"{n.out} (1 x {lin['n']})")
        idx = self.buf.alloc(1, "the token id")

        def store(slot, j, acc_row, slot0):
            self.store_rows(slot, slot0, acc_row, 1, buf_row=base + 2 * j, to_buf=1, wide=1,
                            lo_row=base + 2 * j + 1)
        self.gemm(act, kt, lin["w_addr"], lin["w_stride"], nt, store, p_addr=lin["p_addr"],
                  p_addr0=first, reads=[chip.source(n.ins[0])], wfmt=lin["wfmt"],
                  act_stride=act_stride)
        prog.made_by(n.out, "store")
        prog.vec(reads=[n.out], fresh=True, vop=isa.VecOp.ARGMAX, wide=1, a_row=base,
                 a_lo_row=base + 1, rows=nt, count=1, stride=2, length=lin["n"], dst_row=idx)
        prog.made_by("token", "vector")
        slot = prog.params(chip._scalar_params((1.0,)), 1)

        def st_raw(_, j, acc_row, __):
            prog.store(acc_row=acc_row, m=1, param_tile=slot, raw=1,
                       dram_addr=self.out["addr"], dram_stride=4 * C)
        self.gemm((idx, 1, 1, False), 1, chip.identity, 0, 1, st_raw, slot=slot,
                  reads=["token"])
        prog.made_by(n.out, "memory")

    def store_rows(self, slot, slot0, acc_row, m, **fields):
        """The ``STORE`` of ``m`` rows of a tile: with ``slot0``, the first position's
        row with its own parameter sets, then the others (``buf_row``, ``lo_row`` and
        ``dram_addr`` a row on)."""
        prog = self.prog
        if slot0 is None:
            prog.store(acc_row=acc_row, m=m, param_tile=slot, **fields)
            return
        prog.store(acc_row=acc_row, m=1, param_tile=slot0, **fields)
        if m > 1:
            assert fields.get("at") is None, "the first position's row is never relative"
            step = {"buf_row": 1, "lo_row": 1, "dram_addr": fields.get("dram_stride", 0)}
            prog.store(more=True, acc_row=acc_row + 1, m=m - 1, param_tile=slot,
                       **{k: v + step.get(k, 0) if v or k == "buf_row" else v
                          for k, v in fields.items()})

    def _append_of(self, v):
        """The ``kv_append`` output fed (through split_heads, rope) by ``v``."""
        while True:
            nxt = self.chip.users[v][0]
            if nxt.op == "kv_append":
                return nxt.out
            v = nxt.out

    def rope(self, n):
        """``ROPE wide`` of the 16-bit queries (group-major: per KV head, ``group * M``
        vectors, their high rows then their low rows) or keys (per KV head, ``M``
        vectors), at the scale they came in, into rows of the same layout (not in place:
        a row of the second half reads its partner in the first)."""
        chip, prog = self.chip, self.prog
        a = self.r(n.ins[0])
        is_q = self.chip.lin[chip.source(n.ins[0])]["role"] == "q"
        tab = self.qtab if is_q else self.ktab
        out = self.region[n.out] = _Region(
            self.buf.alloc(a.tiles * a.kstep, f"{n.out} ({a.M} x {a.tiles * self.cfg.rows})"),
            a.M, a.tiles, True, a.kstep)
        for kv in range(chip.kv_heads):
            off = kv * chip.dt * a.kstep
            prog.vec(reads=[chip.source(n.ins[0]), "rope_tables"], fresh=kv == 0,
                     vop=isa.VecOp.ROPE, wide=1, a_row=a.base + off, a_lo_row=a.lo + off, b_row=tab,
                     b_lo_row=tab + a.M, dst_row=out.base + off, dst_lo_row=out.lo + off,
                     rows=chip.dt, count=a.M, stride=a.kstep, shift=vector.ROPE_SHIFT)
        prog.made_by(n.out, "vector")

    def kv_append(self, n):
        """Keys: their rows to the row cache, and the position tiles they touch
        transposed into ``K^T`` (straight from the buffer when the block starts a tile,
        else reloaded whole from the row cache). Values: already in the cache."""
        chip, prog, M, C = self.chip, self.prog, self.M, self.cfg.cols
        cache = chip.cache[n.out]
        if cache["role"] == "v":
            self.region.pop(n.out, None)
            return
        k = self.r(n.ins[0])
        dt, d, hb, tile = chip.dt, chip.d, cache["head_bytes"], self.tile
        # 16-bit keys into int8 at the cache's scale, through the array (KEY_NARROW I).
        s16, s8 = chip.head_scale[n.ins[0]], chip.head_scale[n.out]
        narrow = prog.params(chip._scalar_params(tuple(
            float(256 / KEY_NARROW * s16[kv] / s8[kv]) for kv in range(chip.kv_heads))),
            chip.kv_heads)
        keys = [(k.base + (kv * dt + jj) * k.kstep, k.kstep, 2 * M, True)
                for kv in range(chip.kv_heads) for jj in range(dt)]
        for kv in range(chip.kv_heads):
            for jj in range(dt):
                def store(_, j, acc_row, __, kv=kv, jj=jj):
                    prog.store(acc_row=acc_row, m=M, param_tile=narrow + kv,
                               dram_addr=cache["rows"] + kv * chip.capacity * d
                               + (0 if self.anypos else self.pos) * d + jj * C,
                               dram_stride=d, at=self.at(d))
                self.gemm(keys[kv * dt + jj], 1, chip.identity64, 0, 1, store, slot=narrow,
                          reads=[chip.source(n.ins[0])])
        if not self.anypos and self.pos % C == 0:   # whole tiles from here: transpose
            for kv in range(chip.kv_heads):
                for jj in range(dt):
                    def store(_, j, acc_row, __, kv=kv, jj=jj):
                        prog.store(acc_row=acc_row, m=M, param_tile=narrow + kv,
                                   transpose=1, dram_addr=cache["addr"] + kv * hb
                                   + (self.pos // C) * dt * tile + jj * tile,
                                   dram_stride=dt * tile)
                    self.gemm(keys[kv * dt + jj], 1, chip.identity64, 0, 1, store,
                              slot=narrow, reads=[chip.source(n.ins[0])])
        else:                             # reload the touched tiles from the row cache
            # (at any position: the tile of P, tile 0 offset by the position register)
            tiles = (range(1) if self.anypos
                     else range(self.pos // C, (self.pos + M - 1) // C + 1))
            slot = prog.params(chip._scalar_params((1.0,)), 1)
            prog.fence()
            scratch = self.buf.alloc(dt * C, "key tile")
            for g in tiles:
                for kv in range(chip.kv_heads):
                    prog.load_act(dram_addr=cache["rows"] + kv * chip.capacity * d
                                  + g * C * d, dram_stride=d, rows=C, row_beats=dt,
                                  buf_row=scratch, buf_row_step=1, buf_beat_step=C,
                                  at=self.at(C * d, self.tile_shr))
                    prog.made_by("key tile", "load")
                    for jj in range(dt):
                        def store(_, j, acc_row, __, kv=kv, jj=jj, g=g):
                            prog.store(acc_row=acc_row, m=C, param_tile=slot, transpose=1,
                                       dram_addr=cache["addr"] + kv * hb + g * dt * tile
                                       + jj * tile, dram_stride=dt * tile,
                                       at=self.at(dt * tile, self.tile_shr))
                        self.gemm((scratch + jj * C, C, C, False), 1, chip.identity, 0, 1,
                                  store, slot=slot, reads=["key tile"])
                    prog.fence()          # the scratch rows are read before reuse
            self.buf.free(scratch)
        prog.made_by(n.out, "memory")

    def attention(self, n):
        """Per KV head: one ``Q K^T`` of the group's stacked queries, a causal softmax
        per query head (16-bit probabilities over the 16-bit scores), one ``P V`` whose
        tile leaves through one ``STORE`` per query head."""
        chip, prog, M, C = self.chip, self.prog, self.M, self.cfg.cols
        sm = chip.maker[n.ins[0]]
        sc = chip.maker[sm.ins[0]]
        q = self.r(sc.ins[0])
        kc, vc = chip.cache[sc.ins[1]], chip.cache[n.ins[1]]
        grp, dt, tile = chip.group, chip.dt, self.tile
        # Keys 0 .. pos + M - 1; at any position, every tile the cache holds, those past
        # the position's skipped (guards) and the softmax and P V as long as it says.
        shr = self.tile_shr
        end = chip.capacity if self.anypos else self.pos + M
        pt = _tiles(end, C)
        rel = dict(guard=shr, kt_rel=shr) if self.anypos else dict(guard=None, kt_rel=None)
        gm = grp * M
        hs = chip.head_scale
        s_q, s_k, s_s, s_v = (hs[v] for v in (sc.ins[0], sc.ins[1], sc.out, n.ins[1]))
        s_c = chip.scale[n.out]
        heads = chip.heads
        p = chip._scalar_params(                  # (16-bit queries: pair, 256 s_q)
            tuple(float(256 * s_q[h] * s_k[h // grp] / math.sqrt(chip.d) / s_s[h])
                  for h in range(heads))
            + tuple(float(s_v[kv] / vector.SOFTMAX_ONE / s_c) for kv in range(chip.kv_heads)))
        out = self.new(n.out, chip.heads * chip.d, True)        # 16-bit context
        scores = self.buf.alloc(pt * 2 * gm, f"{sc.out} ({gm} x {pt * C})")
        kstep = 2 * gm
        prog.fence()                              # the keys and values are in memory
        # The next group of vector parameters, into the region its group before last
        # used (done: the FENCE); the parameter sets' token covers it (the load unit
        # runs in order), and every VEC that reads it comes after this attention's
        # GEMMs, their STOREs and the store -> vector tokens.
        self.load_vgroup(chip.vgroup[n.out])     # (the context opens its group)
        slot = prog.params(p, heads + chip.kv_heads)
        for kv in range(chip.kv_heads):
            def st_scores(_, gg, acc_row, __, kv=kv):
                for i in range(grp):                # each head at its own scale
                    row = scores + gg * kstep + i * M
                    prog.store(more=i > 0, acc_row=acc_row + i * M, m=M,
                               param_tile=slot + kv * grp + i, buf_row=row, lo_row=row + gm,
                               to_buf=1, wide=1)
            self.gemm((q.base + kv * dt * q.kstep, q.kstep, 2 * gm, True), dt,
                      kc["addr"] + kv * kc["head_bytes"], dt * tile, pt, st_scores,
                      slot=slot, reads=[sc.ins[0], sc.ins[1]], guard=rel["guard"])
            prog.made_by(sc.out, "store")
            for i in range(grp):
                mul, shift = vector.softmax_multiplier(float(s_s[kv * grp + i]))
                prog.vec(reads=[sc.out], vop=isa.VecOp.SOFTMAX, a_row=scores + i * M,
                         a_lo_row=scores + gm + i * M, wide=1, dst_row=scores + i * M,
                         dst_lo_row=scores + gm + i * M, wide_out=1,
                         rows=1 if self.anypos else pt, count=M, stride=kstep,
                         length=1 if self.anypos else self.pos + 1, causal=1,
                         mul_a=mul, shift=shift,
                         at=dict(rel=1, shr=shr) if self.anypos else None)
            if n.out in chip.v_first:             # key 0's probabilities times s_v0 / s_v
                b = chip.vrow(n.out, f"first{kv}")
                prog.vec(reads=[sm.out], vop=isa.VecOp.MUL, wide=1, a_row=scores,
                         a_lo_row=scores + gm, b_row=b, b_lo_row=b + 1, b_repeat=1,
                         dst_row=scores, dst_lo_row=scores + gm, rows=1, count=gm,
                         stride=kstep, shift=FACTOR_SHIFT)
            prog.made_by(sm.out, "vector")

            def st_ctx(_, j, acc_row, __, kv=kv):
                for i in range(grp):
                    h = kv * grp + i
                    row = out.base + (h * dt + j) * out.kstep
                    prog.store(more=i > 0, acc_row=acc_row + i * M, m=M,
                               param_tile=slot + heads + kv, buf_row=row, lo_row=row + M,
                               wide=1, to_buf=1)
            self.gemm((scores, kstep, 2 * gm, True), 1 if self.anypos else pt,
                      vc["addr"] + kv * vc["head_bytes"], (chip.capacity // C) * tile, dt,
                      st_ctx, slot=slot, reads=[sm.out, chip.source(n.ins[1])],
                      kt_rel=rel["kt_rel"])
        self.buf.free(scores)
        prog.made_by(n.out, "store")

    def add(self, n, i):
        chip = self.chip
        a, b = (self.r(v) for v in n.ins)
        ma, mb, sh = vector.add_multipliers(chip.scale[n.ins[0]], chip.scale[n.ins[1]],
                                            chip.scale[n.out])
        ma0, mb0, sh0 = vector.add_multipliers(chip.scale0[n.ins[0]], chip.scale0[n.ins[1]],
                                               chip.scale0[n.out])
        free = [r for v in n.ins if self.last_use.get(chip.source(v)) == i
                for r in (self.r(v),)]
        dst = (min(free, key=lambda r: r.base) if free
               else self.new(n.out, a.tiles * self.cfg.rows, True))
        self.vec([chip.source(v) for v in n.ins], dict(mul_a=ma0, mul_b=mb0, shift=sh0),
                 shift_b=True, fresh=not free, vop=isa.VecOp.ADD, a_row=a.base, a_lo_row=a.lo,
                 b_row=b.base, b_lo_row=b.lo, dst_row=dst.base, dst_lo_row=dst.lo, wide=1,
                 rows=a.tiles, stride=a.kstep, mul_a=ma, mul_b=mb, shift=sh)
        self.prog.made_by(n.out, "vector")
        self.region[n.out] = dst

    def silu(self, n):
        """``silu(x) = x * sigmoid(x)`` of a 16-bit value: ``x`` rescaled to
        ``SIGMOID_RANGE`` (``VEC ADD wide``, saturating; the first position's row with its
        own factor when it has one), the sigmoid, 16-bit, through two tables read with the
        rescaled value's high halves (low halves' table first), then ``VEC MUL wide`` of
        ``x`` by it in place."""
        chip, prog, M = self.chip, self.prog, self.M
        u = self.r(n.ins[0])
        sig = self.new(n.out + ".sigmoid", u.tiles * self.cfg.rows, True)
        trows = isa.TABLE_ENTRIES // self.cfg.rows
        p = chip.vparam[n.out]
        prog.vec(vop=isa.VecOp.TABLE, a_row=chip.vrow(n.out, "hi"), rows=trows, table=0)
        prog.vec(vop=isa.VecOp.TABLE, a_row=chip.vrow(n.out, "lo"), rows=trows, table=1)
        self.vec([chip.source(n.ins[0])], dict(mul_a=p["mul0"], shift=p["shift0"]),
                 shift_b=True, fresh=True, vop=isa.VecOp.ADD, wide=1, a_row=u.base, a_lo_row=u.lo,
                 b_row=u.base, b_lo_row=u.lo, dst_row=sig.base, dst_lo_row=sig.lo,
                 rows=u.tiles, stride=u.kstep, mul_a=p["mul"], mul_b=0, shift=p["shift"])
        for table, dst in ((1, sig.lo), (0, sig.base)):
            prog.vec(reads=[chip.source(n.ins[0])], vop=isa.VecOp.LUT, a_row=sig.base,
                     dst_row=dst, rows=u.tiles, count=M, stride=u.kstep, table=table)
        shift, shift0 = chip.mul_shift[n.out]
        self.vec([chip.source(n.ins[0])], dict(shift=shift0), shift_b=True,
                 vop=isa.VecOp.MUL, wide=1, a_row=u.base, a_lo_row=u.lo, b_row=sig.base,
                 b_lo_row=sig.lo, dst_row=u.base, dst_lo_row=u.lo, rows=u.tiles,
                 stride=u.kstep, shift=shift)
        # The sigmoid's rows stay until the SiLU's reader: a STORE may reuse them only
        # once a GEMM that waits for the vector unit has run past that reader.
        self.last_use[n.out + ".sigmoid"] = self.last_use[n.out]
        prog.made_by(n.out, "vector")
        self.region[n.out] = u

    def mul(self, n, i):
        chip = self.chip
        a, b = (self.r(v) for v in n.ins)
        shift, shift0 = chip.mul_shift[n.out]
        self.vec([chip.source(v) for v in n.ins], dict(shift=shift0), shift_b=True,
                 vop=isa.VecOp.MUL, wide=1, a_row=a.base, a_lo_row=a.lo, b_row=b.base,
                 b_lo_row=b.lo, dst_row=a.base, dst_lo_row=a.lo, rows=a.tiles,
                 stride=a.kstep, shift=shift)
        self.prog.made_by(n.out, "vector")
        self.region[n.out] = a


def _position_macs(pos_macs, position):
    """The MACs of a program's position-dependent work at ``position``: each guarded
    N-tile ``(tile, shr, macs)`` that runs (``tile <= position >> shr``), and each
    ``(None, shr, macs)`` K-tile term ``(position >> shr)`` times."""
    return sum(macs * (position >> shr) if tile is None else
               (macs if tile <= position >> shr else 0) for tile, shr, macs in pos_macs)
