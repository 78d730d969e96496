"""`codesign results` through click's CliRunner, on a group built here."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
from click.testing import CliRunner
from store_helpers import candidate, make_record

from toolchain.cli_results import results
from toolchain.profiling.records import CostRecord
from toolchain.store import RecordStore


@pytest.fixture
def cli():
    @click.group()
    def group() -> None:
        pass

    group.add_command(results)
    return group


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_HOME", str(tmp_path))
    a, b = candidate(depth=2), candidate(depth=5, precision="int8-dynamic")
    recs = [
        make_record(a, target="host", samples=[1.0, 2.0, 3.0], peak_rss_bytes=80 * 2**20,
                    model_bytes=9 * 2**20, predicted_latency_ms=2.2),
        make_record(b, target="host", samples=[4.0, 5.0], recipe="per-channel"),
        make_record(a, target="pi", samples=[10.0], emulated=True),
    ]
    with RecordStore() as store:
        store.append_many(recs)
    return tmp_path, recs


def _run(cli, *args):
    res = CliRunner().invoke(cli, ["results", *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_json_has_the_required_fields_and_round_trips(cli, home):
    _, recs = home
    data = json.loads(_run(cli, "--format", "json").stdout)
    assert len(data) == 3
    for key in ("target", "candidate_id", "precision", "emulated", "latency_ms_samples",
                "peak_rss_bytes", "model_bytes", "recorded_at"):
        assert all(key in d for d in data)
    assert [CostRecord.from_dict(d) for d in data] == recs


def test_filters(cli, home):
    _, recs = home
    ids = lambda res: [d["record_id"] for d in json.loads(res.stdout)]  # noqa: E731
    assert ids(_run(cli, "--format", "json", "--target", "host")) == [r.record_id for r in recs[:2]]
    assert ids(_run(cli, "--format", "json", "--emulated")) == [recs[2].record_id]
    assert ids(_run(cli, "--format", "json", "--real")) == [r.record_id for r in recs[:2]]
    cid = recs[0].candidate_id
    assert ids(_run(cli, "--format", "json", "--candidate", cid)) == [recs[0].record_id, recs[2].record_id]
    assert ids(_run(cli, "--format", "json", "--candidate", cid[:6], "--target", "pi")) == [recs[2].record_id]


def test_table_shows_derived_median_and_p90(cli, home):
    res = _run(cli, "--target", "host")
    lines = res.stdout.splitlines()
    assert "median ms" in lines[0] and "p90 ms" in lines[0]
    assert len(lines) == 4  # header, rule, two records
    assert "2.000" in lines[2] and "2.800" in lines[2]  # median and p90 of 1, 2, 3
    assert "80.0" in lines[2] and "2.200" in lines[2]
    assert "per-channel" in lines[3]


def test_csv(cli, home):
    rows = list(csv.DictReader(io.StringIO(_run(cli, "--format", "csv").stdout)))
    assert len(rows) == 3
    assert json.loads(rows[0]["latency_ms_samples"]) == [1.0, 2.0, 3.0]
    assert float(rows[0]["latency_ms_median"]) == 2.0
    assert rows[2]["emulated"] == "1"


def test_no_database_yet(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_HOME", str(tmp_path / "empty"))
    assert json.loads(_run(cli, "--format", "json").stdout) == []
    res = _run(cli)
    assert "does not exist" in res.stderr and res.stdout == ""
    assert not (tmp_path / "empty").exists()  # listing does not create a database


def test_explicit_db_and_no_match(cli, home, tmp_path):
    res = _run(cli, "--db", str(tmp_path / "codesign.db"), "--target", "nowhere")
    assert "match" in res.stderr


def test_corrupt_database_raises_store_error_for_the_main_cli_to_report(cli, tmp_path):
    from toolchain.errors import StoreError

    bad = tmp_path / "codesign.db"
    bad.write_text("garbage" * 100)
    res = CliRunner().invoke(cli, ["results", "--db", str(bad)])
    assert isinstance(res.exception, StoreError) and str(bad) in str(res.exception)
