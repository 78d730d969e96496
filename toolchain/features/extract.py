"""One forward pass with output_hidden_states gives every layer; pool each one.

Batches are length-bucketed with dynamic padding: SST-2 is mostly short phrases, so padding
everything to max length wastes most of the compute (benchmarks/extraction_bench.py measures it).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

POOLINGS = ("cls", "mean")


def tokenize(tokenizer, texts: list[str] | tuple[str, ...], max_length: int) -> list[list[int]]:
    """Token ids without padding, truncated to ``max_length`` (special tokens included).

    A length that cannot hold the special tokens plus one is refused: the tokenizer would not
    truncate at all (0, 1) or overflow (negative) rather than say so."""
    specials = tokenizer.num_special_tokens_to_add()
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length <= specials:
        raise ConfigError(f"max_length {max_length!r} leaves no room for text after the tokenizer's "
                          f"{specials} special tokens; use an integer of at least {specials + 1} (e.g. 64)")
    enc = tokenizer(list(texts), truncation=True, max_length=int(max_length), padding=False)
    return enc["input_ids"]


def plan_batches(lengths: np.ndarray, batch_size: int, bucket: bool) -> list[np.ndarray]:
    """Index batches: sorted by length when bucketing, so each batch pads to its own longest."""
    order = np.argsort(lengths, kind="stable") if bucket else np.arange(len(lengths))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(ids: list[list[int]], pad_id: int, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    width = length or max(len(s) for s in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return input_ids, mask


def pool_hidden_states(hidden_states, mask, poolings=POOLINGS) -> dict[str, np.ndarray]:
    """Stacked hidden states [L+1, B, T, d] → per pooling [L+1, B, d]."""
    import torch

    stacked = torch.stack(tuple(hidden_states))  # [L+1, B, T, d]
    out = {}
    for pooling in poolings:
        if pooling == "cls":
            out[pooling] = stacked[:, :, 0, :]
        elif pooling == "mean":
            m = mask.to(stacked.dtype)[None, :, :, None]
            out[pooling] = (stacked * m).sum(2) / m.sum(2).clamp(min=1.0)
        else:
            raise ValueError(f"unknown pooling {pooling!r}")
    return {k: v.float().cpu().numpy() for k, v in out.items()}


def extract_pooled(
    model,
    tokenizer,
    ids: list[list[int]],
    poolings=POOLINGS,
    batch_size: int = 64,
    bucket: bool = True,
    pad_to: int | None = None,
    on_batch=None,
    device=None,
    autocast=None,
) -> dict[str, np.ndarray]:
    """Pooled features of every layer for already-tokenized inputs, in input order.

    ``device``: a torch device the model already lives on (default: the CPU); ``autocast``: a
    torch dtype (float16, bfloat16) to autocast the forward pass to on that device. Pooling
    always runs in float32 (hidden states are upcast first), and features come back on the CPU."""
    import contextlib

    import torch

    device = torch.device("cpu") if device is None else device

    lengths = np.array([len(s) for s in ids])
    n_layers = model.config.num_hidden_layers + 1
    dim = model.config.hidden_size
    out = {p: np.empty((n_layers, len(ids), dim), dtype=np.float32) for p in poolings}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for batch in plan_batches(lengths, batch_size, bucket):
            input_ids, mask = pad_batch([ids[i] for i in batch], pad_id, None if bucket else pad_to)
            t_mask = torch.from_numpy(mask).to(device)
            cast = (torch.autocast(device.type, dtype=autocast) if autocast is not None
                    else contextlib.nullcontext())
            with cast:
                result = model(input_ids=torch.from_numpy(input_ids).to(device), attention_mask=t_mask,
                               output_hidden_states=True)
            hidden = result.hidden_states if autocast is None else [h.float() for h in result.hidden_states]
            pooled = pool_hidden_states(hidden, t_mask, poolings)
            for p in poolings:
                out[p][:, batch, :] = pooled[p]
            if on_batch is not None:
                on_batch(len(batch))
    return out
