"""End to end on the stand-in Raspberry Pi (sshd + emulated aarch64 python3): the CLI's
bundle → deploy → status → bench flow, a board-side hash mismatch, a connection killed
mid-upload, and rollback."""

from __future__ import annotations

import json
import threading

import pytest

from toolchain.boards.registry import open_target
from toolchain.bundle.archive import archive_path
from toolchain.bundle.deploy import SshShell, deploy, rollback, status
from toolchain.bundle.manifest import bundle_id
from toolchain.errors import DeployError, TransportError

pytestmark = [pytest.mark.slow, pytest.mark.emulator]


def _current(shell, root) -> str | None:
    proc = shell.run(["cat", "--", f"{root}/current/.deploy.json"])
    return json.loads(proc.stdout)["bundle_id"] if proc.returncode == 0 else None


class KillingShell(SshShell):
    """Kills the board's ssh sessions over and over while the model file is being copied, as
    a dropped link would (the listener stays up)."""

    def __init__(self, transport, board) -> None:
        super().__init__(transport)
        self.board = board

    def upload(self, local, remote):
        if not remote.endswith("/model.onnx"):
            return super().upload(local, remote)
        done = threading.Event()

        def killer():
            while not done.wait(0.01):
                self.board.kill_sessions()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            super().upload(local, remote)
        finally:
            done.set()
            thread.join()
        # Only if the copy outran every kill: the link still drops before the next step.
        raise TransportError(f"upload of {local} to {self.label} lost the connection")


class CorruptingShell(SshShell):
    def upload(self, local, remote):
        super().upload(local, remote)
        if remote.endswith("/labels.json"):
            self.transport.run(["sh", "-c", f"echo tampered >> {remote}"])


def test_cli_flow_on_the_stand_in_board(bundle_run, rpi4_env, cli, tmp_path, monkeypatch, bench_cli):
    monkeypatch.setenv("CODESIGN_HOME", str(bundle_run.home))
    out = tmp_path / "dist"
    res = cli(
        [
            "bundle",
            "--target",
            "rpi4",
            "--run-dir",
            bundle_run.run_dir,
            "--out",
            out,
            "--allow-unmeasured",
        ]
    )
    assert res.exit_code == 0, res.output
    # rpi4's own selection (predicted for it: never profiled here), never the host's.
    from toolchain.boards.registry import open_target
    from toolchain.rundir import RunDir

    own = RunDir.open(bundle_run.run_dir).selection(open_target("rpi4").spec)
    assert own is not None and f"{own['source']} selection for rpi4" in res.output
    archive = out / f"rpi4-{own['candidate_id']}.tar.gz"
    res = cli(["deploy", "--target", "rpi4", "--bundle", archive])
    assert res.exit_code == 0, res.output
    assert "self-check passed" in res.output and "[emulated]" not in res.output
    res = cli(["status", "--target", "rpi4", "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["manifest"]["candidate_id"] == own["candidate_id"] and st["deployed"]
    report = tmp_path / "bench.json"
    res = bench_cli("rpi4", archive, report, "--iterations", 30, "--markdown", tmp_path / "bench.md")
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())
    assert data["self_check_passed"] and data["where"] == "deployed (current)"
    assert data["emulated"] and data["runtime"]["name"] == "onnxruntime"
    assert data["accuracy"]["argmax_agreement"] == 1.0


def test_tamper_interrupt_and_rollback_on_the_board(bundle_run, rpi4_env, ssh_board, tmp_path):
    from toolchain.bundle.build import build_bundle

    target = open_target("rpi4")
    root = str(rpi4_env)
    with bundle_run.store() as store:
        other = build_bundle(
            bundle_run.run_dir,
            "rpi4",
            tmp_path,
            candidate_id=bundle_run.other,
            allow_unmeasured=True,
            store=store,
        )
    first = deploy(target, archive_path(bundle_run.rpi4))
    shell = SshShell(target.transport())
    assert _current(shell, root) == bundle_id(bundle_run.rpi4)
    with pytest.raises(DeployError, match=r"step 4 \(verify hashes on the board\).*labels.json"):
        deploy(target, other, shell=CorruptingShell(target.transport()))
    assert _current(shell, root) == bundle_id(bundle_run.rpi4)
    with pytest.raises(DeployError, match=r"step 3 \(upload\).*keeps running"):
        deploy(target, other, shell=KillingShell(target.transport(), ssh_board))
    assert _current(SshShell(target.transport()), root) == bundle_id(bundle_run.rpi4)
    second = deploy(target, other)
    assert second["previous"] == first["version"]
    assert _current(shell, root) == bundle_id(other)
    back = rollback(target)
    assert back["current"] == first["version"]
    assert _current(shell, root) == bundle_id(bundle_run.rpi4)
    assert status(target)["current"] == first["version"]
