"""Features extracted on a GPU agree with the CPU's at stated tolerances (skipped without CUDA:
the machines of this project have none; the check runs where one is lent)."""

from __future__ import annotations

import numpy as np
import pytest

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.features.backbone import resolve_model
from toolchain.features.layers import layer_features

torch = pytest.importorskip("torch")
# float32 kernels on a GPU reduce in another order (TF32 is off by default for matmuls in
# torch >= 1.12); half-precision autocast rounds every activation to 11 (fp16) or 8 (bf16) bits.
TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
def test_gpu_features_match_the_cpu_reference(tiny_bert, toy_spec, tmp_path, dtype):
    ds, ref = load_dataset(resolve_dataset(str(toy_spec))), resolve_model(str(tiny_bert))
    cpu = layer_features(ds, ref, 32, cache_root=tmp_path)
    gpu = layer_features(ds, ref, 32, cache_root=tmp_path, device="cuda", dtype=dtype)
    assert gpu.cache_dir != cpu.cache_dir and gpu.compute.startswith("cuda/")
    for split in ("train", "validation", "test"):
        for pooling in ("cls", "mean"):
            for layer in range(cpu.n_layers):
                a, b = cpu.get(split, pooling, layer), gpu.get(split, pooling, layer)
                scale = max(1.0, float(np.abs(a).max()))
                assert float(np.abs(a - b).max()) <= TOLERANCE[dtype] * scale, (split, pooling, layer)
