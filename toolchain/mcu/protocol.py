"""Python mirror of ``firmware_stubs/include/protocol.h``; a test checks the two agree.

Also the reply framing and parsing shared by the serial link and the in-memory tests.

Protocol 2: every reply ends with ``m-fcs-[XXXXXXXX]`` then ``m-ready``, XXXXXXXX being the
CRC32 of the command as the device received it, ``%``, and every reply byte before the m-fcs
line (see :func:`reply_crc`). Models are named by their id (:func:`toolchain.mcu.blob.model_id`).
"""

from __future__ import annotations

import re
import zlib

from ..errors import ProtocolError

PROTOCOL_VERSION = 2
FW_VERSION = "0.1.0"
TERMINATOR = b"%"
PREFIX_OK = "m-"
PREFIX_ERR = "e-"
READY = "m-ready"
FCS = "m-fcs-"
EOL = b"\r\n"
LINE_MAX = 512
INFER_MAX = 10000
CALIB_MAX = 10000000
BLOB_MAGIC = 0x4E475343
BLOB_VERSION = 1
ACT_CODES = {"none": 0, "relu": 1}

CMD_NAME = "name"
CMD_PROFILE = "profile"
CMD_DB = "db"
CMD_INFER = "infer"
CMD_RESULTS = "results"
CMD_PING = "ping"
CMD_VERSION = "version"
CMD_MLOAD = "mload"
CMD_MDATA = "mdata"
CMD_COMMIT = "commit"
CMD_SELFCHECK = "selfcheck"
CMD_CALIB = "calib"
# Whole-model images (CS_WHOLE_MODEL, a CSD0 blob committed): raw text in.
CMD_TLOAD = "tload"
CMD_TDATA = "tdata"
CMD_TINFER = "tinfer"
TEXT_MAX = 2048

_BRACKET = re.compile(r"^m-([a-z-]+?)-\[(.*)\]$")


def reply_crc(command: str | bytes, raw_lines: list[bytes]) -> int:
    """The frame check of a reply: CRC32 over the command, ``%``, and the reply's raw lines
    (each with its ``\r\n``) before the m-fcs line. Seeding with the command binds a reply
    to the command the device heard, so a command corrupted on its way in fails it too."""
    cmd = command.encode("ascii") if isinstance(command, str) else command
    crc = zlib.crc32(TERMINATOR, zlib.crc32(cmd))
    for raw in raw_lines:
        crc = zlib.crc32(raw, crc)
    return crc


def mload_command(size: int, model_id: int) -> str:
    return f"{CMD_MLOAD} {size} {model_id:08x}"


def commit_command(model_id: int) -> str:
    return f"{CMD_COMMIT} {model_id:08x}"


def chunk_crc(offset: int, data: bytes) -> int:
    """CRC of an upload chunk; it covers the offset so a corrupted offset is caught too."""
    return zlib.crc32(data, zlib.crc32(offset.to_bytes(4, "little")))


def mdata_command(offset: int, data: bytes) -> str:
    return f"{CMD_MDATA} {offset} {data.hex()} {chunk_crc(offset, data):08x}"


def tload_command(text: bytes) -> str:
    """Open a text upload; the CRC32 of the whole text is checked again by tinfer."""
    return f"{CMD_TLOAD} {len(text)} {zlib.crc32(text):08x}"


def tdata_command(offset: int, data: bytes) -> str:
    """A text chunk: the same line and CRC (over offset and data) as an mdata chunk."""
    return f"{CMD_TDATA} {offset} {data.hex()} {chunk_crc(offset, data):08x}"


def max_chunk_bytes(line_max: int = LINE_MAX) -> int:
    """Largest chunk whose mdata line fits the firmware's line buffer (offset up to 10 digits)."""
    overhead = len(CMD_MDATA) + 1 + 10 + 1 + 1 + 8
    return (line_max - overhead) // 2


def parse_fields(line: str, tag: str) -> dict[str, str]:
    """``m-<tag>-[k=v;k=v]`` -> dict. Raises ProtocolError naming the line otherwise."""
    m = _BRACKET.match(line)
    if not m or m.group(1) != tag:
        raise ProtocolError(f"expected a 'm-{tag}-[...]' reply, got {line!r}")
    out: dict[str, str] = {}
    for part in m.group(2).split(";"):
        key, sep, value = part.partition("=")
        if not sep:
            raise ProtocolError(f"malformed field {part!r} in reply {line!r}")
        out[key] = value
    return out


def parse_list(line: str, tag: str) -> list[int]:
    """``m-<tag>-[1,-2,3]`` -> [1, -2, 3]."""
    m = _BRACKET.match(line)
    if not m or m.group(1) != tag:
        raise ProtocolError(f"expected a 'm-{tag}-[...]' reply, got {line!r}")
    try:
        return [int(v) for v in m.group(2).split(",")] if m.group(2) else []
    except ValueError as exc:
        raise ProtocolError(f"non-integer value in reply {line!r}") from exc


def parse_value(line: str, tag: str) -> str:
    """``m-<tag>-[value]`` -> "value"."""
    m = _BRACKET.match(line)
    if not m or m.group(1) != tag:
        raise ProtocolError(f"expected a 'm-{tag}-[...]' reply, got {line!r}")
    return m.group(2)


def find_line(lines: list[str], prefix: str) -> str:
    for line in lines:
        if line.startswith(prefix):
            return line
    raise ProtocolError(f"reply lacks a line starting with {prefix!r}; got {lines!r}")
