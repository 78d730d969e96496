"""Last-layer and majority baselines."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.baselines import last_layer_baseline, majority_baseline
from toolchain.data.dataset import Dataset, Split
from toolchain.features.backbone import resolve_model


def test_last_layer_reports_both_poolings(tiny_bert, toy_dataset, tmp_path):
    ref = resolve_model(str(tiny_bert))
    result = last_layer_baseline(toy_dataset, ref, max_length=16, cache_root=tmp_path / "cache")
    assert result.depth == 2
    assert set(result.scores) == {"cls", "mean"}
    for s in result.scores.values():
        assert 0 <= s.val_acc <= 1 and 0 <= s.test_acc <= 1 and 0 <= s.test_macro_f1 <= 1
        assert s.fit_seconds > 0
    # Mean-pooled random features still carry the (disjoint) words: far above chance.
    assert result.scores["mean"].test_acc > 0.6
    assert not result.features_from_cache and result.extract_seconds > 0
    assert set(result.train_seconds) == {"cls", "mean"}
    again = last_layer_baseline(toy_dataset, ref, max_length=16, cache_root=tmp_path / "cache")
    assert again.features_from_cache
    assert again.scores["mean"].test_acc == result.scores["mean"].test_acc
    d = result.to_dict()
    assert d["scores"]["cls"]["pooling"] == "cls" and "train_seconds" in d


def _split(labels):
    return Split(tuple(f"t{i}" for i in range(len(labels))), np.array(labels, dtype=np.int64))


def test_majority_equals_majority_share():
    ds = Dataset(
        "m",
        ("a", "b", "c"),
        _split([0, 1, 1, 1, 2, 1]),
        _split([1, 1, 0, 2]),
        _split([1, 0, 0, 2, 1, 1, 1, 2]),
        False,
    )
    r = majority_baseline(ds)
    assert r.label == "b"
    assert r.train_share == pytest.approx(4 / 6)
    assert r.val_acc == 0.5
    assert r.test_acc == pytest.approx(4 / 8)
    # F1 of 'b' is 2·4/(2·4+4) = 2/3; the others score 0.
    assert r.test_macro_f1 == pytest.approx((2 / 3) / 3)


def test_majority_without_test_split(toy_dataset):
    ds = Dataset(
        "m", toy_dataset.label_names, toy_dataset.train, toy_dataset.validation, None, False
    )
    r = majority_baseline(ds)
    assert r.test_acc is None and r.test_macro_f1 is None
    assert r.val_acc == pytest.approx(1 / 3)
