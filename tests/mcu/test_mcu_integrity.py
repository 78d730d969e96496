"""Protocol 2 integrity, in memory against FakeDevice: models named by an id that differs
between models, a commit retried until the device reports the new id, and every reply frame
checked so a corrupted field is retried instead of believed (issue 11, defect 4)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from mcu_helpers import FakeDevice, Faults, MemoryPort, Tamper, softmax_head

from toolchain.boards.serial_link import SerialLink
from toolchain.errors import ProtocolError, TransportError
from toolchain.mcu import quantize_head, run_int8
from toolchain.mcu.blob import model_id, to_blob

BLOB_A = bytes(range(256)) * 2
BLOB_B = bytes(range(255, -1, -1)) * 2


def link_to(device: FakeDevice, **kw) -> tuple[SerialLink, MemoryPort]:
    port = MemoryPort(device, tx=kw.pop("tx", None), rx=kw.pop("rx", None))
    kw.setdefault("timeout_s", 0.2)
    link = SerialLink("mem://fake", port=port, **kw)
    link.handshake()
    return link, port


def test_two_models_have_different_identities():
    device = FakeDevice()
    link, _ = link_to(device)
    assert link.upload_model(BLOB_A) == model_id(BLOB_A) == link.active_model_id()
    assert link.upload_model(BLOB_B) == model_id(BLOB_B) == link.active_model_id()
    assert model_id(BLOB_A) != model_id(BLOB_B)
    # What protocol 1 compared: the CRC over a whole blob is one constant for every blob.
    blob_a, blob_b = (b + zlib.crc32(b).to_bytes(4, "little") for b in (b"A" * 60, b"B" * 60))
    assert zlib.crc32(blob_a) == zlib.crc32(blob_b) and model_id(blob_a) != model_id(blob_b)


def test_garbled_commit_once_still_commits_the_new_model():
    device = FakeDevice()
    link, port = link_to(device)
    link.upload_model(BLOB_A)
    port.tx = Tamper(b"comm", times=1)  # "commit X" arrives as "commht X": unknown command
    assert link.upload_model(BLOB_B) == model_id(BLOB_B)
    assert port.tx.damaged == 1
    assert device.active == BLOB_B and link.active_model_id() == model_id(BLOB_B)
    assert device.commands.count(f"commit {model_id(BLOB_B):08x}") == 1  # the retry


def test_garbled_commit_every_time_is_an_error_and_the_old_model_stays():
    device = FakeDevice()
    link, port = link_to(device, retries=2)
    link.upload_model(BLOB_A)
    port.tx = Tamper(b"comm", times=None)
    with pytest.raises(TransportError, match=f"still runs model {model_id(BLOB_A):08x}") as err:
        link.upload_model(BLOB_B)
    assert "not confirmed after 3 attempts" in str(err.value) and "\n" not in str(err.value)
    assert port.tx.damaged == 3  # bounded: one commit per attempt
    assert device.active == BLOB_A and device.commits == 1
    port.tx = Faults()
    assert link.active_model_id() == model_id(BLOB_A)


def test_commit_of_a_corrupted_id_keeps_the_staging_and_retries():
    device = FakeDevice()
    link, port = link_to(device)
    link.upload_model(BLOB_A)
    # The first hex digit of the id flips: the device refuses that id and keeps the staging,
    # the reply fails its frame check (the device heard another command), the host retries.
    port.tx = Tamper(b"commit ", bit=1, times=1)
    assert link.upload_model(BLOB_B) == model_id(BLOB_B)
    assert port.tx.damaged == 1 and device.active == BLOB_B
    commits = [c for c in device.commands if c.startswith("commit")]
    assert commits[-2] != commits[-1] == f"commit {model_id(BLOB_B):08x}"
    assert sum(c.startswith("mload") for c in device.commands) == 2  # B staged once


def test_repeated_commit_of_the_active_model_succeeds():
    device = FakeDevice()
    link, _ = link_to(device)
    link.upload_model(BLOB_A)
    ident = model_id(BLOB_A)
    assert link.exchange(f"commit {ident:08x}") == [f"m-commit-[id={ident:08x}]"]
    with pytest.raises(ProtocolError, match="nothing staged"):
        link.exchange(f"commit {model_id(BLOB_B):08x}")


@pytest.fixture
def head(rng):
    layers, x, _ = softmax_head(rng, n_in=32, n_cls=5)
    q = quantize_head(layers, x)
    return q, q.quantize_input(x[:8])


def test_flipped_argmax_bit_is_corruption_retried_to_the_right_answer(head):
    q, x_q = head
    device = FakeDevice()
    link, port = link_to(device)
    link.upload_model(to_blob(q))
    port.rx = Tamper(b"m-argmax-[", times=1)
    results = [link.infer(row) for row in x_q]
    assert port.rx.damaged == 1
    assert [r.argmax for r in results] == list(run_int8(q, x_q).argmax(1))
    assert device.commands.count("results") == len(x_q) + 1  # one retried


def test_flipped_icount_and_output_digits_are_retried(head):
    q, x_q = head
    device = FakeDevice()
    link, port = link_to(device)
    link.upload_model(to_blob(q))
    port.rx = Tamper(b"icount=", times=1)
    assert link.infer(x_q[0]).icount == 700
    port.rx = Tamper(b"m-results-[", skip=1, times=1)
    assert np.array_equal(link.infer(x_q[1]).output, run_int8(q, x_q[1]))
    assert port.rx.damaged == 1


def test_a_command_corrupted_on_its_way_in_fails_the_frame_check(head):
    """'infer 1 0' heard as 'infer 3 0' gives a plausible reply for the wrong command: the
    frame check covers the command the device heard, so the host retries it."""
    q, x_q = head
    device = FakeDevice()
    link, port = link_to(device)
    link.upload_model(to_blob(q))
    port.tx = Tamper(b"infer ", bit=1, times=1)
    assert link.infer(x_q[0], repeat=1).icount == 700
    assert port.tx.damaged == 1 and "infer 3 0" in device.commands


def test_wrong_frame_check_every_time_is_an_error_not_a_value():
    device = FakeDevice()
    link, _ = link_to(device, retries=2)
    link.upload_model(BLOB_A)

    def wrong_fcs(argv, body):
        if argv[0] != "profile":
            return body
        i = body.index(b"m-fcs-[") + len(b"m-fcs-[")
        return body[:i] + (b"1" if body[i : i + 1] != b"1" else b"2") + body[i + 1 :]

    device.tamper = wrong_fcs
    with pytest.raises(TransportError, match="profile failed after 3 attempts.*frame check"):
        link.active_model_id()
    assert device.commands.count("profile") == 3  # bounded: retries + 1


def test_an_intact_refusal_is_not_retried():
    device = FakeDevice()
    link, _ = link_to(device)
    with pytest.raises(ProtocolError, match="unknown command 'bogus'"):
        link.command("bogus")
    assert device.commands.count("bogus") == 1


@pytest.mark.parametrize("proto", [1, 3])
def test_other_protocol_version_is_one_line_telling_to_reflash(proto):
    device = FakeDevice(proto=proto)  # proto 1 sends no m-fcs line, like the old firmware
    port = MemoryPort(device)
    link = SerialLink("mem://fake", port=port, timeout_s=0.2)
    with pytest.raises(ProtocolError) as err:
        link.handshake()
    msg = str(err.value)
    assert f"speaks protocol {proto}, this host speaks 2" in msg and "reflash" in msg
    assert "\n" not in msg
    assert device.commands.count("version") == (2 if proto == 1 else 1)
