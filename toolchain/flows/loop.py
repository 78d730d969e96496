"""The software-hardware co-design loop: predict → select the front → measure it → refit the
cost model → re-select, until the selection stops changing or the round limit is reached."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from ..boards.base import Target
from ..export import guard
from ..features.backbone import backbone_info, resolve_model
from ..profiling.cost_model import CostModel, mix_tokens, prediction_report
from ..profiling.records import CostRecord
from ..profiling.stats import pooled_stats
from ..search.candidate import Candidate
from ..search.select import Budgets, pareto_front, select

log = logging.getLogger(__name__)


def _variants(board: dict, run_dir: Path, precisions) -> list[dict]:
    """Every (saved head × precision); accuracy from the artefact once it exists."""
    out = []
    for c in board["candidates"]:
        if not (run_dir / "heads" / f"{c['id']}.safetensors").is_file():
            continue
        base = Candidate.from_dict(c)
        for p in precisions:
            cand = replace(base, precision=p)
            art = run_dir / "artefacts" / cand.id / "artefact.json"
            acc, source, infeasible = c["val_acc"], "head (PyTorch)", ""
            if art.is_file():
                meta = json.loads(art.read_text())
                acc, source = meta["val_acc"], "artefact"
                # An int8 variant whose guard failed after every recipe and the head refit is
                # never selected, whatever its cost (export/guard.py).
                infeasible = guard.reason(meta) if guard.is_infeasible(meta) else ""
            out.append({"cand": cand, "base_id": c["id"], "val_acc": acc, "acc_source": source,
                        "head_params": c.get("head_params", 0), "test_acc": c.get("test_acc"),
                        "quant_infeasible": infeasible})
    return out


def pooled_records(store, spec) -> list[CostRecord]:
    """The settled records this board's cost model learns from: its own (by name), and those of
    every other board of the same kind and spec (``TargetSpec.board_hash``: a second identical
    Pi at another address learns from the first's measurements).

    A peer's record is relabelled with this target's name, which is how the cost model knows a
    record as its target's own; ``host["measured_on"]`` keeps the board that made it."""
    # Records made before records carried a board hash get it now where their spec is this one.
    store.tag_board(spec.hash, spec.board_hash)
    # settled: an interrupted session's records (fewer samples than asked) are not measurements.
    own = store.records(target=spec.name, settled=True)
    peers = [replace(r, target=spec.name, host={**r.host, "measured_on": r.target})
             for r in store.records(board_hash=spec.board_hash, settled=True) if r.target != spec.name]
    return own + peers


def _fit(store, target: Target, infos, seq_len, variants):
    heads = {v["cand"].id: (v["head_params"], 2 * v["head_params"]) for v in variants}
    model = CostModel.fit(pooled_records(store, target.spec), target.spec, infos, seq_len,
                          heads=heads, include_emulated=False)
    if model.n_records or target.spec.emulation.method != "qemu-user":
        return model
    # No real measurement of this board: emulated wall time says nothing about it (50-230x
    # slower here), so predict from the host's fitted model times the target file's calibration.
    from ..config.target_spec import load_target_spec

    host = load_target_spec("host")
    host_model = CostModel.fit(store.records(target="host", settled=True), host, infos, seq_len, heads=heads)
    return CalibratedModel(model, host_model, target.spec.emulation.latency_scale)


class CalibratedModel:
    """Host cost model × a per-target latency scale; sizes from the target's own model."""

    def __init__(self, own: CostModel, host: CostModel, scale: float) -> None:
        self.own, self.host, self.scale = own, host, scale
        self.n_records, self.measured = own.n_records, own.measured

    def predict(self, cand, head_params, head_flops, *, use_measured=True):
        own = self.own.predict(cand, head_params, head_flops, use_measured=use_measured)
        if own.source == "measured":  # a real board's measurement beats any calibration
            return own
        lat = self.host.predict(cand, head_params, head_flops, use_measured=False).latency_ms
        return replace(own, latency_ms=lat * self.scale, source="predicted")

    def describe(self) -> dict:
        return {"calibrated_from": "host", "latency_scale": self.scale, "host": self.host.describe(),
                "own": self.own.describe()}


def board_seq_len(board: dict) -> dict[tuple[str, int], float]:
    """(backbone, max length) → the run's median validation length (mean for older runs)."""
    out = {}
    for key, value in board.get("median_val_tokens", board["mean_val_tokens"]).items():
        name, _, ml = key.rpartition("@")
        out[(name, int(ml))] = value
    return out


def rank(board, run_dir, precisions, store, target, infos, seq_len, budgets, tolerance):
    """Every variant with its current cost (measured, fitted or calibrated), the feasible ones,
    the Pareto front over (accuracy, latency) and the selected index."""
    variants = _variants(board, run_dir, precisions)
    model = _fit(store, target, infos, seq_len, variants)
    costs = [model.predict(v["cand"], v["head_params"], 2 * v["head_params"]) for v in variants]
    accs = [v["val_acc"] for v in variants]
    lat = [c.latency_ms for c in costs]
    feasible = [not budgets.violations(c) and not v["quant_infeasible"] for c, v in zip(costs, variants, strict=True)]
    front = pareto_front(list(zip(accs, lat, strict=True)))
    return variants, model, costs, feasible, front, select(accs, lat, feasible, tolerance)


def co_design(run_dir: Path, target: Target, store, *, rounds: int = 3, top_k: int = 4,
              precisions=("fp32", "int8-dynamic"), max_latency_ms: float | None = None,
              max_model_mb: float | None = None, tolerance: float = 0.005, warmup: int = 10,
              iterations: int = 60, passes: int | None = None) -> dict:
    from ..profiling.runner import (
        ProfilePlan,
        profile,
        resume_unfinished,
        session_id_for,
        validate_request,
    )
    from ..rundir import RunDir
    from . import run as pipeline
    from .save import save_loop

    board = validate_request(run_dir, precisions=precisions, top_k=top_k, rounds=rounds, passes=passes,
                             iterations=iterations, warmup=warmup)
    if passes is None:
        # The host is a shared machine whose load drifts: interleave. A board is dedicated, and
        # each extra agent start over SSH or serial costs seconds.
        passes = target.default_passes
    infos = {name: backbone_info(resolve_model(m["path"])) for name, m in board["models"].items()}
    seq_len = board_seq_len(board)
    budgets = Budgets.for_target(target.spec, max_latency_ms, max_model_mb)
    run = RunDir(Path(run_dir), board)
    dataset = run.dataset()
    history, predicted_before = [], {}
    chosen_id = None
    ranking = (board, run_dir, precisions, store, target, infos, seq_len, budgets, tolerance)
    # An interrupted call of the same request first finishes the passes it left undone.
    ids = {v["cand"].id: (v["base_id"], v["cand"].precision) for v in _variants(board, run_dir, precisions)}
    resumed = resume_unfinished(target, run_dir, store, dataset.validation.texts, ids, warmup=warmup,
                                iterations=iterations, passes=passes)
    if resumed:
        for r in resumed:
            if r.predicted_latency_ms is not None:
                predicted_before.setdefault(r.candidate_id, r.predicted_latency_ms)
        history.append({"round": "resumed", "to_measure": sorted({r.candidate_id for r in resumed})})
    for round_no in range(1, rounds + 1):
        variants, model, costs, feasible, front, idx = rank(*ranking)
        accs = [v["val_acc"] for v in variants]
        new_choice = variants[idx]["cand"].id if idx is not None else None
        wanted = sorted((i for i, f in enumerate(front) if f), key=lambda i: -accs[i])[:top_k]
        if idx is not None and idx not in wanted:
            wanted.append(idx)
        # Emulated records never enter the cost model, but they did check the candidate on
        # this target: measuring them again each round would learn nothing. (A real record on
        # another input-length mix is a fit point, not this run's measurement: measure again.)
        done = store.measured_candidates(target.spec.name, threads=target.spec.threads, emulated=True,
                                         settled=True)
        todo = [i for i in wanted if costs[i].source != "measured" and variants[i]["cand"].id not in done]
        history.append({"round": round_no, "selected": new_choice, "n_records": model.n_records,
                        "to_measure": [variants[i]["cand"].id for i in todo]})
        log.info("round %d: selected %s, measuring %d new", round_no, new_choice, len(todo))
        if not todo and new_choice == chosen_id:
            break
        chosen_id = new_choice
        if not todo:
            continue
        for i in todo:
            predicted_before.setdefault(variants[i]["cand"].id, costs[i].latency_ms)
        # One plan per round, every precision in it, so that its passes interleave them all.
        pairs = sorted({(variants[i]["base_id"], variants[i]["cand"].precision) for i in todo})
        plan = ProfilePlan(run_dir, sorted({b for b, _ in pairs}), tuple(sorted({p for _, p in pairs})),
                           warmup=warmup, iterations=iterations, predicted=dict(predicted_before),
                           pairs=pairs, passes=passes)
        profile(target, plan, store, dataset.validation.texts, session_id_for(run_dir, target, plan))
    # Final state: measured where measured, the refitted model elsewhere. A selection must meet
    # its budget by measurement, not by prediction: measure it, refit, re-select (bounded).
    variants, model, costs, feasible, front, idx = rank(*ranking)
    for extra in range(top_k):
        if idx is None or costs[idx].source == "measured" or target.emulate:
            break
        cand = variants[idx]["cand"]
        if cand.id in store.measured_candidates(target.spec.name, threads=target.spec.threads, emulated=True,
                                                settled=True):
            break  # checked on this target already (emulated): nothing more to learn
        predicted_before.setdefault(cand.id, costs[idx].latency_ms)
        plan = ProfilePlan(run_dir, [variants[idx]["base_id"]], (cand.precision,), warmup=warmup,
                           iterations=iterations, predicted=dict(predicted_before), passes=passes)
        profile(target, plan, store, dataset.validation.texts, session_id_for(run_dir, target, plan))
        history.append({"round": f"confirm-{extra + 1}", "to_measure": [cand.id]})
        variants, model, costs, feasible, front, idx = rank(*ranking)
    accs = [v["val_acc"] for v in variants]
    rows = []
    for i, v in enumerate(variants):
        c = costs[i]
        row = {"id": v["cand"].id, "base_id": v["base_id"], **v["cand"].to_dict(), "val_acc": v["val_acc"],
               "acc_source": v["acc_source"], "cost": c.to_dict(), "pareto": front[i],
               "feasible": feasible[i],
               "infeasible_reasons": budgets.violations(c) + ([v["quant_infeasible"]] if v["quant_infeasible"] else [])}
        if c.source == "measured":
            recs = model.measured_for(v["cand"])
            # The model given the measured inputs' lengths (the run's median when unknown).
            at = mix_tokens(recs)
            refit = model.predict(v["cand"], v["head_params"], 2 * v["head_params"], use_measured=False,
                                  tokens=at)
            row["measured"] = {**measured_summary(recs), "median_input_tokens": at}
            row["predicted_before_ms"] = predicted_before.get(v["cand"].id)
            row["predicted_after_ms"] = refit.latency_ms
        rows.append(row)
    measured = [r for r in rows if "measured" in r]
    before = [(r["predicted_before_ms"], r["measured"]["latency_ms_median"]) for r in measured
              if r.get("predicted_before_ms")]
    after = [(r["predicted_after_ms"], r["measured"]["latency_ms_median"]) for r in measured]
    best_acc = max(accs)
    summary = {
        "target": target.spec.name, "target_hash": target.spec.hash, "emulated": target.emulate,
        "rounds": history, "budgets": {k: v for k, v in vars(budgets).items()}, "variants": rows,
        "selected": variants[idx]["cand"].id if idx is not None else None,
        "selected_base": variants[idx]["base_id"] if idx is not None else None,
        "best_val_acc": best_acc,
        "prediction_before_measuring": prediction_report(before) if before else None,
        "prediction_after_loop": prediction_report(after) if after else None,
        "cost_model": model.describe(),
    }
    pipeline.attach_test_accuracy(board, run_dir, summary)
    # This target's own selection; every other target's stays as it was, including one that
    # another board's worker saved while this loop ran (save_loop re-reads under the run's lock).
    save_loop(run_dir, target.spec, summary)
    return summary


def measured_summary(records) -> dict:
    """Median, p10/p90 and counts of a candidate's pooled samples, by the one definition of
    :mod:`toolchain.profiling.stats` (``codesign results`` reports the same numbers)."""
    st = pooled_stats(records)
    if st is None:
        return {"latency_ms_median": None, "n_samples": 0, "n_records": len(records), "spread_ms_p10_p90": None}
    return {"latency_ms_median": st.median_ms, "n_samples": st.n, "n_records": len(records),
            "spread_ms_p10_p90": [st.p10_ms, st.p90_ms]}


def predict_selection(run_dir: Path, target, store, *, precisions=("fp32", "int8-dynamic"),
                      max_latency_ms: float | None = None, max_model_mb: float | None = None,
                      tolerance: float = 0.005) -> dict | None:
    """The selection this target would get without measuring anything: its own budgets, its
    own records' cost model (or the host's times its calibration). None when nothing fits."""
    from ..rundir import RunDir

    run = RunDir.open(run_dir)
    board = run.board
    infos = {name: backbone_info(resolve_model(m["path"])) for name, m in board["models"].items()}
    budgets = Budgets.for_target(target.spec, max_latency_ms, max_model_mb)
    variants, model, costs, feasible, front, idx = rank(
        board, run.path, precisions, store, target, infos, board_seq_len(board), budgets, tolerance)
    if idx is None:
        return None
    v, c = variants[idx], costs[idx]
    return {"candidate_id": v["cand"].id, "base_id": v["base_id"], "precision": v["cand"].precision,
            "source": "measured" if c.source == "measured" else "predicted",
            "emulated": c.emulated, "latency_ms": c.latency_ms,
            "model_bytes": c.model_bytes, "val_acc": v["val_acc"],
            "cost_model": model.describe(), "budgets": dict(vars(budgets))}
