"""The classic feature-extractor set-up: the frozen backbone's last layer, pooled as [CLS] and
as a mean, standardised like the search does, into softmax regression."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.dataset import Dataset
from ..features.backbone import ModelRef
from ..features.layers import layer_features
from ..heads.base import accuracy, macro_f1
from ..heads.combine import Standardizer
from ..heads.softmax import SoftmaxRegression

POOLINGS = ("cls", "mean")
DEFAULT_SOFTMAX_SIZE = 3  # λ = 1e-3, the search's default softmax head


@dataclass
class PoolingScores:
    pooling: str
    val_acc: float
    val_macro_f1: float
    test_acc: float | None
    test_macro_f1: float | None
    fit_seconds: float  # standardisation plus the head's fit


@dataclass
class LastLayerResult:
    model: str
    dataset: str
    depth: int  # the last layer's index (the backbone's number of layers)
    max_length: int
    softmax_size: int
    train_size: int
    validation_size: int
    test_size: int
    extract_seconds: float  # features of every split; near 0 when read from the cache
    features_from_cache: bool
    scores: dict[str, PoolingScores] = field(default_factory=dict)

    @property
    def train_seconds(self) -> dict[str, float]:
        """Training wall time per pooling: feature extraction plus that pooling's head fit."""
        return {p: self.extract_seconds + s.fit_seconds for p, s in self.scores.items()}

    def to_dict(self) -> dict:
        out = asdict(self)
        out["train_seconds"] = self.train_seconds
        return out


def last_layer_baseline(
    dataset: Dataset,
    model: ModelRef,
    max_length: int = 64,
    poolings: tuple[str, ...] = POOLINGS,
    softmax_size: int = DEFAULT_SOFTMAX_SIZE,
    seed: int = 0,
    cache_root: Path | None = None,
) -> LastLayerResult:
    """Softmax regression on the last layer's pooled features, for each pooling.

    Features come from the shared per-layer cache (``cache_root``, default under
    ``$CODESIGN_HOME``); pass an empty folder to time a cold extraction.
    """
    feats = layer_features(dataset, model, max_length, tuple(poolings), cache_root=cache_root)
    last = feats.n_layers - 1
    y_train = dataset.train.labels
    has_test = dataset.test is not None
    result = LastLayerResult(
        model=model.name,
        dataset=dataset.name,
        depth=last,
        max_length=max_length,
        softmax_size=softmax_size,
        train_size=len(dataset.train),
        validation_size=len(dataset.validation),
        test_size=len(dataset.test) if has_test else 0,
        extract_seconds=feats.extract_seconds,
        features_from_cache=feats.extracted_chunks == 0,
    )
    for pooling in poolings:
        started = time.perf_counter()
        std = Standardizer.fit(feats.get("train", pooling, last))
        head = SoftmaxRegression(softmax_size, seed).fit(
            std(feats.get("train", pooling, last)), y_train, dataset.n_classes
        )
        fit_seconds = time.perf_counter() - started
        val_pred = head.predict(std(feats.get("validation", pooling, last)))
        y_val = dataset.validation.labels
        test_acc = test_f1 = None
        if has_test:
            test_pred = head.predict(std(feats.get("test", pooling, last)))
            test_acc = accuracy(test_pred, dataset.test.labels)
            test_f1 = macro_f1(test_pred, dataset.test.labels, dataset.n_classes)
        result.scores[pooling] = PoolingScores(
            pooling=pooling,
            val_acc=accuracy(val_pred, y_val),
            val_macro_f1=macro_f1(val_pred, y_val, dataset.n_classes),
            test_acc=test_acc,
            test_macro_f1=test_f1,
            fit_seconds=fit_seconds,
        )
    return result
