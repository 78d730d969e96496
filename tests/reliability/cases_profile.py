"""Malformed profile requests and an interrupted profile, through the real CLI.

Every case profiles a copy of one tiny run (a 2-layer random BERT on the toy dataset of
tests/conftest.py), built once per process."""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "profiling") not in sys.path:
    sys.path.insert(0, str(TESTS / "profiling"))

_TEMPLATE: Path | None = None


def _template() -> Path:
    """The tiny run, built once (its own CODESIGN_HOME, removed at exit)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        spec = importlib.util.spec_from_file_location("_codesign_root_conftest", TESTS / "conftest.py")
        helpers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(helpers)
        base = Path(tempfile.mkdtemp(prefix="codesign-cases-profile-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        model = base / "tiny"
        model.mkdir()
        helpers.save_tiny_bert(model)
        data = helpers.write_toy_dataset(base / "toy")
        from toolchain.flows.run import RunConfig, run

        saved = os.environ.get("CODESIGN_HOME")
        os.environ["CODESIGN_HOME"] = str(base / "home")
        try:
            run(RunConfig(models=(str(model),), dataset=str(data), max_combinations=4,
                          heads=(("softmax", 3),), run_dir=str(base / "run")))
        finally:
            if saved is None:
                os.environ.pop("CODESIGN_HOME", None)
            else:
                os.environ["CODESIGN_HOME"] = saved
        _TEMPLATE = base / "run"
    return _TEMPLATE


def _run_copy(tmp: Path) -> Path:
    dest = tmp / "run"
    shutil.copytree(_template(), dest)
    return dest


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _refused(tmp: Path, args: list, expect: str, edit=None) -> Outcome:
    """``codesign profile --target host --run-dir RUN ARGS`` fails in one line and writes
    nothing: no artefact, no record, not even a measurement database."""
    run_dir = _run_copy(tmp)
    if edit is not None:
        edit(run_dir)
    before, home_before = snapshot(tmp), snapshot(_home())
    msg = cli_error(["profile", "--target", "host", "--run-dir", run_dir, *args], expect=expect)
    left_behind(before, snapshot(tmp))
    return Outcome(msg, left_behind(home_before, snapshot(_home())))


def _bad_selection(run_dir: Path) -> None:
    lb = run_dir / "leaderboard.json"
    board = json.loads(lb.read_text())
    board["selected"] = "0123456789ab"
    lb.write_text(json.dumps(board))


def _selected_not_a_candidate(tmp):
    return _refused(tmp, [], "0123456789ab", edit=_bad_selection)


def _unknown_candidate(tmp):
    return _refused(tmp, ["--candidate", "feedfacefeed", "--iterations", "2"], "feedfacefeed")


def _unknown_precision(tmp):
    return _refused(tmp, ["--precision", "int4"], "int4")


def _zero_passes(tmp):
    return _refused(tmp, ["--passes", "0"], "--passes")


def _zero_top(tmp):
    return _refused(tmp, ["--top", "0"], "--top")


def _killed_loop_resumes(tmp):
    from profile_helpers import check_resumed, kill_after_first_pass, profile_argv

    from toolchain.store.db import RecordStore

    run_dir = _run_copy(tmp)
    env = dict(os.environ, CODESIGN_NO_PROGRESS="1")
    argv = profile_argv(run_dir)
    planned, done = kill_after_first_pass(argv, env)
    db = _home() / "codesign.db"
    with RecordStore(db) as store:
        store.check()
        before = store.records(target="host")
        assert store.records(target="host", settled=True) == [], "a partial candidate counts as measured"
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    with RecordStore(db) as store:
        after = store.records(target="host")
        assert store.unfinished_sessions() == []
    n = check_resumed(planned, done, before, after)
    return Outcome("killed (SIGKILL) after pass 1 of 3 in loop mode; the rerun exited 0, resuming its session",
                   f"resumed: {n} samples per candidate, none duplicated")


CASES = [
    Case("run directory", "a leaderboard whose selected id is not among its candidates",
         "codesign profile --target host --run-dir RUN  (selected: 0123456789ab)", _selected_not_a_candidate),
    Case("CLI option", "an unknown --candidate id", "codesign profile --target host --run-dir RUN "
         "--candidate feedfacefeed", _unknown_candidate),
    Case("CLI option", "an unknown --precision", "codesign profile --target host --run-dir RUN --precision int4",
         _unknown_precision),
    Case("CLI option", "zero --passes", "codesign profile --target host --run-dir RUN --passes 0", _zero_passes),
    Case("CLI option", "zero --top", "codesign profile --target host --run-dir RUN --top 0", _zero_top),
    Case("interrupted work", "codesign profile killed (SIGKILL) after its first pass, then rerun",
         "codesign profile --target host --run-dir RUN --passes 3 --iterations 12 ...; kill -9; rerun",
         _killed_loop_resumes),
]
