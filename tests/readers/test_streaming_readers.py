"""The dataset readers stream: a data file is read line by line, never as one bytes or str
object (checked by forbidding whole-file reads), with the same rows and the same one-line errors."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from toolchain.data.presets import file_spec
from toolchain.data.readers import read_split
from toolchain.errors import DatasetError

READ_LIMIT = 1 << 20  # the readers' block size: no read may ask for more, or for everything


@pytest.fixture
def no_whole_file_reads(monkeypatch):
    """Fail on Path.read_bytes/read_text and on read() without a size (or one over the block)."""
    calls = []

    def forbid(*a, **k):
        raise AssertionError("a data file was read whole")

    monkeypatch.setattr(Path, "read_bytes", forbid)
    monkeypatch.setattr(Path, "read_text", forbid)
    real_open = builtins.open

    class Checked:
        """A file whose read() must name a size of at most one block; lines iterate as usual."""

        def __init__(self, fh) -> None:
            self._fh = fh

        def read(self, size=-1):
            calls.append(size)
            if size is None or size < 0 or size > READ_LIMIT:
                raise AssertionError(f"read({size}) of a data file")
            return self._fh.read(size)

        def __iter__(self):
            calls.append("lines")
            return iter(self._fh)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._fh.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def open_(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        return Checked(fh) if "r" in mode and str(file).endswith((".csv", ".tsv", ".jsonl")) else fh

    monkeypatch.setattr(builtins, "open", open_)
    return calls


def _rows(n: int) -> list[tuple[str, str]]:
    return [(f"text number {i} with a \u2028 separator and \u0085 inside", "ab"[i % 2]) for i in range(n)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_a_large_file_is_read_in_blocks_with_the_same_rows(tmp_path, fmt, no_whole_file_reads):
    import json

    rows = _rows(30_000)
    path = tmp_path / f"big.{fmt}"
    if fmt == "jsonl":
        body = "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
    else:
        sep = "," if fmt == "csv" else "\t"
        body = f"text{sep}label\n" + "".join(f"{t}{sep}{lab}\n" for t, lab in rows)
    with builtins.open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\ufeff" + body)
    texts, labels, lines = read_split(file_spec(path), path)
    assert no_whole_file_reads and ("lines" in no_whole_file_reads or fmt == "jsonl")
    assert texts == [t for t, _ in rows] and labels == [lab for _, lab in rows]
    assert lines[0] == (1 if fmt == "jsonl" else 2) and len(lines) == len(rows)


def test_a_bad_byte_deep_in_a_streamed_file_is_reported_at_its_line(tmp_path):
    path = tmp_path / "d.tsv"
    body = "text\tlabel\n" + "".join(f"row {i}\ta\n" for i in range(50_000))
    path.write_bytes(body.encode() + b"caf\xe9\tb\n")
    with pytest.raises(DatasetError) as exc:
        read_split(file_spec(path), path)
    assert "line 50002" in str(exc.value) and "encoding" in str(exc.value)


def test_a_blank_file_is_still_called_empty(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n \n\t\n")
    with pytest.raises(DatasetError, match="file is empty"):
        read_split(file_spec(path), path)
