"""``format = "parquet"``: the same rows as the equivalent TSV, read batch by batch, and one-line
errors for the ways a Parquet split goes wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import file_spec, resolve_dataset
from toolchain.data.readers import read_split
from toolchain.data.spec import DatasetSpec
from toolchain.errors import DatasetError

pa = pytest.importorskip("pyarrow", reason="the parquet extra")
pq = pytest.importorskip("pyarrow.parquet")

TEXTS = ["how far is the moon ?", "who wrote hamlet ?", "  what is a quark  ", "name a river", "why ?"]
LABELS = ["NUM", "HUM", "DESC", "LOC", "DESC"]


def _write(path: Path, **columns) -> Path:
    pq.write_table(pa.table(columns), path, row_group_size=2)  # several row groups and batches
    return path


def _spec(path: Path, **kw) -> DatasetSpec:
    return DatasetSpec(name="p", format="parquet", train=str(path), **kw)


def test_parquet_gives_the_rows_of_the_same_tsv(tmp_path, monkeypatch):
    import toolchain.data.parquet as parquet

    monkeypatch.setattr(parquet, "BATCH_ROWS", 2)  # rows cross batch boundaries
    pq_path = _write(tmp_path / "d.parquet", text=TEXTS, label=LABELS, other=list(range(len(TEXTS))))
    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tlabel\n" + "".join(f"{t}\t{la}\n" for t, la in zip(TEXTS, LABELS, strict=True)))
    texts, labels, rows = read_split(_spec(pq_path), pq_path)
    tsv_texts, tsv_labels, _ = read_split(DatasetSpec(name="t", format="tsv", train=str(tsv)), tsv)
    assert (texts, labels) == (tsv_texts, tsv_labels)
    assert rows == [1, 2, 3, 4, 5] and texts[2] == "what is a quark"


def test_named_columns_integer_labels_and_dictionary_strings(tmp_path):
    path = _write(tmp_path / "d.parquet", body=pa.array(TEXTS).dictionary_encode(),
                  y=pa.array([0, 1, 2, 3, 2], pa.int16()))
    spec = _spec(path, text_field="body", label_field="y", label_names=("NUM", "HUM", "DESC", "LOC"))
    texts, labels, _ = read_split(spec, path)
    assert labels == LABELS and texts[0] == TEXTS[0]


def test_a_parquet_file_as_dataset_runs_through_load_dataset(tmp_path):
    path = _write(tmp_path / "tickets.parquet", text=TEXTS * 4, label=LABELS * 4)
    spec = resolve_dataset(str(path))
    assert spec == file_spec(path) and spec.format == "parquet"
    data = load_dataset(spec)
    assert len(data.train.texts) + len(data.validation.texts) == 20 and data.n_classes == 4


@pytest.mark.parametrize("columns,kw,message", [
    ({"text": TEXTS}, {}, "no column 'label'"),
    ({"text": TEXTS, "label": [0.5] * 5}, {}, "column 'label' is of type double; the label must be a string or an integer"),
    ({"text": [1, 2, 3, 4, 5], "label": LABELS}, {}, "column 'text' is of type int64; the text must be a string"),
    ({"text": [*TEXTS[:3], None, TEXTS[4]], "label": LABELS}, {}, "row 4: the text is null"),
    ({"text": TEXTS, "label": [*LABELS[:1], None, *LABELS[2:]]}, {}, "row 2: the label is null"),
    ({"text": [*TEXTS[:2], "   ", *TEXTS[3:]], "label": LABELS}, {}, "row 3: the text is empty"),
    ({"text": TEXTS, "label": pa.array([0, 1, 9, 1, 0], pa.int8())}, {"label_names": ("a", "b")},
     "row 3: label '9' is not an index into label_names"),
])
def test_bad_parquet_columns_are_one_line_errors(tmp_path, columns, kw, message):
    path = _write(tmp_path / "d.parquet", **columns)
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_split(_spec(path, **kw), path)
    assert "\n" not in str(err.value) and "d.parquet" in str(err.value)


def test_a_file_that_is_not_parquet_is_named_as_such(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_text("text,label\nhello,a\n")
    with pytest.raises(DatasetError, match="not a Parquet file"):
        read_split(_spec(path), path)
    truncated = _write(tmp_path / "t.parquet", text=TEXTS, label=LABELS)
    truncated.write_bytes(truncated.read_bytes()[:-40] + b"PAR1")  # footer damaged, magic kept
    with pytest.raises(DatasetError, match="cannot be read as Parquet"):
        read_split(_spec(truncated), truncated)


def test_without_pyarrow_the_error_names_the_extra(tmp_path, monkeypatch):
    import builtins

    path = _write(tmp_path / "d.parquet", text=TEXTS, label=LABELS)
    real_import = builtins.__import__

    def no_pyarrow(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(DatasetError, match=r"needs pyarrow: pip install 'codesign\[parquet\]'"):
        read_split(_spec(path), path)
