"""``codesign results``: list and export measurement records.

Registered by ``toolchain.cli`` (which wraps it in its error handler); errors are raised as
:class:`~toolchain.errors.CodesignError` here, never turned into messages.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click

from .profiling.records import CostRecord
from .profiling.stats import record_stats
from .store.db import RecordStore, default_db_path

FORMATS = ("table", "json", "csv")
_CSV_EXTRA = ("latency_ms_median", "latency_ms_p90", "latency_ms_spread")


def find_records(db: Path | None = None, target: str | None = None, candidate: str | None = None,
                 emulated: bool | None = None, run_id: str | None = None) -> list[CostRecord]:
    """Records matching the filters; ``candidate`` may be an id prefix. An absent database has
    no records (and is not created)."""
    path = db or default_db_path()
    if not path.exists():
        return []
    exact = candidate if candidate and len(candidate) >= 12 else None
    with RecordStore(path) as store:
        records = store.records(target=target, candidate_id=exact, emulated=emulated, run_id=run_id)
    if candidate and not exact:
        records = [r for r in records if r.candidate_id.startswith(candidate)]
    return records


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f}" if n else "-"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def render_table(records: list[CostRecord]) -> str:
    header = ("recorded (UTC)", "target", "candidate", "precision", "runtime", "emul", "n",
              "median ms", "p90 ms", "spread", "predicted ms", "RSS MB", "size MB", "recipe", "ISA")
    rows = [header]
    for r in records:
        s = record_stats(r)
        rows.append((
            r.recorded_at[:19].replace("T", " "), r.target, r.candidate_id, r.precision,
            f"{r.runtime} {r.runtime_version}".strip(), "yes" if r.emulated else "no", str(r.n_samples),
            _ms(s.median_ms if s else None), _ms(s.p90_ms if s else None),
            f"{100 * s.spread:.0f}%" if s else "-", _ms(r.predicted_latency_ms),
            _mb(r.peak_rss_bytes), _mb(r.model_bytes), r.recipe or "-",
            # Which instructions the int8/fp32 kernels had; "?" for records made before it was kept.
            "?" if r.isa is None else (" ".join(r.isa) or "-"),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {6, 7, 8, 9, 10, 11, 12}
    lines = []
    for k, row in enumerate(rows):
        cells = [c.rjust(w) if i in numeric else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_json(records: list[CostRecord]) -> str:
    return json.dumps([r.to_dict() for r in records], indent=2)


def render_csv(records: list[CostRecord]) -> str:
    fields = list(CostRecord.__dataclass_fields__) + list(_CSV_EXTRA)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.to_dict().items()}
        s = record_stats(r)
        row["latency_ms_median"] = s.median_ms if s else ""
        row["latency_ms_p90"] = s.p90_ms if s else ""
        row["latency_ms_spread"] = s.spread if s else ""
        row["emulated"] = int(r.emulated)
        row["predicted_latency_ms"] = "" if r.predicted_latency_ms is None else r.predicted_latency_ms
        writer.writerow(row)
    return buf.getvalue()


def render_op_profiles(records: list[CostRecord], db: Path | None = None) -> str:
    """Each record's op profile table, then its slope check against the cost model its
    target's settled records fit now (the same records ``codesign profile`` learns from)."""
    from .profiling.op_profile_target import record_slope_check, render_record

    path = db or default_db_path()
    fitted: dict[str, list[CostRecord]] = {}
    out = []
    with RecordStore(path) as store:
        for r in records:
            if r.target not in fitted:
                fitted[r.target] = store.records(target=r.target, settled=True)
            check, why = record_slope_check(r, fitted[r.target])
            out.append(render_record(r, check, why))
    return "\n\n".join(out)


@click.command("results")
@click.option("--target", default=None, help="Only records of this target.")
@click.option("--candidate", "candidate", default=None, metavar="ID",
              help="Only records of this candidate (an id or a prefix of one).")
@click.option("--run-id", default=None, help="Only records of this run.")
@click.option("--emulated/--real", "emulated", default=None,
              help="Only emulated, or only real, measurements (default: both).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table for reading; json or csv to export every field.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Measurement database (default: $CODESIGN_HOME/codesign.db).")
@click.option("--op-profile", "op_profile", is_flag=True,
              help="Only records with an op profile ('codesign profile --op-profile'); show each one's "
                   "per-layer and per-op-type table and its check against the cost model's per-layer slope.")
def results(target: str | None, candidate: str | None, run_id: str | None, emulated: bool | None,
            fmt: str, db: Path | None, op_profile: bool) -> None:
    """List and export measurement records, oldest first.

    \b
    Examples:
      codesign results --target host
      codesign results --format json > records.json
      codesign results --real --format csv > records.csv
      codesign results --op-profile --target rpi4
    """
    records = find_records(db, target=target, candidate=candidate, emulated=emulated, run_id=run_id)
    if op_profile:
        records = [r for r in records if r.op_profile]
    if op_profile and fmt == "table" and records:
        click.echo(render_op_profiles(records, db))
        click.echo(f"{len(records)} record(s) with an op profile", err=True)
        return
    if fmt == "json":
        click.echo(render_json(records))
    elif fmt == "csv":
        click.echo(render_csv(records), nl=False)
    elif records:
        click.echo(render_table(records))
        click.echo(f"{len(records)} record(s); latency statistics derived from the raw samples", err=True)
        profiled = sum(1 for r in records if r.op_profile)
        if profiled:
            click.echo(f"{profiled} of them carry an op profile: 'codesign results --op-profile' shows it",
                       err=True)
    else:
        path = db or default_db_path()
        if path.exists():
            click.echo(f"no records in {path} match these filters", err=True)
        else:
            click.echo(f"no measurements yet: {path} does not exist; run `codesign profile` first",
                       err=True)
