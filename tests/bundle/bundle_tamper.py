"""Ways to spoil a bundle, and a ``codesign deploy`` subprocess that can be killed mid-copy.

Shared by tests/bundle and tests/reliability/cases_bundle.py (which loads this file by path).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def copy_bundle(folder: Path, dest_parent: Path) -> Path:
    dest = Path(dest_parent) / Path(folder).name
    shutil.copytree(folder, dest)
    return dest


def edit_manifest(folder: Path, change) -> Path:
    """Rewrite manifest.json as ``change(manifest)`` returns it (or leaves it, changed in place);
    the signature is left as it was."""
    path = Path(folder) / "manifest.json"
    manifest = json.loads(path.read_text())
    out = change(manifest)
    path.write_text(json.dumps(manifest if out is None else out, indent=2, sort_keys=True) + "\n")
    return folder


def rehash(folder: Path) -> Path:
    """Recompute every file's sha256 and size in the manifest, as a tamperer would."""
    from toolchain.bundle.manifest import write_manifest

    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    write_manifest(Path(folder), manifest)
    return folder


def tamper_runner(folder: Path, marker: Path) -> Path:
    """runner.py that first leaves ``marker`` behind (proof that it ran), then a re-hashed
    manifest: only the signature can tell."""
    runner = Path(folder) / "runner.py"
    head, future, rest = runner.read_text().partition("from __future__ import annotations\n")
    assert future, "runner.py lost its __future__ import: put the payload after it"
    payload = f"open({str(marker)!r}, 'w').write('the tampered runner ran')\n"
    runner.write_text(head + future + payload + rest)
    return rehash(folder)


def archive(folder: Path, dest: Path | None = None) -> Path:
    from toolchain.bundle.archive import write_archive

    return write_archive(Path(folder), dest)


# ---- hand-made archives -------------------------------------------------------------------------
def minimal_manifest(files: dict[str, bytes], **extra) -> bytes:
    """A valid manifest for ``files`` (name: content), as the schema requires it."""
    import hashlib

    manifest = {
        "schema": 1,
        "kind": "codesign-bundle",
        "candidate_id": "c0ffee",
        "target": {"name": "host"},
        "artefact": {"runtime": "onnxruntime", "model": next(iter(files))},
        "self_check": {},
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
        "sizes": {n: len(d) for n, d in files.items()},
    }
    manifest.update(extra)
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


class Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as read (a 400 MB entry costs no memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def write_tar(path: Path, entries) -> Path:
    """``entries``: (TarInfo, bytes | int | None): data, a count of zero bytes, or nothing."""
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        for info, data in entries:
            if isinstance(data, int):
                info.size = data
                tar.addfile(info, io.BufferedReader(Zeros(data), 1 << 20))
            elif data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


# ---- a deploy that can be killed mid-copy -------------------------------------------------------
# The real CLI in a fresh interpreter. Its LocalShell copies files as always, except that the
# PAUSE_AT-th file is written only half, then the flag file appears and the process waits for
# its SIGKILL: the kill always lands in the middle of the copy, however fast the machine is.
_PAUSING_DEPLOY = """
import os, sys, time
from pathlib import Path
import toolchain.bundle.deploy as d

pause_at, flag = int(os.environ["PAUSE_AT"]), Path(os.environ["PAUSE_FLAG"])
real = d.LocalShell.upload
count = [0]

def upload(self, local, remote):
    count[0] += 1
    if count[0] == pause_at:
        data = Path(local).read_bytes()
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        with open(remote, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
        flag.write_text(str(os.getpid()))
        time.sleep(600)
    return real(self, local, remote)

d.LocalShell.upload = upload
from toolchain.cli import main
sys.argv = ["codesign", *sys.argv[1:]]
main()
"""


def start_pausing_deploy(args: list, env: dict, flag: Path, pause_at: int = 3):
    """Start ``codesign ARGS`` (a deploy to the host); return the process once it is paused
    mid-copy (``flag`` exists). Fails if it exits before that."""
    full_env = dict(os.environ, **env, PAUSE_AT=str(pause_at), PAUSE_FLAG=str(flag))
    full_env["PYTHONPATH"] = str(PROJECT) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_DEPLOY, *[str(a) for a in args]],
        env=full_env,
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300  # a generous bound on startup, not a timing assertion
    while not flag.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"deploy exited {proc.returncode} before the copy:\n{out}{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("deploy never reached the copy")
        time.sleep(0.05)
    return proc


def sigkill(proc) -> None:
    import signal

    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, proc.returncode
