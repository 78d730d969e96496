"""Fit candidates on cached features. Standardised layers and combined inputs are cached in
memory, so the heads of one feature set share the work."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..features.layers import LayerFeatures
from ..heads import make_head
from ..heads.base import Head, accuracy, macro_f1
from ..heads.combine import Standardizer, combine, learn_scalar_mix
from ..heads.dense import DenseLayer
from .candidate import Candidate


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_budget_bytes(budget_mib: int | None) -> int | None:
    """The fits' memory budget: ``budget_mib`` when given, else half of the memory available
    now (the other half is for the cache's page cache, the exporter and the rest of the
    machine); None (no budget) where the available memory is unknown."""
    if budget_mib is not None:
        return int(budget_mib) * 1024 * 1024
    available = available_memory_bytes()
    return None if available is None else available // 2


class FeatureBank:
    """Standardised per-layer features of one backbone at one max length.

    With ``memory_budget_bytes`` set, a candidate whose in-memory working set would exceed it is
    fitted by ``fit_streamed`` from the mapped chunks instead (``streams``), and the layers
    cached for earlier candidates are dropped when the next one would not fit beside them."""

    def __init__(self, features: LayerFeatures, y: dict[str, np.ndarray], n_classes: int,
                 memory_budget_bytes: int | None = None) -> None:
        self.features = features
        self.y = y
        self.n_classes = n_classes
        self.memory_budget_bytes = memory_budget_bytes
        self._std: dict[tuple[str, int], Standardizer] = {}
        self._mix: dict[tuple, np.ndarray] = {}
        self._combined: dict[tuple, dict[str, np.ndarray]] = {}
        self._layers: dict[tuple[str, str, int], np.ndarray] = {}

    def standardizer(self, pooling: str, layer: int) -> Standardizer:
        key = (pooling, layer)
        if key not in self._std:
            self._std[key] = Standardizer.fit(self.features.get("train", pooling, layer))
        return self._std[key]

    def layer(self, split: str, pooling: str, layer: int) -> np.ndarray:
        key = (split, pooling, layer)
        if key not in self._layers:
            self._layers[key] = self.standardizer(pooling, layer)(self.features.get(split, pooling, layer))
        return self._layers[key]

    def mix_weights(self, cand: Candidate) -> np.ndarray | None:
        if cand.combine != "scalarmix":
            return None
        key = (cand.pooling, cand.layers)
        if key not in self._mix:
            parts = [self.layer("train", cand.pooling, la) for la in cand.layers]
            self._mix[key] = learn_scalar_mix(parts, self.y["train"], self.n_classes)
        return self._mix[key]

    def inputs(self, cand: Candidate, split: str) -> np.ndarray:
        key = cand.feature_key
        cached = self._combined.setdefault(key, {})
        if split not in cached:
            parts = [self.layer(split, cand.pooling, la) for la in cand.layers]
            cached[split] = combine(parts, cand.combine, self.mix_weights(cand))
        return cached[split]

    def working_set_bytes(self, cand: Candidate) -> int:
        """float32 bytes an in-memory fit of ``cand`` holds: each layer raw and standardised,
        every split, plus the combined inputs when they are a new array (not ``single``)."""
        rows = sum(len(v) for v in self.y.values())
        per_layer = rows * self.features.dim * 4
        combined = 0 if cand.combine == "single" else rows * self.features.dim * 4 * (
            len(cand.layers) if cand.combine == "concat" else 1)
        return 2 * per_layer * len(cand.layers) + combined

    def streams(self, cand: Candidate) -> bool:
        return self.memory_budget_bytes is not None and self.working_set_bytes(cand) > self.memory_budget_bytes

    def cached_bytes(self) -> int:
        arrays = [*self._layers.values(), *(a for d in self._combined.values() for a in d.values())]
        return sum(a.nbytes for a in arrays)

    def make_room(self, cand: Candidate) -> None:
        """Drop cached layers and inputs of other feature sets when ``cand`` would not fit
        beside them (a search over many layers of a large corpus would otherwise keep all)."""
        if self.memory_budget_bytes is None:
            return
        if self.cached_bytes() + self.working_set_bytes(cand) > self.memory_budget_bytes:
            self.forget({cand.feature_key})
            used = {(cand.pooling, la) for la in cand.layers}
            for key in [k for k in self._layers if (k[1], k[2]) not in used]:
                del self._layers[key]

    def forget(self, keep_keys: set) -> None:
        """Drop combined inputs no longer needed (SST-2 concatenations are ~300 MB each)."""
        for key in list(self._combined):
            if key not in keep_keys:
                del self._combined[key]


@dataclass
class FittedCandidate:
    candidate: Candidate
    head: Head
    standardizers: list[Standardizer]
    mix: np.ndarray | None
    val_acc: float
    fit_seconds: float
    fidelity: str = "full"  # or "screen-<rows>": fitted on a sample of train only (screening.py)
    screen_val_acc: float | None = None  # its screening score, when it was promoted from one
    streamed: bool = False  # fitted from the mapped chunks (over the bank's memory budget)

    def evaluate(self, bank: FeatureBank, split: str) -> tuple[float, float]:
        y = bank.y[split]
        if self.streamed:
            rows = StreamedInputs(bank.features, split, self.candidate, self.standardizers, self.mix, y)
            pred = np.concatenate([self.head.predict(x) for x, _ in rows])
        else:
            pred = self.head.predict(bank.inputs(self.candidate, split))
        return accuracy(pred, y), macro_f1(pred, y, bank.n_classes)

    def save(self, path: Path) -> None:
        """Everything an exporter needs to rebuild the feature path and head, as safetensors."""
        from safetensors.numpy import save_file

        tensors = {}
        for i, std in enumerate(self.standardizers):
            tensors[f"std.{i}.mean"], tensors[f"std.{i}.std"] = std.mean, std.std
        if self.mix is not None:
            tensors["mix"] = self.mix
        for i, layer in enumerate(self.head.layers):
            tensors[f"head.{i}.weight"], tensors[f"head.{i}.bias"] = layer.weight, layer.bias
        meta = {"candidate": json.dumps(self.candidate.to_dict()),
                "activations": json.dumps([la.activation for la in self.head.layers]),
                "val_acc": str(self.val_acc)}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(path), metadata=meta)


@dataclass(frozen=True)
class SavedHead:
    """A fitted candidate read back from disk, independent of the feature bank."""

    candidate: Candidate
    standardizers: list[Standardizer]
    mix: np.ndarray | None
    layers: list[DenseLayer]
    val_acc: float

    @classmethod
    def load(cls, path: Path) -> SavedHead:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata()
            t = {k: fh.get_tensor(k) for k in fh.keys()}
        cand = Candidate.from_dict(json.loads(meta["candidate"]))
        acts = json.loads(meta["activations"])
        stds = [Standardizer(t[f"std.{i}.mean"], t[f"std.{i}.std"]) for i in range(len(cand.layers))]
        layers = [DenseLayer(t[f"head.{i}.weight"], t[f"head.{i}.bias"], acts[i]) for i in range(len(acts))]
        return cls(cand, stds, t.get("mix"), layers, float(meta["val_acc"]))


def fit_candidate(cand: Candidate, bank: FeatureBank, seed: int = 0) -> FittedCandidate:
    """Fit in memory, or streamed from the mapped chunks when over the bank's memory budget."""
    import time

    if bank.streams(cand):
        fitted = fit_streamed(cand, bank.features, bank.y, bank.n_classes, seed)
        fitted.streamed = True
        return fitted
    bank.make_room(cand)
    started = time.perf_counter()
    x = bank.inputs(cand, "train")
    head = make_head(cand.head, cand.head_size, seed).fit(x, bank.y["train"], bank.n_classes)
    val = accuracy(head.predict(bank.inputs(cand, "validation")), bank.y["validation"])
    stds = [bank.standardizer(cand.pooling, la) for la in cand.layers]
    return FittedCandidate(cand, head, stds, bank.mix_weights(cand), val, time.perf_counter() - started)


class StreamedInputs:
    """One split's inputs of a candidate (standardised layers, combined), read block by block
    from the memory-mapped features: a RowSource (heads/stream.py) for ``Head.fit_stream``.

    Each block is one cache chunk; the rows of a block are standardised and combined exactly as
    ``FeatureBank.inputs`` does for the whole split, so block i equals rows of chunk i there."""

    def __init__(self, features: LayerFeatures, split: str, cand: Candidate, stds: list[Standardizer],
                 mix: np.ndarray | None, y: np.ndarray) -> None:
        self.maps = [features.mapped(split, cand.pooling, la) for la in cand.layers]
        self.cand, self.stds, self.mix, self.y = cand, stds, mix, np.asarray(y)
        width = self.maps[0].dim
        self.dim = width * len(cand.layers) if cand.combine == "concat" else width
        if len(self.maps[0]) != len(self.y):
            raise ValueError(f"{split}: {len(self.maps[0])} feature rows but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def _combine(self, raw: list[np.ndarray]) -> np.ndarray:
        return combine([std(x) for std, x in zip(self.stds, raw, strict=True)], self.cand.combine, self.mix)

    def __iter__(self):
        for i, (a, b) in enumerate(self.maps[0].block_bounds()):
            yield self._combine([m.block(i) for m in self.maps]), self.y[a:b]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self._combine([m.take(rows) for m in self.maps])


def streamed_standardizer(features: LayerFeatures, pooling: str, layer: int) -> Standardizer:
    """Train statistics of one layer, merged chunk by chunk (no layer is loaded whole)."""
    from ..heads.stream import Moments

    moments = Moments()
    for block in features.mapped("train", pooling, layer).blocks():
        moments.update(block)
    return Standardizer.from_moments(moments)


def fit_streamed(cand: Candidate, features: LayerFeatures, y: dict[str, np.ndarray], n_classes: int,
                 seed: int = 0) -> FittedCandidate:
    """``fit_candidate`` for features larger than memory: statistics, the scalar mix's sample,
    the head and the validation score all read the mapped chunks block by block (ridge/ELM:
    normal equations; softmax: full-batch L-BFGS over blocks; MLP: gathered minibatches)."""
    import time

    from ..data.dataset import stratified_carve
    from ..heads.combine import MIX_MAX_ROWS

    started = time.perf_counter()
    stds = [streamed_standardizer(features, cand.pooling, la) for la in cand.layers]
    mix = None
    if cand.combine == "scalarmix":
        # The sample the in-memory mix draws: the same rows, standardised the same way.
        rows = np.arange(len(y["train"]))
        if len(rows) > MIX_MAX_ROWS:
            _, rows = stratified_carve(y["train"], MIX_MAX_ROWS / len(rows), seed=0)
        parts = [std(features.mapped("train", cand.pooling, la).take(rows))
                 for std, la in zip(stds, cand.layers, strict=True)]
        mix = learn_scalar_mix(parts, y["train"][rows], n_classes, max_rows=len(rows))
    train = StreamedInputs(features, "train", cand, stds, mix, y["train"])
    head = make_head(cand.head, cand.head_size, seed).fit_stream(train, n_classes)
    val = StreamedInputs(features, "validation", cand, stds, mix, y["validation"])
    pred = np.concatenate([head.predict(x) for x, _ in val])
    return FittedCandidate(cand, head, stds, mix, accuracy(pred, val.y), time.perf_counter() - started)
