"""Issue 11, datasets: ``--dataset`` as a .csv/.tsv/.jsonl file (with --text-field/--label-field)
and as ``hf:NAME[:CONFIG]`` through ``datasets``, tested offline on local files and folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import dataset_ref, resolve_dataset
from toolchain.errors import ConfigError, DatasetError

PAIRS = [("good film", "pos"), ("bad film", "neg"), ("great plot", "pos"), ("poor plot", "neg")] * 5


def csv_file(path: Path, header=("text", "label"), sep=",") -> Path:
    path.write_text(sep.join(header) + "\n" + "".join(f"{t}{sep}{lab}\n" for t, lab in PAIRS))
    return path


# --- direct data files ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "sep"), [("d.csv", ","), ("d.tsv", "\t")])
def test_a_csv_or_tsv_file_is_a_dataset_with_a_carved_validation_split(tmp_path, name, sep):
    # Before: a .csv path was read as TOML ("invalid TOML").
    spec = resolve_dataset(str(csv_file(tmp_path / name, sep=sep)))
    assert spec.name == "d" and spec.format == name[-3:] and spec.header
    ds = load_dataset(spec)
    assert ds.label_names == ("neg", "pos") and ds.validation_carved
    assert len(ds.train) + len(ds.validation) == len(PAIRS) and ds.test is None


def test_a_jsonl_file_with_other_fields(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"sentence": t, "y": lab}) + "\n" for t, lab in PAIRS))
    ref = dataset_ref(str(path), text_field="sentence", label_field="y")
    spec = resolve_dataset(ref)
    assert (spec.format, spec.text_field, spec.label_field) == ("jsonl", "sentence", "y")
    assert load_dataset(spec).n_classes == 2
    with pytest.raises(DatasetError, match=r"line 1: no key 'text'; set text_field"):
        load_dataset(resolve_dataset(str(path)))


def test_the_ref_round_trips_any_field_name(tmp_path):
    path = csv_file(tmp_path / "d.csv", header=("a&b=c?d", "lab el"))
    ref = dataset_ref(str(path), "a&b=c?d", "lab el")
    spec = resolve_dataset(ref)
    assert (spec.text_field, spec.label_field) == ("a&b=c?d", "lab el")
    assert load_dataset(spec).n_classes == 2
    assert dataset_ref(str(path)) == str(path)  # no fields: the string is kept as typed
    assert resolve_dataset(dataset_ref(ref, label_field="x")).text_field == "a&b=c?d"


def test_fields_are_refused_for_a_preset_or_spec(tmp_path):
    with pytest.raises(ConfigError, match="--text-field / --label-field apply to a .csv/.tsv/.jsonl/.parquet file"):
        dataset_ref("trec", text_field="x")
    with pytest.raises(ConfigError, match="set text_field / label_field in the dataset spec"):
        dataset_ref(str(tmp_path / "s.toml"), label_field="x")
    with pytest.raises(ConfigError, match="unknown field 'txt'"):
        resolve_dataset(f"{tmp_path / 'd.csv'}?txt=a")


@pytest.mark.parametrize(("arg", "expect"), [
    ("missing.csv", "missing.csv: no such file; check the --dataset path"),
    ("notes.txt", "has an unknown suffix '.txt'"),
    ("folder", "is a folder"),
    ("hf:", "hf: needs a hub id"),
    ("nothing-here", "neither a preset nor an existing file"),
])
def test_what_is_not_a_dataset_says_what_is(tmp_path, monkeypatch, arg, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError) as err:
        resolve_dataset(arg)
    assert expect in str(err.value)
    if arg != "hf:":
        assert "docs/datasets.md" in str(err.value) or "--dataset" in str(err.value)


def _invoke(*args):
    from toolchain.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_passes_text_and_label_fields_to_the_loader(tmp_path):
    data = csv_file(tmp_path / "d.csv", header=("sentence", "y"))
    # The loader read the file with those columns (the model, looked up after it, is what fails).
    ok = _invoke("extract", "--dataset", data, "--text-field", "sentence", "--label-field", "y",
                 "--model", tmp_path / "no-model")
    assert ok.exit_code != 0 and "no-model" in ok.stderr and "column" not in ok.stderr, ok.stderr
    bad = _invoke("extract", "--dataset", data, "--text-field", "sentence", "--model", tmp_path / "no-model")
    assert bad.exit_code == 3 and "no column 'label' (columns: sentence, y)" in bad.stderr, bad.stderr
    refused = _invoke("extract", "--dataset", "trec", "--label-field", "y", "--model", tmp_path / "no-model")
    assert refused.exit_code == 2 and "apply to a .csv/.tsv/.jsonl/.parquet file" in refused.stderr


def test_a_run_records_the_fields_inside_its_dataset_string(tmp_path):
    from toolchain.cli import _config

    data = csv_file(tmp_path / "d.csv", header=("sentence", "y"))
    config = _config(models=("m",), dataset=str(data), text_field="sentence", label_field=None,
                     max_lengths=(64,), max_per_class=None, max_eval_per_class=None)
    # Export and profiling resolve the recorded string again: it must give the same spec.
    assert resolve_dataset(config.dataset).text_field == "sentence"


# --- hf:NAME[:CONFIG] through `datasets` ---------------------------------------------------------


@pytest.fixture
def offline_hub(monkeypatch):
    """No network here: make `datasets` fail at once instead of retrying for ~25 s."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return datasets


def _hf_cache_entries(datasets) -> set[str]:
    root = Path(datasets.config.HF_DATASETS_CACHE)
    return {str(p) for p in root.rglob("*")} if root.exists() else set()


def test_hf_local_folder_of_csv_files(tmp_path, offline_hub):
    folder = tmp_path / "mydata"
    folder.mkdir()
    csv_file(folder / "train.csv")
    (folder / "test.csv").write_text("text,label\nfine cast,pos\ndull cast,neg\n")
    before = _hf_cache_entries(offline_hub)
    ds = load_dataset(resolve_dataset(f"hf:{folder}"))
    assert ds.label_names == ("neg", "pos") and ds.validation_carved
    assert ds.test.texts == ("fine cast", "dull cast")
    assert _hf_cache_entries(offline_hub) == before  # a throw-away cache, nothing under ~/.cache


def test_hf_local_file_with_fields(tmp_path, offline_hub):
    data = csv_file(tmp_path / "d.tsv", header=("sentence", "y"), sep="\t")
    ds = load_dataset(resolve_dataset(dataset_ref(f"hf:{data}", "sentence", "y")))
    assert ds.n_classes == 2 and ds.test is None and len(ds.train) + len(ds.validation) == len(PAIRS)


def test_hf_id_relative_to_the_spec_folder(tmp_path, offline_hub, monkeypatch):
    csv_file(tmp_path / "d.csv")
    (tmp_path / "s.toml").write_text('hf_id = "d.csv"\nhf_test_split = ""\n')
    monkeypatch.chdir(tmp_path.parent)
    assert load_dataset(resolve_dataset(str(tmp_path / "s.toml"))).n_classes == 2


def test_hf_unreachable_hub_is_one_clear_error(offline_hub):
    with pytest.raises(DatasetError) as err:
        load_dataset(resolve_dataset("hf:no-such-owner/no-such-data:cfg"))
    msg = str(err.value)
    assert "could not load 'no-such-owner/no-such-data'" in msg and "unreachable" in msg
    assert "\n" not in msg


def test_hf_local_file_of_an_unknown_kind(tmp_path, offline_hub):
    (tmp_path / "d.xml").write_text("<x/>")
    with pytest.raises(DatasetError, match=r"'datasets' reads .csv, .tsv, .json, .jsonl, .parquet files, not '.xml'"):
        load_dataset(resolve_dataset(f"hf:{tmp_path / 'd.xml'}"))


def _saved(folder: Path, test_labels, offline_hub) -> Path:
    datasets = offline_hub
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    rows = {"text": [t for t, _ in PAIRS], "label": [1 if lab == "pos" else 0 for _, lab in PAIRS]}
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows, features=features),
        "test": datasets.Dataset.from_dict({"text": ["a", "b"], "label": test_labels}, features=features),
    }).save_to_disk(str(folder))
    return folder


def test_hf_hidden_test_labels_leave_the_split_out(tmp_path, offline_hub):
    # GLUE hides test labels as -1; ClassLabel names[-1] used to make them all the last class.
    ds = load_dataset(resolve_dataset(f"hf:{_saved(tmp_path / 'h', [-1, -1], offline_hub)}"))
    assert ds.test is None and ds.n_classes == 2


def test_hf_one_label_outside_the_class_names(tmp_path, offline_hub):
    with pytest.raises(DatasetError, match=r"\[test\], row 2: label -1 is outside the 2 class names"):
        load_dataset(resolve_dataset(f"hf:{_saved(tmp_path / 'h', [0, -1], offline_hub)}"))
