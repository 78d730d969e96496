"""report.md: what was selected, against the baseline, and why."""

from __future__ import annotations


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
        + f". {board['n_candidates']} candidates fitted in {board['search_seconds']:.1f} s on cached features.",
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
    wins = {}
    for c in board["candidates"]:
        for dim in ("head", "combine"):
            wins.setdefault((dim, c[dim]), []).append(c["val_acc"])
    lines += ["## Which families win", "", "| dimension | value | best val % | median val % |", "|---|---|---|---|"]
    for (dim, val), accs in sorted(wins.items()):
        accs.sort()
        lines.append(f"| {dim} | {val} | {_pct(accs[-1])} | {_pct(accs[len(accs) // 2])} |")
    return "\n".join(lines) + "\n"
