"""Successive halving for large training sets (the multi-fidelity step of NAS searches such as
Hyperband): every candidate is first fitted on a seeded, stratified sample of the training rows
and scored on the whole validation split; only the best fraction is then fitted on every row.

Selection, the Pareto front and every reported head come from full fits only. The single-layer
softmax candidates are always fitted in full: they are the per-layer curve and the baseline.
Below ``2 × rows`` training rows there is nothing to gain and every candidate is fitted in full.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..data.dataset import stratified_carve
from .candidate import Candidate
from .fit import FeatureBank, FittedCandidate


class TrainSubset:
    """A LayerFeatures view whose train split keeps only ``rows``."""

    def __init__(self, features, rows: np.ndarray) -> None:
        self.features, self.rows = features, rows

    @property
    def dim(self) -> int:
        return self.features.dim

    def get(self, split: str, pooling: str, layer: int) -> np.ndarray:
        if split == "train":
            # Only the sample's rows are read from the maps, never the whole training layer.
            return self.features.mapped(split, pooling, layer).take(self.rows)
        return self.features.get(split, pooling, layer)


@dataclass(frozen=True)
class Screening:
    rows: int  # training rows of the screening fits
    promote: float  # fraction of the other candidates fitted in full afterwards
    min_promoted: int = 16

    def applies(self, n_train: int) -> bool:
        return self.rows > 0 and n_train >= 2 * self.rows

    def sample(self, y_train: np.ndarray, seed: int) -> np.ndarray:
        _, rows = stratified_carve(y_train, self.rows / len(y_train), seed)
        return rows

    def promoted(self, screened: list[FittedCandidate]) -> list[Candidate]:
        always = {fc.candidate.id for fc in screened
                  if fc.candidate.combine == "single" and fc.candidate.head == "softmax"}
        rest = sorted((fc for fc in screened if fc.candidate.id not in always), key=lambda fc: -fc.val_acc)
        n = max(self.min_promoted, int(np.ceil(self.promote * len(rest))))
        chosen = always | {fc.candidate.id for fc in rest[:n]}
        return [fc.candidate for fc in screened if fc.candidate.id in chosen]


def screen_then_fit(cands: list[Candidate], banks: dict[tuple[str, int], FeatureBank], screening: Screening,
                    seed: int, fit: Callable) -> tuple[list[FittedCandidate], dict]:
    """Fit ``cands`` by successive halving; returns them in order (screen-only ones keep their
    screening fit, with ``fidelity`` set) and a summary for the leaderboard.

    ``fit(cands, banks, description)`` fits a list on the given banks."""
    import time

    any_bank = next(iter(banks.values()))
    rows = screening.sample(any_bank.y["train"], seed)
    # The screening banks hold only the sample's training rows; they are never streamed (the
    # sample is small, and a TrainSubset has no mapped view of its own rows).
    small = {key: FeatureBank(TrainSubset(bank.features, rows), {**bank.y, "train": bank.y["train"][rows]},
                              bank.n_classes) for key, bank in banks.items()}
    started = time.perf_counter()
    screened = fit(cands, small, f"screening {len(cands)} candidates on {len(rows)} rows")
    screen_seconds = time.perf_counter() - started
    promoted = screening.promoted(screened)
    started = time.perf_counter()
    full = {fc.candidate.id: fc for fc in fit(promoted, banks, f"fitting {len(promoted)} promoted candidates")}
    out = []
    for fc in screened:
        if fc.candidate.id in full:
            full[fc.candidate.id].screen_val_acc = fc.val_acc
            out.append(full[fc.candidate.id])
        else:
            fc.fidelity = f"screen-{len(rows)}"
            out.append(fc)
    summary = {"rows": int(len(rows)), "screened": len(cands), "promoted": len(promoted),
               "screen_seconds": screen_seconds, "full_seconds": time.perf_counter() - started,
               "promote_fraction": screening.promote, "min_promoted": screening.min_promoted}
    return out, summary
