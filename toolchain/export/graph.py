"""A candidate as one torch module: token ids and attention mask in, class probabilities out.

The backbone is truncated after the deepest used layer (the layers above are deleted, so they
are really gone from the exported file), then the selected layers are pooled, standardised,
combined and fed to the head — the same arithmetic as the search, in one graph.
"""

from __future__ import annotations

import copy

import numpy as np

from ..errors import ExportError
from ..search.fit import SavedHead
from .vocab import prune_embedding


def truncated_backbone(model, depth: int):
    """A deep copy of a BERT-family encoder holding only layers 1..depth."""
    if not (hasattr(model, "embeddings") and hasattr(getattr(model, "encoder", None), "layer")):
        raise ExportError(
            f"{type(model).__name__}: only BERT-family encoders (embeddings + encoder.layer) can be "
            "truncated and exported; pick a BERT/RoBERTa/MiniLM backbone"
        )
    import torch

    clone = copy.deepcopy(model)
    clone.encoder.layer = torch.nn.ModuleList(list(clone.encoder.layer)[:depth])
    clone.config.num_hidden_layers = depth
    if getattr(clone, "pooler", None) is not None:
        clone.pooler = None  # the HF pooler is never used by a candidate
    return clone


def limit_positions(backbone, max_length: int) -> None:
    """Keep only the position-embedding rows a candidate can reach, in place.

    The tokenizer truncates every input to ``max_length`` tokens, so rows past it are never read;
    MiniLM's 512 × 384 fp32 table is 786 KB, of which a 64-token candidate reads 98 KB. A longer
    input fed to the graph directly (not through the bundle's tokenizer) fails in the Gather
    rather than being silently misread."""
    import torch

    emb = backbone.embeddings
    table = emb.position_embeddings.weight
    if max_length >= table.shape[0]:
        return
    emb.position_embeddings = torch.nn.Embedding.from_pretrained(table.detach()[:max_length].clone(), freeze=True)
    if isinstance(getattr(emb, "position_ids", None), torch.Tensor):
        emb.register_buffer("position_ids", emb.position_ids[:, :max_length].clone(), persistent=False)


def build_module(model, saved: SavedHead, with_features: bool = False, pruning=None):
    """The candidate as one module; ``with_features`` makes it return ``(probs, features)``.

    ``features`` is the standardised, combined vector that goes into the head: a board that
    refits the head on a user's examples (personalisation) needs exactly that vector. The ONNX
    export asks for both; TFLite and the eager benchmarks keep the single ``probs`` output.
    """
    import torch

    cand = saved.candidate

    class CandidateModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = truncated_backbone(model, cand.depth)
            if pruning is not None:  # a VocabPruning: only the kept embedding rows (export/vocab.py)
                prune_embedding(self.backbone, pruning)
            limit_positions(self.backbone, cand.max_length)
            self.layers = cand.layers
            self.pooling = cand.pooling
            self.combine = cand.combine
            self.register_buffer("std_mean", torch.from_numpy(np.stack([s.mean for s in saved.standardizers])))
            self.register_buffer("std_std", torch.from_numpy(np.stack([s.std for s in saved.standardizers])))
            mix = saved.mix if saved.mix is not None else np.ones(len(cand.layers), np.float32)
            self.register_buffer("mix", torch.from_numpy(np.asarray(mix, np.float32)))
            # MatMul + Add rather than Linear/Gemm: ONNX Runtime's dynamic int8 quantizes MatMul.
            self.head_w = torch.nn.ParameterList(
                torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(la.weight.T))) for la in saved.layers
            )
            self.head_b = torch.nn.ParameterList(torch.nn.Parameter(torch.from_numpy(la.bias.copy())) for la in saved.layers)
            self.acts = [la.activation for la in saved.layers]

        def hidden_states(self, input_ids, attention_mask):
            bb = self.backbone
            h = bb.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            states = [h]
            # Additive mask [B,1,1,T]: 0 where attended, a large negative where padded.
            ext = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            for layer in bb.encoder.layer:
                h = layer(h, ext)
                h = h[0] if isinstance(h, tuple) else h
                states.append(h)
            return states

        def forward(self, input_ids, attention_mask):
            states = self.hidden_states(input_ids, attention_mask)
            m = attention_mask.to(torch.float32).unsqueeze(-1)
            parts = []
            for i, layer in enumerate(self.layers):
                h = states[layer]
                pooled = h[:, 0] if self.pooling == "cls" else (h * m).sum(1) / m.sum(1).clamp(min=1.0)
                parts.append((pooled - self.std_mean[i]) / self.std_std[i])
            if self.combine == "single":
                x = parts[0]
            elif self.combine == "concat":
                x = torch.cat(parts, dim=1)
            elif self.combine == "mean":
                x = torch.stack(parts).mean(0)
            else:
                x = (torch.stack(parts) * self.mix[:, None, None]).sum(0)
            features = x
            for w, b, act in zip(self.head_w, self.head_b, self.acts, strict=True):
                x = torch.matmul(x, w) + b
                if act == "relu":
                    x = torch.relu(x)
            probs = torch.softmax(x, dim=-1)
            return (probs, features) if with_features else probs

    module = CandidateModule()
    module.eval()
    return module
