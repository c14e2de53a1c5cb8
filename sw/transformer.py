"""Transformer layers on the accelerator: quantize, calibrate, compile, run.

Every matrix product runs on the accelerator: Q, K and V (one GEMM with the three
weight matrices side by side), ``Q @ K^T`` and ``P @ V`` per head, the output
projection, both FFN matrices. Bias and requantization are fused into the stores.
Softmax, LayerNorm, GELU and the residual adds run on the host in float32 numpy, between
accelerator calls; the runtime (:mod:`sw.runtime`) counts those round trips and the bytes
the host moves.

Data stays on the device between GEMMs where the layouts allow it (see
:mod:`sw.compiler`): Q is read by the score GEMMs straight from the QKV output, V is
used as the weight matrix of ``P @ V`` straight from it, and the per-head contexts land
side by side as the activations of the output projection. The host touches K (to lay out
``K^T`` as weights), the scores (softmax), the projection and FFN outputs (residual,
LayerNorm, GELU).

Sequences are padded to a multiple of the array's rows; padded positions are masked out
of every softmax and never influence the real ones.
"""

import math
from dataclasses import dataclass

import numpy as np

from .compiler import Gemm, pack_acts, unpack_out
from .isa_model import pack_params, pack_weights
from .models import layers as L
from .quant import (act_scale, channel_scales, dequantize, quantize_act, quantize_linear,
                    requant_params, smoothing)

# Smoothing strengths of the three GEMM inputs the host produces (see sw.quant):
# the GELU output has the strongest outlier channels.
ALPHA = {"x": 0.5, "h": 0.5, "g": 0.7}
# Per-channel output scales come from few calibration samples: a channel that exceeds its
# calibrated peak at run time would clip, so they get this much headroom (the per-channel
# range has precision to spare).
CHANNEL_HEADROOM = 2.5
TENSOR_HEADROOM = 1.0

__all__ = ["QuantLayer", "calibrate_encoder", "calibrate_decoder",
           "encoder_forward", "decoder_prefill", "decoder_decode", "pad_len"]


def pad_len(seq, cfg):
    return -(-seq // cfg.rows) * cfg.rows


# ---- calibration ---------------------------------------------------------------------------

#: Calibration keys (what the int8 path quantizes) and the graph values they are: the
#: layer's GEMM inputs and outputs, named as :mod:`sw.nn.archs` names them.
_CALIBRATED = {"q": "q", "k": "k", "v": "v", "scores": "scores", "ctx": "ctx",
               "a": "attn_out", "f1": "ffn_up", "g": "ffn_act", "f2": "ffn_down"}


def _intermediates(x, w, shape, eps, *, pre_ln, mask=None):
    """Every tensor the int8 path quantizes, from the layer's float graph (for
    calibration): one run of :func:`sw.nn.archs.gpt_decoder` (``pre_ln``) or
    :func:`sw.nn.archs.bert_encoder` on the float executor, observed. ``x`` and ``h`` are
    what enter the QKV and the first FFN GEMMs."""
    from .nn import archs, float_exec
    seen = {}

    def observe(name, value):
        seen[name] = value

    if pre_ln:
        float_exec.run(archs.gpt_decoder(shape, 1, eps), archs.gpt_params([w]), {"x": x},
                       observe=observe)
        x_in, h = seen["blk.0.ln1"], seen["blk.0.ln2"]
    else:
        mask = np.ones(x.shape[:-1], np.int64) if mask is None else mask
        float_exec.run(archs.bert_encoder(shape, 1, eps), archs.bert_params([w]),
                       {"x": x, "mask": mask}, observe=observe)
        x_in, h = x, seen["blk.0.h"]
    out = {key: seen["blk.0." + name] for key, name in _CALIBRATED.items()}
    return dict(x=x_in, h=h, **out)


@dataclass
class Block:
    """One quantized linear layer: int8 weights, float bias, and its device address."""
    ql: object
    addr: int = None

    def upload(self, dev):
        if self.addr is None:
            self.addr = dev.put(pack_weights(self.ql.wq, dev.cfg))
        return self.addr


@dataclass
class QuantLayer:
    """A quantized encoder or decoder layer: int8 blocks, activation scales, smoothing."""
    shape: object
    w: object                   # the float weights (LayerNorm and reference)
    qkv: Block
    wo: Block
    w1: Block
    w2: Block
    scales: dict
    eps: float


def calibrate_encoder(w, shape, samples, eps=1e-12):
    """Quantize one encoder layer; activation scales from the float layer run on
    ``samples`` (a list of ``(x, mask)`` pairs)."""
    stats = {}
    for x, mask in samples:
        inter = _intermediates(np.asarray(x, np.float32), w, shape, eps, pre_ln=False,
                               mask=mask)
        for key, t in inter.items():
            stats.setdefault(key, []).append(t)
    return _quantize(w, shape, stats, eps)


def _quantize(w, shape, stats, eps):
    """Scales, smoothing and int8 weights of a layer from calibration statistics."""
    scales = {key: TENSOR_HEADROOM * act_scale(*ts) for key, ts in stats.items()}
    scales["p"] = 1.0 / 127.0                       # probabilities in [0, 1]
    for key in ("a", "f1", "f2"):                   # outputs that go back to the host
        scales[key] = CHANNEL_HEADROOM * channel_scales(*stats[key])
    wqkv = np.concatenate([w.wq, w.wk, w.wv], axis=1)
    blocks = {}
    for key, name, wm, bias in (("x", "qkv", wqkv, np.concatenate([w.bq, w.bk, w.bv])),
                                ("h", "w1", w.w1, w.b1), ("g", "w2", w.w2, w.b2)):
        f = smoothing(stats[key], wm, ALPHA[key])
        scales["smooth_" + key] = f
        scales[key] = TENSOR_HEADROOM * act_scale(*(np.asarray(t) / f for t in stats[key]))
        blocks[name] = Block(quantize_linear(wm * f[:, None], bias))
    return QuantLayer(shape=shape, w=w, qkv=blocks["qkv"], wo=Block(quantize_linear(w.wo, w.bo)),
                w1=blocks["w1"], w2=blocks["w2"], scales=scales, eps=eps)


# ---- device helpers --------------------------------------------------------------------------

def _params(dev, block, s_in, s_out):
    """Parameter sets of a linear block for input scale ``s_in`` and output ``s_out``
    (per channel: an array or one scalar)."""
    bq, mult, shift = requant_params(s_in, block.ql.w_scale, s_out, block.ql.b)
    return dev.put(pack_params(bq, mult, shift, dev.cfg))


def _scaled_params(dev, n, factor):
    """Parameter sets of ``n`` channels with no bias and one real factor."""
    from .requant import quantize_multiplier
    m, s = quantize_multiplier(factor)
    return dev.put(pack_params(np.zeros(n, np.int64), np.full(n, m), np.full(n, s), dev.cfg))


def _out_region(dev, M, N):
    nt = -(-N // dev.cfg.cols)
    return dev.alloc(nt * M * dev.cfg.cols)


def _read_out(dev, addr, M, N):
    nt = -(-N // dev.cfg.cols)
    return unpack_out(dev.read(addr, nt * M * dev.cfg.cols), M, N, dev.cfg)


def _attention(dev, q_addr, k_int8, v_w_addr, Sq, Sk, shape, sc, bias, ctx_addr):
    """Scores on the device, softmax on the host, ``P @ V`` on the device.

    ``q_addr``: Q (``Sq`` padded rows x hidden, n-tile-major). ``k_int8``: K on the host
    (``Sk`` rows). ``v_w_addr``: V as a packed weight matrix (``Sk`` x hidden). Writes the
    context to ``ctx_addr`` (n-tile-major, ``Sq`` x hidden) in scale ``sc['ctx']``.
    """
    cfg = dev.cfg
    C = cfg.cols
    H, heads = shape.hidden, shape.heads
    d = H // heads
    if d % C:
        raise ValueError(f"head size {d} must be a multiple of the array width {C}")
    # K^T per head, laid out as weights by the host (the one transpose of the layer).
    kt_addrs = [dev.put(pack_weights(k_int8[:, h * d:(h + 1) * d].T, cfg))
                for h in range(heads)]
    f_scores = sc["q"] * sc["k"] / (math.sqrt(d) * sc["scores"])
    s_params = _scaled_params(dev, Sk, f_scores)
    s_addr = [_out_region(dev, Sq, Sk) for _ in range(heads)]
    b = dev.builder()
    for h in range(heads):
        b.gemm(Gemm(Sq, d, Sk, q_addr + (h * d // C) * Sq * C, kt_addrs[h], s_params,
                    s_addr[h]))
    dev.call("attention scores", b)

    p_addr = []
    for h in range(heads):
        s = dequantize(_read_out(dev, s_addr[h], Sq, Sk), sc["scores"])
        p = L.softmax(s + bias, axis=-1)
        p_addr.append(dev.put(pack_acts(quantize_act(p, sc["p"]), cfg)))
    c_params = _scaled_params(dev, d, sc["p"] * sc["v"] / sc["ctx"])
    b = dev.builder()
    for h in range(heads):
        b.gemm(Gemm(Sq, Sk, d, p_addr[h], v_w_addr + (h * d // C) * Sk * C, c_params,
                    ctx_addr + (h * d // C) * Sq * C))
    return b


def encoder_forward(dev, qe, x, mask=None):
    """One encoder layer on the device. ``x`` float (seq, hidden), ``mask`` (seq,) of
    1 = token, 0 = pad. Returns the float output (seq, hidden)."""
    cfg, shape, sc = dev.cfg, qe.shape, qe.scales
    S, H = x.shape
    Sp = pad_len(S, cfg)
    keep = np.zeros(Sp, bool)
    keep[:S] = True if mask is None else np.asarray(mask, bool)
    bias = np.where(keep, 0.0, L.MASK_VALUE).astype(np.float32)[None, :]

    qkv_addr = _qkv(dev, qe, x, Sp)

    k_int8 = _read_out(dev, qkv_addr + (H // cfg.cols) * Sp * cfg.cols, Sp, H)
    ctx_addr = _out_region(dev, Sp, H)
    b = _attention(dev, qkv_addr, k_int8, qkv_addr + (2 * H // cfg.cols) * Sp * cfg.cols,
                   Sp, Sp, shape, sc, bias, ctx_addr)
    a_addr = _out_region(dev, Sp, H)
    b.gemm(Gemm(Sp, H, H, ctx_addr, qe.wo.upload(dev), _params(dev, qe.wo, sc["ctx"], sc["a"]),
                a_addr))
    dev.call("attention context + output projection", b)

    a = dequantize(_read_out(dev, a_addr, Sp, H), sc["a"])[:S]
    h = L.layer_norm(x + a, qe.w.ln1_g, qe.w.ln1_b, qe.eps)
    g = _ffn(dev, qe, h, Sp)
    y = L.layer_norm(h + g, qe.w.ln2_g, qe.w.ln2_b, qe.eps)
    return y.astype(np.float32)


def _padded_int8(x, key, sc, Sp):
    """A host tensor ``x`` (seq, width), smoothed and quantized as GEMM input ``key``,
    zero-padded to ``Sp`` rows."""
    xq = np.zeros((Sp, x.shape[1]), np.int8)
    xq[:len(x)] = quantize_act(x / sc["smooth_" + key], sc[key])
    return xq


def _host_linear(dev, q, name, x, key, block, out_key, Sp):
    """One device call: host tensor ``x`` through ``block`` of layer ``q``; the float
    result comes back (dequantized per channel)."""
    cfg, sc = dev.cfg, q.scales
    N = block.ql.n
    x_addr = dev.put(pack_acts(_padded_int8(x, key, sc, Sp), cfg))
    y_addr = _out_region(dev, Sp, N)
    b = dev.builder()
    b.gemm(Gemm(Sp, x.shape[1], N, x_addr, block.upload(dev),
                _params(dev, block, sc[key], sc[out_key]), y_addr))
    dev.call(name, b)
    return dequantize(_read_out(dev, y_addr, Sp, N), sc[out_key])[:len(x)]


def _ffn(dev, q, h, Sp):
    """FFN on the device with GELU on the host; returns the float FFN output."""
    f1 = _host_linear(dev, q, "ffn up", h, "h", q.w1, "f1", Sp)
    return _host_linear(dev, q, "ffn down", L.gelu(f1), "g", q.w2, "f2", Sp)


def _qkv(dev, q, x, Sp):
    """Q, K and V of host tensor ``x`` in one device call; returns their address."""
    cfg, sc = dev.cfg, q.scales
    H = x.shape[1]
    x_addr = dev.put(pack_acts(_padded_int8(x, "x", sc, Sp), cfg))
    s_qkv = np.concatenate([np.full(H, sc["q"]), np.full(H, sc["k"]), np.full(H, sc["v"])])
    qkv_addr = _out_region(dev, Sp, 3 * H)
    b = dev.builder()
    b.gemm(Gemm(Sp, H, 3 * H, x_addr, q.qkv.upload(dev), _params(dev, q.qkv, sc["x"], s_qkv),
                qkv_addr))
    dev.call("qkv projection", b)
    return qkv_addr


# ---- decoder (pre-LN, causal, KV cache) ---------------------------------------------------------

def calibrate_decoder(w, shape, samples, eps=1e-5):
    """Quantize one decoder layer from float runs of its prefill on ``samples``."""
    stats = {}
    for x in samples:
        x = np.asarray(x, np.float32)
        inter = _intermediates(x, w, shape, eps, pre_ln=True)
        for key, t in inter.items():
            stats.setdefault(key, []).append(t)
    return _quantize(w, shape, stats, eps)


@dataclass
class KVCache:
    """int8 K and V of every position so far, on the host (K) and as V rows."""
    k: np.ndarray
    v: np.ndarray


def _decoder_step(dev, qd, x, cache, start):
    """Positions ``start..start+len(x)-1`` attend causally to the cache plus themselves."""
    cfg, shape, sc = dev.cfg, qd.shape, qd.scales
    S, H = x.shape
    Sp = pad_len(S, cfg)
    n1 = L.layer_norm(x, qd.w.ln1_g, qd.w.ln1_b, qd.eps)
    qkv_addr = _qkv(dev, qd, n1, Sp)
    qkv = _read_out(dev, qkv_addr, Sp, 3 * H)[:S]
    k_all = np.concatenate([cache.k, qkv[:, H:2 * H]]) if cache else qkv[:, H:2 * H]
    v_all = np.concatenate([cache.v, qkv[:, 2 * H:]]) if cache else qkv[:, 2 * H:]
    T = len(k_all)
    Tp = pad_len(T, cfg)
    k_pad = np.zeros((Tp, H), np.int8)
    k_pad[:T] = k_all
    v_pad = np.zeros((Tp, H), np.int8)
    v_pad[:T] = v_all
    v_addr = dev.put(pack_weights(v_pad, cfg))
    # Causal: query i (absolute start + i) sees keys 0..start + i; padded keys never.
    qi = np.arange(Sp)[:, None] + start
    kj = np.arange(Tp)[None, :]
    bias = np.where((kj <= qi) & (kj < T), 0.0, L.MASK_VALUE).astype(np.float32)
    ctx_addr = _out_region(dev, Sp, H)
    b = _attention(dev, qkv_addr, k_pad, v_addr, Sp, Tp, shape, sc, bias, ctx_addr)
    a_addr = _out_region(dev, Sp, H)
    b.gemm(Gemm(Sp, H, H, ctx_addr, qd.wo.upload(dev), _params(dev, qd.wo, sc["ctx"], sc["a"]),
                a_addr))
    dev.call("attention context + output projection", b)
    a = dequantize(_read_out(dev, a_addr, Sp, H), sc["a"])[:S]
    h = x + a
    n2 = L.layer_norm(h, qd.w.ln2_g, qd.w.ln2_b, qd.eps)
    y = h + _ffn(dev, qd, n2, Sp)
    return y.astype(np.float32), KVCache(k=k_all, v=v_all)


def decoder_prefill(dev, qd, x):
    """Prefill: all of ``x`` (seq, hidden) with a causal mask; returns ``(y, cache)``."""
    return _decoder_step(dev, qd, np.asarray(x, np.float32), None, 0)


def decoder_decode(dev, qd, x_new, cache):
    """One new position against the cache; returns ``(y_new, cache)``."""
    x_new = np.asarray(x_new, np.float32).reshape(1, -1)
    return _decoder_step(dev, qd, x_new, cache, len(cache.k))
