"""Pareto front, budgets, and the selection rule."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.target_spec import TargetSpec
from .cost import Cost


@dataclass(frozen=True)
class Budgets:
    """Limits from the target file, tightened by command-line options; 0 = none."""

    latency_ms: float = 0.0
    model_mb: float = 0.0
    ram_mb: float = 0.0

    @classmethod
    def for_target(cls, target: TargetSpec, max_latency_ms: float | None = None,
                   max_model_mb: float | None = None) -> Budgets:
        def tight(a: float, b: float | None) -> float:
            vals = [v for v in (a, b or 0.0) if v > 0]
            return min(vals) if vals else 0.0

        return cls(tight(target.budgets.latency_ms, max_latency_ms),
                   tight(target.budgets.storage_mb, max_model_mb), target.budgets.ram_mb)

    def __str__(self) -> str:
        parts = [f"latency ≤ {self.latency_ms:g} ms" if self.latency_ms else "",
                 f"model ≤ {self.model_mb:g} MB" if self.model_mb else "",
                 f"RAM ≤ {self.ram_mb:g} MB" if self.ram_mb else ""]
        return ", ".join(p for p in parts if p) or "none"

    def violations(self, cost: Cost) -> list[str]:
        out = []
        if self.latency_ms and cost.latency_ms > self.latency_ms:
            out.append(f"latency {cost.latency_ms:.2f} ms > budget {self.latency_ms:g} ms ({cost.source})")
        if self.model_mb and cost.model_bytes > self.model_mb * 2**20:
            out.append(f"model {cost.model_bytes / 2**20:.1f} MB > budget {self.model_mb:g} MB")
        if self.ram_mb and cost.peak_ram_bytes > self.ram_mb * 2**20:
            out.append(f"peak RAM {cost.peak_ram_bytes / 2**20:.0f} MB > budget {self.ram_mb:g} MB")
        return out


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Non-dominated flags for (accuracy ↑, cost ↓) points."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    flags = [False] * len(points)
    best_acc = float("-inf")
    for i in order:
        acc = points[i][0]
        if acc > best_acc:
            flags[i] = True
            best_acc = acc
    return flags


def select(accs: list[float], costs: list[float], feasible: list[bool], tolerance: float) -> int | None:
    """Cheapest feasible candidate whose accuracy is within ``tolerance`` of the best feasible one."""
    idx = [i for i, ok in enumerate(feasible) if ok]
    if not idx:
        return None
    best = max(accs[i] for i in idx)
    near = [i for i in idx if accs[i] >= best - tolerance]
    return min(near, key=lambda i: (costs[i], -accs[i]))
