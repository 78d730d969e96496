"""The malformed-input harness behind docs/reliability.md.

Each area of codesign contributes a list ``CASES`` of :class:`Case` in its own module
``tests/reliability/cases_<area>.py`` (a top-level module name, like the other test helpers). ``test_reliability_table.py`` runs every case in a fresh
folder and writes the table: the command a user typed, the one-line error they got, and what was
left behind (which must be nothing, or a resumed/rolled-back state the case checks itself).

A case passes only if codesign answered with a ``CodesignError`` turned into one line by the CLI
(``error: ...``, non-zero exit, no traceback), and the case's own check of the disk holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FAMILIES = (
    "dataset spec",
    "dataset file",
    "target file",
    "CLI option",
    "model folder",
    "run directory",
    "bundle",
    "serial reply",
    "interrupted work",
)


@dataclass(frozen=True)
class Outcome:
    """What the user saw (``message``: the one line) and what stayed on disk."""

    message: str
    left_behind: str = "nothing"


@dataclass(frozen=True)
class Case:
    """One malformed input. ``run(tmp)`` performs it in an empty folder and returns the
    :class:`Outcome`; it raises ``AssertionError`` when codesign misbehaved."""

    family: str
    what: str
    command: str
    run: Callable[[Path], Outcome]

    def __post_init__(self):
        assert self.family in FAMILIES, f"unknown family {self.family!r}; use one of {FAMILIES}"


def cli_error(args: list, *, expect: str | None = None, env: dict | None = None,
              input: str | None = None) -> str:
    """Run ``codesign ARGS`` in-process and return its one-line error.

    Fails unless the command exited non-zero through the CLI's error handler: a ``SystemExit``,
    stderr one line starting ``error:``, no traceback anywhere. ``expect`` must occur in it."""
    from click.testing import CliRunner

    from toolchain.cli import main

    runner = CliRunner()
    result = runner.invoke(main, [str(a) for a in args], env=env, input=input,
                           catch_exceptions=True)
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{out}"
    )
    assert result.exit_code not in (0, None), f"exit 0 on a bad input:\n{out}"
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    # click's own usage errors (exit 2) print "Usage: ..." then "Error: ..."; keep that one line.
    errs = [ln for ln in lines if ln.lower().startswith("error:")]
    assert len(errs) == 1, f"expected one 'error:' line on stderr, got:\n{result.stderr}"
    message = errs[0]
    assert "\u200b" not in message and "\ufeff" not in message, repr(message)
    if expect is not None:
        assert expect.lower() in message.lower(), f"{expect!r} not in {message!r}"
    return message


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size: compare before/after for 'nothing left'."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            out[str(p.relative_to(folder))] = p.stat().st_size
    return out


def left_behind(before: dict[str, int], after: dict[str, int], ignore: tuple[str, ...] = ()) -> str:
    """'nothing' when ``after`` adds no file to ``before`` (bar ``ignore`` prefixes); otherwise
    raises AssertionError naming what was left."""
    new = sorted(k for k in after if k not in before and not k.startswith(ignore))
    assert not new, f"left behind: {new[:10]}"
    return "nothing"


def fixtures():
    """tests/conftest.py's helpers (save_tiny_bert, write_toy_dataset, ...), loaded by path: the
    module name ``conftest`` belongs to pytest."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("_codesign_test_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
