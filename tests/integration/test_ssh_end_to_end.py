"""`codesign profile --target rpi4` through the library against the stand-in board: a real
sshd whose python3 is emulated aarch64 (tests/ssh). The loop's records come over SSH and say
emulated (the agent sees QEMU); the runner checks the board's outputs against the host's for
fp32 and int8-dynamic and raises otherwise. An unreachable board falls back to local
emulation; a connection killed mid-profile leaves a consistent database and a rerun resumes."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from integration_helpers import db_record_count, saved_heads

from toolchain.boards.registry import open_target
from toolchain.boards.ssh_target import SshTarget
from toolchain.errors import TransportError
from toolchain.export.tolerances import ON_TARGET
from toolchain.flows.loop import co_design
from toolchain.profiling.runner import profile_candidates
from toolchain.store.db import RecordStore, default_db_path

pytestmark = pytest.mark.slow


@pytest.fixture
def rpi4_env(board, rootfs_env, monkeypatch) -> dict[str, str]:
    """targets/rpi4.toml pointed at the stand-in board by the documented overrides."""
    env = board.env("rpi4")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _logins(board) -> int:
    """Public-key logins the board's sshd accepted so far (LogLevel VERBOSE)."""
    return Path(board.log).read_text(errors="replace").count("Accepted publickey")


def _check_emulated_records(records, target) -> None:
    assert records
    for r in records:
        assert r.emulated is True and r.target == "rpi4" and r.target_hash == target.spec.hash
        assert r.host["machine"] == "aarch64" and r.host["cpu_model"] == "ARM Cortex-A72"
        assert "qemu" in r.host["emulation_evidence"]
        # The runner judged the board's outputs against the fp32 reference before writing the
        # record (never against the host's own int8 kernels: VNNI or not would decide).
        assert float(r.host["outputs_max_abs_diff_vs_fp32"]) <= ON_TARGET[r.precision].max_abs_prob


def test_co_design_over_ssh_records_emulated_and_matching_outputs(tiny_run, board, rpi4_env):
    target = open_target("rpi4")
    assert isinstance(target, SshTarget) and target.reachability().reachable
    logins = _logins(board)
    with RecordStore() as store:
        summary = co_design(tiny_run, target, store, rounds=1, top_k=2,
                            precisions=("fp32", "int8-dynamic"), warmup=1, iterations=3)
        loop_records = store.records(target="rpi4")
        # Both precisions of the selection, whatever the loop chose to measure.
        base = summary["selected_base"]
        extra = profile_candidates(tiny_run, target, store, [base], ("fp32", "int8-dynamic"),
                                   warmup=1, iterations=3)
    assert _logins(board) > logins, "nothing logged in to the stand-in board: not the SSH path"
    _check_emulated_records(loop_records, target)
    _check_emulated_records(extra, target)
    assert {r.precision for r in extra} == {"fp32", "int8-dynamic"}
    assert summary["emulated"] is False  # no --emulate: the board itself was asked
    measured = {v["id"] for v in summary["variants"] if "measured" in v}
    assert {r.candidate_id for r in loop_records} <= measured | {r.candidate_id for r in extra}


def test_unreachable_board_falls_back_to_local_emulation(tiny_run, board, rpi4_env,
                                                         monkeypatch):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_HOST", "127.0.0.1")
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_PORT", str(closed))
    target = open_target("rpi4")
    assert not target.reachability().reachable
    logins = _logins(board)
    base = saved_heads(tiny_run)[0]
    with RecordStore() as store:
        records = profile_candidates(tiny_run, target, store, [base], ("fp32",),
                                     warmup=1, iterations=3)
        assert store.records(target="rpi4") == records
    assert _logins(board) == logins
    _check_emulated_records(records, target)



def test_connection_killed_mid_profile_leaves_consistent_db_and_resumes(tiny_run, board,
                                                                        rpi4_env):
    target = open_target("rpi4")
    heads = saved_heads(tiny_run)[:2]
    iterations = 400  # long enough for the kill to land while the second agent is timing
    errors: list[BaseException] = []

    def measure():
        try:
            with RecordStore() as store:
                profile_candidates(tiny_run, target, store, heads, ("fp32",), warmup=1,
                                   iterations=iterations)
        except BaseException as exc:  # collected for the assertions below
            errors.append(exc)

    thread = threading.Thread(target=measure)
    thread.start()
    db = default_db_path()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive() and db_record_count(db) < 1:
        time.sleep(0.2)
    assert db_record_count(db) == 1, "the first measurement never finished"
    while time.monotonic() < deadline and thread.is_alive() and not board.agent_running():
        time.sleep(0.1)
    assert board.agent_running(), "the second measurement never started on the board"
    time.sleep(1.0)
    assert board.kill_sessions() > 0
    thread.join(120)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TransportError), errors
    with RecordStore() as store:
        store.check()  # PRAGMA integrity_check: ok
        before = store.records(target="rpi4")
        assert len(before) == 1 and before[0].n_samples == iterations  # no partial record
        # Rerun: the same session resumes and measures only what is missing.
        again = profile_candidates(tiny_run, target, store, heads, ("fp32",), warmup=1,
                                   iterations=iterations)
        after = store.records(target="rpi4")
        store.check()
    assert len(again) == 1 and again[0].candidate_id != before[0].candidate_id
    assert [r.record_id for r in after] == [before[0].record_id, again[0].record_id]
    assert all(r.n_samples == iterations and r.emulated for r in after)
