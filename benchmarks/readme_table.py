"""The accuracy summary that README.md carries between its markers, written from the results
JSON of accuracy_bench.py (so the README's figures are never typed by hand)."""

from __future__ import annotations

from pathlib import Path

START, END = "<!-- accuracy-table:start -->", "<!-- accuracy-table:end -->"
ORDER = ("trec", "emotion", "sst2")


def _pct(row: dict | None, f1: bool = False) -> str:
    if not row or row.get("test_acc") is None:
        return "–"
    text = f"{100 * row['test_acc']:.1f} %"
    if f1 and row.get("test_macro_f1") is not None:
        text += f" (F1 {100 * row['test_macro_f1']:.1f})"
    return text


def _ratio(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def _ft_cell(row: dict | None, ft: dict | None, f1: bool) -> str:
    """Fine-tuning's accuracy with what it cost: rows, epochs (best), wall time, device."""
    if not row or not ft:
        return "–"
    rows = ft.get("finetune_rows", ft.get("train_size"))
    when = f", measured {ft['measured_on'][:10]}" if ft.get("measured_on") else ""
    return (f"{_pct(row, f1)} ({rows:,} rows, {ft['epochs_run']} ep. (best {ft['best_epoch']}), "
            f"{ft['train_seconds']:.0f} s {ft.get('device', 'cpu')}{when})")


def _gap(d: dict) -> str:
    g = (d.get("gap") or {}).get("gap_closed")
    if g is None:
        return "–"
    ft = (d.get("finetune") or {}).get("full") or {}
    rows = ft.get("finetune_rows", ft.get("train_size"))
    weak = "" if rows == d["split_sizes"]["train"] else f" (vs a {rows:,}-row fine-tune)"
    return f"{g:.2f}{weak}"


def summary_table(result: dict) -> str:
    mach = result["machine"]
    lines = [
        "| dataset | last layer [CLS] | last layer mean | selected | fine-tuned, full depth | "
        "fine-tuned, truncated | gap closed | training time vs fine-tuning (wall; CPU) | host latency vs full depth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes, full_rows = [], True
    for name in [n for n in ORDER if n in result["datasets"]]:
        d = result["datasets"][name]
        rows = {r["row"]: r for r in d["rows"]}
        sel = rows.get("selected, no budget")
        ft_full, ft_trunc = rows.get("fine-tuning, full depth"), rows.get("fine-tuning, truncated")
        f1 = name == "emotion"
        sizes = d["split_sizes"]
        lat = "–"
        if sel and sel.get("latency_ratio_vs_full_depth") is not None:
            lat = f"{sel['latency_ratio_vs_full_depth']:.2f} ({sel['latency_source']})"
        trunc_depth = f" (depth {ft_trunc['depth']})" if ft_trunc else ""
        lines.append(
            f"| {name} ({sizes['train']:,} / {sizes['validation']:,} / {sizes['test']:,}) | {_pct(rows.get('last layer [CLS] + softmax'), f1)} "
            f"| {_pct(rows.get('last layer mean + softmax'), f1)} "
            f"| **{_pct(sel, f1)}** ({sel['candidate'] if sel else ''}, depth {sel['depth'] if sel else '–'}) "
            f"| {_ft_cell(ft_full, (d.get('finetune') or {}).get('full'), f1)} "
            f"| {_ft_cell(ft_trunc, (d.get('finetune') or {}).get('truncated'), f1)}{trunc_depth} "
            f"| {_gap(d)} "
            f"| {_ratio(sel and sel.get('train_ratio_vs_finetune'))}; {_ratio(sel and sel.get('train_cpu_ratio_vs_finetune'))} "
            f"| {lat} |")
        if ft_full:
            notes.append(f"{name}: fine-tuning on {ft_full['train_note']}")
            ft = (d.get("finetune") or {}).get("full") or {}
            full_rows &= ft.get("finetune_rows", ft.get("train_size")) == sizes["train"]
    lines += [
        "",
        f"Machine `{mach['hostname']}` ({mach['cpu']}, {mach['cores']} cores), {result['created_at'][:10]}, "
        f"`{result['command']}`; per-dataset commands, every row and the plots: "
        "[docs/results.md](docs/results.md). Fine-tuning (" + "; ".join(notes) + ")"
        + (" uses every training row" if full_rows else
           " is on every training row only where the row count equals train's; a subsampled one is a "
           "weak baseline and its gap closed is marked") + ". Gap closed = (selected − last-layer "
        "[CLS]) / (fine-tuned − last-layer [CLS]) on test accuracy (benchmarks/gap.py; the issue's bar "
        "is 0.6); the training-time ratio compares the selected candidate's feature extraction plus "
        "whole search with fine-tuning at full depth.",
    ]
    return "\n".join(lines)


def update_readme(readme: Path, result: dict) -> bool:
    """Replace the text between the markers; False (and nothing written) if they are missing."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{summary_table(result)}\n{END}{tail}", encoding="utf-8")
    return True
