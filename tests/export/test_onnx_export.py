"""Export of a candidate to ONNX: truncation, validation against PyTorch, int8 recipes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from export_runs import kept_candidates, run_in_home

from toolchain.errors import ValidationMismatchError
from toolchain.export.artefact import export_artefact, read_artefact
from toolchain.export.validate import ReferenceSet, validate_artefact


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert, toy_spec) -> Path:
    return run_in_home(tmp_path_factory.mktemp("export-home"), tiny_bert, toy_spec, max_combinations=4,
                       heads=(("softmax", 3), ("elm", 32)))


def _shallow_id(run_dir: Path) -> str:
    return min(kept_candidates(run_dir), key=lambda c: (c["depth"], c["id"]))["id"]


def test_fp32_export_matches_pytorch_and_is_truncated(tiny_run):
    board = json.loads((tiny_run / "leaderboard.json").read_text())
    cid = _shallow_id(tiny_run)
    entry = next(c for c in board["candidates"] if c["id"] == cid)
    out, meta = export_artefact(tiny_run, cid, "fp32")
    assert meta["validation"]["passed"] and meta["validation"]["max_abs_prob"] <= 5e-4
    model = onnx.load(str(out / "model.onnx"))
    layer_nodes = {n.name.split("/")[1] for n in model.graph.node if n.name.startswith("/layer.")}
    # Layers above the deepest used one are gone from the file, not skipped at run time.
    assert layer_nodes == {f"layer.{i}" for i in range(entry["depth"])}
    assert (out / "tokenizer.json").is_file() and (out / "reference.npz").is_file()
    assert 0.0 <= meta["val_acc"] <= 1.0
    assert read_artefact(out) is not None  # hashes recorded and consistent


def test_int8_export_records_recipe_and_accuracy(tiny_run):
    cid = _shallow_id(tiny_run)
    _, fp32 = export_artefact(tiny_run, cid, "fp32")
    out, meta = export_artefact(tiny_run, cid, "int8-dynamic")
    assert meta["precision"] == "int8-dynamic" and meta["candidate_id"] != cid
    assert meta["recipe"].removesuffix("+head-refit") in [t["recipe"] for t in meta["recipes_tried"]]
    assert meta["accuracy_guard"] in ("ok", "fell back", "infeasible")
    # The accuracy is measured from the artefact; the guard's verdict must agree with it.
    drop = fp32["val_acc"] - meta["val_acc"]
    assert (meta["accuracy_guard"] != "infeasible") == (drop <= meta["max_accuracy_drop"] and meta["validation"]["passed"])
    assert meta["fp32_nodes"]["count"] == len(meta["fp32_nodes"]["names"])
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "DequantizeLinear"}


def test_corrupted_artefact_fails_validation(tiny_run, tmp_path):
    cid = _shallow_id(tiny_run)
    out, _ = export_artefact(tiny_run, cid, "fp32")
    model = onnx.load(str(out / "model.onnx"))
    # Change the head's weights: the graph still runs, but no longer reproduces PyTorch.
    for init in model.graph.initializer:
        if "head_w" in init.name:
            arr = onnx.numpy_helper.to_array(init).copy()
            arr += np.float32(0.5) * np.sign(arr + 1e-3)
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    ref = ReferenceSet.load(out / "reference.npz")
    with pytest.raises(ValidationMismatchError, match="differs from PyTorch"):
        validate_artefact(bad, ref, "fp32")


def test_tampered_artefact_is_rebuilt_not_trusted(tiny_run):
    cid = _shallow_id(tiny_run)
    out, _ = export_artefact(tiny_run, cid, "fp32")
    copy = out.parent / f"{out.name}-copy"
    shutil.copytree(out, copy)
    with open(copy / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    assert read_artefact(copy) is None
