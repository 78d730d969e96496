"""The measured cost model: recovers a known law, falls back to the analytic estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from store_helpers import candidate, make_record

from toolchain.config.target_spec import TargetSpec
from toolchain.errors import SearchError
from toolchain.features.backbone import BackboneInfo
from toolchain.profiling.cost_model import (
    CostModel,
    kendall_tau_b,
    leave_one_out_pairs,
    nnls,
    prediction_report,
)
from toolchain.search.cost import estimate_cost, layer_flops

INFO = BackboneInfo(n_layers=6, hidden=64, intermediate=256, heads=4, vocab=1000, max_positions=128)
INFOS = {"tiny": INFO}
SEQ = {("tiny", 32): 20.0, ("tiny", 64): 37.5}
TARGET = TargetSpec(name="host", kind="local", arch="x86_64", threads=1)
HEAD = (1000, 2000)  # head params, head flops

# The "true" laws of this synthetic board.
LAT = {"fp32": (0.7, 3e-6), "int8-dynamic": (0.4, 1.5e-6)}
SIZE = (5000.0, 1.1)
RAM = (40e6, 1.3)


def truth(cand) -> dict:
    est = estimate_cost(cand, INFO, *HEAD, TARGET, SEQ[(cand.backbone, cand.max_length)])
    flops = cand.depth * layer_flops(INFO, SEQ[(cand.backbone, cand.max_length)]) + HEAD[1]
    a, b = LAT[cand.precision]
    x_ram = est.peak_ram_bytes - TARGET.estimate.memory_overhead_mb * 2**20
    return {"latency_ms": a + b * flops, "model_bytes": SIZE[0] + SIZE[1] * est.model_bytes,
            "peak_ram_bytes": RAM[0] + RAM[1] * x_ram}


def measure(cand, noise: float = 0.0, rng=None, **kw):
    t = truth(cand)
    n = 31
    if noise:
        samples = t["latency_ms"] * rng.lognormal(0.0, noise, size=n)
    else:
        samples = [t["latency_ms"]] * n
    return make_record(cand, samples=list(samples), model_bytes=int(round(t["model_bytes"])),
                       peak_rss_bytes=int(round(t["peak_ram_bytes"])), **kw)


def grid(precision="fp32"):
    return [candidate(depth=d, precision=precision, max_length=m) for d in range(1, 7) for m in (32, 64)]


def test_nnls_keeps_coefficients_non_negative():
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    assert nnls(a, np.array([3.0, 2.0, 1.0])) == pytest.approx([2.0, 0.0])  # slope would be < 0
    assert nnls(a, np.array([2.0, 3.0, 4.0])) == pytest.approx([1.0, 1.0])


def test_fit_recovers_a_known_linear_law():
    records = [measure(c) for p in LAT for c in grid(p)]
    heads = {r.candidate_id: HEAD for r in records}
    model = CostModel.fit(records, TARGET, INFOS, SEQ, heads=heads)
    assert model.n_records == len(records) and model.skipped == 0
    for prec, (a, b) in LAT.items():
        law = model.law(prec, "latency_ms")
        assert law.mode == "fit"
        assert law.intercept == pytest.approx(a, rel=1e-6)
        assert law.slope == pytest.approx(b, rel=1e-6)
    # An unmeasured candidate (another head size) is predicted from the law.
    new = candidate(depth=4, max_length=64, head_size=128)
    cost = model.predict(new, *HEAD)
    assert cost.source == "predicted" and not cost.emulated
    want = truth(new)
    assert cost.latency_ms == pytest.approx(want["latency_ms"], rel=1e-6)
    assert cost.model_bytes == pytest.approx(want["model_bytes"], rel=1e-4)
    assert cost.peak_ram_bytes == pytest.approx(want["peak_ram_bytes"], rel=1e-4)
    assert model.describe()["laws"]["fp32"]["latency_ms"]["mode"] == "fit"


def test_fit_on_noisy_samples_predicts_within_5_percent():
    rng = np.random.default_rng(1)
    records = [measure(c, noise=0.1, rng=rng) for c in grid()]
    model = CostModel.fit(records, TARGET, INFOS, SEQ, heads={r.candidate_id: HEAD for r in records})
    pairs = [(model.predict(c, *HEAD, use_measured=False).latency_ms, truth(c)["latency_ms"])
             for c in grid()]
    report = prediction_report(pairs)
    assert report["within_10pct"] == 1.0 and report["median_abs_error_pct"] < 5
    assert report["kendall_tau"] > 0.9


def test_before_any_record_the_prediction_is_the_analytic_estimate():
    model = CostModel.fit([], TARGET, INFOS, SEQ)
    assert model.n_records == 0
    for cand in grid() + grid("int8-dynamic"):
        want = estimate_cost(cand, INFO, *HEAD, TARGET, SEQ[(cand.backbone, cand.max_length)])
        assert model.predict(cand, *HEAD) == want


def test_too_few_records_scale_the_analytic_estimate():
    cands = grid()
    records = []
    for c in cands[:2]:  # two records: too few for a fit
        est = estimate_cost(c, INFO, *HEAD, TARGET, SEQ[(c.backbone, c.max_length)])
        records.append(make_record(c, samples=[2 * est.latency_ms] * 5))
    model = CostModel.fit(records, TARGET, INFOS, SEQ, heads={r.candidate_id: HEAD for r in records})
    assert model.law("fp32", "latency_ms").mode == "ratio"
    assert model.law("int8-static", "latency_ms").mode == "ratio"  # from any record there is
    for c in (cands[5], candidate(depth=3, precision="int8-static")):
        est = estimate_cost(c, INFO, *HEAD, TARGET, SEQ[(c.backbone, c.max_length)])
        got = model.predict(c, *HEAD)
        assert got.latency_ms == pytest.approx(2 * est.latency_ms)
        assert got.model_bytes == est.model_bytes  # no sizes measured: analytic
        assert got.source == "predicted"


def test_measured_candidate_uses_its_measurement():
    c = candidate(depth=2)
    recs = [make_record(c, samples=[1.0, 5.0, 2.0], model_bytes=123, peak_rss_bytes=456),
            make_record(c, samples=[3.0, 4.0])]
    model = CostModel.fit(recs, TARGET, INFOS, SEQ)
    got = model.predict(c, *HEAD)
    assert got.source == "measured"
    assert (got.latency_ms, got.model_bytes, got.peak_ram_bytes) == (3.0, 123, 456)
    assert model.predict(c, *HEAD, use_measured=False).source == "predicted"


def test_emulated_records_are_excluded_unless_asked():
    records = [measure(c, emulated=True) for c in grid()]
    model = CostModel.fit(records, TARGET, INFOS, SEQ)
    assert model.n_records == 0
    c = grid()[3]
    analytic = estimate_cost(c, INFO, *HEAD, TARGET, SEQ[(c.backbone, c.max_length)])
    assert model.predict(c, *HEAD) == analytic

    mixed = CostModel.fit(records, TARGET, INFOS, SEQ, include_emulated=True,
                          heads={r.candidate_id: HEAD for r in records})
    assert mixed.n_records == len(records)
    assert mixed.law("fp32", "latency_ms").mode == "fit"
    new = candidate(depth=3, head_size=7)
    got = mixed.predict(new, *HEAD)
    assert got.emulated and got.latency_ms == pytest.approx(truth(new)["latency_ms"], rel=1e-6)


def test_other_targets_and_thread_counts_are_ignored():
    records = [measure(c, target="pi") for c in grid()] + [measure(c, threads=4) for c in grid()]
    model = CostModel.fit(records, TARGET, INFOS, SEQ)
    assert model.n_records == 0


def test_unknown_backbone_is_skipped_when_fitting_and_named_when_predicting():
    other = candidate(depth=2, backbone="huge")
    model = CostModel.fit([make_record(other)], TARGET, INFOS, SEQ)
    assert model.skipped == 1
    with pytest.raises(SearchError, match="huge"):
        model.predict(other, *HEAD)
    with pytest.raises(SearchError, match="max length 128"):
        model.predict(candidate(depth=2, max_length=128), *HEAD)


def test_kendall_tau_b_known_orderings():
    assert kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # One tie in y: 5 concordant pairs of 6, tau-b = 5 / sqrt(6 * 5).
    assert kendall_tau_b([1, 2, 3, 4], [1, 2, 2, 3]) == pytest.approx(5 / math.sqrt(30))
    # Ties on both sides: x=[1,1,2,3], y=[1,2,2,3]: C=4, D=0, tx=1, ty=1 -> 4/5.
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None
    assert kendall_tau_b([1], [1]) is None
    rng = np.random.default_rng(3)
    xs, ys = rng.integers(0, 5, 40).tolist(), rng.integers(0, 5, 40).tolist()
    assert -1.0 <= kendall_tau_b(xs, ys) <= 1.0
    with pytest.raises(ValueError):
        kendall_tau_b([1, 2], [1])


def test_prediction_report_shares():
    r = prediction_report([(1.0, 1.0), (1.12, 1.0), (0.8, 1.0), (2.0, 1.9)])
    assert r["n"] == 4
    assert r["within_10pct"] == pytest.approx(0.5)
    assert r["within_15pct"] == pytest.approx(0.75)
    assert r["kendall_tau"] is not None
    assert prediction_report([])["n"] == 0
    with pytest.raises(ValueError, match="positive"):
        prediction_report([(1.0, 0.0)])


def test_leave_one_out_and_recorded_pairs():
    from toolchain.profiling.cost_model import leave_one_out_pairs, recorded_pairs

    records = [measure(c, predicted_latency_ms=1.0) for c in grid()]
    heads = {r.candidate_id: HEAD for r in records}
    loo = leave_one_out_pairs(records, TARGET, INFOS, SEQ, heads=heads)
    assert set(loo) == {c.id for c in grid()}
    for pred, meas in loo.values():  # an exact law is predicted exactly without the point
        assert pred == pytest.approx(meas, rel=1e-6)
    assert prediction_report(loo.values())["within_10pct"] == 1.0
    rec = recorded_pairs(records)
    assert all(p == 1.0 for p, _ in rec.values()) and len(rec) == len(grid())


def measure_at(cand, tokens: int, **kw):
    """A noiseless record of the true law when the inputs have ``tokens`` real tokens."""
    flops = cand.depth * layer_flops(INFO, tokens) + HEAD[1]
    a, b = LAT[cand.precision]
    return make_record(cand, samples=[a + b * flops] * 5, input_tokens=(tokens,) * 5, **kw)


def test_records_on_other_length_mixes_are_fit_points_not_measurements():
    """Runs on different datasets time different lengths: each mix is a point at its own length,
    and only a measurement on about the run's median length stands in for a prediction."""
    seq = {("tiny", 64): 30.0}
    cands = [candidate(depth=d, max_length=64) for d in range(1, 7)]
    short = [measure_at(c, 12) for c in cands[:3]]   # e.g. SST-2 phrases
    long_ = [measure_at(c, 45) for c in cands[3:]]   # e.g. longer sentences
    model = CostModel.fit(short + long_, TARGET, INFOS, seq, heads={c.id: HEAD for c in cands})
    law = model.law("fp32", "latency_ms")
    assert law.mode == "fit" and law.slope == pytest.approx(LAT["fp32"][1], rel=1e-6)
    for c in cands:  # measured, but at 12 or 45 tokens: at the run's 30 the law answers
        got = model.predict(c, *HEAD)
        assert got.source == "predicted"
        want = LAT["fp32"][0] + LAT["fp32"][1] * (c.depth * layer_flops(INFO, 30) + HEAD[1])
        assert got.latency_ms == pytest.approx(want, rel=1e-6)
    at_12 = model.predict(cands[0], *HEAD, tokens=12)
    assert at_12.source == "measured" and at_12.latency_ms == pytest.approx(short[0].latency_ms_samples[0])
    # Within SAME_MIX of the run's median, the measurement is used.
    near = measure_at(cands[1], 32)
    model = CostModel.fit(short + long_ + [near], TARGET, INFOS, seq, heads={c.id: HEAD for c in cands})
    assert model.predict(cands[1], *HEAD).source == "measured"
    assert len(model.measured_for(cands[1])) == 1


def test_leave_one_out_is_exact_for_a_noiseless_law_across_mixes():
    seq = {("tiny", 64): 30.0}
    cands = [candidate(depth=d, max_length=64) for d in range(1, 7)]
    records = [measure_at(c, 12 if c.depth % 2 else 45) for c in cands]
    pairs = leave_one_out_pairs(records, TARGET, INFOS, seq, heads={c.id: HEAD for c in cands})
    assert len(pairs) == len(cands)
    for predicted, measured in pairs.values():
        assert predicted == pytest.approx(measured, rel=1e-6)
