"""The posix firmware end to end: on a real pty, through a fault-injecting proxy, and fuzzed."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest
from mcu_helpers import (
    Faults,
    PipePort,
    Tamper,
    make,
    relu_mlp_head,
    softmax_head,
    start_pipe_firmware,
    stop,
)

from toolchain.boards.mcu_emulation import posix_pty
from toolchain.boards.registry import open_target
from toolchain.boards.serial_link import SerialLink
from toolchain.errors import ProtocolError, TransportError
from toolchain.mcu import quantize_head, run_int8, selfcheck_crc
from toolchain.mcu.blob import model_id, to_blob, to_c_header


@pytest.fixture
def heads(rng):
    a_layers, a_x, _ = relu_mlp_head(rng, n_in=128, hidden=64, n_cls=5)
    b_layers, b_x, _ = softmax_head(rng, n_in=128, n_cls=5)
    return (quantize_head(a_layers, a_x), a_x), (quantize_head(b_layers, b_x), b_x)


def test_pty_upload_selfcheck_and_100_inferences_bit_exact(posix_fw, heads):
    (head, x), _ = heads
    x_q = head.quantize_input(x[:120])
    with posix_pty(posix_fw) as path, SerialLink(path, timeout_s=2.0) as link:
        assert path.startswith("/dev/pts/")
        info = link.handshake()
        assert (
            info.port == "posix" and info.counter_unit == "ns" and info.compiler.startswith("gcc")
        )
        assert link.active_model_id() is None
        crc = link.upload_model(to_blob(head))
        assert link.active_model_id() == crc == model_id(to_blob(head))
        check = link.self_check()
        assert check.n == 8 and check.crc == selfcheck_crc(head) and check.icount > 0
        results = [link.infer(row) for row in x_q]
    outputs = np.stack([r.output for r in results])
    assert np.array_equal(outputs, run_int8(head, x_q))
    assert [r.argmax for r in results] == list(outputs.argmax(1))
    assert all(r.icount > 0 for r in results)


def test_interrupted_upload_keeps_previous_model(posix_fw, heads):
    (head_a, _), (head_b, _) = heads
    blob_b = to_blob(head_b)
    with posix_pty(posix_fw) as path:
        with SerialLink(path) as link:
            link.handshake()
            crc_a = link.upload_model(to_blob(head_a))
            # Start uploading B and vanish halfway: no commit.
            link.command(f"mload {len(blob_b)} {model_id(blob_b):08x}")
            link.exchange(
                f"mdata 0 {blob_b[:128].hex()} {zlib.crc32(blob_b[:128], zlib.crc32(bytes(4))):08x}"
            )
        with SerialLink(path) as link:  # a new host session on the same device
            link.handshake()
            assert link.active_model_id() == crc_a
            with pytest.raises(ProtocolError, match="upload incomplete"):
                link.exchange(f"commit {model_id(blob_b):08x}")
            assert link.self_check().crc == selfcheck_crc(head_a)
            # A staged blob whose content does not match the id mload announced is refused.
            link.command(f"mload {len(blob_b)} 00000000")
            for off in range(0, len(blob_b), 200):
                link.exchange(_mdata(off, blob_b[off : off + 200]))
            with pytest.raises(ProtocolError, match="does not match its id, previous model kept"):
                link.exchange("commit 00000000")
            assert link.active_model_id() == crc_a


def _mdata(off: int, data: bytes) -> str:
    from toolchain.mcu.protocol import mdata_command

    return mdata_command(off, data)


def test_mlperf_style_commands(posix_fw, heads):
    (head, x), _ = heads
    with posix_pty(posix_fw) as path, SerialLink(path) as link:
        link.handshake()
        assert link.command("name") == ["m-name-dut-[codesign-posix]"]
        with pytest.raises(ProtocolError, match="no model committed"):
            link.infer(head.quantize_input(x[0]))
        link.upload_model(to_blob(head))
        r = link.infer(head.quantize_input(x[0]), repeat=5, warmup=2)
        assert np.array_equal(r.output, run_int8(head, head.quantize_input(x[0])))
        assert link.exchange("db load 3") == ["m-[Expecting 3 bytes]"]
        with pytest.raises(ProtocolError, match="more bytes than announced"):
            link.exchange("db 0102030405")
        with pytest.raises(ProtocolError, match="out of range"):
            link.exchange("infer 99999999 0")


@pytest.mark.parametrize(
    "tx,rx",
    [
        (dict(corrupt=0.001), dict()),
        (dict(), dict(corrupt=0.001)),
        (dict(drop=0.001), dict(drop=0.0005)),
        (dict(corrupt=0.0005, drop=0.0005), dict(corrupt=0.0005, drop=0.0005)),
    ],
    ids=["corrupt-tx", "corrupt-rx", "drop-both", "mixed"],
)
def test_fault_proxy_recovers_and_never_commits_corruption(posix_fw, heads, tx, rx):
    (head, x), _ = heads
    blob = to_blob(head)
    proc = start_pipe_firmware(posix_fw)
    port = PipePort(proc, Faults(seed=11, **tx), Faults(seed=12, **rx))
    try:
        link = SerialLink("pipe://posix-fw", port=port, timeout_s=0.15, retries=8)
        link.handshake()
        assert link.upload_model(blob) == model_id(blob)
        # Verify over a clean wire: the device holds exactly the uploaded model.
        port.tx, port.rx = Faults(), Faults()
        link.sync()
        assert link.active_model_id() == model_id(blob)
        assert link.self_check().crc == selfcheck_crc(head)
        port.tx, port.rx = Faults(seed=13, **tx), Faults(seed=14, **rx)
        x_q = head.quantize_input(x[:20])
        outs = np.stack([link.infer(row).output for row in x_q])
        assert np.array_equal(outs, run_int8(head, x_q))
        assert port.tx.damaged + port.rx.damaged > 0
    finally:
        stop(proc)
    assert proc.returncode is not None


def test_fault_proxy_stall_fails_within_timeout_and_keeps_model(posix_fw, heads):
    (head_a, _), (head_b, _) = heads
    proc = start_pipe_firmware(posix_fw)
    port = PipePort(proc)
    try:
        link = SerialLink("pipe://posix-fw", port=port, timeout_s=0.1, retries=2)
        link.handshake()
        crc_a = link.upload_model(to_blob(head_a))
        sent = {"n": 0}
        original = port.tx.apply

        def stall_after_some_chunks(data: bytes) -> bytes:
            sent["n"] += 1
            return b"" if sent["n"] > 5 else original(data)

        port.tx.apply = stall_after_some_chunks
        start = time.monotonic()
        with pytest.raises(TransportError) as err:
            link.upload_model(to_blob(head_b))
        assert time.monotonic() - start < 30.0  # never a hang (generous under load)
        assert "pipe://posix-fw" in str(err.value) and "last reply" in str(err.value)
        port.tx = Faults()  # the cable works again
        link.sync()
        assert link.active_model_id() == crc_a
    finally:
        stop(proc)


def test_baked_model_is_active_at_boot(tmp_path, heads):
    (head, _), _ = heads
    header = tmp_path / "model.h"
    header.write_text(to_c_header(head))
    make(tmp_path / "out", "posix", BAKED=str(header))
    with posix_pty(tmp_path / "out" / "posix" / "codesign-fw") as path, SerialLink(path) as link:
        link.handshake()
        assert link.active_model_id() == model_id(to_blob(head))
        assert link.self_check().crc == selfcheck_crc(head)


def test_serial_target_flow_on_mcu_pty(posix_fw, heads):
    (head, x), _ = heads
    target = open_target("mcu-pty")
    target.build_dir = posix_fw.parent.parent
    run = target.run_head(head, x[:10])
    assert run.emulated and run.counter_unit == "ns"
    assert np.array_equal(run.outputs, run_int8(head, head.quantize_input(x[:10])))
    assert run.selfcheck_crc == selfcheck_crc(head) and run.model_crc == model_id(to_blob(head))
    assert run.counts.shape == (10,) and (run.counts > 0).all()
    assert run.to_dict()["firmware"]["port"] == "posix"


# ---------------------------------------------------------------- protocol 2 integrity


@pytest.fixture
def pipe_link(posix_fw):
    """A link to the posix firmware on pipes, whose tx/rx faults a test swaps at will."""
    proc = start_pipe_firmware(posix_fw)
    port = PipePort(proc)
    link = SerialLink("pipe://posix-fw", port=port, timeout_s=0.5, retries=3)
    link.handshake()
    try:
        yield link, port
    finally:
        stop(proc)


def test_two_models_have_different_identities_on_the_firmware(pipe_link, heads):
    (head_a, _), (head_b, _) = heads
    link, _ = pipe_link
    link.upload_model(to_blob(head_a))
    id_a = link.active_model_id()
    link.upload_model(to_blob(head_b))
    id_b = link.active_model_id()
    assert (id_a, id_b) == (model_id(to_blob(head_a)), model_id(to_blob(head_b)))
    assert id_a != id_b


def test_firmware_garbled_commit_once_still_activates_the_new_model(pipe_link, heads):
    (head_a, _), (head_b, _) = heads
    link, port = pipe_link
    link.upload_model(to_blob(head_a))
    port.tx = Tamper(b"comm", times=1)  # "commit" heard as "commht": an unknown command
    assert link.upload_model(to_blob(head_b)) == model_id(to_blob(head_b))
    assert port.tx.damaged == 1
    port.tx = Faults()
    assert link.active_model_id() == model_id(to_blob(head_b))
    assert link.self_check().crc == selfcheck_crc(head_b)


def test_firmware_garbled_commit_every_time_fails_and_keeps_the_old_model(pipe_link, heads):
    (head_a, _), (head_b, _) = heads
    link, port = pipe_link
    id_a = link.upload_model(to_blob(head_a))
    port.tx = Tamper(b"comm", times=None)
    with pytest.raises(TransportError, match=f"not confirmed.*still runs model {id_a:08x}"):
        link.upload_model(to_blob(head_b))
    assert port.tx.damaged == link.retries + 1  # bounded
    port.tx = Faults()
    assert link.active_model_id() == id_a
    assert link.self_check().crc == selfcheck_crc(head_a)


def test_firmware_flipped_argmax_bit_is_retried_to_the_right_answer(pipe_link, heads):
    (head, x), _ = heads
    link, port = pipe_link
    link.upload_model(to_blob(head))
    x_q = head.quantize_input(x[:10])
    port.rx = Tamper(b"m-argmax-[", times=1)
    results = [link.infer(row) for row in x_q]
    assert port.rx.damaged == 1
    expected = run_int8(head, x_q)
    assert np.array_equal(np.stack([r.output for r in results]), expected)
    assert [r.argmax for r in results] == list(expected.argmax(1))


def test_firmware_commit_names_the_model_and_repeats_harmlessly(pipe_link, heads):
    (head_a, _), (head_b, _) = heads
    link, _ = pipe_link
    id_a = link.upload_model(to_blob(head_a))
    assert link.exchange(f"commit {id_a:08x}") == [f"m-commit-[id={id_a:08x}]"]
    with pytest.raises(ProtocolError, match="nothing staged"):
        link.exchange(f"commit {model_id(to_blob(head_b)):08x}")
    assert link.active_model_id() == id_a
