"""Readers for the declared formats. Each returns (texts, labels) as strings and reports bad
input with the file, the line and the fix."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import DatasetError
from .spec import DatasetSpec

Rows = tuple[list[str], list[str], list[int]]  # texts, labels, 1-based line numbers


def _suggest_encoding(raw: bytes, tried: str) -> str:
    for enc in ("utf-8", "cp1252", "latin-1"):
        if enc == tried:
            continue
        try:
            raw.decode(enc)
        except UnicodeDecodeError:
            continue
        return enc
    return "latin-1"


def read_text(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found; check the split path in the dataset spec or set CODESIGN_DATA")
    raw = path.read_bytes()
    if not raw.strip():
        raise DatasetError(f"{path}: file is empty; it needs at least one labelled example")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        better = _suggest_encoding(raw, encoding)
        raise DatasetError(
            f"{path}, line {line}: bytes {raw[exc.start:exc.end]!r} are not valid {encoding}; "
            f"set encoding = \"{better}\" in the dataset spec"
        ) from exc
    except LookupError as exc:
        raise DatasetError(f"{path}: unknown encoding '{encoding}' in the dataset spec") from exc


def _lines(text: str) -> list[str]:
    """Physical lines. Not str.splitlines(), which also breaks at U+2028, U+0085 (a Latin-1 byte)
    and other characters that may sit inside a text or a JSON string."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _column(header: list[str], field: str, path: Path, role: str) -> int:
    if field not in header:
        raise DatasetError(
            f"{path}, line 1: no column '{field}' (columns: {', '.join(header)}); "
            f"set {role}_field in the dataset spec"
        )
    return header.index(field)


def _read_table(spec: DatasetSpec, path: Path, text: str, delimiter: str, quoting: int) -> Rows:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    # (first physical line, row): a quoted field may span lines, so rows are not lines.
    rows, line = [], 1
    for row in reader:
        rows.append((line, row))
        line = reader.line_num + 1
    if spec.header:
        header, body = rows[0][1], rows[1:]
        ti = _column(header, spec.text_field, path, "text")
        li = _column(header, spec.label_field, path, "label")
    else:
        body = rows
        try:
            ti, li = int(spec.text_field), int(spec.label_field)
        except ValueError as exc:
            raise DatasetError(
                f"{path}: header = false needs text_field and label_field as column numbers"
            ) from exc
    texts, labels, lines = [], [], []
    for n, row in body:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ti, li):
            raise DatasetError(
                f"{path}, line {n}: {len(row)} field(s), expected at least {max(ti, li) + 1}; "
                f"check the delimiter ({delimiter!r}) and quoting"
            )
        texts.append(row[ti].strip())
        labels.append(row[li].strip())
        lines.append(n)
    return texts, labels, lines


def _read_jsonl(spec: DatasetSpec, path: Path, text: str) -> Rows:
    texts, labels, lines = [], [], []
    for n, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {n}: not valid JSON ({exc.msg}); one object per line") from exc
        for field, role in ((spec.text_field, "text"), (spec.label_field, "label")):
            if not isinstance(obj, dict) or field not in obj:
                raise DatasetError(f"{path}, line {n}: no key '{field}'; set {role}_field in the dataset spec")
        texts.append(str(obj[spec.text_field]).strip())
        labels.append(str(obj[spec.label_field]).strip())
        lines.append(n)
    return texts, labels, lines


def _read_prefixed(spec: DatasetSpec, path: Path, text: str) -> Rows:
    texts, labels, lines = [], [], []
    for n, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        label, _, body = line.strip().partition(" ")
        if not body.strip():
            raise DatasetError(f"{path}, line {n}: expected 'LABEL text', got {line.strip()[:60]!r}")
        if spec.label_separator:
            parts = label.split(spec.label_separator)
            if spec.label_part >= len(parts):
                raise DatasetError(
                    f"{path}, line {n}: label {label!r} has no part {spec.label_part} "
                    f"when split on {spec.label_separator!r}; fix label_part"
                )
            label = parts[spec.label_part]
        texts.append(body.strip())
        labels.append(label)
        lines.append(n)
    return texts, labels, lines


def read_split(spec: DatasetSpec, path: Path) -> Rows:
    text = read_text(path, spec.encoding)
    if spec.format == "jsonl":
        rows = _read_jsonl(spec, path, text)
    elif spec.format == "prefixed":
        rows = _read_prefixed(spec, path, text)
    elif spec.format == "csv":
        rows = _read_table(spec, path, text, spec.delimiter, csv.QUOTE_MINIMAL)
    else:
        # TSV and plain delimited text are not quoted (GLUE's SST-2 has bare quote characters).
        delimiter = "\t" if spec.format == "tsv" else spec.delimiter
        rows = _read_table(spec, path, text, delimiter, csv.QUOTE_NONE)
    if not rows[0]:
        raise DatasetError(f"{path}: no examples found (only a header or blank lines)")
    if spec.label_names:
        rows = (rows[0], [_name_of(spec, path, lab, n) for lab, n in zip(rows[1], rows[2], strict=True)], rows[2])
    return rows


def _name_of(spec: DatasetSpec, path: Path, label: str, line: int) -> str:
    try:
        return spec.label_names[int(label)]
    except (ValueError, IndexError) as exc:
        raise DatasetError(
            f"{path}, line {line}: label {label!r} is not an index into label_names "
            f"({len(spec.label_names)} names); fix the label or label_names"
        ) from exc
