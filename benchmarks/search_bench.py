"""Wall time of the whole head search over cached features vs the feature extraction itself.

The method only pays off when the search (≥ 200 candidates, all three heads, all layer
combinations) costs less than running the backbone once over the data. This measures both on
the same machine, in one process, with the default model on full SST-2:

    .venv/bin/python benchmarks/search_bench.py                     # fresh cache: extracts, then searches
    .venv/bin/python benchmarks/search_bench.py --home ~/.local/share/codesign --extract-seconds 612
    .venv/bin/python benchmarks/search_bench.py --max-per-class 500  # a quick check, not the claim

Writes benchmarks/results/<date>-<hostname>-search.json (machine, both times, per-head and
per-combination fit times, the selection vs the baseline).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from extraction_bench import cpu_seconds, load_average, machine_info, result_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--max-combinations", type=int, default=200,
                    help="sampled layer combinations (every single layer is searched as well)")
    ap.add_argument("--max-per-class", type=int, default=None, help="slice train (quick checks only)")
    ap.add_argument("--home", default=None,
                    help="CODESIGN_HOME holding the feature cache (default: a fresh temp dir, so "
                         "extraction is measured)")
    ap.add_argument("--extract-seconds", type=float, default=None,
                    help="extraction time measured earlier, when --home already holds the features")
    ap.add_argument("--jobs", type=int, default=None, help="processes fitting heads (default: every core)")
    ap.add_argument("--keep-run", action="store_true",
                    help="keep the run as $CODESIGN_HOME/runs/bench-<dataset>-c<N>, which "
                         "accuracy_bench.py --max-candidates N then reuses instead of searching again")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/...)")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tmp = None
    if args.home:
        os.environ["CODESIGN_HOME"] = str(Path(args.home).expanduser())
    else:
        tmp = tempfile.TemporaryDirectory(prefix="codesign-search-bench-")
        os.environ["CODESIGN_HOME"] = tmp.name
    os.environ.setdefault("CODESIGN_NO_PROGRESS", "1")

    from toolchain.flows.run import RunConfig, extract, search
    from toolchain.paths import codesign_home
    from toolchain.report.write import write_run

    config = RunConfig(models=(args.model,), dataset=args.dataset, max_lengths=(args.max_length,),
                       max_combinations=args.max_combinations, max_per_class=args.max_per_class,
                       jobs=args.jobs)
    load_before = load_average()
    started, cpu0 = time.perf_counter(), cpu_seconds()
    ex = extract(config)
    extract_wall, extract_cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    (features,) = ex.features.values()
    if features.extracted_chunks:
        extract_seconds = extract_wall
        extract_source = "measured in this run" + (
            "" if features.extracted_chunks == sum(1 for _ in Path(features.cache_dir).glob("*.safetensors"))
            else " (resumed: partial)")
    elif args.extract_seconds:
        extract_seconds, extract_source = args.extract_seconds, "--extract-seconds (cache was complete)"
    else:
        extract_seconds, extract_source = None, "unknown: the cache was complete; pass --extract-seconds"

    with tempfile.TemporaryDirectory(prefix="codesign-search-run-") as scratch:
        run_dir = (codesign_home() / "runs" / f"bench-{args.dataset}-c{args.max_combinations}"
                   if args.keep_run else Path(scratch))
        started, cpu0 = time.perf_counter(), cpu_seconds()
        board = search(config, ex, run_dir)
        search_wall, search_cpu = time.perf_counter() - started, cpu_seconds() - cpu0
        if args.keep_run:
            board["bench_search_cpu_seconds"] = search_cpu
            write_run(run_dir, board)

    per_head: dict[str, dict[str, float]] = defaultdict(lambda: {"n": 0, "fit_seconds": 0.0})
    per_combine: dict[str, dict[str, float]] = defaultdict(lambda: {"n": 0, "fit_seconds": 0.0})
    for c in board["candidates"]:
        for table, key in ((per_head, f"{c['head']}-{c['head_size']}"), (per_combine, c["combine"])):
            table[key]["n"] += 1
            table[key]["fit_seconds"] += c["fit_seconds"]
    slowest = sorted(board["candidates"], key=lambda c: -c["fit_seconds"])[:10]
    sel = next(c for c in board["candidates"] if c["id"] == board["selected"])
    result = {
        "benchmark": "search",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "dataset": args.dataset,
        "split_sizes": board["split_sizes"],
        "model": board["model"],
        "max_length": args.max_length,
        "n_candidates": board["n_candidates"],
        "extract_seconds": extract_seconds,
        "extract_source": extract_source,
        "extract_wall_this_run": extract_wall,
        "extract_cpu_this_run": extract_cpu,
        "search_jobs": board["search_jobs"],
        "screening": board.get("screening"),
        "search_cpu_seconds": search_cpu,
        "search_seconds_fit_loop": board["search_seconds"],
        "search_seconds_total": search_wall,
        "search_over_extract": (search_wall / extract_seconds) if extract_seconds else None,
        "search_faster_than_extraction": (search_wall < extract_seconds) if extract_seconds else None,
        "per_head": {k: {**v, "mean_seconds": v["fit_seconds"] / v["n"]} for k, v in sorted(per_head.items())},
        "per_combine": {k: {**v, "mean_seconds": v["fit_seconds"] / v["n"]} for k, v in sorted(per_combine.items())},
        "slowest": [{"id": c["id"], "layers": c["layers"], "combine": c["combine"], "pooling": c["pooling"],
                     "head": c["head"], "fit_seconds": c["fit_seconds"]} for c in slowest],
        "selected": {k: sel.get(k) for k in ("id", "layers", "combine", "pooling", "head", "depth",
                                             "val_acc", "test_acc")},
        "baseline": {k: board["baseline"][k] for k in ("val_acc", "test_acc", "depth")},
    }
    out = Path(args.out) if args.out else result_path("search")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()

    ratio = result["search_over_extract"]
    print(f"{args.dataset}: {board['n_candidates']} candidates searched in {search_wall:.1f} s "
          f"({board['search_jobs']} processes); "
          f"extraction {extract_seconds if extract_seconds is None else round(extract_seconds, 1)} s"
          + ("" if ratio is None else f" → search/extraction = {ratio:.2f}"))
    if board.get("screening"):
        sc = board["screening"]
        print(f"  successive halving: {sc['screened']} screened on {sc['rows']} rows in {sc['screen_seconds']:.1f} s, "
              f"{sc['promoted']} refitted on all rows in {sc['full_seconds']:.1f} s")
    for head, v in result["per_head"].items():
        print(f"  {head:12s} {v['n']:4d} fits  {v['fit_seconds']:8.1f} s  ({v['mean_seconds']:.2f} s each)")
    for comb, v in result["per_combine"].items():
        print(f"  {comb:12s} {v['n']:4d} fits  {v['fit_seconds']:8.1f} s  ({v['mean_seconds']:.2f} s each)")
    print(f"selected {sel['id']} depth {sel['depth']}: test {sel.get('test_acc')}, baseline test "
          f"{board['baseline']['test_acc']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
