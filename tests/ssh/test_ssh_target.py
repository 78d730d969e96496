"""SshTarget end to end: the agent over SSH on the emulated aarch64 board, and its failures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ssh_helpers import host_outputs

from toolchain.boards.registry import open_target
from toolchain.boards.ssh_target import SshTarget
from toolchain.config.target_spec import load_target_spec
from toolchain.errors import BundleError, HostKeyError, TargetUnreachableError, TransportError


@pytest.fixture
def rpi4(board, rootfs_env, monkeypatch) -> SshTarget:
    """targets/rpi4.toml pointed at the stand-in board through the documented env overrides."""
    for key, value in board.env("rpi4").items():
        monkeypatch.setenv(key, value)
    target = open_target("rpi4")
    assert isinstance(target, SshTarget)
    assert target.spec.connection.host == board.host
    return target


def _assert_report(report, iterations: int, job: Path) -> None:
    assert report["ok"] is True and report["agent_version"] == 1
    assert len(report["latency_ms_samples"]) == iterations
    assert report["emulated"] is True
    assert "qemu" in report["emulation_evidence"]
    assert report["machine"] == "aarch64"
    assert report["cpu_model"] == "ARM Cortex-A72"
    assert report["runtime"]["name"] == "onnxruntime" and report["runtime"]["provider"] == "CPU"
    assert report["peak_rss_bytes"] > 0
    # aarch64 onnxruntime (NEON kernels) against the host's x86 build.
    np.testing.assert_allclose(report["outputs"], host_outputs(job), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_reachability(rpi4):
    reach = rpi4.reachability()
    assert reach.reachable, reach.detail


@pytest.mark.slow
def test_agent_over_ssh_matches_host(rpi4, tiny_job):
    report = rpi4.run_agent(tiny_job, warmup=2, iterations=5, threads=2)
    _assert_report(report, 5, tiny_job)
    assert report["threads"] == 2


@pytest.mark.slow
def test_remote_temp_dir_is_cleaned_up(rpi4, board, tiny_job):
    before = set(
        board.transport().run_checked(["sh", "-c", "ls -d /tmp/codesign-agent.* || true"]).split()
    )
    rpi4.run_agent(tiny_job, warmup=0, iterations=1, threads=1)
    after = set(
        board.transport().run_checked(["sh", "-c", "ls -d /tmp/codesign-agent.* || true"]).split()
    )
    assert after <= before


@pytest.mark.slow
def test_tampered_job_fails_hash_check(rpi4, tiny_job):
    with np.load(tiny_job / "inputs.npz") as data:
        arrays = dict(data)
    arrays["input_ids"][0, 0] += 1  # same shapes, different bytes: the sha256 no longer matches
    np.savez(tiny_job / "inputs.npz", **arrays)
    with pytest.raises(BundleError, match="inputs.npz"):
        rpi4.run_agent(tiny_job, warmup=0, iterations=1, threads=1)


@pytest.mark.slow
def test_connection_killed_mid_run_raises_transport_error(rpi4, board, tiny_job):
    errors: list[BaseException] = []
    results: list[dict] = []

    def measure():
        try:
            results.append(rpi4.run_agent(tiny_job, warmup=0, iterations=10**7, threads=1))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    thread = threading.Thread(target=measure)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not board.agent_running():
        time.sleep(0.2)
    assert board.agent_running(), "the agent never started on the board"
    time.sleep(1.0)  # let it load the model and start the timed loop
    assert board.kill_sessions() > 0
    thread.join(60)
    assert not thread.is_alive() and not results
    assert len(errors) == 1 and isinstance(errors[0], TransportError), errors



@pytest.mark.slow
def test_unknown_host_key_is_not_emulated_silently(
    board, rootfs_env, monkeypatch, tmp_path, tiny_job
):
    for key, value in board.env("rpi4").items():
        monkeypatch.setenv(key, value)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_KNOWN_HOSTS", str(empty))
    with pytest.raises(HostKeyError):
        open_target("rpi4").run_agent(tiny_job, warmup=0, iterations=1, threads=1)


@pytest.mark.slow
def test_unreachable_board_falls_back_to_emulation(rootfs_env, monkeypatch, tiny_job):
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_HOST", "127.0.0.1")
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_PORT", "1")  # refused at once
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_RETRIES", "0")
    target = open_target("rpi4")
    assert not target.reachability().reachable
    report = target.run_agent(tiny_job, warmup=1, iterations=3, threads=1)
    _assert_report(report, 3, tiny_job)


@pytest.mark.slow
def test_emulate_flag_runs_locally(rootfs_env, tiny_job):
    spec = load_target_spec("rpi4", apply_env=False)
    report = SshTarget(spec, emulate=True).run_agent(tiny_job, warmup=0, iterations=2, threads=1)
    _assert_report(report, 2, tiny_job)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, cpu", [("jetson-nano", "ARM Cortex-A57"), ("jetson-orin-nano", "ARM Cortex-A76")]
)
def test_jetson_emulation_uses_auto_provider(rootfs_env, tiny_job, name, cpu):
    spec = load_target_spec(name, apply_env=False)
    target = SshTarget(spec, emulate=True)
    assert target._agent_args("job", 0, 1, 1)[-2:] == ["--provider", "auto"]
    report = target.run_agent(tiny_job, warmup=0, iterations=1, threads=1)
    assert report["runtime"]["provider"] == "CPU"  # no GPU under qemu: auto fell back
    assert report["cpu_model"] == cpu and report["emulated"] is True


def test_unreachable_without_emulation_raises(monkeypatch, tiny_job, tmp_path):
    spec_file = tmp_path / "plainboard.toml"
    spec_file.write_text(
        'kind = "ssh"\narch = "aarch64"\n[connection]\nhost = "127.0.0.1"\nport = 1\nretries = 0\n'
    )
    target = open_target(load_target_spec(spec_file))
    with pytest.raises(TargetUnreachableError, match="127.0.0.1"):
        target.run_agent(tiny_job, warmup=0, iterations=1, threads=1)


def test_no_host_configured(monkeypatch, tmp_path):
    spec_file = tmp_path / "nohost.toml"
    spec_file.write_text('kind = "ssh"\narch = "aarch64"\n')
    reach = open_target(load_target_spec(spec_file)).reachability()
    assert not reach.reachable and "NOHOST_HOST" in reach.detail
