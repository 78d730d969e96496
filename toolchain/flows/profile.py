"""``codesign profile``: measure a run's candidates on one board, or on several in parallel.

A board whose kind measures int8 heads (a microcontroller) profiles the run's saved heads on
upstream features; any other board runs the co-design loop (or exactly ``--candidate``s). Each
outcome becomes that target's own selection in the run directory.

Several boards (``--target A --target B``) are profiled at once, one worker thread per board:
a board's time goes into its agent (over SSH, serial or a subprocess), so threads overlap the
boards while the host does the exports, which are made once and shared (export/artefact.py locks
each artefact). Each worker opens its own connection to the measurement database (SQLite's
WAL lets them write at once), saves its board's selection under the run's lock
(:mod:`toolchain.flows.save`), and a board that fails is reported while the others finish.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..boards.base import Target
from ..boards.registry import kind_class, open_target
from ..config.target_spec import TargetSpec
from ..errors import CodesignError, ConfigError
from ..features.cache import atomic_write_bytes
from ..report.mcu import render_mcu
from ..store.db import RecordStore
from .save import update_run

log = logging.getLogger(__name__)


def _mcu_selection(summary: dict) -> dict | None:
    """The most accurate int8 head that fits (smaller blob on ties), as the target's selection."""
    fits = [r for r in summary["candidates"] if r["feasible"] and r.get("int8_acc") is not None]
    if not fits:
        return None
    best = max(fits, key=lambda r: (r["int8_acc"], -r["blob_bytes"]))
    measured = best.get("instructions_median") is not None
    return {"candidate_id": best["id"], "base_id": best["base_id"], "precision": "int8-head",
            "source": "measured" if measured else "predicted",
            "emulated": bool(summary.get("emulated")),
            "latency_ms": best.get("est_latency_ms_median"), "model_bytes": best["blob_bytes"],
            "val_acc": best.get("int8_acc"), "instructions_median": best.get("instructions_median")}


def profile_mcu(run_dir: Path, target, store, **options) -> dict:
    """Profile saved heads on a microcontroller; save the summary and the target's selection."""
    from ..profiling.mcu import measure_heads

    summary = measure_heads(Path(run_dir), target, store, **options)
    name = summary["target"]
    path = Path(run_dir)
    atomic_write_bytes(path / f"mcu-{name}.json", json.dumps(summary, indent=2).encode())
    atomic_write_bytes(path / f"mcu-{name}.md", "\n".join(render_mcu(summary)).encode())

    def change(run) -> None:
        # The leaderboard keeps it too, so report.md can say which heads fit and why not.
        run.board.setdefault("mcu", {})[name] = summary
        sel = _mcu_selection(summary)
        if sel is not None:
            run.set_selection(target.spec, sel)

    update_run(path, change)
    return summary


def keep_op_profiles(run_dir: Path, target_name: str, records) -> None:
    """The leaderboard keeps each measured candidate's op profile per target, so report.md can
    show where the time goes (the records keep them too, with their samples)."""
    profiles = {r.candidate_id: r.op_profile for r in records if r.op_profile is not None}
    if not profiles:
        return

    def change(run) -> None:
        run.board.setdefault("op_profiles", {}).setdefault(target_name, {}).update(profiles)

    update_run(run_dir, change)


@dataclass(frozen=True)
class ProfileOptions:
    """What ``codesign profile`` asks of every board (the CLI's options)."""

    candidates: tuple[str, ...] = ()  # exactly these fp32 ids instead of the loop
    precisions: tuple[str, ...] = ("fp32", "int8-dynamic")
    top_k: int = 4
    rounds: int = 3
    max_latency_ms: float | None = None
    max_model_mb: float | None = None
    warmup: int = 10
    iterations: int = 60
    passes: int | None = None
    op_profile: bool = False  # ONNX Runtime's per-layer kernel profile too (exactly --candidate only)


def check_op_profile(options: ProfileOptions, specs: Sequence[TargetSpec]) -> None:
    """``--op-profile`` profiles exactly the asked candidates' artefacts: not the loop's rounds
    (which candidates it measures is not known in advance), not a microcontroller's heads."""
    if not options.op_profile:
        return
    if not options.candidates:
        raise ConfigError("--op-profile needs --candidate ID: it profiles exactly the asked candidates, not "
                          "the loop's; pass the selection's id (see 'codesign show') with --candidate")
    heads = [s.name for s in specs if not measures_artefacts(s)]
    if heads:
        raise ConfigError(f"--op-profile: target(s) {', '.join(heads)} run int8 heads, not ONNX Runtime; "
                          "profile them without --op-profile")


@dataclass
class BoardOutcome:
    """One board's part of a profile: the loop's or MCU summary, or the records of exactly the
    asked candidates; or, for a board that failed, ``error`` (one line: why)."""

    name: str
    mode: str = ""  # "loop", "mcu" or "candidates"
    summary: dict | None = None
    records: list = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def profile_board(run_dir: Path, target, store, options: ProfileOptions) -> BoardOutcome:
    """What ``codesign profile --target T`` does on one opened board; errors propagate."""
    name = target.spec.name
    check_op_profile(options, [target.spec])
    if target.measures == "head":
        # An MCU holds the int8 head; the backbone runs upstream (issue 5, option a).
        summary = profile_mcu(Path(run_dir), target, store, candidate_ids=list(options.candidates) or None)
        return BoardOutcome(name, "mcu", summary=summary)
    if options.candidates:
        from ..profiling.runner import profile_candidates

        records = profile_candidates(Path(run_dir), target, store, list(options.candidates),
                                     options.precisions, warmup=options.warmup,
                                     iterations=options.iterations, passes=options.passes or 1,
                                     op_profile=options.op_profile)
        if options.op_profile:
            keep_op_profiles(Path(run_dir), name, records)
        return BoardOutcome(name, "candidates", records=records)
    from .loop import co_design

    summary = co_design(Path(run_dir), target, store, rounds=options.rounds, top_k=options.top_k,
                        precisions=options.precisions, max_latency_ms=options.max_latency_ms,
                        max_model_mb=options.max_model_mb, warmup=options.warmup,
                        iterations=options.iterations, passes=options.passes)
    return BoardOutcome(name, "loop", summary=summary)


def check_boards(specs: Sequence[TargetSpec]) -> None:
    """Several boards in one profile need distinct names: records and selections are kept per
    name, and one board measured by two workers at once would time both badly."""
    seen: dict[str, TargetSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(f"--target: two targets are named '{spec.name}'; records and selections are "
                              "kept per target name: give each board its own name in its target file")
        seen[spec.name] = spec


def measures_artefacts(spec: TargetSpec) -> bool:
    """Whether this kind's boards measure exported artefacts (the loop), not int8 heads."""
    return kind_class(spec.kind).measures != "head"


def profile_boards(run_dir: Path, boards: Sequence[TargetSpec | Target], options: ProfileOptions, *,
                   emulate: bool = False, db_path: Path | None = None,
                   on_done: Callable[[BoardOutcome], None] | None = None) -> list[BoardOutcome]:
    """Profile every board at once, one worker thread each; outcomes in the order of ``boards``.

    A board is a spec (opened here, with ``emulate``, and released when its worker ends) or a
    target opened (and prepared) by the caller, who keeps it. A board that cannot be opened or
    fails mid-run (unreachable, a dropped link, a misbehaving agent...) becomes an outcome with
    ``error`` set; the other workers go on, and every board that finished has its selection
    saved. ``on_done`` hears each outcome as its board finishes (one at a time)."""
    specs = [b if isinstance(b, TargetSpec) else b.spec for b in boards]
    check_boards(specs)
    outcomes: list[BoardOutcome | None] = [None] * len(specs)
    report_lock = threading.Lock()

    def work(i: int, spec: TargetSpec) -> None:
        given = boards[i] if isinstance(boards[i], Target) else None
        target = given
        try:
            if target is None:
                target = open_target(spec, emulate=emulate)
            # A connection per thread: sqlite3 connections stay in the thread that made them.
            with RecordStore(db_path) as store:
                out = profile_board(run_dir, target, store, options)
        except CodesignError as exc:
            out = BoardOutcome(spec.name, error=str(exc))
        except Exception as exc:  # one board's unexpected failure must not stop the others
            log.debug("board %s failed", spec.name, exc_info=True)
            out = BoardOutcome(spec.name, error=f"{type(exc).__name__}: {exc}")
        finally:
            # A farm board this flow opened is released (its place unlocked) now.
            close = getattr(target, "close", None) if given is None else None
            if callable(close):
                try:
                    close()
                except Exception as exc:  # releasing must not hide the outcome
                    log.warning("board %s: release failed: %s", spec.name, exc)
        outcomes[i] = out
        if on_done is not None:
            with report_lock:
                on_done(out)

    threads = [threading.Thread(target=work, args=(i, spec), name=f"profile-{spec.name}", daemon=True)
               for i, spec in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A worker stopped by something other than an Exception left no outcome: still a failure.
    return [o if o is not None else BoardOutcome(spec.name, error="its worker stopped unexpectedly")
            for o, spec in zip(outcomes, specs, strict=True)]
