"""``codesign profile --op-profile``: the agent profiles the kernels on the target after its timed
samples, the host places them in layers, the record keeps the profile and ``codesign results
--op-profile`` shows it with the slope check. Structure only: no timing is compared."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolchain.bundle.agent import compact_profile
from toolchain.cli import main
from toolchain.profiling.op_profile import EMBEDDINGS, HEAD
from toolchain.profiling.records import CostRecord
from toolchain.search.fit import SavedHead
from toolchain.store.db import RecordStore, default_db_path


def _deepest(run_dir: Path) -> tuple[str, int]:
    heads = [SavedHead.load(p).candidate for p in (run_dir / "heads").glob("*.safetensors")]
    best = max(heads, key=lambda c: (c.depth, c.id))
    return best.id, best.depth


def _profile(run_dir: Path, *extra: str):
    return CliRunner().invoke(main, ["profile", "--target", "host", "--run-dir", str(run_dir), "--precision",
                                     "fp32", "--iterations", "2", "--warmup", "0", "--passes", "1", *extra])


def test_host_profile_with_op_profile_stores_every_layer_and_results_show_it(single_combination_run):
    cid, depth = _deepest(single_combination_run)
    assert depth >= 1
    res = _profile(single_combination_run, "--candidate", cid, "--op-profile")
    assert res.exit_code == 0, res.output
    assert f"over {depth} layer(s); 'codesign results --op-profile'" in res.output
    with RecordStore() as store:
        (rec,) = store.records(target="host")  # read back from the store, not the object made
    prof = rec.op_profile
    assert rec.n_samples == 2  # the profiled pass adds no latency sample
    layers = [g for g in prof["by_layer"] if g.startswith("layer.")]
    assert layers == [f"layer.{i}" for i in range(depth)] and prof["depth"] == depth
    assert list(prof["by_layer"])[0] == EMBEDDINGS and HEAD in prof["by_layer"]  # order survives the store
    assert abs(sum(v["share"] for v in prof["by_layer"].values()) - 1) <= 1e-6
    assert abs(sum(v["share"] for v in prof["by_op"].values()) - 1) <= 1e-6
    assert prof["attribution"] == "host graph" and prof["unplaced_by_graph"] == 0  # same ORT both sides
    assert prof["kernels_per_inference"] == [prof["graph_nodes"]] * 2
    assert prof["per_inference_us"] > 0 and prof["inferences"] % 2 == 0
    assert prof["backbone"]["n_layers"] >= depth
    # Tokens are the job's real lengths, as the timed samples saw them.
    assert min(rec.input_tokens) <= prof["tokens_median"] <= max(rec.input_tokens)

    out = CliRunner().invoke(main, ["results", "--op-profile"])
    assert out.exit_code == 0, out.output
    assert f"{cid} fp32 on host" in out.output and "layer.0" in out.output and "MatMul" in out.output
    # One measured candidate: too few for a fitted law (3), so the analytic one scaled by its ratio.
    assert "slope check (ratio law, " in out.output and "ms per layer" in out.output
    listed = CliRunner().invoke(main, ["results"])
    assert "carry an op profile" in listed.output
    # The run's report shows it too, from the leaderboard's copy.
    board = json.loads((single_combination_run / "leaderboard.json").read_text())
    assert board["op_profiles"]["host"][rec.candidate_id]["by_layer"] == prof["by_layer"]
    report = (single_combination_run / "report.md").read_text()
    assert "## Where the time goes (ONNX Runtime profile)" in report
    section = report.split("## Where the time goes", 1)[1]
    assert f"`{rec.candidate_id}` on host" in section and all(f"layer.{i}" in section for i in range(depth))


def test_op_profile_refused_without_candidate_and_on_a_microcontroller(single_combination_run):
    res = _profile(single_combination_run, "--op-profile")
    assert res.exit_code != 0 and "--op-profile needs --candidate" in res.output
    res = CliRunner().invoke(main, ["profile", "--target", "stm32f4-disco", "--run-dir", str(single_combination_run),
                                    "--candidate", _deepest(single_combination_run)[0], "--op-profile"])
    assert res.exit_code != 0 and "int8 heads" in res.output
    assert not default_db_path().exists()  # refused before anything was opened


def test_record_without_op_profile_loads_and_old_database_migrates(tmp_path):
    rec = CostRecord(target="host", target_hash="h", candidate_id="c", candidate={"backbone": "b"},
                     precision="fp32", runtime="onnxruntime", latency_ms_samples=(1.0,))
    old = {k: v for k, v in rec.to_dict().items() if k != "op_profile"}  # written before it existed
    assert CostRecord.from_dict(old).op_profile is None
    with pytest.raises(ValueError, match="op_profile"):
        CostRecord(**{**old, "op_profile": [1, 2]})
    db = tmp_path / "c.db"
    with RecordStore(db) as store:
        store.append(rec)
    with sqlite3.connect(db) as con:  # as a database before migration 5 holds it
        con.execute("ALTER TABLE records DROP COLUMN op_profile_json")
        con.execute("DELETE FROM _migrations WHERE number = 5")
    with RecordStore(db) as store:
        (back,) = store.records()
    assert back.op_profile is None and back.record_id == rec.record_id


def test_compact_profile_groups_kernels_by_run_and_drops_warmup():
    def node(name, ts, dur, op="MatMul"):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 50} for t in (0, 100, 200)]
    events += [node("/a", 1, 3), node("/b", 5, 4, "Add"),  # warmup run
               node("/a", 101, 7), node("/b", 110, 2, "Add"), node("/a", 201, 9),
               node("/stray", 170, 1), {"cat": "Node", "name": "/a_fence_before", "ts": 102, "dur": 0}]
    out = compact_profile(json.loads(json.dumps(events)), skip=1)
    assert out["nodes"] == [["/a", "MatMul"], ["/b", "Add"]]
    assert out["runs"] == [[[0, 7], [1, 2]], [[0, 9]]]


def _record(depth: int, latency_ms: float, tokens: int, spec, op_profile=None) -> CostRecord:
    from toolchain.search.candidate import Candidate

    cand = Candidate(backbone="tiny", layers=(depth,), combine="single", pooling="mean", head="softmax",
                     head_size=0, precision="fp32", max_length=64)
    return CostRecord(target=spec.name, target_hash=spec.hash, candidate_id=cand.id, candidate=cand.to_dict(),
                      precision="fp32", runtime="onnxruntime", latency_ms_samples=(latency_ms,) * 4,
                      input_tokens=(tokens,) * 4, threads=spec.threads, op_profile=op_profile)


def test_slope_check_of_a_record_uses_the_fitted_per_layer_slope():
    from dataclasses import asdict

    from toolchain.config.target_spec import load_target_spec
    from toolchain.features.backbone import BackboneInfo
    from toolchain.profiling.op_profile_target import record_slope_check
    from toolchain.search.cost import layer_flops

    spec = load_target_spec("host")
    info = BackboneInfo(n_layers=4, hidden=32, intermediate=64, heads=2, vocab=1000, max_positions=128)
    tokens = 12
    per_layer = 0.25  # ms: the records lie on latency = 0.5 + 0.25 * depth exactly
    prof = {"model": "model.onnx", "tokens_median": float(tokens), "backbone": asdict(info),
            "by_layer": {EMBEDDINGS: {"mean_us": 10.0, "median_us": 10.0},
                         "layer.0": {"mean_us": 400.0, "median_us": 380.0},
                         "layer.1": {"mean_us": 600.0, "median_us": 620.0}}}
    records = [_record(d, 0.5 + per_layer * d, tokens, spec, prof if d == 2 else None) for d in (1, 2, 3, 4)]
    check, why = record_slope_check(records[1], records, spec)
    assert why == "" and check["law_mode"] == "fit"
    # The law's slope is per FLOP (x = depth x layer_flops + head): times one layer's FLOPs, 0.25 ms.
    assert layer_flops(info, float(tokens)) > 0
    assert check["model_ms_per_layer"] == pytest.approx(per_layer, rel=1e-3)
    assert check["profile_ms_per_layer"] == pytest.approx(0.5) and check["ratio"] == pytest.approx(2.0, rel=1e-3)
    assert check["ratio_median"] == pytest.approx(2.0, rel=1e-3)
    # No backbone shape kept: nothing to check against, and the reason is given.
    bare = _record(2, 1.0, tokens, spec, {k: v for k, v in prof.items() if k != "backbone"})
    assert record_slope_check(bare, records, spec) == (None, "the profile keeps no backbone shape")
    # Too few candidates for a fit: the ratio law still gives a per-layer cost.
    assert record_slope_check(records[1], records[1:2], spec)[0]["law_mode"] == "ratio"


def test_agent_refuses_a_bad_op_profile_request_before_timing():
    from toolchain.bundle.agent import AgentError, op_profile_spec

    assert op_profile_spec({"runtime": "onnxruntime"}) is None
    assert op_profile_spec({"runtime": "onnxruntime", "op_profile": {"runs": 3, "warmup": 0}}) == (3, 0)
    for bad in ({"runs": 0}, {"runs": "2"}, {"warmup": -1}, [2]):
        with pytest.raises(AgentError, match="op_profile") as exc:
            op_profile_spec({"runtime": "onnxruntime", "op_profile": bad})
        assert exc.value.status == 2
    with pytest.raises(AgentError, match="needs onnxruntime"):
        op_profile_spec({"runtime": "tflite", "op_profile": {"runs": 1}})
