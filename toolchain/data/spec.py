"""DatasetSpec: a dataset is declared (files, format, fields, encoding), never hard-coded."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from ..specfile import build, read_toml

Format = Literal["csv", "tsv", "jsonl", "delimited", "prefixed"]


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
    text_field: str = "text"
    label_field: str = "label"
    delimiter: str = ","
    header: bool = True
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
        if not self.train and not self.hf_id:
            raise ValueError(f"dataset '{self.name}' needs 'train' (a file) or 'hf_id'")
        if not 0.0 < self.validation_fraction < 0.9:
            raise ValueError("'validation_fraction' must be between 0 and 0.9")

    @property
    def source(self) -> Literal["files", "hub"]:
        return "files" if self.train else "hub"

    def path(self, split: str) -> Path | None:
        rel = getattr(self, split)
        if not rel:
            return None
        p = Path(rel).expanduser()
        return p if p.is_absolute() or not self.base_dir else Path(self.base_dir) / p


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
