"""The method end to end: dataset → per-layer features → heads on layers and combinations →
ranked candidates with a first cost estimate → a run directory."""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..config.target_spec import load_target_spec
from ..data.dataset import Dataset, load_dataset
from ..data.presets import resolve_dataset
from ..errors import SearchError
from ..features.backbone import ModelRef, backbone_info, resolve_model
from ..features.layers import LayerFeatures, layer_features
from ..paths import codesign_home
from ..progress import progress_bar
from ..rundir import target_key
from ..search.fit import FeatureBank, FittedCandidate, memory_budget_bytes
from ..search.parallel import auto_jobs, fit_all
from ..search.screening import Screening, screen_then_fit
from ..search.select import Budgets, pareto_front, select
from ..search.space import DEFAULT_HEADS, SearchSpace, vocab_twins

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    models: tuple[str, ...] = ("default",)
    dataset: str = "trec"
    target: str = "host"
    max_lengths: tuple[int, ...] = (64,)
    poolings: tuple[str, ...] = ("cls", "mean")
    heads: tuple[tuple[str, int], ...] = DEFAULT_HEADS
    max_combinations: int | None = 200
    tolerance: float = 0.005  # accuracy (fraction) traded for a cheaper candidate
    max_latency_ms: float | None = None
    max_model_mb: float | None = None
    max_per_class: int | None = None
    max_eval_per_class: int | None = None
    seed: int = 0
    run_dir: str | None = None
    jobs: int | None = None  # processes fitting heads; None: every core for large searches
    # Successive halving from 2× screen_rows training rows (0: never). Measured on SST-2
    # (60,614 rows, 242 candidates, 2 cores): screening on 10,000 rows and refitting a quarter
    # took 1.3× the feature extraction, since the promoted are nearly all MLPs on wide inputs.
    screen_rows: int = 4_000
    promote: float = 0.1  # share of the screened candidates refitted on every row
    min_promoted: int = 16
    device: str = "cpu"  # extraction: cpu, cuda, cuda:N (toolchain/features/device.py)
    dtype: str = "float32"  # float16/bfloat16: autocast on a GPU (another cache key)
    vocabs: tuple[str, ...] = ("full",)  # "pruned": embedding rows the training split uses (export/vocab.py)
    # Candidates whose inputs would take more than this are fitted streamed from the mapped
    # cache (search/fit.py); None: half the memory available when the search starts.
    memory_budget_mib: int | None = None


@dataclass
class Extraction:
    dataset: Dataset
    refs: dict[str, ModelRef]
    features: dict[tuple[str, int], LayerFeatures] = field(default_factory=dict)


def extract(config: RunConfig, features=None) -> Extraction:
    """Features of every backbone and length; ``features`` replaces layer_features per cache
    (``codesign extract --shard/--finalize/--engine`` pass their own step)."""
    features = features or layer_features
    spec = resolve_dataset(config.dataset)
    dataset = load_dataset(spec, config.max_per_class, config.max_eval_per_class)
    refs = {}
    for name in config.models:
        ref = resolve_model(name)
        if ref.name in refs and refs[ref.name].weights_hash != ref.weights_hash:
            # Two folders with one name: candidates are keyed by backbone name, so tell them apart.
            ref = ModelRef(f"{ref.name}-{ref.weights_hash[:6]}", ref.path, ref.weights_hash)
        refs[ref.name] = ref
    out = Extraction(dataset, refs)
    for ref in refs.values():
        for ml in config.max_lengths:
            out.features[(ref.name, ml)] = features(dataset, ref, ml, config.poolings,
                                                    device=config.device, dtype=config.dtype)
    return out


def new_run_dir(config: RunConfig) -> Path:
    if config.run_dir:
        return Path(config.run_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # The dataset may be a path or carry options (``d.csv?text_field=t``): keep a safe name.
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(config.dataset.split("?")[0]).stem or "data")
    return codesign_home() / "runs" / f"{stamp}-{name[:60]}"


def search(config: RunConfig, ex: Extraction, run_dir: Path) -> dict:
    """Fit every candidate, estimate costs, mark the front, select; returns the leaderboard."""
    target = load_target_spec(config.target)
    infos = {name: backbone_info(ref) for name, ref in ex.refs.items()}
    space = SearchSpace(
        backbones={n: i.n_layers for n, i in infos.items()}, max_lengths=config.max_lengths,
        poolings=config.poolings, heads=config.heads,
    )
    cands = sorted(space.candidates(config.max_combinations, config.seed), key=lambda c: (c.feature_key, c.head))
    if not cands:
        raise SearchError("the search space is empty; check --model, --max-length and the heads")
    y = {s: ex.dataset.split(s).labels for s in ("train", "validation")}
    if ex.dataset.test is not None:
        y["test"] = ex.dataset.test.labels
    budget = memory_budget_bytes(config.memory_budget_mib)
    banks = {key: FeatureBank(f, y, ex.dataset.n_classes, budget) for key, f in ex.features.items()}
    # Cost is predicted at the median real length: the latency a profile reports is a median too.
    seq_len = {key: float(np.median(f.lengths["validation"])) for key, f in ex.features.items()}
    budgets = Budgets.for_target(target, config.max_latency_ms, config.max_model_mb)
    jobs = config.jobs or auto_jobs(len(cands), len(y["train"]))

    def fit(some, on_banks, description):
        with progress_bar(description, len(some)) as advance, _one_thread():
            return fit_all(some, on_banks, config.seed, jobs, advance)

    screening = Screening(config.screen_rows, config.promote, config.min_promoted)
    started = time.perf_counter()
    if screening.applies(len(y["train"])):
        fitted, screen_summary = screen_then_fit(cands, banks, screening, config.seed, fit)
    else:
        fitted, screen_summary = fit(cands, banks, f"fitting {len(cands)} candidates"), None
    search_seconds = time.perf_counter() - started
    vocab_rows = {}
    if "pruned" in config.vocabs:
        from ..export.vocab import prune_for_texts

        vocab_rows = {n: prune_for_texts(Path(r.path) / "tokenizer.json", ex.dataset.train.texts).n_kept
                      for n, r in ex.refs.items()}
        fitted = vocab_twins(fitted, config.vocabs)
    cost_model = _cost_model(target, infos, seq_len, fitted, vocab_rows)
    rows = []
    for fc in fitted:
        cost = cost_model.predict(fc.candidate, fc.head.n_params, fc.head.flops)
        reasons = budgets.violations(cost)
        rows.append({"fc": fc, "cost": cost, "feasible": not reasons, "infeasible_reasons": reasons})
    # Only full fits compete: a screening score is a cheaper, noisier estimate.
    full = [r["fc"].fidelity == "full" for r in rows]
    front = [f and p for f, p in zip(full, pareto_front(
        [(r["fc"].val_acc if f else -1.0, r["cost"].latency_ms) for r, f in zip(rows, full, strict=True)]),
        strict=True)]
    chosen = select([r["fc"].val_acc for r in rows], [r["cost"].latency_ms for r in rows],
                    [r["feasible"] and f for r, f in zip(rows, full, strict=True)], config.tolerance)
    if chosen is None:
        raise SearchError(
            f"no candidate meets the budgets ({budgets}); the cheapest needs "
            f"{min(r['cost'].latency_ms for r in rows):.2f} ms — relax --max-latency-ms/--max-model-mb"
        )
    board = _leaderboard(config, ex, run_dir, target, rows, front, chosen, banks, search_seconds, seq_len)
    board["search_jobs"] = jobs
    board["memory_budget_mib"] = None if budget is None else round(budget / 2**20, 1)
    board["streamed_fits"] = sum(r["fc"].streamed for r in rows)
    board["screening"] = screen_summary
    if vocab_rows:
        board["vocab_rows"] = vocab_rows  # kept embedding rows per backbone, for later cost models
    return board


@contextmanager
def _one_thread():
    """Heads are small: a second torch thread only adds synchronisation (seen here: an MLP fit
    went from 0.07 s to 2-6 s with two threads on a loaded 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cost_model(target, infos, seq_len, fitted, vocab_rows=None):
    """The target's cost model, fitted from its records; the analytic estimate when none exist."""
    from ..profiling.cost_model import CostModel
    from ..store.db import RecordStore, default_db_path

    records = []
    if default_db_path().is_file():
        with RecordStore() as store:
            records = store.records(target=target.name)
    heads = {fc.candidate.id: (fc.head.n_params, fc.head.flops) for fc in fitted}
    return CostModel.fit(records, target, infos, seq_len, heads=heads, vocab_rows=vocab_rows)


def _baseline(rows, ex: Extraction) -> dict:
    """The classic feature extractor: last layer's [CLS] into softmax regression."""
    first = next(iter(ex.refs))
    n_layers = ex.features[next(k for k in ex.features if k[0] == first)].n_layers - 1
    for r in rows:
        c = r["fc"].candidate
        if (c.backbone == first and c.layers == (n_layers,) and c.pooling == "cls"
                and c.combine == "single" and c.head == "softmax"):
            return r
    raise SearchError("the last-layer [CLS] softmax baseline is missing from the space; keep the softmax head")


def _leaderboard(config, ex, run_dir, target, rows, front, chosen, banks, search_seconds, seq_len) -> dict:
    has_test = ex.dataset.test is not None
    base = _baseline(rows, ex)
    heads_dir = run_dir / "heads"
    # Heads kept for export and measurement: the front, the selection, the baseline, and the
    # best candidate at each depth (so that measured costs can move the selection).
    best_at_depth: dict[int, int] = {}
    for i, r in enumerate(rows):
        d = r["fc"].candidate.depth
        if r["fc"].fidelity != "full":
            continue
        if d not in best_at_depth or r["fc"].val_acc > rows[best_at_depth[d]]["fc"].val_acc:
            best_at_depth[d] = i
    keep = {i for i, f in enumerate(front) if f} | {chosen} | set(best_at_depth.values())
    candidates = []
    for i, r in enumerate(rows):
        fc: FittedCandidate = r["fc"]
        bank = banks[(fc.candidate.backbone, fc.candidate.max_length)]
        entry = {"id": fc.candidate.id, **fc.candidate.to_dict(), "val_acc": fc.val_acc,
                 "cost": r["cost"].to_dict(), "pareto": front[i], "feasible": r["feasible"],
                 "infeasible_reasons": r["infeasible_reasons"], "fit_seconds": round(fc.fit_seconds, 4),
                 "head_params": fc.head.n_params, "fidelity": fc.fidelity,
                 "fit": "streamed" if fc.streamed else "in-memory"}
        if fc.screen_val_acc is not None:
            entry["screen_val_acc"] = fc.screen_val_acc
        if i in keep or r is base:
            if has_test:
                entry["test_acc"], entry["test_macro_f1"] = fc.evaluate(bank, "test")
            fc.save(heads_dir / f"{fc.candidate.id}.safetensors")
        candidates.append(entry)
    base_entry = next(c for c in candidates if c["id"] == base["fc"].candidate.id)
    per_layer = [
        {"backbone": c["backbone"], "layer": c["layers"][0], "pooling": c["pooling"], "val_acc": c["val_acc"]}
        for c in candidates
        if c["combine"] == "single" and c["head"] == "softmax" and c["max_length"] == config.max_lengths[0]
    ]
    return {
        "schema": 2,
        "codesign_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": ", ".join(ex.refs),
        "models": {n: {"path": r.path, "weights_hash": r.weights_hash} for n, r in ex.refs.items()},
        "dataset": ex.dataset.name,
        "dataset_fingerprint": ex.dataset.fingerprint(),
        "label_names": list(ex.dataset.label_names),
        "split_sizes": {s: len(ex.dataset.split(s)) for s in ("train", "validation", "test")
                        if getattr(ex.dataset, s) is not None},
        "validation_carved": ex.dataset.validation_carved,
        "target": target.name,
        "target_hash": target.hash,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "mean_val_tokens": {f"{k[0]}@{k[1]}": float(np.mean(f.lengths["validation"]))
                            for k, f in ex.features.items()},
        "median_val_tokens": {f"{k[0]}@{k[1]}": v for k, v in seq_len.items()},
        "feature_cache": {f"{k[0]}@{k[1]}": f.cache_dir for k, f in ex.features.items()},
        "extract_seconds": sum(f.extract_seconds for f in ex.features.values()),
        "search_seconds": search_seconds,
        "n_candidates": len(candidates),
        "per_layer": per_layer,
        "baseline": {"id": base_entry["id"], "description": "last layer [CLS] + softmax regression",
                     "val_acc": base_entry["val_acc"], "test_acc": base_entry.get("test_acc"),
                     "depth": base_entry["depth"], "cost": base_entry["cost"]},
        "candidates": candidates,
        "selected": candidates[chosen]["id"],
        # The search's choice is the run's target's predicted selection; profiling a target
        # adds (or replaces) that target's own, measured one.
        "selections": {target_key(target.name, target.board_hash): {
            "target": target.name, "target_hash": target.hash, "board_hash": target.board_hash,
            "candidate_id": candidates[chosen]["id"], "base_id": candidates[chosen]["id"],
            "precision": candidates[chosen]["precision"], "source": "predicted",
            "emulated": False, "latency_ms": candidates[chosen]["cost"]["latency_ms"],
            "model_bytes": candidates[chosen]["cost"]["model_bytes"],
            "val_acc": candidates[chosen]["val_acc"], "test_acc": candidates[chosen].get("test_acc"),
        }},
    }


def run(config: RunConfig) -> tuple[Path, dict]:
    """The main job; writes leaderboard.json, report.md and the plots into the run directory."""
    from ..report.write import write_run

    run_dir = new_run_dir(config)
    ex = extract(config)
    board = search(config, ex, run_dir)
    write_run(run_dir, board)
    return run_dir, board


def candidate_by_id(board: dict, cid: str) -> dict:
    for c in board["candidates"]:
        if c["id"] == cid:
            return c
    raise SearchError(f"candidate '{cid}' is not in this run's leaderboard")



def attach_test_accuracy(board: dict, run_dir: Path, summary: dict) -> None:
    """Test accuracy of the loop's selection, measured from its artefact when there is one."""
    sel = summary.get("selected")
    if not sel:
        return
    art = run_dir / "artefacts" / sel
    if not (art / "artefact.json").is_file():
        base = candidate_by_id(board, summary["selected_base"])
        summary["selected_test_acc"] = base.get("test_acc")
        summary["selected_test_source"] = "head (PyTorch)"
        return
    import json

    from ..data.dataset import load_dataset
    from ..data.presets import resolve_dataset
    from ..export.artefact import artefact_accuracy

    cfg = board["config"]
    ds = load_dataset(resolve_dataset(cfg["dataset"]), cfg.get("max_per_class"), cfg.get("max_eval_per_class"))
    if ds.test is None:
        return
    meta = json.loads((art / "artefact.json").read_text())
    summary["selected_test_acc"] = artefact_accuracy(art / "model.onnx", art, ds.test.texts, ds.test.labels,
                                                     meta["max_length"])
    summary["selected_test_source"] = "artefact"


def run_dataset(board: dict) -> Dataset:
    """The dataset a run used, as it was sliced then."""
    cfg = board["config"]
    return load_dataset(resolve_dataset(cfg["dataset"]), cfg.get("max_per_class"), cfg.get("max_eval_per_class"))
