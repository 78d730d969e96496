"""Helpers shared by the profiling tests and tests/reliability/cases_profile.py: interrupt a
real ``codesign profile`` in loop mode after its first pass, and check what the rerun did."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from toolchain.profiling.records import CostRecord

PASSES, ITERATIONS = 3, 12


def _progress(db: Path) -> tuple[list[str], set[str]]:
    """(planned keys of the unfinished session, its done keys), read as another process would."""
    if not db.is_file():
        return [], set()
    try:
        with sqlite3.connect(db, timeout=1) as con:
            row = con.execute("SELECT session_id, planned_json FROM profile_sessions "
                              "WHERE finished_at IS NULL").fetchone()
            if row is None:
                return [], set()
            done = {k for (k,) in con.execute(
                "SELECT candidate_id FROM profile_progress WHERE session_id = ?", (row[0],))}
            return json.loads(row[1]), done
    except sqlite3.OperationalError:
        return [], set()


def profile_argv(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "toolchain.cli", "profile", "--target", "host", "--run-dir", str(run_dir),
            "--precision", "fp32", "--precision", "int8-dynamic", "--passes", str(PASSES),
            "--iterations", str(ITERATIONS), "--warmup", "1", "--rounds", "2", "--top", "4"]


def kill_after_first_pass(argv: list[str], env: dict, timeout_s: float = 300) -> tuple[list[str], set[str]]:
    """Start ``codesign profile`` and SIGKILL it once every candidate's first pass is stored;
    returns the interrupted session's (planned, done) keys."""
    db = Path(env["CODESIGN_HOME"]) / "codesign.db"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            planned, done = _progress(db)
            first = {k for k in planned if k.endswith(f"#1/{PASSES}")}
            if first and first <= done:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "codesign profile ended before it could be interrupted: " + (
            proc.stderr.read().decode(errors="replace")[-2000:])
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    planned, done = _progress(db)
    assert planned and done and len(done) < len(planned), (planned, done)
    return planned, done


def check_resumed(planned: list[str], done_before: set[str], before: list[CostRecord],
                  after: list[CostRecord]) -> int:
    """The rerun kept the interrupted session's passes, measured only its missing ones, and
    every measured candidate holds exactly the asked samples; returns samples per candidate."""
    assert {r.record_id for r in before} <= {r.record_id for r in after}, "a finished pass was lost"
    made = [(r.host.get("profile_session"), r.host.get("profile_unit")) for r in after]
    assert len(made) == len(set(made)), "a pass was measured twice"
    sessions = {s for s, _ in made}
    interrupted = {r.host["profile_session"] for r in before}
    assert len(interrupted) == 1 and interrupted <= sessions, "the rerun started another session"
    (sid,) = interrupted
    resumed = [r for r in after if r.host["profile_session"] == sid]
    new = [r for r in resumed if r.record_id not in {b.record_id for b in before}]
    measured_keys = {r.host["profile_unit"] for r in resumed}
    assert sorted(r.host["profile_unit"] for r in new) == sorted(measured_keys - done_before), \
        "the rerun measured a pass that was already done"
    assert measured_keys <= set(planned)
    per_candidate: dict[str, list[CostRecord]] = {}
    for r in after:
        per_candidate.setdefault(r.candidate_id, []).append(r)
    for cid, recs in per_candidate.items():
        assert len(recs) == PASSES and sum(r.n_samples for r in recs) == ITERATIONS, (cid, len(recs))
    assert any(r.precision == "int8-dynamic" for r in after) or not any("int8" in k for k in planned)
    return ITERATIONS
