"""Ridge regression on ±1 one-hot targets: the closed-form linear probe (the ELM's output layer
without a hidden layer). Its normal equations are sums over rows, so ``fit_stream`` fits it on
training sets larger than memory, exactly.

Not in the search's HEADS (softmax regression is its linear head); streamed fits and the scale
benchmark use it as the linear closed-form head."""

from __future__ import annotations

import numpy as np

from .base import Head
from .dense import DenseLayer
from .stream import ArrayRows, NormalEquations, RowSource


class RidgeClassifier(Head):
    """``size`` is -log10 of the ridge per row (size 3 → λ = 1e-3 · n on the weights)."""

    name = "ridge"

    def fit(self, x, y, n_classes):
        return self.fit_stream(ArrayRows(x, y, block_rows=max(1, len(x))), n_classes)

    def fit_stream(self, rows: RowSource, n_classes: int) -> RidgeClassifier:
        eq = NormalEquations(rows.dim, n_classes)
        for x, y in rows:
            eq.update(x, y)
        beta = eq.solve(10.0 ** (-self.size), bias_too=False)
        self.layers = [DenseLayer(beta[:-1].T.astype(np.float32), beta[-1].astype(np.float32))]
        return self
