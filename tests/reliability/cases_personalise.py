"""Bad examples given to ``codesign personalise --target host``: each is one error line, and the
board keeps its shipped head (state unchanged, the uploaded copy removed). Uses cases_bundle's
session bundle, deployed to the case's own host board."""

from __future__ import annotations

from pathlib import Path

from cases_bundle import _built, _env
from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot


def _examples_case(name: str, body: str, expect: str):
    def run(tmp: Path) -> Outcome:
        import os

        from toolchain.boards.registry import open_target
        from toolchain.bundle.deploy import deploy, status

        env = _env(tmp)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            target = open_target("host")
            deploy(target, _built()["folder"])
            path = tmp / name
            path.write_text(body)
            before = snapshot(tmp / "board")
            msg = cli_error(["personalise", "--target", "host", "--examples", path], expect=expect, env=env)
            left_behind(before, snapshot(tmp / "board"))
            assert status(target)["head"]["active"] == "shipped"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return Outcome(msg, "nothing switched (the shipped head stays active; the upload is removed)")

    return run


CASES = [
    Case("dataset file", "personalise: an empty examples file", "codesign personalise --target host --examples empty.jsonl",
         _examples_case("empty.jsonl", "", "the file is empty")),
    Case("dataset file", "personalise: an unknown format", "codesign personalise --target host --examples ex.xml",
         _examples_case("ex.xml", "<a/>\n", "unknown format")),
    Case("dataset file", "personalise: no label column", "codesign personalise --target host --examples ex.csv",
         _examples_case("ex.csv", "text,other\nhello,1\nworld,2\n", "no 'label' field")),
    Case("dataset file", "personalise: a single example", "codesign personalise --target host --examples one.jsonl",
         _examples_case("one.jsonl", '{"text": "one", "label": "a"}\n', "1 example")),
    Case("dataset file", "personalise: every label the same", "codesign personalise --target host --examples same.csv",
         _examples_case("same.csv", "text,label\nfoo,a\nbar,a\n", "all 2 examples have the label")),
]
