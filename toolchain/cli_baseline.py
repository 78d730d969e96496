"""``codesign baseline``: the baselines the method is measured against, as commands.

Each command parses its options, calls toolchain.baselines and renders a short summary (and the
full result as JSON with ``--json``). CodesignError propagates: the main CLI renders it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from .cli_params import SEED, FiniteFloatRange


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _load(dataset: str, max_per_class: int | None, max_eval_per_class: int | None):
    from .data.dataset import load_dataset
    from .data.presets import resolve_dataset

    return load_dataset(resolve_dataset(dataset), max_per_class, max_eval_per_class)


def _say(json_out: str | None, line: str) -> None:
    """The summary goes to stdout unless the JSON does."""
    if json_out != "-":
        click.echo(line)


def _write_json(out: str | None, payload: dict) -> None:
    if not out:
        return
    text = json.dumps(payload, indent=2)
    if out == "-":
        click.echo(text)
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    click.echo(f"json: {path}")


def _device(ctx, param, value: str) -> str:
    """Checked here, before the dataset and the backbone are loaded."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", value):
        raise click.BadParameter(f"'{value}' is not a device; use auto, cpu, cuda or cuda:N", ctx, param)
    return value


def _data_options(fn):
    options = [
        click.option(
            "--dataset",
            default="trec",
            show_default=True,
            help="Preset (sst2, emotion, trec) or a dataset spec .toml.",
        ),
        click.option(
            "--max-per-class",
            type=click.IntRange(min=1),
            default=None,
            help="Use only the first N training examples per class (quick runs).",
        ),
        click.option(
            "--max-eval-per-class",
            type=click.IntRange(min=1),
            default=None,
            help="Use only the first N validation/test examples per class.",
        ),
        click.option(
            "--json",
            "json_out",
            type=str,
            default=None,
            metavar="OUT",
            help="Write the full result as JSON to OUT ('-' for stdout).",
        ),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


@click.group("baseline")
def baseline() -> None:
    """Baselines: fine-tuning, the last-layer feature extractor, the majority class.

    \b
    Examples:
      codesign baseline finetune --dataset trec --epochs 6 --min-epochs 3
      codesign baseline finetune --dataset sst2 --depth 4 --epochs 1 --json ft-sst2-d4.json
      codesign baseline last-layer --dataset emotion
      codesign baseline majority --dataset emotion
    """


@baseline.command("finetune")
@click.option(
    "--model", default="default", show_default=True, help="Backbone: local folder or hub id."
)
@_data_options
@click.option(
    "--depth",
    type=click.IntRange(min=0),
    default=None,
    help="Fine-tune the backbone truncated at this many layers (default: all).",
)
@click.option(
    "--max-train",
    type=click.IntRange(min=2),
    default=None,
    help="Stratified, seeded subsample of train to this size (default: every training row).",
)
@click.option("--epochs", type=click.IntRange(1, 1000), default=3, show_default=True, help="1..1000.")
@click.option("--lr", type=FiniteFloatRange(0.0, 1.0, min_open=True), default=5e-5, show_default=True,
              help="Peak AdamW learning rate (> 0, <= 1).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True, help="1..4096.")
@click.option(
    "--max-length",
    type=click.IntRange(min=2),
    default=64,
    show_default=True,
    help="Max tokens per example.",
)
@click.option("--pooling", type=click.Choice(["mean", "cls"]), default="mean", show_default=True)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many optimisation steps.",
)
@click.option(
    "--patience",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Epochs without a better validation accuracy before stopping.",
)
@click.option(
    "--min-epochs",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="No early stop before this many epochs (at most --epochs).",
)
@click.option(
    "--device", default="auto", show_default=True, callback=_device, help="auto, cpu, cuda or cuda:N."
)
@click.option("--seed", type=SEED, default=0, show_default=True)
def finetune_cmd(
    model,
    dataset,
    max_per_class,
    max_eval_per_class,
    json_out,
    depth,
    max_train,
    epochs,
    lr,
    batch_size,
    max_length,
    pooling,
    max_steps,
    patience,
    min_epochs,
    device,
    seed,
):
    """Fine-tune the backbone with a classification head (AdamW, warm-up/decay, early stopping).

    \b
    Examples:
      codesign baseline finetune --dataset trec --epochs 6 --min-epochs 3 --patience 2
      codesign baseline finetune --dataset sst2 --depth 4 --epochs 1 --json ft-sst2-d4.json
      codesign baseline finetune --dataset emotion --device cpu --max-steps 50
    """
    from .baselines.finetune import FinetuneConfig, finetune
    from .features.backbone import resolve_model

    config = FinetuneConfig(
        depth=depth,
        max_train=max_train,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        max_length=max_length,
        pooling=pooling,
        max_steps=max_steps,
        patience=patience,
        min_epochs=min_epochs,
        device=device,
        seed=seed,
    )
    config.check()
    data = _load(dataset, max_per_class, max_eval_per_class)
    result = finetune(data, resolve_model(model), config)
    _say(
        json_out,
        f"fine-tuned {result.model} at depth {result.depth}/{result.full_depth} on "
        f"{result.dataset} ({result.train_size} of {result.train_split_rows} train rows, {result.device})",
    )
    _say(
        json_out,
        f"  val {_pct(result.val_acc)}  test {_pct(result.test_acc)}  "
        f"macro-F1 {_pct(result.test_macro_f1)}",
    )
    _say(
        json_out,
        f"  {result.epochs_run} epoch(s), best {result.best_epoch}, {result.steps} steps, "
        f"{result.train_seconds:.1f} s, peak memory {_mib(result.peak_memory_bytes)}",
    )
    for e in result.epoch_curve:
        _say(json_out, f"  epoch {e['epoch']}: val {_pct(e['val_acc'])}  val loss {e['val_loss']:.4f}  "
                       f"train loss {e['train_loss']:.4f}  {e['seconds']:.0f} s")
    _write_json(json_out, {"baseline": "finetune", **result.to_dict()})


@baseline.command("last-layer")
@click.option(
    "--model", default="default", show_default=True, help="Backbone: local folder or hub id."
)
@_data_options
@click.option(
    "--max-length",
    type=click.IntRange(min=2),
    default=64,
    show_default=True,
    help="Max tokens per example.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
def last_layer_cmd(model, dataset, max_per_class, max_eval_per_class, json_out, max_length, seed):
    """The classic feature extractor: last layer's [CLS] and mean into softmax regression.

    \b
    Examples:
      codesign baseline last-layer --dataset emotion
      codesign baseline last-layer --dataset trec --max-length 32 --json -
    """
    from .baselines.last_layer import last_layer_baseline
    from .features.backbone import resolve_model

    data = _load(dataset, max_per_class, max_eval_per_class)
    result = last_layer_baseline(data, resolve_model(model), max_length=max_length, seed=seed)
    source = "cache" if result.features_from_cache else "extracted"
    _say(
        json_out,
        f"last layer ({result.depth}) of {result.model} on {result.dataset} "
        f"({result.train_size} train); features {source} in {result.extract_seconds:.1f} s",
    )
    for s in result.scores.values():
        _say(
            json_out,
            f"  {s.pooling:<4}  val {_pct(s.val_acc)}  test {_pct(s.test_acc)}  "
            f"macro-F1 {_pct(s.test_macro_f1)}  head fit {s.fit_seconds:.2f} s",
        )
    _write_json(json_out, {"baseline": "last-layer", **result.to_dict()})


@baseline.command("majority")
@_data_options
def majority_cmd(dataset, max_per_class, max_eval_per_class, json_out):
    """Always predict train's most frequent class.

    \b
    Examples:
      codesign baseline majority --dataset emotion
      codesign baseline majority --dataset sst2 --json majority-sst2.json
    """
    from .baselines.majority import majority_baseline

    result = majority_baseline(_load(dataset, max_per_class, max_eval_per_class))
    _say(
        json_out,
        f"majority class '{result.label}' on {result.dataset}: val {_pct(result.val_acc)}  "
        f"test {_pct(result.test_acc)}  macro-F1 {_pct(result.test_macro_f1)}",
    )
    _write_json(json_out, {"baseline": "majority", **result.to_dict()})
