"""Helpers for the store tests: a record factory (also used by the writer subprocess)."""

from __future__ import annotations

import hashlib

from toolchain.profiling.records import CostRecord
from toolchain.search.candidate import Candidate


def candidate(depth: int = 3, precision: str = "fp32", backbone: str = "tiny", head: str = "softmax",
              max_length: int = 64, head_size: int = 0) -> Candidate:
    return Candidate(backbone=backbone, layers=(depth,), combine="single", pooling="mean", head=head,
                     head_size=head_size, precision=precision, max_length=max_length)


def make_record(cand: Candidate | None = None, *, target: str = "host", samples=(1.0, 1.1, 0.9),
                record_id: str | None = None, **kw) -> CostRecord:
    cand = cand or candidate()
    if record_id is not None:
        kw["record_id"] = record_id
    return CostRecord(target=target, target_hash="t" * 16, candidate_id=cand.id, candidate=cand.to_dict(),
                      precision=cand.precision, runtime="onnxruntime", latency_ms_samples=tuple(samples),
                      **kw)


def fixed_id(*parts: object) -> str:
    """A deterministic record id (32 hex digits) so tests know which ids to expect."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()
