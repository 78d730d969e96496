"""Helpers for the end-to-end tests (fixtures live in conftest.py)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest


def saved_heads(run_dir: Path) -> list[str]:
    return sorted(p.stem for p in (run_dir / "heads").glob("*.safetensors"))


def _missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


needs_cc = pytest.mark.skipif(bool(_missing("cc", "make")),
                              reason="the posix firmware needs cc and make (apt-get install gcc make)")
needs_qemu = pytest.mark.skipif(
    bool(_missing("make", "arm-none-eabi-gcc", "qemu-system-arm")),
    reason="mcu-qemu needs arm-none-eabi-gcc and qemu-system-arm "
           "(apt-get install gcc-arm-none-eabi qemu-system-arm)")


def db_record_count(db: Path) -> int:
    """Records in the store, read with a private connection (safe from another thread)."""
    if not db.is_file():
        return 0
    with sqlite3.connect(db, timeout=30) as con:
        try:
            return int(con.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def tiny_flash_target(dest: Path, flash_kb: float) -> Path:
    """targets/mcu-pty.toml with a smaller flash budget, as a user's own target file."""
    from toolchain.paths import PROJECT_ROOT

    text = (PROJECT_ROOT / "targets" / "mcu-pty.toml").read_text()
    old = "flash_kb = 1024  # the posix build's model slot (CS_SLOT_BYTES)"
    assert old in text, "targets/mcu-pty.toml changed; update tiny_flash_target"
    dest.write_text(text.replace(old, f"flash_kb = {flash_kb}"))
    return dest
