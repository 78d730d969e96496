"""The Hugging Face ``datasets`` branch: a hub id on a connected machine, a local directory
written by ``DatasetDict.save_to_disk``, or a local data file or folder of them (which is how it
is tested offline)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ..errors import DatasetError
from ..specfile import shown, visible
from .readers import check_rows
from .spec import DatasetSpec

log = logging.getLogger(__name__)

# Local data files ``datasets`` reads with a packaged builder: suffix -> (builder, options).
_BUILDERS = {".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t"}), ".json": ("json", {}),
             ".jsonl": ("json", {}), ".parquet": ("parquet", {})}


def _local(spec: DatasetSpec) -> Path | None:
    """The local file or folder ``hf_id`` names, if any (relative to the spec's folder first)."""
    p = Path(spec.hf_id).expanduser()
    candidates = [p] if p.is_absolute() or not spec.base_dir else [Path(spec.base_dir) / p, p]
    return next((c for c in candidates if c.exists()), None)


def _load(spec: DatasetSpec):
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError(
            f"dataset {shown(spec.name)} resolves to the hub id {shown(spec.hf_id)}, which needs the "
            "'datasets' package: pip install 'codesign[hub]', or set CODESIGN_DATA to a local copy"
        ) from exc
    local = _local(spec)
    try:
        if local is not None and any((local / f).is_file() for f in ("dataset_dict.json", "state.json")):
            return datasets.load_from_disk(str(local))
        if local is not None:
            return _load_local(datasets, local)
        return datasets.load_dataset(spec.hf_id, spec.hf_config or None)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises ConnectionError, FileNotFoundError,
        # DatasetNotFoundError, ValueError, KeyError... depending on version and source; all of
        # them mean "this id cannot be loaded here" and must not reach the user as a traceback.
        why = visible(str(exc).splitlines()[0][:200]) if str(exc) else type(exc).__name__
        offline = isinstance(exc, ConnectionError) or "reach" in why or "offline" in why.lower()
        hint = ("the hub is unreachable from this machine: connect it, or download the data and point "
                "--dataset at the file or a spec" if offline else "check the id, the config and the network")
        raise DatasetError(f"dataset {shown(spec.name)}: could not load {shown(spec.hf_id)} ({why}); {hint}") from exc


def _load_local(datasets, local: Path):
    """A data file or a folder of them, read through a throw-away cache: every row is kept in
    memory and copied out, so nothing is left under ~/.cache for a file the user already has."""
    with tempfile.TemporaryDirectory(prefix="codesign-hf-") as cache:
        if local.is_dir():
            return datasets.load_dataset(str(local), cache_dir=cache, keep_in_memory=True)
        if local.suffix.lower() not in _BUILDERS:
            raise DatasetError(f"{visible(str(local))}: 'datasets' reads {', '.join(_BUILDERS)} files, "
                               f"not {shown(local.suffix)}; convert it or write a dataset spec")
        builder, options = _BUILDERS[local.suffix.lower()]
        return datasets.load_dataset(builder, data_files={"train": str(local)}, cache_dir=cache,
                                     keep_in_memory=True, **options)


def read_hub_splits(spec: DatasetSpec) -> dict[str, tuple[list[str], list[str], list[int], str]]:
    dd = _load(spec)
    wanted = {"train": spec.hf_train_split, "validation": spec.hf_validation_split, "test": spec.hf_test_split}
    out = {}
    for name, hf_name in wanted.items():
        if not hf_name:
            continue
        if hf_name not in dd:
            if name == "train":
                raise DatasetError(f"{shown(spec.hf_id)} has no split {shown(hf_name)} "
                                   f"(splits: {visible(', '.join(dd))}); set hf_train_split")
            continue
        ds = dd[hf_name]
        where = f"{visible(spec.hf_id)}[{visible(hf_name)}]"
        for field, role in ((spec.text_field, "text"), (spec.label_field, "label")):
            if field not in ds.column_names:
                raise DatasetError(
                    f"{shown(spec.hf_id)} split {shown(hf_name)} has no column {shown(field)} "
                    f"(columns: {visible(', '.join(ds.column_names))}); set {role}_field"
                )
        names = getattr(ds.features[spec.label_field], "names", None)
        values = ds[spec.label_field]
        if names and name != "train" and values and all(isinstance(v, int) and v < 0 for v in values):
            # GLUE-style hidden test labels (-1 everywhere): nothing to score against.
            log.warning("%s: every label is %s (hidden); the split is not used", where, values[0])
            continue
        # Row numbers stand in for line numbers in error messages.
        labels = [_label(v, names, where, row) for row, v in enumerate(values, start=1)]
        texts = []
        for row, t in enumerate(ds[spec.text_field], start=1):
            if not isinstance(t, str):
                raise DatasetError(f"{where}, row {row}: the text is {shown(t)}, not a string; "
                                   "set text_field to the text column")
            texts.append(t.strip())
        rows = (texts, labels, list(range(1, len(texts) + 1)))
        check_rows(rows, where, unit="row")
        out[name] = (*rows, where)
    return out


def _label(value, names, where: str, row: int) -> str:
    if value is None or isinstance(value, float | list | dict):
        raise DatasetError(f"{where}, row {row}: label {shown(value)} is not a class; "
                           "labels must be strings or integers")
    if names and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise DatasetError(f"{where}, row {row}: label {value} is outside the {len(names)} class names "
                               "(a hidden label?); fix the data or leave this split out")
        return names[value]
    return str(value)
