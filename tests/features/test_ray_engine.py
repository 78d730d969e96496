"""``codesign extract --engine ray`` on a local Ray instance writes the cache one process writes,
byte for byte (skipped where Ray Data is not installed: the extra codesign[ray])."""

from __future__ import annotations

import pytest
from feature_procs import cache_files

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.features.backbone import resolve_model
from toolchain.features.layers import layer_features

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_a_ray_extraction_equals_one_process_byte_for_byte(local_ray, tiny_bert, toy_spec, tmp_path):
    from pathlib import Path

    from toolchain.features.ray_engine import ray_features

    ds, ref = load_dataset(resolve_dataset(str(toy_spec))), resolve_model(str(tiny_bert))
    one = layer_features(ds, ref, 32, cache_root=tmp_path / "one", chunk_size=16)
    distributed = ray_features(ds, ref, 32, cache_root=tmp_path / "ray", chunk_size=16)
    assert distributed.extracted_chunks == 5  # 3 train, 1 validation, 1 test chunk, each once
    assert Path(distributed.cache_dir).name == Path(one.cache_dir).name
    assert cache_files(Path(distributed.cache_dir)) == cache_files(Path(one.cache_dir))
    again = ray_features(ds, ref, 32, cache_root=tmp_path / "ray")
    assert again.extracted_chunks == 0  # complete: nothing is sent to Ray
