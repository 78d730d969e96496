"""Issue 11 (profiling): a board's int8 outputs judged against the fp32 reference, not the
host's integer kernels; an interrupted loop resumes its own session; the plan is checked before
anything is measured; one percentile definition; typed quantization errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from profile_helpers import ITERATIONS, PASSES, check_resumed, kill_after_first_pass, profile_argv

from toolchain.boards.registry import open_target
from toolchain.errors import (
    ConfigError,
    ExportError,
    QuantizationError,
    RunDirError,
    ValidationMismatchError,
)
from toolchain.export.tolerances import ON_TARGET, TOLERANCES
from toolchain.flows.loop import co_design, measured_summary
from toolchain.profiling import runner
from toolchain.profiling.records import CostRecord
from toolchain.profiling.runner import judge_outputs, profile_candidates, validate_request
from toolchain.profiling.stats import record_stats, summarize
from toolchain.store.db import RecordStore, default_db_path


@pytest.fixture(scope="module")
def run_template(tmp_path_factory, tiny_bert, toy_spec) -> Path:
    """One tiny run per module; each test profiles its own copy."""
    from toolchain.flows.run import RunConfig, run

    base = tmp_path_factory.mktemp("hardening-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODESIGN_HOME", str(base / "home"))
        mp.setenv("CODESIGN_NO_PROGRESS", "1")
        run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=4,
                      heads=(("softmax", 3),), run_dir=str(base / "run")))
    return base / "run"


@pytest.fixture()
def tiny_run(run_template, codesign_home) -> Path:
    dest = codesign_home / "runs" / "tiny"
    shutil.copytree(run_template, dest)
    return dest


def _heads(run_dir: Path) -> list[str]:
    return sorted(p.stem for p in (run_dir / "heads").glob("*.safetensors"))


# -- 1. int8 outputs on a target: judged against fp32, at the stated tolerance ------------------

def _probs(rng, n=32, c=3):
    logits = rng.normal(size=(n, c)) * 3
    e = np.exp(logits - logits.max(1, keepdims=True))
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def _shift(probs, by):
    """Move ``by`` of probability from each row's runner-up to its argmax (rows stay valid)."""
    out = probs.copy()
    rows = np.arange(len(out))
    top, second = out.argmax(1), np.argsort(out, 1)[:, -2]
    take = np.minimum(by, out[rows, second])
    out[rows, top] += take
    out[rows, second] -= take
    return out


def test_judge_passes_cross_isa_int8_and_fails_a_broken_artefact():
    rng = np.random.default_rng(0)
    fp32 = _probs(rng)
    host_int8 = _shift(fp32, 0.02)  # the artefact's own int8 drift on the host
    board_int8 = _shift(host_int8, 0.033)  # aarch64 against a VNNI host: 0.033 apart, same decisions
    assert float(np.abs(board_int8 - host_int8).max()) == pytest.approx(0.033, abs=1e-3)
    diff, agree = judge_outputs(board_int8, fp32, "int8-dynamic", "board")
    assert diff <= ON_TARGET["int8-dynamic"].max_abs_prob and agree == 1.0
    # A broken artefact: the decisions flip.
    broken = board_int8[:, ::-1].copy()
    with pytest.raises(ValidationMismatchError, match="argmax agreement") as exc:
        judge_outputs(broken, fp32, "int8-dynamic", "target 'rpi4', candidate x")
    assert "\n" not in str(exc.value) and "fp32 reference" in str(exc.value)
    # fp32 stays at float rounding.
    with pytest.raises(ValidationMismatchError):
        judge_outputs(fp32 + 1e-3, fp32, "fp32", "board")


def test_on_target_tolerance_is_stated_per_precision():
    for p, tol in TOLERANCES.items():
        assert p in ON_TARGET
        if p != "fp32":  # the export check's allowance plus the integer kernels' cross-ISA spread
            assert ON_TARGET[p].max_abs_prob > tol.max_abs_prob
            assert ON_TARGET[p].min_argmax_agreement == tol.min_argmax_agreement


def _passing_int8_head(run_dir: Path) -> str:
    from toolchain.export.artefact import export_artefact

    for base in _heads(run_dir):
        _, meta = export_artefact(run_dir, base, "int8-dynamic")
        if meta["validation"]["passed"]:
            return base
    pytest.skip("no int8 artefact of the tiny run passes its export check")


def _board(target, change):
    """The host's agent, with its int8 outputs changed as another CPU (or a broken one) would."""
    real = target.run_agent

    def run_agent(job_dir, **kw):
        report = real(job_dir, **kw)
        report["outputs"] = change(np.asarray(report["outputs"], dtype=np.float32)).tolist()
        return report

    target.run_agent = run_agent
    return target


def test_board_int8_is_judged_against_fp32_not_the_hosts_int8_kernels(tiny_run):
    base = _passing_int8_head(tiny_run)
    board = _board(open_target("host"), lambda out: _shift(out, 0.033))  # VNNI vs aarch64
    with RecordStore() as store:
        (rec,) = profile_candidates(tiny_run, board, store, [base], ("int8-dynamic",), warmup=1, iterations=4)
    assert rec.host["outputs_reference"] == "fp32 artefact on the host"
    assert float(rec.host["outputs_max_abs_diff_vs_fp32"]) <= ON_TARGET["int8-dynamic"].max_abs_prob
    assert float(rec.host["outputs_argmax_agreement_vs_fp32"]) == 1.0


def test_broken_int8_on_a_board_fails_and_records_nothing(tiny_run):
    base = _passing_int8_head(tiny_run)
    board = _board(open_target("host"), lambda out: out[:, ::-1].copy())
    with RecordStore() as store:
        with pytest.raises(ValidationMismatchError, match="not functionally right"):
            profile_candidates(tiny_run, board, store, [base], ("int8-dynamic",), warmup=1, iterations=4)
        assert store.records() == []


# -- 5. typed quantization errors --------------------------------------------------------------

def test_only_a_quantization_error_skips_a_candidate(tiny_run, monkeypatch):
    base = _heads(tiny_run)[0]
    # Worded without "quantization": the type decides, not the message.
    monkeypatch.setattr(runner, "measure_one", lambda *a, **k: (_ for _ in ()).throw(
        QuantizationError("candidate x: no int8-dynamic recipe stays within tolerance")))
    with RecordStore() as store:
        assert profile_candidates(tiny_run, open_target("host"), store, [base], warmup=1, iterations=2) == []
    monkeypatch.setattr(runner, "measure_one", lambda *a, **k: (_ for _ in ()).throw(
        ExportError("the quantization tool crashed")))
    with RecordStore() as store, pytest.raises(ExportError, match="crashed"):
        profile_candidates(tiny_run, open_target("host"), store, [base], warmup=1, iterations=3)


def test_an_int8_artefact_outside_its_own_tolerance_is_skipped_by_type(tiny_run):
    from toolchain.export.artefact import export_artefact

    failed = [b for b in _heads(tiny_run)
              if not export_artefact(tiny_run, b, "int8-dynamic")[1]["validation"]["passed"]]
    if not failed:
        pytest.skip("every int8 artefact of the tiny run passes its export check")
    with pytest.raises(QuantizationError):
        runner.measure_one(open_target("host"), tiny_run, failed[0], "int8-dynamic", ["x"],
                           runner.ProfilePlan(tiny_run, failed), tiny_run.name)


# -- 3. the plan is checked before anything is measured ----------------------------------------

def _nothing_written(run_dir: Path, before: set[str]) -> None:
    assert {str(p.relative_to(run_dir)) for p in run_dir.rglob("*")} == before
    assert not default_db_path().exists() or RecordStore().records() == []


@pytest.mark.parametrize("bad, error, match", [
    ({"precisions": ("int4",)}, ConfigError, "--precision 'int4'"),
    ({"passes": 0}, ConfigError, "--passes 0"),
    ({"top_k": 0}, ConfigError, "--top 0"),
    ({"iterations": 2, "passes": 3}, ConfigError, "--iterations 2"),
])
def test_bad_loop_options_fail_before_measuring(tiny_run, bad, error, match):
    before = {str(p.relative_to(tiny_run)) for p in tiny_run.rglob("*")}
    kw = {"precisions": ("fp32",), "rounds": 1, "top_k": 1, "warmup": 1, "iterations": 3, **bad}
    with RecordStore() as store, pytest.raises(error, match=match) as exc:
        co_design(tiny_run, open_target("host"), store, **kw)
    assert "\n" not in str(exc.value)
    _nothing_written(tiny_run, before)


def test_selected_id_not_among_candidates_fails_before_measuring(tiny_run):
    lb = tiny_run / "leaderboard.json"
    board = json.loads(lb.read_text())
    board["selected"] = "0123456789ab"
    lb.write_text(json.dumps(board))
    before = {str(p.relative_to(tiny_run)) for p in tiny_run.rglob("*")}
    with RecordStore() as store, pytest.raises(RunDirError, match="0123456789ab"):
        co_design(tiny_run, open_target("host"), store, rounds=1, top_k=1, precisions=("fp32",),
                  warmup=1, iterations=3)
    _nothing_written(tiny_run, before)
    with pytest.raises(RunDirError, match="0123456789ab"):
        validate_request(tiny_run, precisions=("fp32",))


def test_unknown_candidate_id_fails_before_measuring(tiny_run):
    with RecordStore() as store, pytest.raises(RunDirError, match="'feedfacefeed' has no saved head"):
        profile_candidates(tiny_run, open_target("host"), store, [_heads(tiny_run)[0], "feedfacefeed"])
    assert not (tiny_run / "artefacts").exists()


# -- 4. one p10/p90 definition -----------------------------------------------------------------

def test_profile_and_results_report_the_same_spread():
    from toolchain.cli_results import render_csv

    samples = [float(x) for x in range(1, 11)]  # truncated indices and interpolation disagree here
    rec = CostRecord(target="host", target_hash="h", candidate_id="c", candidate={}, precision="fp32",
                     runtime="onnxruntime", latency_ms_samples=samples)
    loop = measured_summary([rec])  # what `codesign profile` reports
    results = record_stats(rec)  # what `codesign results` reports
    assert loop["spread_ms_p10_p90"] == [results.p10_ms, results.p90_ms] == [1.9, 9.1]
    assert loop["latency_ms_median"] == results.median_ms
    row = render_csv([rec]).splitlines()[1]
    assert f",{results.p90_ms}," in row
    # Pooled over passes, still the same definition.
    half = [CostRecord(target="host", target_hash="h", candidate_id="c", candidate={}, precision="fp32",
                       runtime="onnxruntime", latency_ms_samples=s) for s in (samples[:5], samples[5:])]
    st = summarize(samples)
    assert measured_summary(half)["spread_ms_p10_p90"] == [st.p10_ms, st.p90_ms]


# -- 2. an interrupted loop resumes its own session ---------------------------------------------

def test_killed_loop_resumes_its_session_and_measures_only_what_is_missing(tiny_run, codesign_home):
    env = dict(os.environ, CODESIGN_HOME=str(codesign_home), CODESIGN_NO_PROGRESS="1")
    argv = profile_argv(tiny_run)
    planned, done = kill_after_first_pass(argv, env)
    with RecordStore() as store:
        store.check()
        before = store.records(target="host")
        # Killed after pass 1: nothing of that session counts as measured yet.
        assert store.records(target="host", settled=True) == []
    assert all(r.n_samples == ITERATIONS // PASSES for r in before)
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    with RecordStore() as store:
        after = store.records(target="host")
        assert store.unfinished_sessions() == []
    check_resumed(planned, done, before, after)
    summary = json.loads((tiny_run / "loop-host.json").read_text())
    for v in summary["variants"]:
        if "measured" in v:
            assert v["measured"]["n_samples"] == ITERATIONS and v["measured"]["n_records"] == PASSES


@pytest.mark.slow
def test_emulated_rpi4_int8_passes_on_this_host_whatever_its_int8_kernels(tiny_run):
    """The real path: the emulated Pi (aarch64 onnxruntime under qemu-user) judged on this host,
    whether or not it has AVX-512 VNNI. Needs a prebuilt rootfs (CODESIGN_ROOTFS_CACHE, as
    tests/ssh builds it)."""
    from toolchain.boards.emulation import DEFAULT_ROOTFS

    cache = os.environ.get("CODESIGN_ROOTFS_CACHE")
    if not cache or not (Path(cache) / DEFAULT_ROOTFS / ".codesign-rootfs.json").is_file():
        pytest.skip("no prebuilt arm64 rootfs; set CODESIGN_ROOTFS_CACHE (see tests/ssh/conftest.py)")
    base = _passing_int8_head(tiny_run)
    target = open_target("rpi4", emulate=True)
    with RecordStore() as store:
        records = profile_candidates(tiny_run, target, store, [base], ("fp32", "int8-dynamic"),
                                     warmup=1, iterations=2)
    assert {r.precision for r in records} == {"fp32", "int8-dynamic"}
    for r in records:
        assert r.emulated and r.host["machine"] == "aarch64"
        assert float(r.host["outputs_max_abs_diff_vs_fp32"]) <= ON_TARGET[r.precision].max_abs_prob
