"""Each bad examples file is one clear error and nothing is switched; long texts are truncated
and counted."""

from __future__ import annotations

import pytest

from toolchain.bundle.deploy import status
from toolchain.bundle.personalise_board import LearnError, read_examples
from toolchain.errors import DatasetError

BAD = {
    "empty.jsonl": ("", "the file is empty"),
    "examples.xml": ('<a text="x" label="y"/>\n', "unknown format"),
    "nolabel.csv": ("text,other\nhello,1\nworld,2\n", "no 'label' field"),
    "notext.jsonl": ('{"label": "a"}\n{"label": "b"}\n', "no 'text' field"),
    "single.jsonl": ('{"text": "one", "label": "a"}\n', "1 example"),
    "onelabel.csv": ("text,label\nfoo,a\nbar,a\nbaz,a\n", "all 3 examples have the label 'a'"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_one_clear_error(tmp_path, name):
    body, expect = BAD[name]
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(LearnError) as err:
        read_examples(str(path))
    assert expect in str(err.value) and err.value.kind == "bad_examples"


def test_bad_file_on_the_board_switches_nothing(deployed_host, tmp_path):
    path = tmp_path / "onelabel.csv"
    path.write_text(BAD["onelabel.csv"][0])
    with pytest.raises(DatasetError, match="nothing was switched"):
        deployed_host.personalise(path)
    assert status(deployed_host)["head"]["active"] == "shipped"


def test_long_texts_are_truncated_and_counted(deployed_host, examples, toy_rows):
    from personalise_rows import new_class_rows

    long = [(" ".join(["really"] * 300) + " " + t, lab) for t, lab in toy_rows(2, 5000)]
    report = deployed_host.personalise(examples("long.jsonl", toy_rows(8, 3000) + new_class_rows(12) + long))
    assert report["truncated"] == len(long) and report["n_examples"] == 28 + len(long)
