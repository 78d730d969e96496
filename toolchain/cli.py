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
from .cli_params import PRECISIONS, SEED, CodesignGroup, FiniteFloatRange, positive
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


@click.group("codesign", cls=CodesignGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def _extract_device(ctx, param, value: str) -> str:
    """cpu, cuda or cuda:N, checked before any dataset or model is read."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d{1,2})?", value):
        raise click.BadParameter(f"'{value}' is not a device; use cpu, cuda or cuda:N (N = 0..99)", ctx, param)
    return value


def _shard(ctx, param, value):
    if value is None:
        return None
    from .errors import ConfigError
    from .features.shard import parse_shard

    try:
        return parse_shard(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("shard "), ctx, param) from None


def run_options(fn):
    options = [
        click.option("--model", "models", multiple=True, default=("default",), show_default=True,
                     help="Backbone: local folder or hub id; repeat to search several."),
        click.option("--dataset", default="trec", show_default=True,
                     help="Preset (sst2, emotion, trec) or a dataset spec .toml."),
        click.option("--text-field", default=None,
                     help="Text column (key) when --dataset is a .csv/.tsv/.jsonl/.parquet file or hf:NAME[:CONFIG] "
                          "(docs/datasets.md)  [default: text]"),
        click.option("--label-field", default=None,
                     help="Label column (key) of a --dataset data file or hf: id  [default: label]"),
        # 2: [CLS] and [SEP] plus nothing; the model's own maximum is checked once it is loaded.
        click.option("--max-length", "max_lengths", multiple=True, type=click.IntRange(min=2), default=(64,),
                     show_default=True, help="Max tokens (2 up to the model's maximum); repeat to search several."),
        click.option("--max-per-class", type=click.IntRange(min=1), default=None,
                     help="Use only the first N (>= 1) training examples per class (quick runs)."),
        click.option("--max-eval-per-class", type=click.IntRange(min=1), default=None,
                     help="Use only the first N (>= 1) validation/test examples per class."),
        click.option("--device", default="cpu", show_default=True, callback=_extract_device,
                     help="Where the backbone runs during extraction: cpu, cuda or cuda:N."),
        click.option("--dtype", type=click.Choice(("float32", "float16", "bfloat16")), default="float32",
                     show_default=True, help="float16/bfloat16: autocast on a GPU (its own cache key)."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def search_options(fn):
    options = [
        click.option("--target", default="host", show_default=True, help="Target name or .toml path."),
        click.option("--run-dir", type=click.Path(file_okay=False), default=None,
                     help="Output folder (default: a new one under $CODESIGN_HOME/runs)."),
        click.option("--max-latency-ms", type=positive(), default=None,
                     help="Latency budget on the target (> 0; leave out for none)."),
        click.option("--max-model-mb", type=positive(), default=None,
                     help="Model size budget (> 0; leave out for none)."),
        click.option("--max-candidates", type=click.IntRange(0, 100_000), default=200, show_default=True,
                     help="Sample at most this many layer combinations, 0..100000 (all single layers are kept)."),
        click.option("--tolerance", type=FiniteFloatRange(0.0, 100.0), default=0.5, show_default=True,
                     help="Accuracy points (0..100) traded for a cheaper candidate."),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--screen-rows", type=click.IntRange(0, 10_000_000), default=4_000, show_default=True,
                     help="From 2x this many training rows, screen every candidate on a sample of "
                          "this size and refit only the best tenth on all rows (0: fit all in full)."),
        click.option("--jobs", type=click.IntRange(1, 1024), default=None,
                     help="Processes fitting heads (default: every core for large searches, else 1)."),
        click.option("--vocab", "vocabs", multiple=True, type=click.Choice(("full", "pruned")), default=("full",),
                     show_default=True, help="Vocabulary: full, or pruned to the training split's tokens "
                                             "(smaller embedding table); repeat to search both."),
        click.option("--memory-budget-mib", type=click.IntRange(0, 1 << 30), default=None,
                     help="Fit a candidate streamed from the mapped cache when its inputs would take "
                          "more than this many MiB (0: every fit; default: half the memory available at the start)."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _check_target(target: str):
    """The target's spec, loaded (and so validated) before anything expensive: a typo in
    ``--target`` must not cost a feature extraction or depend on a run existing first."""
    from .config.target_spec import load_target_spec

    return load_target_spec(target)


def _config(**kw):
    from .data.presets import dataset_ref
    from .flows.run import RunConfig

    # The fields travel inside the dataset string: a run records it and resolves it again later.
    dataset = dataset_ref(kw["dataset"], kw.get("text_field"), kw.get("label_field"))
    return RunConfig(
        models=tuple(kw["models"]), dataset=dataset, target=kw.get("target", "host"),
        max_lengths=tuple(kw["max_lengths"]), max_combinations=kw.get("max_candidates", 200),
        tolerance=kw.get("tolerance", 0.5) / 100.0, max_latency_ms=kw.get("max_latency_ms"),
        max_model_mb=kw.get("max_model_mb"), max_per_class=kw["max_per_class"],
        max_eval_per_class=kw["max_eval_per_class"], seed=kw.get("seed", 0), run_dir=kw.get("run_dir"),
        jobs=kw.get("jobs"), screen_rows=kw.get("screen_rows", 4_000),
        device=kw.get("device", "cpu"), dtype=kw.get("dtype", "float32"),
        vocabs=tuple(kw.get("vocabs") or ("full",)), memory_budget_mib=kw.get("memory_budget_mib"),
    )


def _render_selection(run_dir: Path, board: dict) -> None:
    from .rundir import RunDir

    sel = next(c for c in board["candidates"] if c["id"] == board["selected"])
    base = board["baseline"]

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    click.echo(f"run: {run_dir}")
    click.echo(f"search selected {sel['id']}: layers {sel['layers']} {sel['combine']}/{sel['pooling']} "
               f"{sel['head']}-{sel['head_size']} depth {sel['depth']}")
    click.echo(f"  val {pct(sel['val_acc'])}  test {pct(sel.get('test_acc'))}  "
               f"{sel['cost']['latency_ms']:.2f} ms ({sel['cost']['source']}) on {board['target']}")
    click.echo(f"baseline (last layer [CLS]): val {pct(base['val_acc'])}  test {pct(base['test_acc'])}")
    sels = RunDir(run_dir, board).selections_by_target()
    if sels:
        click.echo("selection per target:")
    for name, s in sels.items():
        lat = s.get("latency_ms")
        lat_text = "n/a" if lat is None else f"{lat:.2f} ms"
        click.echo(f"  {name:16} {s['candidate_id']} {s.get('precision') or '':12} val "
                   f"{pct(s.get('val_acc'))}  {lat_text} {s['source']}"
                   + (" (emulated)" if s.get("emulated") else ""))
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
    from .flows.run import run

    _check_target(kw["target"])
    run_dir, board = run(_config(**kw))
    _render_selection(run_dir, board)


@main.command("extract")
@run_options
@click.option("--shard", default=None, callback=_shard, metavar="K/N",
              help="Compute only shard K of N (0 <= K < N): the chunks at positions K, K+N, ...; "
                   "then run --finalize once (docs/scaling.md).")
@click.option("--finalize", is_flag=True,
              help="Check that every chunk of the shards is there and mark the cache complete.")
@click.option("--engine", type=click.Choice(("local", "ray")), default="local", show_default=True,
              help="ray: map the chunks over a Ray cluster's actors (extra codesign[ray]).")
@handle_errors
def extract_cmd(shard, finalize, engine, **kw) -> None:
    """Cache every layer's pooled features (resumable; a finished cache is reused).

    \b
    Examples:
      codesign extract --dataset sst2 --max-length 64
      codesign extract --dataset emotion --max-length 32 --max-length 128
      codesign extract --dataset sst2 --shard 0/4        # one of 4 tasks (SLURM, k8s)
      codesign extract --dataset sst2 --finalize         # once all 4 are done
      codesign extract --dataset sst2 --engine ray       # on a Ray cluster
      codesign extract --dataset sst2 --device cuda --dtype float16
    """
    import functools

    from .flows.run import extract

    if sum((shard is not None, finalize, engine != "local")) > 1:
        raise click.UsageError("--shard, --finalize and --engine ray are separate ways to run; pass one")
    step = None
    if shard is not None:
        from .features.shard import extract_shard

        step = functools.partial(extract_shard, shard=shard)
    elif finalize:
        from .features.shard import finalize as step
    elif engine == "ray":
        from .features.ray_engine import ray_features as step
    ex = extract(_config(**kw), step)
    for (model, ml), f in ex.features.items():
        state = getattr(f, "state", None) or ("extracted" if f.extracted_chunks else "cached")
        counts = (f", {f.extracted_chunks} of {f.owned_chunks} owned chunks computed "
                  f"({f.total_chunks} in all)" if getattr(f, "owned_chunks", 0) else "")
        layers = f", {f.n_layers} layers" if f.n_layers is not None else ""
        click.echo(f"{model} @ {ml} tokens: {state}{counts}{layers}, {f.cache_dir}")


@main.command("search")
@run_options
@search_options
@handle_errors
def search_cmd(**kw) -> None:
    """Search candidates over cached features (extracting first if needed).

    \b
    Examples:
      codesign search --dataset trec --max-latency-ms 3
      codesign search --dataset sst2 --target rpi4 --tolerance 1
    """
    from .flows.run import extract, new_run_dir, search
    from .report.write import write_run

    _check_target(kw["target"])
    config = _config(**kw)
    run_dir = new_run_dir(config)
    board = search(config, extract(config), run_dir)
    write_run(run_dir, board)
    _render_selection(run_dir, board)


@main.command("show")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="Print every target's selection and the leaderboard as JSON.")
@handle_errors
def show_cmd(run_dir: str, as_json: bool) -> None:
    """Show a run directory's selections: the search's, and each target's own (measured on
    it, or predicted for it).

    \b
    Examples:
      codesign show runs/mine
      codesign show runs/mine --json > leaderboard.json
    """
    from .rundir import RunDir

    run = RunDir.open(Path(run_dir))
    if as_json:
        # Selections keyed by target name first; the rest of the leaderboard after.
        out = {"selections": run.selections_by_target(),
               **{k: v for k, v in run.board.items() if k != "selections"}}
        click.echo(json.dumps(out, indent=2))
    else:
        _render_selection(run.path, run.board)


@main.command("profile")
@click.option("--target", "targets", multiple=True, default=("host",), show_default=True,
              help="Target name or .toml path; repeat to profile several boards at once (one worker each).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run to profile (default: the latest under $CODESIGN_HOME/runs).")
@click.option("--top", "top_k", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Measure at most this many front candidates per round (1..1000).")
@click.option("--rounds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Co-design loop rounds (1..100).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(PRECISIONS),
              default=("fp32", "int8-dynamic"), show_default=True, help="Precisions to export and measure.")
@click.option("--emulate", is_flag=True, help="Use the target's emulation even if it is reachable.")
@click.option("--max-latency-ms", type=positive(), default=None,
              help="Latency budget (> 0; default: the target's).")
@click.option("--max-model-mb", type=positive(), default=None,
              help="Model size budget (> 0; default: the target's).")
@click.option("--iterations", type=click.IntRange(1, 1_000_000), default=60, show_default=True,
              help="Timed inferences per candidate and precision (1..1000000).")
@click.option("--warmup", type=click.IntRange(0, 100_000), default=10, show_default=True,
              help="Untimed inferences first (0..100000).")
@click.option("--passes", type=click.IntRange(1, 1000), default=None,
              help="Interleave: measure the candidates round-robin in N passes of iterations/N "
                   "(default: 3 on the host, a shared machine; 1 on a board).")
@click.option("--run-if-missing", is_flag=True, help="Run the default 'codesign run' first when no run exists.")
@click.option("--candidate", "candidates", multiple=True, metavar="ID",
              help="Measure exactly these candidates (repeatable) instead of running the loop.")
@click.option("--op-profile", is_flag=True,
              help="With --candidate: also collect ONNX Runtime's kernel profile on the target, per layer "
                   "and op type, in an extra pass after the timed samples (see 'codesign results --op-profile').")
@handle_errors
def profile_cmd(targets, run_dir, top_k, rounds, precisions, emulate, max_latency_ms, max_model_mb,
                iterations, warmup, passes, run_if_missing, candidates, op_profile) -> None:
    """Measure a run's front on a target and refit the cost model until the selection settles.

    Several --target options profile several boards at once, one worker each; boards of one kind
    and spec (the same board at other addresses) pool their measurements into one cost model.
    Each board's outcome is its own selection; a board that fails is reported, the others
    finish, and the command then exits non-zero naming it.

    \b
    Examples:
      codesign profile --target host
      codesign profile --target rpi4 --emulate --top 3
      codesign profile --target farm/pi-a.toml --target farm/pi-b.toml
      make profile TARGET=rpi4
    """
    from .boards.registry import open_target
    from .flows.profile import ProfileOptions, check_boards, check_op_profile, profile_board
    from .paths import codesign_home
    from .report.write import latest_run
    from .store.db import RecordStore

    # Before any run lookup: a bad target is the first thing to fix.
    specs = [_check_target(t) for t in targets]
    check_boards(specs)
    check_op_profile(ProfileOptions(candidates=tuple(candidates), op_profile=op_profile), specs)
    if passes is not None and passes > iterations:
        from .errors import ConfigError

        raise ConfigError(f"--passes {passes} is more than --iterations {iterations}; each pass needs at "
                          "least one timed inference: lower --passes or raise --iterations")
    if run_dir is None:
        found = latest_run(codesign_home())
        if found is None:
            if not run_if_missing:
                from .errors import RunDirError

                raise RunDirError(f"no run under {codesign_home() / 'runs'}; run 'codesign run' first "
                                  "or pass --run-if-missing")
            from .flows.run import RunConfig, run

            found, _ = run(RunConfig())
        run_dir = found
    run_dir = Path(run_dir)
    options = ProfileOptions(candidates=tuple(candidates), precisions=tuple(precisions), top_k=top_k,
                             rounds=rounds, max_latency_ms=max_latency_ms, max_model_mb=max_model_mb,
                             warmup=warmup, iterations=iterations, passes=passes, op_profile=op_profile)

    def validate() -> None:
        from .profiling.runner import validate_request

        # Before the store is opened: a bad plan leaves nothing behind, not even a new database.
        validate_request(run_dir, precisions=precisions, candidates=candidates, top_k=top_k, rounds=rounds,
                         passes=passes, iterations=iterations, warmup=warmup)

    if len(specs) > 1:
        _profile_many(run_dir, dict(zip(targets, specs, strict=True)), options, emulate, validate)
        return
    tgt = open_target(specs[0], emulate=emulate)
    if tgt.measures != "head":
        validate()
    with RecordStore() as store:
        outcome = profile_board(run_dir, tgt, store, options)
    _render_outcome(run_dir, outcome)


def _profile_many(run_dir: Path, boards: dict, options, emulate: bool, validate) -> None:
    """Every board at once (``boards``: each --target as given → its spec)."""
    from .errors import TargetError
    from .flows.profile import measures_artefacts, profile_boards

    specs = list(boards.values())
    if any(measures_artefacts(s) for s in specs):
        validate()

    def done(outcome) -> None:  # as each board finishes; the full results come after
        if outcome.ok:
            click.echo(f"board {outcome.name}: done")
        else:
            click.secho(f"board {outcome.name} failed: {outcome.error}", fg="red", err=True)

    outcomes = profile_boards(run_dir, specs, options, emulate=emulate, on_done=done)
    for outcome in outcomes:
        if outcome.ok:
            click.echo(f"\n== {outcome.name} ==")
            _render_outcome(run_dir, outcome)
    failed = [o.name for o in outcomes if not o.ok]
    if failed:
        retry = " ".join(f"--target {arg}" for arg, s in boards.items() if s.name in failed)
        raise TargetError(f"{len(failed)} of {len(outcomes)} boards failed ({', '.join(failed)}; why is "
                          f"above); the other boards' selections are saved in {run_dir}: fix them and "
                          f"rerun 'codesign profile {retry}'")


def _render_outcome(run_dir: Path, outcome) -> None:
    if outcome.mode == "mcu":
        _render_mcu(run_dir, outcome.summary)
    elif outcome.mode == "candidates":
        from .profiling.stats import summarize

        for r in outcome.records:
            st = summarize(r.latency_ms_samples)
            click.echo(f"{r.candidate_id} {r.precision:12} median {st.median_ms:.2f} ms "
                       f"(p10-p90 {st.p10_ms:.2f}-{st.p90_ms:.2f}) {r.model_bytes / 2**20:.1f} MB"
                       + (" [emulated]" if r.emulated else ""))
            if r.op_profile:
                click.echo(f"  op profile: {r.op_profile['per_inference_us']:.0f} us of kernels per inference over "
                           f"{r.op_profile['depth']} layer(s); 'codesign results --op-profile' shows where")
    else:
        _render_loop(run_dir, outcome.summary)


def _render_loop(run_dir: Path, summary: dict) -> None:
    rows = {r["id"]: r for r in summary["variants"]}
    click.echo(f"run: {run_dir}  target: {summary['target']}  rounds: {len(summary['rounds'])}")
    sel = rows.get(summary["selected"]) if summary["selected"] else None
    if sel is None:
        click.echo("no candidate meets the budgets")
        return
    cost = sel["cost"]
    click.echo(f"selected {sel['id']} (base {sel['base_id']}): depth {sel['depth']} {sel['precision']} "
               f"val {100 * sel['val_acc']:.1f}% ({sel['acc_source']})")
    if "measured" in sel:
        m = sel["measured"]
        lo, hi = m["spread_ms_p10_p90"]
        click.echo(f"  measured on {summary['target']}: median {m['latency_ms_median']:.2f} ms "
                   f"(p10-p90 {lo:.2f}-{hi:.2f}, {m['n_samples']} samples), "
                   f"{cost['model_bytes'] / 2**20:.1f} MB, peak RSS {cost['peak_ram_bytes'] / 2**20:.0f} MB"
                   + (" [emulated]" if cost["emulated"] else ""))
    else:
        click.echo(f"  predicted: {cost['latency_ms']:.2f} ms, {cost['model_bytes'] / 2**20:.1f} MB")
    if summary.get("selected_test_acc") is not None:
        click.echo(f"  test accuracy {100 * summary['selected_test_acc']:.1f}% ({summary['selected_test_source']})")
    rep = summary.get("prediction_after_loop")
    if rep:
        click.echo(f"  cost model after the loop: {100 * rep['within_15pct']:.0f}% within ±15%, "
                   f"Kendall τ {rep['kendall_tau'] if rep['kendall_tau'] is not None else 'n/a'} (n={rep['n']})")


def _render_mcu(run_dir: Path, summary: dict) -> None:
    from .report.mcu import render_mcu

    click.echo(f"run: {run_dir}")
    click.echo("\n".join(render_mcu(summary)))


def _adopt(cmd: click.Command) -> click.Command:
    """A copy of a command defined in another module, with the CLI's error handling (the
    original stays untouched, so the library's own command objects keep raising)."""
    import copy

    adopted = copy.copy(cmd)
    if isinstance(cmd, click.Group):
        adopted.commands = {name: _adopt(sub) for name, sub in cmd.commands.items()}
    elif cmd.callback is not None:
        adopted.callback = handle_errors(cmd.callback)
    return adopted


def _register() -> None:
    from .cli_baseline import baseline
    from .cli_bundle import COMMANDS as bundle_commands
    from .cli_personalise import COMMANDS as personalise_commands
    from .cli_results import results
    from .cli_targets import targets

    for cmd in (targets, results, baseline, *bundle_commands, *personalise_commands):
        main.add_command(_adopt(cmd))


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
