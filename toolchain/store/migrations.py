"""Forward-only schema migrations of the measurement database.

Like simonw/llm: an ordered list of numbered migrations and a ``_migrations`` table recording
which ran and when. A migration is never edited once released; change the schema by appending
a new one. Each migration runs inside the caller's ``BEGIN IMMEDIATE`` transaction, together with
its ``_migrations`` row, so it is applied completely or not at all, and exactly once even when
several processes open a new database at the same time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    apply: Callable[[sqlite3.Connection], None]


MIGRATIONS: list[Migration] = []


def migration(number: int):
    def register(fn: Callable[[sqlite3.Connection], None]):
        if MIGRATIONS and number != MIGRATIONS[-1].number + 1:
            raise RuntimeError(f"migration {fn.__name__}: numbers must be consecutive")
        MIGRATIONS.append(Migration(number, fn.__name__, fn))
        return fn

    return register


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS _migrations (
    number INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""


@migration(1)
def m001_records(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE records (
            record_id TEXT PRIMARY KEY,
            recorded_at TEXT NOT NULL,
            target TEXT NOT NULL,
            target_hash TEXT NOT NULL,
            candidate_id TEXT NOT NULL,
            candidate_json TEXT NOT NULL,
            precision TEXT NOT NULL,
            recipe TEXT NOT NULL,
            runtime TEXT NOT NULL,
            runtime_version TEXT NOT NULL,
            provider TEXT NOT NULL,
            codesign_version TEXT NOT NULL,
            threads INTEGER NOT NULL,
            warmup INTEGER NOT NULL,
            iterations INTEGER NOT NULL,
            latency_ms_samples_json TEXT NOT NULL,
            peak_rss_bytes INTEGER NOT NULL,
            model_bytes INTEGER NOT NULL,
            load_ms REAL NOT NULL,
            input_crc TEXT NOT NULL,
            emulated INTEGER NOT NULL CHECK (emulated IN (0, 1)),
            instructions_json TEXT NOT NULL,
            predicted_latency_ms REAL,
            host_json TEXT NOT NULL,
            run_id TEXT NOT NULL
        )
    """)
    db.execute("CREATE INDEX idx_records_target ON records (target, emulated)")
    db.execute("CREATE INDEX idx_records_candidate ON records (candidate_id, target)")
    db.execute("CREATE INDEX idx_records_run ON records (run_id)")


@migration(2)
def m002_profile_progress(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE profile_sessions (
            session_id TEXT PRIMARY KEY,
            target TEXT NOT NULL,
            run_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            planned_json TEXT NOT NULL,
            finished_at TEXT
        )
    """)
    db.execute("""
        CREATE TABLE profile_progress (
            session_id TEXT NOT NULL,
            candidate_id TEXT NOT NULL,
            done_at TEXT NOT NULL,
            PRIMARY KEY (session_id, candidate_id)
        )
    """)


@migration(3)
def m003_input_tokens(db: sqlite3.Connection) -> None:
    # Records made before this migration did not keep their input lengths: '[]' means unknown.
    db.execute("ALTER TABLE records ADD COLUMN input_tokens_json TEXT NOT NULL DEFAULT '[]'")


def _board_hashes() -> dict[str, str]:
    """Spec hash → board hash of every target file known now, as loaded with and without the
    environment's overrides (a record carries whichever spec it was measured with)."""
    from ..config.target_spec import known_target_files, load_target_spec
    from ..errors import CodesignError

    out: dict[str, str] = {}
    for path in known_target_files().values():
        for apply_env in (False, True):
            try:
                spec = load_target_spec(path, apply_env=apply_env)
            except (CodesignError, ValueError, OSError):  # a broken file: its records stay unpooled
                continue
            out[spec.hash] = spec.board_hash
    return out


@migration(4)
def m004_board_hash(db: sqlite3.Connection) -> None:
    # Records pool across boards of one kind and spec (TargetSpec.board_hash). An old record
    # knew only its full spec hash; where a target file of today has that hash, its board hash
    # is known. The others keep '' and serve their own target (by name) only.
    db.execute("ALTER TABLE records ADD COLUMN board_hash TEXT NOT NULL DEFAULT ''")
    db.execute("CREATE INDEX idx_records_board ON records (board_hash)")
    for spec_hash, board_hash in _board_hashes().items():
        db.execute("UPDATE records SET board_hash = ? WHERE target_hash = ? AND board_hash = ''",
                   (board_hash, spec_hash))


@migration(5)
def m005_op_profile(db: sqlite3.Connection) -> None:
    # ONNX Runtime's per-layer kernel profile of a measurement, when one was asked for; 'null'
    # (no profile) for every record made before.
    db.execute("ALTER TABLE records ADD COLUMN op_profile_json TEXT NOT NULL DEFAULT 'null'")
