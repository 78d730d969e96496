"""The majority-class baseline: always predict train's most frequent class."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..data.dataset import Dataset
from ..heads.base import accuracy, macro_f1


@dataclass
class MajorityResult:
    dataset: str
    label: str  # the majority class's name
    train_share: float
    val_acc: float
    val_macro_f1: float
    test_acc: float | None
    test_macro_f1: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def majority_baseline(dataset: Dataset) -> MajorityResult:
    """Scores of predicting train's most frequent class (ties: the lowest class index)."""
    counts = np.bincount(dataset.train.labels, minlength=dataset.n_classes)
    cls = int(np.argmax(counts))

    def scores(labels: np.ndarray) -> tuple[float, float]:
        pred = np.full(len(labels), cls, dtype=np.int64)
        return accuracy(pred, labels), macro_f1(pred, labels, dataset.n_classes)

    val_acc, val_f1 = scores(dataset.validation.labels)
    test_acc = test_f1 = None
    if dataset.test is not None:
        test_acc, test_f1 = scores(dataset.test.labels)
    return MajorityResult(
        dataset=dataset.name,
        label=dataset.label_names[cls],
        train_share=float(counts[cls] / counts.sum()),
        val_acc=val_acc,
        val_macro_f1=val_f1,
        test_acc=test_acc,
        test_macro_f1=test_f1,
    )
