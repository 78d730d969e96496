"""``codesign profile``: measure a run's candidates on one board, or on several in parallel.

A board whose kind measures int8 heads (a microcontroller) profiles the run's saved heads on
upstream features; any other board runs the co-design loop (or exactly ``--candidate``s). Each
outcome becomes that target's own selection in the run directory."""

from __future__ import annotations

import json
from pathlib import Path

from ..features.cache import atomic_write_bytes
from ..report.mcu import render_mcu
from ..report.write import render
from ..rundir import RunDir


def _mcu_selection(summary: dict) -> dict | None:
    """The most accurate int8 head that fits (smaller blob on ties), as the target's selection."""
    fits = [r for r in summary["candidates"] if r["feasible"] and r.get("int8_acc") is not None]
    if not fits:
        return None
    best = max(fits, key=lambda r: (r["int8_acc"], -r["blob_bytes"]))
    measured = best.get("instructions_median") is not None
    return {"candidate_id": best["id"], "base_id": best["base_id"], "precision": "int8-head",
            "source": "measured" if measured else "predicted",
            "emulated": bool(summary.get("emulated")),
            "latency_ms": best.get("est_latency_ms_median"), "model_bytes": best["blob_bytes"],
            "val_acc": best.get("int8_acc"), "instructions_median": best.get("instructions_median")}


def profile_mcu(run_dir: Path, target, store, **options) -> dict:
    """Profile saved heads on a microcontroller; save the summary and the target's selection."""
    from ..profiling.mcu import measure_heads

    summary = measure_heads(Path(run_dir), target, store, **options)
    run = RunDir.open(run_dir)
    name = summary["target"]
    atomic_write_bytes(run.path / f"mcu-{name}.json", json.dumps(summary, indent=2).encode())
    atomic_write_bytes(run.path / f"mcu-{name}.md", "\n".join(render_mcu(summary)).encode())
    # The leaderboard keeps it too, so report.md can say which heads fit and why not.
    run.board.setdefault("mcu", {})[name] = summary
    sel = _mcu_selection(summary)
    if sel is not None:
        run.set_selection(target.spec, sel)
    run.save(render)
    return summary
