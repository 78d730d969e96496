"""Ray Data as the extraction engine (``codesign extract --engine ray``, extra ``codesign[ray]``).

The missing chunks become a Ray dataset of (split, index) rows, mapped with ``map_batches`` over
a callable class: each actor loads the backbone once and writes whole chunks into the shared
cache, through the same claim-then-rename path as local extraction (layers.extract_chunks). The
chunks are content-addressed, so a task that Ray retries or runs twice rewrites nothing and the
cache is the one a single process writes, byte for byte. The driver fixes meta.json first and
writes complete.json last, once every chunk is on disk.

On a GPU cluster each actor asks for one GPU (``num_gpus=1``); connect to a cluster with
``RAY_ADDRESS`` (without it, or when Ray is already initialised, the local instance is used).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..data.dataset import Dataset
from ..errors import CacheError, ConfigError
from .backbone import ModelRef
from .extract import POOLINGS
from .layers import (
    LayerFeatures,
    extract_chunks,
    load_for,
    mark_complete,
    open_features,
    plan_cache,
    start_cache,
)


class ChunkWriter:
    """One Ray actor: a backbone loaded once, then whole chunks computed and written."""

    def __init__(self, dataset, model, max_length, poolings, plan, device, dtype) -> None:
        import torch

        # One thread per actor (Ray gives an actor one CPU): the bits a one-process, one-thread
        # extraction writes, and no oversubscription of the node's cores.
        if device == "cpu":
            torch.set_num_threads(1)
        self.args = (dataset, model, max_length, poolings, plan, device, dtype)
        self.loaded = load_for(model, max_length)

    def __call__(self, batch: dict) -> dict:
        dataset, model, max_length, poolings, plan, device, dtype = self.args
        chunks = [(str(s), int(i)) for s, i in zip(batch["split"], batch["index"], strict=True)]
        written = extract_chunks(dataset, model, self.loaded, max_length, poolings, plan, chunks, device, dtype)
        return {"written": np.array([written] + [0] * (len(chunks) - 1), dtype=np.int64)}


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--engine ray needs Ray Data: pip install 'codesign[ray]' (or ray[data]); "
                          "or use the default --engine local") from exc
    return ray


def ray_features(dataset: Dataset, model: ModelRef, max_length: int, poolings=POOLINGS, *,
                 cache_root=None, chunk_size: int | None = None, batch_size: int | None = None,
                 device: str = "cpu", dtype: str = "float32", actors: int | None = None) -> LayerFeatures:
    """``layer_features`` with the missing chunks computed by Ray actors."""
    ray = _ray()
    plan, poolings, max_length = plan_cache(dataset, model, max_length, poolings, cache_root,
                                            chunk_size, batch_size, device, dtype)
    started, computed = time.perf_counter(), 0
    if not plan.cache.complete:
        if plan.missing(dataset):
            load_for(model, max_length)  # a model that cannot load fails here, before any write
        plan = start_cache(plan, dataset, model, max_length, poolings)
        missing = plan.missing(dataset)
        if missing:
            if not ray.is_initialized():
                ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                         log_to_driver=False)
            gpus = 1 if device.startswith("cuda") else 0
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            n = actors or max(1, min(len(missing), cpus if not gpus else
                                     int(ray.cluster_resources().get("GPU", 1))))
            items = ray.data.from_items([{"split": s, "index": i} for s, i in missing])
            resources = {"num_gpus": gpus} if gpus else {"num_cpus": 1}
            out = items.map_batches(
                ChunkWriter, batch_size=1, concurrency=n, **resources,
                fn_constructor_kwargs={"dataset": dataset, "model": model, "max_length": max_length,
                                       "poolings": poolings, "plan": plan, "device": device, "dtype": dtype},
            ).take_all()
            computed = int(sum(row["written"] for row in out))
        lacking = plan.missing(dataset)
        if lacking:
            raise CacheError(f"{plan.cache.directory}: Ray finished but {len(lacking)} chunks are missing "
                             f"(e.g. {lacking[0][0]}-{lacking[0][1]:05d}); run the command again")
        mark_complete(plan, dataset)
    return open_features(plan, dataset, model, max_length, poolings, computed, time.perf_counter() - started)
