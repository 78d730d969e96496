"""Multinomial softmax regression with L2, fitted full-batch with L-BFGS (convex: one optimum)."""

from __future__ import annotations

import numpy as np

from .base import Head
from .dense import DenseLayer


def fit_softmax_torch(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float, max_iter: int = 80):
    """Weights [C, d] and bias [C] minimising mean cross-entropy + l2/2 ||W||²."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w.T + b, yt) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy().copy(), b.detach().numpy().copy()


def fit_softmax_stream(rows, n_classes: int, l2: float, max_iter: int = 80):
    """The same objective as ``fit_softmax_torch``, its loss and gradient summed over blocks
    (one pass over the rows per L-BFGS evaluation): a full-batch fit of rows larger than memory.
    Equal to the in-memory fit up to float32 summation order."""
    import torch

    n = len(rows)
    w = torch.zeros(n_classes, rows.dim, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        total = 0.0
        for x, y in rows:
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            part = torch.nn.functional.cross_entropy(xt @ w.T + b, torch.from_numpy(y.astype(np.int64)),
                                                     reduction="sum") / n
            part.backward()
            total += float(part.detach())
        reg = 0.5 * l2 * (w * w).sum()
        reg.backward()
        return torch.tensor(total + float(reg.detach()))

    opt.step(closure)
    return w.detach().numpy().copy(), b.detach().numpy().copy()


class SoftmaxRegression(Head):
    """``size`` is -log10 of the L2 strength (size 3 → λ = 1e-3), so bigger = less regularised."""

    name = "softmax"

    def fit(self, x, y, n_classes):
        w, b = fit_softmax_torch(x, y, n_classes, l2=10.0 ** (-self.size))
        self.layers = [DenseLayer(w, b)]
        return self

    def fit_stream(self, rows, n_classes):
        w, b = fit_softmax_stream(rows, n_classes, l2=10.0 ** (-self.size))
        self.layers = [DenseLayer(w, b)]
        return self
