"""Common shape of a trained head: fit on standardised features, predict, export as dense layers."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .dense import DenseLayer, run_dense


class Head(ABC):
    """A light classifier on cached features. Seeded: the same inputs give the same weights."""

    name: str = ""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.layers: list[DenseLayer] = []

    @abstractmethod
    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> Head: ...

    def fit_stream(self, rows, n_classes: int) -> Head:
        """Fit on a RowSource (heads/stream.py) read block by block, for rows larger than memory."""
        raise NotImplementedError(f"head {self.name!r} cannot be fitted on streamed rows")

    def logits(self, x: np.ndarray) -> np.ndarray:
        return run_dense(self.layers, x.astype(np.float32, copy=False))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(1)

    def proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    @property
    def n_params(self) -> int:
        return int(sum(layer.weight.size + layer.bias.size for layer in self.layers))

    @property
    def flops(self) -> int:
        """Multiply-adds ×2 of one inference."""
        return int(sum(2 * layer.weight.size for layer in self.layers))


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else 0.0


def macro_f1(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    scores = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (y == c))
        fp = np.sum((pred == c) & (y != c))
        fn = np.sum((pred != c) & (y == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))
