"""The float executor: runs a :class:`sw.nn.graph.Graph` in float32 numpy.

This is the float reference of every architecture (:mod:`sw.nn.archs`) and the source of
calibration statistics: ``observe(name, value)`` sees every value as it is made. The
numerics are :mod:`sw.models.layers`' functions (LayerNorm, exact GELU, softmax,
attention), so a graph gives exactly the numbers of the layer code it replaces.
"""

import math

import numpy as np

from ..models import layers as L

__all__ = ["run", "eval_node", "feed", "greedy"]


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


def eval_node(n, x, params, state):
    """The float value of node ``n`` from its input values ``x`` (a list)."""
    a = n.attrs
    if n.op == "embed":
        return _param(params, a["table"])[np.asarray(x[0], np.int64)].astype(np.float32)
    if n.op == "linear":
        b = _param(params, a.get("b"))
        out = L.linear(x[0], _param(params, a["w"]), 0 if b is None else b)
        return np.asarray(out, np.float32)
    if n.op == "layernorm":
        return L.layer_norm(x[0], _param(params, a["g"]), _param(params, a["b"]), a["eps"])
    if n.op == "rmsnorm":
        v = np.asarray(x[0], np.float32)
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True)
                           + np.float32(a["eps"])) * _param(params, a["g"])
    if n.op == "gelu":
        return L.gelu(x[0])
    if n.op == "silu":
        return x[0] / (1.0 + np.exp(-x[0]))
    if n.op == "mul":
        return x[0] * x[1]
    if n.op == "add":
        return x[0] + x[1]
    if n.op == "split_heads":
        return L.split_heads(x[0], a["heads"])
    if n.op == "merge_heads":
        return L.merge_heads(x[0])
    if n.op == "rope":
        return _rope(x[0], x[1], a["base"])
    if n.op == "kv_append":
        old = state.get(a["slot"])
        out = x[0] if old is None else np.concatenate([old, x[0]], axis=-2)
        state[a["slot"]] = out
        return out
    if n.op == "scores":
        return _scores(x[0], x[1], a["group"])
    if n.op == "softmax":
        return _softmax(x[0], x[1] if len(x) > 1 else None, a["causal"])
    if n.op == "context":
        return _context(x[0], x[1], a["group"])
    raise AssertionError(n.op)                    # Graph.add admits only OPS


def feed(graph, feeds):
    """The graph's input values from ``feeds`` (a one-line error for a missing one)."""
    values = {}
    for name in graph.inputs:
        if name not in feeds:
            raise KeyError(f"{graph.name}: input {name!r} is not fed")
        values[name] = feeds[name]
    return values


def run(graph, params, feeds, state=None, *, observe=None):
    """Run ``graph`` with parameters ``params`` (name -> array) and inputs ``feeds``
    (name -> array); ``state`` (a dict kept by the caller) holds the KV cache between
    runs. Returns a dict of the graph's outputs."""
    values = feed(graph, feeds)
    state = {} if state is None else state
    for n in graph.nodes:
        out = eval_node(n, [values[i] for i in n.ins], params, state)
        values[n.out] = out
        if observe is not None:
            observe(n.out, out)
    return {name: values[name] for name in graph.outputs}


def greedy(graph, params, ids, max_tokens, *, stop, state=None):
    """Greedy decoding of a language-model graph (inputs ``ids`` and ``pos``, output
    ``logits``): prefill ``ids``, then up to ``max_tokens`` tokens, each against the
    cache in ``state``, stopping after ``stop``. Returns ``(tokens, per-step logits)``."""
    state = {} if state is None else state
    ids = np.asarray(ids, np.int64).ravel()
    logits = run(graph, params, {"ids": ids, "pos": np.arange(len(ids))}, state)["logits"][-1]
    out, steps = [], [logits]
    for i in range(max_tokens):
        out.append(int(np.argmax(logits)))
        if out[-1] == stop or i + 1 == max_tokens:
            break
        logits = run(graph, params, {"ids": np.array(out[-1:]),
                                     "pos": np.array([len(ids) + i])}, state)["logits"][-1]
        steps.append(logits)
    return out, np.stack(steps)
