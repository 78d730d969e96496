"""Load a declared dataset into labelled splits: train, validation (carved when absent), test."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DatasetError
from ..specfile import shown, visible
from .readers import read_split
from .spec import DatasetSpec

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Split:
    texts: tuple[str, ...]
    labels: np.ndarray  # int64 indices into Dataset.label_names

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Dataset:
    name: str
    label_names: tuple[str, ...]
    train: Split
    validation: Split
    test: Split | None
    validation_carved: bool

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Split:
        split = getattr(self, name)
        if split is None:
            raise DatasetError(f"dataset '{self.name}' has no {name} split")
        return split

    def fingerprint(self) -> str:
        """Hash of the exact examples, so that a slice or an edited file gets its own cache."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.label_names).encode())
        for name in SPLITS:
            split = getattr(self, name)
            if split is None:
                continue
            h.update(f"\x1e{name}\x1e".encode())
            for text in split.texts:
                h.update(text.encode("utf-8", "surrogatepass") + b"\x1f")
            h.update(split.labels.astype("<i8").tobytes())
        return h.hexdigest()


def stratified_carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split of indices into (keep, carved); every class keeps one example."""
    rng = np.random.default_rng(seed)
    keep, carved = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        n = min(n, len(idx) - 1)
        carved.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(carved))


def first_per_class(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n`` examples of each class, in file order (deterministic slices)."""
    chosen = []
    for cls in np.unique(labels):
        chosen.append(np.flatnonzero(labels == cls)[:n])
    return np.sort(np.concatenate(chosen))


def _raw_splits(spec: DatasetSpec) -> dict[str, tuple[list[str], list[str], list[int], str]]:
    if spec.source == "hub":
        from .hub import read_hub_splits

        return read_hub_splits(spec)
    out = {}
    for name in SPLITS:
        path = spec.path(name)
        if path is None:
            continue
        texts, labels, lines = read_split(spec, path)
        out[name] = (texts, labels, lines, str(path))
    return out


def load_dataset(spec: DatasetSpec, max_per_class: int | None = None, max_eval_per_class: int | None = None) -> Dataset:
    """Read and check every split. ``max_per_class`` slices train (then validation/test with
    ``max_eval_per_class``) to the first N examples of each class, for fast deterministic tests."""
    for key, value in (("max_per_class", max_per_class), ("max_eval_per_class", max_eval_per_class)):
        # 0 used to mean "all" by accident (falsy) and a negative N sliced from the end.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key} = {value!r}: use a whole number of examples >= 1, or leave it unset for all")
    raw = _raw_splits(spec)
    if "train" not in raw:
        raise DatasetError(f"dataset {shown(spec.name)}: no train split; set 'train' in the spec")
    train_texts, train_labels, _, train_src = raw["train"]
    counts = Counter(train_labels)
    if len(counts) < 2:
        only = next(iter(counts))
        raise DatasetError(
            f"{train_src}: the train split has a single class {shown(only)}; a classifier needs at least "
            "two — check label_field / label_part or the file"
        )
    label_names = tuple(sorted(counts))
    index = {name: i for i, name in enumerate(label_names)}

    def encode(name: str) -> Split | None:
        if name not in raw:
            return None
        texts, labels, lines, src = raw[name]
        for label, line in zip(labels, lines, strict=True):
            if label not in index:
                raise DatasetError(
                    f"{src}, line {line}: label {shown(label)} does not occur in train "
                    f"(train labels: {_names(label_names)}); fix the label or add training examples"
                )
        return Split(tuple(texts), np.array([index[lab] for lab in labels], dtype=np.int64))

    train = encode("train")
    validation = encode("validation")
    test = encode("test")
    carved = validation is None
    if carved:
        keep, held = stratified_carve(train.labels, spec.validation_fraction, spec.seed)
        if not len(held):
            raise DatasetError(
                f"dataset {shown(spec.name)}: validation_fraction = {spec.validation_fraction} of {len(train)} "
                "training examples carves no validation example; add examples, raise "
                "validation_fraction, or give a validation split"
            )
        validation = _take(train, held)
        train = _take(train, keep)
        log.info("carved a stratified validation split of %d from train (seed %d)", len(validation), spec.seed)
    if max_per_class:
        train = _take(train, first_per_class(train.labels, max_per_class))
    if max_eval_per_class:
        validation = _take(validation, first_per_class(validation.labels, max_eval_per_class))
        if test is not None:
            test = _take(test, first_per_class(test.labels, max_eval_per_class))
    return Dataset(spec.name, label_names, train, validation, test, carved)


def _names(names: tuple[str, ...], most: int = 20) -> str:
    shown_names = ", ".join(visible(n[:40]) for n in names[:most])
    return shown_names + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _take(split: Split, idx: np.ndarray) -> Split:
    return Split(tuple(split.texts[i] for i in idx), split.labels[idx])
