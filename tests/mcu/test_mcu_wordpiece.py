"""The firmware's C WordPiece tokenizer (wordpiece.c) against the `tokenizers` library, over the
packaged MiniLM's full vocabulary and over one pruned on trec's training split; its flash
table's byte layout; and its Cortex-M4 build (no libc, no malloc)."""

from __future__ import annotations

import json
import unicodedata

import pytest
from mcu_helpers import FIRMWARE, needs_arm, needs_cc, needs_qemu

from toolchain.mcu.vocab_table import (
    HEADER_BYTES,
    VocabTableError,
    pack_vocab,
    table_from_tokenizer_json,
    table_layout,
    unicode_header,
)

pytestmark = needs_cc

TRICKY = [
    "", " ", "\t\n\r ", "!", "?!...", "!!!???---", "'\"", "$+<=>^`|~", "¡¿«»§¶·",
    "a" * 100, "a" * 101, "b" * 250, "antidisestablishmentarianism" * 3, "x" + "é" * 99, "x" + "é" * 100,
    "Café NAÏVE résumé Ångström œuvre ÆØÅ ß ÿ Þórr Ðóra µ ª º ¼ ×÷",
    "naïve\u0301 e\u0301 combining\u0308", "日本語テキスト 中文字符", "привет мир", "ελληνικα",
    "emoji 😀👍 ok", "\u200bzero\u200dwidth\ufeffbom", "soft\xadhyphen nb\xa0sp line\u2028sep",
    "ctrl\x00nul\x01\x07\x0bvt\x0cff\x1bEsc\x7fdel\x85nel", "“curly” ‘quotes’ — dash – en … ellipsis",
    "foo[MASK]bar [CLS] [SEP][PAD] [unused3] [UNK]", "What's the U.S.A.'s GDP in 1999?",
    " ".join(["word"] * 300), "punct" + "!" * 200, "##hash ## #tag",
]
INVALID_UTF8 = [b"\xff", b"ab\xffcd", b"\xc3", b"caf\xc3", b"\xe2\x82\x41x", b"\xed\xa0\x80surrogate",
                b"\xf4\x90\x80\x80big", b"\xc0\xafoverlong", b"ok \x80\x80 \xf0\x9f\x98 done"]
MAX_LENS = (2, 3, 8, 128, 512)
# Stated as not handled (wordpiece.h): case and accents beyond Latin-1.
NOT_HANDLED = ["Привет", "Ελληνικά", "ā", "Łódź"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    from toolchain.mcu.wordpiece_host import build_library

    return build_library(tmp_path_factory.mktemp("wordpiece"))


@pytest.fixture(scope="module")
def full_doc():
    from toolchain.features.backbone import packaged_model_dir

    return json.loads((packaged_model_dir() / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trec():
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import preset_spec

    return load_dataset(preset_spec("trec"))


@pytest.fixture(scope="module")
def pruned_doc(full_doc, trec):
    from toolchain.export.vocab import prune_for_texts, remap_tokenizer_json
    from toolchain.features.backbone import packaged_model_dir

    pruning = prune_for_texts(packaged_model_dir() / "tokenizer.json", trec.train.texts)
    assert pruning.n_kept < 10_000  # a real pruning: most of the 30,522 rows go
    return remap_tokenizer_json(full_doc, pruning)


@pytest.fixture(scope="module", params=["full", "pruned"])
def pair(request, lib, full_doc, pruned_doc):
    from toolchain.mcu.wordpiece_host import CTokenizer

    doc = full_doc if request.param == "full" else pruned_doc
    return CTokenizer(lib, table_from_tokenizer_json(doc)), doc


@pytest.mark.parametrize("max_len", MAX_LENS)
def test_tricky_inputs_match_tokenizers(pair, max_len):
    from toolchain.mcu.wordpiece_host import reference_tokenizer

    ctok, doc = pair
    ref = reference_tokenizer(doc, max_len)
    for text in TRICKY:
        assert ctok.encode(text, max_len) == ref.encode(text).ids, repr(text)
    for raw in INVALID_UTF8:  # Python's replacement decoding is what a host would pass on
        assert ctok.encode(raw, max_len) == ref.encode(raw.decode("utf-8", "replace")).ids, raw


def test_what_is_stated_as_not_handled_differs(lib, full_doc):
    """Pins the stated limits (full vocabulary: a pruned one may make both sides [UNK]); were
    they lifted, this fails and wordpiece.h needs updating."""
    from toolchain.mcu.wordpiece_host import CTokenizer, reference_tokenizer

    ctok, ref = CTokenizer(lib, table_from_tokenizer_json(full_doc)), reference_tokenizer(full_doc)
    for text in NOT_HANDLED:
        assert ctok.encode(text) != ref.encode(text).ids, text
        assert ctok.encode(text.lower()) == ref.encode(text.lower()).ids or any(
            unicodedata.category(c) == "Mn" for c in unicodedata.normalize("NFD", text)), text


def test_wide_fold_build_handles_case_and_accents_beyond_latin1(tmp_path, full_doc):
    """-DCS_WP_WIDE_FOLD (opt-in, more flash): the stated limits above are lifted for characters
    that fold to one character (Latin Extended, Greek, Cyrillic, fullwidth...)."""
    import random

    from toolchain.mcu.wordpiece_host import CTokenizer, build_library, reference_tokenizer

    ctok = CTokenizer(build_library(tmp_path, defines=("CS_WP_WIDE_FOLD",)), table_from_tokenizer_json(full_doc))
    ref = reference_tokenizer(full_doc)
    rnd = random.Random(3)
    alphabet = [chr(c) for c in (*range(0x100, 0x250), *range(0x370, 0x530), *range(0x1E00, 0x1F00),
                                 *range(0xFF01, 0xFF5F), *range(0x20, 0x7F))
                if unicodedata.category(chr(c)) != "Cn"]
    texts = NOT_HANDLED + ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 30))) for _ in range(800)]
    for text in texts:
        assert ctok.encode(text) == ref.encode(text).ids, text


def test_the_edge_cases_do_what_bert_does(pair):
    ctok, doc = pair
    vocab = doc["model"]["vocab"]
    cls, sep, unk = vocab["[CLS]"], vocab["[SEP]"], vocab["[UNK]"]
    assert ctok.encode("") == [cls, sep]
    assert ctok.encode("a" * 101) == [cls, unk, sep]  # over max_input_chars_per_word
    assert len(ctok.encode(" ".join(["word"] * 300), 128)) == 128
    assert ctok.encode("x " * 10, 2) == [cls, sep]
    assert ctok.encode("!?") == [cls, vocab["!"], vocab["?"], sep]


@pytest.mark.parametrize("dataset", ["trec", "emotion", "sst2"])
def test_sample_of_each_test_split_agrees(lib, full_doc, pruned_doc, dataset):
    """Every 8th test text; the benchmark runs every text of each split."""
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import preset_spec
    from toolchain.mcu.wordpiece_host import CTokenizer, compare, reference_tokenizer

    texts = list(load_dataset(preset_spec(dataset)).test.texts)[::8]
    assert len(texts) >= 60
    for doc in (full_doc, pruned_doc):  # trec's pruning: other datasets see many [UNK]s
        result = compare(CTokenizer(lib, table_from_tokenizer_json(doc)), reference_tokenizer(doc), texts)
        assert result["agreement"] >= 0.995, result["differences"][:3]


def test_pruned_table_maps_dropped_pieces_to_unk(lib, full_doc, pruned_doc):
    from toolchain.mcu.wordpiece_host import CTokenizer

    full = CTokenizer(lib, table_from_tokenizer_json(full_doc))
    pruned = CTokenizer(lib, table_from_tokenizer_json(pruned_doc))
    text = "photosynthesis of chlorophyll in the mitochondria"
    a, b = full.encode(text), pruned.encode(text)
    assert len(a) == len(b)  # same split
    unk = pruned_doc["model"]["vocab"]["[UNK]"]
    assert unk in b and unk not in a


def test_table_layout_counts_every_byte(full_doc):
    table = table_from_tokenizer_json(full_doc)
    layout = table_layout(table)
    assert layout["total_bytes"] == len(table) == sum(layout["section_bytes"].values())
    assert layout["section_bytes"]["header"] == HEADER_BYTES
    assert layout["added_tokens"] == len(full_doc["added_tokens"])
    conts = sum(t.startswith("##") for t in full_doc["model"]["vocab"])
    assert 0 < layout["continuations"] <= conts
    assert layout["words"] + layout["continuations"] < len(full_doc["model"]["vocab"])  # unmatchable left out
    with pytest.raises(VocabTableError):
        table_layout(table[:-1])


def test_pruned_table_is_smaller_and_holds_every_string(full_doc, pruned_doc):
    full, pruned = (table_layout(table_from_tokenizer_json(d)) for d in (full_doc, pruned_doc))
    assert (pruned["words"], pruned["continuations"]) == (full["words"], full["continuations"])
    assert pruned["entries_with_an_id"] < full["entries_with_an_id"]
    assert pruned["total_bytes"] == full["total_bytes"] - 2 * (full["entries_with_an_id"]
                                                              - pruned["entries_with_an_id"])


def test_c_refuses_a_bad_table(lib, full_doc):
    from toolchain.mcu.wordpiece_host import CTokenizer, HostTokenizerError

    table = table_from_tokenizer_json(full_doc)
    broken_block = bytearray(table)
    broken_block[HEADER_BYTES + 16 * len(full_doc["added_tokens"]) + 3] = 17  # 17 entries in a block
    for bad in (table[:-1], b"XSWP" + table[4:], table + b"\0", table[:HEADER_BYTES], bytes(broken_block)):
        with pytest.raises(HostTokenizerError):
            CTokenizer(lib, bad)


def test_pack_vocab_rejects_what_the_format_cannot_hold():
    with pytest.raises(VocabTableError):
        pack_vocab({"a": 70_000}, unk_id=0, cls_id=1, sep_id=2)
    with pytest.raises(VocabTableError):
        pack_vocab({"a": 3}, unk_id=0, cls_id=1, sep_id=2, max_chars=101)


@pytest.mark.skipif(unicodedata.unidata_version != "14.0.0", reason="header generated from Unicode 14.0.0")
def test_unicode_header_is_the_generated_one():
    assert (FIRMWARE / "src" / "wordpiece_unicode.h").read_text() == unicode_header()


@needs_arm
def test_cortexm_build_needs_no_libc_and_is_sized(tmp_path):
    from toolchain.mcu.wordpiece_host import cortexm_size

    size = cortexm_size(tmp_path)
    assert size["undefined_symbols"] == []  # no malloc, no memcpy: links into any port
    assert size["static_ram_bytes"] == 0
    assert 0 < size["code_bytes"] and 0 < size["rodata_bytes"]
    assert size["largest_stack_frame_bytes"] < 1024  # the word buffer lives on the stack
    wide = cortexm_size(tmp_path, defines=("CS_WP_WIDE_FOLD",))
    assert wide["undefined_symbols"] == [] and wide["rodata_bytes"] > size["rodata_bytes"]


def test_c_header_table_tokenizes_in_a_c_program(tmp_path, pruned_doc, trec):
    """The table as a const array in a C header, linked with wordpiece.c: the firmware's way."""
    import subprocess

    from toolchain.mcu.vocab_table import c_header
    from toolchain.mcu.wordpiece_host import CFLAGS, SOURCE, reference_tokenizer

    (tmp_path / "table.h").write_text(c_header(table_from_tokenizer_json(pruned_doc)))
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include <string.h>\n#include "wordpiece.h"\n#include "table.h"\n'
        "int main(int argc, char **argv) {\n    uint16_t ids[128];\n"
        "    for (int a = 1; a < argc; a++) {\n"
        "        int32_t n = cs_wp_encode(cs_wp_table, CS_WP_TABLE_BYTES, (const uint8_t *)argv[a],"
        " strlen(argv[a]), ids, 128);\n"
        '        for (int32_t i = 0; i < n; i++) printf(i ? " %u" : "%u", (unsigned)ids[i]);\n'
        '        printf("\\n");\n    }\n    return 0;\n}\n')
    exe = tmp_path / "tok"
    subprocess.run(["cc", *CFLAGS, f"-I{FIRMWARE / 'include'}", str(tmp_path / "main.c"), str(SOURCE),
                    "-o", str(exe)], check=True)
    texts = list(trec.test.texts)[:20]
    out = subprocess.run([str(exe), *texts], capture_output=True, text=True, check=True).stdout
    got = [[int(v) for v in line.split()] for line in out.splitlines()]
    assert got == [e.ids for e in reference_tokenizer(pruned_doc).encode_batch(texts)]


@needs_arm
def test_table_flash_bytes_on_cortexm_are_the_packed_bytes(tmp_path, pruned_doc):
    from toolchain.mcu.wordpiece_host import cortexm_table_bytes

    table = table_from_tokenizer_json(pruned_doc)
    assert cortexm_table_bytes(table, tmp_path) == len(table) == table_layout(table)["total_bytes"]


def _fuzz_texts(seed: int, n: int) -> list[bytes]:
    """Seeded random byte strings over what the tokenizer claims to handle: ASCII, Latin-1,
    whitespace and controls, Unicode punctuation, CJK, emoji, unaccented lower-case Cyrillic,
    added tokens, and stray bytes that are not UTF-8."""
    import random

    rnd = random.Random(seed)
    alphabet = ([chr(c) for c in range(0x20, 0x7F)] * 3 + [chr(c) for c in range(0xA0, 0x100)]
                + list("\t\n\r\x00\x0b\x0c\x1b\x7f\x85\xad\u200b\u2028\u3000\ufeff\ufffd")
                + list("–—‘’“”…‹›、。「」・！？") + list("日本語中文字") + ["😀", "👍🏽"]
                + list("абвгдежзиклмнопрст") + ["[MASK]", "[CLS]", "##", "e\u0301"])
    words = ["the", "what", "play", "playing", "unbelievable", "naïve", "café", "x" * 30]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(0, 40)):
            r = rnd.random()
            parts.append((rnd.choice(words) if r < 0.3 else rnd.choice(alphabet)).encode())
            if rnd.random() < 0.03:
                parts.append(bytes([rnd.choice([0x80, 0xBF, 0xC0, 0xC3, 0xE2, 0xED, 0xF0, 0xF5, 0xFF])]))
        out.append(b"".join(parts))
    return out


def test_fuzzed_texts_match_tokenizers(pair):
    from toolchain.mcu.wordpiece_host import reference_tokenizer

    ctok, doc = pair
    for max_len in (16, 128):
        ref = reference_tokenizer(doc, max_len)
        for raw in _fuzz_texts(15, 1500):
            assert ctok.encode(raw, max_len) == ref.encode(raw.decode("utf-8", "replace")).ids, raw


def _run_count_image(image) -> str:
    import socket

    from toolchain.boards.mcu_emulation import qemu_mps2

    with qemu_mps2(image) as url:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            out = b""
            while not out.endswith(b"done\n"):
                chunk = sock.recv(1 << 16)
                assert chunk, out[-200:]
                out += chunk
    return out.decode("ascii")


@needs_qemu
def test_cortexm_qemu_ids_and_deterministic_instruction_counts(tmp_path, pruned_doc, trec):
    """The tokenizer on the emulated Cortex-M4, linked with the firmware core and the mps2 port:
    the same ids as `tokenizers`, and the same instruction count on every run (-icount)."""
    from toolchain.mcu.wordpiece_host import (
        build_count_image,
        parse_count_output,
        reference_tokenizer,
    )

    texts = [*list(trec.test.texts)[:12], "", "a" * 101, b"caf\xc3 \xff!"]
    image = build_count_image(table_from_tokenizer_json(pruned_doc), texts, tmp_path, max_len=16)
    first, second = (parse_count_output(_run_count_image(image)) for _ in range(2))
    ref = reference_tokenizer(pruned_doc, 16)
    want = [ref.encode(t if isinstance(t, str) else t.decode("utf-8", "replace")).ids for t in texts]
    assert [r["ids"] for r in first] == want
    assert [r["instructions"] for r in first] == [r["instructions"] for r in second]
    assert all(r["instructions"] > 0 for r in first)
    assert first[0]["instructions"] > first[12]["instructions"]  # a question costs more than ""
