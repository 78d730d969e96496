"""Single-hidden-layer feed-forward net trained in closed form (ELM / random-feature SLFN):
a fixed random ReLU hidden layer, then a ridge-regression output layer on one-hot targets.
No gradient steps at all, which is why it suits training on the edge.

The output layer solves normal equations whose terms are sums over rows, so ``fit_stream``
accumulates them block by block (heads/stream.py): the same solution as ``fit`` on the whole
array, for training sets larger than memory."""

from __future__ import annotations

import numpy as np

from .base import Head
from .dense import DenseLayer
from .stream import ArrayRows, NormalEquations, RowSource


class ClosedFormSLFN(Head):
    name = "elm"

    def __init__(self, size: int, seed: int = 0, ridge: float = 1.0) -> None:
        super().__init__(size, seed)
        self.ridge = ridge

    def hidden_layer(self, d: int) -> DenseLayer:
        rng = np.random.default_rng(self.seed)
        # Scaled so that pre-activations of standardised inputs have unit variance.
        w1 = (rng.standard_normal((self.size, d)) / np.sqrt(d)).astype(np.float32)
        b1 = rng.standard_normal(self.size).astype(np.float32) * 0.5
        return DenseLayer(w1, b1, "relu")

    def fit(self, x, y, n_classes):
        return self.fit_stream(ArrayRows(x, y, block_rows=max(1, len(x))), n_classes)

    def fit_stream(self, rows: RowSource, n_classes: int) -> ClosedFormSLFN:
        hidden = self.hidden_layer(rows.dim)
        eq = NormalEquations(self.size, n_classes)
        for x, y in rows:
            eq.update(hidden(x), y)
        beta = eq.solve(self.ridge / 100.0)
        self.layers = [hidden, DenseLayer(beta[:-1].T.astype(np.float32), beta[-1].astype(np.float32))]
        return self
