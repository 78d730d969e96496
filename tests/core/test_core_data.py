"""Datasets: declared formats, presets, the `datasets` branch, carving, and every bad-input case
(each message names the file, the line where there is one, and the fix)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from toolchain.data.dataset import load_dataset, stratified_carve
from toolchain.data.presets import preset_spec, resolve_dataset
from toolchain.data.spec import DatasetSpec, load_dataset_spec
from toolchain.errors import ConfigError, DatasetError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED_DATA / "trec").is_dir(), reason="../shared/data is absent")


def tsv(folder: Path, name: str, rows: list[tuple[str, str]], header=("sentence", "label")) -> Path:
    path = folder / name
    path.write_text("\t".join(header) + "\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows), encoding="utf-8")
    return path


def spec_for(folder: Path, **kw) -> DatasetSpec:
    kw.setdefault("format", "tsv")
    kw.setdefault("text_field", "sentence")
    return DatasetSpec(name="t", base_dir=str(folder), **kw)


TRAIN = [("good film", "pos"), ("bad film", "neg"), ("great plot", "pos"), ("poor plot", "neg")] * 5


# --- formats -------------------------------------------------------------------------------------


def test_tsv_reads_texts_and_labels_with_test_split(tmp_path):
    tsv(tmp_path, "train.tsv", TRAIN)
    tsv(tmp_path, "test.tsv", [("fine cast", "pos"), ("dull cast", "neg")])
    ds = load_dataset(spec_for(tmp_path, train="train.tsv", test="test.tsv"))
    assert ds.label_names == ("neg", "pos")
    assert len(ds.train) + len(ds.validation) == len(TRAIN)
    assert ds.validation_carved
    assert ds.test.texts == ("fine cast", "dull cast")
    assert ds.test.labels.tolist() == [1, 0]


def test_csv_with_quoted_delimiter(tmp_path):
    (tmp_path / "train.csv").write_text(
        'text,label\n"good, really good",pos\n"bad, so bad",neg\nnice,pos\nawful,neg\n', encoding="utf-8"
    )
    ds = load_dataset(DatasetSpec(name="c", format="csv", train=str(tmp_path / "train.csv"), validation_fraction=0.5))
    texts = set(ds.train.texts) | set(ds.validation.texts)
    assert "good, really good" in texts and "bad, so bad" in texts


def test_jsonl(tmp_path):
    lines = [json.dumps({"text": t, "label": lab, "extra": 1}) for t, lab in TRAIN[:4]]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    (tmp_path / "val.jsonl").write_text(json.dumps({"text": "ok", "label": "pos"}) + "\n", encoding="utf-8")
    ds = load_dataset(DatasetSpec(name="j", format="jsonl", train=str(tmp_path / "train.jsonl"),
                                  validation=str(tmp_path / "val.jsonl")))
    assert ds.train.texts == tuple(t for t, _ in TRAIN[:4])
    assert not ds.validation_carved and ds.validation.texts == ("ok",)


def test_jsonl_text_with_unicode_line_separator_stays_one_example(tmp_path):
    # JSON allows U+2028 raw inside strings; str.splitlines() would cut the line there.
    rows = [{"text": "good\u2028film", "label": "pos"}, {"text": "bad\x85film", "label": "neg"}] * 2
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows),
                                          encoding="utf-8")
    (tmp_path / "val.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    ds = load_dataset(DatasetSpec(name="j", format="jsonl", train=str(tmp_path / "train.jsonl"),
                                  validation=str(tmp_path / "val.jsonl")))
    assert ds.train.texts == ("good\u2028film", "bad\x85film") * 2


def test_delimited_with_semicolon(tmp_path):
    (tmp_path / "train.txt").write_text("text;label_name\ni feel great;joy\ni feel low;sadness\n"
                                        "so happy;joy\nso down;sadness\n", encoding="utf-8")
    spec = DatasetSpec(name="d", format="delimited", delimiter=";", train=str(tmp_path / "train.txt"),
                       label_field="label_name", validation_fraction=0.5)
    ds = load_dataset(spec)
    assert ds.label_names == ("joy", "sadness")
    assert sorted(ds.train.texts + ds.validation.texts) == ["i feel great", "i feel low", "so down", "so happy"]


def test_prefixed_with_label_separator_and_latin1(tmp_path):
    body = "NUM:date When was the caf\xe9 opened ?\nHUM:ind Who wrote it ?\nNUM:count How many ?\nHUM:gr Which band ?\n" * 2
    (tmp_path / "train.label").write_bytes(body.encode("latin-1"))
    spec = DatasetSpec(name="p", format="prefixed", train=str(tmp_path / "train.label"), encoding="latin-1",
                       label_separator=":", label_part=0, validation_fraction=0.5)
    ds = load_dataset(spec)
    assert ds.label_names == ("HUM", "NUM")
    assert "When was the caf\xe9 opened ?" in ds.train.texts + ds.validation.texts
    fine = load_dataset(DatasetSpec(name="p", format="prefixed", train=str(tmp_path / "train.label"),
                                    encoding="latin-1", label_separator=":", label_part=1,
                                    validation_fraction=0.5))
    assert fine.label_names == ("count", "date", "gr", "ind")


def test_integer_labels_map_to_label_names(tmp_path):
    tsv(tmp_path, "train.tsv", [("good", "1"), ("bad", "0")] * 3)
    ds = load_dataset(spec_for(tmp_path, train="train.tsv", label_names=("negative", "positive"),
                               validation_fraction=0.5))
    assert ds.label_names == ("negative", "positive")


def test_spec_file_resolves_relative_paths_and_rejects_unknown_keys(tmp_path):
    tsv(tmp_path, "train.tsv", TRAIN)
    spec_path = tmp_path / "mine.toml"
    spec_path.write_text('format = "tsv"\ntrain = "train.tsv"\ntext_field = "sentence"\n')
    spec = resolve_dataset(str(spec_path))
    assert spec.name == "mine" and spec.path("train") == tmp_path.resolve() / "train.tsv"
    assert len(load_dataset(spec).train) > 0
    spec_path.write_text('format = "tsv"\ntrain = "train.tsv"\ntext_feld = "sentence"\n')
    with pytest.raises(ConfigError, match="text_feld"):
        load_dataset_spec(spec_path)
    with pytest.raises(ConfigError, match="neither a preset.*docs/datasets.md"):
        resolve_dataset("no-such-preset")


# --- bad input -----------------------------------------------------------------------------------


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset(spec_for(tmp_path, train="nope.tsv"))
    msg = str(err.value)
    assert str(tmp_path / "nope.tsv") in msg and "not found" in msg and "CODESIGN_DATA" in msg


def test_empty_file(tmp_path):
    (tmp_path / "train.tsv").write_text("  \n\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "train.tsv")) + ".*empty"):
        load_dataset(spec_for(tmp_path, train="train.tsv"))


def test_header_only_file(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no examples"):
        load_dataset(spec_for(tmp_path, train="train.tsv"))


def test_missing_column_lists_columns_and_the_setting(tmp_path):
    tsv(tmp_path, "train.tsv", TRAIN, header=("text", "label"))
    with pytest.raises(DatasetError) as err:
        load_dataset(spec_for(tmp_path, train="train.tsv"))
    msg = str(err.value)
    assert f"{tmp_path / 'train.tsv'}, line 1" in msg
    assert "'sentence'" in msg and "columns: text, label" in msg and "text_field" in msg


def test_missing_jsonl_key_names_the_line(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x"}\n{"txt": "b", "label": "y"}\n')
    with pytest.raises(DatasetError, match=r"t\.jsonl, line 2: no key 'text'; set text_field"):
        load_dataset(DatasetSpec(name="j", format="jsonl", train=str(tmp_path / "t.jsonl")))


def test_short_row_names_the_line_and_the_delimiter(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\tpos\nbad neg\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train\.tsv, line 3: 1 field.*delimiter"):
        load_dataset(spec_for(tmp_path, train="train.tsv"))


def test_undecodable_bytes_suggest_a_working_encoding(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes("sentence\tlabel\nnice\tpos\nthe caf\xe9 was bad\tneg\ngood\tpos\nawful\tneg\n".encode("latin-1"))
    with pytest.raises(DatasetError) as err:
        load_dataset(spec_for(tmp_path, train="train.tsv"))
    msg = str(err.value)
    assert f"{path}, line 3" in msg and "not valid utf-8" in msg
    suggested = re.search(r'encoding = "([^"]+)"', msg).group(1)
    assert suggested != "utf-8"
    # The suggestion works: the same spec with it reads the accented text.
    ds = load_dataset(spec_for(tmp_path, train="train.tsv", encoding=suggested, validation_fraction=0.5))
    assert "the caf\xe9 was bad" in ds.train.texts + ds.validation.texts


def test_label_unseen_in_train_names_file_line_and_labels(tmp_path):
    tsv(tmp_path, "train.tsv", TRAIN)
    tsv(tmp_path, "dev.tsv", [("fine", "pos"), ("meh", "neutral"), ("bad", "neg")])
    with pytest.raises(DatasetError) as err:
        load_dataset(spec_for(tmp_path, train="train.tsv", validation="dev.tsv"))
    msg = str(err.value)
    assert f"{tmp_path / 'dev.tsv'}, line 3" in msg and "'neutral'" in msg
    assert "neg, pos" in msg and "fix the label" in msg


def test_unseen_test_label_in_a_quoted_multiline_csv_names_the_real_line(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,pos\nbad,neg\nnice,pos\nawful,neg\n")
    (tmp_path / "test.csv").write_text('text,label\n"two\nlines",pos\nodd,other\n')
    with pytest.raises(DatasetError, match=r"test\.csv, line 4: label 'other'"):
        load_dataset(DatasetSpec(name="c", format="csv", train=str(tmp_path / "train.csv"),
                                 test=str(tmp_path / "test.csv")))


def test_single_class_train_set(tmp_path):
    tsv(tmp_path, "train.tsv", [("good", "pos")] * 5)
    with pytest.raises(DatasetError) as err:
        load_dataset(spec_for(tmp_path, train="train.tsv"))
    msg = str(err.value)
    assert str(tmp_path / "train.tsv") in msg and "single class 'pos'" in msg and "label_field" in msg


def test_label_not_an_index_into_label_names(tmp_path):
    tsv(tmp_path, "train.tsv", [("good", "1"), ("bad", "0"), ("odd", "7")])
    with pytest.raises(DatasetError, match=r"train\.tsv, line 4: label '7' is not an index"):
        load_dataset(spec_for(tmp_path, train="train.tsv", label_names=("negative", "positive")))


# --- carving and slices --------------------------------------------------------------------------


def test_stratified_carve_is_seeded_stratified_and_disjoint():
    labels = np.array([0] * 80 + [1] * 20)
    keep, held = stratified_carve(labels, 0.25, seed=3)
    keep2, held2 = stratified_carve(labels, 0.25, seed=3)
    assert np.array_equal(held, held2) and np.array_equal(keep, keep2)
    assert not set(keep) & set(held) and len(keep) + len(held) == 100
    assert np.bincount(labels[held]).tolist() == [20, 5]  # class ratio kept
    _, held_other = stratified_carve(labels, 0.25, seed=4)
    assert not np.array_equal(held, held_other)


def test_carve_keeps_one_example_of_a_rare_class():
    labels = np.array([0] * 10 + [1])
    keep, _ = stratified_carve(labels, 0.5, seed=0)
    assert 1 in labels[keep]


def test_max_per_class_takes_the_first_examples_in_file_order(tmp_path):
    rows = [(f"pos {i}", "pos") for i in range(10)] + [(f"neg {i}", "neg") for i in range(10)]
    tsv(tmp_path, "train.tsv", rows)
    tsv(tmp_path, "dev.tsv", rows)
    ds = load_dataset(spec_for(tmp_path, train="train.tsv", validation="dev.tsv"), 3, 2)
    assert ds.train.texts == ("pos 0", "pos 1", "pos 2", "neg 0", "neg 1", "neg 2")
    assert ds.validation.texts == ("pos 0", "pos 1", "neg 0", "neg 1")
    assert ds.fingerprint() != load_dataset(spec_for(tmp_path, train="train.tsv", validation="dev.tsv"), 4, 2).fingerprint()


# --- presets and the `datasets` branch ------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize(
    ("name", "n_classes", "carved"), [("sst2", 2, False), ("emotion", 6, False), ("trec", 6, True)]
)
def test_presets_resolve_locally(monkeypatch, name, n_classes, carved):
    monkeypatch.setenv("CODESIGN_DATA", str(SHARED_DATA))
    spec = resolve_dataset(name)
    assert spec.source == "files" and Path(spec.path("train")).is_file()
    ds = load_dataset(spec, max_per_class=5, max_eval_per_class=2)
    assert ds.n_classes == n_classes and ds.validation_carved is carved
    assert len(ds.train) == 5 * n_classes and ds.test is not None


@needs_shared
def test_trec_full_train_counts():
    ds = load_dataset(preset_spec("trec", SHARED_DATA))
    assert len(ds.train) + len(ds.validation) == 5452 and len(ds.test) == 500
    assert ds.label_names == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


@pytest.mark.parametrize(
    ("name", "hf_id"), [("sst2", "stanfordnlp/sst2"), ("emotion", "dair-ai/emotion"), ("trec", "CogComp/trec")]
)
def test_presets_fall_back_to_the_hub_id(monkeypatch, tmp_path, name, hf_id):
    monkeypatch.setenv("CODESIGN_DATA", str(tmp_path))  # an empty data directory
    spec = resolve_dataset(name)
    assert spec.source == "hub" and spec.hf_id == hf_id and not spec.train


def _save_dataset_dict(folder: Path) -> Path:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = {"sentence": [f"{w} film" for w in ("good", "bad", "great", "awful")] * 3, "label": [1, 0, 1, 0] * 3}
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows, features=features),
        "validation": datasets.Dataset.from_dict({"sentence": ["fine", "poor"], "label": [1, 0]}, features=features),
    })
    dd.save_to_disk(str(folder))
    return folder


def test_datasets_branch_loads_a_local_save_to_disk_directory(tmp_path):
    local = _save_dataset_dict(tmp_path / "hfdata")
    spec = DatasetSpec(name="hf", hf_id=str(local), text_field="sentence", label_field="label",
                       hf_train_split="train", hf_test_split="validation")
    assert spec.source == "hub"
    ds = load_dataset(spec)
    assert ds.label_names == ("negative", "positive")  # ClassLabel ints → names
    assert ds.test.texts == ("fine", "poor") and ds.test.labels.tolist() == [1, 0]
    assert ds.validation_carved and len(ds.train) + len(ds.validation) == 12


def test_datasets_branch_missing_column_and_split(tmp_path):
    local = _save_dataset_dict(tmp_path / "hfdata")
    with pytest.raises(DatasetError, match="no column 'text'.*columns: sentence, label.*set text_field"):
        load_dataset(DatasetSpec(name="hf", hf_id=str(local)))
    with pytest.raises(DatasetError, match="no split 'training'"):
        load_dataset(DatasetSpec(name="hf", hf_id=str(local), text_field="sentence", hf_train_split="training"))
