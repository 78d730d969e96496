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
