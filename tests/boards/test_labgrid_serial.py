"""The labgrid kind's microcontroller boards: a local labgrid environment (no coordinator) whose
target gives a ``RawSerialPort`` on a pty served by the real posix firmware. Through
``kind = "labgrid"``: the handshake, upload + self-check + inferences (``run_head``) and
``status``, all over codesign's framed link on the resource's port. No root needed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
MCU_TESTS = HERE.parent / "mcu"
if str(MCU_TESTS) not in sys.path:
    sys.path.insert(0, str(MCU_TESTS))

from mcu_helpers import make, relu_mlp_head  # noqa: E402

from toolchain.boards.mcu_emulation import posix_pty  # noqa: E402
from toolchain.boards.registry import open_target  # noqa: E402
from toolchain.errors import TargetError  # noqa: E402


@pytest.fixture(scope="module")
def posix_fw(tmp_path_factory) -> Path:
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("a host C compiler and make are needed (apt-get install gcc make)")
    out = tmp_path_factory.mktemp("fw")
    make(out, "posix")
    return out / "posix" / "codesign-fw"


def write_mcu_env(path: Path, resources: dict[str, list[dict]]) -> Path:
    """A local labgrid environment: per target name its resources (JSON is YAML)."""
    targets = {name: {"resources": res, "drivers": []} for name, res in resources.items()}
    path.write_text(json.dumps({"targets": targets}, indent=1))
    return path


def write_mcu_target(folder: Path, name: str = "lab-mcu", lg_target: str = "mcu-1") -> Path:
    """A ``kind = "labgrid"`` target file for an MCU: [mcu] and [budgets] as kind "serial" has."""
    path = folder / f"{name}.toml"
    path.write_text("\n".join([
        f'name = "{name}"', 'kind = "labgrid"', 'arch = "x86_64"', "threads = 1", "",
        "[connection]", "connect_timeout_s = 5.0", "command_timeout_s = 10.0", "retries = 2", "",
        "[budgets]", "flash_kb = 1024", "ram_mb = 0.25", "",
        "[mcu]", "flash_kb = 1024", "ram_kb = 256", 'core = "posix"', "",
        "[[runtimes]]", 'name = "firmware"', 'provider = "posix"', 'version = "0.1.0"', "",
        "[labgrid]", 'env = "farm.yaml"', f'target = "{lg_target}"', "",
    ]))
    return path


@pytest.fixture
def rng_heads():
    from toolchain.mcu import quantize_head

    layers, x, _ = relu_mlp_head(np.random.default_rng(7), n_in=64, hidden=32, n_cls=4)
    return quantize_head(layers, x), x


def test_raw_serial_port_board_runs_heads_over_codesigns_link(labgrid, posix_fw, rng_heads, tmp_path):
    from toolchain.mcu import run_int8, selfcheck_crc

    head, x = rng_heads
    with posix_pty(posix_fw) as pty:
        write_mcu_env(tmp_path / "farm.yaml",
                      {"mcu-1": [{"RawSerialPort": {"port": pty, "speed": 115200}}]})
        with open_target(str(write_mcu_target(tmp_path))) as target:
            # The resource decides: a serial port and no NetworkService is a microcontroller.
            assert target.measures == "head" and target.bundle_runtime == "firmware"
            answer = target.reachability()  # a handshake on the resource's port
            assert answer.reachable and "firmware" in answer.detail and pty in answer.detail
            assert target.status()["active_selfcheck_crc32"] is None  # nothing uploaded yet
            run = target.run_head(head, x[:6])  # budget, upload, self-check, 6 inferences
            board = target.acquire()
            assert board.spec.connection.device == pty and board.spec.connection.baud == 115200
            assert not board.uses_emulation() and run.emulated is False
            assert run.firmware["port"] == "posix" and run.counter_unit == "ns"
            assert run.selfcheck_crc == selfcheck_crc(head)
            assert np.array_equal(run.outputs, run_int8(head, head.quantize_input(x[:6])))
            # A second link (status) to the same pty finds the model the first one committed.
            status = target.status()
            assert status["device"] == pty and status["emulated"] is False
            assert status["active_selfcheck_crc32"] == f"{selfcheck_crc(head):08x}"
            with pytest.raises(TargetError, match="is a microcontroller board .* no shell"):
                target.open_shell()
            with pytest.raises(TargetError, match="runs int8 quantized heads"):
                target.run_agent(tmp_path, warmup=0, iterations=1, threads=1)


def test_network_service_with_a_console_stays_a_linux_board(labgrid, tmp_path):
    write_mcu_env(tmp_path / "farm.yaml", {"mcu-1": [
        {"NetworkService": {"address": "127.0.0.1", "username": "pi", "port": 9}},
        {"RawSerialPort": {"port": "/dev/ttyUSB7", "speed": 115200}}]})
    target = open_target(str(write_mcu_target(tmp_path)))
    assert target.measures == "artefact" and target.bundle_runtime == "onnxruntime"
    with pytest.raises(TargetError, match="cannot run an int8 head .*NetworkService"):
        target.run_head(None, None)


def test_vanished_port_is_an_error_not_an_emulation(labgrid, posix_fw, rng_heads, tmp_path):
    """The pty is gone: one-line TargetError, never a silent fallback to the pty emulation."""
    head, x = rng_heads
    gone = str(tmp_path / "ttyACM9")
    write_mcu_env(tmp_path / "farm.yaml", {"mcu-1": [{"RawSerialPort": {"port": gone}}]})
    spec_path = write_mcu_target(tmp_path)
    with open(spec_path, "a") as f:  # an [emulation] method the kind "serial" would fall back to
        f.write('[emulation]\nmethod = "pty"\n')
    target = open_target(str(spec_path))
    assert target.measures == "head" and not target.reachability().reachable
    with pytest.raises(TargetError) as err:
        target.run_head(head, x[:1])
    assert gone in str(err.value) and "\n" not in str(err.value)
    target.close()
    # --emulate, though, runs it on the spec's emulation (the posix firmware on a pty).
    emulated = open_target(str(spec_path), emulate=True)
    run = emulated.run_head(head, x[:2])
    assert run.emulated is True and run.counter_unit == "ns"


def test_mcu_bundles_deploy_bench_and_roll_back_through_the_labgrid_kind(
        labgrid, posix_fw, tiny_run, tmp_path):
    """Two MCU bundles of the run, built for the labgrid target (its selection predicted as an
    int8 head, as for kind "serial"), deployed to the farm board in turn; rollback restores A."""
    from toolchain.bundle.bench import bench
    from toolchain.bundle.build import build_bundle
    from toolchain.bundle.deploy import bundle_id
    from toolchain.flows.bundle import bundle_for_target

    with posix_pty(posix_fw) as pty:
        write_mcu_env(tmp_path / "farm.yaml",
                      {"mcu-1": [{"RawSerialPort": {"port": pty, "speed": 115200}}]})
        spec_path = write_mcu_target(tmp_path)
        with open_target(str(spec_path)) as target:
            a = bundle_for_target(tiny_run, target, tmp_path / "a", allow_unmeasured=True)
            heads = sorted(p.stem for p in (tiny_run / "heads").glob("*.safetensors"))
            chosen = json.loads((a / "manifest.json").read_text())["base_candidate_id"]
            other = next(h for h in heads if h != chosen)
            b = build_bundle(tiny_run, target.spec, tmp_path / "b", candidate_id=other,
                             allow_unmeasured=True)
            first = target.deploy(a)
            assert first["device"] == pty and first["emulated"] is False
            assert first["self_check"]["passed"] and first["previous_crc32"] is None
            second = target.deploy(b)
            assert second["previous_crc32"] == first["self_check"]["crc32"]
            st = target.status()
            assert st["deployed"]["bundle_id"] == bundle_id(b) and st["device"] == pty
            report = bench(target, b, iterations=16, warmup=0, blocks=1)
            assert report["bundle_id"] == bundle_id(b) and report["emulated"] is False
            assert report["runtime"]["name"] == "firmware" and report["runtime"]["port"] == "posix"
            back = target.rollback()
            assert target.status()["deployed"]["bundle_id"] == bundle_id(a), back
