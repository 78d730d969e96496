"""The Hugging Face ``datasets`` branch: a hub id on a connected machine, or a local directory
written by ``DatasetDict.save_to_disk`` (which is how it is tested offline)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from .spec import DatasetSpec


def _load(spec: DatasetSpec):
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError(
            f"dataset '{spec.name}' resolves to the hub id '{spec.hf_id}', which needs the "
            "'datasets' package: pip install 'codesign[hub]', or set CODESIGN_DATA to a local copy"
        ) from exc
    local = Path(spec.hf_id).expanduser()
    try:
        if local.is_dir():
            return datasets.load_from_disk(str(local))
        return datasets.load_dataset(spec.hf_id, spec.hf_config or None)
    except (OSError, ValueError, ConnectionError) as exc:
        raise DatasetError(
            f"dataset '{spec.name}': could not load '{spec.hf_id}' ({exc}); check the id and the "
            "network, or set CODESIGN_DATA to a directory holding the data"
        ) from exc


def read_hub_splits(spec: DatasetSpec) -> dict[str, tuple[list[str], list[str], list[int], str]]:
    dd = _load(spec)
    wanted = {"train": spec.hf_train_split, "validation": spec.hf_validation_split, "test": spec.hf_test_split}
    out = {}
    for name, hf_name in wanted.items():
        if not hf_name:
            continue
        if hf_name not in dd:
            if name == "train":
                raise DatasetError(f"'{spec.hf_id}' has no split '{hf_name}' (splits: {', '.join(dd)})")
            continue
        ds = dd[hf_name]
        for field, role in ((spec.text_field, "text"), (spec.label_field, "label")):
            if field not in ds.column_names:
                raise DatasetError(
                    f"'{spec.hf_id}' split '{hf_name}' has no column '{field}' "
                    f"(columns: {', '.join(ds.column_names)}); set {role}_field"
                )
        feature = ds.features[spec.label_field]
        names = getattr(feature, "names", None)
        labels = [names[v] if names and isinstance(v, int) else str(v) for v in ds[spec.label_field]]
        texts = [str(t).strip() for t in ds[spec.text_field]]
        # Row numbers stand in for line numbers in error messages.
        out[name] = (texts, labels, list(range(1, len(texts) + 1)), f"{spec.hf_id}[{hf_name}]")
    return out
