"""`codesign bundle | deploy | status | bench`: what leaves the toolchain and how it lands on a
board. Each command parses, calls ``toolchain.bundle`` and renders; errors propagate as
CodesignError (the main CLI adds its one-line error handler when it registers them)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def _target(name: str, emulate: bool = False):
    from .boards.registry import open_target

    return open_target(name, emulate=emulate)


@click.command("bundle")
@click.option("--target", required=True, help="Target name (targets/*.toml) or a .toml path.")
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Run directory (default: the latest run).",
)
@click.option(
    "--candidate",
    "candidate_id",
    default=None,
    metavar="ID",
    help="Candidate or precision-variant id (default: the run's selection).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write <target>-<candidate>/ and its .tar.gz into.",
)
@click.option(
    "--allow-unmeasured",
    is_flag=True,
    help="Bundle a candidate that has no measurement on this target.",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="CODESIGN_SIGNING_KEY",
    help="ed25519 private key (PEM or OpenSSH) to sign with "
    "(default: codesign's own, $CODESIGN_HOME/keys/signing.key).",
)
def bundle(target, run_dir, candidate_id, out_dir, allow_unmeasured, key) -> None:
    """Build a deployable bundle (folder + reproducible .tar.gz) for one target.

    \b
    Examples:
      codesign bundle --target rpi4 --out dist/
      codesign bundle --target mcu-qemu --out dist/ --allow-unmeasured
    """
    from .bundle.archive import archive_path
    from .bundle.manifest import bundle_id, read_manifest, sha256_file
    from .errors import RunDirError
    from .flows.bundle import bundle_for_target
    from .paths import codesign_home
    from .report.write import latest_run

    if run_dir is None:
        run_dir = latest_run(codesign_home())
        if run_dir is None:
            raise RunDirError(
                f"no run under {codesign_home() / 'runs'}; run 'codesign run' first "
                "or pass --run-dir"
            )
    folder = bundle_for_target(
        Path(run_dir),
        _target(target),
        Path(out_dir),
        candidate_id=candidate_id,
        allow_unmeasured=allow_unmeasured,
        key=key,
    )
    from .bundle.signing import check_folder

    manifest = read_manifest(folder)
    archive = archive_path(folder)
    trust = check_folder(folder, allow_unsigned=True)
    click.echo(f"bundle   {folder}")
    click.echo(f"archive  {archive}  sha256 {sha256_file(archive)}")
    click.echo(f"id       {bundle_id(folder)}")
    click.echo(
        f"signed   key {trust.key_id}"
        + ("" if trust.status == "trusted" else " (not in this machine's trusted keys)")
    )
    click.echo(f"candidate {manifest['candidate_id']}: {manifest.get('candidate_description')} "
               f"({manifest.get('selection_source', 'explicit')} selection for {manifest['target']['name']})")
    art = manifest["artefact"]
    click.echo(f"artefact {art['format']} ({art['precision']}), val acc {manifest['val_acc']:.4f}")
    if manifest["measured"]:
        s = (manifest["cost"] or {}).get("summary") or {}
        emu = " (emulated)" if manifest["cost"].get("emulated") else ""
        click.echo(
            f"measured median {s.get('median_ms', float('nan')):.4g} ms on "
            f"{manifest['target']['name']}{emu}"
        )
    else:
        click.secho("unmeasured on this target (--allow-unmeasured)", fg="yellow")


@click.command("deploy")
@click.option("--target", required=True, help="Target name or .toml path.")
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(exists=True),
    default=None,
    help="A bundle folder or its .tar.gz.",
)
@click.option("--rollback", is_flag=True, help="Switch back to the previously deployed version.")
@click.option("--emulate", is_flag=True, help="Deploy to the target's emulation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Deploy a bundle that is unsigned or signed by a key not trusted here "
    "(a signature that does not match is refused anyway).",
)
def deploy(target, bundle_path, rollback, emulate, as_json, allow_unsigned) -> None:
    """Deploy a bundle to a board (upload, verify hashes, self-check, switch), or roll back.

    \b
    Examples:
      codesign deploy --target rpi4 --bundle dist/rpi4-0123abcd.tar.gz
      codesign deploy --target rpi4 --rollback
    """
    from .bundle import deploy as lib
    from .errors import ConfigError

    if rollback == (bundle_path is not None):
        raise ConfigError("give exactly one of --bundle PATH or --rollback")
    tgt = _target(target, emulate)
    result = (
        lib.rollback(tgt)
        if rollback
        else lib.deploy(tgt, Path(bundle_path), allow_unsigned=allow_unsigned)
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    if rollback:
        click.echo(
            f"{result['target']}: current is now {result['current']} "
            f"(previous: {result.get('previous')})"
        )
        return
    where = result.get("board") or result.get("device")
    click.echo(
        f"deployed bundle {result['bundle_id'][:12]} to {result['target']} ({where})"
        + (" [emulated]" if result.get("emulated") else "")
    )
    _echo_signature(result.get("signature"))
    if "version" in result:
        click.echo(f"version  {result['version']}  (previous: {result['previous'] or 'none'})")
    else:
        click.echo(f"model crc {result['model_crc32']}  (previous: {result['previous_crc32']})")
    check = result["self_check"]
    if "max_abs_prob" in check:
        click.echo(
            f"self-check passed: max |dprob| {check['max_abs_prob']:.3g}, argmax agreement "
            f"{check['argmax_agreement']:.0%} on {check['n']} reference inputs"
        )
    else:
        click.echo(f"self-check passed: firmware CRC {check['crc32']} on {check['n']} inputs")


@click.command("status")
@click.option("--target", required=True, help="Target name or .toml path.")
@click.option("--emulate", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def status(target, emulate, as_json) -> None:
    """What is deployed on a board, its manifest, and when it was deployed.

    \b
    Examples:
      codesign status --target rpi4
      codesign status --target mcu-pty --emulate --json
    """
    from .bundle import deploy as lib

    result = lib.status(_target(target, emulate))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"target   {result['target']}" + (" [emulated]" if result.get("emulated") else ""))
    if "active_model_crc32" in result:
        click.echo(f"device   {result['device']}")
        running = result["active_selfcheck_crc32"]
        click.echo(f"active   {'model with self-check CRC ' + running if running else 'no model'}")
        dep = result.get("deployed") or result.get("last_recorded")
        if dep:
            label = "deployed" if result.get("deployed") else "last recorded"
            click.echo(f"{label} bundle {dep['bundle_id'][:12]} at {dep['deployed_at']}")
            _echo_summary(dep.get("manifest") or {})
        if result.get("note"):
            click.echo(f"note     {result['note']}")
        return
    click.echo(f"board    {result['board']}  root {result['root']}")
    if not result.get("current"):
        click.echo("current  nothing deployed")
        return
    click.echo(f"current  {result['current']}")
    click.echo(f"previous {result.get('previous') or 'none'}")
    deployed = result.get("deployed") or {}
    click.echo(
        f"deployed {deployed.get('deployed_at', '?')} from {deployed.get('deployed_from', '?')}"
    )
    _echo_summary(lib.manifest_summary(result.get("manifest")))
    head = result.get("head") or {"active": "shipped"}
    if head.get("active") == "shipped":
        click.echo("head     shipped (the bundle's own)")
    else:
        click.echo(f"head     personalised {head['active']} at {head.get('switched_at')}: "
                   f"{len(head.get('labels') or [])} classes, {head.get('n_user_examples')} user examples")
    click.echo(f"versions {len(result.get('versions', []))} kept on the board")


def _echo_signature(sig: dict | None) -> None:
    if not sig:
        return
    if sig["status"] == "trusted":
        click.echo(f"signed   by trusted key {sig['key_id']} ({sig['source']})")
    else:
        what = "unsigned" if sig["status"] == "unsigned" else f"untrusted key {sig['key_id']}"
        click.secho(f"signed   {what}: accepted because of --allow-unsigned", fg="yellow")


def _echo_summary(summary: dict) -> None:
    if not summary:
        return
    click.echo(f"candidate {summary.get('candidate_id')}: {summary.get('candidate')}")
    acc = summary.get("val_acc")
    lat = summary.get("latency_ms_median")
    click.echo(
        f"precision {summary.get('precision')}, val acc "
        f"{'-' if acc is None else f'{acc:.4f}'}, measured median "
        f"{'-' if lat is None else f'{lat:.4g} ms'}"
    )


@click.command("bench")
@click.option("--target", required=True, help="Target name or .toml path.")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True))
@click.option(
    "--json",
    "json_out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write the report (raw samples + summary) here.",
)
@click.option(
    "--markdown",
    "markdown_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY).",
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="An earlier --json report to compare against.",
)
@click.option(
    "--max-regression",
    type=float,
    default=0.10,
    show_default=True,
    help="Allowed latency increase (fraction) and accuracy drop (fraction of examples).",
)
@click.option(
    "--iterations", type=int, default=None, help="Timed inferences (default 300; 60 on SSH boards)."
)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option(
    "--blocks",
    type=int,
    default=5,
    show_default=True,
    help="Blocks whose fastest median is the compared statistic.",
)
@click.option("--emulate", is_flag=True)
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Run a bundle that is unsigned or signed by a key not trusted here.",
)
@click.option(
    "--inject-slowdown",
    type=float,
    default=0.0,
    hidden=True,
    help="Stretch every timed inference by this fraction (tests of the gate).",
)
def bench(
    target,
    bundle_path,
    json_out,
    markdown_out,
    baseline,
    max_regression,
    iterations,
    warmup,
    blocks,
    emulate,
    allow_unsigned,
    inject_slowdown,
) -> None:
    """Run the bundle's benchmark and self-check on a target; exit non-zero on a regression.

    \b
    Examples:
      codesign bench --target rpi4 --bundle dist/rpi4-0123abcd --json bench.json \\
          --markdown "$GITHUB_STEP_SUMMARY" --baseline main-bench.json
    """
    from .bundle.bench import bench as run_bench
    from .errors import RegressionError

    try:
        report = run_bench(
            _target(target, emulate),
            Path(bundle_path),
            baseline=baseline,
            max_regression=max_regression,
            iterations=iterations,
            warmup=warmup,
            blocks=blocks,
            inject_slowdown=inject_slowdown,
            json_out=Path(json_out),
            markdown_out=markdown_out,
            allow_unsigned=allow_unsigned,
        )
    except RegressionError:
        click.echo(f"report written to {json_out}", err=True)
        raise
    s = report["summary"]
    acc = report["accuracy"].get("accuracy")
    click.echo(
        f"{report['target']}: {s['n']} samples, min block median {s['stat_ms']:.4g} "
        f"{report['unit']}, median {s['median_ms']:.4g}; self-check passed; reference "
        f"accuracy {'-' if acc is None else f'{acc:.3f}'}"
        + (" [emulated]" if report["emulated"] else "")
    )
    if report["comparison"]:
        c = report["comparison"]
        click.echo(
            f"vs baseline: latency x{c['latency_ratio']:.3f}; no regression beyond "
            f"{100 * max_regression:.0f}%"
        )
    click.echo(f"report written to {json_out}")


COMMANDS = (bundle, deploy, status, bench)
