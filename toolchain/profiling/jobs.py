"""Build an agent job folder from an artefact: the model, inputs with a realistic mix of real
lengths drawn from validation, and job.json with every file's sha256."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np

from ..export.artefact import sha256_file
from ..export.text_inputs import encode, load_tokenizer, pack


def build_job(artefact_dir: Path, texts, job_dir: Path, *, n_inputs: int = 32, seed: int = 0,
              provider: str = "CPU", runtime: str = "onnxruntime", model_file: str = "model.onnx") -> str:
    """Write the job folder; returns the CRC32 (hex) of the input tensors."""
    meta = json.loads((artefact_dir / "artefact.json").read_text())
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(texts), size=min(n_inputs, len(texts)), replace=False)
    tok = load_tokenizer(artefact_dir, meta["max_length"])
    input_ids, mask, lengths = pack(encode(tok, [texts[i] for i in pick]))
    job_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artefact_dir / model_file, job_dir / model_file)
    np.savez(job_dir / "inputs.npz", input_ids=input_ids, attention_mask=mask, lengths=lengths)
    files = {name: sha256_file(job_dir / name) for name in (model_file, "inputs.npz")}
    job = {"files": files, "model": model_file, "runtime": runtime, "provider": provider}
    (job_dir / "job.json").write_text(json.dumps(job, indent=2))
    crc = zlib.crc32(input_ids.tobytes())
    crc = zlib.crc32(mask.tobytes(), crc)
    return f"{crc:08x}"
