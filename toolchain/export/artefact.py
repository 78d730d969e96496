"""Candidate → validated, optionally quantized ONNX artefact folder.

``<run>/artefacts/<candidate id>/`` holds model.onnx, the tokenizer files, reference.npz (inputs
and PyTorch's outputs, for self-checks) and artefact.json (what it is, how it was checked, the
accuracy measured from the artefact itself, and the sha256 of every file).

Several workers (one per board of ``codesign profile --target A --target B``, or two processes)
may ask for the same artefact at once. Each folder is built under its own lock
(:func:`toolchain.locks.directory_lock`) and checked again once the lock is held, so the first
one builds it and the others reuse it; none writes into a folder another is writing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ExportError, QuantizationError, RunDirError
from ..features.cache import atomic_write_json
from ..locks import directory_lock
from ..search.candidate import Candidate
from ..search.fit import SavedHead
from .quantize import RECIPES, apply_recipe
from .text_inputs import TOKENIZER_FILES, batched_probs, encode, load_tokenizer, pack
from .validate import ReferenceSet, ort_session, validate_artefact
from .vocab import write_pruned_tokenizer

log = logging.getLogger(__name__)
OPSET = 17
N_REFERENCE = 16
N_CALIBRATION = 64
# torch.onnx.export and the quantizer keep module-level state (torch.onnx's export globals):
# one conversion at a time in this process. Checks and accuracy runs stay parallel.
_CONVERTING = threading.Lock()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _run_context(run_dir: Path, board: dict):
    """The dataset a run used (checked against its fingerprint) and the backbone resolver."""
    from ..features.backbone import resolve_model
    from ..rundir import RunDir

    return RunDir(Path(run_dir), board).dataset(), resolve_model


def export_fp32(saved: SavedHead, model_path: str, out_dir: Path, dataset,
                pruning=None) -> tuple[Path, ReferenceSet, object]:
    """``pruning`` (a :class:`~toolchain.export.vocab.VocabPruning`): the embedding table cut to the
    kept rows and the remapped tokenizer.json written instead of the backbone's (no vocab.txt:
    its line numbers would be the unpruned ids). Its dropped pieces are read as their nearest
    kept pieces, found in the backbone loaded here; the pruning used is returned (or None)."""
    import torch

    from ..features.backbone import load_backbone, resolve_model
    from .graph import build_module
    from .vocab import nearest_kept_substitutes, special_token_ids

    ref_model = resolve_model(model_path)
    tokenizer, model = load_backbone(ref_model)
    if pruning is not None and pruning.substitute is None:
        doc = json.loads((Path(ref_model.path) / "tokenizer.json").read_text(encoding="utf-8"))
        pruning = nearest_kept_substitutes(pruning, model.embeddings.word_embeddings.weight.detach().numpy(),
                                           exclude=special_token_ids(doc))
    module = build_module(model, saved, with_features=True, pruning=pruning)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        src = Path(ref_model.path) / name
        if pruning is not None and name in ("tokenizer.json", "vocab.txt"):
            if name == "tokenizer.json" and src.is_file():
                write_pruned_tokenizer(src, out_dir / name, pruning)
        elif src.is_file():
            shutil.copyfile(src, out_dir / name)
    if not (out_dir / "tokenizer.json").is_file():
        raise ExportError(f"backbone {ref_model.name}: no tokenizer.json; boards need a fast tokenizer file")
    tok = load_tokenizer(out_dir, saved.candidate.max_length)
    input_ids, mask, lengths = pack(encode(tok, dataset.validation.texts[:N_REFERENCE]))
    with torch.inference_mode():
        expected = np.stack([
            module(torch.from_numpy(input_ids[i : i + 1, :n]), torch.from_numpy(mask[i : i + 1, :n]))[0].numpy()[0]
            for i, n in enumerate(lengths)
        ])
    ref = ReferenceSet(input_ids, mask, lengths, expected)
    path = out_dir / "model.onnx"
    sample = (torch.from_numpy(input_ids[:1, : lengths[0]]), torch.from_numpy(mask[:1, : lengths[0]]))
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "probs": {0: "batch"},
            "features": {0: "batch"}}
    try:
        # The TorchScript exporter writes one self-contained file (the dynamo one splits out
        # external data), which is what a board wants.
        with _CONVERTING:
            torch.onnx.export(module, sample, str(path), input_names=["input_ids", "attention_mask"],
                              output_names=["probs", "features"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except Exception as exc:  # the exporter raises many types; report it as one error
        raise ExportError(f"candidate {saved.candidate.id}: ONNX export failed: {exc}") from exc
    ref.save(out_dir / "reference.npz")
    return path, ref, pruning


def artefact_accuracy(model_path: Path, tokenizer_dir: Path, texts, labels, max_length: int) -> float:
    tok = load_tokenizer(tokenizer_dir, max_length)
    probs = batched_probs(ort_session(model_path, threads=2), encode(tok, texts))
    return float((probs.argmax(1) == labels).mean())


def _finish(out_dir: Path, meta: dict) -> dict:
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name != "artefact.json")
    meta["files"] = {name: sha256_file(out_dir / name) for name in files}
    meta["model_bytes"] = (out_dir / "model.onnx").stat().st_size
    atomic_write_json(out_dir / "artefact.json", meta)
    return meta


def read_artefact(out_dir: Path) -> dict | None:
    path = out_dir / "artefact.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    for name, digest in meta["files"].items():
        if not (out_dir / name).is_file() or sha256_file(out_dir / name) != digest:
            return None  # incomplete or changed: rebuild
    return meta


def export_artefact(run_dir: Path, candidate_id: str, precision: str = "fp32",
                    max_accuracy_drop: float = 0.01, vocab: str | None = None,
                    recipes: tuple[str, ...] | None = None, head_refit: bool = True) -> tuple[Path, dict]:
    """Export (or reuse) the artefact of ``candidate_id`` at ``precision``; ``vocab`` (``full`` or
    ``pruned``) overrides the candidate's own (a pruned artefact uses the same head).

    int8: ``recipes`` (default: the precision's, in order) are tried until one holds the accuracy
    guard (guard.py), then the head is refitted on the int8 features (qat.py) unless
    ``head_refit`` is False. An artefact once built is reused whatever these two options are: its
    artefact.json says which recipes were tried, whether the refit ran and the guard's verdict."""
    from ..rundir import RunDir

    run_dir = Path(run_dir)
    board = RunDir.open(run_dir).board
    head_path = run_dir / "heads" / f"{candidate_id}.safetensors"
    if not head_path.is_file():
        raise RunDirError(f"{run_dir}: no trained head for candidate {candidate_id}; only Pareto and selected "
                          "candidates are kept — pick one of those (codesign show RUN_DIR)")
    saved = SavedHead.load(head_path)
    if vocab is not None and vocab != saved.candidate.vocab:
        saved = replace(saved, candidate=replace(saved.candidate, vocab=vocab))
    base: Candidate = saved.candidate
    full_vocab = None
    if base.vocab == "pruned":  # validated against the unpruned twin, which is built first
        full_vocab = export_artefact(run_dir, candidate_id, "fp32", max_accuracy_drop, vocab="full")
    fp32_dir = run_dir / "artefacts" / base.id
    dataset = None
    meta = read_artefact(fp32_dir)
    if meta is None:
        # The dataset check first: a changed dataset must not leave an empty folder behind.
        dataset, _ = _run_context(run_dir, board)
        with directory_lock(fp32_dir):
            meta = read_artefact(fp32_dir)  # built by another worker while this one waited?
            if meta is None:
                meta = _fp32(board, saved, fp32_dir, dataset, full_vocab)
    if precision == "fp32":
        return fp32_dir, meta
    options = {"max_drop": max_accuracy_drop, "recipes": recipes, "head_refit": head_refit}
    return _quantized(run_dir, board, base, fp32_dir, meta, precision, options, dataset)


def _fp32(board: dict, saved: SavedHead, fp32_dir: Path, dataset, full_vocab=None) -> dict:
    base = saved.candidate
    model_path = board["models"][base.backbone]["path"]
    pruning = vocab_meta = None
    if full_vocab is not None:
        from .vocab import prune_for_texts
        from .vocab_artefact import compare_with_full

        pruning = prune_for_texts(full_vocab[0] / "tokenizer.json", dataset.train.texts)
    path, ref, pruning = export_fp32(saved, model_path, fp32_dir, dataset, pruning)
    check = validate_artefact(path, ref, "fp32")
    acc = artefact_accuracy(path, fp32_dir, dataset.validation.texts, dataset.validation.labels, base.max_length)
    if pruning is not None:
        vocab_meta = compare_with_full(full_vocab[0], fp32_dir, pruning, dataset, base.max_length)
    return _finish(fp32_dir, {**({"vocab": vocab_meta} if vocab_meta else {}),
        "schema": 1, "candidate": base.to_dict(), "candidate_id": base.id, "base_candidate_id": base.id,
        "precision": "fp32", "recipe": "", "validation": check.to_dict(), "val_acc": acc,
        "fp32_val_acc": acc, "accuracy_guard": "ok", "opset": OPSET, "label_names": board["label_names"],
        "exporter": "torch.onnx (TorchScript)", "versions": _versions(), "runtime": "onnxruntime",
        "max_length": base.max_length,
    })


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"codesign": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _quantized(run_dir, board, base, fp32_dir, fp32_meta, precision, options, dataset):
    if precision not in RECIPES:
        raise QuantizationError(f"precision '{precision}' has no int8 recipe; use one of {', '.join(RECIPES)}")
    cand = replace(base, precision=precision)
    out_dir = run_dir / "artefacts" / cand.id
    meta = read_artefact(out_dir)
    if meta is not None:
        return out_dir, meta
    if dataset is None:
        dataset, _ = _run_context(run_dir, board)
    with directory_lock(out_dir):
        meta = read_artefact(out_dir)  # built by another worker while this one waited?
        if meta is None:
            from .int8 import Conversion, quantize_artefact

            tools = Conversion(apply_recipe, _CONVERTING, artefact_accuracy, _versions(), OPSET, N_CALIBRATION)
            meta = quantize_artefact(board, base, cand, out_dir, fp32_dir, fp32_meta, dataset, tools, **options)
            meta = _finish(out_dir, meta)
    return out_dir, meta
