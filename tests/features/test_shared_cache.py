"""One feature cache shared by several processes: two ``codesign run`` at once, meta.json fixed
once, claims that keep a chunk from being computed twice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from feature_procs import cache_files, codesign_env, finish, start

from toolchain.features.cache import FeatureCache
from toolchain.locks import file_claim

RUN = ["run", "--dataset", "data/toy.toml", "--model", "model", "--max-length", 32,
       "--max-candidates", 0]
CHUNKS = 6 + 2 + 2  # 48 train, 16 dev, 16 test rows in chunks of 8


def _board(run_dir: Path) -> dict:
    """What must agree between the two runs: every candidate's scores and the selection (paths,
    timings and the run's own name differ by nature)."""
    board = json.loads((run_dir / "leaderboard.json").read_text())
    rows = sorted((c["id"], c["val_acc"], c.get("test_acc"), c["feasible"]) for c in board["candidates"])
    return {"selected": board["selected"], "candidates": rows, "baseline": board["baseline"],
            "cache": board["feature_cache"]}


@pytest.mark.slow
def test_two_runs_at_once_on_one_cache_finish_with_identical_leaderboards(tmp_path, tiny_bert, toy_spec):
    import shutil

    shutil.copytree(tiny_bert, tmp_path / "model")
    shutil.copytree(toy_spec.parent, tmp_path / "data")
    home, barrier = tmp_path / "home", tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for name in ("a", "b"):
        env = codesign_env(home, CODESIGN_CHUNK_SIZE=8, BARRIER_DIR=barrier, BARRIER_N=2,
                           SLOW_FSYNC_S=0.2, WRITE_LOG=tmp_path / f"writes-{name}.log")
        procs.append(start([*RUN, "--run-dir", f"run-{name}"], tmp_path, env))
    done = [finish(p) for p in procs]
    for result in done:
        assert result.returncode == 0, result.stderr[-3000:]
    a, b = _board(tmp_path / "run-a"), _board(tmp_path / "run-b")
    assert a == b and len(a["candidates"]) >= 6
    # Every chunk was written exactly once, by one of the two (a claimed chunk is skipped by the
    # other process, not computed again), and the shared cache holds nothing else.
    logs = [(tmp_path / f"writes-{n}.log") for n in ("a", "b")]
    writes = [ln for log in logs if log.exists() for ln in log.read_text().split()]
    assert len(writes) == len(set(writes)) == CHUNKS, writes
    (cache,) = (home / "cache" / "features").iterdir()
    names = set(cache_files(cache))
    assert names == {"meta.json", "complete.json", *writes}, names - set(writes)


def test_meta_is_fixed_by_the_first_writer(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    cache.directory.mkdir()
    first = cache.fix_meta({"chunk_size": 8, "batch_size": 4, "who": "first"})
    second = cache.fix_meta({"chunk_size": 1024, "batch_size": 64, "who": "second"})
    assert first == second == {"chunk_size": 8, "batch_size": 4}
    assert json.loads((cache.directory / "meta.json").read_text())["who"] == "first"
    assert sorted(p.name for p in cache.directory.iterdir()) == ["meta.json"]  # no temp left


def test_a_claimed_chunk_is_not_claimed_again_until_released(tmp_path):
    path = tmp_path / ".train-00000.safetensors.claim"
    with file_claim(path) as held:
        assert held
        with file_claim(path) as again:  # another thread or process: not held, no wait
            assert not again
    with file_claim(path) as after:
        assert after


def test_a_claim_of_a_killed_process_is_free(tmp_path):
    import signal
    import subprocess
    import sys

    path = tmp_path / ".test-00001.safetensors.claim"
    code = ("import sys, time; from pathlib import Path; from toolchain.locks import file_claim\n"
            "with file_claim(Path(sys.argv[1])) as held:\n    print(held, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert proc.stdout.readline().strip() == "True"
        with file_claim(path) as held:
            assert not held  # a live holder in another process
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with file_claim(path) as held:
        assert held  # the kernel dropped the dead holder's lock
