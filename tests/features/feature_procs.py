"""``codesign`` run in real child processes that can be made to meet at a barrier, slowed per chunk, or killed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The child: one torch thread; optionally wait until BARRIER_N processes have reached the
# barrier folder (so that two extractions really overlap), sleep in every chunk's fsync (so
# that they overlap for several chunks), log every chunk it renames into place (a counter of
# who wrote what), and SIGKILL itself while writing chunk KILL_AT + 1.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    barrier, need = os.environ.get("BARRIER_DIR"), int(os.environ.get("BARRIER_N", "0"))
    slow = float(os.environ.get("SLOW_FSYNC_S", "0"))
    kill_at = int(os.environ.get("KILL_AT", "-1"))
    log = os.environ.get("WRITE_LOG")
    real_fsync, real_replace, seen = os.fsync, os.replace, [0]

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".safetensors" in name and name.endswith(".tmp"):
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            seen[0] += 1
            time.sleep(slow)
        real_fsync(fd)

    def replace(src, dst, *a, **k):
        real_replace(src, dst, *a, **k)
        if log and str(dst).endswith(".safetensors"):
            with open(log, "a") as fh:
                fh.write(Path(dst).name + "\\n")

    os.fsync, os.replace = fsync, replace
    if barrier:
        Path(barrier, str(os.getpid())).touch()
        while len(list(Path(barrier).iterdir())) < need:
            time.sleep(0.02)
    from toolchain.cli import main
    main(sys.argv[1:], prog_name="codesign")
    """
)


def codesign_env(home: Path, **extra) -> dict:
    env = {**os.environ, "CODESIGN_HOME": str(home), "CODESIGN_NO_PROGRESS": "1",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(args, cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cache_files(folder: Path) -> dict[str, bytes]:
    """Every file of a cache folder, hidden ones included (a leftover temp or claim counts)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
