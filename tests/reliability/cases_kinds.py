"""Target kinds (boards/registry.py): a target file naming no known kind, a kind name that is not
a name, a kind without the verb asked for, and a third-party entry point that does not load.
Each is one line naming the kind and what is allowed; nothing is written anywhere."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot

_BODY = 'arch = "x86_64"\n[[runtimes]]\nname = "onnxruntime"\n'


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _checked(tmp: Path, args: list, expect: str, *also: str) -> Outcome:
    before, home_before = snapshot(tmp), snapshot(_home())
    msg = cli_error(args, expect=expect)
    for text in also:
        assert text in msg, msg
    left = left_behind(before, snapshot(tmp))
    left_behind(home_before, snapshot(_home()))
    return Outcome(msg, left)


def _target_file(tmp: Path, kind: str) -> Path:
    path = tmp / "board.toml"
    path.write_text(f'kind = "{kind}"\n' + _BODY, encoding="utf-8")
    return path


def _unknown(tmp: Path) -> Outcome:
    path = _target_file(tmp, "acme")
    return _checked(tmp, ["profile", "--target", path], "key 'kind' is 'acme'", "board.toml",
                    "'fake'", "'local'", "codesign.target_kinds")


def _not_a_name(tmp: Path) -> Outcome:
    path = _target_file(tmp, "Acme Boards")
    return _checked(tmp, ["targets", "show", path], "use a kind name", "board.toml")


def _no_deploy(tmp: Path) -> Outcome:
    from toolchain.boards import registry
    from toolchain.boards.base import Reachability, Target
    from toolchain.config import target_spec

    class Probe(Target):
        def reachability(self):
            return Reachability(True, "always")

    registry.register_kind("probe-only")(Probe)
    try:
        path = _target_file(tmp, "probe-only")
        (tmp / "bundle").mkdir()
        return _checked(tmp, ["deploy", "--target", path, "--bundle", tmp / "bundle"],
                        "(kind 'probe-only') cannot deploy a bundle; this kind supports: none")
    finally:
        registry._KINDS.pop("probe-only", None)
        target_spec._DECLARED_KINDS.discard("probe-only")


def _broken_entry_point(tmp: Path) -> Outcome:
    site = tmp / "site"
    (site / "broken_boards").mkdir(parents=True)
    (site / "broken_boards" / "__init__.py").write_text("import no_such_module_here\n")
    info = site / "broken_boards-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken_boards\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[codesign.target_kinds]\nbroken = broken_boards\n")
    path = _target_file(tmp, "broken")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # the case's own files
    try:
        return _checked(tmp, ["status", "--target", path], "entry point 'broken = broken_boards'",
                        "does not load", "no_such_module_here")
    finally:
        sys.dont_write_bytecode = bytecode
        sys.path.remove(str(site))
        sys.modules.pop("broken_boards", None)
        importlib.invalidate_caches()


CASES = [
    Case("target file", "a kind no registry knows", "codesign profile --target board.toml",
         _unknown),
    Case("target file", "a kind that is not a name", "codesign targets show board.toml",
         _not_a_name),
    Case("target file", "a kind without a deploy verb",
         "codesign deploy --target board.toml --bundle bundle", _no_deploy),
    Case("target file", "a kind whose entry point does not import",
         "codesign status --target board.toml", _broken_entry_point),
]
