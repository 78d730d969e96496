"""The three datasets of ../shared/data as presets; each falls back to its Hugging Face twin
when no local data directory holds it (a connected user's machine)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from ..errors import ConfigError
from ..paths import data_dir
from ..specfile import shown, visible
from .spec import DOC, DatasetSpec, load_dataset_spec

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
        raise ConfigError(f"unknown dataset preset {shown(name)}; presets: {', '.join(PRESETS)}, or pass a spec file")
    root = root if root is not None else data_dir()
    local = _LOCAL[name]
    if root is not None and (root / local["train"]).is_file():
        return DatasetSpec(name=name, base_dir=str(root), **local)
    return DatasetSpec(name=name, **_HUB[name])


# A data file given straight to --dataset: its suffix names the format; it has a header row.
DIRECT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
HUB_PREFIX = "hf:"
_FIELDS = ("text_field", "label_field")
_FORMS = (f"a preset ({', '.join(PRESETS)}), a spec .toml, a .csv/.tsv/.jsonl/.parquet file or "
          f"{HUB_PREFIX}NAME[:CONFIG]; see {DOC}")


def dataset_ref(dataset: str, text_field: str | None = None, label_field: str | None = None) -> str:
    """``--dataset`` with ``--text-field`` / ``--label-field`` folded in, as one string. A run
    records only this string and resolves it again later (export, profiling), so the fields
    travel inside it: ``data.csv?text_field=sentence``."""
    given = {k: v for k, v in zip(_FIELDS, (text_field, label_field), strict=True) if v is not None}
    if not given:
        return dataset
    base, fields = _split_ref(dataset)
    if not (base.startswith(HUB_PREFIX) or Path(base).suffix.lower() in DIRECT_FORMATS):
        raise ConfigError(
            f"--text-field / --label-field apply to a .csv/.tsv/.jsonl/.parquet file or an {HUB_PREFIX} id, not "
            f"{shown(dataset)}; set text_field / label_field in the dataset spec instead (see {DOC})"
        )
    return f"{base}?{urlencode({**fields, **given})}"


def _split_ref(ref: str) -> tuple[str, dict[str, str]]:
    """``PATH?text_field=..&label_field=..`` -> (PATH, fields); a string without '?' has none."""
    base, sep, query = ref.partition("?")
    if not sep:
        return ref, {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise ConfigError(f"dataset {shown(ref)}: cannot read the fields after '?'; "
                          "use --text-field / --label-field") from exc
    unknown = sorted({k for k, _ in pairs} - set(_FIELDS))
    if unknown:
        raise ConfigError(f"dataset {shown(ref)}: unknown field {shown(unknown[0])} after '?'; "
                          f"known: {', '.join(_FIELDS)}")
    return base, dict(pairs)


def _spec(where: str, **kw) -> DatasetSpec:
    try:
        return DatasetSpec(**kw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def file_spec(path: Path, fields: dict[str, str] | None = None) -> DatasetSpec:
    """A .csv/.tsv/.jsonl/.parquet file read directly: header row (jsonl keys) ``text`` and ``label`` unless
    ``fields`` says otherwise; validation is carved from it as for a spec without one."""
    fmt = DIRECT_FORMATS.get(path.suffix.lower())
    where = visible(str(path))
    if fmt is None:
        raise ConfigError(f"{where}: a data file must end in {', '.join(DIRECT_FORMATS)}, not "
                          f"{shown(path.suffix)}; or write a dataset spec (see {DOC})")
    if not path.is_file():
        raise ConfigError(f"{where}: no such file; check the --dataset path")
    return _spec(where, name=path.stem or "data", format=fmt, train=str(path.resolve()), **(fields or {}))


def hub_spec(ref: str, fields: dict[str, str] | None = None) -> DatasetSpec:
    """``hf:NAME[:CONFIG]``: a hub id (or a local ``datasets`` folder / data file) with the
    usual split names; a missing validation split is carved, a missing test split is skipped."""
    hf_id, _, config = ref[len(HUB_PREFIX):].partition(":")
    if not hf_id.strip():
        raise ConfigError(f"dataset {shown(ref)}: {HUB_PREFIX} needs a hub id, e.g. "
                          f"{HUB_PREFIX}stanfordnlp/sst2 or {HUB_PREFIX}glue:sst2")
    name = hf_id.rstrip("/").rsplit("/", 1)[-1] or hf_id
    return _spec(f"dataset {shown(ref)}", name=name, hf_id=hf_id, hf_config=config,
                 hf_train_split="train", hf_validation_split="validation", hf_test_split="test",
                 **(fields or {}))


def resolve_dataset(name_or_path: str) -> DatasetSpec:
    """A preset name, a dataset spec TOML, a .csv/.tsv/.jsonl/.parquet file or ``hf:NAME[:CONFIG]``,
    optionally with ``?text_field=..&label_field=..`` (see :func:`dataset_ref`)."""
    if name_or_path in _LOCAL:
        return preset_spec(name_or_path)
    whole = Path(name_or_path).expanduser()
    if not name_or_path.startswith(HUB_PREFIX) and whole.exists():
        base, fields = name_or_path, {}  # a real file whose name holds a '?' is taken as it is
    else:
        base, fields = _split_ref(name_or_path)
    if base.startswith(HUB_PREFIX):
        return hub_spec(base, fields)
    path = Path(base).expanduser()
    if path.suffix.lower() in DIRECT_FORMATS:
        return file_spec(path, fields)
    if fields:
        raise ConfigError(f"dataset {shown(name_or_path)}: fields after '?' apply only to a data file or "
                          f"an {HUB_PREFIX} id; set them in the spec (see {DOC})")
    if path.suffix.lower() == ".toml":
        return load_dataset_spec(path)
    if path.is_dir():
        raise ConfigError(f"dataset {shown(name_or_path)} is a folder; pass {_FORMS}")
    if path.exists():
        raise ConfigError(f"dataset {shown(name_or_path)} has an unknown suffix {shown(path.suffix)}; pass {_FORMS}")
    raise ConfigError(f"dataset {shown(name_or_path)} is neither a preset nor an existing file; pass {_FORMS}")
