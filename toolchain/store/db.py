"""The measurement database: SQLite in WAL mode under ``codesign_home()``.

* Every record is one row, inserted in its own ``BEGIN IMMEDIATE`` transaction (or several in
  one with :meth:`RecordStore.append_many`); inserts are idempotent on ``record_id``, so a retry
  never duplicates a record.
* Several processes may write at once: WAL lets readers run beside the writer, and writers
  queue on SQLite's lock for up to ``timeout_s`` (``busy_timeout``).
* A process killed mid-write leaves the database as of its last commit: a record is either
  wholly present or absent.
* ``profile_sessions``/``profile_progress`` say which candidates of a profile session are done,
  so an interrupted ``codesign profile`` resumes where it stopped. A record and its progress mark
  commit together. A record made in a session names it (``host["profile_session"]``); until
  that session finishes its records are provisional, and ``settled=True`` reads leave them out.

Do not share a RecordStore across ``fork()``; open one per process.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..paths import codesign_home
from ..profiling.records import CostRecord, utc_now_iso
from .migrations import MIGRATIONS, MIGRATIONS_TABLE

log = logging.getLogger(__name__)

DB_NAME = "codesign.db"
SQLITE_HEADER = b"SQLite format 3\x00"

# record field -> (column, encode, decode)
_JSON_FIELDS = {"candidate": "candidate_json", "latency_ms_samples": "latency_ms_samples_json",
                "instructions": "instructions_json", "host": "host_json",
                "input_tokens": "input_tokens_json", "op_profile": "op_profile_json"}
# Kept in their own order: an op profile's groups run embeddings, layer.0, ..., layer.10 (sorted
# keys would put layer.10 before layer.2) and its op types largest first.
_ORDERED = {"op_profile"}
_FIELDS = tuple(CostRecord.__dataclass_fields__)
_COLUMNS = tuple(_JSON_FIELDS.get(f, f) for f in _FIELDS)
_INSERT = (f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           "ON CONFLICT(record_id) DO NOTHING")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM records"
# Not made in a profile session that is still unfinished (interrupted, or under way).
_SETTLED = ("(json_extract(host_json, '$.profile_session') IS NULL OR json_extract(host_json, "
            "'$.profile_session') NOT IN (SELECT session_id FROM profile_sessions WHERE finished_at IS NULL))")


def default_db_path() -> Path:
    """``codesign_home()/codesign.db`` (``CODESIGN_HOME`` moves it)."""
    return codesign_home() / DB_NAME


def _fix_hint(path: Path) -> str:
    return (f"move {path} aside (or delete it) to start a new database, or point CODESIGN_HOME "
            "(or --db) at another location")


def _to_row(record: CostRecord) -> tuple:
    d = record.to_dict()
    row = []
    for f in _FIELDS:
        value = d[f]
        if f in _JSON_FIELDS:
            value = json.dumps(value, sort_keys=f not in _ORDERED, separators=(",", ":"))
        elif f == "emulated":
            value = int(value)
        row.append(value)
    return tuple(row)


def _from_row(row: Sequence[Any]) -> CostRecord:
    d = {}
    for f, value in zip(_FIELDS, row, strict=True):
        if f in _JSON_FIELDS:
            value = json.loads(value)
        elif f == "emulated":
            value = bool(value)
        d[f] = value
    return CostRecord.from_dict(d)


class RecordStore:
    """Append-only store of :class:`CostRecord` s.

    ``RecordStore()`` opens (creating if needed) ``codesign_home()/codesign.db`` and applies any
    pending migrations. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path | None = None, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        self.timeout_s = float(timeout_s)
        self._db: sqlite3.Connection | None = None
        self._check_file()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of the measurement database {self.path}: "
                             f"{exc}; set CODESIGN_HOME to a writable directory") from exc
        with self._guard("open"):
            self._db = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
        try:
            with self._guard("open"):
                self._configure()
                self._migrate()
        except BaseException:
            self.close()
            raise

    # -- setup -------------------------------------------------------------------------------

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"measurement database {self.path} is a directory; "
                             "pass the path of a file, or point CODESIGN_HOME elsewhere")
        if self.path.is_file() and self.path.stat().st_size > 0:
            try:
                with open(self.path, "rb") as fh:
                    header = fh.read(len(SQLITE_HEADER))
            except OSError as exc:
                raise StoreError(f"cannot read the measurement database {self.path}: {exc}; "
                                 "check its permissions") from exc
            if header != SQLITE_HEADER:
                raise StoreError(f"{self.path} is not an SQLite database (corrupt or another file); "
                                 + _fix_hint(self.path))

    def _configure(self) -> None:
        db = self._conn
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        # Switching to WAL needs a brief exclusive lock; a concurrent opener may hold it.
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            log.warning("%s: journal mode is %s, not WAL (filesystem without shared memory?); "
                        "concurrent writers will wait longer", self.path, mode)
        db.execute("PRAGMA synchronous = FULL")  # a measurement costs minutes; keep it on commit

    def _migrate(self) -> None:
        db = self._conn
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "_migrations" not in tables:
            raise StoreError(f"{self.path} is an SQLite database but not a codesign measurement "
                             f"database (tables: {', '.join(sorted(tables))}); " + _fix_hint(self.path))
        if "_migrations" in tables and not self._pending(db):
            return  # reopening an up-to-date database writes nothing
        with self._write() as db:
            db.execute(MIGRATIONS_TABLE)
            for m in self._pending(db):
                log.info("%s: applying migration %d %s", self.path, m.number, m.name)
                m.apply(db)
                db.execute("INSERT INTO _migrations (number, name, applied_at) VALUES (?, ?, ?)",
                           (m.number, m.name, utc_now_iso()))

    def _pending(self, db: sqlite3.Connection) -> list:
        applied = {n for (n,) in db.execute("SELECT number FROM _migrations")}
        known = {m.number for m in MIGRATIONS}
        newer = sorted(applied - known)
        if newer:
            raise StoreError(f"{self.path} has schema migration(s) {newer} from a newer codesign; "
                             "upgrade codesign to read it, or point CODESIGN_HOME elsewhere")
        return [m for m in MIGRATIONS if m.number not in applied]

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the measurement database {self.path} is closed; open a new RecordStore")
        return self._db

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"{action} {self.path}: still locked by another process after "
                                 f"{self.timeout_s:g} s; retry when the other codesign finishes") from exc
            raise StoreError(f"{action} {self.path}: {exc}; check the file and its directory are "
                             "writable, or " + _fix_hint(self.path)) from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{action} {self.path}: {exc} (the database is corrupt); "
                             + _fix_hint(self.path)) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the write lock from the start."""
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecordStore({str(self.path)!r})"

    # -- records -----------------------------------------------------------------------------

    def append(self, record: CostRecord, *, session_id: str | None = None,
               progress_key: str | None = None) -> bool:
        """Insert one record; True if new, False if that ``record_id`` was already stored.

        With ``session_id``, the record's candidate (or ``progress_key``, e.g. one pass of an
        interleaved measurement) is marked done in that profile session in the same transaction.
        """
        return self.append_many([record], session_id=session_id, progress_key=progress_key) == 1

    def append_many(self, records: Iterable[CostRecord], *, session_id: str | None = None,
                    progress_key: str | None = None) -> int:
        """Insert records in one transaction; returns how many were new."""
        rows = [(r, _to_row(r)) for r in records]
        with self._guard("write a record to"), self._write() as db:
            added = 0
            for record, row in rows:
                added += db.execute(_INSERT, row).rowcount
                if session_id is not None:
                    self._mark(db, session_id, progress_key or record.candidate_id)
            return added

    def records(
        self,
        target: str | None = None,
        candidate_id: str | None = None,
        emulated: bool | None = None,
        run_id: str | None = None,
        *,
        precision: str | None = None,
        target_hash: str | None = None,
        board_hash: str | None = None,
        settled: bool = False,
    ) -> list[CostRecord]:
        """Records matching every given filter, oldest first; with ``settled``, none from an
        unfinished profile session (an interrupted candidate has fewer samples than asked).
        ``board_hash`` selects every board of one kind and spec, whatever its name."""
        if board_hash == "":
            raise ValueError("board_hash '' means unknown; pass a TargetSpec.board_hash")
        clauses, params = [], []
        for column, value in (("target", target), ("candidate_id", candidate_id), ("run_id", run_id),
                              ("precision", precision), ("target_hash", target_hash),
                              ("board_hash", board_hash)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if emulated is not None:
            clauses.append("emulated = ?")
            params.append(int(emulated))
        if settled:
            clauses.append(_SETTLED)
        sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY rowid"
        with self._guard("read"):
            rows = self._conn.execute(sql, params).fetchall()
        return [_from_row(r) for r in rows]

    def tag_board(self, target_hash: str, board_hash: str) -> int:
        """Give the records made with spec ``target_hash`` that lack a board hash (made before
        records carried one) ``board_hash``; returns how many. The spec hash determines the
        board hash, so this is exact; it writes only when such records exist."""
        if not target_hash or not board_hash:
            return 0
        sql = "FROM records WHERE target_hash = ? AND board_hash = ''"
        with self._guard("read"):
            if self._conn.execute(f"SELECT 1 {sql} LIMIT 1", (target_hash,)).fetchone() is None:
                return 0
        with self._guard("write board hashes to"), self._write() as db:
            return db.execute("UPDATE records SET board_hash = ? WHERE target_hash = ? AND board_hash = ''",
                              (board_hash, target_hash)).rowcount

    def measured_candidates(
        self, target: str, *, emulated: bool | None = None, precision: str | None = None,
        threads: int | None = None, settled: bool = False,
    ) -> set[str]:
        """Ids of the candidates with at least one record on ``target`` (``settled``: outside any
        unfinished profile session)."""
        sql, params = "SELECT DISTINCT candidate_id FROM records WHERE target = ?", [target]
        if emulated is not None:
            sql += " AND emulated = ?"
            params.append(int(emulated))
        if precision is not None:
            sql += " AND precision = ?"
            params.append(precision)
        if threads is not None:
            sql += " AND threads = ?"
            params.append(int(threads))
        if settled:
            sql += " AND " + _SETTLED
        with self._guard("read"):
            return {r[0] for r in self._conn.execute(sql, params)}

    def count(self) -> int:
        with self._guard("read"):
            return int(self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def __len__(self) -> int:
        return self.count()

    # -- profile sessions (resume) -----------------------------------------------------------

    def begin_session(self, session_id: str, *, target: str, run_id: str = "",
                      planned: Sequence[str] = ()) -> set[str]:
        """Start, or find again, a profile session; returns the candidate ids already done."""
        with self._guard("write a profile session to"), self._write() as db:
            db.execute(
                "INSERT INTO profile_sessions (session_id, target, run_id, created_at, planned_json) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(session_id) DO NOTHING",
                (session_id, target, run_id, utc_now_iso(), json.dumps(list(planned))))
        return self.done_candidates(session_id)

    @staticmethod
    def _mark(db: sqlite3.Connection, session_id: str, candidate_id: str) -> None:
        db.execute("INSERT INTO profile_progress (session_id, candidate_id, done_at) VALUES (?, ?, ?) "
                   "ON CONFLICT(session_id, candidate_id) DO NOTHING",
                   (session_id, candidate_id, utc_now_iso()))

    def mark_done(self, session_id: str, candidate_id: str) -> None:
        """Mark a candidate done without a record (e.g. it failed to export and is skipped)."""
        with self._guard("write progress to"), self._write() as db:
            self._mark(db, session_id, candidate_id)

    def done_candidates(self, session_id: str) -> set[str]:
        with self._guard("read"):
            rows = self._conn.execute(
                "SELECT candidate_id FROM profile_progress WHERE session_id = ?", (session_id,))
            return {r[0] for r in rows}

    def finish_session(self, session_id: str) -> None:
        with self._guard("write a profile session to"), self._write() as db:
            db.execute("UPDATE profile_sessions SET finished_at = ? WHERE session_id = ?",
                       (utc_now_iso(), session_id))

    def unfinished_sessions(self, *, target: str | None = None, run_id: str | None = None) -> list[dict]:
        """Profile sessions begun and never finished (see :meth:`session`), oldest first."""
        sql, params = "SELECT session_id FROM profile_sessions WHERE finished_at IS NULL", []
        for column, value in (("target", target), ("run_id", run_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        with self._guard("read"):
            ids = [r[0] for r in self._conn.execute(sql + " ORDER BY rowid", params)]
        return [s for s in map(self.session, ids) if s is not None]

    def session_records(self, session_id: str) -> list[CostRecord]:
        """The records a profile session made, oldest first."""
        sql = _SELECT + " WHERE json_extract(host_json, '$.profile_session') = ? ORDER BY rowid"
        with self._guard("read"):
            rows = self._conn.execute(sql, (session_id,)).fetchall()
        return [_from_row(r) for r in rows]

    def session(self, session_id: str) -> dict | None:
        """``{session_id, target, run_id, created_at, finished_at, planned, done}`` or None."""
        with self._guard("read"):
            row = self._conn.execute(
                "SELECT session_id, target, run_id, created_at, finished_at, planned_json "
                "FROM profile_sessions WHERE session_id = ?", (session_id,)).fetchone()
        if row is None:
            return None
        keys = ("session_id", "target", "run_id", "created_at", "finished_at")
        out = dict(zip(keys, row[:5], strict=True))
        out["planned"] = json.loads(row[5])
        out["done"] = sorted(self.done_candidates(session_id))
        return out

    # -- maintenance -------------------------------------------------------------------------

    def migrations(self) -> list[tuple[int, str, str]]:
        """Applied migrations as (number, name, applied_at)."""
        with self._guard("read"):
            return [tuple(r) for r in self._conn.execute(
                "SELECT number, name, applied_at FROM _migrations ORDER BY number")]

    def check(self) -> None:
        """Run SQLite's integrity check; StoreError unless it says ok."""
        with self._guard("check"):
            rows = [r[0] for r in self._conn.execute("PRAGMA integrity_check")]
        if rows != ["ok"]:
            raise StoreError(f"{self.path} failed its integrity check ({'; '.join(rows[:5])}); "
                             + _fix_hint(self.path))
