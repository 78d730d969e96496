"""Sharded extraction (``codesign extract --shard K/N`` then ``--finalize``): bad shard values, a
finalize before every shard is done, and a shard killed by SIGKILL mid-chunk then run again.
The model is a tiny random BERT and the data the toy set of tests/conftest.py, in the case's
folder; the killed shard runs in a child process that SIGKILLs itself while its chunk's bytes
are being fsynced (deterministic: exactly the chunks before it survive)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, fixtures, left_behind, snapshot

_ROOT = Path(__file__).resolve().parents[2]
_CMD = "codesign extract --dataset toy.toml --model model --max-length 32"
# One torch thread, so that every run of a case computes the same bits; SIGKILL while writing
# the shard's chunk number KILL_AT (counted from 0) when KILL_AT >= 0.
_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    kill_at, seen, real_fsync = int(sys.argv[1]), [0], os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".safetensors" in name and name.endswith(".tmp"):
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            seen[0] += 1
        real_fsync(fd)

    os.fsync = fsync
    from toolchain.cli import main
    main(sys.argv[2:], prog_name="codesign")
    """
)
KILL_AT = 2  # shard 0 of 2 owns train-00000, -00002, -00004, validation-00000, test-00000


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _setup(tmp: Path) -> None:
    fx = fixtures()
    fx.write_toy_dataset(tmp / "data")
    fx.save_tiny_bert(tmp / "model")


def _extract(*more) -> list:
    return ["extract", "--dataset", "data/toy.toml", "--model", "model", "--max-length", 32, *more]


def _child(tmp: Path, home: Path, kill_at: int, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "CODESIGN_HOME": str(home), "CODESIGN_CHUNK_SIZE": "8",
           "CODESIGN_NO_PROGRESS": "1", "PYTHONPATH": str(_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", _CHILD, str(kill_at), *map(str, args)], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=600)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _bad_shard(value: str, expect: str):
    def run(tmp: Path) -> Outcome:
        before = snapshot(_home())
        msg = cli_error(["extract", "--shard", value], expect=expect)
        return Outcome(msg, left_behind(before, snapshot(_home())))

    return run


def _finalize_too_early(tmp: Path) -> Outcome:
    _setup(tmp)
    home = _home()
    first = _child(tmp, home, -1, *_extract("--shard", "0/2"))
    assert first.returncode == 0, first.stderr[-2000:]
    (cache,) = (home / "cache" / "features").iterdir()
    before = snapshot(cache)
    msg = cli_error(_extract("--finalize"), expect="5 of 10 chunks are missing",
                    env={"CODESIGN_CHUNK_SIZE": "8"})
    assert "rerun the shards" in msg and not (cache / "complete.json").exists()
    left_behind(before, snapshot(cache))
    return Outcome(msg.replace(str(cache), "$CODESIGN_HOME/cache/features/<key>"),
                   "shard 0's 5 chunks, untouched; no completion marker")


def _killed_shard_rerun(tmp: Path) -> Outcome:
    _setup(tmp)
    home = _home()
    killed = _child(tmp, home, KILL_AT, *_extract("--shard", "0/2"))
    assert killed.returncode == -signal.SIGKILL, f"not killed: {killed.returncode} {killed.stderr[-2000:]}"
    (cache,) = (home / "cache" / "features").iterdir()
    kept = {p.name: p.stat().st_ino for p in cache.glob("*.safetensors")}
    assert sorted(kept) == ["train-00000.safetensors", "train-00002.safetensors"], kept
    assert len(list(cache.glob(".*.tmp"))) == 1  # the chunk in flight, owned by the dead process
    other = _child(tmp, home, -1, *_extract("--shard", "1/2"))  # the other shard, unaffected
    assert other.returncode == 0, other.stderr[-2000:]
    rerun = _child(tmp, home, -1, *_extract("--shard", "0/2"))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    (line,) = [ln for ln in rerun.stdout.splitlines() if ln.startswith("model @ 32 tokens")]
    assert "3 of 5 owned chunks computed" in line, line
    assert {n: (cache / n).stat().st_ino for n in kept} == kept, "finished chunks were rewritten"
    fin = _child(tmp, home, -1, *_extract("--finalize"))
    assert fin.returncode == 0, fin.stderr[-2000:]
    assert not [p for p in cache.glob(".*")], "a temp or claim file is left"
    clean_home = tmp.parent / "clean-home"
    clean = _child(tmp, clean_home, -1, *_extract())
    assert clean.returncode == 0, clean.stderr[-2000:]
    (clean_cache,) = (clean_home / "cache" / "features").iterdir()
    assert _files(cache) == _files(clean_cache), "the resumed sharded cache differs from one process's"
    shown = line.split(", /")[0]
    return Outcome(f"(shard 0/2 killed by SIGKILL mid-chunk) rerun prints: {shown}",
                   "shard 0's 2 finished chunks reused as they were, the dead run's temp file removed, "
                   "its other 3 chunks computed once; after --finalize the cache equals one "
                   "process's byte for byte")


CASES = [
    Case("CLI option", "--shard 2/2 (index past the count)", "codesign extract --shard 2/2",
         _bad_shard("2/2", "0..N-1")),
    Case("CLI option", "--shard 0/0 (no tasks)", "codesign extract --shard 0/0",
         _bad_shard("0/0", "N at least 1")),
    Case("CLI option", "--shard 3 (no count)", "codesign extract --shard 3", _bad_shard("3", "K/N")),
    Case("interrupted work", "--finalize while one of 2 shards has not run",
         f"CODESIGN_CHUNK_SIZE=8 {_CMD} --shard 0/2, then --finalize", _finalize_too_early),
    Case("interrupted work", "a shard killed by SIGKILL while writing a chunk, then rerun",
         f"CODESIGN_CHUNK_SIZE=8 {_CMD} --shard 0/2  (killed, then run again; --shard 1/2; --finalize)",
         _killed_shard_rerun),
]
