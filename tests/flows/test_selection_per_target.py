"""One run, many boards: each target keeps its own selection, and a bundle ships its own.

The regression of issue 12: profiling a second target overwrote the first one's selection, and
``codesign bundle --target host`` then shipped the candidate chosen for the other board."""

from __future__ import annotations

import json

import pytest

from toolchain.boards.registry import open_target
from toolchain.bundle.manifest import read_manifest
from toolchain.config.target_spec import load_target_spec
from toolchain.flows.bundle import bundle_for_target
from toolchain.flows.loop import co_design
from toolchain.flows.run import RunConfig, run
from toolchain.rundir import RunDir
from toolchain.store.db import RecordStore

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_run(tiny_bert, toy_spec, codesign_home):
    run_dir = codesign_home / "runs" / "tiny"
    run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=6,
                  heads=(("softmax", 3),), run_dir=str(run_dir)))
    return run_dir


def _tight_host(tmp_path, model_mb: float):
    """A second host-like target (another name and spec hash), with a model-size budget."""
    from toolchain.paths import targets_dir

    text = (targets_dir() / "host.toml").read_text()
    text = text.replace("storage_mb = 0", f"storage_mb = {model_mb}")
    text = text.replace('description = "', 'description = "second host: ')
    path = tmp_path / "tight-host.toml"
    path.write_text(text)
    return load_target_spec(str(path))


def test_profiling_another_target_keeps_the_first_targets_selection(tiny_run, tmp_path):
    host = open_target("host")
    with RecordStore() as store:
        first = co_design(tiny_run, host, store, rounds=1, top_k=1, precisions=("fp32",),
                          warmup=1, iterations=3, passes=1)
        # A second board of another spec, whose loop explores int8 only (as a Pi's might).
        tight = open_target(_tight_host(tmp_path, 0))
        second = co_design(tiny_run, tight, store, rounds=1, top_k=1, precisions=("int8-dynamic",),
                           warmup=1, iterations=3, passes=1)
        assert first["selected"] and second["selected"]
        assert first["selected"] != second["selected"], "the budgets should pick different ones"
        run_dir = RunDir.open(tiny_run)
        assert run_dir.selection(host.spec)["candidate_id"] == first["selected"]
        assert run_dir.selection(tight.spec)["candidate_id"] == second["selected"]
        out = tmp_path / "dist"
        host_bundle = bundle_for_target(tiny_run, host, out, allow_unmeasured=True, store=store)
        tight_bundle = bundle_for_target(tiny_run, tight, out, allow_unmeasured=True, store=store)
    m_host, m_tight = read_manifest(host_bundle), read_manifest(tight_bundle)
    assert m_host["candidate_id"] == first["selected"] and m_host["target"]["name"] == "host"
    assert m_tight["candidate_id"] == second["selected"]
    assert m_host["selection_source"] == "measured"
    assert m_tight["selection_source"] in ("measured", "predicted")
    # The report lists both targets' selections.
    report = (tiny_run / "report.md").read_text()
    assert "## Selection per target" in report and tight.spec.name in report


def test_a_target_never_profiled_gets_its_own_predicted_selection(tiny_run, tmp_path):
    tight_spec = _tight_host(tmp_path, 0.0001)  # nothing fits: never fall back to host's choice
    with RecordStore() as store:
        from toolchain.errors import SearchError

        with pytest.raises(SearchError, match="fits target"):
            bundle_for_target(tiny_run, open_target(tight_spec), tmp_path / "d", store=store)
        rpi4 = open_target("rpi4")
        folder = bundle_for_target(tiny_run, rpi4, tmp_path / "d", allow_unmeasured=True,
                                   store=store)
    manifest = read_manifest(folder)
    sel = RunDir.open(tiny_run).selection(rpi4.spec)
    assert manifest["selection_source"] == "predicted" == sel["source"]
    assert manifest["candidate_id"] == sel["candidate_id"]
    shown = json.loads((tiny_run / "leaderboard.json").read_text())["selections"]
    assert {s["target"] for s in shown.values()} >= {"host", "rpi4"}
