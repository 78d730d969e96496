"""Vocabulary pruning: the remapped tokenizer, the sliced embedding table, the pruned ONNX artefact
against the unpruned one, the cost estimate, and candidate ids that predate the dimension."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from export_runs import kept_candidates, run_in_home
from tokenizers import Tokenizer

from toolchain.export.artefact import export_artefact, read_artefact
from toolchain.export.text_inputs import batched_probs, encode, load_tokenizer
from toolchain.export.tolerances import TOLERANCES
from toolchain.export.validate import ort_session
from toolchain.export.vocab import (
    kept_ids,
    prune_for_texts,
    remap_tokenizer_json,
    slice_rows,
    special_token_ids,
)
from toolchain.flows.run import RunConfig, run
from toolchain.search.candidate import Candidate
from toolchain.search.space import SearchSpace

TRAIN = ["the film was good", "the plot was really awful", "a lovely cast"]


def _tok(folder: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def test_pruned_tokenizer_gives_remapped_ids_for_seen_tokens_and_unk_for_unseen(tiny_bert, tmp_path):
    doc = json.loads((tiny_bert / "tokenizer.json").read_text())
    pruning = prune_for_texts(tiny_bert / "tokenizer.json", TRAIN)
    full = _tok(tiny_bert)
    seen = sorted({i for t in TRAIN for i in full.encode(t).ids})
    specials = special_token_ids(doc)
    assert set(pruning.kept) == set(seen) | specials  # exactly what training uses, plus specials
    (tmp_path / "tokenizer.json").write_text(json.dumps(remap_tokenizer_json(doc, pruning)))
    pruned = _tok(tmp_path)
    unk_new = pruned.token_to_id("[UNK]")
    assert unk_new == pruning.new_unk_id and pruned.token_to_id("[PAD]") == 0
    for old in seen:  # every seen token: its new contiguous id
        token = full.id_to_token(old)
        assert pruned.token_to_id(token) == int(np.searchsorted(pruning.kept, old))
    for text in TRAIN:
        assert pruned.encode(text).ids == list(pruning.remap(full.encode(text).ids))
        assert unk_new not in pruned.encode(text).ids
    # Unseen words: the same split as before, each dropped piece is [UNK]; kept pieces keep ids.
    text = "the xylophone was wonderful"
    old_ids, new_ids = full.encode(text).ids, pruned.encode(text).ids
    assert len(old_ids) == len(new_ids)
    for o, n in zip(old_ids, new_ids, strict=True):
        assert n == (int(np.searchsorted(pruning.kept, o)) if o in pruning.kept else unk_new)
    assert new_ids.count(unk_new) == sum(o not in pruning.kept for o in old_ids) > 0
    assert max(pruned.get_vocab().values()) == pruning.n_kept - 1  # contiguous 0..K-1


def test_kept_ids_and_slice_rows_are_plain_arrays():
    # No tokenizer, no ONNX: what the MCU whole-model path would call on its own token ids.
    pruning = kept_ids([[5, 7], [7, 2]], specials={0}, full_size=10, unk_id=1)
    assert list(pruning.kept) == [0, 1, 2, 5, 7]
    table = np.arange(30, dtype=np.float32).reshape(10, 3)
    rows = slice_rows(table, pruning)
    assert rows.shape == (5, 3) and np.array_equal(rows[pruning.remap([7])[0]], table[7])
    assert list(pruning.remap([9, 5])) == [pruning.new_unk_id, 3]


def test_nearest_kept_substitutes_reads_a_dropped_id_as_its_nearest_kept_row():
    from toolchain.export.vocab import nearest_kept_substitutes

    pruning = kept_ids([[2, 3]], specials={0}, full_size=6, unk_id=1)  # kept 0,1,2,3; dropped 4,5
    table = np.array([[1, 0], [0, 1], [1, 1], [-1, 0.1], [0.9, 1.0], [-2, 0.3]], dtype=np.float32)
    sub = nearest_kept_substitutes(pruning, table, block=1)
    # 4 is nearest (cosine) to 2, 5 to 3; kept ids stay themselves
    assert list(sub.substitute) == [0, 1, 2, 3, 2, 3]
    # a special is never a substitute: with 2 excluded, 4 goes to its next nearest, 1 ([0, 1])
    assert list(nearest_kept_substitutes(pruning, table, exclude={0, 2}).substitute)[4] == 1
    assert list(sub.remap([4, 5, 2])) == [2, 3, 2] and list(pruning.remap([4])) == [pruning.new_unk_id]
    assert sub.to_dict()["dropped_to"].startswith("nearest") and pruning.to_dict()["dropped_to"] == "[UNK]"
    with pytest.raises(Exception, match="rows"):
        nearest_kept_substitutes(pruning, table[:5])


def test_candidate_id_without_vocab_is_unchanged():
    cand = Candidate("m", (1, 2), "concat", "mean", "softmax", 3)
    # The canonical JSON every candidate had before vocab existed (no "vocab" key).
    old = {"backbone": "m", "layers": [1, 2], "combine": "concat", "pooling": "mean", "head": "softmax",
           "head_size": 3, "precision": "fp32", "max_length": 64, "depth": 2}
    old_id = hashlib.sha256(json.dumps(old, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert cand.id == old_id and "vocab" not in cand.to_dict()
    pruned = replace(cand, vocab="pruned")
    assert pruned.id != cand.id and Candidate.from_dict(pruned.to_dict()) == pruned
    assert Candidate.from_dict(cand.to_dict()).vocab == "full"
    with pytest.raises(ValueError, match="vocab"):
        replace(cand, vocab="tiny")
    space = SearchSpace(backbones={"m": 2}, vocabs=("full", "pruned"), heads=(("softmax", 3),))
    base = SearchSpace(backbones={"m": 2}, heads=(("softmax", 3),))
    assert len(space.candidates()) == 2 * len(base.candidates())


def test_cost_estimate_knows_pruned_rows():
    from toolchain.config.target_spec import load_target_spec
    from toolchain.features.backbone import BackboneInfo
    from toolchain.search.cost import estimate_cost

    info = BackboneInfo(n_layers=2, hidden=32, intermediate=64, heads=2, vocab=30522, max_positions=512)
    target = load_target_spec("host")
    cand = Candidate("tiny", (1,), "single", "mean", "softmax", 3)
    for precision, width in (("fp32", 4), ("int8-dynamic", 1)):
        full = estimate_cost(replace(cand, precision=precision), info, 66, 132, target, 10.0, vocab_rows=500)
        pruned = estimate_cost(replace(cand, precision=precision, vocab="pruned"), info, 66, 132, target, 10.0,
                               vocab_rows=500)
        assert full.model_bytes - pruned.model_bytes == (30522 - 500) * 32 * width
        assert full.peak_ram_bytes - pruned.peak_ram_bytes == full.model_bytes - pruned.model_bytes
        assert pruned.flops == full.flops
    # Unknown row count: costed at the full table (never understated).
    assert estimate_cost(replace(cand, vocab="pruned"), info, 66, 132, target, 10.0).model_bytes == \
        estimate_cost(cand, info, 66, 132, target, 10.0).model_bytes


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_bert, toy_spec) -> Path:
    return run_in_home(tmp_path_factory.mktemp("vocab-home"), tiny_bert, toy_spec)


def _deepest_id(run_dir: Path) -> str:
    return max(kept_candidates(run_dir), key=lambda c: (c["depth"], c["id"]))["id"]


def test_pruned_onnx_artefact_matches_unpruned_where_no_token_is_dropped(tiny_run, toy_rows, tiny_bert):
    cid = _deepest_id(tiny_run)
    full_dir, full_meta = export_artefact(tiny_run, cid, "fp32")
    out, meta = export_artefact(tiny_run, cid, "fp32", vocab="pruned")
    assert meta["candidate"]["vocab"] == "pruned" and meta["candidate_id"] != cid and out != full_dir
    assert meta["validation"]["passed"] and read_artefact(out) is not None
    assert not (out / "vocab.txt").exists()  # its line numbers would be the unpruned ids
    v = meta["vocab"]
    tol = TOLERANCES["fp32"].max_abs_prob
    assert v["passed"] and v["validation"]["max_abs_prob_untouched"] <= tol
    assert 0.0 <= v["validation"]["dropped_share"] <= 1.0 and "test" in v
    assert v["pruning"]["dropped_to"].startswith("nearest kept row")
    # Independently: training texts use only kept tokens, so both artefacts agree on them.
    texts = [t for t, _ in toy_rows(6)] + ["the film was superb"]
    full_tok, pruned_tok = load_tokenizer(full_dir, 64), load_tokenizer(out, 64)
    p_full = batched_probs(ort_session(full_dir / "model.onnx"), encode(full_tok, texts))
    p_pruned = batched_probs(ort_session(out / "model.onnx"), encode(pruned_tok, texts))
    assert float(np.abs(p_full - p_pruned).max()) <= tol
    # An unseen piece is read as its nearest kept piece (word-embedding cosine), never [UNK].
    from transformers import AutoModel

    from toolchain.rundir import RunDir

    full_ids = encode(full_tok, ["the xylophone was good"])[0]
    new_ids = encode(pruned_tok, ["the xylophone was good"])[0]
    assert pruned_tok.token_to_id("[UNK]") not in new_ids and len(new_ids) == len(full_ids)
    kept_old = prune_for_texts(tiny_bert / "tokenizer.json", RunDir.open(tiny_run).dataset().train.texts).kept
    specials = special_token_ids(json.loads((tiny_bert / "tokenizer.json").read_text()))
    pool = np.array([i for i in kept_old if i not in specials])
    emb = AutoModel.from_pretrained(str(tiny_bert)).embeddings.word_embeddings.weight.detach().numpy()
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    dropped = [(o, n) for o, n in zip(full_ids, new_ids, strict=True) if o not in kept_old]
    assert dropped  # "xylophone" is not in the training texts
    for old, new in dropped:
        nearest = pool[int((unit[pool] @ unit[old]).argmax())]
        assert new == int(np.searchsorted(kept_old, nearest))
    # Size shrinks by the dropped rows × hidden × 4 bytes (protobuf framing aside).
    n_kept = v["pruning"]["kept"]
    expected = (v["pruning"]["full_size"] - n_kept) * 32 * 4
    saved = full_meta["model_bytes"] - meta["model_bytes"]
    assert abs(saved - expected) <= 0.01 * expected
    # Reused, not rebuilt.
    assert export_artefact(tiny_run, cid, "fp32", vocab="pruned")[1]["files"] == meta["files"]


def test_bundle_of_a_pruned_candidate_ships_the_remapped_tokenizer(tiny_run, tmp_path):
    import os
    import subprocess
    import sys

    from toolchain.bundle.build import build_bundle

    cid = _deepest_id(tiny_run)
    art, meta = export_artefact(tiny_run, cid, "fp32", vocab="pruned")
    folder = build_bundle(tiny_run, "host", tmp_path / "bundles", candidate_id=meta["candidate_id"],
                          allow_unmeasured=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["candidate"]["vocab"] == "pruned"
    assert (folder / "tokenizer.json").read_bytes() == (art / "tokenizer.json").read_bytes()
    # The unchanged board runner: its own tokenizer gives the pruned ids the reference holds.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CODESIGN"))}
    proc = subprocess.run([sys.executable, "-I", "runner.py", "--self-check"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["passed"] and report["tokenizer_matches"]


def test_search_with_pruned_vocab_costs_the_twin_at_the_kept_rows(tmp_path, tiny_bert, toy_spec):
    from toolchain.export.vocab import prune_for_texts
    from toolchain.rundir import RunDir

    run_dir = tmp_path / "run"
    run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=0,
                  heads=(("softmax", 3),), poolings=("cls",), run_dir=str(run_dir), vocabs=("full", "pruned")))
    board = json.loads((run_dir / "leaderboard.json").read_text())
    run_ = RunDir.open(run_dir)
    rows = prune_for_texts(tiny_bert / "tokenizer.json", run_.dataset().train.texts).n_kept
    assert board["vocab_rows"] == {"tiny": rows}
    by_id = {c["id"]: c for c in board["candidates"]}
    twins = [c for c in board["candidates"] if c.get("vocab") == "pruned"]
    assert twins and len(twins) == len(board["candidates"]) // 2
    for twin in twins:
        full = by_id[replace(Candidate.from_dict(twin), vocab="full").id]
        assert full["val_acc"] == twin["val_acc"]  # one head: the [UNK] effect shows once exported
        saved = full["cost"]["model_bytes"] - twin["cost"]["model_bytes"]
        assert saved == (30522 - rows) * 32 * 4
