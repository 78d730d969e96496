"""docs/datasets.md stays true: every DatasetSpec field is documented with its real default, the
worked example loads, and the errors that point at documentation point at a file that exists."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.data.spec import DOC, DatasetSpec
from toolchain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DOC_TEXT = (ROOT / "docs" / "datasets.md").read_text(encoding="utf-8")


def _field_rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOC_TEXT.splitlines():
        m = re.match(r"\| `(\w+)` \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in line.strip().strip("|").split(" | ")]
    return rows


def _toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[]" if not value else str(list(value))
    return str(value)


def test_every_spec_field_is_documented_with_type_default_and_range():
    rows = _field_rows()
    fields = [f for f in dataclasses.fields(DatasetSpec) if f.init]
    missing = [f.name for f in fields if f.name not in rows]
    assert not missing, f"fields missing from {DOC}: {missing}"
    for f in fields:
        name, type_, default, allowed, meaning = rows[f.name]
        assert type_ and allowed and meaning, f.name
        if f.default is not dataclasses.MISSING and f.name != "base_dir":
            assert f"`{_toml_literal(f.default)}`" == default, (f.name, default)


def _blocks() -> dict[str, str]:
    """The worked example's files: fenced blocks whose info string says ``file=NAME``."""
    found = re.findall(r"^```\w+ file=(\S+)\n(.*?)^```$", DOC_TEXT, flags=re.S | re.M)
    return dict(found)


def test_the_worked_example_loads(tmp_path):
    blocks = _blocks()
    assert set(blocks) == {"reviews.tsv", "reviews.toml"}
    assert "\t" in blocks["reviews.tsv"] and "header = false" in blocks["reviews.toml"]
    for name, body in blocks.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    ds = load_dataset(resolve_dataset(str(tmp_path / "reviews.toml")))
    assert ds.name == "reviews" and ds.label_names == ("neg", "pos")
    assert (len(ds.train), len(ds.validation)) == (6, 2)  # as the doc says
    assert "a dull, slow film" in ds.train.texts + ds.validation.texts


def test_the_example_with_a_stray_tab_is_what_the_doc_says(tmp_path):
    blocks = _blocks()
    (tmp_path / "reviews.toml").write_text(blocks["reviews.toml"])
    (tmp_path / "reviews.tsv").write_text(blocks["reviews.tsv"] + "good\tbut long\tpos\n")
    with pytest.raises(Exception, match="line 9: 3 field"):
        load_dataset(resolve_dataset(str(tmp_path / "reviews.toml")))
    (tmp_path / "reviews.toml").write_text(blocks["reviews.toml"] + 'ragged_rows = "join_text"\n')
    ds = load_dataset(resolve_dataset(str(tmp_path / "reviews.toml")))
    assert "good\tbut long" in ds.train.texts + ds.validation.texts


def test_errors_point_at_documentation_that_exists(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_dataset(str(tmp_path / "nothing"))
    pointed = re.search(r"see (\S+\.md)", str(err.value)).group(1)
    assert pointed == DOC and (ROOT / pointed).is_file()
    assert "see README" not in str(err.value)


def test_readme_has_a_datasets_section_after_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    heads = re.findall(r"^## (.+)$", readme, flags=re.M)
    assert heads[heads.index("Commands") + 1] == "Datasets"
    section = readme.split("## Datasets", 1)[1].split("\n## ", 1)[0]
    assert DOC in section and 5 <= len([ln for ln in section.strip().splitlines() if ln.strip()]) <= 12
