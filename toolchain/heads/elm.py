"""Single-hidden-layer feed-forward net trained in closed form (ELM / random-feature SLFN):
a fixed random ReLU hidden layer, then a ridge-regression output layer on one-hot targets.
No gradient steps at all, which is why it suits training on the edge."""

from __future__ import annotations

import numpy as np

from .base import Head
from .dense import DenseLayer


class ClosedFormSLFN(Head):
    name = "elm"

    def __init__(self, size: int, seed: int = 0, ridge: float = 1.0) -> None:
        super().__init__(size, seed)
        self.ridge = ridge

    def fit(self, x, y, n_classes):
        rng = np.random.default_rng(self.seed)
        d = x.shape[1]
        # Scaled so that pre-activations of standardised inputs have unit variance.
        w1 = (rng.standard_normal((self.size, d)) / np.sqrt(d)).astype(np.float32)
        b1 = rng.standard_normal(self.size).astype(np.float32) * 0.5
        h = np.maximum(x @ w1.T + b1, 0.0).astype(np.float64)
        h1 = np.hstack([h, np.ones((len(h), 1))])
        t = np.eye(n_classes)[y] * 2.0 - 1.0
        gram = h1.T @ h1
        gram[np.diag_indices_from(gram)] += self.ridge * len(h) / 100.0
        beta = np.linalg.solve(gram, h1.T @ t)
        w2 = beta[:-1].T.astype(np.float32)
        b2 = beta[-1].astype(np.float32)
        self.layers = [DenseLayer(w1, b1, "relu"), DenseLayer(w2, b2)]
        return self
