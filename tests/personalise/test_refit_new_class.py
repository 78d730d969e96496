"""A learn that adds a class keeps the old classes' logits and the head's dense structure."""

import numpy as np
import pytest

from toolchain.bundle.personalise_board import Head, refit


def _head(depth: int, rng) -> Head:
    d, hid, c = 12, 16, 3
    ws, bs, acts, n_in = [], [], [], d
    for _ in range(depth):
        ws.append(rng.normal(size=(hid, n_in)).astype(np.float32))
        bs.append(rng.normal(size=hid).astype(np.float32))
        acts.append("relu")
        n_in = hid
    ws.append(rng.normal(size=(c, n_in)).astype(np.float32))
    bs.append(rng.normal(size=c).astype(np.float32))
    return Head(ws, bs, acts + ["linear"], ["a", "b", "c"])


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_new_class_leaves_old_logits_and_is_dense(depth):
    rng = np.random.RandomState(depth)
    active = _head(depth, rng)
    anchor_x = rng.normal(size=(60, 12)).astype(np.float32)
    anchor_labels = [active.labels[k] for k in active.predict(anchor_x)]
    # The new class lies along a direction of the input the hidden units may not carry.
    user_x = (rng.normal(size=(20, 12)) + 4.0 * np.eye(12)[0]).astype(np.float32)
    new = refit(active, user_x, ["new"] * 20, anchor_x, anchor_labels)
    assert new.labels == ["a", "b", "c", "new"]
    old = active.logits(anchor_x)
    np.testing.assert_allclose(new.logits(anchor_x)[:, :3], old, rtol=0, atol=1e-4 * float(np.abs(old).max()))
    # Dense layers in order, each [out, in] matching the next: what the runner's Head.load takes.
    assert len(new.weights) == len(active.weights) == len(new.activations)
    n_in = 12
    for w, b in zip(new.weights, new.biases, strict=True):
        assert w.ndim == 2 and w.shape[1] == n_in and b.shape == (w.shape[0],)
        n_in = w.shape[0]
    # The new row learned the class: most of its own examples go to it.
    assert float(np.mean(new.predict(user_x) == 3)) >= 0.9


@pytest.mark.parametrize("depth", [0, 1])
def test_few_examples_of_a_new_class_reach_its_unseen_examples(depth):
    """Three examples of a new class: the imprinted row (shrunk-LDA direction, covariance shared
    with the old classes' many rows) carries over to the class's unseen examples without taking
    the old classes' rows."""
    rng = np.random.RandomState(0)
    d = 12
    active = _head(depth, rng)
    active.weights = [w * 0.3 for w in active.weights]  # logits of a trained head's size, not ±10s
    # Elongated noise shared by every class; the new class is offset across it, not along it.
    scale = np.ones(d)
    scale[1:4] = 3.0
    anchor_x = (rng.normal(size=(300, d)) * scale).astype(np.float32)
    anchor_labels = [active.labels[k] for k in active.predict(anchor_x)]
    centre = 5.0 * np.eye(d)[0]
    user_x = (rng.normal(size=(3, d)) * scale + centre).astype(np.float32)
    unseen = (rng.normal(size=(200, d)) * scale + centre).astype(np.float32)
    new = refit(active, user_x, ["new"] * 3, anchor_x, anchor_labels)
    assert float(np.mean(new.predict(unseen) == 3)) >= 0.8
    assert float(np.mean(new.predict(anchor_x) == 3)) <= 0.05


def test_imprint_row_layout_on_the_pass_through_units():
    from toolchain.bundle.personalise_board import imprint_row

    rng = np.random.RandomState(3)
    f = rng.normal(size=(40, 5))
    y = np.array([0] * 20 + [1] * 17 + [2] * 3)
    f[y == 2] += 3.0 * np.eye(5)[2]
    z_old = np.zeros((40, 2))
    row, _ = imprint_row(f, y, 2, z_old, np.full(40, 1 / 40), passthrough=7)
    assert row.shape == (7 + 2 * 5,)
    assert not row[:7].any()  # the hidden units trained without the class: zero weight
    np.testing.assert_array_equal(row[7:12], -row[12:])
    assert int(np.argmax(row[7:12])) == 2  # the direction the class is offset along
