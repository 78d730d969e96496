"""Host side of the MCU protocol over pyserial: ``/dev/ttyUSB0``, a pty path, or
``socket://host:port`` (a QEMU chardev).

Every read has a deadline, so nothing blocks forever. Every reply carries a frame check
(``m-fcs-[..]``: a CRC32 over the command the device heard and every reply byte), so a reply
or command corrupted on the wire is a TransportError, never a believed answer. After garbage,
a timeout or a failed frame check the link resynchronises (a bare ``%`` ends any partial
line, then ``ping NONCE%`` must come back) and retries the whole idempotent transaction a
bounded number of times. A reply that passes its frame check is what the firmware said: a
refusal or a malformed field there is a ProtocolError and is not retried.

A model upload is staged on the device and committed by naming its id (the CRC32 of the blob
without its trailer, which differs between models); a commit whose reply is lost is retried
(committing the active model again succeeds), and success needs the device to report the new
model's id as active.
"""

from __future__ import annotations

import re
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ProtocolError, TargetUnreachableError, TransportError
from ..mcu import protocol as P


@dataclass(frozen=True)
class FirmwareInfo:
    protocol: int
    firmware: str
    port: str
    compiler: str
    counter_unit: str  # "instructions" | "cycles" | "ns"
    slot_bytes: int
    max_dim: int
    max_layers: int
    line_max: int


@dataclass(frozen=True)
class InferResult:
    output: np.ndarray  # int8 [out_dim]
    argmax: int
    icount: int  # counter units for ``repeat`` inferences


@dataclass(frozen=True)
class SelfCheck:
    n: int
    crc: int
    icount: int


def _retryable(exc: TransportError) -> bool:
    # A vanished port is final, and so is a ProtocolError: it comes from a reply that passed
    # its frame check, i.e. the firmware really said it. Garbled replies and timeouts are not.
    return not isinstance(exc, (TargetUnreachableError, ProtocolError))


class SerialLink:
    """One conversation with a firmware. Use as a context manager; ``handshake()`` first."""

    def __init__(
        self,
        url: str,
        *,
        baud: int = 115200,
        timeout_s: float = 2.0,
        retries: int = 3,
        connect_timeout_s: float = 10.0,
        port: Any = None,
    ) -> None:
        self.url = url
        self.baud = baud
        self.timeout_s = timeout_s
        self.retries = retries
        self.connect_timeout_s = connect_timeout_s
        self._port = port  # an injected file-like port (tests) or the pyserial object
        self._rx = bytearray()
        self.last_reply: list[str] = []
        self.info: FirmwareInfo | None = None

    # ------------------------------------------------------------------ transport
    def open(self) -> SerialLink:
        if self._port is not None:
            return self
        import serial  # heavy-ish and optional: only when a real link is opened

        deadline = time.monotonic() + self.connect_timeout_s
        while True:
            try:
                self._port = serial.serial_for_url(
                    self.url, baudrate=self.baud, timeout=0.05, write_timeout=self.timeout_s
                )
                return self
            except (serial.SerialException, OSError, ValueError) as exc:
                # QEMU's socket may not listen yet; a USB adapter may still be enumerating.
                if time.monotonic() >= deadline:
                    raise TargetUnreachableError(
                        f"cannot open serial link {self.url!r} within {self.connect_timeout_s:.0f} s "
                        f"({exc}); check the device path or socket, cabling and permissions "
                        "(dialout group)"
                    ) from exc
                time.sleep(0.1)

    def close(self) -> None:
        if self._port is not None:
            try:
                self._port.close()
            except OSError:
                pass  # closing a vanished device must not mask the original error
            self._port = None

    def __enter__(self) -> SerialLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fail(self, what: str) -> TransportError:
        last = " | ".join(self.last_reply[-4:]) or "(nothing)"
        return TransportError(f"{what} on {self.url!r}; last reply: {last}")

    def _odd(self, what: object) -> ProtocolError:
        """An intact reply the protocol does not allow: a firmware built from other sources."""
        return ProtocolError(
            f"{what} from {self.url!r} is not protocol {P.PROTOCOL_VERSION}; rebuild and "
            "reflash the firmware from this checkout"
        )

    def _write(self, data: bytes) -> None:
        if self._port is None:
            raise TransportError(f"serial link {self.url!r} is not open; call open() first")
        try:
            self._port.write(data)
            flush = getattr(self._port, "flush", None)
            if flush is not None:
                flush()
        except OSError as exc:  # pyserial's SerialException (and its timeout) are OSErrors
            raise self._fail(f"write failed ({exc})") from exc

    def _read_raw(self, deadline: float) -> bytes | None:
        """One reply line as sent, ``\n`` included (the frame check covers these bytes), or
        None at the deadline."""
        while True:
            nl = self._rx.find(b"\n")
            if nl >= 0:
                raw = bytes(self._rx[: nl + 1])
                del self._rx[: nl + 1]
                return raw
            if time.monotonic() >= deadline:
                return None
            try:
                waiting = getattr(self._port, "in_waiting", 0) or 1
                chunk = self._port.read(min(waiting, 4096))
            except OSError as exc:
                raise self._fail(f"read failed ({exc})") from exc
            if chunk:
                self._rx += chunk
                if len(self._rx) > 1 << 20:  # a babbling device: drop what cannot be a line
                    del self._rx[:-4096]

    def _read_line(self, deadline: float) -> str | None:
        """One reply line without its EOL, or None at the deadline."""
        raw = self._read_raw(deadline)
        return None if raw is None else _text(raw)

    def _transceive(self, command: str, timeout_s: float | None) -> tuple[list[str], bool | None]:
        """Send one command; return its reply lines up to (without) m-fcs and ``m-ready``, and
        whether the frame check held: True, False, or None when the reply had no m-fcs line
        (a firmware older than protocol 2, or an m-fcs line lost on the wire)."""
        limit = timeout_s or self.timeout_s
        deadline = time.monotonic() + limit
        self._write(command.encode("ascii") + P.TERMINATOR)
        lines: list[str] = []
        raws: list[bytes] = []
        fcs: int | None = None
        intact = True
        while True:
            raw = self._read_raw(deadline)
            if raw is None:
                self.last_reply = lines
                raise self._fail(f"no 'm-ready' after {command[:24]!r} within {limit:.1f} s")
            line = _text(raw)
            if line == P.READY:
                self.last_reply = lines
                if fcs is None:
                    return lines, None
                return lines, intact and fcs == P.reply_crc(command, raws)
            if fcs is not None:
                intact = False  # nothing may follow the frame check but m-ready
            if line.startswith(P.FCS):
                value = line[len(P.FCS) :]
                if len(value) == 10 and value[0] + value[-1] == "[]":
                    try:
                        fcs = int(value[1:-1], 16)
                    except ValueError:
                        intact, fcs = False, -1
                else:
                    intact, fcs = False, -1
                continue
            if not (line.startswith(P.PREFIX_OK) or line.startswith(P.PREFIX_ERR)):
                self.last_reply = [*lines, line]
                raise self._fail(f"garbled reply line {line[:60]!r}")
            lines.append(line)
            raws.append(raw)

    def exchange(self, command: str, *, timeout_s: float | None = None) -> list[str]:
        """Send one command, return its reply lines up to (without) m-fcs and ``m-ready``.

        Raises TransportError on timeout, garbage or a failed frame check (corrupted on the
        wire: retry), ProtocolError if the intact reply is a refusal ``e-...`` (not retried).
        """
        lines, intact = self._transceive(command, timeout_s)
        if intact is not True:
            what = "failed its frame check" if intact is False else "lacks its m-fcs frame check"
            raise self._fail(f"reply to {command[:24]!r} {what} (corrupted on the wire)")
        errors = [x for x in lines if x.startswith(P.PREFIX_ERR)]
        if errors:
            raise ProtocolError(f"device {self.url!r} refused {command[:24]!r}: {errors[0]}")
        return lines

    def sync(self) -> None:
        """Bring host and device back in step: drop stale bytes, end any partial line, and wait
        for the echo of a fresh nonce."""
        for _ in range(self.retries + 1):
            nonce = secrets.token_hex(4)
            self._rx.clear()
            reset = getattr(self._port, "reset_input_buffer", None)
            if reset is not None:
                reset()
            self._write(P.TERMINATOR + f"{P.CMD_PING} {nonce}".encode() + P.TERMINATOR)
            deadline = time.monotonic() + self.timeout_s
            seen_pong = False
            while True:
                line = self._read_line(deadline)
                if line is None:
                    break
                if line == f"m-pong-{nonce}":
                    seen_pong = True
                elif seen_pong and line == P.READY:
                    return  # the m-fcs line in between is not needed: this only aligns
                elif not line.startswith(P.FCS):
                    # Named without the random nonce, so the same fault reads the same.
                    self.last_reply = [line.replace(nonce, "<nonce>")]
        raise self._fail(f"firmware did not answer 'ping' after {self.retries + 1} tries")

    def transact(self, steps, *, what: str, timeout_s: float | None = None):
        """Run ``steps(timeout_s)`` (idempotent as a whole) with resync-and-retry on transport
        faults; a ProtocolError (an intact reply the firmware meant) is raised at once."""
        last: TransportError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.sync()  # raises when the device no longer answers: retrying is pointless
            try:
                return steps(timeout_s)
            except TransportError as exc:
                if not _retryable(exc):
                    raise
                last = exc
        raise TransportError(f"{what} failed after {self.retries + 1} attempts: {last}") from last

    def command(self, command: str, *, timeout_s: float | None = None) -> list[str]:
        """An idempotent single command with retries."""
        return self.transact(
            lambda t: self.exchange(command, timeout_s=t), what=command, timeout_s=timeout_s
        )

    # ------------------------------------------------------------------ protocol verbs
    def handshake(self) -> FirmwareInfo:
        """Sync and check the firmware speaks our protocol version."""
        self.sync()
        seen: list[int] = []

        def steps(t: float | None) -> tuple[str, int]:
            # Read leniently first: a firmware of another protocol version may not frame its
            # replies the way this host checks them, and must get the rebuild message.
            lines, intact = self._transceive(P.CMD_VERSION, t)
            line = next((x for x in lines if x.startswith("m-version-[")), None)
            m = _PROTO.search(line or "")
            proto = int(m.group(1)) if m else None
            if intact is True and proto is None:
                raise ProtocolError(
                    f"device at {self.url!r} does not answer 'version' like codesign firmware "
                    f"({lines[:2]!r}); flash firmware_stubs from this checkout"
                )
            if intact is True or (proto is not None and proto != P.PROTOCOL_VERSION
                                  and seen[-1:] == [proto]):
                return line, proto  # framed, or the same other version twice in a row
            if proto is not None:
                seen.append(proto)
            raise self._fail("version reply failed its frame check (corrupted on the wire)")

        line, proto = self.transact(steps, what="version")
        if proto != P.PROTOCOL_VERSION:
            raise ProtocolError(
                f"firmware at {self.url!r} speaks protocol {proto}, this host speaks "
                f"{P.PROTOCOL_VERSION}: rebuild and reflash it from this checkout "
                "(make -C firmware_stubs, then flash the image for your board)"
            )
        f = P.parse_fields(line, "version")
        try:
            info = FirmwareInfo(
                protocol=proto,
                firmware=f["fw"],
                port=f["port"],
                compiler=f["cc"],
                counter_unit=f["counter"],
                slot_bytes=int(f["slot"]),
                max_dim=int(f["maxdim"]),
                max_layers=int(f["layers"]),
                line_max=int(f["line"]),
            )
        except (KeyError, ValueError) as exc:
            raise ProtocolError(
                f"version reply from {self.url!r} lacks a field ({exc}): {line!r}"
            ) from exc
        self.info = info
        return info

    def active_model_id(self) -> int | None:
        """The id (:func:`toolchain.mcu.blob.model_id`) of the model the firmware runs."""

        def steps(t: float | None) -> int | None:
            line = P.find_line(self.exchange(P.CMD_PROFILE, timeout_s=t), "m-model-")
            if line == "m-model-[none]":
                return None
            try:
                return int(P.parse_fields(line, "model")["id"], 16)
            except (KeyError, ValueError) as exc:
                raise self._odd(f"malformed model line {line!r}") from exc

        return self.transact(steps, what="profile")

    # Callers written before protocol 2 ask for the "crc"; it is the id now.
    active_model_crc = active_model_id

    def upload_model(self, blob: bytes, *, chunk_bytes: int | None = None) -> int:
        """Stage, verify and commit a model blob; returns its id. If any step fails the
        device keeps its previous model (it only commits a verified staging slot)."""
        from ..mcu.blob import model_id

        ident = model_id(blob)
        line_max = self.info.line_max if self.info else P.LINE_MAX
        chunk = min(chunk_bytes or P.max_chunk_bytes(line_max), P.max_chunk_bytes(line_max))
        if self.info and len(blob) > self.info.slot_bytes:
            raise ProtocolError(
                f"model blob of {len(blob)} bytes exceeds the {self.info.slot_bytes}-byte slot of "
                f"firmware at {self.url!r}; quantize a smaller head"
            )
        try:
            self._stage(blob, ident, chunk)
        except TransportError as exc:
            if not _retryable(exc):
                raise
            raise TransportError(
                f"model upload to {self.url!r} failed before its commit; the device keeps its "
                f"previous model; check the cable and baud rate, then retry. Last error: {exc}"
            ) from exc
        self._commit(ident)
        return ident

    def _stage(self, blob: bytes, ident: int, chunk: int) -> None:
        last: TransportError | None = None
        for _ in range(self.retries + 1):
            try:
                opened = self.command(P.mload_command(len(blob), ident))
                if f"m-mload-[expecting {len(blob)}]" not in opened:
                    raise self._odd(f"'mload' answer {opened!r}")
                for off in range(0, len(blob), chunk):
                    self._send_chunk(off, blob[off : off + chunk])
                return
            except TransportError as exc:
                if not _retryable(exc):
                    raise
                last = exc
                self.sync()  # raises when the device no longer answers
        raise TransportError(f"staging failed after {self.retries + 1} attempts: {last}")

    def _commit(self, ident: int) -> None:
        """Commit the staged model, retried while its reply is lost or garbled; returns only
        once the firmware reports ``ident`` as its active model."""
        last: TransportError | None = None
        active: int | None = None
        for _ in range(self.retries + 1):
            try:
                lines = self.exchange(P.commit_command(ident))
                line = P.find_line(lines, "m-commit-")
                try:
                    got = int(P.parse_fields(line, "commit")["id"], 16)
                except (KeyError, ValueError) as exc:
                    raise self._odd(f"malformed commit reply {line!r}") from exc
                if got != ident:
                    raise ProtocolError(
                        f"device {self.url!r} committed model {got:08x}, not {ident:08x}"
                    )
                return  # an intact reply naming the new model: the firmware runs it
            except TransportError as exc:
                if not _retryable(exc):
                    raise
                last = exc
            # Lost or garbled: the commit may or may not have happened. Ask, and if it did
            # not, commit again (naming the id makes a repeated commit harmless).
            try:
                self.sync()
                active = self.active_model_id()
            except TransportError as exc:
                if not _retryable(exc):
                    raise
                raise TransportError(
                    f"commit of model {ident:08x} on {self.url!r} unconfirmed: its reply was "
                    f"lost and the device stopped answering ({exc}); it runs either its "
                    "previous model or this one, upload again once it answers"
                ) from exc
            if active == ident:
                return
        running = "no model" if active is None else f"model {active:08x}"
        raise TransportError(
            f"commit of model {ident:08x} on {self.url!r} not confirmed after "
            f"{self.retries + 1} attempts; the device still runs {running}; check the cable and "
            f"baud rate, then retry. Last error: {last}"
        )

    def _send_chunk(self, off: int, data: bytes) -> None:
        expected = f"m-ack-{off + len(data)}"

        def steps(timeout_s: float | None) -> None:
            lines = self.exchange(P.mdata_command(off, data), timeout_s=timeout_s)
            if expected not in lines:
                raise self._odd(f"chunk at offset {off} acknowledged as {lines!r}")

        self.transact(steps, what=f"upload chunk at offset {off}")

    def self_check(self, *, timeout_s: float | None = None) -> SelfCheck:
        def steps(t: float | None) -> SelfCheck:
            line = P.find_line(self.exchange(P.CMD_SELFCHECK, timeout_s=t), "m-selfcheck-")
            try:
                f = P.parse_fields(line, "selfcheck")
                return SelfCheck(n=int(f["n"]), crc=int(f["crc"], 16), icount=int(f["icount"]))
            except (KeyError, ValueError) as exc:
                raise self._odd(f"malformed self-check reply {line!r}") from exc

        return self.transact(steps, what="self-check", timeout_s=timeout_s)

    def infer(
        self, x_q: np.ndarray, *, repeat: int = 1, warmup: int = 0, timeout_s: float | None = None
    ) -> InferResult:
        """Load one int8 input, run it ``repeat`` times after ``warmup`` runs, read the outputs."""
        data = np.asarray(x_q, dtype=np.int8).reshape(-1).tobytes()
        per_line = ((self.info.line_max if self.info else P.LINE_MAX) - 4) // 2

        def steps(t: float | None) -> InferResult:
            lines = self.exchange(f"{P.CMD_DB} load {len(data)}", timeout_s=t)
            if f"m-[Expecting {len(data)} bytes]" not in lines:
                raise self._odd(f"'db load' answer {lines!r}")
            for off in range(0, len(data), per_line):
                lines = self.exchange(f"{P.CMD_DB} {data[off : off + per_line].hex()}", timeout_s=t)
            if "m-load-done" not in lines:
                raise self._odd("an input upload not ending with 'm-load-done'")
            done = P.find_line(
                self.exchange(f"{P.CMD_INFER} {repeat} {warmup}", timeout_s=t), "m-infer-done-"
            )
            res = self.exchange(P.CMD_RESULTS, timeout_s=t)
            try:
                fields = P.parse_fields(done, "infer-done")
                icount = int(fields["icount"])
                input_crc = int(fields["incrc"], 16)
                out = np.asarray(P.parse_list(P.find_line(res, "m-results-"), "results"), np.int64)
                crc = int(P.parse_value(P.find_line(res, "m-crc-"), "crc"), 16)
                argmax = int(P.parse_value(P.find_line(res, "m-argmax-"), "argmax"))
            except (KeyError, ValueError) as exc:
                raise self._odd(f"malformed inference reply ({exc})") from exc
            # Intact frames make these hold; they stay as a check of the firmware itself.
            in_range = out.size > 0 and out.min() >= -128 and out.max() <= 127
            if (
                input_crc != zlib.crc32(data)
                or not in_range
                or zlib.crc32(out.astype(np.int8).tobytes()) != crc
            ):
                raise ProtocolError(
                    f"device {self.url!r} sent an intact inference reply whose input or output "
                    "CRC does not match its data; rebuild the firmware from this checkout"
                )
            return InferResult(output=out.astype(np.int8), argmax=argmax, icount=icount)

        return self.transact(steps, what="inference", timeout_s=timeout_s)


_PROTO = re.compile(r"proto=(\d+)")


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\r\n").decode("ascii", errors="replace")
