"""The three datasets of ../shared/data as presets; each falls back to its Hugging Face twin
when no local data directory holds it (a connected user's machine)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..paths import data_dir
from .spec import DatasetSpec, load_dataset_spec

_LOCAL = {
    "sst2": dict(
        format="tsv", train="sst2/train.tsv", validation="sst2/dev.tsv", test="sst2/test.tsv",
        text_field="sentence", label_field="label", label_names=("negative", "positive"),
    ),
    "emotion": dict(
        format="delimited", delimiter=";", train="emotion/train.txt",
        validation="emotion/val.txt", test="emotion/test.txt",
        text_field="text", label_field="label_name",
    ),
    # The train file is Latin-1, not UTF-8 (see shared/data/README.md).
    "trec": dict(
        format="prefixed", train="trec/train_5500.label", test="trec/TREC_10.label",
        encoding="latin-1", label_separator=":", label_part=0,
    ),
}

# The same datasets on the Hugging Face hub. GLUE's SST-2 test labels are hidden, so its
# validation split plays test, as in the local copy.
_HUB = {
    "sst2": dict(
        hf_id="stanfordnlp/sst2", hf_train_split="train", hf_test_split="validation",
        text_field="sentence", label_field="label",
    ),
    "emotion": dict(
        hf_id="dair-ai/emotion", hf_train_split="train", hf_validation_split="validation",
        hf_test_split="test", text_field="text", label_field="label",
    ),
    "trec": dict(
        hf_id="CogComp/trec", hf_train_split="train", hf_test_split="test",
        text_field="text", label_field="coarse_label",
    ),
}

PRESETS = tuple(_LOCAL)


def preset_spec(name: str, root: Path | None = None) -> DatasetSpec:
    """The preset ``name`` read from the data directory, or its hub twin when it is not there."""
    if name not in _LOCAL:
        raise ConfigError(f"unknown dataset preset '{name}'; presets: {', '.join(PRESETS)}, or pass a spec file")
    root = root if root is not None else data_dir()
    local = _LOCAL[name]
    if root is not None and (root / local["train"]).is_file():
        return DatasetSpec(name=name, base_dir=str(root), **local)
    return DatasetSpec(name=name, **_HUB[name])


def resolve_dataset(name_or_path: str) -> DatasetSpec:
    """A preset name, or a path to a dataset spec TOML file."""
    if name_or_path in _LOCAL:
        return preset_spec(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.suffix == ".toml" or path.exists():
        return load_dataset_spec(path)
    raise ConfigError(
        f"dataset '{name_or_path}' is neither a preset ({', '.join(PRESETS)}) nor a spec file; "
        "write a TOML spec (see README) and pass its path"
    )
