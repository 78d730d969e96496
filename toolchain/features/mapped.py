"""Feature chunks read memory-mapped, one layer at a time.

A chunk is a safetensors file: an 8-byte little-endian header length, a JSON header giving each
tensor's dtype, shape and byte range, then the raw little-endian C-ordered data. A pooling's
tensor is [layers+1, rows, dim], so one layer of one chunk is a contiguous [rows, dim] slab that
``np.memmap`` exposes without reading the rest: a head that needs layer 3 of a million texts
touches layer 3's pages only, and a streamed fit never holds more than a block in memory.

Headers are checked when a cache is opened (every chunk: names, dtype, shape, byte ranges
within the file), so a truncated or rewritten chunk is a one-line CacheError before any head
runs, as it was when every chunk was loaded whole.
"""

from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CacheError

_DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "F16": "<f2"}
# Open chunk maps kept at once: each holds a file descriptor (mmap duplicates it), and the pages
# a process touched in a map count in its RSS until the map is closed.
MAX_OPEN_CHUNKS = 16


@dataclass(frozen=True)
class TensorSpan:
    dtype: str  # numpy dtype string
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


def read_header(path: Path, fix: str) -> dict[str, TensorSpan]:
    """The tensors of a safetensors file with absolute byte ranges, or a CacheError."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than its header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100_000_000):
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CacheError(f"{path}: unreadable feature chunk ({exc}); {fix}") from exc
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, end = (base + int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CacheError(f"{path}: unreadable feature chunk (tensor {name!r}: {exc}); {fix}") from exc
        if end > size or end - start != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
            raise CacheError(f"{path}: unreadable feature chunk (tensor {name!r} runs past the file); {fix}")
        out[name] = TensorSpan(dtype, shape, start, end)
    return out


class ChunkMaps:
    """Memory maps of a cache's chunk files, opened on demand, at most MAX_OPEN_CHUNKS at once."""

    def __init__(self) -> None:
        self._open: OrderedDict[Path, np.memmap] = OrderedDict()

    def view(self, path: Path, span: TensorSpan) -> np.ndarray:
        mm = self._open.get(path)
        if mm is None:
            mm = np.memmap(path, dtype=np.uint8, mode="r")
            self._open[path] = mm
            while len(self._open) > MAX_OPEN_CHUNKS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(path)
        return mm[span.start : span.end].view(span.dtype).reshape(span.shape)

    def __getstate__(self):  # forked or pickled copies reopen their own maps
        return {}

    def __setstate__(self, state) -> None:
        self._open = OrderedDict()


class MappedLayer:
    """One layer of one pooling over a split's chunks, as rows [N, dim] (float32) that are
    read from the mapped files only when asked: per chunk (``blocks``), by row (``take``), or
    whole (``np.asarray``)."""

    def __init__(self, maps: ChunkMaps, chunks: list[tuple[Path, TensorSpan]], layer: int) -> None:
        self._maps, self._chunks, self.layer = maps, chunks, layer
        self._rows = np.array([span.shape[1] for _, span in chunks], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._rows)])
        self.dim = chunks[0][1].shape[2]
        self.dtype = np.dtype(chunks[0][1].dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self._starts[-1]), self.dim

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def nbytes(self) -> int:
        return len(self) * self.dim * self.dtype.itemsize

    def block(self, i: int) -> np.ndarray:
        path, span = self._chunks[i]
        return self._maps.view(path, span)[self.layer]

    def blocks(self) -> Iterator[np.ndarray]:
        """Read-only [rows, dim] views, one per chunk, in row order."""
        for i in range(len(self._chunks)):
            yield self.block(i)

    def block_bounds(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in zip(self._starts[:-1], self._starts[1:], strict=True)]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows in the order given (a shuffled minibatch), gathered chunk by chunk."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=self.dtype)
        which = np.searchsorted(self._starts, rows, side="right") - 1
        for i in np.unique(which):
            sel = np.flatnonzero(which == i)
            out[sel] = self.block(int(i))[rows[sel] - self._starts[i]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.concatenate(list(self.blocks()), axis=0) if self._chunks else np.empty((0, self.dim))
        return out if dtype is None else out.astype(dtype, copy=False)
