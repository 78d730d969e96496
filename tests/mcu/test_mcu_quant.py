"""Quantizer, blob, budget and target files: pure Python, no compiler needed."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from mcu_helpers import relu_mlp_head, softmax_head

from toolchain.boards.registry import open_target
from toolchain.config.target_spec import load_target_spec
from toolchain.errors import BundleError, QuantizationError, TargetError
from toolchain.heads.dense import DenseLayer, run_dense
from toolchain.mcu import check_budget, quantize_head, run_int8, selfcheck_crc
from toolchain.mcu.blob import blob_size, from_blob, to_blob, to_c_header
from toolchain.mcu.quantize import quantize_multiplier
from toolchain.mcu.reference import requantize


@pytest.mark.parametrize("make_head", [softmax_head, relu_mlp_head])
def test_int8_head_tracks_float_head(rng, make_head):
    layers, x, y = make_head(rng)
    head = quantize_head(layers, x)
    float_pred = run_dense(layers, x).argmax(1)
    int_logits = run_int8(head, head.quantize_input(x))
    assert (int_logits.argmax(1) == float_pred).mean() >= 0.95
    assert (int_logits.argmax(1) == y).mean() >= (float_pred == y).mean() - 0.03
    # Dequantized logits stay within a few output steps of the float logits.
    err = np.abs(head.dequantize_output(int_logits) - run_dense(layers, x))
    assert (
        np.percentile(err, 99) < 6 * head.output_scale + 0.05 * np.abs(run_dense(layers, x)).max()
    )


def test_quantized_layout_and_byte_counts(rng):
    layers, x, _ = relu_mlp_head(rng, n_in=128, hidden=64, n_cls=5)
    head = quantize_head(layers, x, n_reference=8)
    l0, l1 = head.layers
    assert l0.weight.dtype == np.int8 and l0.weight.shape == (64, 128)
    assert np.abs(l0.weight).max() == 127  # per-channel symmetric: each row uses the full range
    assert (np.abs(l0.weight).max(axis=1) == 127).all()
    assert l0.bias.dtype == np.int32 and l0.multiplier.dtype == np.int32
    assert (l0.multiplier >= 2**30).all() and (l0.multiplier < 2**31).all()
    assert l0.output_zero_point == -128  # ReLU output range starts at 0
    assert head.weight_bytes == 128 * 64 + 12 * 64 + 64 * 5 + 12 * 5
    assert head.activation_bytes == 128 + 64
    assert head.scratch_bytes == 0
    assert head.reference_inputs.shape == (8, 128) and head.reference_inputs.dtype == np.int8
    assert len(to_blob(head)) == blob_size(head)


@pytest.mark.parametrize("real", [1e-12, 3.1e-5, 0.0021, 0.5, 0.999999, 1.0, 7.25, 1234.5])
def test_quantize_multiplier_represents_real(real):
    mult, shift = quantize_multiplier(real)
    if real < 2**-32:
        assert (mult, shift) == (0, 0)
        return
    assert 2**30 <= mult < 2**31
    assert abs(mult * 2.0 ** (shift - 31) - real) <= real * 2**-30
    # Requantising a large accumulator reproduces the real product to within one step.
    acc = np.array([1_000_000, -1_000_000])
    got = requantize(acc, np.int32(mult), np.int32(shift))
    assert np.all(np.abs(got - acc * real) <= 1.0)


def test_quantize_rejects_bad_input(rng):
    layer = DenseLayer(np.ones((2, 4), np.float32), np.zeros(2, np.float32))
    with pytest.raises(QuantizationError, match="calibration"):
        quantize_head([layer], np.zeros((5, 3)))
    with pytest.raises(QuantizationError, match="empty head"):
        quantize_head([], np.zeros((5, 4)))
    tanh = DenseLayer(np.ones((2, 4), np.float32), np.zeros(2, np.float32), "tanh")
    with pytest.raises(QuantizationError, match="no int8 kernel"):
        quantize_head([tanh], rng.normal(size=(5, 4)))


def test_blob_round_trip_and_tamper_detection(rng):
    layers, x, _ = relu_mlp_head(rng)
    head = quantize_head(layers, x)
    blob = to_blob(head)
    assert blob[:4] == b"CSGN"
    assert int.from_bytes(blob[-4:], "little") == zlib.crc32(blob[:-4])
    again = from_blob(blob)
    xq = head.quantize_input(x[:50])
    assert np.array_equal(run_int8(again, xq), run_int8(head, xq))
    assert selfcheck_crc(again) == selfcheck_crc(head)
    tampered = bytearray(blob)
    tampered[100] ^= 1
    with pytest.raises(BundleError, match="CRC32"):
        from_blob(bytes(tampered))
    with pytest.raises(BundleError, match="shorter"):
        from_blob(blob[:10])


def test_c_header_contains_the_blob(rng):
    layers, x, _ = softmax_head(rng, n_in=16, n_cls=3)
    head = quantize_head(layers, x)
    text = to_c_header(head)
    blob = to_blob(head)
    assert f"cs_baked_blob_len = {len(blob)}u" in text
    body = text[text.index("{") + 1 : text.rindex("}")]
    values = bytes(int(v, 16) for v in body.replace("\n", "").split(",") if v.strip())
    assert values == blob


def test_budget_feasible_and_infeasible_with_reason(rng):
    spec = load_target_spec("mcu-qemu")
    small_layers, x, _ = softmax_head(rng, n_in=64, n_cls=4)
    small = quantize_head(small_layers, x)
    ok = check_budget(small, spec)
    assert ok.feasible and ok.reason == ""
    assert ok.flash_limit_bytes == 1024 * 1024  # min(chip 4 MiB, budget 1 MiB)
    # 1100 x 1024 int8 weights alone exceed the 1 MiB flash budget.
    big_layer = DenseLayer(
        rng.normal(size=(1100, 1024)).astype(np.float32), np.zeros(1100, np.float32)
    )
    big = quantize_head([big_layer], rng.normal(size=(20, 1024)))
    report = check_budget(big, spec)
    assert not report.feasible
    assert report.flash_needed_bytes > report.flash_limit_bytes
    assert "flash" in report.reason and "mcu-qemu" in report.reason and "exceeds" in report.reason
    # The real-board skeleton has a 40 KiB slot: the small head fits, a mid one does not.
    disco = load_target_spec("stm32f4-disco")
    mid = quantize_head(
        [DenseLayer(rng.normal(size=(64, 1024)).astype(np.float32), np.zeros(64, np.float32))],
        rng.normal(size=(20, 1024)),
    )
    assert check_budget(small, disco).feasible
    assert not check_budget(mid, disco).feasible


@pytest.mark.parametrize("name", ["mcu-qemu", "mcu-pty", "stm32f4-disco"])
def test_target_files_load_and_open(name):
    spec = load_target_spec(name)
    assert spec.kind == "serial" and spec.runtimes[0].name == "firmware"
    target = open_target(spec)
    assert type(target).__name__ == "SerialTarget"
    with pytest.raises(TargetError, match="microcontroller"):
        target.run_agent(None, warmup=0, iterations=1, threads=1)


def test_mcu_qemu_spec_states_its_model():
    spec = load_target_spec("mcu-qemu")
    assert spec.mcu.clock_hz == 25_000_000 and spec.mcu.core == "cortex-m4"
    assert spec.emulation.method == "qemu-system" and spec.emulation.qemu_machine == "mps2-an386"
    assert spec.emulation.cpi > 1.0 and "DDI 0439" in spec.emulation.calibration_source


def test_absent_board_is_unreachable_not_emulated():
    target = open_target("stm32f4-disco")
    assert not target.uses_emulation()  # method "none": never silently emulated
    state = target.reachability()
    assert not state.reachable and "/dev/ttyACM0" in state.detail
