"""The host link tested in memory against a byte buffer (a Python model of the firmware)."""

from __future__ import annotations

import time
import zlib

import numpy as np
import pytest
from mcu_helpers import FakeDevice, Faults, MemoryPort

from toolchain.boards.serial_link import SerialLink
from toolchain.errors import ProtocolError, TransportError
from toolchain.mcu import protocol as P
from toolchain.mcu.blob import model_id


def link_to(device: FakeDevice, **kw) -> tuple[SerialLink, MemoryPort]:
    port = MemoryPort(device, tx=kw.pop("tx", None), rx=kw.pop("rx", None))
    kw.setdefault("timeout_s", 0.2)
    return SerialLink("mem://fake", port=port, **kw), port


def test_handshake_reads_version_and_checks_protocol():
    link, port = link_to(FakeDevice())
    info = link.handshake()
    assert info.protocol == P.PROTOCOL_VERSION and info.counter_unit == "instructions"
    assert info.slot_bytes == 65536 and info.line_max == 512
    # The very first bytes end any partial line, then ping with a nonce.
    assert port.written.startswith(b"%ping ")
    old, _ = link_to(FakeDevice(proto=99))
    with pytest.raises(ProtocolError, match="speaks protocol 99.*rebuild"):
        old.handshake()


def test_sync_skips_garbage_and_stale_replies():
    device = FakeDevice()
    device.out += b"\x00\xffnoise m-pong-deadbeef\r\nm-ready\r\ne-[old]\r\nm-rea"
    link, _ = link_to(device)
    link.handshake()  # resynchronised past the garbage and the stale pong
    assert link.active_model_crc() is None


def test_upload_commits_and_chunks_carry_offset_crc():
    device = FakeDevice()
    link, port = link_to(device)
    link.handshake()
    blob = bytes(range(256)) * 9
    ident = link.upload_model(blob, chunk_bytes=100)
    assert ident == zlib.crc32(blob[:-4]) and device.active == blob and device.commits == 1
    sent = port.written.decode()
    assert f"mload {len(blob)} {ident:08x}%" in sent
    assert P.mdata_command(100, blob[100:200]) + "%" in sent
    assert sent.count("mdata ") == 24 and f"commit {ident:08x}%" in sent


def test_chunk_crc_covers_offset():
    data = b"hello"
    assert P.chunk_crc(0, data) != P.chunk_crc(256, data)
    cmd = P.mdata_command(256, data)
    off, hexdata, crc = cmd.split(" ")[1:]
    assert (int(off), bytes.fromhex(hexdata)) == (256, data)
    assert int(crc, 16) == zlib.crc32(data, zlib.crc32((256).to_bytes(4, "little")))


def test_lost_commit_reply_is_confirmed_by_profile():
    device = FakeDevice()
    link, _ = link_to(device)
    link.handshake()
    blob = b"\x01" * 300

    original = device.handle

    def handle(argv):
        if argv[0] == "commit":
            device.drop_next_replies = 1  # the commit happens, its reply is lost
        return original(argv)

    device.handle = handle
    assert link.upload_model(blob) == model_id(blob)
    assert device.active == blob and device.commits == 1


def test_noisy_wire_still_uploads_the_exact_model():
    device = FakeDevice()
    # Faults are seeded, but a reply that misses its timeout on a loaded machine adds a retry and
    # so shifts the fault sequence: the rates leave each line a ~30 % chance of damage (not ~60 %)
    # and the retries and timeout leave room, so no sequence fails 11 times running.
    tx, rx = Faults(seed=3, corrupt=0.0005), Faults(seed=4, corrupt=0.0005, drop=0.0005)
    link, _ = link_to(device, tx=tx, rx=rx, retries=10, timeout_s=0.5)
    link.handshake()
    blob = np.random.default_rng(0).integers(0, 256, 6000, dtype=np.uint8).tobytes()
    assert link.upload_model(blob) == model_id(blob)
    assert device.active == blob
    assert tx.damaged + rx.damaged > 0  # the faults really happened


def test_stalled_device_fails_cleanly_within_bounds():
    device = FakeDevice()
    tx = Faults()
    link, _ = link_to(device, tx=tx, timeout_s=0.1, retries=2)
    link.handshake()
    link.upload_model(b"A" * 500)
    tx.stalled = True
    start = time.monotonic()
    with pytest.raises(TransportError) as err:
        link.upload_model(b"B" * 500)
    elapsed = time.monotonic() - start
    assert elapsed < 20.0  # bounded: a few 0.1 s timeouts, never a hang (generous under load)
    assert "mem://fake" in str(err.value) and "last reply" in str(err.value)
    assert device.active == b"A" * 500  # the previous model stays


def test_device_refusal_is_a_protocol_error_naming_the_line():
    link, _ = link_to(FakeDevice())
    link.handshake()
    with pytest.raises(ProtocolError, match="unknown command 'bogus'"):
        link.exchange("bogus")


def test_reply_parsers():
    assert P.parse_fields("m-version-[proto=1;fw=0.1.0]", "version") == {
        "proto": "1",
        "fw": "0.1.0",
    }
    assert P.parse_list("m-results-[-128,0,127]", "results") == [-128, 0, 127]
    assert P.parse_value("m-crc-[0badf00d]", "crc") == "0badf00d"
    with pytest.raises(ProtocolError, match="expected a 'm-results"):
        P.parse_list("m-resul", "results")
    with pytest.raises(ProtocolError, match="malformed field"):
        P.parse_fields("m-version-[proto]", "version")
    assert P.max_chunk_bytes(512) * 2 + len("mdata 4294967295  ffffffff") <= 512
