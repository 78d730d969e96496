"""Host latency of the exported model vs PyTorch eager, and of the int8 artefact vs fp32
(issue 3's must-show): default backbone, max length 64, batch 1, one thread, one process.

    .venv/bin/python benchmarks/export_bench.py                     # makes a small trec run first
    .venv/bin/python benchmarks/export_bench.py --run-dir RUN --candidate ID

The model is a run's full-depth candidate (by default its baseline: the last layer's [CLS] into
softmax regression, so every transformer layer is in the graph), built three ways:

- PyTorch eager: ``toolchain.export.graph.build_module`` (the very module that is exported);
- the fp32 ONNX artefact (``export_artefact(run, id, "fp32")``) in ONNX Runtime;
- the int8-dynamic artefact (``export_artefact(run, id, "int8-dynamic")``) in ONNX Runtime.

Inputs are real trec validation questions at their real token lengths (no padding). The three
engines are measured round-robin in blocks (each block: one pass over the inputs per engine,
the engine order rotating between blocks), so a busy machine slows all three alike; each block
gives one ratio, and the result reports the median ratio with its spread over blocks, plus each
engine's median per-input latency. Writes benchmarks/results/<date>-<hostname>-export.json.
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

MAX_LENGTH = 64


def _pct(xs, q) -> float:
    # The one percentile definition, as `profile` and `results` use.
    from toolchain.profiling.stats import percentile

    return percentile([float(x) for x in xs], q)


def summary(xs) -> dict:
    return {"median": _pct(xs, 50), "p10": _pct(xs, 10), "p90": _pct(xs, 90), "min": float(np.min(xs)),
            "max": float(np.max(xs)), "n": len(xs)}


def ensure_run(run_dir: Path | None) -> Path:
    """A run to export from: the one given, or a small trec run (single layers, softmax heads)."""
    from toolchain.flows.run import RunConfig, run
    from toolchain.paths import codesign_home

    if run_dir is not None:
        return run_dir
    run_dir = codesign_home() / "runs" / "export-bench-trec"
    if not (run_dir / "leaderboard.json").is_file():
        cfg = RunConfig(dataset="trec", max_lengths=(MAX_LENGTH,), heads=(("softmax", 3),), max_combinations=0,
                        run_dir=str(run_dir))
        run(cfg)
    return run_dir


FUSED = "fused-dynamic-per-channel"


def fused_then_quantized(fp32: Path, out: Path) -> None:
    """ONNX Runtime's transformer fusion (SkipLayerNorm, BiasGelu; its attention pattern does
    not match this exporter's graph), then dynamic per-channel int8 — a comparison route only."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    fused = out.with_suffix(".fused.onnx")
    optimizer.optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384,
                             opt_level=1).save_model_to_file(str(fused))
    quantize_dynamic(str(fused), str(out), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     extra_options={"DefaultTensorType": 1})  # 1 = FLOAT, for the fused ops' outputs


def calibration(board, tok, n: int = 64):
    """Static recipes calibrate on training text at real lengths (batch 1), as artefacts do."""
    from toolchain.export.text_inputs import encode
    from toolchain.flows.run import run_dataset

    texts = run_dataset(board).train.texts[:n]
    return [(x[None, :], np.ones((1, len(x)), np.int64)) for x in encode(tok, texts)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=None, help="run to export from (default: a small trec run)")
    ap.add_argument("--candidate", default=None, help="candidate id (default: the run's full-depth baseline)")
    ap.add_argument("--inputs", type=int, default=48, help="validation texts per pass")
    ap.add_argument("--blocks", type=int, default=15, help="round-robin blocks (one pass per engine each)")
    ap.add_argument("--also-recipe", nargs="*", default=["dynamic-per-channel"],
                    help="also time these int8 recipes on the same fp32 file, for comparison "
                         f"(codesign's recipes, or {FUSED!r})")
    ap.add_argument("--padded", action="store_true",
                    help="pad every input to the max length (64) with a zero attention mask, as a "
                         "fixed-shape runtime would; default: real lengths")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    from toolchain.export.artefact import export_artefact
    from toolchain.export.graph import build_module
    from toolchain.export.text_inputs import encode, load_tokenizer
    from toolchain.export.validate import ort_session
    from toolchain.features.backbone import load_backbone, resolve_model
    from toolchain.flows.run import run_dataset
    from toolchain.report.write import read_leaderboard
    from toolchain.search.fit import SavedHead

    load_before = load_average()
    run_dir = ensure_run(args.run_dir)
    board = read_leaderboard(run_dir)
    cid = args.candidate or board["baseline"]["id"]
    saved = SavedHead.load(run_dir / "heads" / f"{cid}.safetensors")
    cand = saved.candidate
    if cand.max_length != MAX_LENGTH:
        print(f"note: candidate max length is {cand.max_length}, not {MAX_LENGTH}", file=sys.stderr)
    t0 = time.perf_counter()
    fp32_dir, fp32_meta = export_artefact(run_dir, cid, "fp32")
    int8_dir, int8_meta = export_artefact(run_dir, cid, "int8-dynamic")
    export_seconds = time.perf_counter() - t0

    ref = resolve_model(board["models"][cand.backbone]["path"])
    _, hf_model = load_backbone(ref)
    module = build_module(hf_model, saved)
    module.eval()

    dataset = run_dataset(board)
    rng = np.random.default_rng(0)
    texts = dataset.validation.texts
    pick = rng.choice(len(texts), size=min(args.inputs, len(texts)), replace=False)
    tok = load_tokenizer(fp32_dir, cand.max_length)
    ids = encode(tok, [texts[i] for i in pick])
    lengths = [len(x) for x in ids]
    def feed(x):
        width = cand.max_length if args.padded else len(x)
        f = {"input_ids": np.zeros((1, width), np.int64), "attention_mask": np.zeros((1, width), np.int64)}
        f["input_ids"][0, : len(x)], f["attention_mask"][0, : len(x)] = x, 1
        return f

    feeds = [feed(x) for x in ids]
    torch_feeds = [(torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])) for f in feeds]

    s_fp32 = ort_session(fp32_dir / "model.onnx", threads=1)
    s_int8 = ort_session(int8_dir / "model.onnx", threads=1)
    extra, extra_info = {}, {}
    for recipe in args.also_recipe:
        if recipe == int8_meta.get("recipe"):
            continue
        # For comparison only: the same fp32 file through another int8 recipe (not the artefact).
        from toolchain.export.quantize import apply_recipe

        alt = int8_dir.parent / f"bench-{recipe}.onnx"
        if not alt.is_file() and recipe == FUSED:
            fused_then_quantized(fp32_dir / "model.onnx", alt)
        elif not alt.is_file():
            apply_recipe(recipe, fp32_dir / "model.onnx", alt, lambda: calibration(board, tok))
        session = ort_session(alt, threads=1)
        extra[f"onnx_int8_{recipe}"] = lambda i, s=session: s.run(["probs"], feeds[i])[0]
        extra_info[recipe] = {"file": str(alt), "model_bytes": alt.stat().st_size}

    def run_torch(i):
        with torch.inference_mode():
            return module(*torch_feeds[i]).numpy()

    engines = {
        "torch_eager": run_torch,
        "onnx_fp32": lambda i: s_fp32.run(["probs"], feeds[i])[0],
        "onnx_int8": lambda i: s_int8.run(["probs"], feeds[i])[0],
        **extra,
    }
    # Same answers? (a sanity check that the three engines compute the same model)
    outs = {name: np.concatenate([fn(i) for i in range(len(feeds))]) for name, fn in engines.items()}
    agree = {name: float((o.argmax(1) == outs["torch_eager"].argmax(1)).mean()) for name, o in outs.items()}
    max_diff = {name: float(np.abs(o - outs["torch_eager"]).max()) for name, o in outs.items()}
    for fn in engines.values():  # warm-up: a second pass each
        for i in range(len(feeds)):
            fn(i)

    names = list(engines)
    samples = {n: [] for n in names}
    block_totals = {n: [] for n in names}
    for b in range(args.blocks):
        order = names[b % len(names):] + names[: b % len(names)]
        for n in order:
            fn, total = engines[n], 0.0
            for i in range(len(feeds)):
                start = time.perf_counter()
                fn(i)
                dt = (time.perf_counter() - start) * 1e3
                samples[n].append(dt)
                total += dt
            block_totals[n].append(total / len(feeds))
    ratios = {
        "onnx_fp32_over_torch_eager": [a / b for a, b in zip(block_totals["onnx_fp32"], block_totals["torch_eager"],
                                                               strict=True)],
        "onnx_int8_over_onnx_fp32": [a / b for a, b in zip(block_totals["onnx_int8"], block_totals["onnx_fp32"],
                                                             strict=True)],
    }
    for name in extra:
        ratios[f"{name}_over_onnx_fp32"] = [a / b for a, b in zip(block_totals[name], block_totals["onnx_fp32"],
                                                                   strict=True)]
    bars = {"onnx_fp32_over_torch_eager": 0.8, "onnx_int8_over_onnx_fp32": 0.6}
    result = {
        "benchmark": "export",
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/export_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "threads": {"torch": torch.get_num_threads(), "onnxruntime_intra_op": 1, "processes": 1},
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__},
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "run_dir": str(run_dir),
        "dataset": board["dataset"],
        "candidate": {"id": cid, **cand.to_dict()},
        "batch": 1,
        "max_length": cand.max_length,
        "inputs": {"source": f"{board['dataset']} validation, seeded sample", "n": len(feeds),
                   "token_lengths": summary(lengths),
                   "padded_to": cand.max_length if args.padded else None},
        "blocks": args.blocks,
        "artefacts": {
            "fp32": {"dir": str(fp32_dir), "model_bytes": fp32_meta["model_bytes"], "val_acc": fp32_meta["val_acc"]},
            "int8-dynamic": {"dir": str(int8_dir), "model_bytes": int8_meta["model_bytes"],
                             "val_acc": int8_meta["val_acc"], "recipe": int8_meta.get("recipe"),
                             "accuracy_guard": int8_meta.get("accuracy_guard")},
        },
        "export_seconds": export_seconds,
        "agreement_with_torch": {"argmax": agree, "max_abs_prob_diff": max_diff},
        "latency_ms_per_input": {n: summary(samples[n]) for n in names},
        "latency_ms_block_means": {n: summary(block_totals[n]) for n in names},
        "ratios": {k: {**summary(v), "bar": bars.get(k), "passes": _pct(v, 50) <= bars[k] if k in bars else None}
                   for k, v in ratios.items()},
        "comparison_recipes": extra_info or None,
        "raw": {"samples_ms": samples, "block_means_ms": block_totals, "lengths": lengths},
    }
    out = args.out or result_path("export-padded" if args.padded else "export")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    lat = result["latency_ms_per_input"]
    print(f"model {cid} ({cand.combine} {cand.layers} {cand.pooling} {cand.head}, depth {cand.depth}), "
          f"{len(feeds)} inputs × {args.blocks} blocks, 1 thread, batch 1")
    for n in names:
        print(f"  {n:34s} median {lat[n]['median']:.2f} ms (p10 {lat[n]['p10']:.2f}, p90 {lat[n]['p90']:.2f})")
    for k, r in result["ratios"].items():
        verdict = "" if r["bar"] is None else f"; bar ≤ {r['bar']}: {'pass' if r['passes'] else 'MISS'}"
        print(f"  {k}: median {r['median']:.3f} (p10 {r['p10']:.3f}, p90 {r['p90']:.3f}){verdict}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
