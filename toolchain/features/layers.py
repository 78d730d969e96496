"""Per-layer features of a dataset: load from the cache, or extract what is missing.

Every input is checked before anything is written: the poolings, the sizes, the model folder
(config, tokenizer) and ``max_length`` against the model's position embeddings; on a cache miss
the backbone is loaded before the cache folder is created, so a model that cannot load leaves
nothing behind in ``$CODESIGN_HOME``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from ..data.dataset import SPLITS, Dataset
from ..errors import CacheError, ConfigError
from ..progress import progress_bar
from .backbone import COMPUTE, ModelCheck, ModelRef, inspect_model, load_backbone
from .cache import FEATURE_FORMAT_VERSION, FeatureCache, cache_key
from .extract import POOLINGS, extract_pooled, tokenize

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 1024
DEFAULT_BATCH = 64
# [CLS] and [SEP] alone: anything shorter cannot hold a special token pair (and the tokenizer
# then silently skips truncation). Export needs >= 2 too.
MIN_MAX_LENGTH = 2


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


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_poolings(poolings) -> tuple[str, ...]:
    if isinstance(poolings, str):
        poolings = (poolings,)
    poolings = tuple(poolings)
    unknown = [p for p in poolings if p not in POOLINGS]
    if not poolings or unknown or len(set(poolings)) != len(poolings):
        raise ConfigError(f"poolings {list(poolings)} are not valid; use one or more of "
                          f"{', '.join(POOLINGS)}, each once")
    return poolings


def check_max_length(max_length, model: ModelRef, check: ModelCheck) -> int:
    """``max_length`` within [MIN_MAX_LENGTH, the model's position limit], or a ConfigError."""
    if not _is_int(max_length):
        raise ConfigError(f"--max-length {max_length!r} is not an integer; pass a token count such as 64")
    max_length = int(max_length)
    limit = check.max_length_limit
    allowed = f"{MIN_MAX_LENGTH}..{limit}" if limit else f"{MIN_MAX_LENGTH} or more"
    if max_length < MIN_MAX_LENGTH:
        raise ConfigError(f"--max-length {max_length} is too short for backbone '{model.name}' "
                          f"(allowed: {allowed} tokens, special tokens included); pass e.g. --max-length 64")
    if limit is not None and max_length > limit:
        raise ConfigError(f"--max-length {max_length} exceeds the {limit} position embeddings of backbone "
                          f"'{model.name}' (allowed: {allowed}); pass --max-length {limit} or less")
    return max_length


def _size(value, name: str, env: str | None, default: int) -> int:
    """A positive chunk/batch size from the argument, else the environment, else the default."""
    source = name
    if value is None and env and os.environ.get(env, "").strip():
        value, source = os.environ[env].strip(), env
    if value is None:
        return default
    try:
        size = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        size = None
    if size is None or size < 1:
        raise ConfigError(f"{source}={value!r} is not a positive integer; set it to the number of "
                          f"examples per {name.split('_')[0]} (default {default}) or unset it")
    return size


def layer_features(
    dataset: Dataset,
    model: ModelRef,
    max_length: int,
    poolings: tuple[str, ...] = POOLINGS,
    cache_root=None,
    chunk_size: int | None = None,
    batch_size: int | None = None,
) -> LayerFeatures:
    from ..paths import codesign_home

    poolings = check_poolings(poolings)
    check = inspect_model(model)
    max_length = check_max_length(max_length, model, check)
    chunk_size = _size(chunk_size, "chunk_size", "CODESIGN_CHUNK_SIZE", DEFAULT_CHUNK)
    batch_size = _size(batch_size, "batch_size", None, DEFAULT_BATCH)
    root = cache_root or codesign_home() / "cache" / "features"
    key = cache_key(model.weights_hash, check.files_hash, dataset.fingerprint(), max_length,
                    poolings, COMPUTE)
    cache = FeatureCache(root / key)
    # Chunks already on disk fix the chunk and batch size: a resumed or reread cache keeps the
    # ones it was started with, whatever CODESIGN_CHUNK_SIZE says now (else chunk i would cover
    # other rows, or its numbers would differ at rounding level from its neighbours').
    recorded = cache.recorded_meta()
    chunk_size = recorded.get("chunk_size", chunk_size)
    batch_size = recorded.get("batch_size", batch_size)
    splits = [s for s in SPLITS if getattr(dataset, s) is not None]
    plan = {s: _chunk_count(len(dataset.split(s)), chunk_size) for s in splits}
    started = time.perf_counter()
    computed = 0
    if not cache.complete:
        missing = [(s, i) for s in splits for i in range(plan[s]) if not cache.has_chunk(s, i)]
        # Load before the first write: a model that cannot load leaves no cache folder.
        backbone = _load_for(model, max_length) if missing else None
        try:
            cache.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"{cache.directory}: cannot create the feature cache ({exc.strerror or exc}); "
                             "fix permissions or point CODESIGN_HOME elsewhere") from exc
        cache.cleanup_temp()
        cache.write_meta(_meta(model, dataset, max_length, poolings, chunk_size, batch_size, plan))
        done = sum(plan.values()) - len(missing)
        if done:
            log.info("feature cache %s: resuming, %d of %d chunks already on disk", key, done, sum(plan.values()))
        if missing:
            computed = _extract_missing(dataset, model, backbone, max_length, poolings, cache, missing,
                                        chunk_size, batch_size)
        cache.mark_complete({"chunks": plan, "examples": {s: len(dataset.split(s)) for s in splits}})
    out: dict[str, dict[str, np.ndarray]] = {}
    lengths: dict[str, np.ndarray] = {}
    for s in splits:
        parts = [cache.read_chunk(s, i, (*poolings, "lengths")) for i in range(plan[s])]
        # Layer-major, contiguous per layer: heads read one layer at a time.
        out[s] = {p: np.ascontiguousarray(np.concatenate([c[p] for c in parts], axis=1)) for p in poolings}
        lengths[s] = np.concatenate([c["lengths"] for c in parts])
    return LayerFeatures(model, max_length, tuple(poolings), out, lengths, str(cache.directory),
                         computed, time.perf_counter() - started)


def _load_for(model: ModelRef, max_length: int):
    tokenizer, backbone = load_backbone(model)
    specials = tokenizer.num_special_tokens_to_add()
    if max_length <= specials:
        raise ConfigError(f"--max-length {max_length} leaves no room for text: backbone '{model.name}' "
                          f"adds {specials} special tokens; pass --max-length {specials + 1} or more (e.g. 64)")
    return tokenizer, backbone


def _meta(model, dataset, max_length, poolings, chunk_size, batch_size, plan) -> dict:
    import torch
    import transformers

    return {"model": model.name, "weights_hash": model.weights_hash, "dataset": dataset.name,
            "max_length": max_length, "poolings": list(poolings), "chunk_size": chunk_size,
            "batch_size": batch_size, "chunks": plan, "format": FEATURE_FORMAT_VERSION,
            "compute": COMPUTE, "versions": {"torch": torch.__version__,
                                             "transformers": transformers.__version__}}


def _extract_missing(dataset, model, loaded, max_length, poolings, cache, missing, chunk_size, batch_size) -> int:
    tokenizer, backbone = loaded
    total = sum(min(chunk_size, len(dataset.split(s)) - i * chunk_size) for s, i in missing)
    with progress_bar(f"extracting {model.name} features", total) as advance:
        for split, index in missing:
            texts = dataset.split(split).texts[index * chunk_size : (index + 1) * chunk_size]
            ids = tokenize(tokenizer, texts, max_length)
            pooled = extract_pooled(backbone, tokenizer, ids, poolings, batch_size=batch_size, on_batch=advance)
            pooled["lengths"] = np.array([len(s) for s in ids], dtype=np.int64)
            cache.write_chunk(split, index, pooled)
    return len(missing)
