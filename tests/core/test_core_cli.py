"""The command line through click's runner: the main job's run directory, two backbones searched
together, errors as one line and an exit code, --help and --version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolchain import __version__
from toolchain.cli import main
from toolchain.search.candidate import Candidate

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CANDIDATE_FIELDS = {"id", "depth", "layers", "combine", "pooling", "head", "precision", "max_length",
                    "val_acc", "cost", "pareto", "feasible"}
COST_FIELDS = {"latency_ms", "model_bytes", "source", "emulated"}


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def tiny_run(tiny_bert, toy_spec, tmp_path_factory):
    """One `codesign run` with the tiny BERT on the toy set, shared by the checks below."""
    run_dir = tmp_path_factory.mktemp("run") / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("CODESIGN_HOME", str(run_dir.parent / "home"))
    mp.setenv("CODESIGN_NO_PROGRESS", "1")
    try:
        result = invoke("run", "--model", str(tiny_bert), "--dataset", str(toy_spec),
                        "--max-candidates", "10", "--run-dir", str(run_dir))
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    return result, run_dir, json.loads((run_dir / "leaderboard.json").read_text())


def test_run_writes_the_run_directory(tiny_run):
    result, run_dir, board = tiny_run
    for name in ("leaderboard.json", "report.md", "per_layer.png", "pareto.png"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0
    for png in ("per_layer.png", "pareto.png"):
        assert (run_dir / png).read_bytes().startswith(b"\x89PNG")
    assert f"selected {board['selected']}" in result.stdout
    assert result.stderr == ""  # library code logs, it never prints (no stray progress bars)
    report = (run_dir / "report.md").read_text()
    assert board["selected"] in report and "Pareto" in report and "per_layer.png" in report


def test_leaderboard_fields(tiny_run, tiny_bert):
    _, run_dir, board = tiny_run
    assert board["model"] == "tiny" and board["dataset"] == "toy" and board["target"] == "host"
    assert board["split_sizes"] == {"train": 48, "validation": 16, "test": 16}
    # per_layer: every layer 0..L for both poolings
    assert {(r["layer"], r["pooling"]) for r in board["per_layer"]} == {(la, p) for la in range(3) for p in ("cls", "mean")}
    assert all(0.0 <= r["val_acc"] <= 1.0 for r in board["per_layer"])
    # 3 layers × 2 poolings × 3 heads single-layer candidates, plus 10 sampled combinations
    assert board["n_candidates"] == len(board["candidates"]) == 18 + 10
    ids = [c["id"] for c in board["candidates"]]
    assert len(set(ids)) == len(ids) and board["selected"] in ids
    for c in board["candidates"]:
        assert CANDIDATE_FIELDS <= set(c), CANDIDATE_FIELDS - set(c)
        assert COST_FIELDS <= set(c["cost"]) and c["cost"]["source"] == "predicted"
        assert c["depth"] == max(c["layers"]) and Candidate.from_dict(c).id == c["id"]
        if c["pareto"] or c["id"] == board["selected"]:
            assert c["test_acc"] is not None and 0.0 <= c["test_acc"] <= 1.0
            assert (run_dir / "heads" / f"{c['id']}.safetensors").is_file()
    base = board["baseline"]
    assert set(base) >= {"val_acc", "test_acc"} and base["test_acc"] is not None
    base_c = next(c for c in board["candidates"] if c["id"] == base["id"])
    assert (base_c["layers"], base_c["pooling"], base_c["head"], base_c["combine"]) == ([2], "cls", "softmax", "single")


def test_selection_follows_the_rule(tiny_run):
    _, _, board = tiny_run
    cands = board["candidates"]
    sel = next(c for c in cands if c["id"] == board["selected"])
    best = max(c["val_acc"] for c in cands if c["feasible"])
    assert sel["feasible"] and sel["pareto"]
    assert sel["val_acc"] >= best - 0.005  # the CLI's default tolerance, 0.5 points
    cheaper = [c for c in cands if c["cost"]["latency_ms"] < sel["cost"]["latency_ms"]]
    assert all(c["val_acc"] < best - 0.005 for c in cheaper)
    # The toy set is separable from token identities: the selection is far above chance (0.5).
    assert sel["val_acc"] >= 0.75
    front = [c for c in cands if c["pareto"]]
    for f in front:  # nothing strictly dominates a front member
        assert not any(c["val_acc"] > f["val_acc"] and c["cost"]["latency_ms"] <= f["cost"]["latency_ms"]
                       for c in cands)


def test_show_reads_the_run_back(tiny_run):
    _, run_dir, board = tiny_run
    result = invoke("show", str(run_dir))
    assert result.exit_code == 0 and board["selected"] in result.output
    shown = json.loads(invoke("show", str(run_dir), "--json").output)
    assert shown["selected"] == board["selected"]


def test_two_backbones_are_searched_together(tiny_bert, tiny_bert_3, toy_spec, tmp_path):
    run_dir = tmp_path / "run2"
    result = invoke("run", "--model", str(tiny_bert), "--model", str(tiny_bert_3), "--dataset", str(toy_spec),
                    "--max-candidates", "12", "--run-dir", str(run_dir))
    assert result.exit_code == 0, result.output
    board = json.loads((run_dir / "leaderboard.json").read_text())
    assert board["model"] == "tiny, tiny2" and set(board["models"]) == {"tiny", "tiny2"}
    assert board["models"]["tiny"]["weights_hash"] != board["models"]["tiny2"]["weights_hash"]
    by_bb = {}
    for c in board["candidates"]:
        by_bb.setdefault(c["backbone"], []).append(c)
    singles = {bb: {c["layers"][0] for c in cs if c["combine"] == "single"} for bb, cs in by_bb.items()}
    assert singles == {"tiny": {0, 1, 2}, "tiny2": {0, 1, 2, 3}}
    assert max(c["depth"] for c in by_bb["tiny"]) == 2 and max(c["depth"] for c in by_bb["tiny2"]) == 3
    assert len(board["candidates"]) == (3 + 4) * 2 * 3 + 12
    assert any(c["combine"] != "single" for c in by_bb["tiny2"])
    assert {r["backbone"] for r in board["per_layer"]} == {"tiny", "tiny2"}
    assert len(board["feature_cache"]) == 2 and len(set(board["feature_cache"].values())) == 2
    # Same layer/pooling/head on the two backbones: different features, different costs.
    a = next(c for c in by_bb["tiny"] if c["combine"] == "single" and c["layers"] == [2] and c["head"] == "softmax")
    b = next(c for c in by_bb["tiny2"] if c["combine"] == "single" and c["layers"] == [3] and c["head"] == "softmax")
    assert b["cost"]["latency_ms"] > a["cost"]["latency_ms"]


def test_fitting_in_two_processes_gives_the_same_leaderboard(tiny_run, tiny_bert, toy_spec, tmp_path):
    """Each fit is seeded on its own: worker processes change the wall time, never a result."""
    _, _, serial = tiny_run
    assert serial["search_jobs"] == 1  # a search this small stays in one process by default
    run_dir = tmp_path / "parallel"
    result = invoke("run", "--model", str(tiny_bert), "--dataset", str(toy_spec), "--max-candidates", "10",
                    "--jobs", "2", "--run-dir", str(run_dir))
    assert result.exit_code == 0, result.output
    board = json.loads((run_dir / "leaderboard.json").read_text())
    assert board["search_jobs"] == 2
    assert [c["id"] for c in board["candidates"]] == [c["id"] for c in serial["candidates"]]
    assert {c["id"]: c["val_acc"] for c in board["candidates"]} == {c["id"]: c["val_acc"] for c in serial["candidates"]}
    assert board["selected"] == serial["selected"]


def test_extract_then_reuse(tiny_bert, toy_spec):
    first = invoke("extract", "--model", str(tiny_bert), "--dataset", str(toy_spec), "--max-length", "32")
    assert first.exit_code == 0 and "tiny @ 32 tokens: extracted, 3 layers" in first.output
    again = invoke("extract", "--model", str(tiny_bert), "--dataset", str(toy_spec), "--max-length", "32")
    assert again.exit_code == 0 and "tiny @ 32 tokens: cached" in again.output


def test_search_command_writes_a_run(tiny_bert, toy_spec, tmp_path):
    result = invoke("search", "--model", str(tiny_bert), "--dataset", str(toy_spec), "--max-candidates", "0",
                    "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    board = json.loads((tmp_path / "s" / "leaderboard.json").read_text())
    assert all(c["combine"] == "single" for c in board["candidates"]) and len(board["candidates"]) == 18


# --- errors --------------------------------------------------------------------------------------


def _one_line_error(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in err, err
    return err


def test_missing_spec_file_is_a_config_error(tmp_path):
    result = invoke("run", "--dataset", str(tmp_path / "absent.toml"))
    _one_line_error(result, 2, "absent.toml", "not found")


def test_bad_dataset_file_is_a_dataset_error(tmp_path, tiny_bert):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nonly\tpos\nonce\tpos\n")
    spec = tmp_path / "one.toml"
    spec.write_text('format = "tsv"\ntrain = "train.tsv"\ntext_field = "sentence"\n')
    result = invoke("extract", "--model", str(tiny_bert), "--dataset", str(spec))
    _one_line_error(result, 3, "train.tsv", "single class")


def test_unknown_model_folder_is_a_model_error(tmp_path, toy_spec):
    result = invoke("extract", "--model", str(tmp_path / "nowhere"), "--dataset", str(toy_spec))
    _one_line_error(result, 4, "nowhere")


def test_impossible_budget_is_a_search_error(tiny_bert, toy_spec, tmp_path):
    result = invoke("run", "--model", str(tiny_bert), "--dataset", str(toy_spec), "--max-candidates", "0",
                    "--max-latency-ms", "0.001", "--run-dir", str(tmp_path / "r"))
    _one_line_error(result, 1, "no candidate meets the budgets", "--max-latency-ms")
    assert not (tmp_path / "r" / "leaderboard.json").exists()


def test_help_and_version():
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("run", "extract", "search", "show"):
        assert cmd in result.output
    assert "Examples" in result.output
    version = invoke("--version")
    assert version.exit_code == 0 and version.output.strip() == f"codesign, version {__version__}"
    for cmd in ("run", "extract", "search"):
        sub = invoke(cmd, "--help")
        assert sub.exit_code == 0 and "--dataset" in sub.output and "Example" in sub.output


# --- the default model, on a tiny slice ----------------------------------------------------------


@pytest.mark.model
@pytest.mark.skipif(not (SHARED_DATA / "trec").is_dir(), reason="../shared/data is absent")
def test_default_run_on_a_trec_slice(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_DATA", str(SHARED_DATA))
    result = invoke("run", "--max-per-class", "6", "--max-eval-per-class", "3", "--max-candidates", "4",
                    "--run-dir", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    board = json.loads((tmp_path / "r" / "leaderboard.json").read_text())
    assert board["model"] == "all-MiniLM-L6-v2" and board["dataset"] == "trec"
    assert board["label_names"] == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert board["validation_carved"] is True
    assert {r["layer"] for r in board["per_layer"]} == set(range(7))
    assert board["baseline"]["depth"] == 6


# --- the library under the CLI -------------------------------------------------------------------


def test_run_without_a_test_split_reports_none(tiny_bert, toy_rows, tmp_path):
    from toolchain.flows.run import RunConfig, run

    rows = toy_rows(12)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    spec = tmp_path / "notest.toml"
    spec.write_text('format = "jsonl"\ntrain = "train.jsonl"\nvalidation_fraction = 0.25\n')
    run_dir, board = run(RunConfig(models=(str(tiny_bert),), dataset=str(spec), max_combinations=3,
                                   run_dir=str(tmp_path / "r")))
    assert board["validation_carved"] and "test" not in board["split_sizes"]
    assert board["split_sizes"] == {"train": 18, "validation": 6}
    assert board["baseline"]["test_acc"] is None
    assert all("test_acc" not in c for c in board["candidates"])
    assert (run_dir / "report.md").is_file() and (run_dir / "pareto.png").is_file()


def test_two_backbone_folders_with_the_same_name_are_not_silently_merged(tiny_bert, tiny_bert_3, toy_spec, tmp_path):
    import shutil

    other = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(tiny_bert_3, other)
    result = CliRunner().invoke(main, ["extract", "--model", str(tiny_bert), "--model", str(other),
                                       "--dataset", str(toy_spec)])
    # Either a clear error, or both backbones searched.
    assert result.exit_code == 2 or result.output.count("tiny") >= 2, result.output


def test_registered_commands_turn_errors_into_messages(tiny_bert, toy_spec):
    """Commands defined beside the CLI (baseline, results, targets) get its error handling."""
    from click.testing import CliRunner

    from toolchain.cli import main

    result = CliRunner().invoke(main, ["baseline", "finetune", "--model", str(tiny_bert),
                                       "--dataset", str(toy_spec), "--depth", "7"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and "depth 7" in result.output
    result = CliRunner().invoke(main, ["targets", "show", "no-such-board"])
    assert result.exit_code != 0 and "known targets:" in result.output and "rpi4" in result.output


def test_large_training_sets_are_screened_then_the_best_fitted_in_full(tiny_bert, toy_spec, tmp_path):
    """Successive halving (threshold lowered to the toy set's 48 rows): every candidate scored on a
    sample, the best quarter and the per-layer softmax fits refitted on all rows; only those compete."""
    from toolchain.flows.run import RunConfig, run

    _, board = run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=10,
                             screen_rows=20, promote=0.25, min_promoted=2, run_dir=str(tmp_path / "sh")))
    screening = board["screening"]
    assert screening["rows"] == 20 and screening["screened"] == board["n_candidates"] == 28
    full = [c for c in board["candidates"] if c["fidelity"] == "full"]
    screened_only = [c for c in board["candidates"] if c["fidelity"] == "screen-20"]
    singles_softmax = [c for c in board["candidates"] if c["combine"] == "single" and c["head"] == "softmax"]
    assert all(c["fidelity"] == "full" for c in singles_softmax)  # the per-layer curve and the baseline
    assert len(full) == screening["promoted"] == len(singles_softmax) + 6  # ceil(0.25 * 22) others
    assert len(screened_only) == 28 - len(full) and all("screen_val_acc" in c for c in full)
    selected = next(c for c in board["candidates"] if c["id"] == board["selected"])
    assert selected["fidelity"] == "full" and not any(c["pareto"] for c in screened_only)
    assert "successive halving: all 28 scored after a fit on 20" in (tmp_path / "sh" / "report.md").read_text()
