"""The whole-model blob ("CSD0"): what the firmware needs to classify raw text at depth 0.

Layout (little-endian, every section 4-aligned; parsed by ``firmware_stubs/src/whole.c``)::

    header, 32 bytes: u32 magic "CSD0", u16 version (1), u16 dim, u32 n_words, u16 max_len,
                      u8 pos_ratio, u8 shift, u32 vocab_bytes, u32 head_bytes,
                      u32 total_len (incl. CRC), u32 reserved (0)
    vocabulary table (toolchain/mcu/vocab_table.py), padded to 4
    i8 word[n_words * dim], padded to 4;  i8 position[max_len * dim], padded to 4
    i32 gain[dim], i32 offset[dim]
    the head as an ordinary CSGN blob (toolchain/mcu/blob.py), with its own CRC and references
    u32 CRC32 of everything before it

Its id on the wire is, as for a head blob, the CRC32 of everything but the trailer.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import BundleError
from .blob import blob_size, to_blob
from .depth0 import Depth0Tables
from .quantize import QuantizedHead

MAGIC = 0x30445343  # "CSD0"
VERSION = 1
HEADER = struct.Struct("<IHHIHBBIIII")


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _r4(n: int) -> int:
    return (n + 3) & ~3


def whole_blob_size(vocab_bytes: int, tables: Depth0Tables, head: QuantizedHead) -> int:
    """Exact bytes of :func:`to_whole_blob` without building it."""
    return (HEADER.size + _r4(vocab_bytes) + _r4(tables.word.size) + _r4(tables.position.size)
            + 8 * tables.dim + blob_size(head) + 4)


def to_whole_blob(vocab_table: bytes, tables: Depth0Tables, head: QuantizedHead) -> bytes:
    if head.in_dim != tables.dim:
        raise BundleError(f"head input {head.in_dim} differs from the depth-0 feature dim {tables.dim}")
    if tables.word.shape[0] > 0xFFFF or tables.max_len > 0xFFFF or tables.pos_ratio > 255:
        raise BundleError("depth-0 tables exceed the CSD0 header's field widths")
    head_blob = to_blob(head)
    body = b"".join([
        _pad4(bytes(vocab_table)),
        _pad4(np.ascontiguousarray(tables.word, "<i1").tobytes()),
        _pad4(np.ascontiguousarray(tables.position, "<i1").tobytes()),
        np.ascontiguousarray(tables.gain, "<i4").tobytes(),
        np.ascontiguousarray(tables.offset, "<i4").tobytes(),
        head_blob,
    ])
    total = HEADER.size + len(body) + 4
    header = HEADER.pack(MAGIC, VERSION, tables.dim, tables.word.shape[0], tables.max_len,
                         tables.pos_ratio, tables.shift, len(vocab_table), len(head_blob), total, 0)
    data = header + body
    return data + struct.pack("<I", zlib.crc32(data))
