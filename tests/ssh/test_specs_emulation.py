"""Board specs load strictly and inside stated ranges; emulation helpers (fast) and the emulated
python (slow)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from toolchain.boards.emulation import aarch64
from toolchain.boards.emulation.aarch64 import (
    _guest_to_host,
    apt_mirror,
    cpuinfo_text,
    run_in_rootfs,
    write_python_shim,
)
from toolchain.config import target_spec as ts
from toolchain.config.target_spec import load_target_spec
from toolchain.errors import ConfigError

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


# --- ranges and allowed values of a target file ---------------------------------------------------



GOOD = 'kind = "local"\narch = "x86_64"\n'


def _load_text(tmp_path: Path, text: str, name: str = "board.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_target_spec(path, apply_env=False)


@pytest.mark.parametrize(
    "section, key, value, allowed",
    [
        ("estimate", "gflops_per_thread", "0", "> 0"),  # was a ZeroDivisionError
        ("estimate", "gflops_per_thread", "-2.5", "> 0"),  # was "-13.93 ms (predicted)"
        ("budgets", "latency_ms", "-5", "> 0"),  # was treated as no budget
        ("connection", "retries", "-3", "0..100"),
        ("connection", "port", "-1", "1..65535"),
        ("connection", "port", "70000", "1..65535"),
        ("", "threads", "99999999999", "1..1024"),
        ("", "threads", "0", "1..1024"),
        ("connection", "connect_timeout_s", "0", "> 0"),
        ("connection", "command_timeout_s", "-1", "> 0"),
        ("emulation", "latency_scale", "0", "> 0"),
        ("emulation", "latency_scale", "inf", "> 0"),
        ("estimate", "int8_speedup", "nan", "> 0"),
        ("emulation", "cpi", "-1", "> 0"),
        ("budgets", "ram_mb", "-0.5", "> 0"),
        ("mcu", "clock_hz", "-16", "1..10000000000"),
        ("connection", "baud", "0", "50..10000000"),
    ],
)
def test_out_of_range_numbers_name_file_key_value_and_range(tmp_path, section, key, value, allowed):
    body = f"{key} = {value}\n" if not section else f"[{section}]\n{key} = {value}\n"
    with pytest.raises(ConfigError) as info:
        _load_text(tmp_path, GOOD + body)
    msg = str(info.value)
    dotted = f"{section}.{key}" if section else key
    assert str(tmp_path / "board.toml") in msg and f"'{dotted}'" in msg and allowed in msg, msg
    assert value.lstrip("-").split(".")[0] in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "text, key, allowed",
    [
        ('kind = "local"\narch = "aarch46"\n', "arch", "'aarch64'"),
        (GOOD + '[[runtimes]]\nname = "onnxruntime"\nprovider = "GPU"\n', "runtimes[0].provider", "'CUDA'"),
        (GOOD + '[emulation]\nmethod = "qemu-user"\ncpu = "cortex-a99"\n', "emulation.cpu", "'cortex-a72'"),
        (GOOD + '[emulation]\nqemu_machine = "virt"\n', "emulation.qemu_machine", "'mps2-an386'"),
        (GOOD + '[emulation]\nrootfs = "ubuntu"\n', "emulation.rootfs", "debian-<suite>-arm64"),
        (GOOD + 'description = "two\\nlines"\n', "description", "printable"),
        (GOOD + "runtimes = []\n", "runtimes", "at least one"),
    ],
)
def test_strings_outside_their_allowed_set(tmp_path, text, key, allowed):
    with pytest.raises(ConfigError) as info:
        _load_text(tmp_path, text)
    msg = str(info.value)
    assert "board.toml" in msg and f"'{key}'" in msg and allowed in msg, msg


def test_zero_budgets_still_mean_not_stated(tmp_path):
    spec = _load_text(tmp_path, GOOD + "[budgets]\nlatency_ms = 0\nram_mb = 0\n[connection]\nport = 0\n")
    assert spec.budgets.latency_ms == 0 and spec.connection.port == 0


def test_every_shipped_target_is_inside_the_ranges():
    for name in ts.known_target_files():
        assert ts.spec_problem(load_target_spec(name, apply_env=False)) == ""


def test_every_numeric_field_has_a_range():
    numeric = {
        f"{prefix}{f.name}"
        for prefix, obj in ts._sections(load_target_spec("host", apply_env=False))
        for f in dataclasses.fields(obj)
        if f.type in ("int", "float")
    }
    assert numeric == set(ts.RANGES)


def test_emulation_cpu_lists_follow_the_emulator():
    assert set(ts.QEMU_USER_CPUS) == set(aarch64._CPUS)


def test_env_override_out_of_range_is_a_config_error(monkeypatch):
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_PORT", "-1")
    with pytest.raises(ConfigError, match="CODESIGN_TARGET_RPI4_PORT.*1..65535"):
        load_target_spec("rpi4")
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_PORT", "22")
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_RETRIES", "-3")
    with pytest.raises(ConfigError, match="CODESIGN_TARGET_RPI4_RETRIES.*0..100"):
        load_target_spec("rpi4")


def test_a_spec_built_in_code_meets_the_same_ranges():
    with pytest.raises(ValueError, match="'threads' is 0"):
        ts.TargetSpec(name="x", kind="local", arch="x86_64", threads=0)
    with pytest.raises(ValueError, match="'estimate.gflops_per_thread' is 0"):
        ts.TargetSpec(name="x", kind="local", arch="x86_64", estimate=ts.Estimate(gflops_per_thread=0.0))
