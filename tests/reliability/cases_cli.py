"""Malformed CLI options: each is refused at the edge, before any work, as one `error:` line
(click's own three-line usage errors included), and leaves nothing in the folder or in
$CODESIGN_HOME."""

from __future__ import annotations

import os
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _refused(args: list[str], expect: str):
    """A case: ``codesign ARGS`` fails with one line containing ``expect``; nothing is written."""

    def run(tmp: Path) -> Outcome:
        before, home_before = snapshot(tmp), snapshot(_home())
        msg = cli_error(args, expect=expect)
        assert not msg.lower().startswith("error: usage"), msg
        left = left_behind(before, snapshot(tmp))
        left_behind(home_before, snapshot(_home()))
        return Outcome(msg, left)

    return run


def _case(what: str, args: list[str], expect: str) -> Case:
    return Case("CLI option", what, "codesign " + " ".join(args), _refused(args, expect))


CASES = [
    _case("an unknown target name", ["targets", "show", "no-such-board"], "no-such-board"),
    _case("a max length of 0 (ran untruncated)", ["run", "--max-length", "0"], "--max-length"),
    _case("a negative max length (overflowed)", ["run", "--max-length", "-5"], "-5"),
    _case("a negative latency budget (was ignored)", ["run", "--max-latency-ms", "-1"], "--max-latency-ms"),
    _case("a latency budget of nan", ["search", "--max-latency-ms", "nan"], "finite"),
    _case("a negative candidate count (ValueError)", ["run", "--max-candidates", "-1"], "--max-candidates"),
    _case("a negative tolerance (ValueError)", ["run", "--tolerance", "-50"], "--tolerance"),
    _case("0 examples per class (used every row)", ["run", "--max-per-class", "0"], "--max-per-class"),
    _case("a negative seed", ["run", "--seed", "-1"], "--seed"),
    _case("--seed on a command without one", ["extract", "--seed", "1"], "no such option"),
    _case("a seed outside numpy's range", ["run", "--seed", "4294967296"], "--seed"),
    _case("an unknown target before any run exists", ["profile", "--target", "no-such-board"],
          "no-such-board"),
    _case("more passes than iterations", ["profile", "--passes", "100", "--iterations", "60"], "--passes 100"),
    _case("an unknown precision", ["profile", "--precision", "int4"], "int4"),
    _case("0 timed iterations", ["profile", "--iterations", "0"], "--iterations"),
    _case("an unknown results format", ["results", "--format", "xml"], "xml"),
    _case("a learning rate of 0", ["baseline", "finetune", "--lr", "0"], "--lr"),
    _case("an unknown torch device", ["baseline", "finetune", "--device", "gpu"], "gpu"),
    _case("a mistyped option", ["run", "--max-lenght", "64"], "--max-lenght"),
]
