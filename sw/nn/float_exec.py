"""The float executor: runs a :class:`sw.nn.graph.Graph` in float32 numpy.

This is the float reference of every architecture (:mod:`sw.nn.archs`) and the source of
calibration statistics: ``observe(name, value)`` sees every value as it is made. The
numerics are :mod:`sw.models.layers`' functions (LayerNorm, exact GELU, softmax,
attention), so a graph gives exactly the numbers of the layer code it replaces.
"""

import math

import numpy as np

from ..models import layers as L

__all__ = ["run"]


def _param(params, name):
    if name is None:
        return None
    if name not in params:
        raise KeyError(f"parameter {name!r} is missing")
    return params[name]


def _rope(x, pos, base):
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.outer(np.asarray(pos, np.float64), inv)
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    h = d // 2
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _grouped(x, group):
    """``(..., kv_heads * group, s, n)`` as ``(..., kv_heads, group * s, n)``: the query
    heads of one KV head stacked, so one product serves the group, no copy of K or V."""
    *lead, heads, s, n = x.shape
    return x.reshape(*lead, heads // group, group * s, n)


def _scores(q, k, group):
    d = q.shape[-1]
    if group == 1:
        return (q @ np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(d))
    s = (_grouped(q, group) @ np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(d))
    return s.reshape(*q.shape[:-1], k.shape[-2])


def _softmax(s, mask, causal):
    bias = L.causal_bias(*s.shape[-2:]) if causal else None
    if mask is not None:
        pad = L.padding_bias(mask)
        bias = pad if bias is None else bias + pad
    return L.softmax(s if bias is None else s + bias, axis=-1)


def _context(p, v, group):
    if group == 1:
        return p @ v
    return (_grouped(p, group) @ v).reshape(*p.shape[:-1], v.shape[-1])


def run(graph, params, feeds, state=None, *, observe=None):
    """Run ``graph`` with parameters ``params`` (name -> array) and inputs ``feeds``
    (name -> array); ``state`` (a dict kept by the caller) holds the KV cache between
    runs. Returns a dict of the graph's outputs."""
    values = {}
    for name in graph.inputs:
        if name not in feeds:
            raise KeyError(f"{graph.name}: input {name!r} is not fed")
        values[name] = feeds[name]
    state = {} if state is None else state
    for n in graph.nodes:
        a, x = n.attrs, [values[i] for i in n.ins]
        if n.op == "embed":
            out = _param(params, a["table"])[np.asarray(x[0], np.int64)].astype(np.float32)
        elif n.op == "linear":
            b = _param(params, a.get("b"))
            out = L.linear(x[0], _param(params, a["w"]), 0 if b is None else b)
            out = np.asarray(out, np.float32)
        elif n.op == "layernorm":
            out = L.layer_norm(x[0], _param(params, a["g"]), _param(params, a["b"]), a["eps"])
        elif n.op == "rmsnorm":
            v = np.asarray(x[0], np.float32)
            out = v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True)
                              + np.float32(a["eps"])) * _param(params, a["g"])
        elif n.op == "gelu":
            out = L.gelu(x[0])
        elif n.op == "silu":
            out = x[0] / (1.0 + np.exp(-x[0]))
        elif n.op == "mul":
            out = x[0] * x[1]
        elif n.op == "add":
            out = x[0] + x[1]
        elif n.op == "split_heads":
            out = L.split_heads(x[0], a["heads"])
        elif n.op == "merge_heads":
            out = L.merge_heads(x[0])
        elif n.op == "rope":
            out = _rope(x[0], x[1], a["base"])
        elif n.op == "kv_append":
            old = state.get(a["slot"])
            out = x[0] if old is None else np.concatenate([old, x[0]], axis=-2)
            state[a["slot"]] = out
        elif n.op == "scores":
            out = _scores(x[0], x[1], a["group"])
        elif n.op == "softmax":
            out = _softmax(x[0], x[1] if len(x) > 1 else None, a["causal"])
        elif n.op == "context":
            out = _context(x[0], x[1], a["group"])
        else:                                     # Graph.add admits only OPS
            raise AssertionError(n.op)
        values[n.out] = out
        if observe is not None:
            observe(n.out, out)
    return {name: values[name] for name in graph.outputs}
