"""The search space: backbones × layer sets × combination × pooling × head × precision × length ×
vocabulary (full, or pruned to the training split's tokens; the head is the same either way)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from .candidate import Candidate

DEFAULT_HEADS = (("softmax", 3), ("elm", 1024), ("mlp", 256))


@dataclass(frozen=True)
class SearchSpace:
    backbones: dict[str, int]  # backbone name -> number of transformer layers L (layers 0..L)
    max_lengths: tuple[int, ...] = (64,)
    poolings: tuple[str, ...] = ("cls", "mean")
    heads: tuple[tuple[str, int], ...] = DEFAULT_HEADS
    combines: tuple[str, ...] = ("concat", "mean", "scalarmix")
    max_set_size: int = 3
    precisions: tuple[str, ...] = ("fp32",)
    vocabs: tuple[str, ...] = ("full",)

    def layer_sets(self, n_layers: int) -> list[tuple[int, ...]]:
        """Small sets (2..max_set_size) of any layers, plus every prefix 1..d of size > max."""
        layers = range(n_layers + 1)
        sets = [c for k in range(2, self.max_set_size + 1) for c in itertools.combinations(layers, k)]
        sets += [tuple(range(1, d + 1)) for d in range(self.max_set_size + 1, n_layers + 1)]
        return sets

    def singles(self) -> list[Candidate]:
        out = []
        for (bb, n), ml, pool, (head, size), prec, vocab in itertools.product(
            self.backbones.items(), self.max_lengths, self.poolings, self.heads, self.precisions, self.vocabs
        ):
            for layer in range(n + 1):
                out.append(Candidate(bb, (layer,), "single", pool, head, size, prec, ml, vocab))
        return out

    def combinations(self) -> list[Candidate]:
        out = []
        for (bb, n), ml in itertools.product(self.backbones.items(), self.max_lengths):
            for layers, comb, pool, (head, size), prec, vocab in itertools.product(
                self.layer_sets(n), self.combines, self.poolings, self.heads, self.precisions, self.vocabs
            ):
                out.append(Candidate(bb, layers, comb, pool, head, size, prec, ml, vocab))
        return out

    def candidates(self, max_combinations: int | None = None, seed: int = 0) -> list[Candidate]:
        """Every single-layer candidate, plus the combinations (a seeded sample when too many)."""
        combos = self.combinations()
        if max_combinations is not None and len(combos) > max_combinations:
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(len(combos), size=max_combinations, replace=False))
            combos = [combos[i] for i in pick]
        return self.singles() + combos


def vocab_twins(fitted: list, vocabs: tuple[str, ...]) -> list:
    """Fitted full-vocabulary candidates plus, when ``pruned`` is searched, a twin of each with
    ``vocab="pruned"`` sharing its head (the search's features come from the full tokenizer, so
    a twin's accuracy is the full one until its artefact measures the [UNK] effect)."""
    if "pruned" not in vocabs:
        return list(fitted)
    twins = [replace(fc, candidate=replace(fc.candidate, vocab="pruned")) for fc in fitted]
    return (list(fitted) if "full" in vocabs else []) + twins
