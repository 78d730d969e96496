"""Render a run directory's report (report.md, per_layer.png, pareto.png) from its leaderboard.

Reading a run goes through :class:`toolchain.rundir.RunDir`; the functions kept here are the
flows' way to save one (leaderboard, report, plots, then the completion marker, last)."""

from __future__ import annotations

from pathlib import Path

from ..features.cache import atomic_write_bytes
from ..rundir import RunDir
from .markdown import render_report
from .plots import plot_pareto, plot_per_layer


def render(run: RunDir) -> None:
    atomic_write_bytes(run.path / "report.md", render_report(run.board).encode())
    plot_per_layer(run.board, run.path / "per_layer.png")
    plot_pareto(run.board, run.path / "pareto.png")


def write_run(run_dir: Path, board: dict) -> None:
    """Save ``board`` as the run at ``run_dir`` and re-render its report."""
    RunDir(Path(run_dir), board).save(render)


def read_leaderboard(run_dir: Path) -> dict:
    """The (validated, migrated) leaderboard of a complete run."""
    return RunDir.open(run_dir).board


def latest_run(home: Path) -> Path | None:
    return RunDir.latest(home)
