"""``codesign extract --shard K/N`` and ``--finalize``: shards in real processes give the cache one
process gives, byte for byte; finalize refuses an unfinished cache; --device and --dtype."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from feature_procs import cache_files, codesign_env, finish, start

from toolchain.cli import main
from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.errors import CacheError, ConfigError
from toolchain.features.backbone import resolve_model
from toolchain.features.cache import cache_key
from toolchain.features.device import compute_mode
from toolchain.features.layers import layer_features
from toolchain.features.shard import extract_shard, finalize, parse_shard

EXTRACT = ["extract", "--dataset", "data/toy.toml", "--model", "model", "--max-length", 32]
CHUNKS = ["train-00000", "train-00001", "train-00002", "train-00003", "train-00004", "train-00005",
          "validation-00000", "validation-00001", "test-00000", "test-00001"]  # chunks of 8 rows


def _work(tmp_path: Path, tiny_bert: Path, toy_spec: Path) -> Path:
    shutil.copytree(tiny_bert, tmp_path / "model")
    shutil.copytree(toy_spec.parent, tmp_path / "data")
    return tmp_path


def _only_cache(home: Path) -> Path:
    (cache,) = (home / "cache" / "features").iterdir()
    return cache


@pytest.mark.slow
def test_two_shards_and_finalize_equal_one_process_byte_for_byte(tmp_path, tiny_bert, toy_spec):
    work = _work(tmp_path, tiny_bert, toy_spec)
    one = finish(start(EXTRACT, work, codesign_env(work / "one", CODESIGN_CHUNK_SIZE=8)))
    assert one.returncode == 0, one.stderr[-3000:]
    barrier = work / "barrier"
    barrier.mkdir()
    shards = [start([*EXTRACT, "--shard", f"{k}/2"], work,
                    codesign_env(work / "sharded", CODESIGN_CHUNK_SIZE=8, BARRIER_DIR=barrier, BARRIER_N=2,
                                 WRITE_LOG=work / f"shard-{k}.log"))
              for k in (0, 1)]
    for k, result in enumerate(finish(p) for p in shards):
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"shard {k}/2, 5 of 5 owned chunks computed (10 in all)" in result.stdout, result.stdout
        # Shard k wrote exactly the chunks at positions k, k+2, ... of the global order.
        written = (work / f"shard-{k}.log").read_text().split()
        assert sorted(written) == sorted(f"{c}.safetensors" for c in CHUNKS[k::2])
    sharded = _only_cache(work / "sharded")
    assert not (sharded / "complete.json").exists()  # shards never mark the cache complete
    fin = finish(start([*EXTRACT, "--finalize"], work, codesign_env(work / "sharded")))
    assert fin.returncode == 0 and "finalized, 3 layers" in fin.stdout, fin.stdout + fin.stderr[-2000:]
    reference = _only_cache(work / "one")
    assert sharded.name == reference.name  # the same content key
    assert cache_files(sharded) == cache_files(reference)


def _ds(spec):
    return load_dataset(resolve_dataset(str(spec)))


def test_finalize_refuses_a_cache_with_a_missing_chunk_and_names_it(tmp_path, tiny_bert, toy_spec):
    ds, ref = _ds(toy_spec), resolve_model(str(tiny_bert))
    with pytest.raises(CacheError, match="no shard has started"):
        finalize(ds, ref, 32, cache_root=tmp_path)
    report = extract_shard(ds, ref, 32, shard=(0, 3), cache_root=tmp_path, chunk_size=16)
    # 3 train, 1 validation, 1 test chunks of 16 rows: shard 0 of 3 owns positions 0 and 3.
    assert (report.owned_chunks, report.extracted_chunks, report.total_chunks) == (2, 2, 5)
    with pytest.raises(CacheError) as exc:
        finalize(ds, ref, 32, cache_root=tmp_path)
    message = str(exc.value)
    assert "3 of 5 chunks are missing" in message and "train-00001 (position 1)" in message
    assert "\n" not in message
    for k in (1, 2):  # the chunk size is the one shard 0 fixed, whatever these ask for
        extract_shard(ds, ref, 32, shard=(k, 3), cache_root=tmp_path, chunk_size=5)
    done = finalize(ds, ref, 32, cache_root=tmp_path)
    assert done.state == "finalized" and Path(done.cache_dir, "complete.json").is_file()
    assert finalize(ds, ref, 32, cache_root=tmp_path).state == "already complete"
    whole = layer_features(ds, ref, 32, cache_root=tmp_path / "one", chunk_size=16)
    again = layer_features(ds, ref, 32, cache_root=tmp_path)
    assert again.extracted_chunks == 0
    for split in ("train", "validation", "test"):
        for layer in range(3):
            assert (again.get(split, "mean", layer) == whole.get(split, "mean", layer)).all()


@pytest.mark.parametrize("text", ["2/2", "0/0", "-1/3", "1", "a/b", "1/2/3"])
def test_a_shard_out_of_range_is_one_line(text):
    with pytest.raises(ConfigError) as exc:
        parse_shard(text)
    assert "K/N" in str(exc.value) or "0..N-1" in str(exc.value)
    result = CliRunner().invoke(main, ["extract", "--shard", text])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--shard" in lines[0], result.stderr


def test_shard_indices_are_parsed():
    assert parse_shard("0/1") == (0, 1) and parse_shard(" 3 / 4 ") == (3, 4)


def test_device_cuda_without_cuda_is_one_clear_error(tmp_path, tiny_bert, toy_spec):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    work = _work(tmp_path, tiny_bert, toy_spec)
    import os

    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = CliRunner().invoke(main, [*map(str, EXTRACT), "--device", "cuda"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no CUDA device is available" in lines[0] and "--device cpu" in lines[0]
    assert not (Path(os.environ["CODESIGN_HOME"]) / "cache").exists()  # nothing written


def test_the_cache_key_covers_device_type_and_dtype_but_not_the_index():
    modes = {compute_mode("cpu"), compute_mode("cuda"), compute_mode("cuda", "float16"),
             compute_mode("cuda", "bfloat16")}
    assert len(modes) == 4
    assert compute_mode("cpu") == "cpu/float32"  # every existing cache keeps its key
    assert compute_mode("cuda:1", "float16") == compute_mode("cuda:0", "float16")
    keys = {cache_key("w", "f", "d", 64, ("cls",), m) for m in modes}
    assert len(keys) == 4


def test_half_precision_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="autocast on a GPU only"):
        compute_mode("cpu", "float16")
    result = CliRunner().invoke(main, ["extract", "--dtype", "float64"])
    assert result.exit_code == 2 and result.stderr.startswith("error:")
