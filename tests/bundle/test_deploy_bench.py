"""Deploying to the host as a board (fast) and to the MCU on a pty; bench and its gate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from toolchain.boards.registry import open_target
from toolchain.bundle.archive import archive_path
from toolchain.bundle.bench import bench, block_statistic
from toolchain.bundle.deploy import LocalShell, deploy, rollback, status
from toolchain.bundle.manifest import bundle_id
from toolchain.errors import BundleError, ConfigError, DeployError, RegressionError, TransportError


def current_bundle(root: Path) -> str | None:
    link = root / "current"
    if not link.is_symlink():
        return None
    return json.loads((link / ".deploy.json").read_text())["bundle_id"]


class InterruptedShell(LocalShell):
    """The host board whose link drops after ``after`` file uploads."""

    def __init__(self, after: int) -> None:
        super().__init__("host (flaky link)")
        self.after = after
        self.uploads = 0

    def upload(self, local, remote):
        if self.uploads >= self.after:
            raise TransportError("upload of model.onnx on host lost the connection: Broken pipe")
        self.uploads += 1
        super().upload(local, remote)


class CorruptingShell(LocalShell):
    """Flips a byte of the model on its way to the board (after the local check passed)."""

    def upload(self, local, remote):
        super().upload(local, remote)
        if remote.endswith("/model.onnx"):
            data = bytearray(Path(remote).read_bytes())
            data[len(data) // 2] ^= 0x01
            Path(remote).write_bytes(bytes(data))


def test_deploy_status_rollback_on_the_host(bundle_run, host_board):
    target = open_target("host")
    first = deploy(target, archive_path(bundle_run.host))
    assert first["previous"] is None and first["self_check"]["passed"]
    assert current_bundle(host_board) == bundle_id(bundle_run.host)
    second = deploy(target, bundle_run.host_other)
    assert second["previous"] == first["version"]
    assert current_bundle(host_board) == bundle_id(bundle_run.host_other)
    st = status(target)
    assert st["current"] == second["version"] and st["previous"] == first["version"]
    assert st["manifest"]["candidate_id"] == bundle_run.other
    assert st["deployed"]["deployed_at"] and len(st["versions"]) == 2
    back = rollback(target)
    assert back["current"] == first["version"]
    assert current_bundle(host_board) == bundle_id(bundle_run.host)
    assert os.readlink(host_board / "current") == f"versions/{first['version']}"


def test_tampered_bundle_is_refused(bundle_run, host_board, tmp_path):
    target = open_target("host")
    deploy(target, bundle_run.host)
    # Tampered before deploying: refused before anything reaches the board.
    copy = tmp_path / bundle_run.host_other.name
    shutil.copytree(bundle_run.host_other, copy)
    (copy / "labels.json").write_text('["x", "y"]\n')
    with pytest.raises(BundleError, match="labels.json"):
        deploy(target, copy)
    # Corrupted on the way: the board's own sha256 check refuses it.
    with pytest.raises(DeployError, match=r"step 4 \(verify hashes on the board\).*model.onnx"):
        deploy(target, bundle_run.host_other, shell=CorruptingShell("host"))
    assert current_bundle(host_board) == bundle_id(bundle_run.host)
    assert not list((host_board / "versions").glob("*.partial"))


@pytest.mark.parametrize("after", [0, 3])
def test_interrupted_deploy_keeps_the_old_version(bundle_run, host_board, after):
    target = open_target("host")
    deploy(target, bundle_run.host)
    before = os.readlink(host_board / "current")
    with pytest.raises(DeployError, match=r"step 3 \(upload\).*keeps running"):
        deploy(target, bundle_run.host_other, shell=InterruptedShell(after))
    assert os.readlink(host_board / "current") == before
    assert current_bundle(host_board) == bundle_id(bundle_run.host)
    # The self-check of what still runs passes, and the next deploy goes through.
    assert deploy(target, bundle_run.host_other)["previous"] == before.split("/")[-1]


def test_deploy_refuses_a_bundle_for_another_target(bundle_run, host_board):
    with pytest.raises(DeployError, match="built for target 'rpi4'"):
        deploy(open_target("host"), bundle_run.rpi4)


def test_deploy_cli_and_status(bundle_run, host_board, cli):
    res = cli(["deploy", "--target", "host", "--bundle", archive_path(bundle_run.host)])
    assert res.exit_code == 0, res.output
    assert "self-check passed" in res.output
    res = cli(["status", "--target", "host"])
    assert res.exit_code == 0 and bundle_run.selected in res.output
    res = cli(["deploy", "--target", "host", "--rollback"])
    assert res.exit_code != 0 and "no previous version" in res.output


# ---- bench -------------------------------------------------------------------------------------
def test_block_statistic_ignores_a_noisy_block():
    samples = [1.0] * 20 + [5.0] * 20 + [1.1] * 20
    stat, medians = block_statistic(samples, 3)
    assert stat == 1.0 and medians == [1.0, 5.0, 1.1]


def test_bench_gate_on_an_injected_regression(bundle_run, cli, tmp_path, bench_cli):
    base = tmp_path / "base.json"
    res = bench_cli("host", bundle_run.host, base, "--markdown", tmp_path / "base.md", "--iterations", 400)
    assert res.exit_code == 0, res.output
    report = json.loads(base.read_text())
    assert len(report["latency_ms_samples"]) == 400 and report["self_check_passed"]
    assert report["accuracy"]["accuracy"] is not None
    assert "min of block medians" in (tmp_path / "base.md").read_text()
    # The gate is judged on files, never on two wall-clock runs agreeing (a 19 us toy model on a
    # shared machine varies by more than any sane gate). A baseline 50x slower than what was
    # just measured passes; one 50x faster is a regression, however noisy the machine is.
    stat = report["summary"]["stat_ms"]
    for name, factor in (("slower", 50.0), ("faster", 1 / 50.0)):
        scaled = json.loads(json.dumps(report))
        scaled["summary"]["stat_ms"] = stat * factor
        (tmp_path / f"{name}.json").write_text(json.dumps(scaled))
    res = bench_cli("host", bundle_run.host, tmp_path / "rerun.json", "--baseline", tmp_path / "slower.json",
                    "--iterations", 100)
    assert res.exit_code == 0, res.output
    assert not json.loads((tmp_path / "rerun.json").read_text())["comparison"]["regressed"]
    # Against the faster baseline it fails, with the reports still written.
    res = bench_cli("host", bundle_run.host, tmp_path / "slow.json", "--markdown", tmp_path / "slow.md",
                    "--baseline", tmp_path / "faster.json", "--iterations", 100)
    assert res.exit_code == RegressionError.exit_code != 0, res.output
    assert "regressed" in res.output
    slow = json.loads((tmp_path / "slow.json").read_text())
    assert slow["comparison"]["regressed"] and slow["comparison"]["latency_ratio"] > 1.1
    assert "REGRESSION" in (tmp_path / "slow.md").read_text()


def test_bench_compare_is_a_pure_function_of_two_reports():
    """The gate's arithmetic, on made-up reports: exact, no timing involved."""
    from toolchain.bundle.bench import compare

    def report(stat_ms, acc):
        return {"summary": {"stat_ms": stat_ms}, "accuracy": {"accuracy": acc}}

    same = compare(report(2.0, 0.9), report(2.0, 0.9), 0.10)
    assert same["latency_ratio"] == 1.0 and not same["regressed"]
    assert not compare(report(2.19, 0.9), report(2.0, 0.9), 0.10)["regressed"]
    slow = compare(report(2.21, 0.9), report(2.0, 0.9), 0.10)
    assert slow["regressed"] and "above the baseline" in slow["problems"][0]
    worse = compare(report(2.0, 0.7), report(2.0, 0.9), 0.10)
    assert worse["regressed"] and "reference accuracy" in worse["problems"][0]
    with pytest.raises(ConfigError, match="not a 'codesign bench' JSON report"):
        compare(report(2.0, 0.9), {"summary": {}}, 0.10)


def test_bench_gate_on_accuracy(bundle_run, tmp_path):
    target = open_target("host")
    base = bench(target, bundle_run.host, iterations=50)
    better = json.loads(json.dumps(base))
    better["accuracy"]["accuracy"] = base["accuracy"]["accuracy"] + 0.2
    with pytest.raises(RegressionError, match="reference accuracy"):
        bench(target, bundle_run.host, baseline=better, iterations=50)


# ---- the MCU on a pty ------------------------------------------------------------------------------
@pytest.fixture
def mcu(bundle_run):
    if bundle_run.mcu is None:
        pytest.skip("needs make and cc for the posix firmware")
    return open_target("mcu-pty")


def test_mcu_deploy_interrupted_upload_keeps_previous_model(bundle_run, mcu, monkeypatch):
    from toolchain.bundle.deploy_mcu import deploy_mcu, status_mcu
    from toolchain.errors import TargetUnreachableError

    with mcu.connect() as link:
        first = deploy_mcu(mcu, bundle_run.mcu, link=link)
        assert first["self_check"]["passed"]
        check_a = int(first["self_check"]["crc32"], 16)
        assert link.self_check().crc == check_a
        real = link._send_chunk
        calls = []

        def dropping(off, data):
            calls.append(off)
            if len(calls) == 2:  # the cable is pulled mid-upload
                link.close()
                raise TargetUnreachableError(f"serial link {link.url!r} vanished")
            real(off, data)

        with (
            monkeypatch.context() as mp,
            pytest.raises(
                DeployError, match=r"step 3 \(upload.*keeps running the model with self-check CRC"
            ),
        ):
            mp.setattr(link, "_send_chunk", dropping)
            deploy_mcu(mcu, bundle_run.mcu_other, link=link)
        link.open()
        link.handshake()
        assert link.self_check().crc == check_a  # the previous model is still active
        st = status_mcu(mcu, link=link)
        assert st["active_model_crc32"] == first["model_crc32"]
        assert st["deployed"]["bundle_id"] == bundle_id(bundle_run.mcu)
        second = deploy_mcu(mcu, archive_path(bundle_run.mcu_other), link=link)
        assert second["previous_crc32"] == first["self_check"]["crc32"]


def test_mcu_deploy_and_bench_through_the_cli(bundle_run, mcu, cli, tmp_path, bench_cli):
    res = cli(["deploy", "--target", "mcu-pty", "--bundle", bundle_run.mcu])
    assert res.exit_code == 0, res.output
    assert "self-check passed: firmware CRC" in res.output
    out = tmp_path / "mcu.json"
    res = bench_cli("mcu-pty", archive_path(bundle_run.mcu), out, "--markdown", tmp_path / "mcu.md")
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["self_check_passed"] and report["accuracy"]["int8_exact"]
    assert report["emulated"] and report["latency_ms_samples"]
    res = cli(["status", "--target", "mcu-pty"])
    assert res.exit_code == 0 and "last recorded bundle" in res.output


@pytest.mark.slow
@pytest.mark.emulator
def test_mcu_qemu_bundle_deploy_and_bench_gate(bundle_run, tmp_path, monkeypatch):
    """The MCU in QEMU: instruction counts make the gate deterministic there."""
    if not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm")
    from toolchain.flows.bundle import bundle_for_target

    monkeypatch.setenv("CODESIGN_HOME", str(bundle_run.home))
    target = open_target("mcu-qemu")
    with bundle_run.store() as store:
        folder = bundle_for_target(
            bundle_run.run_dir, target, tmp_path, allow_unmeasured=True, store=store
        )
    assert deploy(target, archive_path(folder))["self_check"]["passed"]
    base = bench(target, folder, json_out=tmp_path / "base.json")
    assert base["accuracy"]["int8_exact"] and "instructions" in base["unit"]
    again = bench(target, folder, baseline=tmp_path / "base.json")
    assert again["comparison"]["latency_ratio"] == pytest.approx(1.0, abs=0.01)
    with pytest.raises(RegressionError, match="above the baseline"):
        bench(target, folder, baseline=tmp_path / "base.json", inject_slowdown=0.2)
