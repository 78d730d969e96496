"""Per-layer features of a dataset: load from the cache, or extract what is missing."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from ..data.dataset import SPLITS, Dataset
from ..progress import progress_bar
from .backbone import ModelRef, load_backbone
from .cache import FEATURE_FORMAT_VERSION, FeatureCache, cache_key
from .extract import POOLINGS, extract_pooled, tokenize

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 1024


@dataclass
class LayerFeatures:
    """Pooled features per split and pooling, shaped [layers+1, examples, dim]."""

    model: ModelRef
    max_length: int
    poolings: tuple[str, ...]
    splits: dict[str, dict[str, np.ndarray]]
    lengths: dict[str, np.ndarray]  # real token counts per example (after truncation)
    cache_dir: str
    extracted_chunks: int  # chunks computed by this call (0 when all came from the cache)
    extract_seconds: float

    @property
    def n_layers(self) -> int:
        return next(iter(self.splits["train"].values())).shape[0]

    def get(self, split: str, pooling: str, layer: int) -> np.ndarray:
        return self.splits[split][pooling][layer]


def _chunk_count(n: int, chunk: int) -> int:
    return max(1, math.ceil(n / chunk))


def layer_features(
    dataset: Dataset,
    model: ModelRef,
    max_length: int,
    poolings: tuple[str, ...] = POOLINGS,
    cache_root=None,
    chunk_size: int | None = None,
    batch_size: int = 64,
) -> LayerFeatures:
    from ..paths import codesign_home

    chunk_size = chunk_size or int(os.environ.get("CODESIGN_CHUNK_SIZE", DEFAULT_CHUNK))
    root = cache_root or codesign_home() / "cache" / "features"
    key = cache_key(model.weights_hash, dataset.fingerprint(), max_length, tuple(poolings))
    cache = FeatureCache(root / key)
    # Chunks already on disk fix the chunk size: a resumed or reread cache keeps the one it was
    # started with, whatever CODESIGN_CHUNK_SIZE says now (else chunk i would cover other rows).
    chunk_size = cache.recorded_chunk_size() or chunk_size
    splits = [s for s in SPLITS if getattr(dataset, s) is not None]
    plan = {s: _chunk_count(len(dataset.split(s)), chunk_size) for s in splits}
    started = time.perf_counter()
    computed = 0
    if not cache.complete:
        cache.directory.mkdir(parents=True, exist_ok=True)
        cache.cleanup_temp()
        cache.write_meta(
            {"model": model.name, "weights_hash": model.weights_hash, "dataset": dataset.name,
             "max_length": max_length, "poolings": list(poolings), "chunk_size": chunk_size,
             "chunks": plan, "format": FEATURE_FORMAT_VERSION}
        )
        missing = [(s, i) for s in splits for i in range(plan[s]) if not cache.has_chunk(s, i)]
        done = sum(plan.values()) - len(missing)
        if done:
            log.info("feature cache %s: resuming, %d of %d chunks already on disk", key, done, sum(plan.values()))
        if missing:
            computed = _extract_missing(dataset, model, max_length, poolings, cache, missing, chunk_size, batch_size)
        cache.mark_complete({"chunks": plan, "examples": {s: len(dataset.split(s)) for s in splits}})
    out: dict[str, dict[str, np.ndarray]] = {}
    lengths: dict[str, np.ndarray] = {}
    for s in splits:
        parts = [cache.read_chunk(s, i) for i in range(plan[s])]
        # Layer-major, contiguous per layer: heads read one layer at a time.
        out[s] = {p: np.ascontiguousarray(np.concatenate([c[p] for c in parts], axis=1)) for p in poolings}
        lengths[s] = np.concatenate([c["lengths"] for c in parts])
    return LayerFeatures(model, max_length, tuple(poolings), out, lengths, str(cache.directory),
                         computed, time.perf_counter() - started)


def _extract_missing(dataset, model, max_length, poolings, cache, missing, chunk_size, batch_size) -> int:
    tokenizer, backbone = load_backbone(model)
    total = sum(min(chunk_size, len(dataset.split(s)) - i * chunk_size) for s, i in missing)
    with progress_bar(f"extracting {model.name} features", total) as advance:
        for split, index in missing:
            texts = dataset.split(split).texts[index * chunk_size : (index + 1) * chunk_size]
            ids = tokenize(tokenizer, texts, max_length)
            pooled = extract_pooled(backbone, tokenizer, ids, poolings, batch_size=batch_size, on_batch=advance)
            pooled["lengths"] = np.array([len(s) for s in ids], dtype=np.int64)
            cache.write_chunk(split, index, pooled)
    return len(missing)
