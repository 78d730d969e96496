"""The command line's edge: every number has a range, a bad value is one `error:` line (click's
three-line usage errors included), cheap arguments are checked before expensive work, every
command's --help has runnable examples, and README's command list matches the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from toolchain.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def invoke(*args: str, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


def one_error_line(result, *needles: str, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Usage:" not in result.output and "Try '" not in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- option ranges --------------------------------------------------------------------------------

BAD_OPTIONS = [
    # (argv, what the line must name)
    (["run", "--max-length", "0"], ["--max-length", "0", "x>=2"]),  # ran untruncated
    (["run", "--max-length", "-5"], ["--max-length", "-5"]),  # overflowed
    (["extract", "--max-length", "1"], ["--max-length", "x>=2"]),
    (["run", "--max-latency-ms", "-1"], ["--max-latency-ms", "-1"]),  # was ignored
    (["run", "--max-latency-ms", "nan"], ["--max-latency-ms", "nan", "finite"]),
    (["search", "--max-model-mb", "0"], ["--max-model-mb", "0"]),
    (["run", "--max-candidates", "-1"], ["--max-candidates", "-1", "0<=x<=100000"]),  # ValueError
    (["run", "--tolerance", "-50"], ["--tolerance", "-50", "0.0<=x<=100.0"]),  # ValueError
    (["run", "--tolerance", "inf"], ["--tolerance", "finite"]),
    (["run", "--max-per-class", "0"], ["--max-per-class", "0", "x>=1"]),  # used every row
    (["extract", "--max-eval-per-class", "-2"], ["--max-eval-per-class", "-2"]),
    (["run", "--seed", "-1"], ["--seed", "-1"]),
    (["run", "--jobs", "0"], ["--jobs", "0"]),
    (["run", "--screen-rows", "-4"], ["--screen-rows", "-4"]),
    (["profile", "--top", "0"], ["--top", "0"]),
    (["profile", "--rounds", "0"], ["--rounds", "0"]),
    (["profile", "--iterations", "0"], ["--iterations", "0"]),
    (["profile", "--warmup", "-1"], ["--warmup", "-1"]),
    (["profile", "--passes", "0"], ["--passes", "0"]),
    (["profile", "--max-latency-ms", "-3"], ["--max-latency-ms", "-3"]),
    (["profile", "--precision", "int4"], ["--precision", "int4", "fp32"]),
    (["results", "--format", "xml"], ["--format", "xml", "csv"]),
    (["baseline", "finetune", "--lr", "0"], ["--lr", "0"]),
    (["baseline", "finetune", "--lr", "nan"], ["--lr", "nan"]),
    (["baseline", "finetune", "--epochs", "0"], ["--epochs"]),
    (["baseline", "finetune", "--batch-size", "100000"], ["--batch-size", "100000"]),
    (["baseline", "finetune", "--device", "gpu"], ["--device", "gpu", "cuda:N"]),
    (["baseline", "last-layer", "--seed", "-3"], ["--seed", "-3"]),
    (["baseline", "majority", "--max-per-class", "0"], ["--max-per-class", "0"]),
    (["run", "--no-such-option"], ["no such option", "--no-such-option"]),
    (["no-such-command"], ["no such command", "no-such-command"]),
    (["targets", "show"], ["missing argument", "NAME"]),
    (["show", "/no/such/run"], ["RUN_DIR", "/no/such/run"]),
]


@pytest.mark.parametrize("argv, needles", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_a_bad_option_value_is_one_error_line(argv, needles, codesign_home):
    line = one_error_line(invoke(*argv), *needles)
    # The line names the command and where to read what is allowed.
    assert line.startswith("error: codesign") and re.search(r"[sS]ee 'codesign[a-z -]* --help'", line), line
    assert not codesign_home.exists() or not any(codesign_home.rglob("*"))


def test_profile_passes_must_fit_the_iterations(codesign_home):
    one_error_line(invoke("profile", "--passes", "100", "--iterations", "60"), "--passes 100",
                   "--iterations 60")


def test_help_and_bare_groups_still_work():
    assert invoke("--help").exit_code == 0
    assert invoke("run", "-h").exit_code == 0
    bare = invoke("targets")  # a group without a subcommand prints its help, as before
    assert "list" in bare.output and "Usage:" in bare.output and "error:" not in bare.output


def test_cli_precisions_are_the_candidates():
    from toolchain.cli_params import PRECISIONS
    from toolchain.search.candidate import PRECISIONS as CANDIDATE_PRECISIONS

    assert PRECISIONS == CANDIDATE_PRECISIONS


def test_every_numeric_option_has_a_range():
    """No plain int/float option is left: each is an IntRange, a finite FloatRange or a Choice."""
    plain = []
    for path, cmd in _walk(main, ()):
        for p in cmd.params:
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)) and not isinstance(
                p.type, click.types._NumberRangeBase
            ):
                if p.name != "verbose":  # -v is a count
                    plain.append(f"{' '.join(path)} {p.opts[0]}")
    # bench (cli_bundle.py) is another engineer's; its options are listed in issue 11's report.
    assert [x for x in plain if not x.startswith("bench ")] == []


# --- cheap arguments first -------------------------------------------------------------------------


def test_profile_checks_the_target_before_looking_for_a_run(codesign_home):
    # Before: "no run under $CODESIGN_HOME/runs; run 'codesign run' first", for a target typo.
    line = one_error_line(invoke("profile", "--target", "no-such-board"), "no-such-board",
                          "known targets:", code=1)
    assert "no run" not in line


def test_profile_checks_a_bad_target_file_before_looking_for_a_run(tmp_path, codesign_home):
    bad = tmp_path / "board.toml"
    bad.write_text('kind = "local"\narch = "x86_64"\n[estimate]\ngflops_per_thread = 0\n')
    one_error_line(invoke("profile", "--target", bad), "board.toml", "estimate.gflops_per_thread", "> 0")


def test_run_checks_the_target_before_extracting(tiny_bert, toy_spec, codesign_home):
    # Before: every layer was extracted (and cached under $CODESIGN_HOME) before the target was read.
    result = invoke("run", "--model", tiny_bert, "--dataset", toy_spec, "--target", "no-such-board")
    one_error_line(result, "no-such-board", code=1)
    assert not codesign_home.exists() or not any(codesign_home.rglob("*"))


# --- --help examples -------------------------------------------------------------------------------


def _walk(cmd: click.Command, path: tuple[str, ...]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from _walk(sub, (*path, name))


ALL = list(_walk(main, ()))


def _examples(help_text: str) -> list[str]:
    lines = help_text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() in ("Examples:", "Example:"))
    out = []
    for ln in lines[start + 1:]:
        if not ln.strip():
            break
        out.append(ln.strip())
    return out


def _check_example(example: str) -> None:
    """The example names real commands and real options (it is parsed, not run)."""
    words = shlex.split(example.split(" #")[0].replace("\\", ""))
    words = words[: words.index(">")] if ">" in words else words
    assert words[0] == "codesign", example
    cmd: click.Command = main
    rest = words[1:]
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        assert rest[0] in cmd.commands, f"{example}: no command {rest[0]!r}"
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    for word in rest:
        if word.startswith("-") and word != "-":
            assert word.split("=")[0] in options, f"{example}: {cmd.name} has no option {word}"


@pytest.mark.parametrize("path, cmd", ALL, ids=[" ".join(p) or "codesign" for p, _ in ALL])
def test_every_command_help_has_runnable_examples(path, cmd):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output, f"'codesign {' '.join(path)} --help' has no Examples: block"
    examples = [e for e in _examples(result.output) if e.startswith("codesign")]
    assert examples, result.output
    for example in examples:
        if path:  # a command's examples are of that command
            assert example.startswith("codesign " + " ".join(path)), example
        _check_example(example)


# --- README's command list --------------------------------------------------------------------------


def _readme_commands() -> set[tuple[str, ...]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    found: set[tuple[str, ...]] = set()
    for line in block.splitlines():
        line = line.split("  #")[0]
        for m in re.finditer(r"codesign ([a-z][a-z-]*)((?: [^/]*)?)", line):
            name, tail = m.group(1), m.group(2)
            found.add((name,))
            group = main.commands.get(name)
            if isinstance(group, click.Group):  # "targets list | show NAME", "baseline a|b|c ..."
                for piece in tail.split("|"):
                    words = piece.split()
                    if words:
                        found.add((name, words[0]))
    return found


def test_readme_commands_block_matches_the_cli():
    listed = _readme_commands()
    cli = {path for path, _ in ALL if path}
    assert listed - cli == set(), f"README lists commands the CLI lacks: {sorted(listed - cli)}"
    assert cli - listed == set(), f"README's ## Commands misses: {sorted(cli - listed)}"
