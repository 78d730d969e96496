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
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import SPLITS, Dataset
from ..errors import CacheError, ConfigError
from ..locks import file_claim
from ..progress import progress_bar
from .backbone import COMPUTE, ModelCheck, ModelRef, inspect_model, load_backbone
from .cache import FEATURE_FORMAT_VERSION, FeatureCache, cache_key
from .device import autocast_dtype, compute_mode, torch_device
from .extract import POOLINGS, extract_pooled, tokenize
from .mapped import ChunkMaps, MappedLayer, read_header

log = logging.getLogger(__name__)
DEFAULT_CHUNK = 1024
DEFAULT_BATCH = 64
# [CLS] and [SEP] alone: anything shorter cannot hold a special token pair (and the tokenizer
# then silently skips truncation). Export needs >= 2 too.
MIN_MAX_LENGTH = 2


class LayerFeatures:
    """Pooled features per split and pooling, [examples, dim] per layer, read from the cache's
    chunks memory-mapped: ``get`` gives one layer as an array (the search's in-memory path,
    the last few kept), ``mapped`` gives it as a :class:`MappedLayer` that streamed fits read
    chunk by chunk or row by row, so nothing ever concatenates every layer of every chunk."""

    KEEP_LAYERS = 4  # arrays ``get`` keeps: the bank reads a layer's train rows twice in a row

    def __init__(self, model: ModelRef, max_length: int, poolings: tuple[str, ...],
                 chunks: dict[str, dict[str, list]], lengths: dict[str, np.ndarray], cache_dir: str,
                 extracted_chunks: int, extract_seconds: float, compute: str = COMPUTE) -> None:
        self.model, self.max_length, self.poolings = model, max_length, tuple(poolings)
        self.lengths = lengths  # real token counts per example (after truncation)
        self.cache_dir = cache_dir
        self.extracted_chunks = extracted_chunks  # chunks computed by this call (0: all cached)
        self.extract_seconds = extract_seconds
        self.compute = compute
        self._chunks = chunks  # split -> pooling -> [(path, TensorSpan)] in chunk order
        self._maps = ChunkMaps()
        self._kept: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()

    @property
    def n_layers(self) -> int:
        return self._chunks["train"][self.poolings[0]][0][1].shape[0]

    @property
    def dim(self) -> int:
        return self._chunks["train"][self.poolings[0]][0][1].shape[2]

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self._chunks)

    def mapped(self, split: str, pooling: str, layer: int) -> MappedLayer:
        return MappedLayer(self._maps, self._chunks[split][pooling], layer)

    def get(self, split: str, pooling: str, layer: int) -> np.ndarray:
        key = (split, pooling, layer)
        if key not in self._kept:
            self._kept[key] = np.asarray(self.mapped(split, pooling, layer))
            while len(self._kept) > self.KEEP_LAYERS:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        return self._kept[key]

    @property
    def splits(self) -> Mapping[str, Mapping[str, np.ndarray]]:
        """split -> pooling -> [layers+1, examples, dim], built on access (small caches, tests)."""
        return _Lazy(self._chunks, lambda s: _Lazy(self.poolings, lambda p: np.stack(
            [np.asarray(self.mapped(s, p, la)) for la in range(self.n_layers)])))


class _Lazy(Mapping):
    def __init__(self, keys, make) -> None:
        self._keys, self._make = tuple(keys), make

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._make(key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


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


@dataclass
class CachePlan:
    """One cache of one dataset, backbone, length and compute mode, with its sizes fixed."""

    cache: FeatureCache
    key: str
    compute: str
    splits: list[str]
    chunk_size: int
    batch_size: int

    def rows(self, dataset: Dataset, split: str) -> int:
        return len(dataset.split(split))

    def chunks(self, dataset: Dataset) -> dict[str, int]:
        return {s: _chunk_count(len(dataset.split(s)), self.chunk_size) for s in self.splits}

    def all_chunks(self, dataset: Dataset) -> list[tuple[str, int]]:
        """Every chunk in one global order (train first): shard k of N owns positions k, k+N, ..."""
        return [(s, i) for s, n in self.chunks(dataset).items() for i in range(n)]

    def missing(self, dataset: Dataset) -> list[tuple[str, int]]:
        return [c for c in self.all_chunks(dataset) if not self.cache.has_chunk(*c)]


def plan_cache(dataset: Dataset, model: ModelRef, max_length, poolings, cache_root=None,
               chunk_size: int | None = None, batch_size: int | None = None, device: str = "cpu",
               dtype: str = "float32") -> tuple[CachePlan, tuple[str, ...], int]:
    """Check every input and find the cache; nothing is written. Returns (plan, poolings,
    max_length). A cache that was started keeps the chunk and batch size it was started with."""
    from ..paths import codesign_home

    poolings = check_poolings(poolings)
    compute = compute_mode(device, dtype)
    check = inspect_model(model)
    max_length = check_max_length(max_length, model, check)
    chunk_size = _size(chunk_size, "chunk_size", "CODESIGN_CHUNK_SIZE", DEFAULT_CHUNK)
    batch_size = _size(batch_size, "batch_size", None, DEFAULT_BATCH)
    root = cache_root or codesign_home() / "cache" / "features"
    key = cache_key(model.weights_hash, check.files_hash, dataset.fingerprint(), max_length,
                    poolings, compute)
    cache = FeatureCache(Path(root) / key)
    # Chunks already on disk fix the chunk and batch size: a resumed or reread cache keeps the
    # ones it was started with, whatever CODESIGN_CHUNK_SIZE says now (else chunk i would cover
    # other rows, or its numbers would differ at rounding level from its neighbours').
    recorded = cache.recorded_meta()
    splits = [s for s in SPLITS if getattr(dataset, s) is not None]
    plan = CachePlan(cache, key, compute, splits, recorded.get("chunk_size", chunk_size),
                     recorded.get("batch_size", batch_size))
    return plan, poolings, max_length


def start_cache(plan: CachePlan, dataset: Dataset, model: ModelRef, max_length: int,
                poolings: tuple[str, ...]) -> CachePlan:
    """Create the cache folder, clean dead writers' temp files and fix meta.json (create-
    exclusive: if another process fixed it first, its sizes win and the plan follows them)."""
    cache = plan.cache
    try:
        cache.directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{cache.directory}: cannot create the feature cache ({exc.strerror or exc}); "
                         "fix permissions or point CODESIGN_HOME elsewhere") from exc
    cache.cleanup_temp()
    fixed = cache.fix_meta(_meta(model, dataset, max_length, poolings, plan))
    return CachePlan(cache, plan.key, plan.compute, plan.splits, fixed["chunk_size"],
                     fixed.get("batch_size", plan.batch_size))


def layer_features(
    dataset: Dataset,
    model: ModelRef,
    max_length: int,
    poolings: tuple[str, ...] = POOLINGS,
    cache_root=None,
    chunk_size: int | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> LayerFeatures:
    plan, poolings, max_length = plan_cache(dataset, model, max_length, poolings, cache_root,
                                            chunk_size, batch_size, device, dtype)
    if device != "cpu":
        torch_device(device)  # no such device: one line, even when the cache is complete
    cache = plan.cache
    started = time.perf_counter()
    computed = 0
    if not cache.complete:
        # Load before the first write: a model that cannot load leaves no cache folder.
        backbone = load_for(model, max_length) if plan.missing(dataset) else None
        plan = start_cache(plan, dataset, model, max_length, poolings)
        missing = plan.missing(dataset)
        total = len(plan.all_chunks(dataset))
        if total - len(missing):
            log.info("feature cache %s: resuming, %d of %d chunks already on disk", plan.key,
                     total - len(missing), total)
        if missing:
            backbone = backbone or load_for(model, max_length)
            computed = extract_chunks(dataset, model, backbone, max_length, poolings, plan, missing,
                                      device, dtype)
        mark_complete(plan, dataset)
    return open_features(plan, dataset, model, max_length, poolings, computed,
                         time.perf_counter() - started)


def mark_complete(plan: CachePlan, dataset: Dataset) -> None:
    plan.cache.mark_complete({"chunks": plan.chunks(dataset),
                              "examples": {s: len(dataset.split(s)) for s in plan.splits}})


def chunk_spans(plan: CachePlan, dataset: Dataset, poolings: tuple[str, ...], split: str,
                index: int) -> dict:
    """A chunk's tensors checked against what it must hold (names, rows, dtype), or a CacheError."""
    path = plan.cache.chunk_path(split, index)
    fix = f"delete {plan.cache.directory} to rebuild"
    spans = read_header(path, fix)
    lacking = [n for n in (*poolings, "lengths") if n not in spans]
    if lacking:
        raise CacheError(f"{path}: feature chunk lacks {', '.join(lacking)}; {fix}")
    rows = min(plan.chunk_size, len(dataset.split(split)) - index * plan.chunk_size)
    shapes = {n: spans[n].shape for n in (*poolings, "lengths")}
    if (any(len(shapes[p]) != 3 or shapes[p][1] != rows or spans[p].dtype != "<f4" for p in poolings)
            or shapes["lengths"] != (rows,)):
        raise CacheError(f"{path}: feature chunk holds {shapes}, expected {rows} rows of float32 "
                         f"features; {fix}")
    return spans


def open_features(plan: CachePlan, dataset: Dataset, model: ModelRef, max_length: int,
                  poolings: tuple[str, ...], computed: int = 0, seconds: float = 0.0) -> LayerFeatures:
    """The cache's features, memory-mapped (every chunk's header checked first)."""
    chunks: dict[str, dict[str, list]] = {}
    lengths: dict[str, np.ndarray] = {}
    maps = ChunkMaps()
    shape = None
    for s in plan.splits:
        spans = [(plan.cache.chunk_path(s, i), chunk_spans(plan, dataset, poolings, s, i))
                 for i in range(plan.chunks(dataset)[s])]
        for path, sp in spans:
            got = {p: (sp[p].shape[0], sp[p].shape[2]) for p in poolings}
            shape = shape or got
            if got != shape:
                raise CacheError(f"{path}: feature chunk has (layers, dim) {got}, its neighbours "
                                 f"{shape}; delete {plan.cache.directory} to rebuild")
        chunks[s] = {p: [(path, sp[p]) for path, sp in spans] for p in poolings}
        lengths[s] = np.concatenate([np.array(maps.view(path, sp["lengths"])) for path, sp in spans])
    return LayerFeatures(model, max_length, tuple(poolings), chunks, lengths, str(plan.cache.directory),
                         computed, seconds, plan.compute)


def load_for(model: ModelRef, max_length: int):
    tokenizer, backbone = load_backbone(model)
    specials = tokenizer.num_special_tokens_to_add()
    if max_length <= specials:
        raise ConfigError(f"--max-length {max_length} leaves no room for text: backbone '{model.name}' "
                          f"adds {specials} special tokens; pass --max-length {specials + 1} or more (e.g. 64)")
    return tokenizer, backbone


def _meta(model, dataset, max_length, poolings, plan: CachePlan) -> dict:
    import torch
    import transformers

    return {"model": model.name, "weights_hash": model.weights_hash, "dataset": dataset.name,
            "max_length": max_length, "poolings": list(poolings), "chunk_size": plan.chunk_size,
            "batch_size": plan.batch_size, "chunks": plan.chunks(dataset), "format": FEATURE_FORMAT_VERSION,
            "compute": plan.compute, "versions": {"torch": torch.__version__,
                                                  "transformers": transformers.__version__}}


def compute_chunk(dataset, loaded, max_length, poolings, plan: CachePlan, split: str, index: int,
                  device=None, autocast=None) -> dict[str, np.ndarray]:
    """One chunk's arrays (what ``write_chunk`` stores), computed from its texts."""
    tokenizer, backbone = loaded
    texts = dataset.split(split).texts[index * plan.chunk_size : (index + 1) * plan.chunk_size]
    ids = tokenize(tokenizer, texts, max_length)
    pooled = extract_pooled(backbone, tokenizer, ids, poolings, batch_size=plan.batch_size,
                            device=device, autocast=autocast)
    pooled["lengths"] = np.array([len(s) for s in ids], dtype=np.int64)
    return pooled


def extract_chunks(dataset, model, loaded, max_length, poolings, plan: CachePlan, chunks,
                   device: str = "cpu", dtype: str = "float32") -> int:
    """Compute and write ``chunks``, skipping any that another process holds or has written.

    Each chunk is claimed first (flock on its claim file): a chunk another live process is
    computing is left to it and waited for at the end, when it is on disk or its writer died
    (then this process computes it). Returns the number of chunks this process wrote."""
    tokenizer, backbone = loaded
    dev = torch_device(device)
    if dev.type != "cpu":
        backbone = backbone.to(dev)
    cast = autocast_dtype(dtype)
    cache = plan.cache
    rows = {c: min(plan.chunk_size, len(dataset.split(c[0])) - c[1] * plan.chunk_size) for c in chunks}
    written = 0
    with progress_bar(f"extracting {model.name} features", sum(rows.values())) as advance:
        pending = list(chunks)
        for wait in (False, True):  # first pass: skip what others hold; second: wait for them
            deferred = []
            for split, index in pending:
                with file_claim(cache.claim_path(split, index), wait=wait) as held:
                    if not held:
                        deferred.append((split, index))
                        continue
                    if not cache.has_chunk(split, index):
                        arrays = compute_chunk(dataset, (tokenizer, backbone), max_length, poolings,
                                               plan, split, index, dev, cast)
                        cache.write_chunk(split, index, arrays)
                        written += 1
                    cache.claim_path(split, index).unlink(missing_ok=True)
                advance(rows[(split, index)])
            pending = deferred
    return written
