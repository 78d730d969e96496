"""Where codesign keeps its files: one environment variable per root, so tests can redirect them."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def codesign_home() -> Path:
    """The data directory: caches, runs, the measurement database.

    ``CODESIGN_HOME`` overrides the per-user default (``$XDG_DATA_HOME/codesign``).
    """
    env = os.environ.get("CODESIGN_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "codesign"


def data_dir() -> Path | None:
    """The directory holding the preset datasets, or None when there is none.

    ``CODESIGN_DATA`` wins; otherwise ``../shared/data`` beside the project when it exists.
    """
    env = os.environ.get("CODESIGN_DATA")
    if env:
        return Path(env).expanduser()
    for candidate in (PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None


def targets_dir() -> Path:
    """The directory of target TOML files (``CODESIGN_TARGETS`` overrides)."""
    env = os.environ.get("CODESIGN_TARGETS")
    if env:
        return Path(env).expanduser()
    return PROJECT_ROOT / "targets"


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
