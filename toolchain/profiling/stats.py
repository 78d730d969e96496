"""Summary statistics derived from raw latency samples (records never store them)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation (numpy's default method)."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q={q} must be within 0..100")
    xs = sorted(float(x) for x in samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50.0)


@dataclass(frozen=True)
class LatencyStats:
    """Robust summary of latency samples, all in milliseconds except ``n`` and ``spread``.

    ``spread`` is the relative interdecile range (p90 − p10) / median: how noisy the
    measurement was, comparable across fast and slow candidates.
    """

    n: int
    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    spread: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(samples: Iterable[float]) -> LatencyStats:
    """Median, mean, extremes, p10/p90, interquartile range and relative spread."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        raise ValueError("no latency samples to summarize")
    med = percentile(xs, 50)
    p10, p90 = percentile(xs, 10), percentile(xs, 90)
    return LatencyStats(
        n=len(xs), median_ms=med, mean_ms=sum(xs) / len(xs), min_ms=xs[0], max_ms=xs[-1],
        p10_ms=p10, p90_ms=p90, iqr_ms=percentile(xs, 75) - percentile(xs, 25),
        spread=(p90 - p10) / med if med > 0 else 0.0,
    )


def record_stats(record) -> LatencyStats | None:
    """Statistics of one :class:`~toolchain.profiling.records.CostRecord`; None without samples."""
    return summarize(record.latency_ms_samples) if record.latency_ms_samples else None


def pooled_stats(records: Iterable) -> LatencyStats | None:
    """Statistics of the samples of several records of one candidate, pooled (interleaved rounds)."""
    xs = [x for r in records for x in r.latency_ms_samples]
    return summarize(xs) if xs else None
