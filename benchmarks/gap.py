"""How much of the gap between the classic frozen feature extractor and fine-tuning the method
closes, per dataset (issue 16), from a dataset's results of accuracy_bench.py.

    gap_closed = (selected − last-layer [CLS]) / (fine-tuned − last-layer [CLS])

on test accuracy. Selection uses validation only; the test split is read only here, to report.
No side effects at import (tests import it).
"""

from __future__ import annotations

# The bar: the frozen selection should close at least this much of the gap.
TARGET = 0.6


def gap_closed(selected: float | None, last_cls: float | None, finetuned: float | None) -> float | None:
    """The fraction of the gap closed; None when a figure is missing or fine-tuning does not beat
    last-layer [CLS] (there is no gap to close: the ratio would be meaningless or infinite)."""
    if selected is None or last_cls is None or finetuned is None or finetuned <= last_cls:
        return None
    return (selected - last_cls) / (finetuned - last_cls)


def gap_summary(d: dict, rows: list[dict]) -> dict:
    """The gap figures of one dataset, with the training-cost and latency ratios beside them.
    ``rows`` are results_markdown.rows_for(d)."""
    by = {r["row"]: r for r in rows}
    sel = by.get("selected, no budget") or {}
    base = by.get("last layer [CLS] + softmax") or {}
    ft = (d.get("finetune") or {}).get("full") or {}
    trunc = (d.get("finetune") or {}).get("truncated") or {}
    out = {
        "definition": "(selected - last-layer [CLS]) / (fine-tuned - last-layer [CLS]), test accuracy",
        "selected_test_acc": sel.get("test_acc"),
        "last_cls_test_acc": base.get("test_acc"),
        "finetuned_test_acc": ft.get("test_acc"),
        "gap_closed": gap_closed(sel.get("test_acc"), base.get("test_acc"), ft.get("test_acc")),
        "finetuned_truncated_test_acc": trunc.get("test_acc"),
        "gap_closed_vs_truncated": gap_closed(sel.get("test_acc"), base.get("test_acc"),
                                              trunc.get("test_acc")),
        "finetune_rows": ft.get("finetune_rows", ft.get("train_size")),
        "train_split_rows": (d.get("split_sizes") or {}).get("train"),
        "finetune_epochs_run": ft.get("epochs_run"),
        "finetune_best_epoch": ft.get("best_epoch"),
        "finetune_train_seconds": ft.get("train_seconds"),
        "finetune_device": ft.get("device"),
        "train_ratio_vs_finetune": sel.get("train_ratio_vs_finetune"),
        "train_cpu_ratio_vs_finetune": sel.get("train_cpu_ratio_vs_finetune"),
        "latency_ratio_vs_full_depth": sel.get("latency_ratio_vs_full_depth"),
        "latency_source": sel.get("latency_source"),
        "target": TARGET,
    }
    g = out["gap_closed"]
    # Only a fine-tune on every training row is the baseline the bar is about.
    real = out["finetune_rows"] is not None and out["finetune_rows"] == out["train_split_rows"]
    out["against_full_train"] = real
    out["target_met"] = None if g is None or not real else g >= TARGET
    return out
