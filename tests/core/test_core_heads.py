"""Heads and layer combinations on a separable toy problem: accuracy, reproducibility, shapes."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.errors import ConfigError
from toolchain.heads import HEADS, make_head
from toolchain.heads.base import accuracy, macro_f1
from toolchain.heads.combine import Standardizer, combine, learn_scalar_mix
from toolchain.heads.mlp import SmallMLP

SIZES = {"softmax": 3, "elm": 256, "mlp": 32}


def blobs(n_per_class=60, n_classes=3, dim=16, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * scale
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = (centres[y] + rng.standard_normal((len(y), dim))).astype(np.float32)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


@pytest.fixture(scope="module")
def toy():
    x, y = blobs(seed=0)
    xt, yt = blobs(n_per_class=30, seed=0)  # same centres (same seed), fresh noise below
    rng = np.random.default_rng(1)
    xt = xt + rng.standard_normal(xt.shape).astype(np.float32) * 0.1
    std = Standardizer.fit(x)
    return std(x), y, std(xt), yt


def test_all_three_heads_are_registered():
    assert set(HEADS) == {"softmax", "elm", "mlp"}
    with pytest.raises(ConfigError, match="unknown head 'svm'"):
        make_head("svm", 1)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_head_beats_chance_and_is_reproducible(toy, name):
    x, y, xt, yt = toy
    head = make_head(name, SIZES[name], seed=0).fit(x, y, 3)
    acc = accuracy(head.predict(xt), yt)
    assert acc > 0.9, f"{name} reached only {acc:.2f} on a separable 3-class toy set (chance 0.33)"
    assert macro_f1(head.predict(xt), yt, 3) > 0.9
    again = make_head(name, SIZES[name], seed=0).fit(x, y, 3)
    for a, b in zip(head.layers, again.layers, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
    proba = head.proba(xt)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert head.n_params == sum(la.weight.size + la.bias.size for la in head.layers) > 0
    assert head.flops > 0


@pytest.mark.parametrize("name", ["elm", "mlp"])
def test_seed_changes_randomised_heads(toy, name):
    x, y, _, _ = toy
    a = make_head(name, SIZES[name], seed=0).fit(x, y, 3)
    b = make_head(name, SIZES[name], seed=1).fit(x, y, 3)
    assert not np.array_equal(a.layers[0].weight, b.layers[0].weight)


def test_head_shapes(toy):
    x, y, _, _ = toy
    elm = make_head("elm", 64).fit(x, y, 3)
    assert [la.weight.shape for la in elm.layers] == [(64, 16), (3, 64)]
    assert [la.activation for la in elm.layers] == ["relu", "none"]
    soft = make_head("softmax", 3).fit(x, y, 3)
    assert [la.weight.shape for la in soft.layers] == [(3, 16)]


def test_softmax_l2_strength_follows_size(toy):
    x, y, _, _ = toy
    strong = make_head("softmax", 0).fit(x, y, 3)  # λ = 1
    weak = make_head("softmax", 4).fit(x, y, 3)  # λ = 1e-4
    assert np.linalg.norm(strong.layers[0].weight) < np.linalg.norm(weak.layers[0].weight)


def test_mlp_stops_early_on_an_easy_problem(toy):
    x, y, _, _ = toy
    mlp = SmallMLP(32, seed=0, max_epochs=40, patience=2).fit(x, y, 3)
    assert 1 <= mlp.epochs_run < 40


def test_standardizer_uses_train_statistics_only():
    x = np.array([[1.0, 10.0], [3.0, 10.0]], dtype=np.float32)
    std = Standardizer.fit(x)
    np.testing.assert_allclose(std(x).mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(std(np.array([[5.0, 10.0]], dtype=np.float32)), [[3.0, 0.0]], atol=1e-6)


def test_combinations():
    a = np.ones((4, 3), dtype=np.float32)
    b = np.full((4, 3), 3.0, dtype=np.float32)
    assert combine([a], "single") is a
    assert combine([a, b], "concat").shape == (4, 6)
    np.testing.assert_allclose(combine([a, b], "mean"), 2.0)
    np.testing.assert_allclose(combine([a, b], "scalarmix", np.array([0.25, 0.75])), 2.5)
    with pytest.raises(ValueError):
        combine([a, b], "single")
    with pytest.raises(ValueError):
        combine([a, b], "scalarmix")
    with pytest.raises(ValueError):
        combine([a, b], "max")


def test_scalar_mix_learns_to_weight_the_informative_layer(toy):
    x, y, _, _ = toy
    noise = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    w = learn_scalar_mix([noise, x], y, 3)
    assert w.shape == (2,) and abs(float(w.sum()) - 1.0) < 1e-5
    assert w[1] > w[0]


def test_large_training_sets_get_the_short_decaying_schedule(toy, monkeypatch):
    """From SmallMLP.LARGE rows on, training is capped at LARGE_EPOCHS with a decaying rate,
    and still learns (threshold lowered so that the branch runs on the toy set)."""
    x, y, xt, yt = toy
    monkeypatch.setattr(SmallMLP, "LARGE", 100)
    monkeypatch.setattr(SmallMLP, "LARGE_BATCH", 16)
    mlp = SmallMLP(32, seed=0, max_epochs=40, patience=40).fit(x, y, 3)
    assert mlp.epochs_run == SmallMLP.LARGE_EPOCHS
    assert accuracy(mlp.predict(xt), yt) > 0.9


def test_scalar_mix_on_a_row_sample_matches_the_full_fit(toy):
    """Above max_rows the mix is learned on a stratified sample: same ranking of the layers."""
    x, y, _, _ = toy
    noise = np.random.default_rng(5).standard_normal(x.shape).astype(np.float32)
    full = learn_scalar_mix([noise, x], y, 3)
    sampled = learn_scalar_mix([noise, x], y, 3, max_rows=90)
    assert sampled[1] > sampled[0] and full[1] > full[0]
    assert not np.allclose(sampled, full)  # the sample really was smaller
