"""Build an agent job folder from an artefact: the model, inputs with a realistic mix of real
lengths drawn from validation, and job.json with every file's sha256.

The inputs are drawn at evenly spaced quantiles of the validation lengths (then shuffled), so
their median length is the validation median: what the cost model predicts at. A random draw of
a few dozen inputs could miss it by 10-20 %, and latency is nearly proportional to length.

``op_profile`` = (runs, warmup) asks the agent for ONNX Runtime's kernel profile as well: job.json
gets ``"op_profile": {"runs", "warmup"}`` (see bundle/agent.py), absent when not asked."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np

from ..export.artefact import sha256_file
from ..export.text_inputs import encode, load_tokenizer, pack


def build_job(artefact_dir: Path, texts, job_dir: Path, *, n_inputs: int = 32, seed: int = 0,
              provider: str = "CPU", runtime: str = "onnxruntime", model_file: str = "model.onnx",
              op_profile: tuple[int, int] | None = None) -> str:
    """Write the job folder; returns the CRC32 (hex) of the input tensors."""
    meta = json.loads((artefact_dir / "artefact.json").read_text())
    tok = load_tokenizer(artefact_dir, meta["max_length"])
    picked = [texts[i] for i in quantile_pick(tok, texts, n_inputs, seed)]
    input_ids, mask, lengths = pack(encode(tok, picked))
    job_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artefact_dir / model_file, job_dir / model_file)
    np.savez(job_dir / "inputs.npz", input_ids=input_ids, attention_mask=mask, lengths=lengths)
    files = {name: sha256_file(job_dir / name) for name in (model_file, "inputs.npz")}
    job = {"files": files, "model": model_file, "runtime": runtime, "provider": provider}
    if op_profile is not None:
        job["op_profile"] = {"runs": int(op_profile[0]), "warmup": int(op_profile[1])}
    (job_dir / "job.json").write_text(json.dumps(job, indent=2))
    crc = zlib.crc32(input_ids.tobytes())
    crc = zlib.crc32(mask.tobytes(), crc)
    return f"{crc:08x}"


def quantile_pick(tokenizer, texts, n_inputs: int, seed: int = 0, pool: int = 4000) -> np.ndarray:
    """Indices of ``n_inputs`` texts at evenly spaced quantiles of real length, in seeded random
    order (lengths measured on a seeded sample of at most ``pool`` texts)."""
    rng = np.random.default_rng(seed)
    candidates = rng.choice(len(texts), size=min(pool, len(texts)), replace=False)
    lengths = np.array([len(ids) for ids in encode(tokenizer, [texts[i] for i in candidates])])
    by_length = candidates[np.argsort(lengths, kind="stable")]
    n = min(n_inputs, len(texts))
    positions = ((np.arange(n) + 0.5) * len(by_length) / n).astype(int)
    return rng.permutation(by_length[positions])
