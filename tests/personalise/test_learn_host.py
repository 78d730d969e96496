"""Personalisation on the host target: a learn switches heads (a new class included), a learn
that would forget is refused, --rollback restores the shipped head, status names the head."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from personalise_rows import new_class_rows

from toolchain.bundle.deploy import status
from toolchain.bundle.manifest import read_manifest


def _classify(host_board, texts):
    proc = subprocess.run([sys.executable, str(host_board / "current" / "runner.py"), *texts],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line)["label"] for line in proc.stdout.splitlines()]


def test_bundle_ships_head_anchor_and_learning_code(bundle_run):
    m = read_manifest(bundle_run.host)
    conf = m["personalise"]
    assert {"personalise_board.py", "head.npz", "anchor.npz"} <= set(m["files"])
    with np.load(bundle_run.host / "anchor.npz") as z:
        assert z["features"].dtype == np.float16 and z["features"].shape[1] == conf["feature_dim"]
        labels, check = z["labels"], z["check"].astype(bool)
    # Stratified: every class is in the anchor set, in both the fit and the check halves.
    for c in range(len(m["label_names"])):
        assert (labels[check] == c).any() and (labels[~check] == c).any()


def test_learn_on_host_switches_heads_and_adds_a_new_class(deployed_host, examples, host_board, toy_rows):
    report = deployed_host.personalise(examples())
    assert report["ok"] and report["switched"], report["reason"]
    assert report["new_classes"] == ["colour"] and report["n_examples"] == 28
    assert report["n_heldout"] + report["n_train"] == 28 and report["n_heldout"] >= 3
    # The shipped head cannot name the new class; the learned one does, on held-out examples.
    assert report["before"]["per_class"]["colour"] == 0.0
    assert report["after"]["per_class"]["colour"] > report["before"]["per_class"]["colour"]
    assert report["anchor_drop"] <= report["max_anchor_drop"]
    assert report["learn_ms"] > 0 and report["peak_rss_bytes"] > 0 and report["emulated"] is False
    assert "text" not in json.dumps(report)  # metrics only: no texts come back
    st = status(deployed_host)
    assert st["head"]["active"] == report["active"] != "shipped"
    assert "colour" in st["head"]["labels"] and st["head"]["switched_at"]
    # The deployed runner now classifies with the learned head, and knows the new label.
    labels = _classify(host_board, [t for t, _ in new_class_rows(4, 500)])
    assert labels.count("colour") >= 3


def test_learn_that_would_forget_is_refused(deployed_host, examples, toy_rows):
    flipped = [(t, "negative" if lab == "positive" else "positive") for t, lab in toy_rows(24, 4000)]
    report = deployed_host.personalise(examples("flipped.jsonl", flipped), max_anchor_drop=0.0)
    assert report["ok"] and report["switched"] is False
    assert report["anchor_after"]["accuracy"] < report["anchor_shipped"]["accuracy"]
    assert "refused" in report["reason"] and report["active"] == "shipped"
    assert status(deployed_host)["head"]["active"] == "shipped"


def test_rollback_restores_the_shipped_head(deployed_host, examples, host_board):
    before = _classify(host_board, [t for t, _ in new_class_rows(4, 500)])
    learned = deployed_host.personalise(examples())
    assert learned["switched"]
    back = deployed_host.personalise(None, rollback=True)
    assert back["active"] == "shipped" and back["previous"] == learned["active"]
    assert status(deployed_host)["head"]["active"] == "shipped"
    assert _classify(host_board, [t for t, _ in new_class_rows(4, 500)]) == before
    assert "colour" not in before
