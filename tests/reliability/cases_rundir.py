"""Malformed and half-written run directories, through `codesign show` and `codesign profile`.

A run is read only through ``toolchain.rundir.RunDir``: anything it cannot trust is one line
naming the file and the fix, and a run whose search was killed is never taken as finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, fixtures, left_behind, snapshot

_ROOT = Path(__file__).resolve().parents[2]


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _run_with(tmp: Path, content: bytes) -> Path:
    run = tmp / "run"
    run.mkdir()
    (run / "leaderboard.json").write_bytes(content)
    (run / "COMPLETE").write_text("complete\n")
    return run


def _bad_leaderboard(content: bytes, expect: str, command: str = "show"):
    def case(tmp: Path) -> Outcome:
        run = _run_with(tmp, content)
        before = snapshot(tmp), snapshot(_home())
        args = ["show", run] if command == "show" else ["profile", "--target", "host", "--run-dir", run]
        msg = cli_error(args, expect=expect)
        left_behind(before[0], snapshot(tmp))
        return Outcome(msg, left_behind(before[1], snapshot(_home())))

    return case


def _valid_board() -> dict:
    from toolchain.search.candidate import Candidate

    c = Candidate("tiny", (1,), "single", "mean", "softmax", 0)
    entry = {"id": c.id, **c.to_dict(), "val_acc": 0.9,
             "cost": {"latency_ms": 1.0, "model_bytes": 1, "source": "analytic"}}
    return {"schema": 2, "dataset": "toy", "dataset_fingerprint": "f" * 16, "label_names": ["a", "b"],
            "models": {"tiny": {"path": "x"}}, "config": {"dataset": "toy"}, "candidates": [entry],
            "selected": c.id, "target": "host", "baseline": {"id": c.id}, "selections": {}}


def _newer_schema(tmp: Path) -> Outcome:
    board = dict(_valid_board(), schema=99)
    return _bad_leaderboard(json.dumps(board).encode(), "newer codesign")(tmp)


def _wrong_type(tmp: Path) -> Outcome:
    board = dict(_valid_board(), candidates={"not": "a list"})
    return _bad_leaderboard(json.dumps(board).encode(), "'candidates' is a dict")(tmp)


def _no_marker(tmp: Path) -> Outcome:
    run = tmp / "run"
    run.mkdir()
    (run / "leaderboard.json").write_text(json.dumps(_valid_board()))  # no COMPLETE: killed
    before = snapshot(tmp), snapshot(_home())
    msg = cli_error(["show", run], expect="incomplete run")
    left_behind(before[0], snapshot(tmp))
    return Outcome(msg, left_behind(before[1], snapshot(_home())))


_KILL_AT_PLOTS = textwrap.dedent("""
    import os, signal, sys
    import toolchain.report.write as write
    def killed(*a, **k):  # the search is done, its leaderboard written: die before the plots
        os.kill(os.getpid(), signal.SIGKILL)
    write.plot_per_layer = killed
    from toolchain.cli import main
    sys.argv = ["codesign"] + sys.argv[1:]
    main()
""")


def _search_killed(tmp: Path) -> Outcome:
    """A real `codesign run` SIGKILLed after its leaderboard, before its report: the run is
    refused by `show` and skipped as "latest" by `profile`; nothing else was written."""
    fx = fixtures()
    model = fx.save_tiny_bert(tmp / "model", n_layers=2)
    spec = fx.write_toy_dataset(tmp / "data")
    env = dict(os.environ, PYTHONPATH=str(_ROOT), CODESIGN_NO_PROGRESS="1")
    run = _home() / "runs" / "killed"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT_PLOTS, "run", "--dataset", str(spec), "--model", str(model),
         "--max-candidates", "4", "--run-dir", str(run)],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-2000:])
    assert (run / "leaderboard.json").is_file() and not (run / "COMPLETE").exists()
    shown = cli_error(["show", run], expect="incomplete run")
    before = snapshot(_home())
    cli_error(["profile", "--target", "host"], expect="no run")  # the killed one is not "latest"
    left_behind(before, snapshot(_home()))
    return Outcome(shown, "the killed run's leaderboard, without its COMPLETE marker: never "
                          "shown, profiled or bundled as finished")


CASES = [
    Case("run directory", "leaderboard.json that is {}", "codesign show RUN",
         _bad_leaderboard(b"{}", "missing")),
    Case("run directory", "leaderboard.json that is []", "codesign show RUN",
         _bad_leaderboard(b"[]", "JSON list")),
    Case("run directory", "leaderboard.json that is not UTF-8", "codesign show RUN",
         _bad_leaderboard(b"\xff\xfe{}", "not UTF-8")),
    Case("run directory", "leaderboard.json that is {}, profiled", "codesign profile --target host --run-dir RUN",
         _bad_leaderboard(b"{}", "missing", command="profile")),
    Case("run directory", "leaderboard.json that is [], profiled", "codesign profile --target host --run-dir RUN",
         _bad_leaderboard(b"[]", "JSON list", command="profile")),
    Case("run directory", "leaderboard.json not UTF-8, profiled", "codesign profile --target host --run-dir RUN",
         _bad_leaderboard(b"\xff\xfe{}", "not UTF-8", command="profile")),
    Case("run directory", "truncated JSON", "codesign show RUN",
         _bad_leaderboard(b'{"schema": 2, "candid', "corrupt JSON")),
    Case("run directory", "a leaderboard from a newer codesign", "codesign show RUN", _newer_schema),
    Case("run directory", "'candidates' of the wrong type", "codesign show RUN", _wrong_type),
    Case("run directory", "no COMPLETE marker (a killed search)", "codesign show RUN", _no_marker),
    Case("interrupted work", "codesign run killed (SIGKILL) after its leaderboard, before its report",
         "codesign run ...; kill -9; codesign show RUN; codesign profile", _search_killed),
]
