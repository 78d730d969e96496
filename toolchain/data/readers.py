"""Readers for the declared formats. Each returns (texts, labels) as strings and reports bad
input with the file, the line and the fix."""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import logging
from pathlib import Path

from ..errors import DatasetError
from ..specfile import shown, visible
from .spec import DatasetSpec

log = logging.getLogger(__name__)

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


def _check_file(path: Path, encoding: str) -> str:
    """The file's display name, once it is known to be a readable, non-blank file in a known
    encoding (only the leading bytes up to the first non-blank one are read)."""
    where = visible(str(path))
    if path.is_dir():
        raise DatasetError(f"{where}: is a folder; point the split at a file")
    if not path.is_file():
        raise DatasetError(f"{where}: file not found; check the split path in the dataset spec or set CODESIGN_DATA")
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        raise DatasetError(f"{where}: unknown encoding {shown(encoding)} in the dataset spec") from exc
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    raise DatasetError(f"{where}: file is empty; it needs at least one labelled example")
                if block.strip():
                    break
    except OSError as exc:
        raise DatasetError(f"{where}: cannot be read ({exc.strerror or exc}); check its permissions") from exc
    return where


def _decode_error(path: Path, encoding: str) -> DatasetError:
    """The line and bytes where ``path`` stops being ``encoding`` (the error path reads it whole)."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        better = _suggest_encoding(raw, encoding)
        return DatasetError(
            f"{visible(str(path))}, line {line}: bytes {raw[exc.start:exc.end]!r} are not valid {encoding}; "
            f"set encoding = \"{better}\" in the dataset spec"
        )
    return DatasetError(f"{visible(str(path))}: cannot be decoded as {encoding}")


def _text_lines(path: Path, encoding: str, universal: bool):
    """The file's lines, decoded incrementally (the file is never held whole).

    ``universal``: csv's line breaks (LF, CRLF, CR; ends kept, as csv needs them). Otherwise
    physical lines split at LF only, without their ending: not str.splitlines(), which also
    breaks at U+2028, U+0085 (a Latin-1 byte) and other characters that may sit inside a text or
    a JSON string. A byte-order mark (Excel's "CSV UTF-8") is dropped: it would glue itself to
    the first column name."""
    try:
        with open(path, encoding=encoding, newline="") as fh:
            first = True
            if universal:
                for line in fh:
                    if first:
                        line, first = line.removeprefix("\ufeff"), False
                    yield line
                return
            rest = ""
            while True:
                block = fh.read(1 << 20)
                if first:
                    block, first = block.removeprefix("\ufeff"), False
                if not block:
                    break
                parts = (rest + block).split("\n")
                rest = parts.pop()
                for line in parts:
                    yield line[:-1] if line.endswith("\r") else line
            yield rest[:-1] if rest.endswith("\r") else rest
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    except OSError as exc:
        raise DatasetError(f"{visible(str(path))}: cannot be read ({exc.strerror or exc}); "
                           "check its permissions") from exc


def read_text(path: Path, encoding: str) -> str:
    """The whole file decoded (small files); data files are streamed by read_split."""
    _check_file(path, encoding)
    return "\n".join(_text_lines(path, encoding, universal=False))


def _column(header: list[str], field: str, where: str, role: str) -> int:
    if field not in header:
        names = ", ".join(visible(h[:40]) for h in header[:20]) + (", ..." if len(header) > 20 else "")
        raise DatasetError(
            f"{where}: no column {shown(field)} (columns: {names}); set {role}_field in the dataset spec"
        )
    if header.count(field) > 1:
        raise DatasetError(f"{where}: the header names column {shown(field)} twice; rename one")
    return header.index(field)


def _table_rows(lines, path: str, delimiter: str, quoting: int, size: int):
    """(first physical line, fields) of each row, read as they come: a quoted field may span
    lines, so rows are not lines."""
    # No field can be longer than the file; csv's default cap (128 KiB) would raise on a long
    # line that is otherwise fine. The limit is process-wide, so it is only ever raised.
    if size > csv.field_size_limit():
        csv.field_size_limit(size)
    # strict: a stray quote ('"ab"c', or one never closed) is an error at its line, not a field
    # that silently swallows the delimiter or the rest of the file.
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=quoting != csv.QUOTE_NONE)
    line = 1
    try:
        for row in reader:
            yield line, row
            line = reader.line_num + 1
    except csv.Error as exc:
        raise DatasetError(f"{path}, line {line}: cannot be read as {delimiter!r}-separated fields ({exc}); "
                           "quote the whole field and double any quote inside it (\"\"), or fix the format") from exc


def _read_table(spec: DatasetSpec, path: str, lines, delimiter: str, quoting: int, size: int) -> Rows:
    rows = ((n, row) for n, row in _table_rows(lines, path, delimiter, quoting, size)
            if row and not all(not c.strip() for c in row))
    first = next(rows, None)
    if first is None:
        return [], [], []
    if spec.header:
        (hn, header), body = first, rows
        header = [h.strip() for h in header]
        ti = _column(header, spec.text_field, f"{path}, line {hn}", "text")
        li = _column(header, spec.label_field, f"{path}, line {hn}", "label")
        width, origin = len(header), "the header"
    else:
        body = itertools.chain([first], rows)
        ti, li = int(spec.text_field), int(spec.label_field)
        width, origin = len(first[1]), f"line {first[0]}"
        if width <= max(ti, li):
            raise DatasetError(
                f"{path}, line {first[0]}: {width} field(s), but text_field = {ti} and label_field = {li} "
                f"need at least {max(ti, li) + 1}; check the delimiter ({delimiter!r}) and the column numbers"
            )
    texts, labels, lines, skipped = [], [], [], []
    for n, row in body:
        extra = len(row) - width
        if extra and (spec.ragged_rows == "error" or (extra < 0 and spec.ragged_rows == "join_text")):
            raise DatasetError(
                f"{path}, line {n}: {len(row)} field(s), expected {width} as in {origin}; quote a field "
                f"that holds the delimiter ({delimiter!r}), or set ragged_rows = \"join_text\" (extra "
                "fields belong to the text) or \"skip\" in the dataset spec"
            )
        if extra and spec.ragged_rows == "skip":
            skipped.append(n)
            continue
        if extra > 0:
            # The text held unquoted delimiters: it spans extra + 1 fields, the rest shift right.
            row = row[:ti] + [delimiter.join(row[ti:ti + extra + 1])] + row[ti + extra + 1:]
        texts.append(row[ti].strip())
        labels.append(row[li].strip())
        lines.append(n)
    if skipped:
        log.warning("%s: skipped %d row(s) whose field count is not %d (first: line %d; ragged_rows = skip)",
                    path, len(skipped), width, skipped[0])
    return texts, labels, lines


def _read_jsonl(spec: DatasetSpec, path: str, physical) -> Rows:
    texts, labels, lines = [], [], []
    for n, line in enumerate(physical, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise DatasetError(f"{path}, line {n}: not valid JSON ({why}); one object per line") from exc
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}, line {n}: a JSON {type(obj).__name__}, not an object; "
                               "one {{...}} object per line")
        for field, role in ((spec.text_field, "text"), (spec.label_field, "label")):
            if field not in obj:
                raise DatasetError(f"{path}, line {n}: no key {shown(field)}; set {role}_field in the dataset spec")
        value, label = obj[spec.text_field], obj[spec.label_field]
        if not isinstance(value, str):
            raise DatasetError(f"{path}, line {n}: {shown(spec.text_field)} is a JSON {_json_type(value)}, "
                               "not a string; the text must be a string")
        # 1 and 1.0 or true and "True" would otherwise become distinct or merged classes by accident.
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DatasetError(f"{path}, line {n}: label {shown(label)} is a JSON {_json_type(label)}; "
                               "a label must be a string or an integer")
        texts.append(value.strip())
        labels.append(str(label).strip())
        lines.append(n)
    return texts, labels, lines


def _json_type(value) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _read_prefixed(spec: DatasetSpec, path: str, physical) -> Rows:
    texts, labels, lines = [], [], []
    for n, line in enumerate(physical, start=1):
        if not line.strip():
            continue
        label, _, body = line.strip().partition(" ")
        if not body.strip():
            raise DatasetError(f"{path}, line {n}: expected 'LABEL text', got {shown(line.strip(), 60)}")
        if spec.label_separator:
            parts = label.split(spec.label_separator)
            if spec.label_part >= len(parts):
                raise DatasetError(
                    f"{path}, line {n}: label {shown(label)} has no part {spec.label_part} "
                    f"when split on {shown(spec.label_separator)}; fix label_part"
                )
            label = parts[spec.label_part]
        texts.append(body.strip())
        labels.append(label)
        lines.append(n)
    return texts, labels, lines


def read_split(spec: DatasetSpec, path: Path) -> Rows:
    """A split's rows, read line by line: only the parsed texts and labels are kept, never the
    file's bytes or its decoded text whole (a corpus of millions of lines)."""
    where = _check_file(path, spec.encoding)
    unit = "line"
    if spec.format == "parquet":
        from .parquet import read_parquet

        rows, unit = read_parquet(spec, path, where), "row"
    elif spec.format == "jsonl":
        rows = _read_jsonl(spec, where, _text_lines(path, spec.encoding, universal=False))
    elif spec.format == "prefixed":
        rows = _read_prefixed(spec, where, _text_lines(path, spec.encoding, universal=False))
    else:
        lines, size = _text_lines(path, spec.encoding, universal=True), path.stat().st_size
        if spec.format == "csv":
            rows = _read_table(spec, where, lines, spec.delimiter, csv.QUOTE_MINIMAL, size)
        else:
            # TSV and plain delimited text are not quoted (GLUE's SST-2 has bare quote characters).
            delimiter = "\t" if spec.format == "tsv" else spec.delimiter
            rows = _read_table(spec, where, lines, delimiter, csv.QUOTE_NONE, size)
    if not rows[0]:
        raise DatasetError(f"{where}: no examples found (only a header or blank lines)")
    check_rows(rows, where, unit)
    if spec.label_names:
        rows = (rows[0], [_name_of(spec, where, lab, n, unit) for lab, n in zip(rows[1], rows[2], strict=True)],
                rows[2])
    return rows


def check_rows(rows: Rows, where: str, unit: str = "line") -> None:
    """An empty label would become a class of its own, an empty text an example of nothing."""
    for text, label, n in zip(*rows, strict=True):
        if not label:
            raise DatasetError(f"{where}, {unit} {n}: the label is empty; give every example a label "
                               "(or check label_field and the delimiter)")
        if not text:
            raise DatasetError(f"{where}, {unit} {n}: the text is empty; remove the row or check text_field")


def _name_of(spec: DatasetSpec, path: str, label: str, line: int, unit: str = "line") -> str:
    # Only plain digits: int() would also take "-1" (the last name), "1_0" or non-ASCII digits.
    if label.isascii() and label.isdigit() and int(label) < len(spec.label_names):
        return spec.label_names[int(label)]
    raise DatasetError(
        f"{path}, {unit} {line}: label {shown(label)} is not an index into label_names "
        f"(0 to {len(spec.label_names) - 1}); fix the label or label_names"
    )
