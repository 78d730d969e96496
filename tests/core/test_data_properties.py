"""Property: a dataset spec TOML with any mix of keys, types and values either loads or raises a
CodesignError (one line for the CLI), never a TypeError, ValueError, csv.Error or the like."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolchain.data.dataset import load_dataset
from toolchain.data.spec import DatasetSpec, load_dataset_spec
from toolchain.errors import CodesignError

FIELDS = [f.name for f in dataclasses.fields(DatasetSpec) if f.init]
ROWS = [("good film", "pos"), ("bad film", "neg"), ("great plot", "pos"), ("poor plot", "neg")] * 6

_chars = st.characters(blacklist_categories=("Cs",))  # TOML strings cannot hold lone surrogates
strings = st.one_of(
    st.sampled_from(["", "text", "label", "sentence", "0", "1", "-1", ",", ";", "\t", ",,", '"', ":",
                     "csv", "tsv", "jsonl", "delimited", "prefixed", "utf-8", "latin-1", "rot13",
                     "error", "skip", "join_text", "train", "test", "\ufeff", "\u200b"]),
    st.text(_chars, max_size=8),
)
files = st.sampled_from(["d.csv", "d.tsv", "d.jsonl", "d.label", "d_nohead.tsv", "missing.csv", "folder", ""])
scalars = st.one_of(strings, st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True),
                    st.booleans())
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]),
                                                                            scalars, max_size=2))
# Split files and hub ids are drawn from things that exist here (or plainly do not): a random
# hf_id such as "." would make `datasets` scan the working directory.
per_key = {"train": st.one_of(files, values), "validation": files, "test": files,
           "hf_id": st.sampled_from(["", "no-such-owner/no-such-data", "hfdir", "d.csv"]),
           "base_dir": st.sampled_from(["", "."])}
# Values of the right type most of the time, so that loading gets past the type checks and the
# range checks, the readers and the carve are exercised too.
typed = {"header": st.booleans(), "seed": st.integers(-5, 2**40), "label_part": st.integers(-2, 3),
         "validation_fraction": st.floats(-0.5, 1.5), "label_names": st.lists(strings, max_size=3),
         "format": st.sampled_from(["csv", "tsv", "jsonl", "delimited", "prefixed"]),
         "ragged_rows": st.sampled_from(["error", "skip", "join_text"]),
         "text_field": st.sampled_from(["text", "0", "1", "label"]),
         "label_field": st.sampled_from(["label", "0", "1", "text"])}


def _value_for(key: str):
    if key in per_key:
        return per_key[key]
    return st.one_of(typed.get(key, strings), values) if key in typed else st.one_of(strings, values)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid TOML basic strings
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def spec_bodies(draw) -> str:
    keys = draw(st.lists(st.sampled_from(FIELDS * 4 + ["extra_key"]), unique=True, max_size=6))
    lines = [f"{k} = {_toml_value(draw(_value_for(k)))}" for k in keys]
    if "train" not in keys and "hf_id" not in keys and draw(st.booleans()):
        lines.append(f'train = "{draw(files)}"')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prop-data")
    (folder / "d.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in ROWS))
    (folder / "d.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in ROWS))
    (folder / "d_nohead.tsv").write_text("".join(f"{t}\t{lab}\n" for t, lab in ROWS))
    (folder / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in ROWS))
    (folder / "d.label").write_text("".join(f"{lab}:x {t}\n" for t, lab in ROWS))
    (folder / "folder").mkdir()
    return folder


@pytest.fixture(scope="module")
def offline():
    """hf_id values must fail at once, not after ~25 s of network retries."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub_constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        mp.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        yield


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=spec_bodies())
def test_any_spec_loads_or_raises_a_codesign_error(data_folder, offline, body):
    path = data_folder / "spec.toml"
    path.write_text(body, encoding="utf-8")
    try:
        load_dataset(load_dataset_spec(path))
    except CodesignError as exc:
        message = str(exc)
        assert "\n" not in message and all(c.isprintable() for c in message), repr(message)
