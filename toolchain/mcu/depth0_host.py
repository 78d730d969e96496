"""The firmware's depth-0 code (``firmware_stubs/src/depth0.c``) with its tokenizer
(``wordpiece.c``) on the host: one shared library called through ctypes, so tests compare the C
the firmware runs with the Python integer reference (:mod:`toolchain.mcu.depth0`) text by text."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .depth0 import Depth0Tables
from .wordpiece_host import CFLAGS, FIRMWARE, CTokenizer, HostTokenizerError

SOURCES = (FIRMWARE / "src" / "depth0.c", FIRMWARE / "src" / "wordpiece.c")


class _Depth0(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("n_words", "dim", "max_len", "word_mult", "pos_mult", "shift")] + [
        ("word", ctypes.c_void_p), ("position", ctypes.c_void_p),
        ("gain", ctypes.c_void_p), ("offset", ctypes.c_void_p)]


def build_library(out_dir: Path, cc: str = "cc") -> Path:
    """Compile depth0.c and wordpiece.c into ``out_dir/libcsd0.so``."""
    import shutil
    import subprocess

    if shutil.which(cc) is None:
        raise HostTokenizerError(f"no C compiler {cc!r} on PATH (apt-get install gcc)")
    out = Path(out_dir) / "libcsd0.so"
    cmd = [cc, *CFLAGS, "-fPIC", "-shared", f"-I{FIRMWARE / 'include'}", *map(str, SOURCES), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostTokenizerError(f"building depth0.c failed:\n{proc.stderr[-2000:]}")
    return out


class CDepth0:
    """Raw text -> the C tokenizer's ids -> the C depth-0 head input (int8 [dim])."""

    def __init__(self, library: Path, vocab_table: bytes, tables: Depth0Tables):
        self.tokenizer = CTokenizer(library, vocab_table)
        self._lib = self.tokenizer._lib
        self._lib.cs_depth0_features.restype = ctypes.c_int32
        self._lib.cs_depth0_features.argtypes = [
            ctypes.POINTER(_Depth0), ctypes.POINTER(ctypes.c_uint16), ctypes.c_uint32,
            ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int8)]
        # Keep the arrays alive as long as the struct points into them.
        self._arrays = [np.ascontiguousarray(a, dtype=t) for a, t in (
            (tables.word, np.int8), (tables.position, np.int8), (tables.gain, np.int32),
            (tables.offset, np.int32))]
        self._m = _Depth0(tables.word.shape[0], tables.dim, tables.max_len, tables.word_mult,
                          tables.pos_mult, tables.shift, *(a.ctypes.data for a in self._arrays))
        self.dim, self.max_len = tables.dim, tables.max_len

    def features(self, ids) -> np.ndarray:
        ids_c = (ctypes.c_uint16 * max(1, len(ids)))(*ids)
        scratch = (ctypes.c_int32 * (2 * self.dim))()
        out = (ctypes.c_int8 * self.dim)()
        rc = self._lib.cs_depth0_features(ctypes.byref(self._m), ids_c, len(ids), scratch, out)
        if rc != 0:
            raise HostTokenizerError(f"cs_depth0_features refused {len(ids)} ids")
        return np.frombuffer(bytes(out), dtype=np.int8).copy()

    def text_features(self, text: str) -> tuple[list[int], np.ndarray]:
        ids = self.tokenizer.encode(text, self.max_len)
        return ids, self.features(ids)


WHOLE_SOURCES = ("depth0.c", "wordpiece.c", "whole.c", "model.c", "crc32.c", "kernels.c", "kernels_dsp.c")


def build_whole_library(out_dir: Path, cc: str = "cc") -> Path:
    """The firmware's blob parser and text classifier (no command loop) as ``libcswhole.so``."""
    import subprocess

    out = Path(out_dir) / "libcswhole.so"
    cmd = [cc, *CFLAGS, "-fPIC", "-shared", f"-I{FIRMWARE / 'include'}",
           *(str(FIRMWARE / "src" / s) for s in WHOLE_SOURCES), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostTokenizerError(f"building whole.c failed:\n{proc.stderr[-2000:]}")
    return out


class CWhole:
    """Parse a CSD0 blob with the firmware's cs_whole_parse and classify text with it."""

    def __init__(self, library: Path, blob: bytes, max_len: int, dim: int, out_dim: int):
        self._lib = ctypes.CDLL(str(library))
        self._lib.cs_whole_parse.restype = ctypes.c_char_p
        self._lib.cs_whole_classify.restype = ctypes.c_int32
        # cs_whole_t holds a cs_model_t (CS_MAX_LAYERS layers): 8 KiB is ample and aligned.
        self._w = (ctypes.c_uint64 * 1024)()
        self._blob = (ctypes.c_uint32 * ((len(blob) + 3) // 4)).from_buffer_copy(blob + b"\0" * (-len(blob) % 4))
        self.why = self._lib.cs_whole_parse(self._blob, ctypes.c_uint32(len(blob)), self._w)
        self.max_len, self.dim, self.out_dim = max_len, dim, out_dim

    def classify(self, text: str) -> tuple[int, np.ndarray]:
        raw = text.encode("utf-8")
        ids = (ctypes.c_uint16 * self.max_len)()
        scratch = (ctypes.c_int32 * (2 * self.dim))()
        feat = (ctypes.c_int8 * self.dim)()
        logits = (ctypes.c_int8 * self.out_dim)()
        n = self._lib.cs_whole_classify(self._w, raw, ctypes.c_uint32(len(raw)), ids, scratch, feat, logits)
        return n, np.frombuffer(bytes(logits), dtype=np.int8).copy()
