"""Plots people would rather look at than read: accuracy per layer, and the Pareto front."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_layer(board: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for row in board["per_layer"]:
        series.setdefault((row["backbone"], row["pooling"]), []).append((row["layer"], row["val_acc"]))
    for (backbone, pooling), pts in sorted(series.items()):
        pts.sort()
        label = pooling if len({b for b, _ in series}) == 1 else f"{backbone} / {pooling}"
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=label)
    base = board["baseline"]
    ax.axhline(100 * base["val_acc"], color="grey", ls="--", lw=1, label="baseline (last [CLS])")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{board['dataset']}: accuracy per layer, softmax regression")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_pareto(board: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    cands = board["candidates"]
    xs = [c["cost"]["latency_ms"] for c in cands]
    ys = [100 * c["val_acc"] for c in cands]
    colors = ["tab:blue" if c["feasible"] else "lightgrey" for c in cands]
    ax.scatter(xs, ys, s=8, c=colors, alpha=0.5, label="candidates")
    front = sorted((c for c in cands if c["pareto"]), key=lambda c: c["cost"]["latency_ms"])
    ax.plot([c["cost"]["latency_ms"] for c in front], [100 * c["val_acc"] for c in front],
            color="tab:orange", marker="o", ms=4, label="Pareto front")
    sel = next(c for c in cands if c["id"] == board["selected"])
    ax.scatter([sel["cost"]["latency_ms"]], [100 * sel["val_acc"]], marker="*", s=180, color="tab:red",
               zorder=5, label=f"selected (depth {sel['depth']})")
    base = board["baseline"]
    ax.scatter([base["cost"]["latency_ms"]], [100 * base["val_acc"]], marker="x", s=70, color="black",
               zorder=5, label="baseline (last [CLS])")
    sources = {c["cost"]["source"] for c in cands}
    ax.set_xlabel(f"latency on {board['target']} (ms, {'/'.join(sorted(sources))})")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{board['dataset']}: accuracy vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
