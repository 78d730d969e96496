"""The method against its baselines and against fine-tuning, on sst2, emotion and trec
(issue 7; `make bench-accuracy`).

    .venv/bin/python benchmarks/accuracy_bench.py                         # all three datasets
    .venv/bin/python benchmarks/accuracy_bench.py --datasets trec --max-train-finetune 2000
    .venv/bin/python benchmarks/accuracy_bench.py --report-only           # redraw plots and table

Per dataset (full splits, default backbone, max length 64) it reports: majority class; last
layer [CLS] and mean into softmax regression; the best single layer and the best combination
(by validation accuracy); the selected candidate without a budget; the candidate selected under a
latency budget on the host (by `co_design`, measured) and on the rpi4 board (predicted: the
host's fitted cost model × the board file's latency scale, marked emulated); fine-tuning at full
depth and truncated at the selected depth, on every training row unless --max-train-finetune
(trec and emotion: at least 3 epochs, early stopping on validation; sst2: one full epoch; see
FINETUNE_PLAN); and gap_closed = (selected − last-layer [CLS]) / (fine-tuned − last-layer [CLS])
on test accuracy (benchmarks/gap.py), beside the training-cost and latency ratios. Selection uses
validation only; test is read only to report.

Fine-tuning runs made on their own (`codesign baseline finetune ... --json F`) can be merged into a
dataset's results with --finetune-result DATASET:full=F (or :truncated=F), then --report-only.

Each dataset's result is merged into benchmarks/results/<date>-<hostname>.json (so datasets can
be run one at a time), then the plots and docs/results.md are redrawn from that file alone.
Feature caches and runs live under $CODESIGN_HOME (default here: ~/.cache/codesign-bench), so
a feature extraction happens once per dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("CODESIGN_HOME", str(Path.home() / ".cache" / "codesign-bench"))

from extraction_bench import cpu_seconds, load_average, machine_info  # noqa: E402
from gap import gap_summary  # noqa: E402
from results_markdown import rows_for, write_markdown  # noqa: E402

DATASETS = ("trec", "emotion", "sst2")
MAX_LENGTH = 64
# Fine-tuning per dataset: at most `epochs`, no early stop before `min_epochs`, then stop after
# `patience` epochs without a better validation accuracy (the best epoch's weights are restored).
# SST-2 (60k rows, ~25 min per epoch on 2 idle cores) gets one full epoch on this CPU.
FINETUNE_PLAN = {"trec": {"epochs": 3, "min_epochs": 3, "patience": 1},
                 "emotion": {"epochs": 3, "min_epochs": 3, "patience": 1},
                 "sst2": {"epochs": 1, "min_epochs": 1, "patience": 1}}
log = logging.getLogger("accuracy_bench")


def default_result_path() -> Path:
    return HERE / "results" / f"{datetime.now().strftime('%Y-%m-%d')}-{socket.gethostname()}.json"


def _median(xs) -> float | None:
    # The one percentile definition (toolchain.profiling.stats), as `profile` and `results` use.
    from toolchain.profiling.stats import median

    return median(list(xs)) if len(xs) else None


def _spread(xs) -> list[float] | None:
    from toolchain.profiling.stats import percentile

    return [percentile(list(xs), 10), percentile(list(xs), 90)] if len(xs) else None


# ---------------------------------------------------------------------------------------------
# Stages


def search_stage(name: str, max_candidates: int, heads, reuse: bool):
    """`codesign run` on the full dataset (no budget); returns (run_dir, board, extraction)."""
    from toolchain.flows.run import RunConfig, extract, search
    from toolchain.paths import codesign_home
    from toolchain.report.write import read_leaderboard, write_run

    run_dir = codesign_home() / "runs" / f"bench-{name}-c{max_candidates}"
    cfg = RunConfig(dataset=name, max_lengths=(MAX_LENGTH,), max_combinations=max_candidates,
                    heads=heads, run_dir=str(run_dir))
    ex = extract(cfg)
    if reuse and (run_dir / "leaderboard.json").is_file():
        board = read_leaderboard(run_dir)
        if board.get("bench_search_cpu_seconds") is not None:
            return run_dir, board, ex
    cpu0 = cpu_seconds()
    board = search(cfg, ex, run_dir)
    board["bench_search_cpu_seconds"] = cpu_seconds() - cpu0
    write_run(run_dir, board)
    return run_dir, board, ex


def extraction_cost(name: str, n_examples: int, sample: int = 384) -> dict:
    """Seconds to extract every layer's features, per example, timed on a cold sample of train
    (an empty cache) and scaled to ``n_examples``; the full extraction ran earlier from a cache."""
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import resolve_dataset
    from toolchain.features.backbone import resolve_model
    from toolchain.features.layers import layer_features

    spec = resolve_dataset(name)
    full = load_dataset(spec)
    per_class = max(1, math.ceil(sample / full.n_classes))
    ds = load_dataset(spec, per_class, 4)
    n = len(ds.train) + len(ds.validation) + (len(ds.test) if ds.test is not None else 0)
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        layer_features(ds, resolve_model(None), MAX_LENGTH, ("cls", "mean"), cache_root=Path(tmp))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"sample_examples": n, "sample_wall_s": wall, "sample_cpu_s": cpu,
            "per_example_wall_s": wall / n, "per_example_cpu_s": cpu / n, "n_examples": n_examples,
            "wall_s": wall / n * n_examples, "cpu_s": cpu / n * n_examples,
            "source": f"timed cold on {n} examples of the dataset, scaled to train+validation"}


def refit(board, ex, entries, run_dir: Path) -> dict:
    """Refit (seeded, so identical to the search) the given candidates, save their heads so they
    can be exported, and return {id: {test_acc, test_macro_f1, val_acc, fit_seconds}}."""
    from toolchain.search.candidate import Candidate
    from toolchain.search.fit import FeatureBank, fit_candidate

    ds = ex.dataset
    y = {"train": ds.train.labels, "validation": ds.validation.labels, "test": ds.test.labels}
    out = {}
    banks = {}
    for e in entries:
        cand = Candidate.from_dict(e)
        key = (cand.backbone, cand.max_length)
        if key not in banks:
            banks[key] = FeatureBank(ex.features[key], y, ds.n_classes)
        fc = fit_candidate(cand, banks[key], board["config"]["seed"])
        acc, f1 = fc.evaluate(banks[key], "test")
        path = run_dir / "heads" / f"{cand.id}.safetensors"
        if not path.is_file():
            fc.save(path)
        out[cand.id] = {"val_acc": fc.val_acc, "test_acc": acc, "test_macro_f1": f1,
                        "fit_seconds": fc.fit_seconds}
    return out


def measure_picks(run_dir: Path, board, store, ids: list[str], base_id: str, iterations: int = 60,
                  passes: int = 3) -> dict[str, list[float]]:
    """Measure the table's candidates (fp32) and the full-depth int8 model together, interleaved
    in ``passes`` passes, in a new profile session: the table compares latencies of one run, not
    of records made at different times (this machine drifts by ~25 % between runs)."""
    import uuid

    from toolchain.boards.registry import open_target
    from toolchain.flows.run import run_dataset
    from toolchain.profiling.runner import ProfilePlan, profile

    pairs = [(i, "fp32") for i in ids] + [(base_id, "int8-dynamic")]
    plan = ProfilePlan(run_dir, sorted(set(ids) | {base_id}), ("fp32", "int8-dynamic"), warmup=5,
                       iterations=iterations, pairs=pairs, passes=passes)
    records = profile(open_target("host"), plan, store, run_dataset(board).validation.texts,
                      f"accuracy-bench-{uuid.uuid4().hex[:12]}")
    samples: dict[str, list[float]] = {}
    for r in records:
        samples.setdefault(r.candidate_id, []).extend(r.latency_ms_samples)
    return samples


def host_cost_model(board, store):
    """The host's cost model fitted from every record so far, for all candidates of the run."""
    from toolchain.boards.registry import open_target
    from toolchain.features.backbone import backbone_info, resolve_model
    from toolchain.flows.loop import _fit, board_seq_len
    from toolchain.search.candidate import Candidate

    infos = {n: backbone_info(resolve_model(m["path"])) for n, m in board["models"].items()}
    seq_len = board_seq_len(board)
    variants = [{"cand": Candidate.from_dict(c), "head_params": c.get("head_params", 0)}
                for c in board["candidates"]]
    return _fit(store, open_target("host"), infos, seq_len, variants), infos, seq_len


def rpi4_stage(run_dir: Path, board, store, infos, seq_len, precisions, tolerance) -> dict:
    """Selection for the rpi4 board from predicted costs (no board here): budget = half the
    predicted latency of the full-depth int8 model."""
    from toolchain.config.target_spec import load_target_spec
    from toolchain.flows.loop import rank
    from toolchain.search.select import Budgets

    spec = load_target_spec("rpi4")
    target = SimpleNamespace(spec=spec, emulate=True)
    args = (board, run_dir, precisions, store, target, infos, seq_len)
    variants, model, costs, _, _, _ = rank(*args, Budgets.for_target(spec), tolerance)
    full = next(i for i, v in enumerate(variants)
                if v["base_id"] == board["baseline"]["id"] and v["cand"].precision == "int8-dynamic")
    budget = costs[full].latency_ms / 2
    variants, model, costs, feasible, _, idx = rank(*args, Budgets.for_target(spec, budget), tolerance)
    if idx is None:
        return {"budget_ms": budget, "selected": None}
    v = variants[idx]
    return {"budget_ms": budget, "full_depth_int8_predicted_ms": costs[full].latency_ms,
            "selected": v["cand"].id, "selected_base": v["base_id"], "precision": v["cand"].precision,
            "depth": v["cand"].depth, "val_acc": v["val_acc"], "acc_source": v["acc_source"],
            "latency_ms": costs[idx].latency_ms, "latency_source": costs[idx].source,
            "emulated": True, "cost_model": model.describe(), "n_feasible": int(sum(feasible))}


def finetune_stage(name: str, max_train: int | None, epochs: int | None,
                   depths: dict[str, int | None]) -> dict:
    from toolchain.baselines import FinetuneConfig, finetune
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import resolve_dataset
    from toolchain.features.backbone import resolve_model

    ds = load_dataset(resolve_dataset(name))
    plan = dict(FINETUNE_PLAN.get(name, {"epochs": 3, "min_epochs": 3, "patience": 1}))
    if epochs is not None:
        plan.update(epochs=epochs, min_epochs=min(plan["min_epochs"], epochs))
    out = {}
    for key, depth in depths.items():
        res = finetune(ds, resolve_model(None),
                       FinetuneConfig(depth=depth, max_train=max_train, max_length=MAX_LENGTH, **plan))
        d = res.to_dict()
        d.pop("loss_curve", None)
        if res.train_size < len(ds.train):
            d["train_seconds_full_train_extrapolated"] = res.train_seconds * len(ds.train) / res.train_size
        out[key] = d
    return out


# ---------------------------------------------------------------------------------------------
# One dataset


def bench_dataset(name: str, args) -> dict:
    from toolchain.baselines import last_layer_baseline, majority_baseline
    from toolchain.boards.registry import open_target
    from toolchain.features.backbone import resolve_model
    from toolchain.flows.loop import co_design
    from toolchain.store.db import RecordStore

    t_start = time.perf_counter()
    heads = tuple((h, int(s)) for h, s in (x.split(":") for x in args.heads))
    run_dir, board, ex = search_stage(name, args.max_candidates, heads, not args.fresh)
    ds = ex.dataset
    n_layers = board["baseline"]["depth"]
    log.info("%s: search done (%d candidates, %.0f s)", name, board["n_candidates"], board["search_seconds"])
    measured_cold = dict(x.split("=") for x in args.extraction_seconds)
    if name in measured_cold:
        wall, _, cpu = measured_cold[name].partition(":")
        wall, cpu = float(wall), float(cpu) if cpu else None
        n_all = len(ds.train) + len(ds.validation) + len(ds.test)
        n_fit = len(ds.train) + len(ds.validation)
        extraction = {"wall_s": wall * n_fit / n_all, "cpu_s": cpu * n_fit / n_all if cpu else None,
                      "cold_wall_all_splits_s": wall, "cold_cpu_all_splits_s": cpu,
                      "n_examples": n_fit, "source": "cold `codesign extract` of all splits on this machine "
                      "(measured with `time`), scaled to train+validation"}
    else:
        extraction = extraction_cost(name, len(ds.train) + len(ds.validation))

    maj = majority_baseline(ds).to_dict()
    last = last_layer_baseline(ds, resolve_model(None), MAX_LENGTH).to_dict()
    # Screen-only candidates (successive halving) were fitted on a sample: rank full fits only.
    cands = [c for c in board["candidates"] if c.get("fidelity", "full") == "full"]
    singles = [c for c in cands if c["combine"] == "single"]
    combos = [c for c in cands if c["combine"] != "single"]
    best_single = max(singles, key=lambda c: c["val_acc"])
    best_combo = max(combos, key=lambda c: c["val_acc"]) if combos else None
    last_mean = next(c for c in singles if c["layers"] == [n_layers] and c["pooling"] == "mean"
                     and c["head"] == "softmax")
    base = next(c for c in cands if c["id"] == board["baseline"]["id"])
    selected = next(c for c in cands if c["id"] == board["selected"])
    picks = {"last_cls": base, "last_mean": last_mean, "best_single": best_single, "selected": selected}
    if best_combo:
        picks["best_combination"] = best_combo
    fits = refit(board, ex, list(picks.values()), run_dir)

    host_log: dict = {}
    with RecordStore() as store:
        t0 = time.perf_counter()
        measured = measure_picks(run_dir, board, store, sorted({c["id"] for c in picks.values()}), base["id"])
        int8_id = replace(_cand(base), precision="int8-dynamic").id
        int8_samples = measured[int8_id]
        budget = args.host_budget_ms or _median(int8_samples) / 2
        loop = co_design(run_dir, open_target("host"), store, rounds=args.rounds, top_k=args.top_k,
                         precisions=("fp32", "int8-dynamic"), max_latency_ms=budget,
                         tolerance=board["config"]["tolerance"], warmup=5, iterations=40)
        for _ in range(2):  # the last round's choice may be unmeasured: measure it, re-select
            chosen = next((v for v in loop["variants"] if v["id"] == loop["selected"]), None)
            if chosen is None or chosen["cost"]["source"] == "measured":
                break
            loop = co_design(run_dir, open_target("host"), store, rounds=1, top_k=args.top_k,
                             precisions=("fp32", "int8-dynamic"), max_latency_ms=budget,
                             tolerance=board["config"]["tolerance"], warmup=5, iterations=40)
        host_log["measure_seconds"] = time.perf_counter() - t0
        model, infos, seq_len = host_cost_model(board, store)
        rpi4 = rpi4_stage(run_dir, board, store, infos, seq_len, ("fp32", "int8-dynamic"),
                          board["config"]["tolerance"])
        costs = {}
        for c in cands:
            cost = model.predict(_cand(c), c.get("head_params", 0), 2 * c.get("head_params", 0))
            costs[c["id"]] = {"latency_ms": cost.latency_ms, "source": cost.source}
        for cid in {c["id"] for c in picks.values()} | {int8_id}:
            s = measured.get(cid)
            if s:
                costs[cid] = {"latency_ms": _median(s), "source": "measured", "spread_ms_p10_p90": _spread(s),
                              "n_samples": len(s), "interleaved_with_the_table": True}
        full_int8 = {"id": int8_id, "latency_ms": _median(int8_samples), "spread_ms_p10_p90": _spread(int8_samples)}

    sel_var = next(v for v in loop["variants"] if v["id"] == loop["selected"]) if loop["selected"] else None
    host_sel = None
    if sel_var is not None:
        m = sel_var.get("measured") or {}
        host_sel = {"id": sel_var["id"], "base_id": sel_var["base_id"], "precision": sel_var["precision"],
                    "depth": sel_var["depth"], "layers": sel_var["layers"], "combine": sel_var["combine"],
                    "pooling": sel_var["pooling"], "head": sel_var["head"], "val_acc": sel_var["val_acc"],
                    "acc_source": sel_var["acc_source"],
                    "latency_ms": m.get("latency_ms_median", sel_var["cost"]["latency_ms"]),
                    "latency_source": sel_var["cost"]["source"], "spread_ms_p10_p90": m.get("spread_ms_p10_p90"),
                    "meets_budget_by_measurement": (m.get("latency_ms_median") is not None
                                                    and m["latency_ms_median"] <= budget),
                    "test_acc_artefact": loop.get("selected_test_acc"),
                    "test_source": loop.get("selected_test_source")}
        more = refit(board, ex, [next(c for c in cands if c["id"] == sel_var["base_id"])], run_dir)
        host_sel.update({k: more[sel_var["base_id"]][k] for k in ("test_acc", "test_macro_f1")})
        host_sel["test_acc_head"] = host_sel["test_acc"]
        if host_sel["test_acc_artefact"] is not None:
            host_sel["test_acc"] = host_sel["test_acc_artefact"]

    ft = {}
    if not args.skip_finetune:
        # At the selected depth; when the selection keeps every layer, at the host-budget
        # selection's depth (a backbone of at least one layer: depth 0 is the embeddings alone).
        trunc = selected["depth"] if selected["depth"] < n_layers else (host_sel or {}).get("depth", n_layers)
        depths = {"full": None}
        if 1 <= trunc < n_layers:
            depths["truncated"] = trunc
        depths = {k: v for k, v in depths.items() if k in args.finetune_depths.split(",")}
        if args.finetune_from and Path(args.finetune_from).is_file():
            # Fine-tuning runs measured earlier by this script's finetune_stage (same settings).
            done = json.loads(Path(args.finetune_from).read_text())
            rows = min(args.max_train_finetune or len(ds.train), len(ds.train))
            ft = {k: v for k, v in done.items() if k in depths and v["depth"] == (depths[k] or n_layers)
                  and v.get("finetune_rows", v["train_size"]) == rows}
            depths = {k: v for k, v in depths.items() if k not in ft}
        ft.update(finetune_stage(name, args.max_train_finetune, args.epochs, depths) if depths else {})

    return {
        "dataset": name, "label_names": board["label_names"], "split_sizes": board["split_sizes"],
        "validation_carved": board["validation_carved"], "n_layers": n_layers, "run_dir": str(run_dir),
        "n_candidates": board["n_candidates"], "search_seconds": board["search_seconds"],
        "search_cpu_seconds": board.get("bench_search_cpu_seconds"), "extraction": extraction,
        "majority": maj, "last_layer": last, "picks": {k: {**_slim(v), **fits[v["id"]]} for k, v in picks.items()},
        "costs_host": costs, "full_depth_int8": full_int8, "host_budget_ms": budget,
        "host_budget_rule": "given" if args.host_budget_ms else "half the full-depth int8 model's measured latency",
        "host_selected": host_sel, "host_loop": {k: loop[k] for k in ("rounds", "budgets", "best_val_acc",
                                                                      "prediction_before_measuring",
                                                                      "prediction_after_loop")},
        "rpi4": rpi4, "finetune": ft, "finetune_max_train": None if args.skip_finetune else args.max_train_finetune,
        "finetune_epochs": args.epochs, "finetune_plan": FINETUNE_PLAN.get(name),
        "per_layer": board["per_layer"],
        "candidates": [{**_slim(c), "val_acc": c["val_acc"], "test_acc": c.get("test_acc"),
                        "pareto": c["pareto"], "latency_ms": costs[c["id"]]["latency_ms"],
                        "latency_source": costs[c["id"]]["source"]} for c in cands],
        "bench_seconds": time.perf_counter() - t_start, **host_log,
    }


def _cand(entry):
    from toolchain.search.candidate import Candidate

    return Candidate.from_dict(entry)


def _slim(c: dict) -> dict:
    return {k: c[k] for k in ("id", "depth", "layers", "combine", "pooling", "head", "head_size", "precision")
            if k in c}


# ---------------------------------------------------------------------------------------------
# Rows, table, plots


def merge(path: Path, new: dict) -> dict:
    old = json.loads(path.read_text()) if path.is_file() else {"datasets": {}}
    old.setdefault("datasets", {}).update(new.get("datasets", {}))
    for k, v in new.items():
        if k != "datasets":
            old[k] = v
    return old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--max-train-finetune", type=int, default=None,
                    help="subsample train for fine-tuning (default: every row)")
    ap.add_argument("--epochs", type=int, default=None, help="override FINETUNE_PLAN's epochs")
    ap.add_argument("--finetune-result", nargs="*", default=[], metavar="DATASET:KEY=FILE",
                    help="merge a `codesign baseline finetune --json` result (KEY full or truncated) "
                         "into DATASET's results before reporting")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--extraction-seconds", nargs="*", default=[], metavar="DATASET=WALL[:CPU]",
                    help="measured cold extraction of all splits, seconds (else timed on a sample)")
    ap.add_argument("--finetune-depths", default="full,truncated",
                    help="which fine-tuning runs: full, truncated (at the selected depth), or both")
    ap.add_argument("--finetune-from", default=None,
                    help="JSON of finetune_stage results measured earlier ({full: ..., truncated: ...})")
    ap.add_argument("--max-candidates", type=int, default=60, help="layer combinations sampled per dataset")
    ap.add_argument("--heads", nargs="+", default=["softmax:3", "elm:1024", "mlp:256"])
    ap.add_argument("--host-budget-ms", type=float, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--fresh", action="store_true", help="redo the search even if this run exists")
    ap.add_argument("--report-only", action="store_true", help="redraw plots and the table from the JSON")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=ROOT / "docs" / "results.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = args.out or default_result_path()
    if not args.report_only:
        new = {"datasets": {}}
        for name in [x.strip() for x in args.datasets.split(",") if x.strip()]:
            load_before = load_average()
            d = bench_dataset(name, args)
            d["load_average_before"], d["load_average_after"] = load_before, load_average()
            d["command"] = "python benchmarks/accuracy_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
            new["datasets"][name] = d
            result = merge(out, new)
            result.update({"benchmark": "accuracy", "created_at": datetime.now(timezone.utc).isoformat(
                timespec="seconds"), "machine": machine_info(), "codesign_home": os.environ["CODESIGN_HOME"],
                "command": "make bench-accuracy (python benchmarks/accuracy_bench.py; per dataset: see each "
                           "dataset's command)", "path": str(out)})
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1, default=str))
            report(result, out, args.markdown)
            print(f"{name}: done in {d['bench_seconds']:.0f} s; wrote {out}")
    else:
        result = json.loads(out.read_text())
        merge_finetune_results(result, args.finetune_result)
        report(result, out, args.markdown)
    return 0


def merge_finetune_results(result: dict, specs: list[str]) -> None:
    """Put fine-tuning runs measured on their own into the results, with where they came from."""
    for spec in specs:
        where, _, path = spec.partition("=")
        name, _, key = where.partition(":")
        if key not in ("full", "truncated") or name not in result["datasets"]:
            raise SystemExit(f"--finetune-result {spec}: expected DATASET:full=FILE or DATASET:truncated=FILE "
                             f"with DATASET one of {sorted(result['datasets'])}")
        run = json.loads(Path(path).read_text())
        run.pop("loss_curve", None)
        run["source"] = f"codesign baseline finetune --json {Path(path).name}, merged by --finetune-result"
        run["measured_on"] = datetime.fromtimestamp(Path(path).stat().st_mtime, timezone.utc).isoformat(
            timespec="seconds")
        result["datasets"][name].setdefault("finetune", {})[key] = run


def head_families(run_dir: Path) -> dict | None:
    """Per head family: how many candidates, how many fitted in full, the best validation accuracy
    of each kind (so the report can say which families never win)."""
    from toolchain.report.write import read_leaderboard

    if not (run_dir / "leaderboard.json").is_file():
        return None
    board = read_leaderboard(run_dir)
    out: dict = {}
    for c in board["candidates"]:
        f = out.setdefault(c["head"], {"n": 0, "n_full": 0, "best_val_full": None, "best_val_screen": None})
        f["n"] += 1
        if c.get("fidelity", "full") == "full":
            f["n_full"] += 1
            f["best_val_full"] = max(f["best_val_full"] or 0.0, c["val_acc"])
        else:  # a screening score: fitted on the 4,000-row sample only
            f["best_val_screen"] = max(f["best_val_screen"] or 0.0, c["val_acc"])
    return {"families": out, "screening": board.get("screening")}


def report(result: dict, out: Path, markdown: Path) -> None:
    from plots import draw_all

    for d in result["datasets"].values():
        d["rows"] = rows_for(d)
        d["gap"] = gap_summary(d, d["rows"])
        found = head_families(Path(d["run_dir"])) if d.get("run_dir") else None
        if found is not None:
            d["head_families"] = found
    result["plots"] = draw_all(result, out.parent, out.stem)
    out.write_text(json.dumps(result, indent=1, default=str))
    write_markdown(result, markdown)
    from readme_table import update_readme

    update_readme(ROOT / "README.md", result)


if __name__ == "__main__":
    raise SystemExit(main())
