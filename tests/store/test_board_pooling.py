"""Boards of one kind and spec pool their records into one cost model (issue 12, item 5).

A second identical Pi at another address (another name, another connection: the same
``TargetSpec.board_hash``) learns from the first one's measurements; a board of another spec
does not. Old databases gain the records' board hash by a forward-only migration."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest
from store_helpers import candidate, make_record
from test_cost_model import INFOS, SEQ

import toolchain.store.db as dbmod
from toolchain.config.target_spec import Connection, Estimate, TargetSpec, load_target_spec
from toolchain.flows.loop import _fit, pooled_records
from toolchain.profiling.cost_model import CostModel
from toolchain.store.db import RecordStore
from toolchain.store.migrations import MIGRATIONS

PI_A = TargetSpec(name="pi-a", kind="ssh", arch="aarch64", threads=4,
                  connection=Connection(host="10.0.0.1", user="pi"))
PI_B = replace(PI_A, name="pi-b", description="the same board, another address",
               connection=Connection(host="10.0.0.2", user="pi", port=2222))
PI_5 = replace(PI_A, name="pi-5", estimate=Estimate(gflops_per_thread=6.0))  # another board spec


class _Board:
    """What ``_fit`` needs of a target: its spec."""

    def __init__(self, spec):
        self.spec = spec


def _record(spec: TargetSpec, depth: int, latency: float):
    rec = make_record(candidate(depth=depth, max_length=64), target=spec.name, samples=(latency,) * 5,
                      threads=spec.threads, model_bytes=1_000_000 * depth, peak_rss_bytes=50_000_000)
    return replace(rec, target_hash=spec.hash, board_hash=spec.board_hash)


def test_identical_boards_share_a_board_hash_and_another_spec_does_not():
    assert PI_A.hash != PI_B.hash  # another address: another full spec
    assert PI_A.board_hash == PI_B.board_hash
    assert PI_5.board_hash != PI_A.board_hash


def test_a_second_identical_board_learns_from_the_first_ones_records(tmp_path):
    with RecordStore(tmp_path / "db.sqlite") as store:
        store.append_many([_record(PI_A, d, 2.0 * d) for d in (1, 2, 3)])
        store.append_many([_record(PI_5, d, 0.5 * d) for d in (1, 2, 3)])  # a faster board
        pooled_b = pooled_records(store, PI_B)
        pooled_5 = pooled_records(store, PI_5)
        # _fit is what the loop uses: pi-b (never measured itself) now has a measured model.
        model_b = _fit(store, _Board(PI_B), INFOS, SEQ, variants=[])
        # By name alone (before pooling) pi-b had nothing to learn from.
        assert store.records(target="pi-b") == []
    assert sorted(r.candidate_id for r in pooled_b) == sorted(candidate(depth=d).id for d in (1, 2, 3))
    assert {r.target for r in pooled_b} == {"pi-b"}  # the cost model's own target
    assert {r.host["measured_on"] for r in pooled_b} == {"pi-a"}  # where each was measured
    assert {r.board_hash for r in pooled_b} == {PI_A.board_hash}
    assert model_b.n_records == 3
    cost = model_b.predict(candidate(depth=2), 0, 0)
    assert cost.source == "measured" and cost.latency_ms == pytest.approx(4.0)  # pi-a's, not pi-5's
    # The board of another spec keeps its own records only.
    assert {r.host.get("measured_on", r.target) for r in pooled_5} == {"pi-5"}
    model_5 = CostModel.fit(pooled_5, PI_5, INFOS, SEQ)
    assert model_5.predict(candidate(depth=2), 0, 0).latency_ms == pytest.approx(1.0)


def test_a_boards_own_records_and_its_peers_are_pooled_once(tmp_path):
    with RecordStore(tmp_path / "db.sqlite") as store:
        store.append_many([_record(PI_A, 1, 2.0), _record(PI_B, 2, 4.0)])
        got = pooled_records(store, PI_A)
    assert sorted((r.candidate_id, r.host.get("measured_on", "own")) for r in got) == sorted(
        [(candidate(depth=1).id, "own"), (candidate(depth=2).id, "pi-b")])


def test_an_old_database_gets_board_hashes_where_a_target_file_knows_the_spec(tmp_path, monkeypatch):
    host = load_target_spec("host")
    path = tmp_path / "codesign.db"
    monkeypatch.setattr(dbmod, "MIGRATIONS", MIGRATIONS[:3])
    known = replace(make_record(record_id="known"), target="host", target_hash=host.hash)
    unknown = replace(make_record(record_id="unknown"), target="gone", target_hash="f" * 16)
    with RecordStore(path) as store:
        # Records as codesign wrote them before migration 4 (no board_hash column, nor later ones).
        later = ("board_hash", "op_profile_json")
        cols = [c for c in dbmod._COLUMNS if c not in later]
        for rec in (known, unknown):
            row = [v for c, v in zip(dbmod._COLUMNS, dbmod._to_row(rec), strict=True) if c not in later]
            store._conn.execute(f"INSERT INTO records ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                row)
    monkeypatch.setattr(dbmod, "MIGRATIONS", MIGRATIONS)
    with RecordStore(path) as store:
        assert [m[0] for m in store.migrations()] == [m.number for m in MIGRATIONS]
        by_id = {r.record_id: r for r in store.records()}
        assert by_id["known"].board_hash == host.board_hash
        assert by_id["unknown"].board_hash == ""  # its spec is unknown now: it serves its name only
        assert [r.record_id for r in store.records(board_hash=host.board_hash)] == ["known"]
        # Once a spec with that hash is profiled again, its records are tagged exactly.
        gone = replace(PI_A, name="gone")
        assert store.tag_board("f" * 16, gone.board_hash) == 1
        assert store.tag_board("f" * 16, gone.board_hash) == 0  # nothing left to tag: no write
        assert {r.record_id for r in store.records(board_hash=gone.board_hash)} == {"unknown"}
    with sqlite3.connect(path) as db:  # the column is real, with an index for the pooling query
        cols = [r[1] for r in db.execute("PRAGMA table_info(records)")]
        idx = [r[1] for r in db.execute("PRAGMA index_list(records)")]
    assert "board_hash" in cols and "idx_records_board" in idx


def test_an_empty_board_hash_is_not_a_pool(tmp_path):
    with RecordStore(tmp_path / "db.sqlite") as store, pytest.raises(ValueError, match="unknown"):
        store.records(board_hash="")
