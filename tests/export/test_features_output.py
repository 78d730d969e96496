"""The exported graph's second output, ``features``: the standardised, combined vector that goes
into the head (what on-board personalisation refits a head on). Checked against PyTorch's own
features (the feature cache) and against the head: softmax(head(features)) must be ``probs``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx

from toolchain.export.artefact import export_artefact

# test_onnx_export's run (tiny BERT, toy data), loaded under its own name, not duplicated.
_spec = importlib.util.spec_from_file_location(
    "_codesign_export_fixtures", Path(__file__).with_name("test_onnx_export.py"))
_export = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_export)
tiny_run = _export.tiny_run


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_onnx_graph_outputs_probs_then_features(tiny_run):
    from toolchain.bundle.build import head_inputs
    from toolchain.export.validate import ReferenceSet, ort_session
    from toolchain.heads.dense import run_dense

    cid = _export._shallow_id(tiny_run)
    out, meta = export_artefact(tiny_run, cid, "fp32")
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["probs", "features"]  # probs stays first

    ref = ReferenceSet.load(out / "reference.npz")
    session = ort_session(out / "model.onnx")
    probs, feats = [], []
    for i, n in enumerate(ref.lengths):
        p, f = session.run(["probs", "features"], {"input_ids": ref.input_ids[i:i + 1, :n],
                                                    "attention_mask": ref.attention_mask[i:i + 1, :n]})
        probs.append(p[0])
        feats.append(f[0])
    probs, feats = np.stack(probs), np.stack(feats)

    board = json.loads((tiny_run / "leaderboard.json").read_text())
    saved, inputs, _ = head_inputs(tiny_run, board, cid)
    assert feats.shape == (len(ref.lengths), saved.layers[0].weight.shape[1])
    # PyTorch's features of the same (first validation) texts, from the feature cache.
    np.testing.assert_allclose(feats, inputs["validation"][: len(feats)], atol=2e-4, rtol=1e-4)
    # The head applied to the features output reproduces the probs output.
    np.testing.assert_allclose(_softmax(run_dense(saved.layers, feats)), probs, atol=1e-5)
