"""Parquet splits (``format = "parquet"``), read through pyarrow one record batch at a time:
only the text and label columns are decoded, and only the parsed strings are kept, so a corpus
of millions of rows never sits in memory as a table (the ``parquet`` extra)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..specfile import shown
from .spec import DatasetSpec

INSTALL_HINT = "pip install 'codesign[parquet]'"
BATCH_ROWS = 65_536  # rows decoded at once: ~10 MB of short texts
MAGIC = b"PAR1"


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError(f"format = 'parquet' needs pyarrow: {INSTALL_HINT}") from exc
    return pq


def _check_magic(path: Path, where: str) -> None:
    """A Parquet file starts and ends with PAR1; anything else is named as such before pyarrow
    raises its own, less helpful, error."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 4))
        tail = fh.read(4)
    if size < 12 or head != MAGIC or tail != MAGIC:
        raise DatasetError(f"{where}: not a Parquet file (no PAR1 header and footer); "
                           "check the path, or set format to csv/tsv/jsonl")


def _column_kind(schema, field: str, role: str, where: str) -> str:
    import pyarrow as pa

    if field not in schema.names:
        raise DatasetError(f"{where}: no column {shown(field)} (columns: {', '.join(schema.names[:12])}); "
                           f"set {role}_field in the dataset spec")
    kind = schema.field(field).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if role == "label" and pa.types.is_integer(kind):
        return "integer"
    allowed = "a string" if role == "text" else "a string or an integer"
    raise DatasetError(f"{where}: column {shown(field)} is of type {kind}; the {role} must be {allowed}")


def read_parquet(spec: DatasetSpec, path: Path, where: str):
    """(texts, labels, 1-based row numbers) of one Parquet split."""
    pq = _pyarrow()
    _check_magic(path, where)
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError kinds for damaged files
        raise DatasetError(f"{where}: cannot be read as Parquet ({exc})") from exc
    text_field, label_field = str(spec.text_field), str(spec.label_field)
    _column_kind(handle.schema_arrow, text_field, "text", where)
    _column_kind(handle.schema_arrow, label_field, "label", where)
    texts, labels, rows = [], [], []
    n = 0
    try:
        batches = handle.iter_batches(batch_size=BATCH_ROWS, columns=[text_field, label_field])
        for batch in batches:
            for text, label in zip(batch.column(text_field).to_pylist(), batch.column(label_field).to_pylist(),
                                   strict=True):
                n += 1
                if text is None or label is None:
                    role = "text" if text is None else "label"
                    raise DatasetError(f"{where}, row {n}: the {role} is null; fill or drop the row")
                texts.append(text.strip())
                labels.append(str(label).strip())
                rows.append(n)
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"{where}, after row {n}: cannot be read as Parquet ({exc})") from exc
    return texts, labels, rows
