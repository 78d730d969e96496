"""Candidates, the search space, the analytic cost, the Pareto front and the selection rule."""

from __future__ import annotations

import hashlib
import json

import pytest

from toolchain.config.target_spec import load_target_spec
from toolchain.features.backbone import BackboneInfo
from toolchain.search.candidate import Candidate
from toolchain.search.cost import estimate_cost
from toolchain.search.select import Budgets, pareto_front, select
from toolchain.search.space import SearchSpace

MINILM = BackboneInfo(n_layers=6, hidden=384, intermediate=1536, heads=12, vocab=30522, max_positions=512)


def cand(**kw) -> Candidate:
    base = dict(backbone="m", layers=(2, 4), combine="concat", pooling="mean", head="softmax", head_size=3)
    return Candidate(**{**base, **kw})


# --- Candidate -----------------------------------------------------------------------------------


def test_candidate_id_is_stable_and_canonical():
    a = cand()
    assert a.id == cand().id == cand(layers=(4, 2, 4)).id  # layer order and repeats do not matter
    assert len(a.id) == 12 and int(a.id, 16) >= 0
    # The id is a short hash of the canonical JSON, so it is the same in every process and
    # version (saved heads are named by it), not Python's salted hash().
    canonical = json.dumps(a.to_dict(), sort_keys=True, separators=(",", ":"))
    assert a.id == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert json.loads(canonical)["layers"] == [2, 4]
    assert a.layers == (2, 4) and a.depth == 4
    assert Candidate.from_dict(a.to_dict()) == a and Candidate.from_dict(a.to_dict()).id == a.id


@pytest.mark.parametrize(
    "change",
    [dict(backbone="other"), dict(layers=(2, 5)), dict(combine="mean"), dict(pooling="cls"),
     dict(head="elm"), dict(head_size=4), dict(precision="int8-dynamic"), dict(max_length=128)],
)
def test_every_field_changes_the_id(change):
    assert cand(**change).id != cand().id


def test_depth_is_the_deepest_layer():
    assert cand(layers=(0, 1, 5)).depth == 5
    assert cand(layers=(3,), combine="single").depth == 3
    assert Candidate.from_dict({**cand().to_dict(), "depth": 99}).depth == 4  # derived, never trusted


def test_candidate_is_immutable():
    with pytest.raises(AttributeError):
        cand().head = "mlp"


@pytest.mark.parametrize(
    ("change", "message"),
    [(dict(layers=()), "at least one layer"), (dict(combine="single"), "exactly one layer"),
     (dict(layers=(3,)), "two or more"), (dict(combine="max"), "unknown combination"),
     (dict(precision="fp16"), "unknown precision")],
)
def test_invalid_candidates_raise(change, message):
    with pytest.raises(ValueError, match=message):
        cand(**change)


# --- SearchSpace ---------------------------------------------------------------------------------


def test_space_enumerates_every_single_layer_and_samples_combinations_with_a_seed():
    space = SearchSpace(backbones={"a": 2, "b": 3}, poolings=("cls", "mean"),
                        heads=(("softmax", 3), ("elm", 64)))
    singles = space.singles()
    assert len(singles) == (3 + 4) * 2 * 2
    assert {(c.backbone, c.layers[0]) for c in singles} == {("a", i) for i in range(3)} | {("b", i) for i in range(4)}
    combos = space.combinations()
    assert all(c.combine != "single" and len(c.layers) >= 2 for c in combos)
    assert all(c.depth <= (2 if c.backbone == "a" else 3) for c in combos)
    sampled = space.candidates(max_combinations=10, seed=0)
    assert len(sampled) == len(singles) + 10
    assert sampled == space.candidates(max_combinations=10, seed=0)
    assert sampled != space.candidates(max_combinations=10, seed=1)
    assert len(space.candidates()) == len(singles) + len(combos)
    assert len({c.id for c in space.candidates()}) == len(space.candidates())  # no duplicates


def test_layer_sets_include_prefixes_beyond_the_set_size():
    sets = SearchSpace(backbones={"m": 6}, max_set_size=2).layer_sets(6)
    assert (0, 6) in sets and (1, 2, 3) in sets and (1, 2, 3, 4, 5, 6) in sets
    assert all(len(s) >= 2 for s in sets)


# --- cost ----------------------------------------------------------------------------------------


def test_cost_grows_with_depth_length_and_head_and_int8_is_cheaper():
    host = load_target_spec("host")
    shallow = estimate_cost(cand(layers=(1, 2)), MINILM, 1000, 2000, host, seq_len=16)
    deep = estimate_cost(cand(layers=(1, 6)), MINILM, 1000, 2000, host, seq_len=16)
    assert deep.latency_ms > shallow.latency_ms and deep.model_bytes > shallow.model_bytes
    assert deep.flops > shallow.flops
    longer = estimate_cost(cand(layers=(1, 6)), MINILM, 1000, 2000, host, seq_len=64)
    assert longer.latency_ms > deep.latency_ms and longer.model_bytes == deep.model_bytes
    big_head = estimate_cost(cand(layers=(1, 6)), MINILM, 10**6, 2 * 10**6, host, seq_len=16)
    assert big_head.model_bytes > deep.model_bytes
    int8 = estimate_cost(cand(layers=(1, 6), precision="int8-dynamic"), MINILM, 1000, 2000, host, seq_len=16)
    assert int8.latency_ms < deep.latency_ms and int8.model_bytes < deep.model_bytes
    assert deep.source == "predicted" and deep.emulated is False
    # MiniLM-L6 in fp32 is ~90 MB; the estimate should be in that range for the full depth.
    assert 80e6 < deep.model_bytes < 100e6


# --- Pareto and selection ------------------------------------------------------------------------


def test_pareto_front_flags_non_dominated_points():
    #          (acc, cost)
    points = [(0.80, 1.0), (0.85, 2.0), (0.84, 3.0), (0.90, 5.0), (0.70, 0.5), (0.90, 6.0), (0.80, 1.0)]
    assert pareto_front(points) == [True, True, False, True, True, False, False]


def test_select_takes_the_cheapest_within_tolerance():
    accs = [0.90, 0.897, 0.80, 0.91]
    costs = [3.0, 1.0, 0.5, 9.0]
    feasible = [True, True, True, True]
    assert select(accs, costs, feasible, tolerance=0.0) == 3
    assert select(accs, costs, feasible, tolerance=0.005) == 3  # 0.897 < 0.91 - 0.005
    assert select(accs, costs, feasible, tolerance=0.015) == 1  # 0.897 ≥ 0.895: cheaper
    assert select(accs, costs, feasible, tolerance=0.2) == 2


def test_select_respects_feasibility_and_returns_none_when_nothing_fits():
    accs, costs = [0.90, 0.80, 0.95], [3.0, 1.0, 9.0]
    assert select(accs, costs, [True, True, False], tolerance=0.0) == 0
    assert select(accs, costs, [False, False, False], tolerance=0.1) is None


def test_budgets_tighten_the_target_and_report_violations():
    host = load_target_spec("host")
    b = Budgets.for_target(host, max_latency_ms=2.0, max_model_mb=10.0)
    assert (b.latency_ms, b.model_mb) == (2.0, 10.0)
    deep = estimate_cost(cand(layers=(1, 6)), MINILM, 1000, 2000, host, seq_len=64)
    reasons = b.violations(deep)
    assert any("latency" in r for r in reasons) and any("model" in r and "10 MB" in r for r in reasons)
    assert Budgets().violations(deep) == []
