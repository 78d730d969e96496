"""Hardening of the feature layer (issue 11): a cache key that covers the config and tokenizer,
temp-file cleanup that spares live writers, and bad models and lengths refused in one line
before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.errors import CacheError, ConfigError, ModelLoadError
from toolchain.features.backbone import (
    ModelRef,
    backbone_info,
    inspect_model,
    load_backbone,
    resolve_model,
)
from toolchain.features.cache import STALE_TEMP_SECONDS, FeatureCache
from toolchain.features.layers import layer_features


def _ds(spec_path: Path):
    return load_dataset(resolve_dataset(str(spec_path)))


def _copy(model: Path, dest: Path) -> Path:
    return Path(shutil.copytree(model, dest))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _nothing_written(home: Path) -> None:
    left = sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []
    assert not left, f"left behind in CODESIGN_HOME: {left}"


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 500, msg
    for needle in needles:
        assert needle.lower() in msg.lower(), f"{needle!r} not in {msg!r}"
    return msg


# --- 1. the key covers config, tokenizer and compute -----------------------------------------


def test_same_weights_with_a_config_of_fewer_layers_is_not_a_cache_hit(tiny_bert, toy_spec, tmp_path):
    model = _copy(tiny_bert, tmp_path / "m")
    ds = _ds(toy_spec)
    ref = resolve_model(str(model))
    full = layer_features(ds, ref, 32)
    assert full.n_layers == 3  # embeddings + 2 layers
    _edit_json(model / "config.json", num_hidden_layers=1)
    ref1 = resolve_model(str(model))
    assert ref1.weights_hash == ref.weights_hash  # same weights: only the config tells them apart
    short = layer_features(ds, ref1, 32)
    assert short.cache_dir != full.cache_dir and short.extracted_chunks > 0
    assert short.n_layers == 2 and backbone_info(ref1).n_layers == 1
    # The first layers agree: the shorter config reads the same weights.
    np.testing.assert_array_equal(short.splits["train"]["mean"], full.splits["train"]["mean"][:2])


def test_a_changed_tokenizer_is_not_a_cache_hit(tiny_bert, toy_spec, tmp_path):
    model = _copy(tiny_bert, tmp_path / "m")
    ds, ref = _ds(toy_spec), resolve_model(str(model))
    before = layer_features(ds, ref, 32)
    # Swap two words' ids: same weights, same config, other token ids for the toy texts.
    tok = json.loads((model / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]
    (model / "tokenizer.json").write_text(json.dumps(tok))
    after = layer_features(ds, resolve_model(str(model)), 32)
    assert after.cache_dir != before.cache_dir and after.extracted_chunks > 0
    assert not np.array_equal(after.splits["train"]["mean"], before.splits["train"]["mean"])


@pytest.mark.parametrize("name", ["tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                  "special_tokens_map.json", "config.json", "added_tokens.json"])
def test_every_tokenizer_and_config_file_is_in_the_key(tiny_bert, tmp_path, name):
    model = _copy(tiny_bert, tmp_path / "m")
    ref = resolve_model(str(model))
    base = inspect_model(ref).files_hash
    assert inspect_model(ref).files_hash == base  # stable for an unchanged folder
    path = model / name
    path.write_bytes((path.read_bytes() if path.exists() else b"{}") + b"\n")
    assert inspect_model(ref).files_hash != base
    assert resolve_model(str(model)).weights_hash == ref.weights_hash


def test_a_bfloat16_config_still_extracts_in_float32(tiny_bert, toy_spec, tmp_path):
    import torch

    model = _copy(tiny_bert, tmp_path / "m")
    _edit_json(model / "config.json", dtype="bfloat16", torch_dtype="bfloat16")
    ref = resolve_model(str(model))
    assert load_backbone(ref)[1].dtype == torch.float32
    ds = _ds(toy_spec)
    a = layer_features(ds, ref, 32)
    b = layer_features(ds, resolve_model(str(tiny_bert)), 32)
    assert a.cache_dir != b.cache_dir  # another config.json, so another key...
    np.testing.assert_array_equal(a.splits["train"]["cls"], b.splits["train"]["cls"])  # ...same bits


# --- 2. temp files: only stale ones are cleaned ------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from toolchain.features.cache import owned_temp

    fd, tmp = owned_temp(Path(sys.argv[1]))
    os.write(fd, b"half a chunk")  # ...and never finishes: it waits for the parent
    print(tmp, flush=True)
    sys.stdin.readline()
    """
)


def _writer(folder: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(folder / "train-00003.safetensors")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_cleanup_spares_a_chunk_another_live_process_is_writing(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    cache.directory.mkdir()
    proc, tmp = _writer(cache.directory, tmp_path)
    try:
        assert tmp.is_file() and f"~{proc.pid}~" in tmp.name
        assert cache.cleanup_temp() == [] and tmp.is_file()  # its writer is alive: kept
    finally:
        proc.kill()
        proc.wait()
    assert cache.cleanup_temp() == [tmp.name] and not tmp.exists()  # writer dead: removed


def _temp(folder: Path, name: str, age_s: float) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * 17)
    stamp = path.stat().st_mtime - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_cleanup_judges_temps_without_a_checkable_owner_by_age(tmp_path):
    from toolchain.features.cache import _host_id

    cache = FeatureCache(tmp_path / "c")
    cache.directory.mkdir()
    old, young = STALE_TEMP_SECONDS + 3600, 60
    legacy_old = _temp(cache.directory, ".train-00000.safetensors.x1y2.tmp", old)  # version-1 name
    legacy_young = _temp(cache.directory, ".train-00001.safetensors.a9b8.tmp", young)
    foreign_old = _temp(cache.directory, ".train-00002.safetensors~other-host~4242~q1.tmp", old)
    foreign_young = _temp(cache.directory, ".train-00003.safetensors~other-host~4242~q2.tmp", young)
    here = _host_id()
    mine = _temp(cache.directory, f".meta.json~{here}~{os.getpid()}~q3.tmp", young)  # we are alive
    # A live pid on this host, but a temp hours old: the pid was reused, the writer is long gone.
    reused = _temp(cache.directory, f".train-00004.safetensors~{here}~{os.getpid()}~q4.tmp", old)
    chunk = cache.directory / "train-00000.safetensors"
    chunk.write_bytes(b"finished")
    removed = cache.cleanup_temp()
    assert removed == sorted(p.name for p in (legacy_old, foreign_old, reused))
    assert legacy_young.exists() and foreign_young.exists() and mine.exists() and chunk.exists()
    assert not legacy_old.exists() and not foreign_old.exists() and not reused.exists()


def test_cleanup_removes_a_dead_writers_temp_on_this_host_whatever_its_age(tmp_path):
    from toolchain.features.cache import _host_id

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a real pid, now dead (and reaped)
    cache = FeatureCache(tmp_path / "c")
    cache.directory.mkdir()
    dead = _temp(cache.directory, f".train-00000.safetensors~{_host_id()}~{proc.pid}~z.tmp", 0)
    assert cache.cleanup_temp() == [dead.name]


def test_temp_names_carry_this_host_and_pid(tmp_path):
    from toolchain.features.cache import _host_id, owned_temp

    fd, tmp = owned_temp(tmp_path / "train-00000.safetensors")
    os.close(fd)
    name = Path(tmp).name
    assert name.startswith(".train-00000.safetensors~") and name.endswith(".tmp")
    assert f"~{_host_id()}~{os.getpid()}~" in name


# --- 3. bad lengths, bad models: one line, nothing written ----------------------------------


@pytest.mark.parametrize("max_length", [0, -5, 1])
def test_too_short_max_length_is_refused_before_anything_is_written(tiny_bert, toy_spec, max_length,
                                                                   codesign_home):
    with pytest.raises(ConfigError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), max_length)
    _one_line(exc, f"--max-length {max_length}", "2..512", "--max-length 64")
    _nothing_written(codesign_home)


def test_max_length_beyond_the_position_embeddings_is_refused(tiny_bert, toy_spec, codesign_home):
    with pytest.raises(ConfigError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 100000)
    _one_line(exc, "100000", "512 position embeddings", "--max-length 512 or less")
    _nothing_written(codesign_home)
    assert layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 512).extracted_chunks


def test_max_length_with_room_only_for_special_tokens_is_refused(tiny_bert, toy_spec, codesign_home):
    with pytest.raises(ConfigError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 2)
    _one_line(exc, "no room for text", "2 special tokens", "--max-length 3 or more")
    _nothing_written(codesign_home)


@pytest.mark.parametrize("max_length", [0, 1, 2, -5, 8.0])
def test_tokenize_refuses_lengths_it_would_silently_ignore(tiny_bert, max_length):
    from toolchain.features.extract import tokenize

    tokenizer, _ = load_backbone(resolve_model(str(tiny_bert)))
    with pytest.raises(ConfigError) as exc:  # 0 and 1 ran untruncated, -5 overflowed
        tokenize(tokenizer, ["the film was really really good"], max_length)
    _one_line(exc, "2 special tokens", "at least 3")
    assert [len(s) for s in tokenize(tokenizer, ["the film was really really good"], 3)] == [3]


@pytest.mark.parametrize("max_length", ["64", 64.0, True, None])
def test_max_length_that_is_not_an_integer_is_refused(tiny_bert, toy_spec, max_length, codesign_home):
    with pytest.raises(ConfigError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), max_length)
    _one_line(exc, "not an integer")
    _nothing_written(codesign_home)


def test_roberta_style_position_limit_leaves_out_the_padding_offset(tmp_path):
    folder = tmp_path / "rob"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}))
    (folder / "vocab.json").write_text("{}")
    assert inspect_model(ModelRef("rob", str(folder), "w")).max_length_limit == 512


CORRUPT_CONFIGS = {
    "not JSON": ("{not json", "not valid JSON"),
    "a JSON list": ("[]", "JSON list, not an object"),
    "no model_type": ("{}", 'no "model_type"'),
    "unknown model_type": ('{"model_type": "nosuch"}', 'model_type "nosuch" is unknown'),
    "layers not a number": (None, "not a usable model config"),
    "zero layers": (None, "num_hidden_layers is 0"),
}


@pytest.mark.parametrize("what", list(CORRUPT_CONFIGS))
def test_corrupt_config_is_one_model_load_error_and_nothing_written(tiny_bert, toy_spec, tmp_path, what,
                                                                    codesign_home):
    model = _copy(tiny_bert, tmp_path / "m")
    text, needle = CORRUPT_CONFIGS[what]
    if what == "layers not a number":
        _edit_json(model / "config.json", num_hidden_layers="two")
    elif what == "zero layers":
        _edit_json(model / "config.json", num_hidden_layers=0)
    else:
        (model / "config.json").write_text(text)
    ref = resolve_model(str(model))
    for call in (lambda: layer_features(_ds(toy_spec), ref, 32), lambda: backbone_info(ref),
                 lambda: load_backbone(ref)):
        with pytest.raises(ModelLoadError) as exc:
            call()
        _one_line(exc, "config.json", needle, "pass another --model")
    _nothing_written(codesign_home)


def test_folder_without_weights_is_refused(tiny_bert, tmp_path):
    model = _copy(tiny_bert, tmp_path / "m")
    (model / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as exc:
        resolve_model(str(model))
    _one_line(exc, "no model weights", "--model")


def test_folder_without_a_tokenizer_is_refused_before_anything_is_written(tiny_bert, toy_spec, tmp_path,
                                                                          codesign_home):
    model = _copy(tiny_bert, tmp_path / "m")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink()
    ref = resolve_model(str(model))
    # transformers alone would build an empty-vocabulary tokenizer here and carry on.
    for call in (lambda: layer_features(_ds(toy_spec), ref, 32), lambda: load_backbone(ref)):
        with pytest.raises(ModelLoadError) as exc:
            call()
        _one_line(exc, "has no tokenizer", "tokenizer.json", "copy the tokenizer files")
    _nothing_written(codesign_home)


def test_config_with_more_layers_than_the_weights_is_refused(tiny_bert, toy_spec, tmp_path,
                                                             codesign_home):
    model = _copy(tiny_bert, tmp_path / "m")
    _edit_json(model / "config.json", num_hidden_layers=4)  # layers 2 and 3 would be random
    with pytest.raises(ModelLoadError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(model)), 32)
    _one_line(exc, "weights lack", "num_hidden_layers")
    _nothing_written(codesign_home)


@pytest.mark.parametrize("what", ["truncated", "shape mismatch"])
def test_broken_weights_are_one_model_load_error(tiny_bert, toy_spec, tmp_path, what, codesign_home):
    model = _copy(tiny_bert, tmp_path / "m")
    if what == "truncated":
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        _edit_json(model / "config.json", hidden_size=64)
    with pytest.raises(ModelLoadError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(model)), 32)
    _one_line(exc, "could not be loaded", "belong together")
    _nothing_written(codesign_home)


def test_tokenizer_larger_than_the_embedding_is_refused(tiny_bert, toy_spec, tmp_path, codesign_home):
    import torch
    from transformers import BertConfig, BertModel

    model = tmp_path / "small-vocab"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(model, safe_serialization=True)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_bert / name, model / name)
    with pytest.raises(ModelLoadError) as exc:  # ids past 1000 would crash in the embedding
        layer_features(_ds(toy_spec), resolve_model(str(model)), 32)
    _one_line(exc, "30522 tokens", "only 1000", "another model")
    _nothing_written(codesign_home)


@pytest.mark.parametrize("poolings", [("max",), (), ("cls", "cls"), "mean,cls"])
def test_bad_poolings_are_a_config_error(tiny_bert, toy_spec, poolings, codesign_home):
    with pytest.raises(ConfigError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 32, poolings)
    _one_line(exc, "cls, mean")
    _nothing_written(codesign_home)


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
def test_bad_chunk_size_environment_is_a_config_error(tiny_bert, toy_spec, value, monkeypatch,
                                                      codesign_home):
    monkeypatch.setenv("CODESIGN_CHUNK_SIZE", value)
    with pytest.raises(ConfigError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 32)
    _one_line(exc, f"CODESIGN_CHUNK_SIZE='{value}'", "positive integer", "unset it")
    _nothing_written(codesign_home)


def test_bad_batch_size_argument_is_a_config_error(tiny_bert, toy_spec, codesign_home):
    with pytest.raises(ConfigError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 32, batch_size=0)
    _one_line(exc, "batch_size=0", "positive integer")
    _nothing_written(codesign_home)


def test_unwritable_cache_root_is_a_cache_error(tiny_bert, toy_spec, tmp_path):
    root = tmp_path / "a-file"
    root.write_text("not a folder")
    with pytest.raises(CacheError) as exc:
        layer_features(_ds(toy_spec), resolve_model(str(tiny_bert)), 32, cache_root=root)
    _one_line(exc, "cannot create the feature cache")


def test_tampered_cache_metadata_and_chunks_are_cache_errors(tiny_bert, toy_spec, tmp_path):
    from safetensors.numpy import load_file, save_file

    ds, ref = _ds(toy_spec), resolve_model(str(tiny_bert))
    f = layer_features(ds, ref, 32, cache_root=tmp_path)
    cache = Path(f.cache_dir)
    chunk = cache / "train-00000.safetensors"
    arrays = load_file(str(chunk))
    save_file({"cls": arrays["cls"], "lengths": arrays["lengths"]}, str(chunk))  # no "mean"
    with pytest.raises(CacheError) as exc:
        layer_features(ds, ref, 32, cache_root=tmp_path)
    _one_line(exc, "lacks mean", "delete")
    (cache / "complete.json").unlink()
    _edit_json(cache / "meta.json", chunk_size=0)
    with pytest.raises(CacheError) as exc:
        layer_features(ds, ref, 32, cache_root=tmp_path)
    _one_line(exc, "meta.json", "below 1", "delete")

