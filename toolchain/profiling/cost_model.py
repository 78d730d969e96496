"""A per-target cost model fitted from measurements, falling back to the analytic estimate.

For each precision, three linear laws, each ``y = a + b·x`` with ``a, b ≥ 0``:

* latency_ms      : x = depth · layer_flops(backbone, seq_len) + head_flops
                    (fixed cost + per-layer cost × depth + head cost, at the candidate's
                    effective sequence length; threads are fixed by the target);
* model_bytes     : x = analytic model bytes (parameters × bytes per parameter at that precision);
* peak_ram_bytes  : x = analytic model bytes + activations (``a`` is the runtime's resident set).

Each law is fitted by non-negative least squares on relative error (rows weighted by 1/y), one
point per measured candidate (the median of its pooled samples). A precision needs
``min_points`` (3) measured candidates with two or more distinct ``x`` for a fit; otherwise its
prediction is the analytic estimate scaled by the median measured/analytic ratio of the
records that exist (same precision, else same backbone family fp32/int8, else any), and with no
record at all it *is* the analytic estimate (:func:`toolchain.search.cost.estimate_cost`).

Vocabulary: a pruned candidate's analytic size uses the kept embedding rows of its backbone
(``vocab_rows``: backbone name → rows kept for the run's training split), so the model-bytes and
RAM laws, fitted on analytic bytes, carry over to it; without a count it is costed at the full
table.

Only records of the target (by name) and its thread count are used; emulated records are left
out unless ``include_emulated=True`` (emulated wall time says nothing about the board).

Input lengths: a record keeps the real token count behind each sample. A candidate's records
become one point per input mix (runs on different datasets time different lengths), each with
its regressor evaluated at that mix's median length, so SST-2's short phrases and emotion's
longer sentences fit one law. :meth:`CostModel.predict` predicts at the run's median length
(``seq_len``) or at ``tokens`` when given, and a measurement only stands in for a prediction when
it was made on inputs of about that length (``SAME_MIX``); otherwise it is a point of the fit.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..config.target_spec import TargetSpec
from ..errors import SearchError
from ..features.backbone import BackboneInfo
from ..search.candidate import Candidate
from ..search.cost import Cost, estimate_cost
from .records import CostRecord
from .stats import median

QUANTITIES = ("latency_ms", "model_bytes", "peak_ram_bytes")
SAME_MIX = 0.15  # a measurement answers for inputs whose median length is within 15 % of its own
FAMILY = {"fp32": "fp32-backbone", "int8-head": "fp32-backbone",
          "int8-dynamic": "int8-backbone", "int8-static": "int8-backbone"}


def nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a few columns: the best feasible solution over all
    active sets (exact for the 2–3 columns used here; no scipy needed)."""
    a, y = np.asarray(a, dtype=float), np.asarray(y, dtype=float)
    p = a.shape[1]
    best, best_res = np.zeros(p), float(np.sum(y**2))
    for k in range(1, p + 1):
        for cols in itertools.combinations(range(p), k):
            sub = a[:, cols]
            coef, *_ = np.linalg.lstsq(sub, y, rcond=None)
            if np.any(coef < 0):
                continue
            res = float(np.sum((sub @ coef - y) ** 2))
            if res < best_res - 1e-12 * max(best_res, 1.0):
                best = np.zeros(p)
                best[list(cols)] = coef
                best_res = res
    return best


@dataclass(frozen=True)
class Law:
    """How one quantity is predicted for one precision.

    ``mode`` is ``fit`` (``intercept + slope·x``), ``ratio`` (``ratio × analytic``) or
    ``analytic``. ``n`` is the number of measured candidates behind it.
    """

    mode: str
    n: int = 0
    intercept: float = 0.0
    slope: float = 0.0
    ratio: float = 1.0
    emulated: bool = False

    def __call__(self, x: float, analytic: float) -> float:
        if self.mode == "fit":
            return self.intercept + self.slope * x
        return self.ratio * analytic


def mix_tokens(records: Sequence[CostRecord]) -> float | None:
    """Median real input length over a group of records (None if any record lacks it)."""
    if not records or any(not r.input_tokens for r in records):
        return None
    return median([t for r in records for t in r.input_tokens])


def _by_mix(records: Sequence[CostRecord]) -> dict[float | None, list[CostRecord]]:
    """A candidate's records grouped by the median length of their inputs (one group per mix)."""
    groups: dict[float | None, list[CostRecord]] = defaultdict(list)
    for r in records:
        groups[r.median_input_tokens].append(r)
    return dict(groups)


def same_mix(measured_tokens: float | None, tokens: float) -> bool:
    return measured_tokens is None or abs(measured_tokens - tokens) <= SAME_MIX * tokens


@dataclass
class _Point:
    candidate_id: str
    precision: str
    x: dict[str, float]  # regressor per quantity
    analytic: dict[str, float]  # analytic estimate per quantity
    y: dict[str, float]  # measured value per quantity (missing when not measured)
    emulated: bool


def _fit_law(points: Sequence[_Point], q: str, min_points: int) -> Law | None:
    pts = [p for p in points if q in p.y]
    if len(pts) < min_points or len({round(p.x[q], 6) for p in pts}) < 2:
        return None
    x = np.array([p.x[q] for p in pts])
    y = np.array([p.y[q] for p in pts])
    scale = float(np.max(np.abs(x))) or 1.0
    w = 1.0 / y  # relative error
    a = np.column_stack([w, w * x / scale])
    coef = nnls(a, np.ones_like(y))
    return Law("fit", n=len(pts), intercept=float(coef[0]), slope=float(coef[1] / scale),
               emulated=any(p.emulated for p in pts))


def _ratio_law(pools: Iterable[Sequence[_Point]], q: str) -> Law:
    for pool in pools:
        pts = [p for p in pool if q in p.y and p.analytic[q] > 0]
        if pts:
            return Law("ratio", n=len(pts), ratio=median([p.y[q] / p.analytic[q] for p in pts]),
                       emulated=any(p.emulated for p in pts))
    return Law("analytic")


@dataclass
class CostModel:
    """Use :meth:`fit`; then :meth:`predict` for any candidate of the fitted backbones."""

    target: TargetSpec
    infos: Mapping[str, BackboneInfo]
    seq_len: Mapping[tuple[str, int], float]
    laws: dict[str, dict[str, Law]] = field(default_factory=dict)  # precision -> quantity -> law
    fallback: dict[str, dict[str, Law]] = field(default_factory=dict)  # for precisions w/o points
    measured: dict[str, list[CostRecord]] = field(default_factory=dict)  # candidate id -> records
    n_records: int = 0
    skipped: int = 0  # records of the target that could not be placed (unknown backbone/length)
    include_emulated: bool = False
    min_points: int = 3
    vocab_rows: Mapping[str, int] = field(default_factory=dict)  # backbone -> kept rows (pruned vocab)

    @classmethod
    def fit(
        cls,
        records: Iterable[CostRecord],
        target_spec: TargetSpec,
        infos: Mapping[str, BackboneInfo],
        seq_len: Mapping[tuple[str, int], float],
        *,
        heads: Mapping[str, tuple[int, int]] | None = None,
        include_emulated: bool = False,
        min_points: int = 3,
        vocab_rows: Mapping[str, int] | None = None,
    ) -> CostModel:
        """Fit from ``records`` (any target; only ``target_spec``'s are used).

        ``infos`` maps backbone name → shape, ``seq_len`` maps (backbone, max_length) → the
        effective (mean) sequence length, ``heads`` optionally maps candidate id →
        (head_params, head_flops) for the measured candidates (without it their head cost is 0
        in the regressors; it is small beside the backbone's).
        """
        model = cls(target=target_spec, infos=dict(infos), seq_len=dict(seq_len),
                    include_emulated=include_emulated, min_points=min_points, vocab_rows=dict(vocab_rows or {}))
        heads = heads or {}
        by_cand: dict[str, list[CostRecord]] = defaultdict(list)
        for r in records:
            if r.target != target_spec.name or r.threads != target_spec.threads:
                continue
            if r.emulated and not include_emulated:
                continue
            by_cand[r.candidate_id].append(r)
        model.measured = dict(by_cand)
        model.n_records = sum(len(v) for v in by_cand.values())

        points: list[_Point] = []
        for cid, recs in by_cand.items():
            try:
                cand = Candidate.from_dict(recs[0].candidate)
            except (KeyError, TypeError, ValueError):
                model.skipped += len(recs)
                continue
            if cand.backbone not in infos or (cand.backbone, cand.max_length) not in seq_len:
                model.skipped += len(recs)
                continue
            hp, hf = heads.get(cid, (0, 0))
            for tokens, group in _by_mix(recs).items():
                point = model._point(cid, cand, group, hp, hf, tokens)
                if point is not None:
                    points.append(point)

        by_prec: dict[str, list[_Point]] = defaultdict(list)
        by_family: dict[str, list[_Point]] = defaultdict(list)
        for p in points:
            by_prec[p.precision].append(p)
            by_family[FAMILY.get(p.precision, p.precision)].append(p)
        for prec in FAMILY:
            pools = [by_prec.get(prec, []), by_family.get(FAMILY[prec], []), points]
            model.laws[prec] = {
                q: _fit_law(by_prec.get(prec, []), q, min_points) or _ratio_law(pools, q)
                for q in QUANTITIES
            }
        model.fallback = {"*": {q: _ratio_law([points], q) for q in QUANTITIES}}
        return model

    def _point(self, cid, cand, recs, head_params, head_flops, tokens) -> _Point | None:
        x, analytic = self._regressors(cand, head_params, head_flops, tokens)
        y: dict[str, float] = {}
        samples = [s for r in recs for s in r.latency_ms_samples]
        if samples:
            y["latency_ms"] = median(samples)
        for q, attr in (("model_bytes", "model_bytes"), ("peak_ram_bytes", "peak_rss_bytes")):
            vals = [getattr(r, attr) for r in recs if getattr(r, attr) > 0]
            if vals:
                y[q] = float(median(vals))
        y = {q: v for q, v in y.items() if v > 0}
        if not y:
            return None
        return _Point(cid, cand.precision, x, analytic, y, any(r.emulated for r in recs))

    # -- prediction --------------------------------------------------------------------------

    def _info(self, cand: Candidate, tokens: float | None = None) -> tuple[BackboneInfo, float]:
        info = self.infos.get(cand.backbone)
        if info is None:
            raise SearchError(f"cost model for target {self.target.name}: no shape for backbone "
                              f"{cand.backbone!r}; pass its BackboneInfo in 'infos' when fitting")
        seq = self.seq_len.get((cand.backbone, cand.max_length))
        if seq is None:
            raise SearchError(f"cost model for target {self.target.name}: no effective sequence "
                              f"length for {cand.backbone!r} at max length {cand.max_length}; pass it "
                              "in 'seq_len' when fitting")
        return info, (seq if tokens is None else float(tokens))

    def analytic(self, cand: Candidate, head_params: int, head_flops: int, tokens: float | None = None) -> Cost:
        info, seq = self._info(cand, tokens)
        return estimate_cost(cand, info, head_params, head_flops, self.target, seq,
                             self.vocab_rows.get(cand.backbone))

    def _regressors(self, cand: Candidate, head_params: int, head_flops: int, tokens: float | None = None):
        est = self.analytic(cand, head_params, head_flops, tokens)
        overhead = self.target.estimate.memory_overhead_mb * 2**20
        x = {"latency_ms": float(est.flops), "model_bytes": float(est.model_bytes),
             "peak_ram_bytes": float(est.peak_ram_bytes - overhead)}
        analytic = {"latency_ms": est.latency_ms, "model_bytes": float(est.model_bytes),
                    "peak_ram_bytes": float(est.peak_ram_bytes)}
        return x, analytic

    def law(self, precision: str, quantity: str) -> Law:
        return self.laws.get(precision, self.fallback.get("*", {})).get(quantity, Law("analytic"))

    def predict(self, candidate: Candidate, head_params: int, head_flops: int, *,
                use_measured: bool = True, tokens: float | None = None) -> Cost:
        """Predicted cost (``source="predicted"``) at the run's median input length, or at
        ``tokens``; for a candidate measured on inputs of about that length, its measurement
        (``source="measured"``, latency = median of its samples) unless ``use_measured=False``."""
        est = self.analytic(candidate, head_params, head_flops, tokens)
        x, analytic = self._regressors(candidate, head_params, head_flops, tokens)
        laws = {q: self.law(candidate.precision, q) for q in QUANTITIES}
        if all(law.mode == "analytic" for law in laws.values()):
            pred = est
        else:
            v = {q: max(laws[q](x[q], analytic[q]), 0.0) for q in QUANTITIES}
            lat_emulated = laws["latency_ms"].emulated if laws["latency_ms"].mode != "analytic" \
                else est.emulated
            pred = replace(est, latency_ms=v["latency_ms"], model_bytes=int(round(v["model_bytes"])),
                           peak_ram_bytes=int(round(v["peak_ram_bytes"])), source="predicted",
                           emulated=lat_emulated)
        recs = self.measured_for(candidate, tokens) if use_measured else []
        if not recs:
            return pred
        samples = [s for r in recs for s in r.latency_ms_samples]
        sizes = [r.model_bytes for r in recs if r.model_bytes > 0]
        rss = [r.peak_rss_bytes for r in recs if r.peak_rss_bytes > 0]
        return replace(
            pred,
            latency_ms=median(samples) if samples else pred.latency_ms,
            model_bytes=int(median(sizes)) if sizes else pred.model_bytes,
            peak_ram_bytes=int(median(rss)) if rss else pred.peak_ram_bytes,
            source="measured", emulated=any(r.emulated for r in recs),
        )

    def measured_for(self, candidate: Candidate, tokens: float | None = None) -> list[CostRecord]:
        """The candidate's records made on inputs of about the given (default: the run's)
        median length, or of unknown length."""
        recs = self.measured.get(candidate.id, [])
        if not recs:
            return []
        _, seq = self._info(candidate, tokens)
        return [r for r in recs if same_mix(r.median_input_tokens, seq)]

    def describe(self) -> dict:
        """JSON-safe summary of every law, for the report."""
        return {
            "target": self.target.name, "n_records": self.n_records, "skipped": self.skipped,
            "include_emulated": self.include_emulated,
            "laws": {p: {q: vars(law).copy() for q, law in laws.items()} for p, laws in self.laws.items()},
        }


# -- evaluation ------------------------------------------------------------------------------


def _sign(v: float) -> int:
    return (v > 0) - (v < 0)


def kendall_tau_b(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's τ-b (ties corrected); None when undefined (fewer than two points, or one
    side entirely tied)."""
    if len(xs) != len(ys):
        raise ValueError(f"kendall_tau_b: {len(xs)} x values but {len(ys)} y values")
    n = len(xs)
    concordant_minus_discordant = 0
    ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            sx, sy = _sign(xs[i] - xs[j]), _sign(ys[i] - ys[j])
            if sx == 0:
                ties_x += 1
            if sy == 0:
                ties_y += 1
            concordant_minus_discordant += sx * sy
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - ties_x) * (n0 - ties_y))
    if denom == 0:
        return None
    return concordant_minus_discordant / denom


def _measured_latency(records: Sequence[CostRecord]) -> float | None:
    samples = [s for r in records for s in r.latency_ms_samples]
    return median(samples) if samples else None


def recorded_pairs(records: Iterable[CostRecord]) -> dict[str, tuple[float, float]]:
    """candidate id → (latency the cost model predicted before measuring, measured median),
    from the records' ``predicted_latency_ms`` (the first prediction of each candidate)."""
    by_cand: dict[str, list[CostRecord]] = defaultdict(list)
    for r in records:
        by_cand[r.candidate_id].append(r)
    out = {}
    for cid, recs in by_cand.items():
        preds = [r.predicted_latency_ms for r in recs if r.predicted_latency_ms is not None]
        measured = _measured_latency(recs)
        if preds and measured:
            out[cid] = (preds[0], measured)
    return out


def leave_one_out_pairs(
    records: Iterable[CostRecord],
    target_spec: TargetSpec,
    infos: Mapping[str, BackboneInfo],
    seq_len: Mapping[tuple[str, int], float],
    *,
    heads: Mapping[str, tuple[int, int]] | None = None,
    include_emulated: bool = False,
    min_points: int = 3,
) -> dict[str, tuple[float, float]]:
    """candidate id (``id@tokens`` when it was measured on several length mixes) → (latency
    predicted by a model fitted without that candidate, at the measured inputs' median length;
    measured median): an honest estimate of the model's error on unmeasured candidates."""
    heads = heads or {}
    full = CostModel.fit(records, target_spec, infos, seq_len, heads=heads,
                         include_emulated=include_emulated, min_points=min_points)
    out = {}
    for cid, recs in full.measured.items():
        try:
            cand = Candidate.from_dict(recs[0].candidate)
        except (KeyError, TypeError, ValueError):
            continue
        if cand.backbone not in infos or (cand.backbone, cand.max_length) not in seq_len:
            continue
        others = [r for c, rs in full.measured.items() if c != cid for r in rs]
        model = CostModel.fit(others, target_spec, infos, seq_len, heads=heads,
                              include_emulated=include_emulated, min_points=min_points)
        hp, hf = heads.get(cid, (0, 0))
        for tokens, group in _by_mix(recs).items():
            measured = _measured_latency(group)
            if not measured:
                continue
            key = cid if tokens is None or len(_by_mix(recs)) == 1 else f"{cid}@{tokens:g}"
            out[key] = (model.predict(cand, hp, hf, use_measured=False, tokens=tokens).latency_ms, measured)
    return out


def prediction_report(pairs: Iterable[tuple[float, float]]) -> dict:
    """How well predictions match measurements: ``{"within_10pct", "within_15pct",
    "kendall_tau", "n", "median_abs_error_pct"}``; shares are in 0..1, None when n = 0."""
    pairs = [(float(p), float(m)) for p, m in pairs]
    for p, m in pairs:
        if not (math.isfinite(p) and math.isfinite(m)) or m <= 0:
            raise ValueError(f"prediction_report: pair (predicted={p}, measured={m}) needs finite "
                             "values and a positive measurement")
    n = len(pairs)
    if n == 0:
        return {"within_10pct": None, "within_15pct": None, "kendall_tau": None, "n": 0,
                "median_abs_error_pct": None}
    errors = [abs(p - m) / m for p, m in pairs]
    return {
        "within_10pct": sum(e <= 0.10 + 1e-12 for e in errors) / n,
        "within_15pct": sum(e <= 0.15 + 1e-12 for e in errors) / n,
        "kendall_tau": kendall_tau_b([p for p, _ in pairs], [m for _, m in pairs]),
        "n": n,
        "median_abs_error_pct": 100.0 * median(errors),
    }
