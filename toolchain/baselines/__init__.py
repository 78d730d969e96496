"""Baselines the method is measured against: full fine-tuning (at full or truncated depth), the
classic last-layer feature extractor, and the majority class."""

from __future__ import annotations

from .finetune import (
    FinetuneConfig,
    FinetuneResult,
    finetune,
    stratified_subsample,
    truncate_backbone,
)
from .last_layer import LastLayerResult, PoolingScores, last_layer_baseline
from .majority import MajorityResult, majority_baseline

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LastLayerResult",
    "MajorityResult",
    "PoolingScores",
    "finetune",
    "last_layer_baseline",
    "majority_baseline",
    "stratified_subsample",
    "truncate_backbone",
]
