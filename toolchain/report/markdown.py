"""report.md: what was selected, against the baseline, and why."""

from __future__ import annotations

from .mcu import render_mcu


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _row(c: dict) -> str:
    layers = ",".join(map(str, c["layers"]))
    cost = c["cost"]
    return (f"| `{c['id']}` | {c['depth']} | {layers} | {c['combine']} | {c['pooling']} | "
            f"{c['head']}-{c['head_size']} | {c['precision']} | {_pct(c['val_acc'])} | "
            f"{_pct(c.get('test_acc'))} | {cost['latency_ms']:.2f} ({cost['source']}) | "
            f"{cost['model_bytes'] / 2**20:.1f} |")


HEADER = ("| id | depth | layers | combine | pooling | head | precision | val % | test % | "
          "latency ms | model MB |\n|---|---|---|---|---|---|---|---|---|---|---|")


def render_report(board: dict) -> str:
    cands = {c["id"]: c for c in board["candidates"]}
    sel = cands[board["selected"]]
    base = board["baseline"]
    best_val = max(c["val_acc"] for c in board["candidates"])
    lines = [
        f"# codesign run: {board['dataset']} on {board['target']}",
        "",
        f"Backbone: {board['model']}. Splits: "
        + ", ".join(f"{k} {v}" for k, v in board["split_sizes"].items())
        + (" (validation carved from train, stratified)" if board["validation_carved"] else "")
        + f". {board['n_candidates']} candidates fitted in {board['search_seconds']:.1f} s on cached features"
        + _screening_note(board.get("screening")) + ".",
        "",
        "## Selected",
        "",
        f"`{sel['id']}`: layers {sel['layers']} ({sel['combine']}, {sel['pooling']} pooling), "
        f"{sel['head']} head, depth {sel['depth']}, {sel['precision']}.",
        "",
        f"- validation accuracy {_pct(sel['val_acc'])} % (best of all candidates: {_pct(best_val)} %)",
        f"- test accuracy {_pct(sel.get('test_acc'))} % vs baseline {_pct(base['test_acc'])} % "
        f"(last layer [CLS] + softmax regression, depth {base['depth']})",
        f"- cost on {board['target']}: {sel['cost']['latency_ms']:.2f} ms ({sel['cost']['source']}), "
        f"{sel['cost']['model_bytes'] / 2**20:.1f} MB",
        "",
    ]
    infeasible = [c for c in board["candidates"] if not c["feasible"]]
    if infeasible:
        lines += [f"{len(infeasible)} candidates are over budget, e.g. `{infeasible[0]['id']}`: "
                  + "; ".join(infeasible[0]["infeasible_reasons"]), ""]
    lines += ["## Pareto front (validation accuracy vs latency)", "", HEADER]
    front = sorted((c for c in board["candidates"] if c["pareto"]), key=lambda c: c["cost"]["latency_ms"])
    lines += [_row(c) for c in front]
    lines += ["", "## Accuracy per layer (softmax regression)", "", "![per layer](per_layer.png)", "",
              "| layer | " + " | ".join(sorted({r["pooling"] for r in board["per_layer"]})) + " |"]
    poolings = sorted({r["pooling"] for r in board["per_layer"]})
    lines.append("|---" * (len(poolings) + 1) + "|")
    by_layer: dict[int, dict[str, float]] = {}
    for r in board["per_layer"]:
        by_layer.setdefault(r["layer"], {})[r["pooling"]] = r["val_acc"]
    for layer in sorted(by_layer):
        lines.append(f"| {layer} | " + " | ".join(_pct(by_layer[layer].get(p)) for p in poolings) + " |")
    lines += ["", "## Accuracy vs cost", "", "![pareto](pareto.png)", ""]
    lines += render_selections(board)
    for summary in board.get("mcu", {}).values():
        lines += render_mcu(summary)
    lines += render_op_profiles(board)
    wins = {}
    for c in board["candidates"]:
        for dim in ("head", "combine"):
            wins.setdefault((dim, c[dim]), []).append(c["val_acc"])
    lines += ["## Which families win", "", "| dimension | value | best val % | median val % |", "|---|---|---|---|"]
    for (dim, val), accs in sorted(wins.items()):
        accs.sort()
        lines.append(f"| {dim} | {val} | {_pct(accs[-1])} | {_pct(accs[len(accs) // 2])} |")
    return "\n".join(lines) + "\n"


def render_op_profiles(board: dict) -> list[str]:
    """"Where the time goes": ONNX Runtime's kernel profile per layer and op type of every
    candidate profiled with ``codesign profile --op-profile``, per target."""
    from ..profiling.op_profile import render_table

    lines: list[str] = []
    for target, profiles in sorted(board.get("op_profiles", {}).items()):
        for cid, profile in sorted(profiles.items()):
            if not lines:
                lines += ["## Where the time goes (ONNX Runtime profile)", ""]
            lines += [f"`{cid}` on {target}:", "", "```", render_table(profile), "```", ""]
    return lines


def render_selections(board: dict) -> list[str]:
    """One line per target's selection, then each target's co-design loop."""
    sels = board.get("selections") or {}
    if not sels:
        return []
    cands = {c["id"]: c for c in board["candidates"]}
    lines = ["## Selection per target", "",
             "| target | spec hash | candidate | precision | val % | latency ms | source |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(sels):
        s = sels[key]
        lat = s.get("latency_ms")
        src = s["source"] + (" (emulated)" if s.get("emulated") else "")
        base = cands.get(s.get("base_id") or s["candidate_id"], {})
        val = s.get("val_acc", base.get("val_acc"))
        lines.append(f"| {s['target']} | `{str(s.get('target_hash'))[:12]}` | `{s['candidate_id']}` | "
                     f"{s.get('precision') or base.get('precision', '—')} | {_pct(val)} | "
                     f"{'—' if lat is None else f'{lat:.2f}'} | {src} |")
    lines.append("")
    for key in sorted(sels):
        if sels[key].get("loop"):
            lines += render_loop(sels[key]["loop"])
    return lines


def render_loop(loop: dict) -> list[str]:
    """Predicted vs measured for every measured candidate, and the cost model's error."""
    rows = {r["id"]: r for r in loop["variants"]}
    sel = rows.get(loop.get("selected") or "")
    lines = [f"## Co-design loop on {loop['target']}", ""]
    budgets = {k: v for k, v in loop["budgets"].items() if v}
    lines.append(f"{len(loop['rounds'])} round(s); budgets: {budgets or 'none'}.")
    if sel is not None:
        m = sel.get("measured")
        how = (f"measured {m['latency_ms_median']:.2f} ms median" if m else
               f"predicted {sel['cost']['latency_ms']:.2f} ms")
        test = loop.get("selected_test_acc")
        lines.append(
            f"Selected `{sel['id']}` (depth {sel['depth']}, {sel['precision']}): val {_pct(sel['val_acc'])} % "
            f"({sel['acc_source']}), test {_pct(test)} %, {how}"
            + (" (emulated)" if sel["cost"]["emulated"] else "") + ".")
        gap = loop["best_val_acc"] - sel["val_acc"]
        lines.append(f"Accuracy cost against the unconstrained best validation accuracy: {100 * gap:.1f} points.")
    lines += ["", "| id | depth | precision | val % | predicted before ms | measured median ms | "
              "p10–p90 ms | refit prediction ms |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows.values(), key=lambda r: r["cost"]["latency_ms"]):
        if "measured" not in r:
            continue
        m = r["measured"]
        spread = m["spread_ms_p10_p90"] or [float("nan")] * 2
        before = r.get("predicted_before_ms")
        lines.append(f"| `{r['id']}` | {r['depth']} | {r['precision']} | {_pct(r['val_acc'])} | "
                     f"{'—' if before is None else f'{before:.2f}'} | {m['latency_ms_median']:.2f} | "
                     f"{spread[0]:.2f}–{spread[1]:.2f} | {r['predicted_after_ms']:.2f} |")
    for key, title in (("prediction_before_measuring", "before measuring (analytic or earlier fit)"),
                       ("prediction_after_loop", "after the loop (refitted on all records)")):
        rep = loop.get(key)
        if rep:
            tau = rep.get("kendall_tau")
            lines.append(f"\nCost model {title}: {100 * rep['within_10pct']:.0f}% within ±10%, "
                         f"{100 * rep['within_15pct']:.0f}% within ±15%, Kendall τ "
                         f"{'n/a' if tau is None else f'{tau:.2f}'} over {rep['n']} candidates.")
    return lines + [""]


def _screening_note(screening: dict | None) -> str:
    if not screening:
        return ""
    return (f" (successive halving: all {screening['screened']} scored after a fit on {screening['rows']:,} "
            f"training rows in {screening['screen_seconds']:.0f} s, the best {screening['promoted']} "
            f"refitted on every row in {screening['full_seconds']:.0f} s; only full fits are ranked)")
