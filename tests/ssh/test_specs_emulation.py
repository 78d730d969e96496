"""Board specs load strictly; emulation helpers (fast) and the emulated python (slow)."""

from __future__ import annotations

import os

import pytest

from toolchain.boards.emulation import aarch64
from toolchain.boards.emulation.aarch64 import (
    _guest_to_host,
    apt_mirror,
    cpuinfo_text,
    run_in_rootfs,
    write_python_shim,
)
from toolchain.config.target_spec import load_target_spec

BOARDS = ["rpi4", "jetson-nano", "jetson-orin-nano"]


@pytest.mark.parametrize("name", BOARDS)
def test_board_specs_load(name):
    spec = load_target_spec(name, apply_env=False)
    assert spec.kind == "ssh" and spec.arch == "aarch64" and spec.threads == 4
    assert spec.emulation.method == "qemu-user" and spec.emulation.cpu in aarch64._CPUS
    assert spec.emulation.calibration_source.startswith("estimate")
    assert spec.budgets.ram_mb > 0 and spec.budgets.latency_ms > 0
    assert spec.estimate.gflops_per_thread > 0


def test_rpi4_env_overrides(monkeypatch):
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_HOST", "10.77.9.2")
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_PORT", "2222")
    conn = load_target_spec("rpi4").connection
    assert (conn.host, conn.port) == ("10.77.9.2", 2222)


def test_jetson_runtimes_are_gpu():
    for name in BOARDS[1:]:
        providers = {r.provider for r in load_target_spec(name, apply_env=False).runtimes}
        assert providers == {"CUDA", "TensorRT"}


def test_apt_mirror_parses_both_formats(tmp_path, monkeypatch):
    monkeypatch.delenv("CODESIGN_DEBIAN_MIRROR", raising=False)
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("# c\ndeb [arch=amd64] https://other.example/debian bookworm main\n")
    other = tmp_path / "nodesource.sources"
    other.write_text("Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n")
    assert apt_mirror([other, deb822]) == "http://mirror.example/debian"
    assert apt_mirror([one_line]) == "https://other.example/debian"
    assert apt_mirror([other]) == aarch64.FALLBACK_MIRROR
    monkeypatch.setenv("CODESIGN_DEBIAN_MIRROR", "http://x/debian")
    assert apt_mirror([deb822]) == "http://x/debian"


def test_cpuinfo_is_arm_shaped():
    text = cpuinfo_text("cortex-a72", cores=4)
    assert text.count("processor\t:") == 4 and "CPU part\t: 0xd08" in text
    assert "model name" not in text  # arm64 kernels print none; the agent maps the part number


def test_guest_paths_never_escape_to_the_host(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3.11").write_text("")
    os.symlink("python3.11", root / "usr/bin/python3")
    os.symlink("/usr/bin/python3.11", root / "usr/bin/abs")
    os.symlink("usr/bin", root / "bin")
    assert _guest_to_host(root, "python3") == root / "usr/bin/python3.11"
    assert _guest_to_host(root, "/usr/bin/abs") == root / "usr/bin/python3.11"
    assert _guest_to_host(root, "/bin/python3") == root / "usr/bin/python3.11"
    assert _guest_to_host(root, "/../../usr/bin/python3") == root / "usr/bin/python3.11"


@pytest.mark.slow
def test_rootfs_python_runs_aarch64_onnxruntime(rootfs):
    code = (
        "import platform, onnxruntime, numpy; "
        "print(platform.machine(), onnxruntime.__version__, open('/proc/cpuinfo').read().count('0xd08'))"
    )
    proc = run_in_rootfs(rootfs, ["python3", "-c", code], cpu="cortex-a72", timeout=120)
    assert proc.returncode == 0, proc.stderr
    machine, version, a72_cores = proc.stdout.split()
    import onnxruntime

    assert machine == "aarch64" and version == onnxruntime.__version__ and int(a72_cores) == 4


@pytest.mark.slow
def test_python_shim(rootfs, tmp_path):
    import subprocess

    shim = write_python_shim(rootfs, tmp_path / "bin", cpu="cortex-a57")
    proc = subprocess.run(
        [
            str(shim),
            "-c",
            "import platform, os; print(platform.machine(), os.environ['CODESIGN_EMULATED'])",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["aarch64", "qemu-user:cortex-a57"]


@pytest.mark.slow
def test_prepare_rootfs_is_cached(rootfs, monkeypatch):
    # Judged by what it does, not how long it takes: a cached rootfs builds nothing.
    def no_build(*args, **kwargs):
        raise AssertionError("a cached rootfs must not be rebuilt")

    monkeypatch.setattr(aarch64, "_build", no_build)
    assert aarch64.prepare_rootfs(dest=rootfs) == rootfs
