"""Small seeded random transformer layers for tests and quick runs.

``bert_tiny`` and ``gpt_tiny`` are one layer each of hidden 64, 4 heads (head_dim 16) and
FFN 256. The weights are drawn so that activations stay well conditioned (unit-scale, no
outliers) while attention is far from uniform, which a quantized path must reproduce:

* projection matrices ``W`` ``(in, out)``: ``N(0, 1 / sqrt(in))``, so a unit-variance input
  gives unit-variance outputs and attention scores ``q.k / sqrt(head_dim)`` of about unit
  spread (with the BERT-style ``N(0, 0.02)`` at this width the scores would be ~0.03 and
  every softmax nearly uniform, which would hide attention bugs);
* biases: ``N(0, 0.02)``;
* LayerNorm gains ``1 + N(0, 0.1)``, biases ``N(0, 0.02)``.

All arrays are float32 and reproducible from ``seed`` (numpy's PCG64 generator).
"""

import numpy as np

from .layers import DecoderWeights, EncoderWeights, LayerShape

__all__ = ["TINY_SHAPE", "bert_tiny", "gpt_tiny", "random_inputs"]

#: Geometry of the tiny synthetic layers.
TINY_SHAPE = LayerShape(hidden=64, heads=4, ffn=256)


def _random_fields(rng, shape):
    h, f = shape.hidden, shape.ffn

    def matrix(n_in, n_out):
        return rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_in, n_out))

    def bias(n):
        return rng.normal(0.0, 0.02, size=n)

    def gain(n):
        return 1.0 + rng.normal(0.0, 0.1, size=n)

    return dict(
        wq=matrix(h, h), bq=bias(h), wk=matrix(h, h), bk=bias(h),
        wv=matrix(h, h), bv=bias(h), wo=matrix(h, h), bo=bias(h),
        ln1_g=gain(h), ln1_b=bias(h),
        w1=matrix(h, f), b1=bias(f), w2=matrix(f, h), b2=bias(h),
        ln2_g=gain(h), ln2_b=bias(h),
    )


def bert_tiny(seed=0):
    """A random post-LN encoder layer: ``(EncoderWeights, LayerShape(64, 4, 256))``,
    ready for :func:`sw.models.layers.encoder_layer`."""
    rng = np.random.default_rng([0xBE27, seed])
    return EncoderWeights(**_random_fields(rng, TINY_SHAPE)).check(TINY_SHAPE), TINY_SHAPE


def gpt_tiny(seed=0):
    """A random pre-LN decoder layer: ``(DecoderWeights, LayerShape(64, 4, 256))``, ready
    for :func:`sw.models.layers.decoder_prefill` and ``decoder_decode``."""
    rng = np.random.default_rng([0x6B7, seed])
    return DecoderWeights(**_random_fields(rng, TINY_SHAPE)).check(TINY_SHAPE), TINY_SHAPE


def random_inputs(shape, seq, seed=0, batch=None):
    """Float32 activations ``N(0, 1)`` of shape ``(seq, hidden)``, or
    ``(batch, seq, hidden)`` when ``batch`` is given."""
    rng = np.random.default_rng([0x1A7, seed])
    size = (seq, shape.hidden) if batch is None else (batch, seq, shape.hidden)
    return rng.standard_normal(size).astype(np.float32)
