"""A head as plain dense layers: the form every exporter (ONNX, MCU int8) consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Activation = Literal["none", "relu"]


@dataclass(frozen=True)
class DenseLayer:
    """y = act(x @ weight.T + bias); weight is [out, in] float32."""

    weight: np.ndarray
    bias: np.ndarray
    activation: Activation = "none"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T + self.bias
        return np.maximum(y, 0.0) if self.activation == "relu" else y


def run_dense(layers: list[DenseLayer], x: np.ndarray) -> np.ndarray:
    """Logits of a stack of dense layers (float reference)."""
    for layer in layers:
        x = layer(x)
    return x
