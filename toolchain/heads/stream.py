"""Training rows that come block by block: the protocol streamed fits read, the in-memory
source, and the exact statistics that are summed over blocks (moments, normal equations).

A closed-form head's sufficient statistics are sums over rows (Σ hᵀh, Σ hᵀt; Σ x, Σ (x-μ)²), so
accumulating them chunk by chunk in float64 gives the in-memory fit up to the order of the
additions: exact, no approximation, and the partial sums of two machines add up the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

DEFAULT_BLOCK_ROWS = 8192


class RowSource(Protocol):
    """Training rows of one split: ``y`` (all labels, small), ``dim``, ``len()``, iteration as
    (x [n, dim] float32, y [n]) blocks in row order, and ``take(rows)`` in the order given."""

    y: np.ndarray
    dim: int

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def take(self, rows: np.ndarray) -> np.ndarray: ...


class ArrayRows:
    """An in-memory array as a RowSource, in blocks of ``block_rows``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, block_rows: int = DEFAULT_BLOCK_ROWS) -> None:
        self.x, self.y, self.block_rows = x, np.asarray(y), max(1, int(block_rows))
        self.dim = x.shape[1]

    def __len__(self) -> int:
        return len(self.x)

    def __iter__(self):
        for i in range(0, len(self.x), self.block_rows):
            yield self.x[i : i + self.block_rows], self.y[i : i + self.block_rows]

    def take(self, rows):
        return self.x[rows]


class Moments:
    """Per-column count, mean and sum of squared deviations, merged block by block (Chan et
    al.'s parallel update, float64): stable where Σx² - n·μ² would cancel."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, None, None

    def update(self, x: np.ndarray) -> Moments:
        x = np.asarray(x, dtype=np.float64)
        nb = len(x)
        if nb == 0:
            return self
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        if self.n == 0:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return self
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n
        return self

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


def one_hot_targets(y: np.ndarray, n_classes: int) -> np.ndarray:
    """±1 one-hot targets of the least-squares heads."""
    return np.eye(n_classes)[y] * 2.0 - 1.0


class NormalEquations:
    """Σ [h,1]ᵀ[h,1] and Σ [h,1]ᵀt over blocks, solved with a ridge on the diagonal."""

    def __init__(self, dim: int, n_classes: int) -> None:
        self.gram = np.zeros((dim + 1, dim + 1))
        self.rhs = np.zeros((dim + 1, n_classes))
        self.n, self.n_classes = 0, n_classes

    def update(self, h: np.ndarray, y: np.ndarray) -> NormalEquations:
        h1 = np.hstack([np.asarray(h, dtype=np.float64), np.ones((len(h), 1))])
        self.gram += h1.T @ h1
        self.rhs += h1.T @ one_hot_targets(y, self.n_classes)
        self.n += len(h)
        return self

    def solve(self, ridge_per_row: float, bias_too: bool = True) -> np.ndarray:
        """β [dim+1, C] (last row: bias), with ``ridge_per_row · n`` added to the diagonal."""
        gram = self.gram.copy()
        diag = np.arange(len(gram) if bias_too else len(gram) - 1)
        gram[diag, diag] += ridge_per_row * self.n
        return np.linalg.solve(gram, self.rhs)
