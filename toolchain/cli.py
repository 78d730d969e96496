"""The codesign command line. Each command parses its arguments, calls toolchain functions and
renders the result; only here do errors become messages and exit codes."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .errors import CodesignError


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CodesignError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted; finished work is kept (caches and records are written atomically)", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codesign")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """codesign: pick a frozen language model's best layer features for an edge target.

    \b
    Examples:
      codesign run                                  # trec, packaged MiniLM, host target
      codesign run --dataset sst2 --max-latency-ms 5
      codesign extract --dataset emotion
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


def run_options(fn):
    options = [
        click.option("--model", "models", multiple=True, default=("default",), show_default=True,
                     help="Backbone: local folder or hub id; repeat to search several."),
        click.option("--dataset", default="trec", show_default=True,
                     help="Preset (sst2, emotion, trec) or a dataset spec .toml."),
        click.option("--max-length", "max_lengths", multiple=True, type=int, default=(64,), show_default=True,
                     help="Max tokens; repeat to search several."),
        click.option("--max-per-class", type=int, default=None,
                     help="Use only the first N training examples per class (quick runs)."),
        click.option("--max-eval-per-class", type=int, default=None,
                     help="Use only the first N validation/test examples per class."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def search_options(fn):
    options = [
        click.option("--target", default="host", show_default=True, help="Target name or .toml path."),
        click.option("--run-dir", type=click.Path(file_okay=False), default=None,
                     help="Output folder (default: a new one under $CODESIGN_HOME/runs)."),
        click.option("--max-latency-ms", type=float, default=None, help="Latency budget on the target."),
        click.option("--max-model-mb", type=float, default=None, help="Model size budget."),
        click.option("--max-candidates", type=int, default=200, show_default=True,
                     help="Sample at most this many layer combinations (all single layers are kept)."),
        click.option("--tolerance", type=float, default=0.5, show_default=True,
                     help="Accuracy points traded for a cheaper candidate."),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _config(**kw):
    from .pipeline import RunConfig

    return RunConfig(
        models=tuple(kw["models"]), dataset=kw["dataset"], target=kw.get("target", "host"),
        max_lengths=tuple(kw["max_lengths"]), max_combinations=kw.get("max_candidates", 200),
        tolerance=kw.get("tolerance", 0.5) / 100.0, max_latency_ms=kw.get("max_latency_ms"),
        max_model_mb=kw.get("max_model_mb"), max_per_class=kw["max_per_class"],
        max_eval_per_class=kw["max_eval_per_class"], seed=kw.get("seed", 0), run_dir=kw.get("run_dir"),
    )


def _render_selection(run_dir: Path, board: dict) -> None:
    sel = next(c for c in board["candidates"] if c["id"] == board["selected"])
    base = board["baseline"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    click.echo(f"run: {run_dir}")
    click.echo(f"selected {sel['id']}: layers {sel['layers']} {sel['combine']}/{sel['pooling']} "
               f"{sel['head']}-{sel['head_size']} depth {sel['depth']}")
    click.echo(f"  val {pct(sel['val_acc'])}  test {pct(sel.get('test_acc'))}  "
               f"{sel['cost']['latency_ms']:.2f} ms ({sel['cost']['source']}) on {board['target']}")
    click.echo(f"baseline (last layer [CLS]): val {pct(base['val_acc'])}  test {pct(base['test_acc'])}")
    click.echo(f"report: {run_dir / 'report.md'}")


@main.command("run")
@run_options
@search_options
@handle_errors
def run_cmd(**kw) -> None:
    """Extract features, search heads and layers, and write a run directory.

    \b
    Examples:
      codesign run
      codesign run --dataset sst2 --model default --model ./tiny-bert
      codesign run --dataset my_data.toml --max-latency-ms 4 --run-dir runs/mine
    """
    from .pipeline import run

    run_dir, board = run(_config(**kw))
    _render_selection(run_dir, board)


@main.command("extract")
@run_options
@handle_errors
def extract_cmd(**kw) -> None:
    """Cache every layer's pooled features (resumable; a finished cache is reused).

    \b
    Example:
      codesign extract --dataset sst2 --max-length 64
    """
    from .pipeline import extract

    ex = extract(_config(**kw))
    for (model, ml), f in ex.features.items():
        state = "extracted" if f.extracted_chunks else "cached"
        click.echo(f"{model} @ {ml} tokens: {state}, {f.n_layers} layers, {f.cache_dir}")


@main.command("search")
@run_options
@search_options
@handle_errors
def search_cmd(**kw) -> None:
    """Search candidates over cached features (extracting first if needed).

    \b
    Example:
      codesign search --dataset trec --max-latency-ms 3
    """
    from .pipeline import extract, new_run_dir, search
    from .report.write import write_run

    config = _config(**kw)
    run_dir = new_run_dir(config)
    board = search(config, extract(config), run_dir)
    write_run(run_dir, board)
    _render_selection(run_dir, board)


@main.command("show")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the leaderboard as JSON.")
@handle_errors
def show_cmd(run_dir: str, as_json: bool) -> None:
    """Show a run directory's selection."""
    from .report.write import read_leaderboard

    board = read_leaderboard(Path(run_dir))
    if as_json:
        click.echo(json.dumps(board, indent=2))
    else:
        _render_selection(Path(run_dir), board)


if __name__ == "__main__":  # pragma: no cover
    main()
