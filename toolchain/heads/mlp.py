"""A small MLP (one ReLU hidden layer) trained with Adam and early stopping on a held-out
slice of train, so that validation stays untouched for model selection."""

from __future__ import annotations

import numpy as np

from ..data.dataset import stratified_carve
from .base import Head, accuracy
from .dense import DenseLayer


class SmallMLP(Head):
    name = "mlp"

    def __init__(self, size: int, seed: int = 0, max_epochs: int = 30, patience: int = 3,
                 lr: float = 1e-3, weight_decay: float = 1e-4, dropout: float = 0.1) -> None:
        super().__init__(size, seed)
        self.max_epochs, self.patience = max_epochs, patience
        self.lr, self.weight_decay, self.dropout = lr, weight_decay, dropout
        self.epochs_run = 0

    def fit(self, x, y, n_classes):
        import torch

        torch.manual_seed(self.seed)
        keep, held = stratified_carve(y, 0.1, self.seed)
        xt = torch.from_numpy(np.ascontiguousarray(x[keep], dtype=np.float32))
        yt = torch.from_numpy(y[keep].astype(np.int64))
        xv, yv = x[held], y[held]
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], self.size), torch.nn.ReLU(), torch.nn.Dropout(self.dropout),
            torch.nn.Linear(self.size, n_classes),
        )
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        batch = 128 if len(xt) < 20000 else 512
        best, best_state, stale = -1.0, None, 0
        for epoch in range(self.max_epochs):
            net.train()
            for idx in torch.randperm(len(xt), generator=gen).split(batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
                opt.step()
            self.layers = self._dense(net)
            score = accuracy(self.predict(xv), yv)
            self.epochs_run = epoch + 1
            if score > best:
                best, best_state, stale = score, self.layers, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.layers = best_state
        return self

    @staticmethod
    def _dense(net) -> list[DenseLayer]:
        l1, l2 = net[0], net[3]
        return [
            DenseLayer(l1.weight.detach().numpy().copy(), l1.bias.detach().numpy().copy(), "relu"),
            DenseLayer(l2.weight.detach().numpy().copy(), l2.bias.detach().numpy().copy()),
        ]
