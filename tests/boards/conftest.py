"""Fixtures for the labgrid kind's tests: labgrid itself (skipped, with the reason, when the
``farm`` extra is not installed), a tiny run, and two stand-in boards (tests/ssh's sshd in
network namespaces) with one local labgrid environment describing both.

The boards need root and an arm64 rootfs, like tests/ssh: set CODESIGN_ROOTFS_CACHE to a
prebuilt one, or the first board test builds it (~1.5 min).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SSH_TESTS = HERE.parent / "ssh"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(SSH_TESTS) not in sys.path:
    sys.path.insert(0, str(SSH_TESTS))

from board_helpers import start_stand_in, write_env  # noqa: E402

# tests/ssh's fixtures (tool checks, the rootfs), loaded under their own name, not edited.
_spec = importlib.util.spec_from_file_location("_codesign_ssh_fixtures_boards",
                                               SSH_TESTS / "conftest.py")
_ssh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ssh)
emulation_tools = _ssh.emulation_tools
rootfs = _ssh.rootfs


@pytest.fixture(scope="session")
def labgrid():
    try:
        import labgrid
    except ImportError as exc:  # a broken install (ImportError) skips too, not only a missing one
        pytest.skip(f"labgrid is not installed ({exc}); pip install 'codesign[farm]' to run these")
    return labgrid


@pytest.fixture(autouse=True)
def _fresh_environments():
    """Each test loads its own env files; drop the loaded ones (and their drivers) after it."""
    yield
    if "toolchain.boards.labgrid_target" in sys.modules:
        sys.modules["toolchain.boards.labgrid_target"].clear_environments()


@pytest.fixture(scope="session")
def session_run(tmp_path_factory, tiny_bert, toy_spec) -> Path:
    """One tiny run (tiny random BERT, 4 combinations, softmax heads) in its own home."""
    from toolchain.flows.run import RunConfig, run

    base = tmp_path_factory.mktemp("labgrid-run")
    mp = pytest.MonkeyPatch()
    mp.setenv("CODESIGN_HOME", str(base / "home"))
    mp.setenv("CODESIGN_NO_PROGRESS", "1")
    try:
        run_dir, _ = run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec),
                                   max_combinations=4, heads=(("softmax", 3),),
                                   run_dir=str(base / "run")))
    finally:
        mp.undo()
    return run_dir


@pytest.fixture
def tiny_run(session_run, tmp_path) -> Path:
    """A private copy of the session's run (profiling writes into the run directory)."""
    dest = tmp_path / "run"
    shutil.copytree(session_run, dest)
    return dest


@pytest.fixture
def boards(labgrid, rootfs, tmp_path):
    """Two running stand-in boards, ``board-a`` and ``board-b``; always stopped afterwards."""
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        pytest.skip(f"sshd needs /run/sshd and it cannot be created here: {exc}")
    started = {}
    try:
        for name in ("board-a", "board-b"):
            started[name] = start_stand_in(rootfs, tmp_path / name)
        yield started
    finally:
        for board in started.values():
            board.stop()


@pytest.fixture
def farm(boards, tmp_path) -> Path:
    """The local labgrid environment (no coordinator) describing both boards."""
    return write_env(tmp_path / "farm.yaml", boards)
