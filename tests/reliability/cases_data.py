"""Malformed dataset specs and data files, through the real CLI: `codesign extract` resolves and
reads the dataset before it looks at the model (a folder that does not exist here), so each case
fails fast, as one `error:` line, and leaves nothing in the folder or in $CODESIGN_HOME."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot

ROWS = "where is x,LOC\nwho is y,HUM\nwhat is z,DESC\n" * 8
NO_MODEL = "./no-model"  # never reached: the dataset fails first


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _case(family: str, what: str, files: dict[str, str | bytes], dataset: str, expect: str,
          extra: tuple[str, ...] = (), around: Callable | None = None) -> Case:
    """``files`` are written into the empty folder, then ``codesign extract --dataset DATASET``
    must fail with one line containing ``expect`` and write nothing anywhere."""
    args = ["extract", "--dataset", dataset, *extra, "--model", NO_MODEL]

    def run(tmp: Path) -> Outcome:
        for name, body in files.items():
            data = body if isinstance(body, bytes) else body.encode("utf-8")
            (tmp / name).write_bytes(data)
        before, home_before = snapshot(tmp), snapshot(_home())
        if around is None:
            msg = cli_error(args, expect=expect)
        else:
            with around():
                msg = cli_error(args, expect=expect)
        assert NO_MODEL.strip("./") not in msg, f"the model was looked up first: {msg}"
        left = left_behind(before, snapshot(tmp))
        left_behind(home_before, snapshot(_home()))
        return Outcome(msg, left)

    shown = " ".join(args).replace(f" --model {NO_MODEL}", " --model M")
    return Case(family, what, "codesign " + shown, run)


def _spec(what: str, body: str | bytes, expect: str) -> Case:
    return _case("dataset spec", what, {"t.csv": "text,label\n" + ROWS, "s.toml": body}, "s.toml", expect)


def _file(what: str, name: str, body: str | bytes, expect: str, extra: tuple[str, ...] = ()) -> Case:
    return _case("dataset file", what, {name: body}, name, expect, extra)


class _offline_hub:
    """`datasets` with the hub switched off, as on a machine without a network (at once, not
    after ~25 s of retries)."""

    def __enter__(self):
        import datasets
        import huggingface_hub.constants as hub_constants

        self._saved = [(m, m.HF_HUB_OFFLINE) for m in (datasets.config, hub_constants)]
        for module, _ in self._saved:
            module.HF_HUB_OFFLINE = True

    def __exit__(self, *exc):
        for module, value in self._saved:
            module.HF_HUB_OFFLINE = value


CASES = [
    _spec("an empty delimiter (TypeError)", 'train = "t.csv"\ndelimiter = ""\n',
          "delimiter = '' must be exactly one character"),
    _spec("a two-character delimiter (TypeError)", 'train = "t.csv"\ndelimiter = ",,"\n',
          "delimiter = ',,' must be exactly one character"),
    _spec("a negative seed (numpy ValueError)", 'train = "t.csv"\nseed = -1\n', "seed = -1 is negative"),
    _spec("a validation fraction of 1.5", 'train = "t.csv"\nvalidation_fraction = 1.5\n',
          "validation_fraction = 1.5 is out of range"),
    _spec("a spec that is not UTF-8 (UnicodeDecodeError)", 'train = "caf\xe9.csv"\n'.encode("latin-1"),
          "are not UTF-8"),
    _spec("a BOM and a zero-width space in a key (escaped in the message)",
          b'\xef\xbb\xbftrain = "t.csv"\n"text\xe2\x80\x8bfield" = "x"\n', "unknown key 'text\\u200bfield'"),
    _spec("an unknown format", 'train = "t.csv"\nformat = "xml"\n', "use one of 'csv', 'tsv'"),
    _spec("header = false with named columns", 'train = "t.csv"\nheader = false\n',
          "with header = false must be a column number"),
    _spec("a label separator on a csv (was ignored)", 'train = "t.csv"\nlabel_separator = ":"\n',
          "applies only to format = 'prefixed'"),
    _spec("duplicate label names", 'train = "t.csv"\nlabel_names = ["a", "a"]\n', "occurs twice"),
    _file("a ragged row (became a fourth class)", "r.csv", "text,label\n" + ROWS + "hello, world what city,LOC\n",
          "line 26: 3 field(s), expected 2"),
    _file("a 10 MB single-line CSV (csv field limit)", "big.csv", "a" * 10_000_000, "no column 'text'"),
    _file("an empty label cell (became a class '')", "e.csv", "text,label\nfine,x\nnone,\nok,y\n",
          "line 3: the label is empty"),
    _file("a quote never closed (swallowed the file)", "q.csv", 'text,label\ngood,x\n"open,y\nbad,x\n',
          "line 3: cannot be read"),
    _file("a JSON label 1.0 next to 1 (two classes)", "j.jsonl",
          '{"text": "a", "label": 1}\n{"text": "b", "label": 1.0}\n', "is a JSON number"),
    _file("--text-field naming a missing column", "d.csv", "text,label\n" + ROWS,
          "no column 'sentence'", ("--text-field", "sentence")),
    _file("a data file of an unknown kind", "d.txt", "text,label\n" + ROWS, "unknown suffix '.txt'"),
    _case("dataset file", "a data file that does not exist", {}, "missing.csv", "no such file"),
    _case("dataset spec", "--label-field with a preset", {}, "trec", "apply to a .csv/.tsv/.jsonl/.parquet file",
          ("--label-field", "y")),
    _case("dataset spec", "an hf: id with the hub unreachable", {}, "hf:no-such-owner/no-such-data",
          "the hub is unreachable", around=_offline_hub),
]
