"""`codesign personalise`: the user's own examples refit the deployed head on the board. Parses,
calls ``toolchain.flows.personalise``, renders; errors propagate as CodesignError."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_params import FiniteFloatRange


def _pct(block: dict | None) -> str:
    return "-" if not block else f"{block['accuracy']:.1%} (n={block['n']})"


@click.command("personalise")
@click.option("--target", required=True, help="Target name (targets/*.toml) or a .toml path.")
@click.option("--examples", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Labelled examples: .jsonl (one {\"text\", \"label\"} object a line) or .csv "
              "with a text,label header.")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True), default=None,
              help="Bundle the board must run (deployed first unless it is the current one).")
@click.option("--rollback", is_flag=True, help="Switch back to the head active before the last learn.")
@click.option("--max-anchor-drop", type=FiniteFloatRange(0.0, 1.0), default=None,
              help="Largest drop of anchor-set accuracy (0..1) vs the shipped head that a learn may "
              "cause and still switch (default: the bundle's, 0.02).")
@click.option("--holdout", type=FiniteFloatRange(0.0, 1.0, max_open=True), default=None,
              help="Fraction of each label's examples held out to score before/after (0..1, default 0.2).")
@click.option("--emulate", is_flag=True, help="Learn on the target's emulation.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report (metrics only) to this file.")
@click.option("--allow-unsigned", is_flag=True, help="Deploy --bundle even if unsigned or untrusted.")
def personalise(target, examples, bundle_path, rollback, max_anchor_drop, holdout, emulate, json_out,
                allow_unsigned) -> None:
    """Refit the deployed head on your own labelled examples, on the board itself.

    The examples' texts and features stay on the board; only metrics come back. A label the
    bundle has never seen becomes a new class. The new head is switched in only if accuracy on
    the bundle's anchor set (a sample of the original training data) drops by at most
    --max-anchor-drop; otherwise the old head stays and the report says why.

    \b
    Examples:
      codesign personalise --target host --examples my.jsonl
      codesign personalise --target rpi4 --examples my.csv --bundle dist/rpi4-0123abcd.tar.gz --json out.json
      codesign personalise --target host --rollback
    """
    from .boards.registry import open_target
    from .flows.personalise import personalise as flow

    report = flow(open_target(target, emulate=emulate), Path(examples) if examples else None,
                  bundle=Path(bundle_path) if bundle_path else None, rollback=rollback,
                  max_anchor_drop=max_anchor_drop, holdout=holdout,
                  json_out=Path(json_out) if json_out else None, allow_unsigned=allow_unsigned)
    where = report.get("board", report.get("target"))
    if rollback:
        click.echo(f"{report['target']}: head is now {report['active']} (previous: {report.get('previous')})")
        return
    emu = " [emulated]" if report.get("emulated") else ""
    click.echo(f"{report['target']} ({where}){emu}: {report['n_examples']} examples "
               f"({report['n_train']} fitted, {report['n_heldout']} held out, {report['truncated']} truncated)")
    if report["new_classes"]:
        click.echo(f"new classes  {', '.join(report['new_classes'])}")
    click.echo(f"held out     before {_pct(report['before'])}  after {_pct(report['after'])}")
    click.echo(f"anchor set   shipped {_pct(report['anchor_shipped'])}  after {_pct(report['anchor_after'])}")
    click.echo(f"cost         learn {report['learn_ms']:.0f} ms, peak RSS {report['peak_rss_bytes'] / 2**20:.0f} MiB{emu}")
    if report["switched"]:
        click.echo(f"switched     to head {report['active']}")
    else:
        click.secho(f"not switched {report['reason']}", fg="yellow")
    if json_out:
        click.echo(f"report       {json_out}")


COMMANDS = (personalise,)
