"""Content-addressed, chunked, resumable cache of per-layer pooled features.

The key covers everything that changes the numbers: the weights hash, the hash of the model's
config.json and tokenizer files (a config saying fewer layers, or another tokenizer, gives other
features from the same weights), the exact examples, max length, poolings, how the features are
computed (CPU, float32) and the feature format version. Library versions (torch, transformers)
and the batch size only move results at rounding level; they are recorded in ``meta.json``, and
a resumed cache keeps the batch and chunk size it was started with so its chunks agree bit for
bit. Chunks are written atomically (temp file + rename), so a SIGKILL loses at most the chunk in
flight, and the next call resumes from the chunks already on disk. A cache with ``complete.json``
is never recomputed. Files are safetensors: no pickle anywhere.

Many processes may share one cache (two ``codesign run``, shards of ``codesign extract --shard``,
Ray actors): ``meta.json`` is fixed once, create-exclusive (``fix_meta``); a writer claims a chunk
with flock on its claim file while computing it (layers.extract_chunks); temp files carry their
writer's host and pid, so ``cleanup_temp`` removes only those of dead writers or stale ones.
docs/scaling.md has the whole protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError

log = logging.getLogger(__name__)
# 2: the key covers the model's config and tokenizer files and the compute mode. Version-1 caches
# cannot be told apart from a wrong hit (their key ignored config.json), so they simply miss.
# Bump this whenever the extraction code changes the numbers it writes.
FEATURE_FORMAT_VERSION = 2
# A chunk's temp file lives for the seconds one write takes; one this old is abandoned whoever
# owns it (also guards against a dead writer's pid having been reused on this host).
STALE_TEMP_SECONDS = 6 * 3600
_TEMP_NAME = re.compile(r"^\..+~(?P<host>[^~]+)~(?P<pid>\d+)~[^~]*\.tmp$")


def cache_key(weights_hash: str, model_files_hash: str, dataset_fingerprint: str, max_length: int,
              poolings: tuple[str, ...], compute: str) -> str:
    payload = json.dumps(
        {
            "weights": weights_hash,
            "model_files": model_files_hash,
            "data": dataset_fingerprint,
            "max_length": max_length,
            "poolings": sorted(poolings),
            "compute": compute,
            "format": FEATURE_FORMAT_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _host_id() -> str:
    """This host, and its pid namespace when known: two containers may share a hostname and a
    cache volume, and a pid is only meaningful inside its namespace."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    try:
        ns = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    except OSError:
        ns = ""
    return f"{host}.{ns}" if ns else host


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0, ...) would address our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def owned_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside ``path`` named after its writer (host and pid), so that cleanup
    can tell a dead writer's leftover from a chunk another process is writing right now."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{_host_id()}~{os.getpid()}~",
                            suffix=".tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = owned_temp(path)
    except OSError as exc:
        raise CacheError(f"{path.parent}: cannot write the feature cache ({exc.strerror or exc}); "
                         "free space or fix permissions, or point CODESIGN_HOME elsewhere") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CacheError(f"{path}: cannot write the feature cache ({exc.strerror or exc}); "
                             "free space or fix permissions, or point CODESIGN_HOME elsewhere") from exc
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

    def read_chunk(self, split: str, index: int, names: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """A chunk's arrays; ``names`` must all be in it (else the cache is corrupt)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = self.chunk_path(split, index)
        try:
            arrays = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CacheError(f"{path}: unreadable feature chunk ({exc}); delete {self.directory} to rebuild") from exc
        lacking = [n for n in names if n not in arrays]
        if lacking:
            raise CacheError(f"{path}: feature chunk lacks {', '.join(lacking)}; delete {self.directory} to rebuild")
        return arrays

    def recorded_meta(self) -> dict:
        """The chunk and batch size this cache was started with (meta.json precedes every
        chunk); empty when it has not been started."""
        path = self.directory / "meta.json"
        if not path.is_file():
            return {}
        try:
            meta = json.loads(path.read_text())
            out = {"chunk_size": int(meta["chunk_size"])}
            if "batch_size" in meta:
                out["batch_size"] = int(meta["batch_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{path}: unreadable cache metadata ({exc}); delete {self.directory} to rebuild") from exc
        if min(out.values()) < 1:
            raise CacheError(f"{path}: cache metadata records a size below 1 ({out}); delete "
                             f"{self.directory} to rebuild")
        return out

    def recorded_chunk_size(self) -> int | None:
        return self.recorded_meta().get("chunk_size")

    def write_meta(self, meta: dict) -> None:
        atomic_write_json(self.directory / "meta.json", meta)

    def fix_meta(self, meta: dict) -> dict:
        """Write ``meta.json`` once, create-exclusive, and return the sizes on disk.

        Two extractions (two shards, two ``codesign run``) starting one cache at the same moment
        must agree on the chunk and batch size: the first to link its complete file into place
        fixes them, the others read and use what it wrote. The file appears whole or not at all
        (a hard link of a finished temp file), never half-written."""
        path = self.directory / "meta.json"
        if not path.exists():
            try:
                fd, tmp = owned_temp(path)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(json.dumps(meta, indent=2, sort_keys=True).encode())
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise CacheError(f"{path.parent}: cannot write the feature cache ({exc.strerror or exc}); "
                                 "free space or fix permissions, or point CODESIGN_HOME elsewhere") from exc
            try:
                os.link(tmp, path)  # fails if another writer got there first: theirs stands
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: exclusive create, then rename
                try:
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                    os.replace(tmp, path)
                except FileExistsError:
                    pass
            finally:
                Path(tmp).unlink(missing_ok=True)
        return self.recorded_meta()

    def claim_path(self, split: str, index: int) -> Path:
        """The lock file a writer of a chunk holds (flock) while it computes it."""
        return self.directory / f".{self.chunk_path(split, index).name}.claim"

    def mark_complete(self, summary: dict) -> None:
        atomic_write_json(self.directory / "complete.json", summary)

    def cleanup_temp(self, now: float | None = None) -> list[str]:
        """Delete the temp files no live writer owns; return their names.

        Another process may be writing a chunk of this very cache (two extractions of one model
        and dataset), so a temp file is removed only when its writer is known dead (this host,
        pid gone) or when it is older than STALE_TEMP_SECONDS (another host's, or a name
        without an owner)."""
        now = time.time() if now is None else now
        here = _host_id()
        removed = []
        for tmp in self.directory.glob(".*.tmp"):
            try:
                age = now - tmp.stat().st_mtime
            except FileNotFoundError:  # its writer just renamed it into place
                continue
            owner = _TEMP_NAME.match(tmp.name)
            dead = owner is not None and owner["host"] == here and not _pid_alive(int(owner["pid"]))
            if dead or age > STALE_TEMP_SECONDS:
                tmp.unlink(missing_ok=True)
                removed.append(tmp.name)
        if removed:
            log.info("feature cache %s: removed %d abandoned temp files", self.directory.name, len(removed))
        return sorted(removed)
