"""TFLite export: conversion in the isolated litert-torch env, validation with ai-edge-litert.

The converter env (~2 GB, minutes to build) is built once and cached at a stable path:
``CODESIGN_LITERT_ENV`` when set, else ``~/.cache/codesign/envs/litert-torch`` (the per-test
CODESIGN_HOME of the root conftest would rebuild it every test).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import ExportError, ValidationMismatchError
from toolchain.export import tflite
from toolchain.export.tflite import (
    TFLiteRunner,
    describe_tflite,
    ensure_converter_env,
    export_tflite,
    read_converter_stamp,
    validate_tflite,
)
from toolchain.export.validate import ReferenceSet
from toolchain.heads.combine import Standardizer
from toolchain.heads.dense import DenseLayer
from toolchain.search.candidate import Candidate
from toolchain.search.fit import SavedHead

MAX_LENGTH = 16
TEXTS = [
    "a short one",
    "the film was wonderful and the actors were great",
    "what is the capital city of france",
    "terrible plot , worse dialogue , and the ending makes no sense at all whatsoever really",
    "ok",
    "how many people live in tokyo today",
    "i would not watch it again",
    "who wrote the novel about the white whale",
]

slow_tflite = [pytest.mark.tflite, pytest.mark.slow]


def _report(what: str, seconds: float) -> None:
    sys.stderr.write(f"\n[tflite timing] {what}: {seconds:.1f} s\n")


@pytest.fixture(scope="session")
def converter_env() -> Path:
    path = Path(os.environ.get("CODESIGN_LITERT_ENV")
                or Path.home() / ".cache" / "codesign" / "envs" / "litert-torch")
    fresh = read_converter_stamp(path) is None
    started = time.perf_counter()
    ensure_converter_env(path)
    if fresh:
        _report(f"converter env build at {path}", time.perf_counter() - started)
    return path


@pytest.fixture(scope="session")
def saved_head() -> SavedHead:
    """Layers 1 and 2 of a 2-layer tiny BERT, concatenated mean pooling, a 2-layer MLP head."""
    cand = Candidate("tiny", (1, 2), "concat", "mean", "mlp", 16, max_length=MAX_LENGTH)
    rng = np.random.default_rng(0)
    stds = [Standardizer(rng.normal(0, 0.1, 32).astype(np.float32),
                         rng.uniform(0.5, 1.5, 32).astype(np.float32)) for _ in cand.layers]
    layers = [DenseLayer((rng.normal(size=(16, 64)) * 0.3).astype(np.float32),
                         rng.normal(size=16).astype(np.float32), "relu"),
              DenseLayer((rng.normal(size=(3, 16)) * 0.5).astype(np.float32),
                         rng.normal(size=3).astype(np.float32), "none")]
    return SavedHead(cand, stds, None, layers, val_acc=0.5)


@pytest.fixture(scope="session")
def reference(tiny_bert: Path, saved_head: SavedHead) -> ReferenceSet:
    """PyTorch's probabilities for real tokenized inputs of varied length, each run unpadded."""
    import torch

    from toolchain.export.graph import build_module
    from toolchain.export.text_inputs import encode, load_tokenizer, pack
    from toolchain.features.backbone import load_backbone, resolve_model

    _, model = load_backbone(resolve_model(str(tiny_bert)))
    module = build_module(model, saved_head)
    ids, mask, lengths = pack(encode(load_tokenizer(tiny_bert, MAX_LENGTH), TEXTS))
    assert lengths.max() == MAX_LENGTH and lengths.min() < 6  # truncated and heavily padded ones
    with torch.inference_mode():
        expected = np.stack([
            module(torch.from_numpy(ids[i : i + 1, :n]), torch.from_numpy(mask[i : i + 1, :n])).numpy()[0]
            for i, n in enumerate(lengths)
        ])
    return ReferenceSet(ids, mask, lengths, expected)


def _export(tmp_path_factory, converter_env, tiny_bert, saved_head, quantize: bool) -> Path:
    out = tmp_path_factory.mktemp("tflite-int8" if quantize else "tflite-fp32")
    started = time.perf_counter()
    path = export_tflite(saved_head, str(tiny_bert), out, MAX_LENGTH, quantize=quantize, env=converter_env)
    _report(f"tiny BERT export ({'int8' if quantize else 'fp32'}, incl. torch.export)",
            time.perf_counter() - started)
    return path


@pytest.fixture(scope="session")
def fp32_file(tmp_path_factory, converter_env, tiny_bert, saved_head) -> Path:
    return _export(tmp_path_factory, converter_env, tiny_bert, saved_head, quantize=False)


@pytest.fixture(scope="session")
def int8_file(tmp_path_factory, converter_env, tiny_bert, saved_head) -> Path:
    return _export(tmp_path_factory, converter_env, tiny_bert, saved_head, quantize=True)


@pytest.mark.tflite
@pytest.mark.slow
def test_fp32_tflite_matches_pytorch(fp32_file: Path, reference: ReferenceSet, tiny_bert: Path) -> None:
    result = validate_tflite(fp32_file, reference, "fp32")
    assert result.passed and result.max_abs_prob <= 1e-4 and result.argmax_agreement == 1.0
    meta = describe_tflite(fp32_file)
    assert meta["runtime"] == "ai-edge-litert" and meta["runtime_requirement"].startswith("ai-edge-litert>=2.3")
    assert "tflite-runtime" in meta["not_supported"]
    assert meta["inputs"] == {"input_ids": {"shape": [1, MAX_LENGTH], "dtype": "int64"},
                              "attention_mask": {"shape": [1, MAX_LENGTH], "dtype": "int64"}}
    assert meta["outputs"] == ["probs"] and meta["operators"]
    # The tokenizer and a sidecar with versions go along.
    sidecar = (fp32_file.parent / "model.tflite.json").read_text()
    assert "litert-torch" in sidecar and '"quantize": "none"' in sidecar
    assert (fp32_file.parent / "tokenizer.json").is_file()


@pytest.mark.tflite
@pytest.mark.slow
def test_int8_tflite_within_tolerance(int8_file: Path, fp32_file: Path, reference: ReferenceSet) -> None:
    result = validate_tflite(int8_file, reference, "int8-dynamic")
    assert result.passed
    assert int8_file.stat().st_size < 0.5 * fp32_file.stat().st_size
    assert '"quantize": "int8-dynamic"' in (int8_file.parent / "model.tflite.json").read_text()


@pytest.mark.tflite
@pytest.mark.slow
def test_corrupted_tflite_fails_validation(fp32_file: Path, reference: ReferenceSet, tiny_bert: Path,
                                           tmp_path: Path) -> None:
    """Changed weights (the word-embedding table, found by its bytes) must fail validation,
    with a message saying by how much."""
    from safetensors.numpy import load_file

    weights = load_file(str(tiny_bert / "model.safetensors"))
    table = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))
    data = bytearray(fp32_file.read_bytes())
    start = bytes(data).find(table.astype(np.float32).tobytes()[:4096])
    assert start >= 0, "the embedding table is not stored verbatim; update the corruption"
    flipped = -3.0 * np.frombuffer(data, np.float32, count=table.size, offset=start)
    data[start : start + table.nbytes] = flipped.astype(np.float32).tobytes()
    bad = tmp_path / "model.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValidationMismatchError, match=r"max \|Δprob\| [0-9.e-]+ \(tolerance [0-9.e-]+"):
        validate_tflite(bad, reference, "fp32")


@pytest.mark.tflite
@pytest.mark.slow
def test_runner_pads_and_rejects_overlong_input(fp32_file: Path, reference: ReferenceSet) -> None:
    runner = TFLiteRunner(fp32_file)
    assert runner.max_length == MAX_LENGTH
    feed = runner.pad(reference.input_ids[0, : reference.lengths[0]])
    assert feed["attention_mask"].sum() == reference.lengths[0] and feed["input_ids"].shape == (1, MAX_LENGTH)
    with pytest.raises(ExportError, match="exceeds the file's fixed length 16"):
        runner(np.ones(MAX_LENGTH + 1, np.int64))


@pytest.mark.tflite
def test_truncated_file_is_a_named_export_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"TFL3" + b"\0" * 60)
    with pytest.raises(ExportError, match="cannot open this TFLite file"):
        TFLiteRunner(bad)


@pytest.mark.tflite
def test_stale_or_partial_converter_env_is_not_ready(tmp_path: Path, monkeypatch) -> None:
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").touch()
    assert read_converter_stamp(env) is None  # no stamp: an interrupted build
    (env / tflite.STAMP).write_text('{"requirements": {"schema": 1, "torch": "torch==0.0", '
                                    '"litert_torch": "litert-torch==0.1"}}')
    assert read_converter_stamp(env) is None  # stamp of other requirements: stale
    monkeypatch.setenv("CODESIGN_LITERT_ENV", str(tmp_path / "elsewhere"))
    assert tflite.converter_env_path() == tmp_path / "elsewhere"
    monkeypatch.delenv("CODESIGN_LITERT_ENV")
    assert tflite.converter_env_path() == Path(os.environ["CODESIGN_HOME"]) / "envs" / "litert-torch"


@pytest.mark.tflite
def test_failed_env_build_is_a_named_error_and_leaves_no_stamp(tmp_path: Path) -> None:
    env = tmp_path / "env"
    with pytest.raises(ExportError, match="could not start"):
        ensure_converter_env(env, python=str(tmp_path / "no-such-python3"))
    assert read_converter_stamp(env) is None


def test_unknown_precision_is_refused(tmp_path: Path) -> None:
    ref = ReferenceSet(np.zeros((1, 2), np.int64), np.ones((1, 2), np.int64), np.array([2]),
                       np.ones((1, 2), np.float32) / 2)
    with pytest.raises(ExportError, match="no TFLite recipe"):
        validate_tflite(tmp_path / "x.tflite", ref, "int8-static")
