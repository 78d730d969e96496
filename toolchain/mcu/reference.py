"""numpy integer reference, bit-exact with ``firmware_stubs/src/kernels.c``.

All arithmetic is int64 on values the C keeps in int32: the quantizer guarantees the C
accumulators never overflow, so the two agree exactly.
"""

from __future__ import annotations

import zlib

import numpy as np

from .quantize import QuantizedHead, QuantizedLayer

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul; C's division truncates toward zero."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ab = a * b
    s = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    q = np.where(s >= 0, s >> 31, -((-s) >> 31))
    return np.where((a == _I32_MIN) & (b == _I32_MIN), _I32_MAX, q)


def rdbpot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT (round half away from zero)."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def requantize(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> np.ndarray:
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    v = np.clip(np.asarray(acc, dtype=np.int64) << left, _I32_MIN, _I32_MAX)
    return rdbpot(srdhm(v, multiplier), right)


def dense_int8(layer: QuantizedLayer, x_q: np.ndarray) -> np.ndarray:
    """[N, in] int8 -> [N, out] int8, exactly as cs_dense_s8."""
    acc = x_q.astype(np.int64) @ layer.weight.astype(np.int64).T + layer.bias.astype(np.int64)
    r = np.clip(requantize(acc, layer.multiplier, layer.shift), -256, 255) + layer.output_zero_point
    lo = layer.output_zero_point if layer.activation == "relu" else -128
    return np.clip(r, lo, 127).astype(np.int8)


def run_int8(head: QuantizedHead, x_q: np.ndarray) -> np.ndarray:
    """int8 logits of the head for int8 inputs [in] or [N, in] (quantize with
    ``head.quantize_input`` first)."""
    x = np.asarray(x_q, dtype=np.int8)
    single = x.ndim == 1
    x = x.reshape(1, -1) if single else x
    for layer in head.layers:
        x = dense_int8(layer, x)
    return x[0] if single else x


def selfcheck_crc(head: QuantizedHead) -> int:
    """CRC32 of the int8 outputs of the reference inputs, concatenated (cmd_selfcheck)."""
    crc = 0
    for row in head.reference_inputs:
        crc = zlib.crc32(run_int8(head, row).tobytes(), crc)
    return crc
