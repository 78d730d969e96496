"""Tokenize with the `tokenizers` package alone, as a board does (no transformers there)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def load_tokenizer(folder: Path, max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    return tok


def encode(tokenizer, texts) -> list[np.ndarray]:
    return [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(list(texts))]


def pack(ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded [N, T] ids and mask, plus the real lengths."""
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    width = int(lengths.max())
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return input_ids, mask, lengths


def batched_probs(session, ids: list[np.ndarray], batch: int = 32) -> np.ndarray:
    """Probabilities for many inputs, length-bucketed batches (padding is masked out)."""
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = None
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        input_ids, mask, _ = pack([ids[i] for i in idx])
        probs = session.run(["probs"], {"input_ids": input_ids, "attention_mask": mask})[0]
        if out is None:
            out = np.empty((len(ids), probs.shape[1]), dtype=np.float32)
        out[idx] = probs
    return out
