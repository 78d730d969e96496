"""Fixtures for the SSH target tests (helpers live in ssh_helpers.py).

Environment knobs:
  CODESIGN_ROOTFS_CACHE  reuse a built arm64 rootfs across sessions (CI caches it); otherwise it
                         is built once per session under pytest's tmp dir (~1.5 min, needs root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from ssh_helpers import start_board, write_job


@pytest.fixture
def tiny_job(tmp_path: Path) -> Path:
    return write_job(tmp_path / "job")


def _missing_tools() -> list[str]:
    needed = ["debootstrap", "dpkg-deb", "unshare", "sshd", "ssh", "scp", "ssh-keygen"]
    missing = [t for t in needed if not shutil.which(t) and not Path("/usr/sbin", t).exists()]
    if not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")):
        missing.append("qemu-aarch64")
    return missing


def _apt_install() -> None:
    """Install what CI would (.ci/apt-packages-ssh.txt) when we are root and apt exists."""
    pkgs = Path(__file__).resolve().parents[2] / ".ci" / "apt-packages-ssh.txt"
    if os.geteuid() != 0 or not shutil.which("apt-get") or not pkgs.is_file():
        return
    names = [line.strip() for line in pkgs.read_text().splitlines() if line.strip()]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["install"], ["update"], ["install"]):  # a fresh container has no apt lists
        argv = ["apt-get", *step, "-y", "-q", *(names if step == ["install"] else [])]
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=900, check=False)
        if step == ["install"] and proc.returncode == 0:
            return


@pytest.fixture(scope="session")
def emulation_tools() -> None:
    if _missing_tools():
        _apt_install()
    missing = _missing_tools()
    if missing:
        pytest.skip(
            f"cannot install {missing} here (needs root + apt; see .ci/apt-packages-ssh.txt)"
        )


@pytest.fixture(scope="session")
def rootfs(emulation_tools, tmp_path_factory) -> Path:
    from toolchain.boards.emulation import DEFAULT_ROOTFS, prepare_rootfs

    cache = os.environ.get("CODESIGN_ROOTFS_CACHE")
    base = Path(cache) if cache else tmp_path_factory.mktemp("rootfs")
    if os.geteuid() != 0 and not (base / DEFAULT_ROOTFS / ".codesign-rootfs.json").is_file():
        pytest.skip(
            "building the arm64 rootfs (debootstrap) needs root; or set CODESIGN_ROOTFS_CACHE"
        )
    return prepare_rootfs(DEFAULT_ROOTFS, dest=base / DEFAULT_ROOTFS)


@pytest.fixture
def rootfs_env(rootfs, monkeypatch) -> Path:
    """Make SshTarget's own prepare_rootfs() find the session's rootfs."""
    monkeypatch.setenv("CODESIGN_ROOTFS_CACHE", str(rootfs.parent))
    return rootfs


@pytest.fixture(scope="session")
def board(rootfs, tmp_path_factory):
    """The stand-in board, started once per session and always torn down."""
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
    except OSError as exc:
        pytest.skip(f"sshd needs /run/sshd and it cannot be created here: {exc}")
    board = start_board(rootfs, tmp_path_factory.mktemp("board"))
    try:
        yield board
    finally:
        board.stop()
