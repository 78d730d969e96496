"""The co-design loop on the host, measured (issue 3's must-show figures):

* the cost model after the loop: share of measured candidates predicted within ±15 % (and ±10 %),
  in-sample (the final model, as the loop reports it) and leave-one-out (a model fitted without
  the candidate), Kendall τ, and each candidate's sample spread;
* on trec, a budget of half the full-depth int8 model's measured latency: the selected candidate
  must meet it by measurement; its validation accuracy against the unconstrained best;
* without a budget, the selection's validation accuracy against the best.

Measurements are interleaved (the candidates round-robin in --passes passes) and go to a fresh
database, so that records from other days and loads do not mix in:

    .venv/bin/python benchmarks/loop_bench.py                      # trec, fresh run in a temp home
    .venv/bin/python benchmarks/loop_bench.py --home /tmp/bench-home --max-candidates 60

Writes benchmarks/results/<date>-<hostname>-loop.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from extraction_bench import load_average, machine_info, result_path  # noqa: E402


def model_error(store, board) -> dict:
    """In-sample and leave-one-out prediction error over every measured host candidate."""
    from toolchain.config.target_spec import load_target_spec
    from toolchain.features.backbone import backbone_info, resolve_model
    from toolchain.flows.loop import board_seq_len
    from toolchain.profiling.cost_model import (
        CostModel,
        leave_one_out_pairs,
        mix_tokens,
        prediction_report,
    )
    from toolchain.profiling.stats import median
    from toolchain.search.candidate import Candidate

    spec = load_target_spec("host")
    infos = {n: backbone_info(resolve_model(m["path"])) for n, m in board["models"].items()}
    base_heads = {c["id"]: (c.get("head_params", 0), 2 * c.get("head_params", 0)) for c in board["candidates"]}
    records = store.records(target="host")
    # A precision variant has its fp32 base candidate's head.
    heads = {r.candidate_id: base_heads.get(replace(Candidate.from_dict(r.candidate), precision="fp32").id, (0, 0))
             for r in records}
    seq = board_seq_len(board)
    model = CostModel.fit(records, spec, infos, seq, heads=heads)
    loo = leave_one_out_pairs(records, spec, infos, seq, heads=heads)
    per = []
    for cid, recs in model.measured.items():
        samples = sorted(s for r in recs for s in r.latency_ms_samples)
        cand = Candidate.from_dict(recs[0].candidate)
        at = mix_tokens(recs)
        pred = model.predict(cand, *heads[cid], use_measured=False, tokens=at).latency_ms
        per.append({"id": cid, "precision": cand.precision, "depth": cand.depth, "n_records": len(recs),
                    "n_samples": len(samples), "median_input_tokens": at,
                    "measured_ms": median(samples), "p10_ms": samples[int(0.1 * (len(samples) - 1))],
                    "p90_ms": samples[int(0.9 * (len(samples) - 1))], "predicted_ms": pred,
                    "loo_predicted_ms": loo.get(cid, (None,))[0]})
    return {
        "in_sample": prediction_report([(p["predicted_ms"], p["measured_ms"]) for p in per]),
        "leave_one_out": prediction_report(list(loo.values())),
        "candidates": sorted(per, key=lambda p: (p["precision"], p["depth"], p["measured_ms"])),
        "laws": model.describe()["laws"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="trec")
    ap.add_argument("--home", default=None, help="CODESIGN_HOME with the feature cache (default: temp)")
    ap.add_argument("--max-candidates", type=int, default=60)
    ap.add_argument("--from-run", type=Path, default=None,
                    help="copy this run (its heads and exported artefacts) instead of searching again")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--no-spread", action="store_true",
                    help="measure only what the loop picks (by default the best candidate at every "
                         "depth is measured first, in both precisions, so the model is checked from "
                         "depth 0 to L)")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tmp = tempfile.TemporaryDirectory(prefix="codesign-loop-bench-")
    os.environ["CODESIGN_HOME"] = str(Path(args.home).expanduser()) if args.home else tmp.name
    os.environ.setdefault("CODESIGN_NO_PROGRESS", "1")

    from toolchain.boards.registry import open_target
    from toolchain.flows.loop import co_design
    from toolchain.flows.run import RunConfig, run
    from toolchain.profiling.runner import profile_candidates
    from toolchain.search.candidate import Candidate
    from toolchain.store.db import RecordStore

    load_before, started = load_average(), time.perf_counter()
    run_dir = Path(tmp.name) / "run"
    if args.from_run:
        import shutil

        from toolchain.report.write import read_leaderboard

        shutil.copytree(args.from_run, run_dir)
        board = read_leaderboard(run_dir)
    else:
        _, board = run(RunConfig(dataset=args.dataset, max_combinations=args.max_candidates, run_dir=str(run_dir)))
    host = open_target("host")
    common = dict(rounds=args.rounds, top_k=args.top_k, precisions=("fp32", "int8-dynamic"),
                  tolerance=board["config"]["tolerance"], warmup=10, iterations=args.iterations,
                  passes=args.passes)
    with RecordStore(Path(tmp.name) / "loop-bench.db") as store:
        # The full-depth model (the last-layer [CLS] baseline) in both precisions, and unless
        # --no-spread the best saved candidate at every depth, all interleaved.
        base_id = board["baseline"]["id"]
        spread = {}
        for c in board["candidates"]:
            if (run_dir / "heads" / f"{c['id']}.safetensors").is_file() and (
                    c["depth"] not in spread or c["val_acc"] > spread[c["depth"]]["val_acc"]):
                spread[c["depth"]] = c
        first = [base_id] + ([] if args.no_spread else sorted({c["id"] for c in spread.values()} - {base_id}))
        profile_candidates(run_dir, host, store, first, ("fp32", "int8-dynamic"), warmup=10,
                           iterations=args.iterations, passes=args.passes)
        int8_id = replace(Candidate.from_dict(next(c for c in board["candidates"] if c["id"] == base_id)),
                          precision="int8-dynamic").id
        int8_ms = sorted(s for r in store.records(target="host", candidate_id=int8_id)
                         for s in r.latency_ms_samples)
        int8_median = int8_ms[len(int8_ms) // 2]
        free = co_design(run_dir, host, store, **common)
        budget = int8_median / 2
        bound = co_design(run_dir, host, store, max_latency_ms=budget, **common)
        from toolchain.report.write import read_leaderboard

        error = model_error(store, read_leaderboard(run_dir))

    def chosen(summary):
        v = next(v for v in summary["variants"] if v["id"] == summary["selected"])
        return {"id": v["id"], "precision": v["precision"], "depth": v["depth"], "layers": v["layers"],
                "combine": v["combine"], "pooling": v["pooling"], "head": v["head"],
                "val_acc": v["val_acc"], "test_acc": v.get("test_acc"), "latency_ms": v["cost"]["latency_ms"],
                "source": v["cost"]["source"], "measured": v.get("measured")}

    sel_free, sel_bound = chosen(free), chosen(bound)
    result = {
        "benchmark": "loop",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average_before": load_before, "load_average_after": load_average(),
        "dataset": board["dataset"], "n_candidates": board["n_candidates"],
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "full_depth_int8": {"id": int8_id, "median_ms": int8_median, "n_samples": len(int8_ms)},
        "no_budget": {"selected": sel_free, "best_val_acc": free["best_val_acc"],
                      "within_1_point_of_best": free["best_val_acc"] - sel_free["val_acc"] <= 0.01 + 1e-12},
        "budget": {"max_latency_ms": budget, "selected": sel_bound, "best_val_acc": bound["best_val_acc"],
                   "accuracy_cost_points": 100 * (bound["best_val_acc"] - sel_bound["val_acc"]),
                   "met_by_measurement": sel_bound["source"] == "measured" and sel_bound["latency_ms"] <= budget},
        "loop_reports": {"no_budget": free["prediction_after_loop"], "budget": bound["prediction_after_loop"],
                         "before_measuring": bound["prediction_before_measuring"]},
        "cost_model": error,
        "wall_seconds": time.perf_counter() - started,
    }
    out = Path(args.out) if args.out else result_path("loop")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    tmp.cleanup()

    e = error
    print(f"{args.dataset}: {len(e['candidates'])} measured candidates; within ±15 %: in-sample "
          f"{e['in_sample']['within_15pct']:.0%}, leave-one-out {e['leave_one_out']['within_15pct']:.0%} "
          f"(±10 %: {e['in_sample']['within_10pct']:.0%} / {e['leave_one_out']['within_10pct']:.0%}); "
          f"Kendall τ {e['in_sample']['kendall_tau']:.2f}")
    print(f"full-depth int8 {int8_median:.2f} ms → budget {budget:.2f} ms: selected {sel_bound['id']} "
          f"({sel_bound['precision']}, depth {sel_bound['depth']}) {sel_bound['latency_ms']:.2f} ms "
          f"({sel_bound['source']}), val {sel_bound['val_acc']:.3f} vs best {bound['best_val_acc']:.3f}")
    print(f"no budget: selected val {sel_free['val_acc']:.3f} vs best {free['best_val_acc']:.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
