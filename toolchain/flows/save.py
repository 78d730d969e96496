"""The flows' one way to change a run directory that others may be changing at the same time.

``codesign profile --target A --target B`` runs a worker per board, and each ends by saving its
board's selection. A worker that saved the leaderboard it read at its start would drop every
selection saved since (and two writers' temp files and plots would collide). So a save holds
the run's lock (threads and processes alike, :func:`toolchain.locks.directory_lock`), reads the
run again, makes its change, writes, and renders the report, before the next one may.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..features.cache import atomic_write_bytes
from ..locks import directory_lock
from ..report.write import render
from ..rundir import RunDir

T = TypeVar("T")


def update_run(run_dir: Path, change: Callable[[RunDir], T]) -> T:
    """Apply ``change`` to the run as it is on disk now, then save it and re-render the
    report, all under the run's lock; returns what ``change`` returned."""
    with directory_lock(Path(run_dir)):
        run = RunDir.open(run_dir)
        out = change(run)
        run.save(render)
        return out


def save_loop(run_dir: Path, spec, summary: dict) -> dict:
    """Record a co-design loop's outcome as ``spec``'s own selection (every other target's
    stays as saved), and its full trace as ``loop-NAME.json``; returns the selection entry."""
    entry = update_run(run_dir, lambda run: run.set_loop(spec, summary))
    atomic_write_bytes(Path(run_dir) / f"loop-{spec.name}.json", json.dumps(summary, indent=2).encode())
    return entry
