"""Issue 11, datasets: every malformed spec value and data file is one CodesignError naming the
value (or the file and line) and what is allowed; nothing silently becomes a class."""

from __future__ import annotations

import json
import logging

import pytest

from toolchain.data.dataset import load_dataset
from toolchain.data.presets import resolve_dataset
from toolchain.data.spec import DatasetSpec, load_dataset_spec
from toolchain.errors import ConfigError, DatasetError

ROWS = "where is x,LOC\nwho is y,HUM\nwhat is z,DESC\n" * 8  # 8 per class: the carve takes 1


def write(folder, name, body, encoding="utf-8"):
    path = folder / name
    path.write_bytes(body.encode(encoding) if isinstance(body, str) else body)
    return path


def load(folder, spec_body: str, name="s.toml"):
    return load_dataset(load_dataset_spec(write(folder, name, spec_body)))


# --- ragged rows ---------------------------------------------------------------------------------


def test_a_row_with_an_extra_field_is_an_error_naming_file_and_line(tmp_path):
    # Before: 'world what city' (field 2 of 3) became a fourth class.
    write(tmp_path, "t.csv", "text,label\n" + ROWS + "hello, world what city,LOC\n")
    with pytest.raises(DatasetError) as err:
        load(tmp_path, 'train = "t.csv"\n')
    msg = str(err.value)
    assert f"{tmp_path / 't.csv'}, line 26: 3 field(s), expected 2 as in the header" in msg
    assert 'ragged_rows = "join_text"' in msg


def test_ragged_rows_join_text_puts_the_extra_fields_back_into_the_text(tmp_path):
    write(tmp_path, "t.csv", "text,label\n" + ROWS + "hello, world what city,LOC\n")
    ds = load(tmp_path, 'train = "t.csv"\nragged_rows = "join_text"\n')
    assert ds.label_names == ("DESC", "HUM", "LOC")
    assert "hello, world what city" in ds.train.texts + ds.validation.texts


def test_join_text_when_the_text_is_not_the_last_column(tmp_path):
    write(tmp_path, "t.csv", "label,text,id\n" + "".join(
        f"{lab},{t},{i}\n" for i, (t, lab) in enumerate([("a, b, c", "x"), ("d", "y")] * 3)))
    ds = load(tmp_path, 'train = "t.csv"\nragged_rows = "join_text"\nvalidation_fraction = 0.5\n')
    assert set(ds.train.texts + ds.validation.texts) == {"a, b, c", "d"}
    assert ds.label_names == ("x", "y")


def test_join_text_still_rejects_a_short_row(tmp_path):
    write(tmp_path, "t.csv", "text,label,id\n" + "a,x,1\nb,y,2\n" * 3 + "c,x\n")
    with pytest.raises(DatasetError, match=r"t\.csv, line 8: 2 field\(s\), expected 3"):
        load(tmp_path, 'train = "t.csv"\nragged_rows = "join_text"\n')


def test_ragged_rows_skip_drops_them_with_one_warning(tmp_path, caplog):
    write(tmp_path, "t.csv", "text,label\n" + ROWS + "hello, world,LOC\nshort\n")
    with caplog.at_level(logging.WARNING, logger="toolchain.data.readers"):
        ds = load(tmp_path, 'train = "t.csv"\nragged_rows = "skip"\n')
    assert len(ds.train) + len(ds.validation) == 24 and ds.n_classes == 3
    assert "skipped 2 row(s)" in caplog.text and "line 26" in caplog.text


def test_headerless_rows_are_held_to_the_first_rows_width(tmp_path):
    write(tmp_path, "t.tsv", "a\tx\nb\ty\nc\tx\td\n")
    with pytest.raises(DatasetError, match=r"t\.tsv, line 3: 3 field\(s\), expected 2 as in line 1"):
        load(tmp_path, 'format = "tsv"\ntrain = "t.tsv"\nheader = false\ntext_field = 0\nlabel_field = 1\n')


def test_unknown_ragged_rows_value_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="'ragged_rows' is 'ignore'; use one of 'error', 'skip', 'join_text'"):
        load(tmp_path, 'train = "t.csv"\nragged_rows = "ignore"\n')


# --- the data files ------------------------------------------------------------------------------


def test_a_10_mb_field_is_read_not_a_csv_traceback(tmp_path):
    big = "word " * 2_000_000  # 10 MB in one field; csv's default cap is 128 KiB
    write(tmp_path, "t.csv", f"text,label\n{big},LOC\n" + ROWS)
    ds = load(tmp_path, 'train = "t.csv"\n')
    assert max(len(t) for t in ds.train.texts + ds.validation.texts) == len(big.strip())


def test_a_10_mb_single_line_file_is_one_line_error(tmp_path):
    write(tmp_path, "t.csv", "a" * 10_000_000)
    with pytest.raises(DatasetError) as err:
        load(tmp_path, 'train = "t.csv"\n')
    msg = str(err.value)
    assert "line 1: no column 'text'" in msg and len(msg) < 400


@pytest.mark.parametrize(("body", "line", "why"), [
    ('text,label\ngood,pos\n"ab"c,neg\n', 3, "expected after"),
    ('text,label\ngood,pos\n"never closed,neg\nbad,neg\n', 3, "unexpected end of data"),
])
def test_a_stray_quote_is_an_error_at_its_line(tmp_path, body, line, why):
    # Before: '"ab"c' became 'abc', and an unclosed quote swallowed the rest of the file.
    write(tmp_path, "t.csv", body)
    with pytest.raises(DatasetError, match=rf"t\.csv, line {line}: cannot be read.*{why}.*quote the whole field"):
        load(tmp_path, 'train = "t.csv"\n')


@pytest.mark.parametrize(("body", "what"), [
    ("text,label\nfine,x\nempty label,\nok,y\n", "the label is empty"),
    ("text,label\nfine,x\n  ,y\nok,y\n", "the text is empty"),
])
def test_an_empty_label_or_text_cell_is_an_error(tmp_path, body, what):
    # Before: '' became a class of its own (or an example with no text).
    write(tmp_path, "t.csv", body)
    with pytest.raises(DatasetError, match=rf"t\.csv, line 3: {what}"):
        load(tmp_path, 'train = "t.csv"\n')


def test_a_bom_in_a_data_file_does_not_hide_the_first_column(tmp_path):
    write(tmp_path, "t.csv", b"\xef\xbb\xbftext,label\n" + ROWS.encode())
    assert load(tmp_path, 'train = "t.csv"\n').n_classes == 3


def test_a_column_name_with_an_invisible_character_is_shown_escaped(tmp_path):
    write(tmp_path, "t.csv", "te\u200bxt,label\n" + ROWS)
    with pytest.raises(DatasetError) as err:
        load(tmp_path, 'train = "t.csv"\n')
    msg = str(err.value)
    assert "\u200b" not in msg and "te\\u200bxt" in msg


def test_a_column_named_twice(tmp_path):
    write(tmp_path, "t.csv", "text,text,label\n" + "a,b,x\nc,d,y\n")
    with pytest.raises(DatasetError, match="names column 'text' twice"):
        load(tmp_path, 'train = "t.csv"\n')


@pytest.mark.parametrize(("label", "kind"), [("1.0", "number"), ("true", "boolean"), ("null", "null"),
                                             ('["a"]', "array")])
def test_jsonl_labels_must_be_strings_or_integers(tmp_path, label, kind):
    # Before: str() turned 1.0 and 1 into two classes, null into a class 'None'.
    write(tmp_path, "t.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": ' + label + "}\n")
    with pytest.raises(DatasetError, match=rf"t\.jsonl, line 2: label .* is a JSON {kind}"):
        load(tmp_path, 'format = "jsonl"\ntrain = "t.jsonl"\n')


def test_jsonl_text_must_be_a_string_and_lines_objects(tmp_path):
    write(tmp_path, "t.jsonl", '{"text": ["a"], "label": 1}\n')
    with pytest.raises(DatasetError, match=r"line 1: 'text' is a JSON array, not a string"):
        load(tmp_path, 'format = "jsonl"\ntrain = "t.jsonl"\n')
    write(tmp_path, "t.jsonl", '[1, 2]\n')
    with pytest.raises(DatasetError, match=r"line 1: a JSON list, not an object"):
        load(tmp_path, 'format = "jsonl"\ntrain = "t.jsonl"\n')


def test_a_negative_integer_label_is_not_the_last_name(tmp_path):
    # Before: int('-1') indexed label_names from the end, silently.
    write(tmp_path, "t.csv", "text,label\na,0\nb,1\nc,-1\n")
    with pytest.raises(DatasetError, match=r"line 4: label '-1' is not an index into label_names \(0 to 1\)"):
        load(tmp_path, 'train = "t.csv"\nlabel_names = ["neg", "pos"]\n')


def test_a_folder_as_a_split(tmp_path):
    (tmp_path / "t.csv").mkdir()
    with pytest.raises(DatasetError, match="is a folder; point the split at a file"):
        load(tmp_path, 'train = "t.csv"\n')


def test_a_carve_that_leaves_no_validation_example(tmp_path):
    write(tmp_path, "t.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    with pytest.raises(DatasetError, match="validation_fraction = 0.1 of 4 training examples carves no validation"):
        load(tmp_path, 'train = "t.csv"\n')


@pytest.mark.parametrize("n", [0, -2, True])
def test_max_per_class_must_be_positive(tmp_path, n):
    # Before: 0 meant "all" (falsy) and -2 dropped the last two examples of each class.
    write(tmp_path, "t.csv", "text,label\n" + ROWS)
    spec = load_dataset_spec(write(tmp_path, "s.toml", 'train = "t.csv"\n'))
    with pytest.raises(ConfigError, match="max_per_class = .*use a whole number of examples >= 1"):
        load_dataset(spec, max_per_class=n)
    with pytest.raises(ConfigError, match="max_eval_per_class"):
        load_dataset(spec, max_eval_per_class=n)


# --- the spec file -------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "expect"), [
    ('delimiter = ""', "delimiter = '' must be exactly one character"),
    ('delimiter = ",,"', "delimiter = ',,' must be exactly one character"),
    ('delimiter = "\\n"', "delimiter = '\\n' must be exactly one character other than a line break"),
    ('delimiter = "\\""', "is the csv quote character"),
    ("seed = -1", "seed = -1 is negative; use an integer >= 0"),
    ("seed = 1.5", "key 'seed' must be an integer, got 1.5"),
    ("validation_fraction = 0.95", "validation_fraction = 0.95 is out of range; use a number above 0 and below 0.9"),
    ("validation_fraction = nan", "validation_fraction = nan is out of range"),
    ("validation_fraction = 0", "validation_fraction = 0.0 is out of range"),
    ('encoding = "rot13"', "encoding = 'rot13' is not a text encoding"),
    ('encoding = "utf-99"', "encoding = 'utf-99' is not a text encoding"),
    ('format = "xml"', "'format' is 'xml'; use one of 'csv', 'tsv', 'jsonl', 'delimited', 'prefixed'"),
    ("header = false", "text_field = 'text' with header = false must be a column number"),
    ('text_field = ""', "text_field = '' is empty"),
    ('label_field = "text"', "text_field and label_field are both 'text'"),
    ("label_part = -1", "label_part = -1 is negative"),
    ("label_part = 2", "label_part = 2 needs label_separator"),
    ('label_separator = ":"', "label_separator = ':' applies only to format = 'prefixed'"),
    ('label_names = ["a", "a"]', "label_names[1] = 'a' occurs twice"),
    ('label_names = ["a", " "]', "label_names[1] is empty"),
    ('hf_id = "x/y"', "train = 't.csv' and hf_id = 'x/y' are both set"),
    ('name = ""', "name = '' is empty"),
    ("text_field = true", "key 'text_field' must be a str, got bool True"),
])
def test_each_bad_spec_value_is_named_with_what_is_allowed(tmp_path, body, expect):
    # Before: TypeError/ValueError tracebacks (delimiter, seed), or silently accepted.
    write(tmp_path, "t.csv", "text,label\n" + ROWS)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f'train = "t.csv"\n{body}\n')
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 's.toml'}: ") and expect in msg, msg


def test_hub_spec_with_files_for_other_splits_or_no_train_split(tmp_path):
    with pytest.raises(ConfigError, match="validation / test files need a 'train' file"):
        load(tmp_path, 'hf_id = "x/y"\ntest = "t.csv"\n')
    with pytest.raises(ConfigError, match="hf_train_split = '' is empty"):
        load(tmp_path, 'hf_id = "x/y"\nhf_train_split = ""\n')


def test_integer_column_numbers_in_toml(tmp_path):
    write(tmp_path, "t.tsv", "".join(f"{lab}\t{t}\n" for t, lab in [("a", "x"), ("b", "y")] * 4))
    ds = load(tmp_path, 'format = "tsv"\ntrain = "t.tsv"\nheader = false\ntext_field = 1\nlabel_field = 0\n'
                        'validation_fraction = 0.5\n')
    assert ds.label_names == ("x", "y") and set(ds.train.texts) == {"a", "b"}


def test_column_numbers_beyond_the_row(tmp_path):
    write(tmp_path, "t.tsv", "a\tx\nb\ty\n")
    with pytest.raises(DatasetError, match=r"line 1: 2 field\(s\), but text_field = 0 and label_field = 5 need at least 6"):
        load(tmp_path, 'format = "tsv"\ntrain = "t.tsv"\nheader = false\ntext_field = 0\nlabel_field = 5\n')


def test_a_spec_toml_with_a_bom_is_read(tmp_path):
    write(tmp_path, "t.csv", "text,label\n" + ROWS)
    write(tmp_path, "s.toml", b'\xef\xbb\xbftrain = "t.csv"\n')
    assert load_dataset(resolve_dataset(str(tmp_path / "s.toml"))).n_classes == 3


def test_a_spec_toml_that_is_not_utf8(tmp_path):
    write(tmp_path, "s.toml", 'name = "x"\ntrain = "caf\xe9.csv"\n', encoding="latin-1")
    with pytest.raises(ConfigError) as err:
        resolve_dataset(str(tmp_path / "s.toml"))
    msg = str(err.value)
    assert "s.toml, line 2: bytes b'\\xe9' are not UTF-8" in msg and "re-save the file as UTF-8" in msg


def test_spec_messages_never_carry_an_invisible_character(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, '\ufefftrain = "t.csv"\n"text\u200bfield" = "x"\n')
    msg = str(err.value)
    assert "unknown key 'text\\u200bfield'" in msg
    assert all(c.isprintable() for c in msg), repr(msg)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, 'train = "t.csv"\ndelimiter = "\u200b\u200b"\n')
    assert "'\\u200b\\u200b'" in str(err.value) and all(c.isprintable() for c in str(err.value))


def test_a_huge_value_is_cut_in_the_message(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f'train = "t.csv"\ndelimiter = "{"x" * 100_000}"\n')
    assert len(str(err.value)) < 400


def test_a_spec_that_is_a_folder(tmp_path):
    (tmp_path / "s.toml").mkdir()
    with pytest.raises(ConfigError, match="is a folder, not a TOML file"):
        resolve_dataset(str(tmp_path / "s.toml"))


def test_a_spec_built_in_code_is_held_to_the_same_rules():
    with pytest.raises(ValueError, match="seed = -3"):
        DatasetSpec(name="x", train="t.csv", seed=-3)
    assert DatasetSpec(name="x", train="t.csv", header=False, text_field=0, label_field=1).text_field == "0"


def test_valid_jsonl_still_loads(tmp_path):
    rows = [{"text": t, "label": lab} for t, lab in [("a", 1), ("b", 2)] * 3]
    write(tmp_path, "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    ds = load(tmp_path, 'format = "jsonl"\ntrain = "t.jsonl"\nvalidation_fraction = 0.5\n')
    assert ds.label_names == ("1", "2")
