"""Building an int8 artefact: recipes in order until the accuracy guard holds, then the
quantization-aware head refit, then the guard's verdict (guard.py) written into artefact.json.

Every try is scored from the artefact itself: its outputs against PyTorch on the reference
inputs (the precision's tolerance) and its accuracy on the whole validation split.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import guard
from .quantize import BACKBONE_PRECISIONS, RECIPES, head_nodes, known_recipe
from .text_inputs import TOKENIZER_FILES, encode, load_tokenizer
from .validate import ReferenceSet, compare, ort_session, run_reference

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conversion:
    """What artefact.py lends the int8 build (passed in, not imported: artefact.py calls this
    module, and siblings import one way)."""

    convert: Callable[..., dict]  # quantize.apply_recipe, looked up in artefact.py at call time
    lock: Any  # one conversion at a time in a process (artefact._CONVERTING)
    accuracy: Callable[..., float]  # artefact_accuracy
    versions: dict
    opset: int
    n_calibration: int


def _score(tools: Conversion, path: Path, fp32_dir: Path, ref: ReferenceSet, precision: str, dataset,
           max_length: int):
    check = compare(run_reference(ort_session(path), ref), ref, precision)
    acc = tools.accuracy(path, fp32_dir, dataset.validation.texts, dataset.validation.labels, max_length)
    return check, acc


def quantize_artefact(board: dict, base, cand, out_dir: Path, fp32_dir: Path, fp32_meta: dict, dataset,
                      tools: Conversion, *, max_drop: float, recipes: tuple[str, ...] | None, head_refit: bool) -> dict:
    """Write ``out_dir/model.onnx`` (and the tokenizer and reference files) and return the
    artefact's metadata, verdict included; the caller hashes the files and writes artefact.json."""
    precision = cand.precision
    recipes = tuple(recipes or RECIPES[precision])
    unknown = [r for r in recipes if not known_recipe(r)]
    if unknown:
        raise guard.QuantizationError(f"unknown int8 recipe(s) {', '.join(unknown)}; recipes of {precision}: "
                                      f"{', '.join(RECIPES[precision])}")
    ref = ReferenceSet.load(fp32_dir / "reference.npz")
    tok = load_tokenizer(fp32_dir, base.max_length)
    fp32_acc = fp32_meta["val_acc"]

    def calibration():
        rng = np.random.default_rng(0)
        pick = rng.choice(len(dataset.train), size=min(tools.n_calibration, len(dataset.train)), replace=False)
        return [(x[None, :], np.ones((1, len(x)), np.int64)) for x in encode(tok, [dataset.train.texts[i] for i in pick])]

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES + ("reference.npz",):
        if (fp32_dir / name).is_file():
            shutil.copyfile(fp32_dir / name, out_dir / name)
    # The head stays fp32 in a backbone recipe: it is small, and the refit replaces its weights.
    keep = head_nodes(fp32_dir / "model.onnx") if precision in BACKBONE_PRECISIONS else []
    tried, best = [], None
    for i, recipe in enumerate(recipes):
        staging = out_dir / f".{recipe}.onnx"
        with tools.lock:
            info = tools.convert(recipe, fp32_dir / "model.onnx", staging, calibration, keep_fp32=keep)
        if info["n_quantizable"] == len(info["fp32_nodes"]):
            # e.g. a static (MatMul-only) recipe on a depth-0 candidate: nothing is int8, so it
            # says nothing about int8 and must not pass for it.
            tried.append({"recipe": recipe, "skipped": "quantizes no node", "fp32_nodes": info["fp32_nodes"]})
            staging.unlink()
            continue
        check, acc = _score(tools, staging, fp32_dir, ref, precision, dataset, base.max_length)
        entry = {"recipe": recipe, "val_acc": acc, "accuracy_drop": fp32_acc - acc, "validation": check.to_dict(),
                 "model_bytes": staging.stat().st_size, "fp32_nodes": info["fp32_nodes"]}
        if "node_errors" in info:
            entry["node_errors_worst"] = info["node_errors"][:10]
        tried.append(entry)
        log.info("%s %s: val acc %.4f (drop %.4f), max |dprob| %.3g", cand.id, recipe, acc, fp32_acc - acc,
                 check.max_abs_prob)
        if best is None or acc > best["acc"]:
            best = {"recipe": recipe, "acc": acc, "check": check, "path": staging, "index": i, "entry": entry}
        if guard.holds(fp32_acc, acc, check.passed, max_drop):
            break
    if best is None:
        raise guard.QuantizationError(
            f"candidate {cand.id}: none of the {precision} recipes {', '.join(recipes)} quantizes any of its "
            "nodes; use its fp32 variant")
    refit = None
    if head_refit and keep:
        refit = _refit(tools, board, base, best, out_dir, fp32_dir, ref, precision, dataset, tok)
        if refit["kept"]:
            best = {**best, "acc": refit["val_acc_after"], "check": refit.pop("check"), "path": refit.pop("path"),
                    "index": len(recipes)}
        else:
            refit.pop("check"), refit.pop("path")
    best["path"].replace(out_dir / "model.onnx")
    for leftover in out_dir.glob(".*.onnx"):
        leftover.unlink()
    acc, check = best["acc"], best["check"]
    verdict, why = guard.verdict(fp32_acc, acc, check.passed, max_drop, first_try=best["index"] == 0)
    if verdict == guard.INFEASIBLE:
        log.warning("%s: %s infeasible: %s", cand.id, precision, why)
    fp32_names = best["entry"]["fp32_nodes"]
    recipe = best["recipe"] + ("+head-refit" if refit and refit["kept"] else "")
    return {
        "schema": 1, "candidate": cand.to_dict(), "candidate_id": cand.id, "base_candidate_id": base.id,
        "precision": precision, "recipe": recipe, "recipes_tried": tried,
        "fp32_nodes": {"count": len(fp32_names), "names": fp32_names,
                       "head": [n for n in fp32_names if n in set(keep)]},
        "head_refit": refit, "validation": check.to_dict(),
        "val_acc": acc, "fp32_val_acc": fp32_acc, "accuracy_drop": fp32_acc - acc,
        "max_accuracy_drop": max_drop, "accuracy_guard": verdict, "guard_reason": why, "opset": tools.opset,
        "label_names": board["label_names"], "exporter": "torch.onnx (TorchScript) + onnxruntime.quantization",
        "versions": tools.versions, "runtime": "onnxruntime", "max_length": base.max_length,
    }


def _refit(tools, board, base, best, out_dir, fp32_dir, ref, precision, dataset, tok) -> dict:
    """Refit the head on features extracted through ``best``'s int8 graph; keep it only when it
    scores higher on validation (both measured from the artefacts)."""
    from .qat import (
        backbone_digest,
        extract_features,
        head_accuracy,
        refit_head,
        refit_rows,
        write_refit,
    )

    seed = int(board.get("seed", 0))
    rows = refit_rows(dataset.train.labels, seed)
    x_train = extract_features(best["path"], tok, [dataset.train.texts[i] for i in rows])
    x_val = extract_features(best["path"], tok, dataset.validation.texts)
    layers = refit_head(base.head, base.head_size, seed, x_train, np.asarray(dataset.train.labels)[rows],
                        len(board["label_names"]))
    path = out_dir / f".{best['recipe']}+head-refit.onnx"
    write_refit(best["path"], path, layers)
    if backbone_digest(path) != backbone_digest(best["path"]):
        raise guard.QuantizationError(f"candidate {base.id}: the head refit changed the backbone's nodes; "
                                      "this is a codesign bug, report it")
    check, acc = _score(tools, path, fp32_dir, ref, precision, dataset, base.max_length)
    kept = acc > best["acc"]
    log.info("%s head refit on int8 features: val acc %.4f -> %.4f (%s)", base.id, best["acc"], acc,
             "kept" if kept else "not kept")
    return {"on_recipe": best["recipe"], "val_acc_before": best["acc"], "val_acc_after": acc,
            "head_val_acc_on_int8_features": head_accuracy(layers, x_val, np.asarray(dataset.validation.labels)),
            "kept": kept, "train_rows": len(rows), "seed": seed, "head": base.head, "head_size": base.head_size,
            "standardiser": "refitted on int8 features, folded into the first head layer",
            "validation": check.to_dict(), "check": check, "path": path}
