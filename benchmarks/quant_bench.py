"""int8 against fp32 for each dataset's selected candidate (issue 13, "Must show").

    .venv/bin/python benchmarks/quant_bench.py [--home H] [--datasets trec emotion sst2]

For each dataset it uses ``H/runs/<dataset>`` (running ``codesign run --dataset D`` into it first
if it is missing), takes the run's host selection and exports four artefacts through
``export_artefact``: fp32 and int8-dynamic, each with the full and the pruned vocabulary. Then:

* ``fp32_test_acc`` / ``int8_test_acc`` (and the pruned twins): ONNX Runtime on the whole test
  split, from the artefacts themselves;
* ``int8_over_fp32_latency``: one process, batch 1, one thread, every test text at its real
  length, fp32 and int8 alternating text by text (the order flips each round), so both see the
  same machine state; the ratio of the medians, with the raw per-inference samples kept;
* ``recipe``, ``fp32_nodes``, ``accuracy_guard`` and the head refit's validation figures, from
  the int8 artefact.json;
* ``bundle_bytes``: the host bundle's .tar.gz for the int8 artefact, full and pruned vocabulary;
* ``op_profile``: ONNX Runtime's own per-layer / per-op profile of both artefacts, when
  ``toolchain.profiling.op_profile`` is available;
* ``isa``: the CPU flags that decide int8 speed (VNNI or not).

Writes benchmarks/results/<date>-<hostname>-quant.json. No timing is asserted anywhere: the
figures are what this machine measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from extraction_bench import machine_info, result_path  # noqa: E402
from vocab_bench import bundle_bytes, isa  # noqa: E402

DATASETS = ("trec", "emotion", "sst2")
INT8 = "int8-dynamic"


def ensure_run(home: Path, dataset: str) -> Path:
    run_dir = home / "runs" / dataset
    if (run_dir / "leaderboard.json").is_file():
        return run_dir
    env = {**os.environ, "CODESIGN_HOME": str(home)}
    cmd = [sys.executable, "-m", "toolchain.cli", "run", "--dataset", dataset, "--run-dir", str(run_dir)]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)
    return run_dir


def selected_base(run_dir: Path) -> str:
    sel = json.loads((run_dir / "leaderboard.json").read_text())["selected"]
    return sel if isinstance(sel, str) else sel.get("base_id", sel.get("id"))


def batch1_feeds(ids: list[np.ndarray]) -> list[dict]:
    """One unpadded batch-1 input per text, as the runner times them."""
    return [{"input_ids": x[None, :], "attention_mask": np.ones((1, len(x)), np.int64)} for x in ids]


def interleaved_latency(models: dict[str, Path], ids: list[np.ndarray], rounds: int) -> dict:
    """Per-inference milliseconds of each model, alternating text by text, one thread each."""
    from toolchain.export.validate import ort_session
    from toolchain.profiling.stats import percentile

    sessions = {name: ort_session(path, threads=1) for name, path in models.items()}
    feeds = batch1_feeds(ids)
    for s in sessions.values():  # warm-up: first runs allocate and pick kernels
        for f in feeds[:8]:
            s.run(["probs"], f)
    samples = {name: [] for name in sessions}
    names = list(sessions)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for f in feeds:
            for name in order:
                t = time.perf_counter()
                sessions[name].run(["probs"], f)
                samples[name].append(1e3 * (time.perf_counter() - t))
    out = {name: {"samples_ms": [round(v, 4) for v in xs], "p50_ms": percentile(xs, 50),
                  "p90_ms": percentile(xs, 90), "n": len(xs)} for name, xs in samples.items()}
    return out


def op_profiles(models: dict[str, Path], ids: list[np.ndarray]) -> dict | None:
    try:
        from toolchain.profiling.op_profile import collect
    except ImportError:
        return None
    feeds = batch1_feeds(ids)
    return {name: collect(path, feeds, threads=1) for name, path in models.items()}


def bench_dataset(home: Path, dataset: str, rounds: int, latency_texts: int, bundles: Path) -> dict:
    from toolchain.bundle.build import build_bundle
    from toolchain.export.artefact import artefact_accuracy, export_artefact
    from toolchain.export.text_inputs import encode, load_tokenizer
    from toolchain.rundir import RunDir

    run_dir = ensure_run(home, dataset)
    run = RunDir.open(run_dir)
    _, base_id = run.resolve(selected_base(run_dir))
    data = run.dataset()
    arts, metas, row = {}, {}, {"run_dir": str(run_dir), "base_candidate_id": base_id}
    for precision in ("fp32", INT8):
        for vocab in ("full", "pruned"):
            key = f"{precision}/{vocab}"
            art, meta = export_artefact(run_dir, base_id, precision, vocab=vocab)
            arts[key], metas[key] = art, meta
            acc = artefact_accuracy(art / "model.onnx", art, data.test.texts, data.test.labels, meta["max_length"])
            folder = build_bundle(run_dir, "host", bundles / dataset / key.replace("/", "-"),
                                  candidate_id=meta["candidate_id"], allow_unmeasured=True)
            row[key] = {"candidate_id": meta["candidate_id"], "test_acc": acc, "val_acc": meta["val_acc"],
                        "model_bytes": meta["model_bytes"], "bundle": bundle_bytes(folder),
                        "accuracy_guard": meta.get("accuracy_guard"), "recipe": meta.get("recipe", "")}
            if "vocab" in meta:
                row[key]["vocab_check"] = {k: meta["vocab"].get(k) for k in ("pruning", "validation", "test")}
            print(f"{dataset:8} {key:20} test {100 * acc:5.1f} %  model {meta['model_bytes'] / 1e6:6.2f} MB  "
                  f"bundle {row[key]['bundle'].get('archive_bytes', 0) / 1e6:6.2f} MB", flush=True)
    int8 = metas[f"{INT8}/full"]
    candidate = int8["candidate"]
    tok = load_tokenizer(arts["fp32/full"], int8["max_length"])
    ids = encode(tok, data.test.texts[:latency_texts])
    lat = interleaved_latency({"fp32": arts["fp32/full"] / "model.onnx",
                               "int8": arts[f"{INT8}/full"] / "model.onnx"}, ids, rounds)
    ratio = lat["int8"]["p50_ms"] / lat["fp32"]["p50_ms"]
    print(f"{dataset:8} int8/fp32 latency (p50, interleaved, 1 thread) {ratio:.3f}  "
          f"({lat['int8']['p50_ms']:.3f} / {lat['fp32']['p50_ms']:.3f} ms)", flush=True)
    profile = op_profiles({"fp32": arts["fp32/full"] / "model.onnx", "int8": arts[f"{INT8}/full"] / "model.onnx"},
                          ids[:64])
    refit = int8.get("head_refit") or {}
    return {
        **row,
        "candidate": {k: candidate.get(k) for k in ("backbone", "depth", "layers", "combine", "pooling", "head", "head_size", "max_length")},
        "fp32_test_acc": row["fp32/full"]["test_acc"],
        "int8_test_acc": row[f"{INT8}/full"]["test_acc"],
        "int8_pruned_test_acc": row[f"{INT8}/pruned"]["test_acc"],
        "int8_points_vs_fp32": 100 * (row[f"{INT8}/full"]["test_acc"] - row["fp32/full"]["test_acc"]),
        "int8_pruned_points_vs_fp32_full": 100 * (row[f"{INT8}/pruned"]["test_acc"] - row["fp32/full"]["test_acc"]),
        "int8_over_fp32_latency": ratio,
        "latency": {**lat, "texts": len(ids), "rounds": rounds, "threads": 1, "batch": 1,
                    "method": "interleaved text by text, order flipped each round, ratio of p50s"},
        "recipe": int8.get("recipe", ""), "accuracy_guard": int8.get("accuracy_guard"),
        "guard_reason": int8.get("guard_reason", ""),
        "fp32_nodes": (int8.get("fp32_nodes") or {}).get("count"),
        "fp32_node_names": (int8.get("fp32_nodes") or {}).get("names"),
        "recipes_tried": [{k: t.get(k) for k in ("recipe", "val_acc", "accuracy_drop", "skipped")}
                          for t in int8.get("recipes_tried", [])],
        "head_refit": {k: refit.get(k) for k in ("on_recipe", "val_acc_before", "val_acc_after", "kept")},
        "bundle_bytes": {"full": row[f"{INT8}/full"]["bundle"].get("archive_bytes"),
                         "pruned": row[f"{INT8}/pruned"]["bundle"].get("archive_bytes"),
                         "fp32_full": row["fp32/full"]["bundle"].get("archive_bytes")},
        **({"op_profile": profile} if profile else {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=Path(os.environ.get("CODESIGN_HOME", HERE.parent / ".bench-home")))
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--rounds", type=int, default=4, help="latency rounds over the texts (default 4)")
    ap.add_argument("--latency-texts", type=int, default=300, help="test texts timed (default 300)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.latency_texts < 8:
        ap.error("--rounds must be >= 1 and --latency-texts >= 8")
    bundles = args.home / "quant-bench"
    out = args.out or result_path("quant")
    result = {"bench": "quant", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/quant_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": {**machine_info(), "isa": isa()}, "int8_precision": INT8, "datasets": {}}
    if out.is_file():  # one dataset at a time: keep the others already measured in this file
        old = json.loads(out.read_text())
        if old.get("machine", {}).get("isa") == result["machine"]["isa"]:
            result["datasets"] = old.get("datasets", {})
    for dataset in args.datasets:
        result["datasets"][dataset] = bench_dataset(args.home, dataset, args.rounds, args.latency_texts, bundles)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")  # after each dataset: nothing lost on interrupt
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
