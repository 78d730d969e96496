"""The int8 accuracy guard, measured recipes and the quantization-aware head refit.

The failing case is real, not faked: a tiny BERT whose embedding table has one outlier row (an
unused token, value 1000). ONNX Runtime's dynamic recipes quantize an embedding table per
tensor, so every real token's row rounds to the same value and the int8 graph cannot tell the
words apart: accuracy measured from the artefact collapses, and refitting the head on those
features cannot bring it back. Keeping that one Gather fp32 (found by measuring each node's
error) does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from export_runs import kept_candidates, run_in_home

from toolchain.errors import QuantizationError
from toolchain.export import guard
from toolchain.export.artefact import export_artefact, sha256_file

OUTLIER_TOKEN = 1  # [unused0]: no text of the toy data tokenizes to it


def _outlier_bert(folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    from tests.conftest import save_tiny_bert

    save_tiny_bert(folder, n_layers=1, seed=0)
    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[key][OUTLIER_TOKEN] = 1000.0
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def outlier_run(tmp_path_factory, toy_spec) -> Path:
    model = _outlier_bert(tmp_path_factory.mktemp("models") / "outlier")
    return run_in_home(tmp_path_factory.mktemp("guard-home"), model, toy_spec)


@pytest.fixture(scope="module")
def tiny_int8_run(tmp_path_factory, tiny_bert, toy_spec) -> Path:
    return run_in_home(tmp_path_factory.mktemp("qat-home"), tiny_bert, toy_spec)


def _best_id(run_dir: Path) -> str:
    kept = kept_candidates(run_dir)
    return max(kept, key=lambda c: (c["val_acc"], c["id"]))["id"]


def _embedding_only_id(run_dir: Path) -> str:
    """The depth-0 candidate (pooled embeddings): its only quantizable backbone node is the
    embedding lookup, so what int8 does to it is what the table's quantization does."""
    kept = kept_candidates(run_dir)
    shallow = min(kept, key=lambda c: (c["depth"], -c["val_acc"], c["id"]))
    assert shallow["depth"] == 0
    return shallow["id"]


def _fresh_copy(run_dir: Path, dest: Path) -> Path:
    """The run without its artefacts: a second, independent build of the same candidates."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("artefacts"))
    return dest


def test_guard_verdict_decision():
    assert guard.verdict(0.9, 0.895, True, 0.01, first_try=True) == ("ok", "")
    assert guard.verdict(0.9, 0.895, True, 0.01, first_try=False) == ("fell back", "")
    verdict, why = guard.verdict(0.9, 0.85, True, 0.01, first_try=False)
    assert verdict == "infeasible" and "5.0 points below" in why
    verdict, why = guard.verdict(0.9, 0.9, False, 0.01, first_try=True)
    assert verdict == "infeasible" and "tolerance" in why
    # Artefacts of older codesign said "failed" for the same thing and were used anyway.
    assert guard.is_infeasible({"precision": "int8-dynamic", "accuracy_guard": "failed"})
    assert not guard.is_infeasible({"precision": "fp32", "accuracy_guard": "ok"})


def test_int8_variant_whose_guard_fails_is_infeasible_and_never_bundled(outlier_run, tmp_path):
    from toolchain.bundle.build import build_bundle
    from toolchain.flows.loop import _variants

    cid = _embedding_only_id(outlier_run)
    _, fp32 = export_artefact(outlier_run, cid, "fp32")
    assert fp32["val_acc"] >= 0.75  # the fp32 twin sees the words (chance: 0.5)
    out, meta = export_artefact(outlier_run, cid, "int8-dynamic",
                                recipes=("dynamic-per-tensor", "dynamic-per-channel"))
    assert meta["accuracy_guard"] == "infeasible" and meta["guard_reason"]
    assert [t["recipe"] for t in meta["recipes_tried"]] == ["dynamic-per-tensor", "dynamic-per-channel"]
    # Measured from the artefact: the words are gone, and so is the accuracy, refit or not.
    assert fp32["val_acc"] - meta["val_acc"] > meta["max_accuracy_drop"]
    assert meta["head_refit"]["val_acc_after"] <= fp32["val_acc"] - meta["max_accuracy_drop"]
    # The loop sees it as infeasible, with the reason.
    board = json.loads((outlier_run / "leaderboard.json").read_text())
    variant = next(v for v in _variants(board, outlier_run, ("fp32", "int8-dynamic"))
                   if v["cand"].id == meta["candidate_id"])
    assert variant["quant_infeasible"] and "infeasible" in variant["quant_infeasible"]
    # The bundle builder refuses it with the typed error.
    with pytest.raises(QuantizationError, match="infeasible"):
        build_bundle(outlier_run, "host", tmp_path / "bundles", candidate_id=meta["candidate_id"],
                     allow_unmeasured=True)
    assert not list((tmp_path / "bundles").glob("*.tar.gz"))


def test_keep_worst_recipe_finds_the_outlier_node_and_holds(outlier_run, tmp_path):
    run_dir = _fresh_copy(outlier_run, tmp_path / "run")
    cid = _embedding_only_id(run_dir)
    _, fp32 = export_artefact(run_dir, cid, "fp32")
    _, meta = export_artefact(run_dir, cid, "int8-dynamic", recipes=("dynamic-per-channel-keep-worst-1",),
                              head_refit=False)
    tried = meta["recipes_tried"][0]
    worst = tried["node_errors_worst"][0]
    assert worst["op_type"] == "Gather" and "word_embeddings" in worst["name"]
    assert worst["name"] in meta["fp32_nodes"]["names"]
    # one measured node + the head's MatMul(s), nothing else
    assert meta["fp32_nodes"]["count"] == 1 + len(meta["fp32_nodes"]["head"])
    assert meta["accuracy_guard"] == "ok" and fp32["val_acc"] - meta["val_acc"] <= meta["max_accuracy_drop"]


def test_head_refit_is_deterministic_and_keeps_the_backbone(tiny_int8_run, tmp_path):
    from toolchain.export.qat import backbone_digest

    builds = []
    for name, refit in (("a", True), ("b", True), ("plain", False)):
        run_dir = _fresh_copy(tiny_int8_run, tmp_path / name)
        out, meta = export_artefact(run_dir, _best_id(run_dir), "int8-dynamic",
                                    recipes=("dynamic-per-channel",), head_refit=refit)
        builds.append((out, meta))
    (a, ma), (b, mb), (plain, mp) = builds
    assert ma["head_refit"] is not None and mp["head_refit"] is None
    for key in ("val_acc_before", "val_acc_after", "head_val_acc_on_int8_features", "train_rows", "seed"):
        assert ma["head_refit"][key] == mb["head_refit"][key]
    assert sha256_file(a / "model.onnx") == sha256_file(b / "model.onnx")
    # Whether or not the refit was kept, the backbone is the one the recipe made.
    assert backbone_digest(a / "model.onnx") == backbone_digest(plain / "model.onnx")
    assert ma["head_refit"]["val_acc_before"] == mp["val_acc"]


def test_refit_head_fold_equals_standardised_head():
    from toolchain.export.qat import refit_head
    from toolchain.heads import make_head
    from toolchain.heads.combine import Standardizer
    from toolchain.heads.dense import run_dense

    rng = np.random.default_rng(3)
    x = (rng.normal(size=(60, 8)) * rng.uniform(0.1, 5, size=8) + rng.normal(size=8)).astype(np.float32)
    y = (x[:, 0] + x[:, 3] > np.median(x[:, 0] + x[:, 3])).astype(np.int64)
    folded = refit_head("softmax", 3, 0, x, y, 2)
    std = Standardizer.fit(x)
    plain = make_head("softmax", 3, 0).fit(std(x), y, 2)
    np.testing.assert_allclose(run_dense(folded, x), plain.logits(std(x)), rtol=1e-4, atol=1e-4)
    again = refit_head("softmax", 3, 0, x, y, 2)
    assert all(np.array_equal(p.weight, q.weight) for p, q in zip(folded, again, strict=True))


@pytest.mark.parametrize("recipe", ["static-qdq-percentile", "static-qdq-entropy"])
def test_histogram_recipes_calibrate_on_inputs_of_different_lengths(tiny_int8_run, tmp_path, recipe):
    # onnxruntime's histogram calibrators stack activations across samples; real-length inputs
    # of different lengths raised "inhomogeneous shape" there (CI's rpi4 profile, a traceback).
    run_dir = _fresh_copy(tiny_int8_run, tmp_path / "run")
    cid = max((c for c in json.loads((run_dir / "leaderboard.json").read_text())["candidates"]
               if (run_dir / "heads" / f"{c['id']}.safetensors").is_file() and c["depth"] > 0),
              key=lambda c: (c["val_acc"], c["id"]))["id"]
    out, meta = export_artefact(run_dir, cid, "int8-static", recipes=(recipe,), head_refit=False)
    assert meta["recipe"] == recipe and "skipped" not in meta["recipes_tried"][0]
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really calibrated and quantized


def test_padded_calibration_has_one_length_and_keeps_the_real_tokens():
    from toolchain.export.quantize import padded_to_common_length

    samples = [(np.array([[101, 7, 102]]), np.ones((1, 3), np.int64)),
               (np.array([[101, 102]]), np.ones((1, 2), np.int64))]
    padded = padded_to_common_length(samples)
    assert {ids.shape for ids, _ in padded} == {(1, 3)}
    assert padded[1][0].tolist() == [[101, 102, 0]] and padded[1][1].tolist() == [[1, 1, 0]]
    assert padded[0][0].tolist() == [[101, 7, 102]]
