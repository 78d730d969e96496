"""Host profiling through the agent in fresh processes, the co-design loop, and resuming a
profile that was killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolchain.boards.registry import open_target
from toolchain.flows.loop import co_design
from toolchain.flows.run import RunConfig, run
from toolchain.rundir import target_key
from toolchain.store.db import RecordStore, default_db_path


@pytest.fixture()
def tiny_run(tiny_bert, toy_spec, codesign_home) -> Path:
    run_dir = codesign_home / "runs" / "tiny"
    run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=4,
                  heads=(("softmax", 3),), run_dir=str(run_dir)))
    return run_dir


def test_loop_measures_front_and_reports_predicted_vs_measured(tiny_run):
    target = open_target("host")
    with RecordStore() as store:
        summary = co_design(tiny_run, target, store, rounds=2, top_k=2, precisions=("fp32",),
                            warmup=2, iterations=8, passes=2)
        records = sorted(store.records(target="host"), key=lambda r: r.recorded_at)
    assert records, "the loop measured nothing"
    for r in records:
        assert len(r.latency_ms_samples) == 4 and r.warmup == 2 and r.threads == 1  # 8 in 2 passes
        assert len(r.input_tokens) == 4 and min(r.input_tokens) >= 1  # the length behind each sample
        assert r.emulated is False and r.target_hash == target.spec.hash
        assert r.peak_rss_bytes > 0 and r.model_bytes > 0 and len(r.input_crc) == 8
        assert r.predicted_latency_ms is not None  # what the model said before measuring
    measured = [v for v in summary["variants"] if "measured" in v]
    assert {v["id"] for v in measured} == {r.candidate_id for r in records}
    assert all(v["measured"]["n_records"] == 2 and v["measured"]["n_samples"] == 8 for v in measured)
    assert summary["selected"] in {v["id"] for v in summary["variants"]}
    board = json.loads((tiny_run / "leaderboard.json").read_text())
    own = board["selections"][target_key("host", target.spec.board_hash)]
    assert own["candidate_id"] == summary["selected"] and own["loop"]["target"] == "host"
    report = (tiny_run / "report.md").read_text()
    assert "predicted before ms" in report and "measured median ms" in report


def test_passes_interleave_the_candidates_and_inputs_sit_at_length_quantiles(tiny_run):
    from toolchain.profiling.runner import profile_candidates

    kept = sorted(p.stem for p in (tiny_run / "heads").glob("*.safetensors"))[:2]
    with RecordStore() as store:
        records = profile_candidates(tiny_run, open_target("host"), store, kept, warmup=1, iterations=6, passes=3)
    assert [r.candidate_id for r in records] == kept * 3  # round-robin, not one candidate at a time
    # Inputs at evenly spaced length quantiles: the measured mix's median is the validation median.
    board = json.loads((tiny_run / "leaderboard.json").read_text())
    (val_median,) = board["median_val_tokens"].values()
    for r in records:
        assert abs(r.median_input_tokens - val_median) <= 0.15 * val_median


def test_budget_is_met_by_measurement(tiny_run):
    target = open_target("host")
    with RecordStore() as store:
        first = co_design(tiny_run, target, store, rounds=1, top_k=3, precisions=("fp32",),
                          warmup=1, iterations=6)
        measured = [v for v in first["variants"] if "measured" in v]
        budget = max(v["measured"]["latency_ms_median"] for v in measured) * 10
        second = co_design(tiny_run, target, store, rounds=2, top_k=3, precisions=("fp32",),
                           warmup=1, iterations=6, max_latency_ms=budget)
    sel = next(v for v in second["variants"] if v["id"] == second["selected"])
    assert sel["cost"]["latency_ms"] <= budget and sel["feasible"]
    assert sel["cost"]["source"] == "measured"  # met by measurement, not by prediction


def test_killed_profile_leaves_consistent_db_and_resumes(tiny_run, codesign_home):
    env = dict(os.environ, CODESIGN_HOME=str(codesign_home), CODESIGN_NO_PROGRESS="1")
    kept = sorted(p.stem for p in (tiny_run / "heads").glob("*.safetensors"))[:3]
    assert len(kept) >= 2
    argv = [sys.executable, "-m", "toolchain.cli", "profile", "--run-dir", str(tiny_run),
            "--precision", "fp32", "--iterations", "300", "--warmup", "1"]
    for cid in kept:
        argv += ["--candidate", cid]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = default_db_path()
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if db.is_file():
            with sqlite3.connect(db) as con:
                try:
                    n = con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
            if n >= 1:
                break
        time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    with RecordStore() as store:
        store.check()  # integrity_check ok
        before = store.records(target="host")
    assert all(r.n_samples == 300 for r in before), "a partial record was written"
    # Rerun: finishes the rest without measuring again what is done.
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with RecordStore() as store:
        after = store.records(target="host")
    ids = [r.candidate_id for r in after]
    assert len(ids) == len(set(ids)), "a candidate was measured twice in one session"
    assert {r.record_id for r in before} <= {r.record_id for r in after}
    assert len(after) == len(kept)
    if killed:
        assert len(after) > len(before)
