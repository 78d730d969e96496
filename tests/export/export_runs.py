"""Runs the export tests build on: a search in its own CODESIGN_HOME (module-scoped fixtures
cannot use the function-scoped monkeypatch, so the variable is restored by a MonkeyPatch
context), and the candidates whose heads it kept for export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolchain.flows.run import RunConfig, run


def run_in_home(home: Path, model: Path, spec: Path, *, max_combinations: int = 2,
                heads: tuple[tuple[str, int], ...] = (("softmax", 3),)) -> Path:
    """``home/run``: a search of ``model`` on ``spec`` with CODESIGN_HOME set to ``home``."""
    run_dir = home / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODESIGN_HOME", str(home))
        run(RunConfig(models=(str(model),), dataset=str(spec), max_combinations=max_combinations,
                      heads=heads, run_dir=str(run_dir)))
    return run_dir


def kept_candidates(run_dir: Path) -> list[dict]:
    """Leaderboard entries whose fitted head was saved (only those can be exported)."""
    board = json.loads((run_dir / "leaderboard.json").read_text())
    return [c for c in board["candidates"] if (run_dir / "heads" / f"{c['id']}.safetensors").is_file()]
