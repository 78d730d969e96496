"""Heads fitted on rows streamed block by block equal the in-memory fit: exactly for the
closed-form heads (normal equations, moments: within 1e-6), the same weights for the MLP (the
same minibatches), and the same optimum for softmax regression (L-BFGS over summed blocks)."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.features.backbone import resolve_model
from toolchain.features.layers import layer_features
from toolchain.heads.combine import Standardizer
from toolchain.heads.elm import ClosedFormSLFN
from toolchain.heads.mlp import SmallMLP
from toolchain.heads.ridge import RidgeClassifier
from toolchain.heads.softmax import SoftmaxRegression
from toolchain.heads.stream import ArrayRows, Moments
from toolchain.search.candidate import Candidate
from toolchain.search.fit import FeatureBank, fit_candidate, fit_streamed


def _data(n=600, d=24, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(0, 1, (classes, d))
    x = (centres[y] + rng.normal(0, 1.5, (n, d)) + 3.0).astype(np.float32)
    return x, y


def _weights(head):
    return [(la.weight, la.bias) for la in head.layers]


def _assert_heads_close(a, b, atol):
    for (wa, ba), (wb, bb) in zip(_weights(a), _weights(b), strict=True):
        np.testing.assert_allclose(wa, wb, atol=atol, rtol=0)
        np.testing.assert_allclose(ba, bb, atol=atol, rtol=0)


@pytest.mark.parametrize("block_rows", [1, 7, 128, 599])
def test_elm_and_ridge_from_chunked_normal_equations_equal_the_in_memory_fit(block_rows):
    x, y = _data()
    for make in (lambda: ClosedFormSLFN(64, seed=3), lambda: RidgeClassifier(2)):
        whole = make().fit(x, y, 4)
        streamed = make().fit_stream(ArrayRows(x, y, block_rows), 4)
        _assert_heads_close(whole, streamed, atol=1e-6)
        np.testing.assert_allclose(whole.logits(x), streamed.logits(x), atol=1e-5, rtol=0)
        assert (whole.predict(x) == streamed.predict(x)).mean() == 1.0


def test_ridge_is_the_least_squares_solution():
    x, y = _data(n=300, d=8)
    head = RidgeClassifier(12).fit(x, y, 4)  # λ = 1e-12: plain least squares
    a = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    beta, *_ = np.linalg.lstsq(a, np.eye(4)[y] * 2.0 - 1.0, rcond=None)
    np.testing.assert_allclose(head.layers[0].weight, beta[:-1].T, atol=1e-5)
    assert (head.predict(x) == y).mean() > 0.6


def test_merged_moments_equal_the_whole_arrays():
    x, _ = _data(n=1001)
    x[:, 0] += 1e4  # a large mean: the naive Σx² - nμ² would lose the variance here
    whole = Standardizer.fit(x)
    m = Moments()
    for i in range(0, len(x), 97):
        m.update(x[i : i + 97])
    merged = Standardizer.from_moments(m)
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-6)
    np.testing.assert_allclose(merged.std, whole.std, rtol=1e-6)
    np.testing.assert_allclose(whole.std, x.astype(np.float64).std(0), rtol=1e-6)


def test_mlp_on_gathered_minibatches_learns_the_same_weights():
    x, y = _data(n=400)
    whole = SmallMLP(16, seed=1, max_epochs=4).fit(x, y, 4)
    streamed = SmallMLP(16, seed=1, max_epochs=4).fit_stream(ArrayRows(x, y, 50), 4)
    assert whole.epochs_run == streamed.epochs_run
    _assert_heads_close(whole, streamed, atol=1e-6)


def test_softmax_over_summed_blocks_reaches_the_same_optimum():
    x, y = _data(n=500)
    x = (x - x.mean(0)) / x.std(0)
    whole = SoftmaxRegression(2).fit(x, y, 4)
    streamed = SoftmaxRegression(2).fit_stream(ArrayRows(x, y, 64), 4)
    _assert_heads_close(whole, streamed, atol=2e-3)  # float32 sums in another order
    assert (whole.predict(x) == streamed.predict(x)).mean() >= 0.99


# --- on a real, memory-mapped cache ------------------------------------------------------------


@pytest.fixture(scope="module")
def features(tiny_bert_3, toy_spec, tmp_path_factory):
    ds = load_dataset(resolve_dataset(str(toy_spec)))
    root = tmp_path_factory.mktemp("cache")
    feats = layer_features(ds, resolve_model(str(tiny_bert_3)), 32, cache_root=root, chunk_size=8)
    y = {s: ds.split(s).labels for s in ("train", "validation")}
    return feats, y, ds.n_classes


def test_layers_are_memory_mapped_chunk_views(features):
    feats, _, _ = features
    mapped = feats.mapped("train", "mean", 2)
    blocks = list(mapped.blocks())
    assert len(blocks) == 6 and all(isinstance(b, np.memmap) and b.shape == (8, 32) for b in blocks)
    whole = feats.get("train", "mean", 2)
    np.testing.assert_array_equal(np.asarray(mapped), whole)
    rows = np.array([47, 0, 9, 8, 30, 9])
    np.testing.assert_array_equal(mapped.take(rows), whole[rows])  # in the order asked
    np.testing.assert_array_equal(feats.splits["train"]["mean"][2], whole)


@pytest.mark.parametrize("head,size,combine,layers,atol", [
    ("elm", 64, "concat", (1, 3), 1e-6),
    ("elm", 32, "mean", (0, 2, 3), 1e-6),
    ("mlp", 16, "single", (2,), 1e-6),
    ("softmax", 3, "scalarmix", (1, 2), 2e-3),
])
def test_a_streamed_candidate_equals_the_in_memory_one(features, head, size, combine, layers, atol):
    feats, y, n_classes = features
    cand = Candidate(backbone="tiny2", max_length=32, layers=layers, combine=combine, pooling="mean",
                     head=head, head_size=size)
    bank = FeatureBank(feats, y, n_classes)
    memory = fit_candidate(cand, bank)
    streamed = fit_streamed(cand, feats, y, n_classes)
    for a, b in zip(memory.standardizers, streamed.standardizers, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, atol=1e-6)
        np.testing.assert_allclose(a.std, b.std, atol=1e-6)
    if combine == "scalarmix":
        np.testing.assert_allclose(memory.mix, streamed.mix, atol=1e-6)
    _assert_heads_close(memory.head, streamed.head, atol)
    assert memory.val_acc == streamed.val_acc


def test_fit_all_streams_only_the_candidates_over_the_budget_in_a_pool_too(features):
    from toolchain.search.parallel import fit_all

    feats, y, n_classes = features
    cands = [Candidate(backbone="tiny2", max_length=32, layers=layers, combine=combine, pooling="mean",
                       head="elm", head_size=32)
             for layers, combine in (((1,), "single"), ((2,), "single"), ((1, 3), "concat"), ((0, 2), "concat"))]
    unbounded = fit_all(cands, {("tiny2", 32): FeatureBank(feats, y, n_classes)}, 0, 1, lambda n: None)
    bank = FeatureBank(feats, y, n_classes)
    single, concat = bank.working_set_bytes(cands[0]), bank.working_set_bytes(cands[2])
    assert single < concat
    budgeted = FeatureBank(feats, y, n_classes, memory_budget_bytes=single * 2)  # pool's prepare fits
    fitted = fit_all(cands, {("tiny2", 32): budgeted}, 0, 2, lambda n: None)
    assert [fc.candidate.id for fc in fitted] == [c.id for c in cands]  # in the order given
    assert [fc.streamed for fc in fitted] == [False, False, True, True]
    for a, b in zip(unbounded, fitted, strict=True):
        _assert_heads_close(a.head, b.head, 1e-6)
        assert a.val_acc == b.val_acc
        assert a.evaluate(bank, "validation") == b.evaluate(budgeted, "validation")
