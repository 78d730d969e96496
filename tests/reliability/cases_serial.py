"""Malformed serial replies from a microcontroller (issue 11, defect 4).

These faults are not CLI input: each case drives the library (``SerialLink``, which
``codesign deploy``/``profile`` use on MCU targets) against the in-memory FakeDevice of
tests/mcu with model A committed, injects one fault, and checks two things: the answer is one
``CodesignError`` line (never a false success, never a believed corrupted value) and the device
still runs model A. Blobs and the head are built from integers so messages are reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from reliability_harness import Case, Outcome

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mcu"))
from mcu_helpers import FakeDevice, Faults, MemoryPort, Tamper  # noqa: E402

from toolchain.boards.serial_link import SerialLink  # noqa: E402
from toolchain.errors import CodesignError, ProtocolError, TransportError  # noqa: E402
from toolchain.mcu.blob import model_id, to_blob  # noqa: E402
from toolchain.mcu.quantize import QuantizedHead, QuantizedLayer  # noqa: E402

DEPLOY = "codesign deploy --target mcu-pty --bundle B.tar.gz"


def _head(seed: int) -> QuantizedHead:
    """A 16 -> 4 int8 head from integers only (no float fitting: identical on every machine)."""
    k = np.arange(64, dtype=np.int64).reshape(4, 16)
    layer = QuantizedLayer(
        weight=(((k * (seed + 3)) % 13) - 6).astype(np.int8),
        bias=np.array([10, -20, 30, -40], np.int32) * (seed + 1),
        multiplier=np.full(4, 1 << 30, np.int32),
        shift=np.full(4, -2, np.int32),
        activation="none",
        weight_scale=np.full(4, 0.01, np.float32),
        input_scale=0.05,
        input_zero_point=0,
        output_scale=0.1,
        output_zero_point=0,
    )
    refs = ((np.arange(32).reshape(2, 16) * (seed + 5)) % 21 - 10).astype(np.int8)
    return QuantizedHead(layers=(layer,), reference_inputs=refs)


HEAD_A, HEAD_B = _head(0), _head(1)
BLOB_A, BLOB_B = to_blob(HEAD_A), to_blob(HEAD_B)


def _with_model_a(proto: int = 2) -> tuple[FakeDevice, MemoryPort, SerialLink]:
    device = FakeDevice()
    port = MemoryPort(device)
    link = SerialLink("mem://fake", port=port, timeout_s=0.1, retries=2)
    link.handshake()
    link.upload_model(BLOB_A)
    device.proto = proto
    return device, port, link


def _error(call, cls: type[CodesignError], expect: str) -> str:
    """The one line a user sees for ``call()``; fails on success (a false success) or on an
    error of another class, over more than one line, or without ``expect``."""
    try:
        result = call()
    except CodesignError as exc:
        msg = str(exc)
        assert isinstance(exc, cls), f"{type(exc).__name__}: {msg}"
        assert "\n" not in msg and expect in msg, msg
        return "error: " + msg
    raise AssertionError(f"no error: the call returned {result!r}")


def _a_still_active(device: FakeDevice, port: MemoryPort, link: SerialLink) -> str:
    assert device.active == BLOB_A and device.commits == 1, "model B got committed"
    port.tx, port.rx, device.tamper, device.proto = Faults(), Faults(), None, 2
    link.sync()
    assert link.active_model_id() == model_id(BLOB_A)
    return "model A still active"


def _garbled_commit(tmp):
    device, port, link = _with_model_a()
    port.tx = Tamper(b"comm", times=None)  # every 'commit' heard as 'commht'
    msg = _error(lambda: link.upload_model(BLOB_B), TransportError, "not confirmed")
    return Outcome(msg, _a_still_active(device, port, link))


def _garbled_argmax(tmp):
    device, port, link = _with_model_a()
    port.rx = Tamper(b"m-argmax-[", times=None)  # one bit of every argmax flipped
    x = np.arange(16, dtype=np.int8) - 8
    msg = _error(lambda: link.infer(x), TransportError, "frame check")
    return Outcome(msg, _a_still_active(device, port, link))


def _truncated_ack(tmp):
    device, port, link = _with_model_a()

    def cut(argv, body):  # every chunk's reply loses its second half, m-ready included
        return body[: len(body) // 2] if argv[0] == "mdata" else body

    device.tamper = cut
    msg = _error(lambda: link.upload_model(BLOB_B), TransportError, "keeps its previous model")
    return Outcome(msg, _a_still_active(device, port, link))


def _wrong_fcs(tmp):
    device, port, link = _with_model_a()

    def wrong(argv, body):  # a valid-looking frame check that does not match the reply
        if argv[0] != "selfcheck":
            return body
        i = body.index(b"m-fcs-[") + len(b"m-fcs-[")
        return body[:i] + (b"1" if body[i : i + 1] != b"1" else b"2") + body[i + 1 :]

    device.tamper = wrong
    msg = _error(link.self_check, TransportError, "frame check")
    return Outcome(msg, _a_still_active(device, port, link))


def _old_protocol(tmp):
    device, port, link = _with_model_a(proto=1)  # answers like protocol-1 firmware
    msg = _error(link.handshake, ProtocolError, "rebuild and reflash")
    return Outcome(msg, _a_still_active(device, port, link))


def _stalled(tmp):
    device, port, link = _with_model_a()
    port.tx.stalled = True  # the cable or the device hangs: nothing arrives any more
    msg = _error(lambda: link.upload_model(BLOB_B), TransportError, "did not answer")
    port.tx.stalled = False
    return Outcome(msg, _a_still_active(device, port, link))


def _unknown_reply(tmp):
    device, port, link = _with_model_a()
    # An intact frame around a reply the protocol does not define ('m-model-[crc=..]' is the
    # protocol-1 field, as from a mixed-up firmware build): refused at once, not retried.
    real = device.handle
    device.handle = lambda argv: (["m-profile-[codesign 0.1.0]", "m-model-[crc=2144df1c]"]
                                  if argv[0] == "profile" else real(argv))
    msg = _error(link.active_model_id, ProtocolError, "malformed model line")
    assert device.commands.count("profile") == 1
    device.handle = real
    return Outcome(msg, _a_still_active(device, port, link))


CASES = [
    Case("serial reply", "every commit garbled on the wire (reply fails its frame check)",
         DEPLOY, _garbled_commit),
    Case("serial reply", "a bit of every argmax reply flipped", "codesign profile --target "
         "mcu-pty (SerialLink.infer)", _garbled_argmax),
    Case("serial reply", "every upload-chunk reply truncated (no m-ready)", DEPLOY,
         _truncated_ack),
    Case("serial reply", "self-check reply with a wrong frame CRC", "codesign status --target "
         "mcu-pty (SerialLink.self_check)", _wrong_fcs),
    Case("serial reply", "firmware speaks protocol 1 (not rebuilt)", DEPLOY, _old_protocol),
    Case("serial reply", "device stalls mid-upload", DEPLOY, _stalled),
    Case("serial reply", "intact reply with a field the protocol does not define",
         "codesign status --target mcu-pty (SerialLink.active_model_id)", _unknown_reply),
]
