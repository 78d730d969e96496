"""Vocabulary pruning on a real run (issue 13, item 4): model and bundle bytes, accuracy and UNK
shares of a candidate with its full and its pruned vocabulary, fp32 and int8.

    .venv/bin/python benchmarks/vocab_bench.py --run-dir RUN [--candidate ID] [--int8 int8-dynamic]

The candidate defaults to the run's host selection. Four artefacts are exported through
``export_artefact`` (fp32 full, fp32 pruned, int8 full, int8 pruned) and bundled for the host
(``build_bundle``); accuracies are measured from the artefacts themselves (ONNX Runtime on the
validation and test splits), the pruning figures come from the pruned artefact's own validation
against its unpruned twin (artefact.json ``vocab``). No timing here: sizes and accuracies only.
Writes benchmarks/results/<date>-<hostname>-vocab.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from extraction_bench import machine_info, result_path  # noqa: E402

from toolchain.profiling.isa import ISA_FLAGS, cpu_flags  # noqa: E402, F401  (light: stdlib only)


def isa() -> list[str]:
    """This machine's ISA flags: the one parser profiling records use (toolchain.profiling.isa)."""
    return cpu_flags()


def bundle_bytes(folder: Path) -> dict:
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    archive = folder.with_name(folder.name + ".tar.gz")
    if not archive.is_file():
        archive = next(folder.parent.glob(f"{folder.name}*.tar.gz"), None)
    out = {"folder_bytes": sum(files.values()), "files": files}
    if archive is not None and archive.is_file():
        out["archive_bytes"] = archive.stat().st_size
        with tarfile.open(archive) as tar:
            out["archive_members"] = len(tar.getmembers())
    return out


def main(argv: list[str] | None = None) -> int:
    from toolchain.bundle.build import build_bundle
    from toolchain.export.artefact import artefact_accuracy, export_artefact
    from toolchain.rundir import RunDir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--candidate", default=None, help="base candidate id (default: the host selection)")
    ap.add_argument("--int8", default="int8-dynamic")
    ap.add_argument("--bundles", type=Path, default=None, help="where to build bundles (default: RUN/vocab-bench)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    run = RunDir.open(args.run_dir)
    if args.candidate is None:
        sel = json.loads((args.run_dir / "leaderboard.json").read_text())["selected"]
        args.candidate = sel if isinstance(sel, str) else sel.get("base_id", sel.get("id"))
    _, base_id = run.resolve(args.candidate)
    dataset = run.dataset()
    bundles = args.bundles or args.run_dir / "vocab-bench"
    rows = {}
    for precision in ("fp32", args.int8):
        for vocab in ("full", "pruned"):
            art, meta = export_artefact(args.run_dir, base_id, precision, vocab=vocab)
            test_acc = None
            if dataset.test is not None:
                test_acc = artefact_accuracy(art / "model.onnx", art, dataset.test.texts, dataset.test.labels,
                                             meta["max_length"])
            folder = build_bundle(args.run_dir, "host", bundles / f"{precision}-{vocab}",
                                  candidate_id=meta["candidate_id"], allow_unmeasured=True)
            key = f"{precision}/{vocab}"
            rows[key] = {
                "candidate_id": meta["candidate_id"], "precision": precision, "vocab": vocab,
                "recipe": meta.get("recipe", ""), "accuracy_guard": meta.get("accuracy_guard"),
                "model_bytes": meta["model_bytes"], "val_acc": meta["val_acc"], "test_acc": test_acc,
                "bundle": bundle_bytes(folder),
            }
            if "vocab" in meta:
                rows[key]["vocab_check"] = meta["vocab"]
            print(f"{key:24} model {meta['model_bytes'] / 1e6:7.2f} MB  bundle "
                  f"{rows[key]['bundle'].get('archive_bytes', 0) / 1e6:7.2f} MB (archive)  val "
                  f"{100 * meta['val_acc']:.1f} %  test {100 * (test_acc or 0):.1f} %", flush=True)
    fp32_full = rows["fp32/full"]
    for r in rows.values():
        r["model_bytes_over_fp32_full"] = r["model_bytes"] / fp32_full["model_bytes"]
        if r["test_acc"] is not None and fp32_full["test_acc"] is not None:
            r["test_points_vs_fp32_full"] = 100 * (r["test_acc"] - fp32_full["test_acc"])
    result = {
        "bench": "vocab", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/vocab_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "run_dir": str(args.run_dir), "base_candidate_id": base_id,
        "dataset": json.loads((args.run_dir / "leaderboard.json").read_text()).get("dataset"),
        "machine": {**machine_info(), "isa": isa()}, "rows": rows,
    }
    out = args.out or result_path("vocab")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
