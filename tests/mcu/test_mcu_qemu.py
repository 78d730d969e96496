"""QEMU mps2-an386 (Cortex-M4) end to end, and the bare-metal builds; skipped with the reason
when qemu-system-arm or arm-none-eabi-gcc is missing."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from mcu_helpers import needs_arm, needs_qemu, relu_mlp_head

from toolchain.boards.mcu_emulation import qemu_mps2
from toolchain.boards.registry import open_target
from toolchain.boards.serial_link import SerialLink
from toolchain.mcu import quantize_head, run_int8, selfcheck_crc
from toolchain.mcu.blob import model_id, to_blob


@needs_arm
@pytest.mark.parametrize("port", ["mps2", "stm32f4", "mps2-whole"])
def test_bare_metal_images_build_and_fit(fw_dir, port):
    """Each image within the flash budget its kind states: head-only images within
    budget.FIRMWARE_FLASH_BYTES, the whole-model image (tokenizer, depth-0, text commands)
    within budget.WHOLE_FIRMWARE_FLASH_BYTES, and only that image links the text path."""
    from toolchain.mcu.budget import FIRMWARE_FLASH_BYTES, WHOLE_FIRMWARE_FLASH_BYTES

    whole = port.endswith("-whole")
    elf = fw_dir / port / "codesign-fw.elf"
    assert elf.is_file()
    size = subprocess.run(
        ["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True
    )
    text, data, bss = (int(v) for v in size.stdout.splitlines()[1].split()[:3])
    assert 2_000 < text < (WHOLE_FIRMWARE_FLASH_BYTES if whole else FIRMWARE_FLASH_BYTES)
    ram = {"mps2": 4 << 20, "stm32f4": 128 << 10, "mps2-whole": 4 << 20}[port]
    assert data + bss < ram
    symbols = subprocess.run(
        ["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True
    )
    assert "cs_dense_s8" in symbols.stdout and " printf" not in symbols.stdout  # no libc
    assert ("cs_whole_classify" in symbols.stdout) == whole
    assert ("cs_wp_encode" in symbols.stdout) == whole


@pytest.fixture(scope="module")
def head():
    layers, x, _ = relu_mlp_head(np.random.default_rng(7), n_in=64, hidden=32, n_cls=4)
    return quantize_head(layers, x), x


def _session(image, head_and_x, n: int):
    head, x = head_and_x
    x_q = head.quantize_input(x[:n])
    with qemu_mps2(image) as url, SerialLink(url, timeout_s=5.0) as link:
        info = link.handshake()
        crc = link.upload_model(to_blob(head))
        check = link.self_check()
        results = [link.infer(row) for row in x_q]
        calib = [link.command(f"calib {k}")[0] for k in (1000, 2000, 100000)]
    return info, crc, check, results, calib


@needs_qemu
@pytest.mark.slow
def test_qemu_mps2_end_to_end_deterministic(fw_dir, head):
    image = fw_dir / "mps2" / "codesign-fw.elf"
    first = _session(image, head, 25)
    second = _session(image, head, 25)
    info, crc, check, results, calib = first
    q, x = head
    assert info.port == "mps2-an386" and info.counter_unit == "instructions"
    assert info.compiler.startswith("gcc") and info.slot_bytes == 1 << 20
    assert crc == model_id(to_blob(q)) and check.crc == selfcheck_crc(q)
    outs = np.stack([r.output for r in results])
    assert np.array_equal(outs, run_int8(q, q.quantize_input(x[:25])))
    counts = [r.icount for r in results]
    # 64x32 + 32x4 MACs: a few instructions each, counted in 40-instruction SysTick ticks.
    assert all(c % 40 == 0 and 2 * 2176 < c < 20 * 2176 for c in counts)
    # Same image, same inputs, fresh emulator: identical instruction counts.
    assert counts == [r.icount for r in second[3]]
    assert check.icount == second[2].icount
    # The calibration loop is 2 instructions per iteration: the SysTick scale of 40 instructions
    # per tick (25 MHz under -icount shift=0) makes differences exact to the instruction.
    ic = [int(line.split("icount=")[1].rstrip("]")) for line in calib]
    assert ic[1] - ic[0] == 2000
    assert ic[2] - ic[0] == 2 * (100000 - 1000)


@needs_qemu
@pytest.mark.slow
def test_serial_target_flow_on_mcu_qemu(fw_dir, head):
    q, x = head
    target = open_target("mcu-qemu")
    target.build_dir = fw_dir
    run = target.run_head(q, x[:5])
    assert run.emulated and run.counter_unit == "instructions"
    assert np.array_equal(run.outputs, run_int8(q, q.quantize_input(x[:5])))
    spec = target.spec
    expected_ms = run.counts * spec.emulation.cpi / spec.mcu.clock_hz * 1e3
    assert np.allclose(run.est_latency_ms, expected_ms)


@needs_qemu
@pytest.mark.slow
def test_large_head_is_baked_into_the_qemu_image(fw_dir, tmp_path):
    """A head over BAKE_ABOVE_BYTES boots already committed instead of a slow UART upload."""
    from toolchain.boards.serial_target import BAKE_ABOVE_BYTES
    from toolchain.heads.dense import DenseLayer

    rng = np.random.default_rng(3)
    layer = DenseLayer(rng.normal(size=(200, 400)).astype(np.float32), np.zeros(200, np.float32))
    x = rng.normal(size=(16, 400)).astype(np.float32)
    q = quantize_head([layer], x)
    assert len(to_blob(q)) > BAKE_ABOVE_BYTES
    target = open_target("mcu-qemu")
    target.build_dir = tmp_path
    run = target.run_head(q, x[:3])
    assert list((tmp_path / "baked-headers").glob("model-*.h"))
    assert run.model_crc == model_id(to_blob(q)) and run.selfcheck_crc == selfcheck_crc(q)
    assert np.array_equal(run.outputs, run_int8(q, q.quantize_input(x[:3])))
