"""Plots of the accuracy benchmark, drawn from its results JSON alone (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

ORDER = ("trec", "emotion", "sst2")


def _datasets(result: dict) -> list[tuple[str, dict]]:
    return [(n, result["datasets"][n]) for n in ORDER if n in result["datasets"]]


def draw_all(result: dict, folder: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for fn, suffix in ((per_layer, "per-layer"), (pareto, "pareto"), (gap, "gap-to-finetune")):
        path = folder / f"{stem}-{suffix}.png"
        if fn(result, path):
            names.append(path.name)
    return names


def per_layer(result: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    ds = _datasets(result)
    if not ds:
        return False
    fig, axes = plt.subplots(1, len(ds), figsize=(4.2 * len(ds), 3.4), squeeze=False)
    for ax, (name, d) in zip(axes[0], ds, strict=True):
        for pooling, style in (("cls", "o-"), ("mean", "s-")):
            pts = sorted((p["layer"], p["val_acc"]) for p in d["per_layer"] if p["pooling"] == pooling)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{pooling} + softmax")
        ax.axhline(d["majority"]["val_acc"], color="grey", ls=":", label="majority")
        ax.set_title(name)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Accuracy per layer (frozen all-MiniLM-L6-v2, softmax regression)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _front(points):
    """Indices of the (accuracy up, latency down) front, cheapest first."""
    from toolchain.search.select import pareto_front

    flags = pareto_front(points)
    return sorted((i for i, f in enumerate(flags) if f), key=lambda i: points[i][1])


def pareto(result: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    ds = _datasets(result)
    if not ds:
        return False
    fig, axes = plt.subplots(1, len(ds), figsize=(4.6 * len(ds), 3.8), squeeze=False)
    for ax, (name, d) in zip(axes[0], ds, strict=True):
        cands = [c for c in d["candidates"] if c.get("latency_ms")]
        pts = [(c["val_acc"], c["latency_ms"]) for c in cands]
        meas = [c["latency_source"] == "measured" for c in cands]
        ax.scatter([p[1] for i, p in enumerate(pts) if not meas[i]], [p[0] for i, p in enumerate(pts) if not meas[i]],
                   s=8, color="#bbb", label="candidate (predicted cost)")
        ax.scatter([p[1] for i, p in enumerate(pts) if meas[i]], [p[0] for i, p in enumerate(pts) if meas[i]],
                   s=14, color="#555", label="candidate (measured)")
        front = _front(pts)
        ax.plot([pts[i][1] for i in front], [pts[i][0] for i in front], "-", color="C0", label="Pareto front")
        for r, marker, color in (("last layer [CLS] + softmax", "X", "C3"), ("last layer mean + softmax", "P", "C1"),
                                 ("selected, no budget", "*", "C2")):
            row = next((x for x in d.get("rows", []) if x["row"] == r), None)
            if row and row.get("host_latency_ms") and row.get("val_acc") is not None:
                ax.scatter([row["host_latency_ms"]], [row["val_acc"]], marker=marker, s=90, color=color, label=r,
                           zorder=5)
        h = d.get("host_selected")
        if h and h.get("latency_ms"):
            ax.scatter([h["latency_ms"]], [h["val_acc"]], marker="D", s=60, color="C4", zorder=5,
                       label=f"selected ≤ {d['host_budget_ms']:.1f} ms ({h['precision']})")
            ax.axvline(d["host_budget_ms"], color="C4", ls="--", lw=0.8)
        for key, marker in (("full", "^"), ("truncated", "v")):
            f = (d.get("finetune") or {}).get(key)
            row = next((x for x in d.get("rows", []) if x["row"].startswith("fine-tuning") and key in x["row"]), None)
            if f and row and row.get("host_latency_ms"):
                ax.scatter([row["host_latency_ms"]], [f["val_acc"]], marker=marker, s=70, color="k", zorder=5,
                           label=f"fine-tuned ({key}, depth {f['depth']})")
        ax.axhline(d["majority"]["val_acc"], color="grey", ls=":", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("host latency, ms (batch 1, 1 thread)")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("Accuracy vs latency on the host; baselines marked", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def gap(result: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    ds = [(n, d) for n, d in _datasets(result) if (d.get("finetune") or {}).get("full")]
    if not ds:
        return False
    labels = ["last layer [CLS] + softmax", "last layer mean + softmax", "best single layer", "best combination",
              "selected, no budget", "fine-tuning, truncated"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        xs, ys = [], []
        for i, (_, d) in enumerate(ds):
            ft = d["finetune"]["full"]["test_acc"]
            row = next((r for r in d["rows"] if r["row"] == lab), None)
            if row and row["test_acc"] is not None:
                xs.append(i + (j - len(labels) / 2 + 0.5) * width)
                ys.append(100 * (row["test_acc"] - ft))
        ax.bar(xs, ys, width, label=lab)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(ds)))
    ax.set_xticklabels([f"{n}\n(FT: {d['finetune']['full']['train_size']} rows)" for n, d in ds])
    ax.set_ylabel("test accuracy − fine-tuned (points)")
    ax.set_title("Gap to full-depth fine-tuning (negative: below it)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
