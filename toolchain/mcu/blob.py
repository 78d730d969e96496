"""The weights blob the firmware stores in a model slot, and a C header to bake one in.

Layout (little-endian; every section starts 4-aligned; parsed by firmware_stubs/src/model.c):

    header, 40 bytes:
      u32 magic "CSGN"   u16 version   u16 n_layers   u16 in_dim   u16 out_dim
      u16 n_ref          u16 flags(0)  f32 input_scale  i32 input_zero_point
      f32 output_scale   i32 output_zero_point  u32 total_len (incl. CRC)  u32 reserved(0)
    per layer: u16 in, u16 out, u8 activation, 3 pad bytes, i32 output_zero_point,
               i8 weight[out*in] (padded to 4), i32 bias[out], i32 multiplier[out], i32 shift[out]
    i8 reference_inputs[n_ref*in_dim] (padded to 4)
    u32 CRC32 of everything before it
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import BundleError
from .protocol import ACT_CODES, BLOB_MAGIC, BLOB_VERSION
from .quantize import QuantizedHead, QuantizedLayer

HEADER = struct.Struct("<IHHHHHHfifiII")
LAYER_HEADER = struct.Struct("<HHB3xi")
_ACT_NAMES = {v: k for k, v in ACT_CODES.items()}


def model_id(blob: bytes) -> int:
    """A model's identity on the wire: the CRC32 of the blob without its 4-byte trailer.

    Not ``zlib.crc32(blob)``: a blob ends with its own CRC32, so the CRC over all of it is the
    same constant (the CRC-32 residue) for every model and cannot tell two models apart."""
    if len(blob) < HEADER.size + 4:
        raise BundleError(f"model blob of {len(blob)} bytes is shorter than its header")
    return zlib.crc32(blob[:-4])


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def blob_size(head: QuantizedHead) -> int:
    """Exact byte size of ``to_blob(head)`` without building it."""
    size = HEADER.size + 4
    for layer in head.layers:
        size += LAYER_HEADER.size + _round4(layer.in_features * layer.out_features)
        size += 12 * layer.out_features
    return size + _round4(head.reference_inputs.size)


def _round4(n: int) -> int:
    return (n + 3) & ~3


def to_blob(head: QuantizedHead) -> bytes:
    for name, n in (("in_dim", head.in_dim), ("out_dim", head.out_dim)):
        if n > 0xFFFF:
            raise BundleError(f"blob field {name}={n} exceeds 65535; the MCU format cannot hold it")
    parts = []
    for layer in head.layers:
        parts.append(
            LAYER_HEADER.pack(
                layer.in_features,
                layer.out_features,
                ACT_CODES[layer.activation],
                layer.output_zero_point,
            )
        )
        parts.append(_pad4(np.ascontiguousarray(layer.weight, dtype="<i1").tobytes()))
        for arr in (layer.bias, layer.multiplier, layer.shift):
            parts.append(np.ascontiguousarray(arr, dtype="<i4").tobytes())
    parts.append(_pad4(np.ascontiguousarray(head.reference_inputs, dtype="<i1").tobytes()))
    body = b"".join(parts)
    total = HEADER.size + len(body) + 4
    header = HEADER.pack(
        BLOB_MAGIC,
        BLOB_VERSION,
        len(head.layers),
        head.in_dim,
        head.out_dim,
        head.reference_inputs.shape[0],
        0,
        head.input_scale,
        head.input_zero_point,
        head.output_scale,
        head.output_zero_point,
        total,
        0,
    )
    data = header + body
    return data + struct.pack("<I", zlib.crc32(data))


def from_blob(data: bytes) -> QuantizedHead:
    """Parse and verify a blob. Per-layer float scales are not stored: inner layers come back
    with NaN scales, which the integer reference never reads."""
    if len(data) < HEADER.size + 4:
        raise BundleError(f"model blob of {len(data)} bytes is shorter than its header")
    (
        magic,
        version,
        n_layers,
        in_dim,
        out_dim,
        n_ref,
        _flags,
        in_scale,
        in_zp,
        out_scale,
        out_zp,
        total,
        _reserved,
    ) = HEADER.unpack_from(data)
    if magic != BLOB_MAGIC or version != BLOB_VERSION:
        raise BundleError(f"not a codesign MCU blob v{BLOB_VERSION} (magic {magic:#x}, v{version})")
    if (
        total != len(data)
        or zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]
    ):
        raise BundleError("model blob length or CRC32 does not match; re-export it")
    if n_layers == 0:
        raise BundleError("model blob has no layers; re-export it")
    off = HEADER.size
    layers = []
    for i in range(n_layers):
        n_in, n_out, act, zp = LAYER_HEADER.unpack_from(data, off)
        off += LAYER_HEADER.size
        w = np.frombuffer(data, "<i1", n_in * n_out, off).reshape(n_out, n_in)
        off += _round4(n_in * n_out)
        ints = np.frombuffer(data, "<i4", 3 * n_out, off).reshape(3, n_out)
        off += 12 * n_out
        last = i == n_layers - 1
        layers.append(
            QuantizedLayer(
                weight=w.astype(np.int8),
                bias=ints[0].astype(np.int32),
                multiplier=ints[1].astype(np.int32),
                shift=ints[2].astype(np.int32),
                activation=_ACT_NAMES[act],
                weight_scale=np.full(n_out, np.nan, np.float32),
                input_scale=in_scale if i == 0 else float("nan"),
                input_zero_point=in_zp if i == 0 else 0,
                output_scale=out_scale if last else float("nan"),
                output_zero_point=zp,
            )
        )
    refs = np.frombuffer(data, "<i1", n_ref * in_dim, off).reshape(n_ref, in_dim).astype(np.int8)
    if layers[0].in_features != in_dim or layers[-1].out_features != out_dim or out_zp != zp:
        raise BundleError("model blob header disagrees with its layers; re-export it")
    return QuantizedHead(layers=tuple(layers), reference_inputs=refs)


def to_c_header(head: QuantizedHead, *, symbol: str = "cs_baked_blob") -> str:
    """C source that bakes the blob into a firmware image (make BAKED=this.h)."""
    data = to_blob(head)
    rows = [
        "    " + ", ".join(f"0x{b:02x}" for b in data[i : i + 16]) + ","
        for i in range(0, len(data), 16)
    ]
    return "\n".join(
        [
            "/* Generated by toolchain.mcu.blob.to_c_header; do not edit. */",
            "#include <stdint.h>",
            f"/* {len(head.layers)} layers, {head.in_dim} -> {head.out_dim}, "
            # The whole-blob CRC32 stays for the bundle manifest, which records it.
            f"id {model_id(data):08x}, crc32 {zlib.crc32(data):08x} */",
            f"static const uint32_t {symbol}_len = {len(data)}u;",
            f"static const uint8_t {symbol}[{len(data)}] __attribute__((aligned(4))) = {{",
            *rows,
            "};",
            "",
        ]
    )
