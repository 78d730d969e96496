"""Content-addressed, chunked, resumable cache of per-layer pooled features.

The key covers the weights hash, the exact examples, max length, poolings and the feature
format version. Chunks are written atomically (temp file + rename), so a SIGKILL loses at most
the chunk in flight, and the next call resumes from the chunks already on disk. A cache with
``complete.json`` is never recomputed. Files are safetensors: no pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError

log = logging.getLogger(__name__)
FEATURE_FORMAT_VERSION = 1


def cache_key(weights_hash: str, dataset_fingerprint: str, max_length: int, poolings: tuple[str, ...]) -> str:
    payload = json.dumps(
        {
            "weights": weights_hash,
            "data": dataset_fingerprint,
            "max_length": max_length,
            "poolings": sorted(poolings),
            "format": FEATURE_FORMAT_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


@dataclass
class FeatureCache:
    directory: Path

    @property
    def complete(self) -> bool:
        return (self.directory / "complete.json").is_file()

    def chunk_path(self, split: str, index: int) -> Path:
        return self.directory / f"{split}-{index:05d}.safetensors"

    def has_chunk(self, split: str, index: int) -> bool:
        return self.chunk_path(split, index).is_file()

    def write_chunk(self, split: str, index: int, arrays: dict[str, np.ndarray]) -> None:
        from safetensors.numpy import save

        atomic_write_bytes(self.chunk_path(split, index), save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))

    def read_chunk(self, split: str, index: int) -> dict[str, np.ndarray]:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = self.chunk_path(split, index)
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CacheError(f"{path}: unreadable feature chunk ({exc}); delete {self.directory} to rebuild") from exc

    def recorded_chunk_size(self) -> int | None:
        """The chunk size this cache was started with (meta.json precedes every chunk), if any."""
        path = self.directory / "meta.json"
        if not path.is_file():
            return None
        try:
            return int(json.loads(path.read_text())["chunk_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{path}: unreadable cache metadata ({exc}); delete {self.directory} to rebuild") from exc

    def write_meta(self, meta: dict) -> None:
        atomic_write_json(self.directory / "meta.json", meta)

    def mark_complete(self, summary: dict) -> None:
        atomic_write_json(self.directory / "complete.json", summary)

    def cleanup_temp(self) -> None:
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
