"""Write a run directory: leaderboard.json, report.md, per_layer.png, pareto.png."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RunDirError
from ..features.cache import atomic_write_bytes
from .markdown import render_report
from .plots import plot_pareto, plot_per_layer


def write_run(run_dir: Path, board: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "leaderboard.json", json.dumps(board, indent=2).encode())
    atomic_write_bytes(run_dir / "report.md", render_report(board).encode())
    plot_per_layer(board, run_dir / "per_layer.png")
    plot_pareto(board, run_dir / "pareto.png")


def read_leaderboard(run_dir: Path) -> dict:
    path = Path(run_dir) / "leaderboard.json"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no leaderboard.json; run 'codesign run' or 'codesign search' first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}: corrupt JSON ({exc}); rerun 'codesign search'") from exc


def latest_run(home: Path) -> Path | None:
    runs = sorted((p for p in (home / "runs").glob("*") if (p / "leaderboard.json").is_file()),
                  key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None
