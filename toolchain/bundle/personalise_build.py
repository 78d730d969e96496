"""What a Linux bundle ships for on-board personalisation (``runner.py --learn``).

- ``personalise_board.py``: the learning code the runner loads (numpy only);
- ``head.npz``: the shipped head's dense layers (the ONNX graph holds the same weights, but a
  board refits them in numpy on the graph's ``features`` output);
- ``anchor.npz``: the *anchor set*, a stratified sample of the training split's features
  (``ANCHOR_PER_CLASS`` per class, float16, computed by this very ``model.onnx`` so they are the
  features the board will see), half of each class marked ``check``: the other half is fitted
  on with the user's examples so that old classes are not forgotten, the check half measures
  whether they were.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .personalise_board import DEFAULT_MAX_ANCHOR_DROP

BOARD_MODULE = Path(__file__).resolve().parent / "personalise_board.py"
ANCHOR_PER_CLASS = 64
ANCHOR_SEED = 0


def anchor_indices(labels: np.ndarray, per_class: int = ANCHOR_PER_CLASS, seed: int = ANCHOR_SEED):
    """(indices, check mask): up to ``per_class`` random rows of each class, every other one of
    each class's rows marked for the check half."""
    rng = np.random.default_rng(seed)
    picked, check = [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = np.sort(rng.choice(rows, size=min(per_class, len(rows)), replace=False))
        picked += take.tolist()
        check += [i % 2 == 1 for i in range(len(take))]
    return np.asarray(picked, dtype=np.int64), np.asarray(check, dtype=bool)


def onnx_features(model: Path, tokenizer_dir: Path, texts, max_length: int) -> np.ndarray:
    """The graph's ``features`` output for each text, at batch 1 (as the board computes them)."""
    from ..export.text_inputs import encode, load_tokenizer
    from ..export.validate import ort_session

    session = ort_session(model)
    rows = []
    for ids in encode(load_tokenizer(tokenizer_dir, max_length), texts):
        feed = {"input_ids": ids[None, :], "attention_mask": np.ones((1, len(ids)), np.int64)}
        rows.append(session.run(["features"], feed)[0][0])
    return np.stack(rows).astype(np.float32)


def write_personalisation(folder: Path, head_layers, dataset, max_length: int, save_npz) -> dict:
    """Write the three files into the bundle ``folder``; return the manifest's ``personalise``."""
    labels = np.asarray(dataset.train.labels)
    idx, check = anchor_indices(labels)
    feats = onnx_features(folder / "model.onnx", folder, [dataset.train.texts[i] for i in idx], max_length)
    save_npz(folder / "anchor.npz", features=feats.astype(np.float16),
             labels=labels[idx].astype(np.int16), check=check.astype(np.uint8))
    arrays = {}
    for i, layer in enumerate(head_layers):
        arrays[f"w{i}"] = np.asarray(layer.weight, np.float32)
        arrays[f"b{i}"] = np.asarray(layer.bias, np.float32)
    save_npz(folder / "head.npz", **arrays)
    shutil.copyfile(BOARD_MODULE, folder / "personalise_board.py")
    os.chmod(folder / "personalise_board.py", 0o644)
    return {
        "module": "personalise_board.py",
        "head": "head.npz",
        "anchor": "anchor.npz",
        "activations": [layer.activation for layer in head_layers],
        "feature_dim": int(feats.shape[1]),
        "anchor_per_class": ANCHOR_PER_CLASS,
        "anchor_rows": int(len(idx)),
        "anchor_source": "train split, stratified (seed 0), features from this model.onnx, float16",
        "max_anchor_drop": DEFAULT_MAX_ANCHOR_DROP,
        "usage": "python3 runner.py --learn FILE.jsonl|FILE.csv | --rollback | --head-status",
    }
