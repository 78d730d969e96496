"""The measurement database: concurrency, crash consistency, resume, migrations, bad files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_helpers import candidate, fixed_id, make_record

import toolchain.store.db as dbmod
from toolchain.errors import StoreError
from toolchain.store import RecordStore, default_db_path
from toolchain.store.migrations import MIGRATIONS

WRITER = Path(__file__).with_name("store_writer.py")


def _writer(db: Path, name: str, n: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(db), name, str(n), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_default_path_follows_codesign_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / "codesign.db"
    with RecordStore() as store:
        assert store.path == tmp_path / "home" / "codesign.db"
        mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert (tmp_path / "home" / "codesign.db").is_file()


def test_append_is_idempotent_and_round_trips(tmp_path):
    rec = make_record(emulated=True, instructions=(10, 12), predicted_latency_ms=2.5,
                      host={"cpu_model": "x", "governor": "performance"}, run_id="r1", recipe="per-channel")
    with RecordStore(tmp_path / "db.sqlite") as store:
        assert store.append(rec) is True
        assert store.append(rec) is False  # a retry after an uncertain commit
        assert store.append_many([rec, rec]) == 0
        got = store.records()
    assert got == [rec]
    assert got[0].latency_ms_samples == (1.0, 1.1, 0.9)
    assert got[0].instructions == (10, 12)
    assert got[0].emulated is True and got[0].iterations == 3


def test_filters(tmp_path):
    a, b = candidate(depth=2), candidate(depth=4, precision="int8-dynamic")
    recs = [make_record(a, target="host"), make_record(b, target="host", run_id="r2"),
            make_record(a, target="pi", emulated=True), make_record(b, target="pi")]
    with RecordStore(tmp_path / "db") as store:
        store.append_many(recs)
        assert len(store) == 4
        assert store.records() == recs
        assert store.records(target="host") == recs[:2]
        assert store.records(candidate_id=a.id) == [recs[0], recs[2]]
        assert store.records(target="pi", emulated=True) == [recs[2]]
        assert store.records(emulated=False) == [recs[0], recs[1], recs[3]]
        assert store.records(run_id="r2") == [recs[1]]
        assert store.records(precision="int8-dynamic") == [recs[1], recs[3]]
        assert store.measured_candidates("host") == {a.id, b.id}
        assert store.measured_candidates("pi", emulated=False) == {b.id}
        assert store.measured_candidates("nowhere") == set()


def test_two_concurrent_writer_processes_lose_and_duplicate_nothing(tmp_path):
    db, go, n = tmp_path / "codesign.db", tmp_path / "go", 200
    # Both create and migrate the same fresh database at the same moment, then race.
    procs = [_writer(db, name, n, "--go", str(go)) for name in ("w1", "w2")]
    time.sleep(0.3)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    expected = {fixed_id(name, i) for name in ("w1", "w2") for i in range(n)}
    with RecordStore(db) as store:
        store.check()
        ids = [r.record_id for r in store.records()]
        assert len(ids) == 2 * n
        assert set(ids) == expected
        assert [m[0] for m in store.migrations()] == [m.number for m in MIGRATIONS]
        assert len(store.records(run_id="w1")) == n == len(store.records(run_id="w2"))


def test_killed_profile_leaves_database_consistent_and_resumes(tmp_path):
    db, n, k = tmp_path / "codesign.db", 300, 3
    with RecordStore(db) as store:  # created beforehand so the poll below can read it
        pass
    proc = _writer(db, "run1", n, "--session", "s1", "--per-candidate", str(k))
    deadline = time.monotonic() + 60
    with RecordStore(db) as reader:
        while reader.count() < 30 * k:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with RecordStore(db) as store:
        store.check()
        records = store.records()
        by_cand: dict[str, int] = {}
        for r in records:  # every stored record is whole
            assert len(r.latency_ms_samples) == r.iterations == 200
            by_cand[r.candidate_id] = by_cand.get(r.candidate_id, 0) + 1
        assert set(by_cand.values()) == {k}  # a candidate's rounds commit together
        done = store.done_candidates("s1")
        assert done == set(by_cand)  # records and progress marks commit together
        assert 30 <= len(done) < n
        session = store.session("s1")
        assert session["finished_at"] is None and len(session["planned"]) == n

    rerun = _writer(db, "run1", n, "--session", "s1", "--per-candidate", str(k))
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert len(out.split()) == n - len(done)  # only the missing candidates were measured again

    with RecordStore(db) as store:
        store.check()
        records = store.records()
        assert len(records) == n * k
        assert len({r.record_id for r in records}) == n * k
        assert len(store.done_candidates("s1")) == n
        assert store.session("s1")["finished_at"] is not None


def test_session_progress_in_process(tmp_path):
    a, b = candidate(depth=1), candidate(depth=2)
    with RecordStore(tmp_path / "db") as store:
        assert store.begin_session("s", target="host", planned=[a.id, b.id]) == set()
        store.append(make_record(a), session_id="s")
        store.mark_done("s", b.id)
        assert store.begin_session("s", target="host", planned=[a.id, b.id]) == {a.id, b.id}
        assert store.done_candidates("other") == set()
        assert store.session("missing") is None


def test_migrations_apply_once_and_reopen_is_a_no_op(tmp_path):
    path = tmp_path / "codesign.db"
    with RecordStore(path) as store:
        first = store.migrations()
        store.append(make_record())
    assert [m[:2] for m in first] == [(m.number, m.name) for m in MIGRATIONS]
    with RecordStore(path) as store:
        assert store._conn.total_changes == 0  # nothing written on reopen
        assert store.migrations() == first
        assert len(store) == 1


def test_pending_migration_is_applied_to_an_old_database(tmp_path, monkeypatch):
    path = tmp_path / "codesign.db"
    monkeypatch.setattr(dbmod, "MIGRATIONS", MIGRATIONS[:1])
    old = make_record()
    with RecordStore(path) as store:
        assert [m[0] for m in store.migrations()] == [1]
        # A record as codesign wrote it at schema 1 (no input_tokens, board_hash nor op_profile yet).
        later = ("input_tokens_json", "board_hash", "op_profile_json")
        cols = [c for c in dbmod._COLUMNS if c not in later]
        row = [v for c, v in zip(dbmod._COLUMNS, dbmod._to_row(old), strict=True) if c not in later]
        store._conn.execute(f"INSERT INTO records ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row)
    monkeypatch.setattr(dbmod, "MIGRATIONS", MIGRATIONS)
    with RecordStore(path) as store:
        assert [m[0] for m in store.migrations()] == [m.number for m in MIGRATIONS]
        assert len(store) == 1
        (back,) = store.records()
        assert back.record_id == old.record_id and back.input_tokens == () and back.median_input_tokens is None
        assert back.op_profile is None
        assert store.begin_session("s", target="host") == set()
        new = make_record(record_id="new", input_tokens=(5, 9, 7))
        store.append(new)
        assert {r.record_id: r.input_tokens for r in store.records()}["new"] == (5, 9, 7)


def test_database_from_a_newer_codesign_is_refused(tmp_path):
    path = tmp_path / "codesign.db"
    with RecordStore(path) as store:
        store._conn.execute("INSERT INTO _migrations VALUES (999, 'm999_future', 'now')")
    with pytest.raises(StoreError, match=r"newer codesign.*upgrade"):
        RecordStore(path)


@pytest.mark.parametrize("content", [
    b"this is not a database at all\n" * 100,
    b"SQLite format 3\x00" + os.urandom(4096),
])
def test_corrupt_file_gives_store_error_naming_path_and_fix(tmp_path, content):
    path = tmp_path / "codesign.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        RecordStore(path)
    msg = str(info.value)
    assert str(path) in msg and "move" in msg and "CODESIGN_HOME" in msg


def test_damaged_pages_give_store_error(tmp_path):
    path = tmp_path / "codesign.db"
    with RecordStore(path) as store:
        store.append_many([make_record(samples=[1.0] * 500) for _ in range(50)])
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page:len(data) - page] = os.urandom(len(data) - 3 * page)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=str(path)):
        with RecordStore(path) as store:
            store.records()
            store.check()


def test_foreign_sqlite_database_and_directory_are_refused(tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE photos (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a codesign measurement database"):
        RecordStore(other)
    with pytest.raises(StoreError, match="is a directory"):
        RecordStore(tmp_path)


def test_closed_store_says_so(tmp_path):
    store = RecordStore(tmp_path / "db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.records()


def test_samples_are_json_text(tmp_path):
    path = tmp_path / "db"
    with RecordStore(path) as store:
        store.append(make_record(samples=[1.5, 2.5]))
    con = sqlite3.connect(path)
    (text,) = con.execute("SELECT latency_ms_samples_json FROM records").fetchone()
    con.close()
    assert json.loads(text) == [1.5, 2.5]
