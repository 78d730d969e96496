"""Malformed many-board profiles (``codesign profile --target A --target B``): refused before any
board is opened or any run looked up, as one `error:` line, leaving nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot


def _refused(args: list[str], expect: str, files: dict[str, str] | None = None):
    def run(tmp: Path) -> Outcome:
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        home = Path(os.environ["CODESIGN_HOME"])
        before, home_before = snapshot(tmp), snapshot(home)
        msg = cli_error(args, expect=expect)
        left = left_behind(before, snapshot(tmp))
        left_behind(home_before, snapshot(home))
        return Outcome(msg, left)

    return run


def _host_named(name: str) -> str:
    from toolchain.paths import targets_dir

    # Top-level keys first: the name goes before host.toml's first table.
    return f'name = "{name}"\n' + (targets_dir() / "host.toml").read_text()


CASES = [
    Case("CLI option", "the same board twice in one profile", "codesign profile --target host --target host",
         _refused(["profile", "--target", "host", "--target", "host"], "two targets are named 'host'")),
    Case("CLI option", "an unknown board among several", "codesign profile --target host --target no-such-board",
         _refused(["profile", "--target", "host", "--target", "no-such-board"], "no-such-board")),
    Case("target file", "two target files naming one board", "codesign profile --target a.toml --target b.toml",
         _refused(["profile", "--target", "a.toml", "--target", "b.toml"], "two targets are named 'twin'",
                  files={"a.toml": _host_named("twin"), "b.toml": _host_named("twin")})),
]
