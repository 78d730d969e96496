"""Extraction throughput: length bucketing with dynamic padding vs naive padding to max length,
and the token-length distribution that justifies the default --max-length.

    .venv/bin/python benchmarks/extraction_bench.py                 # full SST-2 train (long)
    .venv/bin/python benchmarks/extraction_bench.py --limit 3000    # a seeded sample of 3,000

Both extraction modes run in this one process on the same texts, model and threads, so their
ratio is meaningful even on a busy machine (the load average is recorded with the result).
Writes benchmarks/results/<date>-<hostname>-extraction.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LENGTHS = (64, 128)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the search's worker processes)."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def machine_info() -> dict:
    import torch
    import transformers

    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def result_path(kind: str) -> Path:
    date = datetime.now().strftime("%Y-%m-%d")
    return HERE / "results" / f"{date}-{socket.gethostname()}-{kind}.json"


def length_stats(lengths: np.ndarray) -> dict:
    from toolchain.profiling.stats import percentile

    return {
        "n": int(len(lengths)),
        # The one percentile definition (toolchain.profiling.stats).
        **{f"p{q}": percentile(lengths.tolist(), q) for q in (50, 95, 99)},
        "max": int(lengths.max()),
        "mean": float(lengths.mean()),
        **{f"truncated_at_{m}": float((lengths > m).mean()) for m in LENGTHS},
    }


def preset_lengths(tokenizer) -> dict:
    """Token counts (special tokens included, no truncation) of every split of each preset."""
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import PRESETS, resolve_dataset

    out = {}
    for name in PRESETS:
        spec = resolve_dataset(name)
        if spec.source != "files":
            out[name] = {"skipped": f"no local copy (would resolve to {spec.hf_id})"}
            continue
        ds = load_dataset(spec)
        texts = [t for s in ("train", "validation", "test") if getattr(ds, s) is not None for t in ds.split(s).texts]
        ids = tokenizer(texts, truncation=False, padding=False)["input_ids"]
        out[name] = length_stats(np.array([len(x) for x in ids]))
    return out


def time_extraction(model, tokenizer, ids, bucket: bool, max_length: int, batch_size: int) -> tuple[float, dict]:
    from toolchain.features.extract import extract_pooled

    started = time.perf_counter()
    out = extract_pooled(model, tokenizer, ids, batch_size=batch_size, bucket=bucket,
                         pad_to=None if bucket else max_length)
    return time.perf_counter() - started, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sst2", help="preset or spec file whose train split is extracted")
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=None, help="a seeded sample of N train texts (default: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-lengths", type=int, nargs="+", default=list(LENGTHS))
    ap.add_argument("--no-presets", action="store_true", help="skip the per-preset length distribution")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("CODESIGN_NO_PROGRESS", "1")

    import torch

    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import resolve_dataset
    from toolchain.features.backbone import load_backbone, resolve_model
    from toolchain.features.extract import tokenize

    ref = resolve_model(args.model)
    tokenizer, model = load_backbone(ref)
    texts = list(load_dataset(resolve_dataset(args.dataset)).train.texts)
    if args.limit and args.limit < len(texts):
        pick = np.sort(np.random.default_rng(args.seed).choice(len(texts), args.limit, replace=False))
        texts = [texts[i] for i in pick]
    load_before = load_average()

    # Warm-up (allocator, kernels) outside the timed runs.
    warm = tokenize(tokenizer, texts[: args.batch_size], 128)
    time_extraction(model, tokenizer, warm, True, 128, args.batch_size)

    runs = {}
    for ml in args.max_lengths:
        ids = tokenize(tokenizer, texts, ml)
        lengths = np.array([len(s) for s in ids])
        t_bucket, bucketed = time_extraction(model, tokenizer, ids, True, ml, args.batch_size)
        t_naive, naive = time_extraction(model, tokenizer, ids, False, ml, args.batch_size)
        diff = max(float(np.abs(bucketed[p] - naive[p]).max()) for p in bucketed)
        runs[str(ml)] = {
            "examples": len(ids),
            "mean_tokens": float(lengths.mean()),
            "at_cap_fraction": float((lengths >= ml).mean()),  # hit max_length (truncated or exactly full)
            "bucketed_seconds": t_bucket,
            "naive_seconds": t_naive,
            "bucketed_examples_per_s": len(ids) / t_bucket,
            "naive_examples_per_s": len(ids) / t_naive,
            "speedup_bucketed_over_naive": t_naive / t_bucket,
            "max_abs_diff_bucketed_vs_naive": diff,
        }
        print(f"max_length {ml}: bucketed {len(ids) / t_bucket:7.1f} ex/s, naive {len(ids) / t_naive:7.1f} ex/s, "
              f"speedup {t_naive / t_bucket:.2f}x (max |diff| {diff:.1e})", flush=True)

    presets = {} if args.no_presets else preset_lengths(tokenizer)
    for name, st in presets.items():
        if "skipped" in st:
            print(f"{name}: {st['skipped']}")
            continue
        print(f"{name}: tokens p50 {st['p50']:.0f} p95 {st['p95']:.0f} max {st['max']}; truncated at 64: "
              f"{100 * st['truncated_at_64']:.2f}%, at 128: {100 * st['truncated_at_128']:.2f}%")

    # The rule: the shorter length, unless it truncates more than 1% of some preset's examples.
    measured = [st for st in presets.values() if "skipped" not in st]
    recommended = 64 if measured and all(st["truncated_at_64"] <= 0.01 for st in measured) else 128
    lengths_ratio = None
    if "64" in runs and "128" in runs:
        lengths_ratio = runs["64"]["bucketed_examples_per_s"] / runs["128"]["bucketed_examples_per_s"]
        print(f"bucketed throughput at 64 / at 128: {lengths_ratio:.2f}")
    print(f"recommended --max-length: {recommended} (64 unless it truncates > 1% of a preset)")

    result = {
        "benchmark": "extraction",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "model": ref.name,
        "dataset": args.dataset,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "throughput_64_over_128_bucketed": lengths_ratio,
        "preset_token_lengths": presets,
        "recommended_max_length": recommended,
        "rule": "64 unless more than 1% of some preset's examples exceed 64 tokens",
    }
    out = Path(args.out) if args.out else result_path("extraction")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
