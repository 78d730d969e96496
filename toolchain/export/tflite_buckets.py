"""TFLite at real lengths: one fixed-shape file per length bucket, the smallest that fits picked
per input.

litert-torch 0.10 converts only a fixed [1, max_length] shape (tflite.py says why), so a short
question pays for a full 64-token pass. Here a candidate is converted at a few lengths (by default
16, 32 and the candidate's max length) into ``model-<L>.tflite`` files beside one
``buckets.json``; :class:`BucketedTFLiteRunner` pads each input only to the smallest bucket
that holds it. The files do not share weights (each is a separate flatbuffer; a multi-signature
file would, but the converter worker builds one signature), so the artefact is about
``len(lengths)`` times the size of one file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ExportError
from .tflite import CONVERT_TIMEOUT_S, TFLiteRunner, export_tflite

BUCKETS_FILE = "buckets.json"


def bucket_lengths(max_length: int, lengths: Sequence[int] = (16, 32)) -> tuple[int, ...]:
    """The sorted buckets below ``max_length``, plus ``max_length`` itself (every input fits)."""
    if max_length < 2:
        raise ExportError(f"max_length {max_length} is too short for TFLite buckets; use >= 2")
    return tuple(sorted({int(n) for n in lengths if 2 <= int(n) < max_length} | {int(max_length)}))


def export_tflite_buckets(saved_head_path, model_path: str, out_dir: Path, lengths: Sequence[int] = (16, 32),
                          max_length: int | None = None, quantize: bool = False, env: Path | None = None,
                          timeout: float = CONVERT_TIMEOUT_S, pruning=None) -> Path:
    """Convert one file per bucket into ``out_dir``; return the path of ``buckets.json``."""
    from .tflite import _load_saved

    saved = _load_saved(saved_head_path)
    top = int(max_length or saved.candidate.max_length)
    buckets = bucket_lengths(top, lengths)
    out_dir = Path(out_dir)
    files = {}
    for n in buckets:
        path = export_tflite(saved, model_path, out_dir, max_length=n, quantize=quantize, env=env,
                             timeout=timeout, name=f"model-{n}.tflite", pruning=pruning)
        files[str(n)] = path.name
    index = out_dir / BUCKETS_FILE
    index.write_text(json.dumps({"candidate_id": saved.candidate.id, "lengths": list(buckets), "files": files,
                                 "quantize": bool(quantize)}, indent=2, sort_keys=True))
    return index


class BucketedTFLiteRunner:
    """Batch-1 inference over a ``buckets.json``: the smallest bucket >= the input's length."""

    def __init__(self, index: Path, threads: int = 1) -> None:
        index = Path(index)
        meta = json.loads(index.read_text())
        self.runners = {int(n): TFLiteRunner(index.parent / name, threads) for n, name in meta["files"].items()}
        self.lengths = sorted(self.runners)
        self.calls = dict.fromkeys(self.lengths, 0)  # how often each bucket ran (deterministic counter)

    def pick(self, n_tokens: int) -> int:
        for n in self.lengths:
            if n_tokens <= n:
                return n
        raise ExportError(f"input of {n_tokens} tokens exceeds the largest bucket {self.lengths[-1]}; "
                          "truncate to it (the tokenizer does at max_length)")

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        n = self.pick(len(np.asarray(ids).reshape(-1)))
        self.calls[n] += 1
        return self.runners[n](ids)
