"""Raw text to a whole-model firmware (CSD0 blob committed, tload/tdata/tinfer): the same
framing, per-chunk CRC (over offset and data) and retry rules as a model upload, and the class."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ProtocolError
from ..mcu import protocol as P
from .serial_link import SerialLink


@dataclass(frozen=True)
class TextResult:
    tokens: int  # ids the firmware's tokenizer produced, [CLS] and [SEP] included
    output: np.ndarray  # int8 logits
    argmax: int
    icount: int  # counter units for tokenize + features + head, once


def classify_text(link: SerialLink, text: str | bytes, *, timeout_s: float | None = None) -> TextResult:
    """Upload ``text`` (UTF-8) in CRC-checked chunks, run tinfer, read the logits."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(raw) > P.TEXT_MAX:
        raise ProtocolError(f"text of {len(raw)} bytes exceeds the firmware's {P.TEXT_MAX}-byte buffer")
    chunk = P.max_chunk_bytes(link.info.line_max if link.info else P.LINE_MAX)

    def steps(t: float | None) -> TextResult:
        opened = link.exchange(P.tload_command(raw), timeout_s=t)
        if f"m-tload-[expecting {len(raw)}]" not in opened:
            raise link._odd(f"'tload' answer {opened!r}")
        for off in range(0, len(raw), chunk):
            part = raw[off : off + chunk]
            if f"m-ack-{off + len(part)}" not in link.exchange(P.tdata_command(off, part), timeout_s=t):
                raise link._odd(f"text chunk at offset {off} not acknowledged")
        done = P.find_line(link.exchange(P.CMD_TINFER, timeout_s=t), "m-tinfer-done-")
        res = link.exchange(P.CMD_RESULTS, timeout_s=t)
        try:
            fields = P.parse_fields(done, "tinfer-done")
            out = np.asarray(P.parse_list(P.find_line(res, "m-results-"), "results"), np.int64)
            crc = int(P.parse_value(P.find_line(res, "m-crc-"), "crc"), 16)
            argmax = int(P.parse_value(P.find_line(res, "m-argmax-"), "argmax"))
            result = TextResult(tokens=int(fields["tokens"]), output=out.astype(np.int8),
                                argmax=argmax, icount=int(fields["icount"]))
        except (KeyError, ValueError) as exc:
            raise link._odd(f"malformed text inference reply ({exc})") from exc
        if int(fields["incrc"], 16) != zlib.crc32(raw) or zlib.crc32(result.output.tobytes()) != crc:
            raise ProtocolError(f"device {link.url!r} sent an intact text reply whose CRCs do not match")
        return result

    return link.transact(steps, what="text inference", timeout_s=timeout_s)
