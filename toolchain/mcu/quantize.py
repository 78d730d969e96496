"""Float dense head -> int8 per-channel quantized head (TFLite integer-only scheme).

Activations are asymmetric int8 per tensor, ranges from calibration features; weights are
symmetric int8 per output channel; biases int32 at scale ``s_in * s_w``; each output channel
requantises with a Q31 multiplier and a power-of-two shift. The input zero point is folded
into the bias (``bias - zp_in * sum(w)``) so the kernel's inner loop is a plain int8 dot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import QuantizationError
from ..heads.dense import DenseLayer

INT32_MAX = 2**31 - 1


@dataclass(frozen=True, eq=False)
class QuantizedLayer:
    weight: np.ndarray  # int8 [out, in]
    bias: np.ndarray  # int32 [out], input zero point folded in
    multiplier: np.ndarray  # int32 [out], Q31
    shift: np.ndarray  # int32 [out]; > 0 left shift, <= 0 rounding right shift
    activation: str  # "none" | "relu" (fused as a clamp at the output zero point)
    weight_scale: np.ndarray  # float32 [out]
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def nbytes(self) -> int:
        """int8 weights plus int32 bias, multiplier and shift per output channel."""
        return self.in_features * self.out_features + 12 * self.out_features


@dataclass(frozen=True, eq=False)
class QuantizedHead:
    layers: tuple[QuantizedLayer, ...]
    reference_inputs: np.ndarray  # int8 [K, in_dim]: what the firmware self-check runs

    @property
    def in_dim(self) -> int:
        return self.layers[0].in_features

    @property
    def out_dim(self) -> int:
        return self.layers[-1].out_features

    @property
    def input_scale(self) -> float:
        return self.layers[0].input_scale

    @property
    def input_zero_point(self) -> int:
        return self.layers[0].input_zero_point

    @property
    def output_scale(self) -> float:
        return self.layers[-1].output_scale

    @property
    def output_zero_point(self) -> int:
        return self.layers[-1].output_zero_point

    @property
    def weight_bytes(self) -> int:
        """Exact bytes of parameters the firmware stores (blob header and padding excluded)."""
        return sum(layer.nbytes for layer in self.layers)

    @property
    def activation_bytes(self) -> int:
        """Peak live int8 activations: one layer's input and output buffers at once."""
        return max(layer.in_features + layer.out_features for layer in self.layers)

    @property
    def scratch_bytes(self) -> int:
        """The kernel accumulates one output at a time in a register: no scratch buffer."""
        return 0

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Standardized float features [.., in_dim] -> int8 as the firmware expects them."""
        return _quantize(np.asarray(x, dtype=np.float64), self.input_scale, self.input_zero_point)

    def dequantize_output(self, q: np.ndarray) -> np.ndarray:
        return (
            (np.asarray(q, dtype=np.float64) - self.output_zero_point) * self.output_scale
        ).astype(np.float32)


def _quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.rint(x / scale) + zero_point, -128, 127).astype(np.int8)


def activation_params(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi]; the range always includes 0 so
    that 0.0 (ReLU's floor, zero padding) is exactly representable."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise QuantizationError(f"calibration range [{lo}, {hi}] is not finite; check the features")
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zero_point


def quantize_multiplier(real: float) -> tuple[int, int]:
    """real ~= multiplier * 2**(shift - 31) with multiplier in [2**30, 2**31) (TFLite)."""
    if real <= 0.0:
        return 0, 0
    q, exponent = math.frexp(real)
    q_fixed = int(math.floor(q * (1 << 31) + 0.5))  # half away from zero, as std::round
    if q_fixed == 1 << 31:
        q_fixed //= 2
        exponent += 1
    if exponent < -31:
        return 0, 0  # below int32 resolution: the channel outputs its zero point
    if exponent > 30:
        raise QuantizationError(
            f"requantisation multiplier {real:.3g} is too large for int32 arithmetic; "
            "the layer's output range is degenerate, calibrate with more varied features"
        )
    return q_fixed, exponent


def _calibration_ranges(layers: Sequence[DenseLayer], x: np.ndarray) -> list[tuple[float, float]]:
    ranges = [(float(x.min()), float(x.max()))]
    for layer in layers:
        x = layer(x)
        ranges.append((float(x.min()), float(x.max())))
    return ranges


def _quantize_layer(
    layer: DenseLayer, index: int, in_params: tuple[float, int], out_params: tuple[float, int]
) -> QuantizedLayer:
    w = np.asarray(layer.weight, dtype=np.float64)
    b = np.asarray(layer.bias, dtype=np.float64).reshape(-1)
    if w.ndim != 2 or b.shape[0] != w.shape[0]:
        raise QuantizationError(
            f"layer {index}: weight {w.shape} and bias {b.shape} do not form a dense layer"
        )
    if layer.activation not in ("none", "relu"):
        raise QuantizationError(
            f"layer {index}: activation {layer.activation!r} has no int8 kernel"
        )
    s_in, zp_in = in_params
    s_out, zp_out = out_params
    absmax = np.abs(w).max(axis=1)
    w_scale = np.where(absmax > 0, absmax / 127.0, 1.0)
    w_q = np.clip(np.rint(w / w_scale[:, None]), -127, 127).astype(np.int64)
    b_q = np.rint(b / (s_in * w_scale)).astype(np.int64)
    folded = b_q - zp_in * w_q.sum(axis=1)
    # Worst case of the int32 accumulator on the device: the C kernel must never overflow.
    worst = np.abs(folded) + 128 * np.abs(w_q).sum(axis=1)
    if worst.max() > INT32_MAX:
        raise QuantizationError(
            f"layer {index}: int32 accumulator could overflow (worst case {int(worst.max())}); "
            "standardize the features or shrink the layer"
        )
    mults, shifts = zip(*(quantize_multiplier(s_in * s / s_out) for s in w_scale), strict=True)
    return QuantizedLayer(
        weight=w_q.astype(np.int8),
        bias=folded.astype(np.int32),
        multiplier=np.asarray(mults, dtype=np.int32),
        shift=np.asarray(shifts, dtype=np.int32),
        activation=layer.activation,
        weight_scale=w_scale.astype(np.float32),
        input_scale=s_in,
        input_zero_point=zp_in,
        output_scale=s_out,
        output_zero_point=zp_out,
    )


def quantize_head(
    layers: Sequence[DenseLayer], calibration: np.ndarray, *, n_reference: int = 8
) -> QuantizedHead:
    """Quantize a float head. ``calibration`` holds head inputs (standardized features) [N, in];
    ``n_reference`` of its rows, spread evenly, become the firmware self-check inputs."""
    if not layers:
        raise QuantizationError("cannot quantize an empty head; give at least one DenseLayer")
    x = np.asarray(calibration, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != np.asarray(layers[0].weight).shape[1]:
        raise QuantizationError(
            f"calibration features must be [N>0, {np.asarray(layers[0].weight).shape[1]}], "
            f"got {x.shape}"
        )
    params = [activation_params(lo, hi) for lo, hi in _calibration_ranges(layers, x)]
    qlayers = tuple(
        _quantize_layer(layer, i, params[i], params[i + 1]) for i, layer in enumerate(layers)
    )
    picks = np.unique(np.linspace(0, x.shape[0] - 1, num=min(n_reference, x.shape[0])).astype(int))
    refs = (
        _quantize(x[picks], *params[0]) if n_reference > 0 else np.zeros((0, x.shape[1]), np.int8)
    )
    return QuantizedHead(layers=qlayers, reference_inputs=refs)
