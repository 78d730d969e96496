"""``codesign run`` over its memory budget: candidates are fitted streamed from the mapped cache
(search/fit.py) and score as their in-memory fits do; the training layers are never loaded whole."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolchain.features.layers import LayerFeatures
from toolchain.flows.run import RunConfig, run

HEADS = (("softmax", 3), ("elm", 64), ("mlp", 16))


def _board(codesign_home, tiny_bert, toy_spec, name: str, budget_mib: int | None) -> dict:
    run_dir = codesign_home / "runs" / name
    run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_lengths=(32,), max_combinations=4,
                  heads=HEADS, screen_rows=0, jobs=1, run_dir=str(run_dir), memory_budget_mib=budget_mib))
    return json.loads((run_dir / "leaderboard.json").read_text())


@pytest.mark.slow
def test_a_run_over_its_memory_budget_streams_every_fit_with_the_same_scores(
        codesign_home, tiny_bert, toy_spec, monkeypatch):
    memory = _board(codesign_home, tiny_bert, toy_spec, "memory", 1 << 20)
    assert memory["streamed_fits"] == 0 and {c["fit"] for c in memory["candidates"]} == {"in-memory"}

    whole_train_layers = []
    real_get = LayerFeatures.get

    def counting_get(self, split, pooling, layer):
        if split == "train":
            whole_train_layers.append((pooling, layer))
        return real_get(self, split, pooling, layer)

    monkeypatch.setattr(LayerFeatures, "get", counting_get)
    streamed = _board(codesign_home, tiny_bert, toy_spec, "streamed", 0)
    assert whole_train_layers == []  # a streamed search never holds a training layer whole
    assert streamed["memory_budget_mib"] == 0
    assert streamed["streamed_fits"] == len(streamed["candidates"]) > len(HEADS)
    assert {c["fit"] for c in streamed["candidates"]} == {"streamed"}

    by_id = {c["id"]: c for c in memory["candidates"]}
    n_val = 16  # toy_spec's validation rows: softmax's L-BFGS over blocks may move one example
    for c in streamed["candidates"]:
        m = by_id[c["id"]]
        if c["head"] == "softmax":
            assert abs(c["val_acc"] - m["val_acc"]) <= 1 / n_val + 1e-9, c["id"]
        else:  # normal equations (ELM) and gathered minibatches (MLP) give the same head
            assert c["val_acc"] == m["val_acc"], c["id"]
        if "test_acc" in m:
            assert c.get("test_acc") is not None
            np.testing.assert_allclose(c["test_acc"], m["test_acc"], atol=1 / 16 + 1e-9)
