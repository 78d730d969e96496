"""gap_closed (benchmarks/gap.py) and how the README table shows it (benchmarks/readme_table.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gap  # noqa: E402
import readme_table  # noqa: E402


def test_gap_closed_is_the_fraction_of_the_gap():
    assert gap.gap_closed(0.90, 0.80, 0.95) == pytest.approx(2 / 3)
    assert gap.gap_closed(0.80, 0.80, 0.95) == 0.0
    assert gap.gap_closed(0.97, 0.80, 0.95) == pytest.approx(17 / 15)  # beyond fine-tuning
    assert gap.gap_closed(0.90, 0.80, 0.80) is None  # no gap to close
    assert gap.gap_closed(0.90, None, 0.95) is None


def _dataset(ft_rows: int) -> dict:
    rows = [
        {"row": "last layer [CLS] + softmax", "test_acc": 0.70, "test_macro_f1": None},
        {"row": "last layer mean + softmax", "test_acc": 0.80, "test_macro_f1": None},
        {"row": "selected, no budget", "test_acc": 0.86, "test_macro_f1": None, "depth": 5,
         "candidate": "concat [1, 2] mean softmax", "latency_ratio_vs_full_depth": 0.9,
         "latency_source": "measured", "train_ratio_vs_finetune": 0.5, "train_cpu_ratio_vs_finetune": 0.4},
        {"row": "fine-tuning, full depth", "test_acc": 0.90, "test_macro_f1": None, "depth": 6,
         "train_note": f"{ft_rows} train rows, 3 epochs"},
    ]
    ft = {"test_acc": 0.90, "finetune_rows": ft_rows, "train_size": ft_rows, "epochs_run": 3,
          "best_epoch": 2, "train_seconds": 600.0, "device": "cpu"}
    d = {"split_sizes": {"train": 1000, "validation": 100, "test": 100}, "rows": rows,
         "finetune": {"full": ft}}
    d["gap"] = gap.gap_summary(d, rows)
    return d


def test_summary_carries_the_ratios_and_the_bar():
    g = _dataset(1000)["gap"]
    assert g["gap_closed"] == pytest.approx(0.8) and g["target_met"] is True
    assert (g["finetune_rows"], g["train_split_rows"], g["finetune_epochs_run"]) == (1000, 1000, 3)
    assert (g["train_ratio_vs_finetune"], g["latency_ratio_vs_full_depth"]) == (0.5, 0.9)
    assert g["gap_closed_vs_truncated"] is None  # no truncated run here
    weak = _dataset(200)["gap"]  # a subsampled fine-tune is not the bar's baseline
    assert weak["gap_closed"] == pytest.approx(0.8) and weak["target_met"] is None


def test_readme_table_shows_gap_and_marks_a_subsampled_finetune():
    result = {"machine": {"hostname": "h", "cpu": "c", "cores": 2}, "created_at": "2026-12-02T00:00",
              "command": "cmd", "datasets": {"trec": _dataset(1000)}}
    table = readme_table.summary_table(result)
    assert "| 0.80 |" in table and "1,000 rows, 3 ep. (best 2), 600 s cpu" in table
    assert "uses every training row" in table
    result["datasets"]["trec"] = _dataset(200)
    table = readme_table.summary_table(result)
    assert "0.80 (vs a 200-row fine-tune)" in table and "uses every training row" not in table
