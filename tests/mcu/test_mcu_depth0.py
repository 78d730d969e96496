"""Depth-0 whole model: the firmware's C (wordpiece.c tokenizing raw text, depth0.c computing the
head input) is bit-exact with the Python integer reference (toolchain/mcu/depth0.py fed the
`tokenizers` library's ids) on trec test texts and tricky inputs, and close to the fp32 feature."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from mcu_helpers import needs_cc, needs_qemu

from toolchain.mcu.depth0 import (
    Depth0Tables,
    classify_int8,
    features_int8,
    float_features,
    load_embeddings,
    quantize_depth0,
)
from toolchain.mcu.quantize import quantize_head

pytestmark = needs_cc
MAX_LEN = 128
TRICKY = ["", "!?...", "a" * 300, "Café naïve 日本語 😀", " ".join(["word"] * 300), "[CLS] [SEP] [UNK]"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import preset_spec
    from toolchain.export.vocab import prune_for_texts, remap_tokenizer_json
    from toolchain.features.backbone import packaged_model_dir
    from toolchain.mcu.depth0_host import CDepth0, build_library
    from toolchain.mcu.vocab_table import table_from_tokenizer_json
    from toolchain.mcu.wordpiece_host import reference_tokenizer

    model_dir = packaged_model_dir()
    trec = load_dataset(preset_spec("trec"))
    pruning = prune_for_texts(model_dir / "tokenizer.json", trec.train.texts)
    doc = remap_tokenizer_json(json.loads((model_dir / "tokenizer.json").read_text("utf-8")), pruning)
    tok = reference_tokenizer(doc, MAX_LEN)
    emb = load_embeddings(model_dir, pruning.kept)
    # A softmax head fitted on standardised fp32 depth-0 features of trec's training texts, then
    # quantised as every MCU head is; the tables fold in its standardisation and input scale.
    train = np.stack([float_features(emb, e.ids) for e in tok.encode_batch(list(trec.train.texts[:800]))])
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    z = (train - mean) / std
    head = quantize_head(_fit_softmax(z, np.asarray(trec.train.labels[:800])), z)
    scale, zp = head.input_scale, head.input_zero_point
    tables = quantize_depth0(emb, MAX_LEN, mean, std, scale, zp)
    c = CDepth0(build_library(tmp_path_factory.mktemp("depth0")), table_from_tokenizer_json(doc), tables)
    return {"trec": trec, "tok": tok, "emb": emb, "tables": tables, "c": c, "std": (mean, std, scale, zp),
            "head": head, "vocab": table_from_tokenizer_json(doc)}


def _fit_softmax(x: np.ndarray, y: np.ndarray):
    from toolchain.heads.dense import DenseLayer

    n_cls = int(y.max()) + 1
    w, b, onehot = np.zeros((n_cls, x.shape[1])), np.zeros(n_cls), np.eye(n_cls)[y]
    for _ in range(100):
        p = np.exp((z := x @ w.T + b) - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * (p - onehot).T @ x / len(x)
        b -= 0.5 * (p - onehot).mean(0)
    return [DenseLayer(w.astype(np.float32), b.astype(np.float32))]


def test_c_equals_python_reference_on_trec_test_texts(setup):
    texts = list(setup["trec"].test.texts[:200]) + TRICKY
    want_ids = [e.ids for e in setup["tok"].encode_batch(texts)]
    mismatched = []
    for text, ids in zip(texts, want_ids, strict=True):
        got_ids, got = setup["c"].text_features(text)
        if got_ids != ids or not np.array_equal(got, features_int8(setup["tables"], ids)):
            mismatched.append(text)
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, e.g. {mismatched[:3]}"


def test_integer_features_track_fp32(setup):
    """Measured on trec (pruned, per-tensor int8 tables): mean |int - fp32| about 2.4 int8 levels
    of the head input, i.e. ~0.12 standard deviations; the bound leaves a small margin."""
    mean, std, scale, zp = setup["std"]
    diffs = []
    for e in setup["tok"].encode_batch(list(setup["trec"].test.texts[:200])):
        want = np.clip(np.rint((float_features(setup["emb"], e.ids) - mean) / std / scale) + zp, -128, 127)
        diffs.append(np.abs(features_int8(setup["tables"], e.ids).astype(np.int64) - want))
    assert float(np.mean(diffs)) < 3.0


def test_constant_token_and_bounds(setup):
    t = setup["tables"]
    flat = Depth0Tables(word=np.zeros_like(t.word[:4]), position=np.zeros_like(t.position),
                        word_mult=t.word_mult, pos_mult=t.pos_mult, word_scale=t.word_scale, gain=t.gain,
                        offset=t.offset, shift=t.shift)
    from toolchain.mcu.depth0_host import CDepth0, HostTokenizerError

    c = CDepth0(setup["c"].tokenizer._lib._name, setup["c"].tokenizer._table, flat)
    assert np.array_equal(c.features([1, 2, 3]), features_int8(flat, [1, 2, 3]))
    with pytest.raises(HostTokenizerError):
        c.features([4])  # id outside the table
    with pytest.raises(HostTokenizerError):
        setup["c"].features([0] * (MAX_LEN + 1))
    assert t.nbytes == t.word.size + t.position.size + 8 * t.dim


def test_whole_blob_parsed_and_run_by_the_firmware_code(setup, tmp_path):
    from toolchain.mcu.depth0_blob import to_whole_blob, whole_blob_size
    from toolchain.mcu.depth0_host import CWhole, build_whole_library

    t, head = setup["tables"], setup["head"]
    blob = to_whole_blob(setup["vocab"], t, head)
    assert len(blob) == whole_blob_size(len(setup["vocab"]), t, head)
    lib = build_whole_library(tmp_path)
    whole = CWhole(lib, blob, t.max_len, t.dim, head.out_dim)
    assert whole.why is None, whole.why
    texts = list(setup["trec"].test.texts[:100]) + TRICKY
    for text, enc in zip(texts, setup["tok"].encode_batch(texts), strict=True):
        n, logits = whole.classify(text)
        assert n == len(enc.ids)
        assert np.array_equal(logits, classify_int8(t, head, enc.ids)), text
    bad = bytearray(blob)
    bad[100] ^= 1  # inside the vocabulary table: the trailer CRC catches it
    assert CWhole(lib, bytes(bad), t.max_len, t.dim, head.out_dim).why == b"blob crc mismatch"


@pytest.fixture(scope="module")
def small_whole(setup):
    """A whole model over a vocabulary pruned to the texts it will see, so it fits the posix
    image's 1 MiB model slot (the trec-train pruning's 3.1 MB tables do not)."""
    from toolchain.export.vocab import prune_for_texts, remap_tokenizer_json
    from toolchain.features.backbone import packaged_model_dir
    from toolchain.mcu.depth0_blob import to_whole_blob
    from toolchain.mcu.vocab_table import table_from_tokenizer_json
    from toolchain.mcu.wordpiece_host import reference_tokenizer

    model_dir = packaged_model_dir()
    texts = list(setup["trec"].test.texts[:100])
    pruning = prune_for_texts(model_dir / "tokenizer.json", texts)
    doc = remap_tokenizer_json(json.loads((model_dir / "tokenizer.json").read_text("utf-8")), pruning)
    mean, std, scale, zp = setup["std"]
    tables = quantize_depth0(load_embeddings(model_dir, pruning.kept), MAX_LEN, mean, std, scale, zp)
    blob = to_whole_blob(table_from_tokenizer_json(doc), tables, setup["head"])
    return texts, reference_tokenizer(doc, MAX_LEN), tables, blob


def test_posix_pty_raw_text_in_class_out_bit_exact(posix_fw, setup, small_whole):
    from toolchain.boards.mcu_emulation import posix_pty
    from toolchain.boards.serial_link import SerialLink
    from toolchain.boards.text_link import classify_text
    from toolchain.mcu import selfcheck_crc

    texts, tok, tables, blob = small_whole
    head = setup["head"]
    assert len(blob) < 1 << 20
    with posix_pty(posix_fw) as path, SerialLink(path, timeout_s=5.0) as link:
        link.handshake()
        link.upload_model(blob)
        assert link.self_check().crc == selfcheck_crc(head)  # the head's own references
        got = [classify_text(link, text) for text in texts + TRICKY]
    for r, enc in zip(got, tok.encode_batch(texts + TRICKY), strict=True):
        assert r.tokens == len(enc.ids)
        assert np.array_equal(r.output, classify_int8(tables, head, enc.ids))
        assert r.argmax == int(np.argmax(r.output)) and r.icount > 0


def test_text_upload_with_bad_crc_is_refused(posix_fw, setup, small_whole):
    from toolchain.boards.mcu_emulation import posix_pty
    from toolchain.boards.serial_link import SerialLink
    from toolchain.errors import ProtocolError
    from toolchain.mcu import protocol as P

    text = b"What is the capital of France ?"
    with posix_pty(posix_fw) as path, SerialLink(path, timeout_s=5.0) as link:
        link.handshake()
        with pytest.raises(ProtocolError, match="no whole model"):
            link.exchange(P.CMD_TINFER)
        link.upload_model(small_whole[3])
        link.exchange(P.tload_command(text))
        bad = P.tdata_command(0, text).rsplit(" ", 1)[0] + " 00000000"  # wrong chunk CRC
        assert any("nak-[chunk crc]" in x for x in link._transceive(bad, None)[0])
        with pytest.raises(ProtocolError, match="text not uploaded"):
            link.exchange(P.CMD_TINFER)
        # A chunk that passes its own CRC but the whole text's CRC announced by tload differs.
        link.exchange(f"{P.CMD_TLOAD} {len(text)} {zlib.crc32(text) ^ 1:08x}")
        link.exchange(P.tdata_command(0, text))
        with pytest.raises(ProtocolError, match="text crc mismatch"):
            link.exchange(P.CMD_TINFER)
        with pytest.raises(ProtocolError, match="CS_TEXT_MAX"):
            link.exchange(f"{P.CMD_TLOAD} {P.TEXT_MAX + 1} 0")


def _qemu_session(image, texts):
    from toolchain.boards.mcu_emulation import qemu_mps2
    from toolchain.boards.serial_link import SerialLink
    from toolchain.boards.text_link import classify_text

    with qemu_mps2(image) as url, SerialLink(url, timeout_s=10.0) as link:
        info = link.handshake()
        check = link.self_check()
        return info, check, [classify_text(link, text) for text in texts]


@needs_qemu
@pytest.mark.slow
def test_qemu_mps2_whole_model_bit_exact_with_deterministic_counts(setup, small_whole, tmp_path):
    """The whole model baked into the mps2-whole image on the emulated Cortex-M4: raw text over
    the emulated UART, logits bit-exact, and QEMU -icount instruction counts identical across two
    fresh emulators (per inference, and so per token)."""
    from mcu_helpers import make

    from toolchain.mcu import selfcheck_crc
    from toolchain.mcu.depth0_blob import whole_c_header

    texts, tok, tables, blob = small_whole
    texts = texts[:30] + TRICKY[:2]
    header = tmp_path / "whole.h"
    header.write_text(whole_c_header(blob))
    make(tmp_path / "fw", "mps2-whole", BAKED=str(header))
    image = tmp_path / "fw" / "mps2-whole" / "codesign-fw.elf"
    info, check, first = _qemu_session(image, texts)
    _, check2, second = _qemu_session(image, texts)
    assert info.port == "mps2-an386" and info.counter_unit == "instructions"
    assert check.crc == selfcheck_crc(setup["head"]) and check.icount == check2.icount
    for r, enc in zip(first, tok.encode_batch(texts), strict=True):
        assert r.tokens == len(enc.ids)
        assert np.array_equal(r.output, classify_int8(tables, setup["head"], enc.ids))
    assert [r.icount for r in first] == [r.icount for r in second]
    assert all(r.icount > 0 for r in first)
