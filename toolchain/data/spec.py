"""DatasetSpec: a dataset is declared (files, format, fields, encoding), never hard-coded.

Every field is documented, with its type, default and allowed values, in docs/datasets.md (a test
keeps the two in step). Range checks live in ``__post_init__`` so that a spec built in code and
one read from TOML are held to the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from ..specfile import build, read_toml, shown

Format = Literal["csv", "tsv", "jsonl", "delimited", "prefixed", "parquet"]
RaggedRows = Literal["error", "skip", "join_text"]
TABLE_FORMATS = ("csv", "tsv", "delimited")  # the formats read as rows of fields
DOC = "docs/datasets.md"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's splits are and how to read them.

    ``prefixed`` means one example per line as ``LABEL text``; with ``label_separator`` set
    (TREC's ``COARSE:fine``), only part ``label_part`` of the label is kept.
    ``hf_id`` (a hub id or a local ``datasets`` directory) is used when no files are given.
    """

    name: str
    format: Format = "csv"
    train: str = ""
    validation: str = ""
    test: str = ""
    # A column name (header = true) or a 0-based column number (header = false; TOML may give
    # it as an integer, it is kept as a string).
    text_field: str | int = "text"
    label_field: str | int = "label"
    delimiter: str = ","
    header: bool = True
    ragged_rows: RaggedRows = "error"  # a row whose field count differs from the header's
    encoding: str = "utf-8"
    label_separator: str = ""
    label_part: int = 0
    label_names: tuple[str, ...] = ()  # integer labels -> names, when the file stores ints
    hf_id: str = ""
    hf_config: str = ""
    hf_train_split: str = "train"
    hf_validation_split: str = ""
    hf_test_split: str = "test"
    validation_fraction: float = 0.1
    seed: int = 0
    base_dir: str = ""  # relative split paths resolve against this

    def __post_init__(self) -> None:
        for key in ("text_field", "label_field"):
            value = getattr(self, key)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, key, str(value))
        for problem in _problems(self):
            raise ValueError(problem)

    @property
    def source(self) -> Literal["files", "hub"]:
        return "files" if self.train else "hub"

    def path(self, split: str) -> Path | None:
        rel = getattr(self, split)
        if not rel:
            return None
        p = Path(rel).expanduser()
        return p if p.is_absolute() or not self.base_dir else Path(self.base_dir) / p


def _problems(spec: DatasetSpec):
    """Each rule a spec breaks, as a message naming the key, its value and what is allowed."""
    if not spec.name.strip():
        yield "name = '' is empty; give the dataset a name"
    if not spec.train and not spec.hf_id:
        yield f"dataset {shown(spec.name)} needs 'train' (a file) or 'hf_id' (a hub id or local folder)"
    if spec.train and spec.hf_id:
        yield (f"train = {shown(spec.train)} and hf_id = {shown(spec.hf_id)} are both set; "
               "keep one: files or the hub")
    if not spec.train and (spec.validation or spec.test):
        yield "validation / test files need a 'train' file too"
    if not 0.0 < spec.validation_fraction < 0.9:  # also false for NaN
        yield (f"validation_fraction = {spec.validation_fraction!r} is out of range; use a number "
               "above 0 and below 0.9 (default 0.1)")
    if spec.seed < 0:
        yield f"seed = {spec.seed} is negative; use an integer >= 0"
    if len(spec.delimiter) != 1 or spec.delimiter in "\r\n":
        yield (f"delimiter = {shown(spec.delimiter)} must be exactly one character other than a "
               "line break, e.g. ',', ';', '|' or '\\t'")
    elif spec.delimiter == '"' and spec.format == "csv":
        yield "delimiter = '\"' is the csv quote character; pick another delimiter"
    try:
        b"a".decode(spec.encoding)  # empty input would skip the codec; rot13 & co. raise LookupError
    except UnicodeError:
        pass  # a real text codec (utf-16...) that wants more than one byte
    except LookupError:
        yield (f"encoding = {shown(spec.encoding)} is not a text encoding Python knows; "
               "use e.g. 'utf-8', 'latin-1' or 'cp1252'")
    yield from _field_problems(spec)
    if spec.label_separator and spec.format != "prefixed":
        yield (f"label_separator = {shown(spec.label_separator)} applies only to format = 'prefixed'; "
               "remove it")
    if spec.label_part < 0:
        yield f"label_part = {spec.label_part} is negative; use a part number >= 0 (0 = before the first separator)"
    elif spec.label_part and not spec.label_separator:
        yield f"label_part = {spec.label_part} needs label_separator (the character that splits the label)"
    yield from _name_problems(spec.label_names)
    if spec.source == "hub" and not spec.hf_train_split.strip():
        yield "hf_train_split = '' is empty; name the hub split to train on (usually 'train')"


def _field_problems(spec: DatasetSpec):
    if spec.format == "prefixed":
        return  # the label is the first word; there are no fields
    for key in ("text_field", "label_field"):
        value = getattr(spec, key)
        if not isinstance(value, str) or not value.strip():
            yield f"{key} = {shown(value)} is empty; name the {key.split('_')[0]} column"
            return
        if spec.format in TABLE_FORMATS and not spec.header and not (value.isascii() and value.isdigit()):
            yield (f"{key} = {shown(value)} with header = false must be a column number "
                   "(0 = first column), e.g. text_field = 0, label_field = 1")
    if spec.text_field == spec.label_field:
        yield (f"text_field and label_field are both {shown(spec.text_field)}; the label must come "
               "from another column")


def _name_problems(names: tuple[str, ...]):
    seen = set()
    for i, name in enumerate(names):
        if not name.strip():
            yield f"label_names[{i}] is empty; every class needs a name"
        elif name in seen:
            yield f"label_names[{i}] = {shown(name)} occurs twice; class names must be unique"
        seen.add(name)


def load_dataset_spec(path: Path) -> DatasetSpec:
    """Read a dataset spec file (TOML); relative split paths resolve against its folder."""
    data = read_toml(path)
    data.setdefault("name", path.stem)
    data.setdefault("base_dir", str(path.parent.resolve()))
    return build(DatasetSpec, data, source=str(path))


def with_base_dir(spec: DatasetSpec, base: Path) -> DatasetSpec:
    return replace(spec, base_dir=str(base))


def require(spec: DatasetSpec, **changes) -> DatasetSpec:
    try:
        return replace(spec, **changes)
    except ValueError as exc:
        raise ConfigError(f"dataset '{spec.name}': {exc}") from exc
