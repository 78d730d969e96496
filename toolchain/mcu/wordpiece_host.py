"""The firmware's C WordPiece tokenizer (``firmware_stubs/src/wordpiece.c``) on the host: built
with the host C compiler as a shared library and called through ctypes, so tests and the
benchmark compare the very code the firmware runs with the ``tokenizers`` library."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

from ..errors import CodesignError
from ..paths import PROJECT_ROOT

FIRMWARE = PROJECT_ROOT / "firmware_stubs"
SOURCE = FIRMWARE / "src" / "wordpiece.c"
CFLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wstrict-prototypes")


class HostTokenizerError(CodesignError):
    """The host build of the C tokenizer failed, or it refused its table."""


def build_library(out_dir: Path, cc: str = "cc", defines: tuple[str, ...] = ()) -> Path:
    """Compile wordpiece.c into ``out_dir/libcswp.so`` (``defines``: e.g. ``("CS_WP_WIDE_FOLD",)``)."""
    if shutil.which(cc) is None:
        raise HostTokenizerError(f"no C compiler {cc!r} on PATH (apt-get install gcc)")
    out = Path(out_dir) / ("libcswp" + "".join(f"-{d.lower()}" for d in defines) + ".so")
    cmd = [cc, *CFLAGS, *(f"-D{d}" for d in defines), "-fPIC", "-shared", f"-I{FIRMWARE / 'include'}",
           str(SOURCE), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostTokenizerError(f"building {SOURCE.name} failed:\n{proc.stderr[-2000:]}")
    return out


class CTokenizer:
    """``encode`` gives the C tokenizer's ids for one text over one packed table."""

    def __init__(self, library: Path, table: bytes):
        self._lib = ctypes.CDLL(str(library))
        self._lib.cs_wp_encode.restype = ctypes.c_int32
        self._lib.cs_wp_encode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                           ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint16),
                                           ctypes.c_size_t]
        self._lib.cs_wp_check.restype = ctypes.c_int32
        self._lib.cs_wp_check.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        self._table = bytes(table)
        if self._lib.cs_wp_check(self._table, len(self._table)) != 0:
            raise HostTokenizerError("the C tokenizer refuses this vocabulary table")

    def encode(self, text: str | bytes, max_len: int = 128) -> list[int]:
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        out = (ctypes.c_uint16 * max_len)()
        n = self._lib.cs_wp_encode(self._table, len(self._table), raw, len(raw), out, max_len)
        if n < 0:
            raise HostTokenizerError(f"cs_wp_encode returned {n} (max_len {max_len})")
        return list(out[:n])


def reference_tokenizer(doc: dict, max_len: int = 128):
    """The ``tokenizers`` library's tokenizer for a tokenizer.json document: truncated to
    ``max_len`` ids with [CLS]/[SEP], unpadded (the C side does not pad)."""
    import json

    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(doc))
    tok.no_padding()
    tok.enable_truncation(max_len)
    return tok


def compare(ctok: CTokenizer, ref, texts, max_len: int = 128) -> dict:
    """How many ``texts`` the C tokenizer and ``ref`` (``tokenizers``) give identical ids for,
    and each difference (index, text, both id lists)."""
    want = [e.ids for e in ref.encode_batch(list(texts))]
    diffs = []
    for i, (text, ids) in enumerate(zip(texts, want, strict=True)):
        got = ctok.encode(text, max_len)
        if got != ids:
            diffs.append({"index": i, "text": text, "c_ids": got, "tokenizers_ids": ids})
    n = len(want)
    return {"texts": n, "identical": n - len(diffs), "agreement": (n - len(diffs)) / n if n else 1.0,
            "differences": diffs}


def cortexm_size(out_dir: Path, cc: str = "arm-none-eabi-gcc", opt: str = "-O2",
                 defines: tuple[str, ...] = ()) -> dict:
    """wordpiece.c compiled alone for a Cortex-M4 with the firmware's flags: code and constant
    bytes (``arm-none-eabi-size -A`` sections), the worst stack frame, and the symbols it needs
    from outside (none: no malloc, no libc)."""
    size_tool, nm_tool = cc.replace("gcc", "size"), cc.replace("gcc", "nm")
    for tool in (cc, size_tool, nm_tool):
        if shutil.which(tool) is None:
            raise HostTokenizerError(f"{tool} not found (apt-get install gcc-arm-none-eabi)")
    obj = Path(out_dir) / "wordpiece-cm4.o"
    cmd = [cc, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-ffreestanding", "-ffunction-sections",
           "-fdata-sections", "-fstack-usage", *CFLAGS, *(f"-D{d}" for d in defines), opt, f"-I{FIRMWARE / 'include'}", "-c", str(SOURCE),
           "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostTokenizerError(f"arm build of {SOURCE.name} failed:\n{proc.stderr[-2000:]}")
    sections = {}
    for line in subprocess.run([size_tool, "-A", str(obj)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    code = sum(v for k, v in sections.items() if k.startswith(".text"))
    rodata = sum(v for k, v in sections.items() if k.startswith(".rodata"))
    ram = sum(v for k, v in sections.items() if k.startswith((".data", ".bss")))
    frames = [int(line.split()[-2]) for line in obj.with_suffix(".su").read_text().splitlines() if line.strip()]
    undefined = subprocess.run([nm_tool, "-u", str(obj)], capture_output=True, text=True,
                               check=True).stdout.split()
    return {"flags": " ".join(cmd[1:7] + [opt, *(f"-D{d}" for d in defines)]), "code_bytes": code, "rodata_bytes": rodata,
            "flash_bytes": code + rodata, "static_ram_bytes": ram,
            "largest_stack_frame_bytes": max(frames, default=0),
            "undefined_symbols": [s for s in undefined if s != "U"]}


def cortexm_table_bytes(table: bytes, out_dir: Path, cc: str = "arm-none-eabi-gcc") -> int:
    """Flash bytes the table takes in a Cortex-M4 object built from its C header
    (:func:`toolchain.mcu.vocab_table.c_header`): the size of its .rodata section."""
    from .vocab_table import c_header

    out_dir = Path(out_dir)
    (out_dir / "cs_wp_table.h").write_text(c_header(table))
    src = out_dir / "cs_wp_table_ref.c"
    src.write_text('#include "cs_wp_table.h"\nconst uint8_t *cs_wp_table_ref(void);\n'
                   "const uint8_t *cs_wp_table_ref(void) { return cs_wp_table; }\n")
    obj = out_dir / "cs_wp_table.o"
    proc = subprocess.run([cc, "-mcpu=cortex-m4", "-mthumb", "-fdata-sections", *CFLAGS, "-c", str(src),
                           "-o", str(obj)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostTokenizerError(f"arm build of the table header failed:\n{proc.stderr[-2000:]}")
    out = subprocess.run([cc.replace("gcc", "size"), "-A", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.startswith(".rodata.cs_wp_table"))


def build_count_image(table: bytes, texts, out_dir: Path, repeat: int = 8, max_len: int = 128,
                      cc: str = "arm-none-eabi-gcc") -> Path:
    """An mps2-an386 image that tokenizes ``texts`` (str or bytes) over ``table`` and prints the
    ids and the instruction count of each (firmware_stubs/bench/wordpiece_count.c). The firmware
    core and the mps2 port are linked unchanged, only the port's main renamed."""
    from .vocab_table import c_header

    out_dir = Path(out_dir)
    raws = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in texts]
    lines = [c_header(table)]
    for i, raw in enumerate(raws):
        lines.append(f"static const uint8_t cs_wp_text{i}[{max(len(raw), 1)}] = {{"
                     + ", ".join(str(b) for b in raw or b"\0") + "};")
    lines.append(f"#define CS_WP_N_TEXTS {len(raws)}u")
    lines.append("static const uint8_t *const cs_wp_texts[] = {"
                 + ", ".join(f"cs_wp_text{i}" for i in range(len(raws))) + "};")
    lines.append("static const uint32_t cs_wp_lens[] = {" + ", ".join(f"{len(r)}u" for r in raws) + "};")
    baked = out_dir / "wp_baked.h"
    baked.write_text("\n".join(lines) + "\n")
    fw = FIRMWARE
    image = out_dir / "wordpiece-count.elf"
    core = sorted(str(p) for p in (fw / "src").glob("*.c"))
    cmd = [cc, "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-ffreestanding", "-nostdlib",
           "-ffunction-sections", "-fdata-sections", f"-I{fw / 'ports' / 'cortexm'}", *CFLAGS,
           f"-I{fw / 'include'}", "-DCS_SLOT_BYTES=1048576u", f'-DCS_WP_BAKED="{baked}"',
           f"-DCS_WP_REPEAT={repeat}u", f"-DCS_WP_MAX_LEN={max_len}u", "-o", str(image), *core,
           str(fw / "bench" / "wordpiece_count.c"), str(fw / "ports" / "cortexm" / "cortexm_reset.c"),
           str(out_dir / "port_mps2.c"), f"-T{fw / 'ports' / 'mps2' / 'mps2.ld'}", "-Wl,--gc-sections",
           f"-L{fw / 'ports' / 'cortexm'}", "-lgcc"]
    # The port's main serves the protocol; this image's main is the counting loop.
    src = (fw / "ports" / "mps2" / "port_mps2.c").read_text()
    (out_dir / "port_mps2.c").write_text(src.replace("int main(void)", "int cs_port_main(void);\nint cs_port_main(void)"))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostTokenizerError(f"building the counting image failed:\n{proc.stderr[-3000:]}")
    return image


def parse_count_output(text: str, repeat: int = 8) -> list[dict]:
    """The counting image's lines: per text its ids and instructions per encode (the count over
    ``repeat`` encodes, divided; the tick is 40 instructions, so it resolves 40 / repeat)."""
    if "bad table" in text:
        raise HostTokenizerError("the counting image refused its table")
    rows = []
    for line in text.splitlines():
        if line.strip() in ("", "done"):
            continue
        index, n, count, *ids = (int(v) for v in line.split())
        if len(ids) != n or index != len(rows):
            raise HostTokenizerError(f"garbled counting line {line!r}")
        rows.append({"ids": ids, "instructions": count / repeat})
    return rows
