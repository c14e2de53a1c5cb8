"""Quantization, stated once and implemented once.

* **Weights**: int8, symmetric, per output channel: ``s_w[c] = max|W[:, c]| / 127``,
  ``Wq = clip(round(W / s_w), -127, 127)`` (a zero column gets ``s_w = 1``).
* **Activations**: int8, symmetric, per tensor: ``s_x = max|x| / 127`` over calibration
  inputs, ``xq = clip(round(x / s_x), -128, 127)``; ``x ~ s_x * xq``.
* **Biases**: int32 in the accumulator's scale: ``bq = round(b / (s_x * s_w[c]))``.
* **Smoothing** of a GEMM input with outlier channels (as in SmoothQuant): per input
  channel ``k`` a factor ``f[k] = max|x[:, k]|**alpha / max|W[k, :]|**(1 - alpha)``; the
  host quantizes ``x / f`` (one per-tensor scale) and the weights are quantized as
  ``diag(f) @ W``, so the product is unchanged and the outlier channels no longer set
  the scale of all the others. Used where the host produces the GEMM's input anyway.
* **Outputs that return to the host** (before a residual add, LayerNorm or GELU) use one
  scale per output channel: the requantizer's multiplier is per channel, so this costs
  nothing, and the host dequantizes per channel. Activations that feed another GEMM on
  the device stay per tensor.
* **Requantization** of a GEMM's int32 accumulator to the int8 output of scale ``s_y``:
  per channel, the real factor ``s_x * s_w[c] / s_y`` becomes an integer multiplier and
  a right shift (:func:`sw.requant.quantize_multiplier`); the hardware then computes
  ``y = clamp(round((acc + bq) * mult / 2**shift), -128, 127)`` exactly as
  ``docs/requant.md`` states (gemmlowp / TFLite style, one rounding).

Rounding is round-half-to-even (numpy's ``round``) on the host side; the hardware's
rounding is specified in ``docs/requant.md``.
"""

from dataclasses import dataclass

import numpy as np

from . import requant

__all__ = ["act_scale", "channel_scales", "smoothing", "quantize_act", "dequantize",
           "QuantLinear", "quantize_linear", "requant_params"]


def act_scale(*samples):
    """Per-tensor symmetric scale covering every sample (``max|x| / 127``, never 0)."""
    peak = max(float(np.max(np.abs(s))) if np.size(s) else 0.0 for s in samples)
    if not np.isfinite(peak):
        raise ValueError("calibration data contains NaN or Inf")
    return peak / 127.0 if peak > 0 else 1.0


def channel_scales(*samples):
    """Per-channel (last axis) symmetric scales covering every sample."""
    peak = np.max([np.abs(np.asarray(s, np.float64)).reshape(-1, np.shape(s)[-1]).max(axis=0)
                   for s in samples], axis=0)
    if not np.all(np.isfinite(peak)):
        raise ValueError("calibration data contains NaN or Inf")
    return np.where(peak > 0, peak / 127.0, 1.0)


def smoothing(x_samples, w, alpha):
    """Per-input-channel smoothing factors of a GEMM input (see the module docstring)."""
    xmax = np.max([np.abs(np.asarray(s, np.float64)).reshape(-1, np.shape(s)[-1]).max(axis=0)
                   for s in x_samples], axis=0)
    wmax = np.abs(np.asarray(w, np.float64)).max(axis=1)
    f = np.maximum(xmax, 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1.0 - alpha)
    return np.maximum(f, 1e-5)


def quantize_act(x, scale):
    """``clip(round(x / scale), -128, 127)`` as int8."""
    return np.clip(np.round(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def dequantize(q, scale):
    return np.asarray(q, np.float32) * np.float32(scale)


@dataclass
class QuantLinear:
    """``y = x @ W + b`` quantized: int8 ``wq`` (K x N), per-channel ``w_scale`` (N,),
    float bias ``b`` (N,) kept until the input scale is known."""
    wq: np.ndarray
    w_scale: np.ndarray
    b: np.ndarray

    @property
    def n(self):
        return self.wq.shape[1]


def quantize_linear(w, b):
    """Per-output-channel symmetric int8 weights of a float ``w`` (K x N) and bias ``b``."""
    w = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w)) or not np.all(np.isfinite(b)):
        raise ValueError("weights contain NaN or Inf")
    peak = np.abs(w).max(axis=0)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    wq = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return QuantLinear(wq=wq, w_scale=scale, b=np.asarray(b, np.float64))


def requant_params(s_x, w_scale, s_y, bias=None):
    """int32 bias, multiplier and shift per channel for an int8 GEMM whose input has
    scale ``s_x``, weights ``w_scale`` (per channel) and output scale ``s_y``."""
    w_scale = np.asarray(w_scale, np.float64)
    acc_scale = s_x * w_scale
    if bias is None:
        bq = np.zeros(len(w_scale), np.int64)
    else:
        bq = np.round(np.asarray(bias, np.float64) / acc_scale)
        bq = np.clip(bq, -2**31, 2**31 - 1).astype(np.int64)
    pairs = [requant.quantize_multiplier(f) for f in acc_scale / s_y]
    mult = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    return bq, mult, shift
