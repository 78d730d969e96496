"""A small MLP (one ReLU hidden layer) trained with Adam and early stopping on a held-out
slice of train, so that validation stays untouched for model selection.

Large training sets (≥ 20,000 rows, e.g. SST-2's 60,000 phrases) get a fixed budget of 8 epochs
with a linearly decaying learning rate from 3e-3 instead of up to 30 epochs at 1e-3: measured on
SST-2 features (one thread), 2.5-2.8× less fit time for validation accuracy within 0.5 points
(layer 5 mean: 26.7 → 10.3 s, 91.2 → 90.7 %; concat of layers 3-5: 60.7 → 21.8 s, 92.3 → 92.1 %).
The best epoch on the held-out slice is kept either way."""

from __future__ import annotations

import numpy as np

from ..data.dataset import stratified_carve
from .base import Head, accuracy
from .dense import DenseLayer


class SmallMLP(Head):
    name = "mlp"

    LARGE = 20_000  # training rows from which the short, decaying schedule is used
    LARGE_EPOCHS, LARGE_LR, LARGE_BATCH = 8, 3e-3, 512

    def __init__(self, size: int, seed: int = 0, max_epochs: int = 30, patience: int = 3,
                 lr: float = 1e-3, weight_decay: float = 1e-4, dropout: float = 0.1) -> None:
        super().__init__(size, seed)
        self.max_epochs, self.patience = max_epochs, patience
        self.lr, self.weight_decay, self.dropout = lr, weight_decay, dropout
        self.epochs_run = 0

    def fit(self, x, y, n_classes):
        import torch

        keep, held = stratified_carve(y, 0.1, self.seed)
        xt = torch.from_numpy(np.ascontiguousarray(x[keep], dtype=np.float32))
        return self._train(lambda idx: xt[idx], keep, y, x.shape[1], n_classes,
                           lambda: self.predict(x[held]), y[held])

    def fit_stream(self, rows, n_classes):
        """Minibatches gathered from ``rows`` (e.g. memory-mapped features): the same rows in
        the same order as ``fit`` on the whole array, so the same weights, with one minibatch
        and the held-out slice in memory at a time."""
        import torch

        y = np.asarray(rows.y)
        keep, held = stratified_carve(y, 0.1, self.seed)

        def batch(idx):
            return torch.from_numpy(np.ascontiguousarray(rows.take(keep[idx.numpy()]), dtype=np.float32))

        def held_predictions():
            return np.concatenate([self.predict(rows.take(held[i : i + 8192]))
                                   for i in range(0, len(held), 8192)]) if len(held) else np.empty(0)

        return self._train(batch, keep, y, rows.dim, n_classes, held_predictions, y[held])

    def _train(self, batch, keep, y, dim, n_classes, held_predictions, y_held):
        import torch

        torch.manual_seed(self.seed)
        yt = torch.from_numpy(y[keep].astype(np.int64))
        net = torch.nn.Sequential(
            torch.nn.Linear(dim, self.size), torch.nn.ReLU(), torch.nn.Dropout(self.dropout),
            torch.nn.Linear(self.size, n_classes),
        )
        n = len(keep)
        large = n >= self.LARGE
        epochs = min(self.max_epochs, self.LARGE_EPOCHS) if large else self.max_epochs
        size = self.LARGE_BATCH if large else 128
        opt = torch.optim.AdamW(net.parameters(), lr=self.LARGE_LR if large else self.lr,
                                weight_decay=self.weight_decay)
        total_steps = epochs * -(-n // size)
        decay = torch.optim.lr_scheduler.LambdaLR(
            opt, (lambda step: max(0.0, 1.0 - step / total_steps)) if large else (lambda step: 1.0))
        gen = torch.Generator().manual_seed(self.seed)
        best, best_state, stale = -1.0, None, 0
        for epoch in range(epochs):
            net.train()
            for idx in torch.randperm(n, generator=gen).split(size):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(batch(idx)), yt[idx]).backward()
                opt.step()
                decay.step()
            self.layers = self._dense(net)
            score = accuracy(held_predictions(), y_held)
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
