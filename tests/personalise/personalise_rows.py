"""Example rows for the personalisation tests (a module of its own: ``from conftest import``
would find whichever conftest.py was imported first under that name)."""

from __future__ import annotations

import json
from pathlib import Path

# A class the session's bundles have never seen: its own words, so that even the tiny random
# encoder's features tell it apart (as tests/conftest.py's toy classes are told apart).
_NEW = ("blue", "green", "purple", "orange", "yellow", "violet", "teal", "crimson")


def new_class_rows(n: int, offset: int = 0) -> list[tuple[str, str]]:
    return [(f"paint it {_NEW[i % len(_NEW)]} {_NEW[(i + 5) % len(_NEW)]} please", "colour")
            for i in range(offset, offset + n)]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path
