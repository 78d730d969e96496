"""Extraction split over processes, machines or scheduler tasks, into one shared cache.

``codesign extract --shard K/N`` computes only the chunks whose position in the cache's global
chunk order (train, then validation, then test) is K mod N, and never marks the cache complete;
``codesign extract --finalize`` checks that every chunk is on disk and readable, then writes
``complete.json``. Any scheduler that gives a task its index and the task count can run it
(SLURM arrays, Kubernetes indexed jobs, ``accelerate launch``: docs/scaling.md). Shards meet
only through the cache folder: ``meta.json`` is fixed create-exclusive by whichever starts
first, chunks are content-addressed files written by rename, and a chunk is claimed (flock)
while it is computed, so a retried or duplicated task loses nothing and writes nothing twice.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..data.dataset import Dataset
from ..errors import CacheError, ConfigError
from .backbone import ModelRef
from .extract import POOLINGS
from .layers import extract_chunks, load_for, mark_complete, open_features, plan_cache, start_cache


@dataclass(frozen=True)
class ShardReport:
    """What one shard or finalize call did to one cache."""

    cache_dir: str
    state: str  # "shard K/N", "finalized", "already complete"
    owned_chunks: int  # chunks this call is responsible for
    extracted_chunks: int  # chunks it computed (0 when all were on disk already)
    total_chunks: int
    n_layers: int | None = None  # known once the cache is complete
    extract_seconds: float = 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` with 0 <= K < N and N >= 1, or a one-line ConfigError."""
    m = re.fullmatch(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*", str(text))
    if not m:
        raise ConfigError(f"shard {str(text)!r} is not K/N; pass this task's index and the task count, "
                          "e.g. --shard 0/4 (K = 0..N-1)")
    k, n = int(m[1]), int(m[2])
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"shard {k}/{n} is out of range: K must be 0..N-1 and N at least 1; e.g. "
                          f"--shard {min(k, max(n, 1) - 1)}/{max(n, 1)}")
    return k, n


def extract_shard(dataset: Dataset, model: ModelRef, max_length: int, poolings=POOLINGS, *,
                  shard: tuple[int, int], cache_root=None, chunk_size: int | None = None,
                  batch_size: int | None = None, device: str = "cpu",
                  dtype: str = "float32") -> ShardReport:
    """Compute shard ``shard = (K, N)``'s missing chunks; the cache is not marked complete."""
    k, n = shard
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"shard {k}/{n}: the index must be 0..N-1 and N at least 1")
    plan, poolings, max_length = plan_cache(dataset, model, max_length, poolings, cache_root,
                                            chunk_size, batch_size, device, dtype)
    started = time.perf_counter()
    if plan.cache.complete:
        return ShardReport(str(plan.cache.directory), "already complete", 0, 0,
                           len(plan.all_chunks(dataset)))

    def mine(p):
        return [c for j, c in enumerate(p.all_chunks(dataset)) if j % n == k]

    loaded = load_for(model, max_length) if any(not plan.cache.has_chunk(*c) for c in mine(plan)) else None
    plan = start_cache(plan, dataset, model, max_length, poolings)  # sizes may be another shard's
    owned = mine(plan)
    todo = [c for c in owned if not plan.cache.has_chunk(*c)]
    written = 0
    if todo:
        loaded = loaded or load_for(model, max_length)
        written = extract_chunks(dataset, model, loaded, max_length, poolings, plan, todo, device, dtype)
    return ShardReport(str(plan.cache.directory), f"shard {k}/{n}", len(owned), written,
                       len(plan.all_chunks(dataset)), extract_seconds=time.perf_counter() - started)


def finalize(dataset: Dataset, model: ModelRef, max_length: int, poolings=POOLINGS, *, cache_root=None,
             device: str = "cpu", dtype: str = "float32") -> ShardReport:
    """Check that every chunk is on disk and readable, then write the completion marker."""
    plan, poolings, max_length = plan_cache(dataset, model, max_length, poolings, cache_root,
                                            device=device, dtype=dtype)
    cache, total = plan.cache, len(plan.all_chunks(dataset))
    if cache.complete:
        feats = open_features(plan, dataset, model, max_length, poolings)
        return ShardReport(str(cache.directory), "already complete", 0, 0, total, feats.n_layers)
    if not (cache.directory / "meta.json").is_file():
        raise CacheError(f"{cache.directory}: no shard has started this cache (no meta.json); run "
                         "codesign extract --shard K/N for every K first, with the same options")
    order = plan.all_chunks(dataset)
    missing = [(j, c) for j, c in enumerate(order) if not cache.has_chunk(*c)]
    if missing:
        shown = ", ".join(f"{s}-{i:05d} (position {j})" for j, (s, i) in missing[:5])
        raise CacheError(f"{cache.directory}: {len(missing)} of {total} chunks are missing ({shown}"
                         f"{', ...' if len(missing) > 5 else ''}); rerun the shards that own them "
                         "(shard K of N owns the positions p with p mod N = K), then --finalize again")
    feats = open_features(plan, dataset, model, max_length, poolings)  # every header checked
    mark_complete(plan, dataset)
    return ShardReport(str(cache.directory), "finalized", 0, 0, total, feats.n_layers)
