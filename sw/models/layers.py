"""Float32 reference transformer layers in plain numpy (no framework).

These are the golden models the int8 driver is measured against, written as small steps
(:func:`layer_norm`, :func:`gelu`, :func:`softmax`, :func:`split_heads`, :func:`attention`,
:func:`feed_forward`, ...) so that the driver can run the very same host-side pieces around
the GEMMs it sends to the accelerator.

Conventions
-----------
* Activations are ``(..., seq, hidden)``: one sequence ``(seq, hidden)`` or a batch
  ``(batch, seq, hidden)``. Leading axes are carried through unchanged.
* Weights are stored ``(in, out)``: a projection is ``y = x @ W + b``. Torch checkpoints hold
  ``(out, in)`` and are transposed once, at load time.
* Heads: ``split_heads`` turns ``(..., seq, hidden)`` into ``(..., heads, seq, head_dim)``;
  head ``h`` owns hidden columns ``h * head_dim : (h + 1) * head_dim``.
* Masks: a padding mask is ``(..., seq)`` with 1 for a token and 0 for padding. It becomes an
  additive bias of 0 or ``np.finfo(np.float32).min`` on the attention scores, so after the
  stable softmax a masked key gets a weight of exactly 0.
* The layer functions compute in float32 and return float32. The primitives
  (:func:`layer_norm`, :func:`gelu`, :func:`softmax`) keep a float64 input in float64.
"""

import math
import numbers
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "LayerShape", "EncoderWeights", "DecoderWeights", "MASK_VALUE",
    "check_finite", "layer_norm", "gelu", "softmax", "split_heads", "merge_heads",
    "linear", "padding_bias", "causal_bias", "attention", "feed_forward",
    "encoder_layer", "decoder_prefill", "decoder_decode",
]

#: Additive attention bias for a masked key: the most negative float32. Added to a finite
#: score it stays finite (no NaN from ``-inf - -inf``), and ``exp`` of it underflows to 0.
MASK_VALUE = np.finfo(np.float32).min


def _positive_int(name, value):
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or value <= 0):
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class LayerShape:
    """Geometry of one transformer layer.

    ``hidden`` is the model width, ``heads`` the number of attention heads (each of
    ``head_dim = hidden // heads`` columns) and ``ffn`` the width of the feed-forward
    hidden layer. ``hidden`` must be a multiple of ``heads``.
    """

    hidden: int
    heads: int
    ffn: int

    def __post_init__(self):
        for name in ("hidden", "heads", "ffn"):
            object.__setattr__(self, name, _positive_int(name, getattr(self, name)))
        if self.hidden % self.heads:
            raise ValueError(f"hidden size {self.hidden} does not divide into "
                             f"{self.heads} heads")

    @property
    def head_dim(self):
        """Columns per head, ``hidden // heads``."""
        return self.hidden // self.heads


def check_finite(name, array):
    """Raise ``ValueError("<name> contains NaN or Inf")`` unless every element is finite.

    Returns ``array`` unchanged, so a loader can write ``w = check_finite(name, w)``.
    """
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf")
    return array


@dataclass(eq=False)
class _LayerWeights:
    """Weights of one layer, ``(in, out)`` orientation, float32 (converted on creation)."""

    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray

    def __post_init__(self):
        for f in fields(self):
            setattr(self, f.name,
                    np.ascontiguousarray(getattr(self, f.name), dtype=np.float32))

    def expected_shapes(self, shape):
        """The ``(in, out)`` / vector shape of every field for a :class:`LayerShape`."""
        h, f = shape.hidden, shape.ffn
        return {
            "wq": (h, h), "bq": (h,), "wk": (h, h), "bk": (h,), "wv": (h, h), "bv": (h,),
            "wo": (h, h), "bo": (h,), "ln1_g": (h,), "ln1_b": (h,),
            "w1": (h, f), "b1": (f,), "w2": (f, h), "b2": (h,),
            "ln2_g": (h,), "ln2_b": (h,),
        }

    def check(self, shape, prefix=""):
        """Check every field's shape against ``shape`` and that every value is finite.

        Raises ``ValueError`` naming the field (with ``prefix`` in front).
        """
        for name, expected in self.expected_shapes(shape).items():
            value = getattr(self, name)
            if value.shape != expected:
                raise ValueError(f"{prefix}{name} has shape {value.shape}, "
                                 f"expected {expected}")
            check_finite(prefix + name, value)
        return self


@dataclass(eq=False)
class EncoderWeights(_LayerWeights):
    """One BERT (post-LN) encoder layer.

    ``wq, wk, wv, wo`` (hidden, hidden) and biases: self-attention; ``ln1_*``: the LayerNorm
    after attention (``LN(x + attn)``); ``w1`` (hidden, ffn), ``w2`` (ffn, hidden): the GELU
    feed-forward; ``ln2_*``: the LayerNorm after it.
    """


@dataclass(eq=False)
class DecoderWeights(_LayerWeights):
    """One GPT-style (pre-LN) decoder layer.

    Same projections as :class:`EncoderWeights`, but ``ln1_*`` normalises the input of the
    attention and ``ln2_*`` the input of the feed-forward (``h = x + attn(LN1(x))``,
    ``y = h + ffn(LN2(h))``).
    """


# ---------------------------------------------------------------------------- primitives

def _float_array(x):
    x = np.asarray(x)
    if x.dtype == np.float64:
        return x
    return x.astype(np.float32, copy=False)


def layer_norm(x, g, b, eps):
    """LayerNorm over the last axis: ``(x - mean) / sqrt(var + eps) * g + b``.

    ``var`` is the biased (population) variance, as in torch. Float32 in, float32 out
    (float64 stays float64).
    """
    x = _float_array(x)
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(var + x.dtype.type(eps))
    return (centred * inv * g + b).astype(x.dtype, copy=False)


_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _erf(x64):
    """``math.erf`` elementwise over a float64 array (exact to the C library's accuracy)."""
    flat = x64.ravel().tolist()
    return np.fromiter(map(math.erf, flat), dtype=np.float64, count=len(flat)).reshape(x64.shape)


def gelu(x):
    """Exact GELU, ``0.5 * x * (1 + erf(x / sqrt(2)))`` (not the tanh approximation).

    ``erf`` is the C library's ``math.erf`` mapped over the float64 values (about 10 ms for a
    128 x 1536 activation on this kind of machine), so the result is the exact GELU rounded
    to the input's dtype.
    """
    x = _float_array(x)
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 * _SQRT_HALF))).astype(x.dtype, copy=False)


def softmax(x, axis=-1):
    """Numerically stable softmax along ``axis`` (the row maximum is subtracted first).

    Rows must hold at least one finite value; scores masked with :data:`MASK_VALUE` are.
    """
    x = _float_array(x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def split_heads(x, heads):
    """``(..., seq, hidden)`` to ``(..., heads, seq, hidden // heads)``."""
    x = np.asarray(x)
    *lead, seq, hidden = x.shape
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} does not divide into {heads} heads")
    x = x.reshape(*lead, seq, heads, hidden // heads)
    return np.swapaxes(x, -2, -3)


def merge_heads(x):
    """``(..., heads, seq, head_dim)`` to ``(..., seq, heads * head_dim)``; inverse of
    :func:`split_heads`."""
    x = np.asarray(x)
    *lead, heads, seq, head_dim = x.shape
    return np.ascontiguousarray(np.swapaxes(x, -2, -3)).reshape(*lead, seq, heads * head_dim)


def linear(x, w, b):
    """``x @ w + b`` for ``x`` ``(..., in)``, ``w`` ``(in, out)``, ``b`` ``(out,)``: the GEMM
    the accelerator runs. Leading axes are flattened into one matrix product."""
    x = np.asarray(x)
    y = x.reshape(-1, x.shape[-1]) @ w + b
    return y.reshape(*x.shape[:-1], w.shape[-1])


def padding_bias(mask):
    """Additive key bias from a padding mask ``(..., seq)`` (1 = token, 0 = pad).

    Returns float32 ``(..., 1, 1, seq)``, broadcastable against scores
    ``(..., heads, q_seq, seq)``: 0 for a token, :data:`MASK_VALUE` for a pad.
    """
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("mask must hold only 0 (pad) and 1 (token)")
        mask = mask.astype(np.bool_)
    bias = np.where(mask, np.float32(0.0), MASK_VALUE).astype(np.float32)
    return bias[..., None, None, :]


def causal_bias(q_len, k_len=None):
    """Additive causal bias ``(q_len, k_len)``: query ``i`` (the last ``q_len`` of
    ``k_len`` positions) sees keys ``j <= k_len - q_len + i``; later keys get
    :data:`MASK_VALUE`."""
    k_len = q_len if k_len is None else k_len
    offset = k_len - q_len
    allowed = np.arange(k_len)[None, :] <= (np.arange(q_len)[:, None] + offset)
    return np.where(allowed, np.float32(0.0), MASK_VALUE).astype(np.float32)


def attention(q, k, v, bias=None):
    """Scaled dot-product attention per head.

    ``q`` ``(..., heads, q_seq, d)``, ``k`` and ``v`` ``(..., heads, k_seq, d)``; ``bias``
    (broadcastable to ``(..., heads, q_seq, k_seq)``) is added to the scores
    ``q @ k^T / sqrt(d)`` before the softmax. Returns ``(..., heads, q_seq, d)``.
    """
    d = q.shape[-1]
    scores = (q @ np.swapaxes(k, -1, -2)) / np.float32(math.sqrt(d))
    if bias is not None:
        scores = scores + bias
    return softmax(scores, axis=-1) @ v


def _project_qkv(x, w, shape):
    q = split_heads(linear(x, w.wq, w.bq), shape.heads)
    k = split_heads(linear(x, w.wk, w.bk), shape.heads)
    v = split_heads(linear(x, w.wv, w.bv), shape.heads)
    return q, k, v


def feed_forward(x, w):
    """``gelu(x @ w1 + b1) @ w2 + b2``."""
    return linear(gelu(linear(x, w.w1, w.b1)), w.w2, w.b2)


def _check_input(x, shape, what):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or x.shape[-1] != shape.hidden:
        raise ValueError(f"{what} must have shape (..., seq, {shape.hidden}), "
                         f"not {x.shape}")
    return x


# -------------------------------------------------------------------------------- layers

def encoder_layer(x, w, shape, mask=None, eps=1e-12):
    """One BERT encoder layer (post-LN), float32.

    ``x`` ``(..., seq, hidden)``; ``mask`` ``(..., seq)`` padding mask (1 = token, 0 = pad)
    or None for no padding. Computes::

        a = merge_heads(softmax(q k^T / sqrt(head_dim) + pad_bias) v) @ wo + bo
        h = LN(x + a; ln1)
        y = LN(h + gelu(h @ w1 + b1) @ w2 + b2; ln2)

    Padded positions get outputs too (they attend to the tokens); they are meaningless and
    never influence the tokens' outputs.
    """
    x = _check_input(x, shape, "x")
    bias = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != x.shape[:-1]:
            raise ValueError(f"mask must have shape {x.shape[:-1]}, not {mask.shape}")
        bias = padding_bias(mask)
    q, k, v = _project_qkv(x, w, shape)
    a = linear(merge_heads(attention(q, k, v, bias)), w.wo, w.bo)
    h = layer_norm(x + a, w.ln1_g, w.ln1_b, eps)
    y = layer_norm(h + feed_forward(h, w), w.ln2_g, w.ln2_b, eps)
    return y.astype(np.float32, copy=False)


def decoder_prefill(x, w, shape, eps=1e-5):
    """One GPT-style decoder layer (pre-LN, causal) over a whole prompt, float32.

    ``x`` ``(..., seq, hidden)``. Computes ``h = x + attn(LN1(x))``,
    ``y = h + ffn(LN2(h))`` with causal self-attention (position ``i`` sees ``0..i``).

    Returns ``(y, cache)`` where ``cache = (K, V)``, each ``(..., heads, seq, head_dim)``:
    the per-head keys and values, for :func:`decoder_decode`.
    """
    x = _check_input(x, shape, "x")
    seq = x.shape[-2]
    q, k, v = _project_qkv(layer_norm(x, w.ln1_g, w.ln1_b, eps), w, shape)
    h = x + linear(merge_heads(attention(q, k, v, causal_bias(seq))), w.wo, w.bo)
    y = h + feed_forward(layer_norm(h, w.ln2_g, w.ln2_b, eps), w)
    return y.astype(np.float32, copy=False), (k, v)


def decoder_decode(x_new, w, shape, cache, eps=1e-5):
    """One decoder step for ONE new token, reusing the cached keys and values.

    ``x_new`` is ``(..., 1, hidden)`` (or ``(..., hidden)``) with the same leading axes as
    the prompt given to :func:`decoder_prefill`; ``cache = (K, V)`` as returned by it (or by
    an earlier decode). Returns ``(y_new, new_cache)``: ``y_new`` has ``x_new``'s shape and
    equals row ``S`` of a prefill over all ``S + 1`` tokens; the new cache holds ``S + 1``
    positions.
    """
    k_cache, v_cache = (np.asarray(c, dtype=np.float32) for c in cache)
    lead = k_cache.shape[:-3]
    expected = (*lead, shape.heads, k_cache.shape[-2], shape.head_dim)
    if k_cache.ndim < 3 or k_cache.shape != expected or v_cache.shape != expected:
        raise ValueError(f"cache must be (K, V), each of shape (..., {shape.heads}, seq, "
                         f"{shape.head_dim}), not {k_cache.shape} and {v_cache.shape}")
    x_new = np.asarray(x_new, dtype=np.float32)
    if x_new.shape == (*lead, shape.hidden):
        x = x_new[..., None, :]
    elif x_new.shape == (*lead, 1, shape.hidden):
        x = x_new
    else:
        raise ValueError(f"x_new must have shape {(*lead, 1, shape.hidden)} (one token), "
                         f"not {x_new.shape}")
    q, k, v = _project_qkv(layer_norm(x, w.ln1_g, w.ln1_b, eps), w, shape)
    k_all = np.concatenate([k_cache, k], axis=-2)
    v_all = np.concatenate([v_cache, v], axis=-2)
    h = x + linear(merge_heads(attention(q, k_all, v_all)), w.wo, w.bo)
    y = h + feed_forward(layer_norm(h, w.ln2_g, w.ln2_b, eps), w)
    return y.reshape(x_new.shape).astype(np.float32, copy=False), (k_all, v_all)
