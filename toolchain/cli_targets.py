"""`codesign targets ...`: what boards are known, whether they answer, and preparing emulation."""

from __future__ import annotations

import json

import click


@click.group("targets")
def targets() -> None:
    """List, show and prepare targets (targets/*.toml, or a path to your own file).

    \b
    Examples:
      codesign targets list
      codesign targets show rpi4
      codesign targets prepare rpi4      # build the emulated aarch64 root filesystem
    """


@targets.command("list")
@click.option("--no-probe", is_flag=True, help="Do not try to reach the boards.")
def list_cmd(no_probe: bool) -> None:
    """Known targets and whether each is reachable now.

    \b
    Examples:
      codesign targets list
      codesign targets list --no-probe      # only read targets/*.toml
    """
    from .boards.registry import open_target
    from .config.target_spec import known_target_files, load_target_spec

    for name in known_target_files():
        spec = load_target_spec(name)
        state = "-"
        if not no_probe:
            r = open_target(spec).reachability()
            state = ("reachable" if r.reachable else "unreachable") + f" ({r.detail})"
        emu = spec.emulation.method
        click.echo(f"{name:18} {spec.kind:8} {spec.arch:8} emulation={emu:11} {state}")


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def show_cmd(name: str, as_json: bool) -> None:
    """A target's full spec, its hash, and whether it answers now.

    \b
    Examples:
      codesign targets show rpi4
      codesign targets show ./my-board.toml --json
    """
    from .boards.registry import open_target
    from .config.target_spec import load_target_spec
    from .specfile import to_plain

    spec = load_target_spec(name)
    r = open_target(spec).reachability()
    data = {"spec": to_plain(spec), "hash": spec.hash, "reachable": r.reachable, "detail": r.detail}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{spec.name} ({spec.kind}, {spec.arch}) hash {spec.hash}")
    click.echo(f"  {spec.description}")
    click.echo(f"  reachable: {r.reachable} — {r.detail}")
    click.echo(f"  runtimes: {', '.join(f'{x.name}/{x.provider}' for x in spec.runtimes)}; threads {spec.threads}")
    b = spec.budgets
    click.echo(f"  budgets: RAM {b.ram_mb or '-'} MB, storage {b.storage_mb or '-'} MB, "
               f"latency {b.latency_ms or '-'} ms, flash {b.flash_kb or '-'} KB")
    e = spec.emulation
    click.echo(f"  emulation: {e.method} {e.qemu_machine or e.cpu} (latency scale {e.latency_scale:g}: "
               f"{e.calibration_source or 'no calibration source'})")


@targets.command("prepare")
@click.argument("name")
def prepare_cmd(name: str) -> None:
    """Build what the target's emulation needs (idempotent).

    \b
    Examples:
      codesign targets prepare rpi4         # the emulated aarch64 root filesystem
      codesign targets prepare jetson-nano  # the same root filesystem, reused if built
    """
    from .boards.registry import open_target

    open_target(name, emulate=True).prepare()
    click.echo(f"{name}: ready")
