"""Malformed labgrid targets (kind = "labgrid", the [labgrid] table) and a missing labgrid: each
is one `error:` line naming the key or the fix, and leaves nothing behind."""

from __future__ import annotations

import sys
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot

_BASE = 'kind = "labgrid"\narch = "aarch64"\n'


def _refused(body: str, expect: str, *, without_labgrid: bool = False):
    def run(tmp: Path) -> Outcome:
        path = tmp / "lab.toml"
        path.write_text(body)
        before = snapshot(tmp)
        saved = sys.modules.get("labgrid", ...)
        if without_labgrid:
            sys.modules["labgrid"] = None  # `import labgrid` raises ImportError, as uninstalled
        try:
            msg = cli_error(["targets", "show", path], expect=expect)
        finally:
            if without_labgrid:
                if saved is ...:
                    sys.modules.pop("labgrid", None)
                else:
                    sys.modules["labgrid"] = saved
        return Outcome(msg, left_behind(before, snapshot(tmp)))

    return run


def _case(what: str, body: str, expect: str, **kw) -> Case:
    return Case("target file", what, "codesign targets show lab.toml", _refused(body, expect, **kw))


CASES = [
    _case("kind labgrid without a [labgrid] target", _BASE + '[labgrid]\nenv = "farm.yaml"\n',
          "labgrid.target"),
    _case("a labgrid place without a coordinator",
          _BASE + '[labgrid]\nenv = "f.yaml"\ntarget = "t"\nplace = "p"\n', "labgrid.coordinator"),
    _case("a labgrid coordinator with a space",
          _BASE + '[labgrid]\nenv = "f.yaml"\ntarget = "t"\ncoordinator = "farm lab"\n',
          "host[:port]"),
    _case("power_cycle_on_hang as a string",
          _BASE + '[labgrid]\nenv = "f.yaml"\ntarget = "t"\npower_cycle_on_hang = "yes"\n',
          "must be a bool"),
    _case("a [labgrid] table on an ssh target",
          'kind = "ssh"\narch = "aarch64"\n[labgrid]\nenv = "f.yaml"\ntarget = "t"\n',
          "'labgrid' with a [labgrid] table"),
    _case("a labgrid target with labgrid not installed",
          _BASE + '[labgrid]\nenv = "f.yaml"\ntarget = "t"\n', "pip install 'codesign[farm]'",
          without_labgrid=True),
]
