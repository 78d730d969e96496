"""Fixtures for the personalisation tests: tests/bundle's session run and bundles (loaded
under their own name, not duplicated), a host board rooted in the test's tmp dir, and example
files written from tests/conftest.py's toy rows plus a third, new class."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BUNDLE_TESTS = Path(__file__).resolve().parents[1] / "bundle"
if str(BUNDLE_TESTS) not in sys.path:
    sys.path.insert(0, str(BUNDLE_TESTS))  # bundle_tamper's sigkill
_spec = importlib.util.spec_from_file_location("_codesign_bundle_fixtures_personalise",
                                               BUNDLE_TESTS / "conftest.py")
_bundle = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _bundle  # its dataclass looks its module up there
_spec.loader.exec_module(_bundle)
bundle_run = _bundle.bundle_run
host_board = _bundle.host_board
_trust_the_session_bundles = _bundle._trust_the_session_bundles
ssh_board = _bundle.ssh_board  # the stand-in rpi4 (skips where it cannot run)
rpi4_env = _bundle.rpi4_env

from personalise_rows import new_class_rows, write_jsonl  # noqa: E402


@pytest.fixture
def examples(tmp_path, toy_rows):
    """``examples(name, rows=None)``: a JSONL file of the given rows (default: 8 per toy class
    from unseen offsets plus 12 of the new 'colour' class)."""

    def make(name: str = "examples.jsonl", rows=None) -> Path:
        rows = rows if rows is not None else toy_rows(8, 3000) + new_class_rows(12)
        return write_jsonl(tmp_path / name, rows)

    return make


@pytest.fixture
def deployed_host(bundle_run, host_board):
    """The host target with the session's host bundle deployed under this test's tmp dir."""
    from toolchain.boards.registry import open_target
    from toolchain.bundle.deploy import deploy

    target = open_target("host")
    deploy(target, bundle_run.host)
    return target
