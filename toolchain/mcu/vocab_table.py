"""The WordPiece vocabulary as a flash table for the firmware's C tokenizer (``wordpiece.c``).

A ``tokenizer.json`` (the packaged MiniLM's, or the pruned one :mod:`toolchain.export.vocab`
writes, where dropped strings map to [UNK]'s new id) becomes one little-endian byte table:

========  =====================================================================================
bytes     content
========  =====================================================================================
0..31     header: ``CSWP``, u16 version (2), u16 n_added, u32 n_words, u32 n_conts,
          u32 pool_bytes, u16 unk/cls/sep ids, u16 max chars per word, u8 longest word /
          continuation piece (bytes), u16 n_ids
32..      n_added × 16: added (special) tokens matched in the raw text: u16 id, u8 len, 13 bytes
          one 8-byte record per block of 16 entries (words' blocks, then continuations'):
          u24 pool offset, u8 entries, u16 mask (bit j: entry j has an id; clear: [UNK]),
          u16 rank (ids before this block)
          n_ids × u16: the ids of the entries whose mask bit is set, in entry order
          pool: per block, the first string as u8 length + bytes, then each next one
          front-coded against the one before: one byte (shared prefix << 4 | suffix length) or
          0xFF, prefix, suffix length when either is 15 or more; then the suffix bytes
========  =====================================================================================

Word-initial pieces are sorted by their UTF-8 bytes; continuation pieces likewise, with the
``##`` dropped (their section says it). The C side binary-searches the blocks by their first
string and scans one block without decoding it into RAM, so the vocabulary needs no RAM.
Front coding and the [UNK] mask make the pruned table smaller than the full one although it
holds every string. Every string that the tokenizer could ever match is kept, dropped ones too (with
[UNK]'s id), because removing a string would change how words split (see vocab.py). Strings the
normaliser can never produce inside a word (upper case, accents, punctuation other than a lone
punctuation word, whitespace, combining marks: ``[CLS]``, ``[unused5]``, ``##!``) are left out,
which cannot change any result.
"""

from __future__ import annotations

import struct
import unicodedata
from collections.abc import Mapping, Sequence

from ..errors import CodesignError

MAGIC = b"CSWP"
VERSION = 2
HEADER_BYTES = 32
ADDED_SLOT_BYTES = 16
MAX_ADDED_LEN = ADDED_SLOT_BYTES - 3
BLOCK = 16  # entries per front-coded block
BLOCK_BYTES = 8  # u24 pool offset, u8 entries, u16 kept mask, u16 kept rank
MAX_CHARS_CAP = 100  # CS_WP_MAX_CHARS in wordpiece.h: the C word buffer's size in characters
CONT_PREFIX = "##"


class VocabTableError(CodesignError):
    """The vocabulary cannot be packed into the firmware's table format."""


def _is_bert_punct(ch: str) -> bool:
    o = ord(ch)
    return (33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126
            or unicodedata.category(ch).startswith("P"))


def _fold(ch: str) -> str:
    """What the BERT uncased normaliser makes of one character (NFD, no Mn, lower case)."""
    s = "".join(c for c in unicodedata.normalize("NFD", ch) if unicodedata.category(c) != "Mn")
    return s.lower()


def _matchable(piece: str, cont: bool) -> bool:
    """Can the C tokenizer produce ``piece`` as one (continuation) piece of a normalised word?"""
    if not piece:
        return False
    for ch in piece:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat in ("Cc", "Cf", "Co", "Cs", "Mn") or _fold(ch) != ch:
            return False
        if _is_bert_punct(ch) and (cont or len(piece) > 1):
            return False
    return True


def pack_vocab(vocab: Mapping[str, int], *, unk_id: int, cls_id: int, sep_id: int,
               added: Sequence[tuple[str, int]] = (), max_chars: int = 100) -> bytes:
    """The byte table for a WordPiece ``vocab`` (string → id; several strings may share an id)."""
    if not 0 < max_chars <= MAX_CHARS_CAP:
        raise VocabTableError(f"max_input_chars_per_word {max_chars} outside 1..{MAX_CHARS_CAP} "
                              "(the firmware's word buffer)")
    words, conts = [], []
    for tok, i in vocab.items():
        if not 0 <= int(i) < 0xFFFF:
            raise VocabTableError(f"token id {i} of {tok!r} does not fit the table's u16 ids")
        cont = tok.startswith(CONT_PREFIX)
        piece = tok[len(CONT_PREFIX):] if cont else tok
        if _matchable(piece, cont):
            (conts if cont else words).append((piece.encode("utf-8"), int(i)))
    words.sort()
    conts.sort()
    longest = [max((len(t) for t, _ in part), default=0) for part in (words, conts)]
    if max(longest) > 255:
        raise VocabTableError("a vocabulary piece longer than 255 bytes")
    blocks, kept, pool = [], [], bytearray()
    for part in (words, conts):
        for b0 in range(0, len(part), BLOCK):
            block = part[b0:b0 + BLOCK]
            mask, rank = 0, len(kept)
            blocks.append((len(pool), len(block), rank))
            for j, (text, i) in enumerate(block):
                if j == 0:
                    pool += bytes([len(text)]) + text
                else:
                    prev, pre = block[j - 1][0], 0
                    while pre < min(len(text), len(prev)) and text[pre] == prev[pre]:
                        pre += 1
                    suf = len(text) - pre
                    pool += bytes([pre << 4 | suf]) if pre < 15 and suf < 15 else bytes([0xFF, pre, suf])
                    pool += text[pre:]
                if i != unk_id:  # [UNK] needs no slot: a clear mask bit means [UNK]
                    mask |= 1 << j
                    kept.append(i)
            blocks[-1] += (mask,)
    if len(pool) >= 1 << 24 or len(kept) > 0xFFFF:
        raise VocabTableError(f"{len(pool)} pool bytes or {len(kept)} ids exceed the table's fields")
    head = struct.pack("<4sHHIII4HBBH", MAGIC, VERSION, len(added), len(words), len(conts),
                       len(pool), unk_id, cls_id, sep_id, max_chars, longest[0], longest[1], len(kept))
    slots = []
    for text, i in added:
        raw = text.encode("utf-8")
        if not 0 < len(raw) <= MAX_ADDED_LEN:
            raise VocabTableError(f"added token {text!r} longer than {MAX_ADDED_LEN} bytes")
        slots.append(struct.pack("<HB", i, len(raw)) + raw.ljust(MAX_ADDED_LEN, b"\0"))
    block_bytes = b"".join(off.to_bytes(3, "little") + struct.pack("<BHH", n, mask, rank)
                           for off, n, rank, mask in blocks)
    id_bytes = struct.pack(f"<{len(kept)}H", *kept)
    return head + b"".join(slots) + block_bytes + id_bytes + bytes(pool)


def table_from_tokenizer_json(doc: dict) -> bytes:
    """The table for a BERT-style WordPiece ``tokenizer.json`` document (already parsed)."""
    model = doc.get("model") or {}
    if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != CONT_PREFIX:
        raise VocabTableError(f"the C tokenizer handles WordPiece with '##' pieces; this tokenizer's "
                              f"model is {model.get('type')!r}")
    norm = doc.get("normalizer") or {}
    if norm.get("type") != "BertNormalizer" or not norm.get("lowercase", False):
        raise VocabTableError("the C tokenizer implements BERT's uncased normaliser; this "
                              f"tokenizer has {norm.get('type')!r} (lowercase={norm.get('lowercase')})")
    vocab = model["vocab"]
    specials = (doc.get("post_processor") or {}).get("special_tokens") or {}
    try:
        cls_id, sep_id = (int(specials[k]["ids"][0]) for k in ("[CLS]", "[SEP]"))
    except (KeyError, IndexError) as exc:
        raise VocabTableError("tokenizer.json: no [CLS]/[SEP] template post-processor") from exc
    added = [(t["content"], int(t["id"])) for t in doc.get("added_tokens") or []]
    return pack_vocab(vocab, unk_id=int(vocab[model["unk_token"]]), cls_id=cls_id, sep_id=sep_id,
                      added=added, max_chars=int(model.get("max_input_chars_per_word", 100)))


def table_layout(table: bytes) -> dict:
    """Exact byte counts of a table's sections (and the entry counts)."""
    magic, version, n_added, n_words, n_conts, pool = struct.unpack_from("<4sHHIII", table)
    if magic != MAGIC or version != VERSION:
        raise VocabTableError(f"not a CSWP v{VERSION} vocabulary table")
    n_kept = struct.unpack_from("<H", table, 30)[0]
    n_blocks = -(-n_words // BLOCK) + -(-n_conts // BLOCK)
    parts = {"header": HEADER_BYTES, "added_tokens": n_added * ADDED_SLOT_BYTES,
             "blocks": BLOCK_BYTES * n_blocks, "ids": 2 * n_kept, "pool": pool}
    if sum(parts.values()) != len(table):
        raise VocabTableError(f"table is {len(table)} bytes, its header says {sum(parts.values())}")
    return {"total_bytes": len(table), "words": n_words, "continuations": n_conts,
            "entries_with_an_id": n_kept, "blocks": n_blocks, "added_tokens": n_added,
            "section_bytes": parts}


def c_header(table: bytes, name: str = "cs_wp_table") -> str:
    """A C header holding ``table`` as a const array (flash on the Cortex-M ports)."""
    rows = [", ".join(f"0x{b:02x}" for b in table[i:i + 16]) for i in range(0, len(table), 16)]
    body = ",\n    ".join(rows)
    return (f"/* Generated by toolchain.mcu.vocab_table: a CSWP v{VERSION} WordPiece table. */\n"
            f"#include <stdint.h>\n#define {name.upper()}_BYTES {len(table)}u\n"
            f"static const uint8_t {name}[{len(table)}] = {{\n    {body}\n}};\n")


def _ranges(pred) -> list[tuple[int, int]]:
    out, start = [], None
    for c in range(0x110000):
        hit = pred(c)
        if hit and start is None:
            start = c
        elif not hit and start is not None:
            out.append((start, c - 1))
            start = None
    return out


def _emit(name: str, ranges: list[tuple[int, int]]) -> list[str]:
    bmp = [r for r in ranges if r[1] <= 0xFFFF]
    supp = [r for r in ranges if r[1] > 0xFFFF]
    lines = []
    for suffix, part, ctype in (("bmp", bmp, "uint16_t"), ("supp", supp, "uint32_t")):
        cells = ", ".join(f"{{0x{a:X}, 0x{b:X}}}" for a, b in part)
        lines.append(f"static const {ctype} wp_{name}_{suffix}[{len(part)}][2] = {{{cells}}};")
    return lines


def unicode_header() -> str:
    """``wordpiece_unicode.h``: the character classes the C tokenizer needs beyond Latin-1, and
    the Latin-1 fold (accents stripped, lower case), from Python's ``unicodedata``."""
    cat = [unicodedata.category(chr(c)) for c in range(0x110000)]
    fold = []
    for c in range(0xC0, 0x100):
        f = _fold(chr(c))
        assert len(f) == 1 and ord(f) < 0x100, (hex(c), f)
        fold.append(ord(f))
    for c in range(0x80, 0xC0):
        assert _fold(chr(c)) == chr(c)  # only the letters from U+00C0 change
    lines = [f"/* Generated by toolchain.mcu.vocab_table.unicode_header from Unicode "
             f"{unicodedata.unidata_version} (Python's unicodedata): do not edit. */",
             "#ifndef CS_WORDPIECE_UNICODE_H", "#define CS_WORDPIECE_UNICODE_H", "#include <stdint.h>",
             "/* U+00C0..U+00FF after NFD, combining marks removed, and lower-casing. */",
             "static const uint8_t wp_latin1_fold[64] = {" + ", ".join(f"0x{v:02X}" for v in fold) + "};",
             "/* Unicode P* (BERT adds the ASCII symbol ranges in code). */"]
    lines += _emit("punct", _ranges(lambda c: cat[c].startswith("P")))
    lines.append("/* Cc, Cf, Co, Cs: removed by BERT's clean_text (Cn, unassigned, is not). */")
    lines += _emit("other", _ranges(lambda c: cat[c] in ("Cc", "Cf", "Co", "Cs")))
    lines.append("/* Mn: removed by accent stripping. */")
    lines += _emit("mark", _ranges(lambda c: cat[c] == "Mn"))
    wide = []
    for c in range(0x100, 0x10000):
        if cat[c] in ("Cc", "Cf", "Co", "Cs", "Mn", "Cn"):
            continue
        f = _fold(chr(c))
        if len(f) == 1 and f != chr(c) and ord(f) <= 0xFFFF:
            wide.append((c, ord(f)))
    lines.append("#ifdef CS_WP_WIDE_FOLD")
    lines.append("/* U+0100..U+FFFF whose fold (NFD, no Mn, lower case) is one other character; those that "
                 "fold to several (Hangul syllables...) are not here. */")
    lines.append(f"static const uint16_t wp_wide_fold[{len(wide)}][2] = {{"
                 + ", ".join(f"{{0x{a:X}, 0x{b:X}}}" for a, b in wide) + "};")
    lines.append("#endif")
    lines.append("#endif /* CS_WORDPIECE_UNICODE_H */")
    return "\n".join(lines) + "\n"
