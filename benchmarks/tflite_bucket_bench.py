"""TFLite with length buckets vs the fixed 64-token file on real trec lengths (issue 13, item 5).

    .venv/bin/python benchmarks/tflite_bucket_bench.py --run-dir RUN [--candidate ID] [--n 64] [--blocks 9]

Converts the candidate (default: the run's selection) at 16, 32 and 64 tokens (fp32, via the
converter env of ``make converter-env``), checks that the bucketed runner's probabilities equal
the 64-only file's (fp32 tolerance, tolerances.py), then times both on the first N validation
questions at their real token lengths, batch 1, one thread, in interleaved blocks (engine order
alternating), one ratio per block. Writes benchmarks/results/<date>-<hostname>-tflite-buckets.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from extraction_bench import load_average, machine_info, result_path  # noqa: E402
from vocab_bench import isa  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from toolchain.export.text_inputs import encode, load_tokenizer
    from toolchain.export.tflite import TFLiteRunner
    from toolchain.export.tflite_buckets import BucketedTFLiteRunner, export_tflite_buckets
    from toolchain.export.tolerances import TOLERANCES
    from toolchain.profiling.stats import percentile
    from toolchain.rundir import RunDir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--candidate", default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    run = RunDir.open(args.run_dir)
    board = run.board
    cid = args.candidate or board["selected"]
    cand, base_id = run.resolve(cid)
    head = run.head_path(base_id)
    out_dir = args.run_dir / "tflite-buckets" / base_id
    index = out_dir / "buckets.json"
    started = time.perf_counter()
    if not index.is_file():
        export_tflite_buckets(head, board["models"][cand.backbone]["path"], out_dir)
    convert_s = time.perf_counter() - started
    bucketed = BucketedTFLiteRunner(index)
    fixed = TFLiteRunner(out_dir / f"model-{bucketed.lengths[-1]}.tflite")
    tok = load_tokenizer(out_dir, bucketed.lengths[-1])
    ids = encode(tok, run.dataset().validation.texts[: args.n])
    lengths = [len(x) for x in ids]
    p_fixed = np.stack([fixed(x) for x in ids])
    p_buck = np.stack([bucketed(x) for x in ids])
    max_abs = float(np.abs(p_fixed - p_buck).max())
    tol = TOLERANCES["fp32"].max_abs_prob
    calls = dict(bucketed.calls)

    def one_pass(engine) -> list[float]:
        out = []
        for x in ids:
            t = time.perf_counter()
            engine(x)
            out.append(1e3 * (time.perf_counter() - t))
        return out

    for engine in (fixed, bucketed):  # warm-up
        one_pass(engine)
    samples = {"fixed": [], "bucketed": []}
    ratios = []
    for b in range(args.blocks):
        order = (("fixed", fixed), ("bucketed", bucketed)) if b % 2 == 0 else (("bucketed", bucketed), ("fixed", fixed))
        block = {}
        for name, engine in order:
            block[name] = one_pass(engine)
            samples[name] += block[name]
        ratios.append(sum(block["bucketed"]) / sum(block["fixed"]))
    result = {
        "bench": "tflite-buckets", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/tflite_bucket_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "candidate_id": base_id, "buckets": bucketed.lengths, "bucket_calls_per_pass": calls,
        "inputs": len(ids), "input_tokens": {"median": percentile(lengths, 50), "p90": percentile(lengths, 90),
                                              "max": max(lengths)},
        "max_abs_prob_bucketed_vs_fixed": max_abs, "fp32_tolerance": tol, "outputs_match": max_abs <= tol,
        "bucketed_over_fixed_latency": {"median": percentile(ratios, 50), "min": min(ratios), "max": max(ratios),
                                        "blocks": len(ratios)},
        "per_input_ms": {k: {"median": percentile(v, 50), "p90": percentile(v, 90)} for k, v in samples.items()},
        "file_bytes": {p.name: p.stat().st_size for p in sorted(out_dir.glob("model-*.tflite"))},
        "convert_seconds": round(convert_s, 1), "load_average": load_average(),
        "machine": {**machine_info(), "isa": isa()},
    }
    out = args.out or result_path("tflite-buckets")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("buckets", "bucket_calls_per_pass", "outputs_match",
                                             "bucketed_over_fixed_latency", "per_input_ms")}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
