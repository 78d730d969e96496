"""Depth-0 whole model for the MCU: token ids -> int8 head input, integer only, bit-exact with
``firmware_stubs/src/depth0.c``.

The host's depth-0 feature is hidden state 0 of the backbone mean-pooled over the attention
mask: ``mean_t LayerNorm(word[id_t] + position[t] + token_type[0])``. Here:

* **Tables.** The kept word rows (pruned vocabulary, new-id order; :mod:`toolchain.export.vocab`)
  are int8 per tensor at ``word_scale``; the position rows for ``t < max_len`` with token type 0
  folded in (every input is one segment) are int8 per tensor at their own ``pos_scale``. With
  ``u = max(word_scale, pos_scale) / 256``, ``x = word_mult * word + pos_mult * position``
  (``word_mult = round(word_scale / u)``, ``pos_mult = round(pos_scale / u)``, both 1..256) is
  the embedding sum in units of ``u``, and LayerNorm is scale-invariant: ``u`` never enters the
  arithmetic. (A shared scale, position at an integer multiple of the word scale, cost 1.2 points
  on trec; the position rows are where int8 loses most.) Bytes: ``K * D + max_len * D`` int8
  plus ``8 * D`` for gain/offset.
* **LayerNorm, integer** (no float on the device: the Cortex-M builds use the soft-float ABI
  and no libm, and integers make C and Python agree by construction). Per token, with
  ``c = D * x - sum(x)`` (D times the centred value) and ``q = sum(c * c)``:
  ``R = isqrt(q // D)`` is D x the standard deviation (in units of ``u``: ample precision),
  ``inv = 2**40 // R``, and the normalised value in Q12 is ``(c * inv + 2**27) >> 28``. LayerNorm's ``eps`` (1e-12 in
  float units) is dropped: it is below int8 resolution; a token whose ``x`` is constant gives 0.
* **Pooling and the head's input quantisation, folded.** ``S = sum_t n_t`` (Q12, int32); per
  dimension ``m = round_half_away(S * gain / T)`` and the head input is
  ``clamp((m + offset + 2**(shift-1)) >> shift, -128, 127)``, where ``gain`` and ``offset`` (int32,
  Q``shift``) hold LayerNorm's weight and bias, the head's feature standardisation (mean, std)
  and its input scale and zero point.

Every intermediate stays within int64 (``q`` below 2**59, ``c * inv`` below 2**57), which the
C code uses too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import QuantizationError

Q_NORM = 12  # fraction bits of the normalised per-token values
_INV_BITS, _NORM_SHIFT = 40, 28  # n = c * 2^Q_NORM / R, see above
UNIT_STEPS = 256  # the larger table's multiplier


@dataclass(frozen=True)
class FloatEmbeddings:
    """The backbone's embedding block in float32 (the word table already pruned)."""

    word: np.ndarray  # [K, D]
    position: np.ndarray  # [P, D]
    token_type: np.ndarray  # [2, D]
    ln_weight: np.ndarray  # [D]
    ln_bias: np.ndarray  # [D]
    eps: float

    @property
    def dim(self) -> int:
        return int(self.word.shape[1])


@dataclass(frozen=True, eq=False)
class Depth0Tables:
    word: np.ndarray  # int8 [K, D]
    position: np.ndarray  # int8 [max_len, D], token type 0 folded in
    word_mult: int  # word scale / u
    pos_mult: int  # position scale / u
    word_scale: float
    gain: np.ndarray  # int32 [D], Q(shift)
    offset: np.ndarray  # int32 [D], Q(shift), head input zero point included
    shift: int

    @property
    def dim(self) -> int:
        return int(self.word.shape[1])

    @property
    def max_len(self) -> int:
        return int(self.position.shape[0])

    @property
    def nbytes(self) -> int:
        """Exact bytes of the tables the firmware stores (int8 rows, int32 gain and offset)."""
        return self.word.size + self.position.size + 8 * self.dim

    @property
    def scratch_bytes(self) -> int:
        """RAM the C code needs per inference: int32 pooled sums and int32 centred values."""
        return 8 * self.dim


def load_embeddings(model_dir: Path, kept: np.ndarray | None = None) -> FloatEmbeddings:
    """The embedding block of a BERT-family ``model.safetensors``; ``kept``: the pruned vocabulary's
    old ids (``VocabPruning.kept``), or None for every row."""
    import json

    from safetensors.numpy import load_file

    tensors = load_file(str(Path(model_dir) / "model.safetensors"))

    def get(name: str) -> np.ndarray:
        for key in (f"embeddings.{name}", f"bert.embeddings.{name}"):
            if key in tensors:
                return np.asarray(tensors[key], dtype=np.float32)
        raise QuantizationError(f"{model_dir} has no embeddings.{name}; not a BERT-family model")

    word = get("word_embeddings.weight")
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    return FloatEmbeddings(
        word=word if kept is None else word[np.asarray(kept)],
        position=get("position_embeddings.weight"),
        token_type=get("token_type_embeddings.weight"),
        ln_weight=get("LayerNorm.weight"),
        ln_bias=get("LayerNorm.bias"),
        eps=float(config.get("layer_norm_eps", 1e-12)),
    )


def float_features(emb: FloatEmbeddings, ids: Sequence[int]) -> np.ndarray:
    """The host's fp32 depth-0 feature for one unpadded id sequence: LayerNorm per token, mean."""
    ids = np.asarray(ids, dtype=np.int64)
    x = emb.word[ids] + emb.position[: len(ids)] + emb.token_type[0]
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    h = (x - mu) / np.sqrt(var + emb.eps) * emb.ln_weight + emb.ln_bias
    return h.mean(axis=0).astype(np.float32)


def quantize_depth0(
    emb: FloatEmbeddings,
    max_len: int,
    feature_mean: np.ndarray,
    feature_std: np.ndarray,
    input_scale: float,
    input_zero_point: int,
) -> Depth0Tables:
    """int8 tables for ``emb`` and the folded pooling/standardisation for a head whose input is
    ``(feature - feature_mean) / feature_std`` quantised at (``input_scale``, ``input_zero_point``)."""
    d = emb.dim
    if not 2 <= max_len <= emb.position.shape[0]:
        raise QuantizationError(f"max_len {max_len} outside 2..{emb.position.shape[0]}")
    pos = emb.position[:max_len] + emb.token_type[0]
    w_abs, p_abs = float(np.abs(emb.word).max()), float(np.abs(pos).max())
    if w_abs <= 0 or p_abs <= 0:
        raise QuantizationError("the word or position embedding table is all zeros")
    word_scale, pos_scale = w_abs / 127.0, p_abs / 127.0
    unit = max(word_scale, pos_scale) / UNIT_STEPS
    word_mult = max(1, round(word_scale / unit))
    pos_mult = max(1, round(pos_scale / unit))
    word_q = np.clip(np.rint(emb.word / word_scale), -127, 127).astype(np.int8)
    pos_q = np.clip(np.rint(pos / pos_scale), -127, 127).astype(np.int8)

    std = np.asarray(feature_std, dtype=np.float64)
    if std.shape != (d,) or np.any(std <= 0) or input_scale <= 0:
        raise QuantizationError("feature std must be [dim] and positive, and the input scale > 0")
    gain = emb.ln_weight.astype(np.float64) / (2.0**Q_NORM * std * input_scale)
    offset = (emb.ln_bias - np.asarray(feature_mean, np.float64)) / (std * input_scale)
    offset = offset + input_zero_point
    top = max(float(np.abs(gain).max()), float(np.abs(offset).max()) + 1.0, 1e-30)
    shift = int(min(40, 30 - math.ceil(math.log2(top))))
    if shift < 1:
        raise QuantizationError(f"depth-0 gain/offset too large for int32 (max {top:.3g})")
    return Depth0Tables(
        word=word_q,
        position=pos_q,
        word_mult=word_mult,
        pos_mult=pos_mult,
        word_scale=word_scale,
        gain=np.rint(gain * 2.0**shift).astype(np.int32),
        offset=np.rint(offset * 2.0**shift).astype(np.int32),
        shift=shift,
    )


def normalised_q12(tables: Depth0Tables, ids: Sequence[int]) -> np.ndarray:
    """Integer LayerNorm (without its weight and bias) of every token, Q12 int64 [T, D]."""
    ids = np.asarray(ids, dtype=np.int64)
    t = len(ids)
    x = (tables.word_mult * tables.word[ids].astype(np.int64)
         + tables.pos_mult * tables.position[:t].astype(np.int64))
    d = x.shape[1]
    c = d * x - x.sum(axis=1, keepdims=True)
    q = (c * c).sum(axis=1)
    out = np.zeros_like(c)
    for row in range(t):
        if q[row] == 0:
            continue
        r = math.isqrt(int(q[row]) // d)
        inv = (1 << _INV_BITS) // r
        out[row] = (c[row] * inv + (1 << (_NORM_SHIFT - 1))) >> _NORM_SHIFT
    return out


def _div_round(a: np.ndarray, n: int) -> np.ndarray:
    """a / n rounded half away from zero, as the C code's integer division does it."""
    half = n // 2
    return np.where(a >= 0, (a + half) // n, -((-a + half) // n))


def features_int8(tables: Depth0Tables, ids: Sequence[int]) -> np.ndarray:
    """The int8 head input the firmware computes for one id sequence ([CLS] ... [SEP])."""
    ids = list(ids)
    if not 1 <= len(ids) <= tables.max_len:
        raise QuantizationError(f"{len(ids)} ids; the tables hold 1..{tables.max_len}")
    s = normalised_q12(tables, ids).sum(axis=0)
    m = _div_round(s * tables.gain.astype(np.int64), len(ids))
    v = (m + tables.offset.astype(np.int64) + (1 << (tables.shift - 1))) >> tables.shift
    return np.clip(v, -128, 127).astype(np.int8)


def classify_int8(tables: Depth0Tables, head, ids: Sequence[int]) -> np.ndarray:
    """The whole depth-0 model's int8 logits for one id sequence (features, then the int8 head)."""
    from .reference import run_int8

    return run_int8(head, features_int8(tables, ids))
