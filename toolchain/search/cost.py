"""First cost estimate for a target: FLOPs and parameter bytes of the truncated backbone at the
candidate's sequence length, plus the head. Measurements later replace it (cost model).

A pruned-vocabulary candidate (``vocab="pruned"``) keeps ``vocab_rows`` rows of the word-embedding
table instead of ``info.vocab``: its model bytes (and so its peak RAM) shrink by
``(info.vocab - vocab_rows) × hidden × bytes per parameter``; its FLOPs do not change (an embedding
lookup is a gather). Without a known row count a pruned candidate is costed at the full table,
which over- rather than under-states its size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config.target_spec import TargetSpec
from ..features.backbone import BackboneInfo
from .candidate import Candidate

BYTES_PER_PARAM = {"fp32": 4.0, "int8-dynamic": 1.0, "int8-static": 1.0, "int8-head": 4.0}


@dataclass(frozen=True)
class Cost:
    latency_ms: float
    model_bytes: int
    peak_ram_bytes: int
    flops: int
    source: str = "predicted"  # or "measured"
    emulated: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def embedding_params(info: BackboneInfo, vocab_rows: int | None = None) -> int:
    h = info.hidden
    rows = info.vocab if vocab_rows is None else vocab_rows
    return rows * h + info.max_positions * h + 2 * h + 2 * h


def layer_params(info: BackboneInfo) -> int:
    h, i = info.hidden, info.intermediate
    return 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h


def layer_flops(info: BackboneInfo, seq_len: float) -> float:
    """Multiply-adds ×2 of one encoder layer at ``seq_len`` tokens (projections, FFN, attention)."""
    h, i, t = info.hidden, info.intermediate, seq_len
    return 2 * t * (4 * h * h + 2 * h * i) + 2 * 2 * t * t * h


def backbone_params(info: BackboneInfo, depth: int, vocab_rows: int | None = None) -> int:
    return embedding_params(info, vocab_rows) + depth * layer_params(info)


def estimate_cost(
    cand: Candidate, info: BackboneInfo, head_params: int, head_flops: int, target: TargetSpec,
    seq_len: float, vocab_rows: int | None = None,
) -> Cost:
    """Analytic estimate on ``target`` at an effective sequence length ``seq_len``;
    ``vocab_rows``: the kept embedding rows, used when the candidate's vocabulary is pruned."""
    est = target.estimate
    flops = cand.depth * layer_flops(info, seq_len) + head_flops
    per_second = est.gflops_per_thread * 1e9 * target.threads
    if cand.precision in ("int8-dynamic", "int8-static"):
        per_second *= est.int8_speedup
    latency_ms = est.fixed_ms + 1e3 * flops / per_second
    rows = vocab_rows if cand.vocab == "pruned" else None
    backbone_bytes = backbone_params(info, cand.depth, rows) * BYTES_PER_PARAM[cand.precision]
    head_bytes = head_params * (1.0 if cand.precision != "fp32" else 4.0)
    model_bytes = int(backbone_bytes + head_bytes)
    activations = 4 * seq_len * (info.hidden * 4 + info.intermediate) + 4 * info.heads * seq_len * seq_len
    peak_ram = int(est.memory_overhead_mb * 2**20 + model_bytes + activations)
    # A prediction is not a measurement, emulated or not.
    return Cost(latency_ms=latency_ms, model_bytes=model_bytes, peak_ram_bytes=peak_ram, flops=int(flops),
                emulated=False)
