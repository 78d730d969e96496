"""TFLite length buckets: which bucket an input gets, and (with the converter env) that the
bucketed files give PyTorch's unpadded probabilities, pruned vocabulary included."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import ExportError
from toolchain.export.tflite_buckets import (
    BucketedTFLiteRunner,
    bucket_lengths,
    export_tflite_buckets,
)
from toolchain.export.tolerances import TOLERANCES
from toolchain.heads.combine import Standardizer
from toolchain.heads.dense import DenseLayer
from toolchain.search.candidate import Candidate
from toolchain.search.fit import SavedHead

TEXTS = ["ok", "a short one", "what is the capital city of france",
         "terrible plot , worse dialogue , and the ending makes no sense at all whatsoever really"]


def test_bucket_lengths_always_end_at_max_length():
    assert bucket_lengths(64) == (16, 32, 64)
    assert bucket_lengths(24) == (16, 24)
    assert bucket_lengths(16, (4, 16, 40)) == (4, 16)
    with pytest.raises(ExportError, match="too short"):
        bucket_lengths(1)


def _saved_head() -> SavedHead:
    cand = Candidate("tiny", (1, 2), "concat", "mean", "softmax", 3, max_length=16)
    rng = np.random.default_rng(0)
    stds = [Standardizer(np.zeros(32, np.float32), np.ones(32, np.float32)) for _ in cand.layers]
    layers = [DenseLayer((rng.normal(size=(3, 64)) * 0.5).astype(np.float32), np.zeros(3, np.float32), "none")]
    return SavedHead(cand, stds, None, layers, val_acc=0.5)


@pytest.mark.tflite
@pytest.mark.slow
def test_bucketed_tflite_matches_pytorch_unpadded_with_pruned_vocab(tiny_bert, tmp_path):
    import torch

    from toolchain.export.graph import build_module
    from toolchain.export.text_inputs import encode, load_tokenizer
    from toolchain.export.tflite import ensure_converter_env
    from toolchain.export.vocab import prune_for_texts
    from toolchain.features.backbone import load_backbone, resolve_model

    env = ensure_converter_env(Path(os.environ.get("CODESIGN_LITERT_ENV")
                                    or Path.home() / ".cache" / "codesign" / "envs" / "litert-torch"))
    saved = _saved_head()
    pruning = prune_for_texts(tiny_bert / "tokenizer.json", TEXTS)
    index = export_tflite_buckets(saved, str(tiny_bert), tmp_path, lengths=(8,), env=env, pruning=pruning)
    runner = BucketedTFLiteRunner(index)
    assert runner.lengths == [8, 16]
    ids = encode(load_tokenizer(tmp_path, 16), TEXTS)  # the pruned tokenizer written beside the files
    assert max(max(x) for x in ids) < pruning.n_kept
    _, model = load_backbone(resolve_model(str(tiny_bert)))
    module = build_module(model, saved, pruning=pruning)
    with torch.inference_mode():
        expected = np.stack([module(torch.from_numpy(x[None]), torch.ones((1, len(x)), dtype=torch.int64))
                             .numpy()[0] for x in ids])
    got = np.stack([runner(x) for x in ids])
    assert float(np.abs(got - expected).max()) <= TOLERANCES["fp32"].max_abs_prob
    # Each input ran in the smallest bucket that holds it (counted, not timed).
    assert runner.calls == {8: sum(len(x) <= 8 for x in ids), 16: sum(len(x) > 8 for x in ids)}
    assert runner.calls[8] and runner.calls[16]
