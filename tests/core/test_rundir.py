"""The run directory's one owner: typed leaderboard, migration, completion, selections per target."""

from __future__ import annotations

import json

import pytest

from toolchain.errors import RunDirError
from toolchain.rundir import COMPLETE, SCHEMA, RunDir, target_key
from toolchain.search.candidate import Candidate


class _Spec:
    """Just what a selection is keyed by."""

    def __init__(self, name, board_hash, hash_=None):
        self.name, self.board_hash, self.hash = name, board_hash, hash_ or board_hash


def _board(schema=SCHEMA, **extra):
    a = Candidate("tiny", (1,), "single", "mean", "softmax", 0)
    b = Candidate("tiny", (0, 1), "concat", "mean", "softmax", 0)
    cands = [{"id": c.id, **c.to_dict(), "val_acc": acc,
              "cost": {"latency_ms": lat, "model_bytes": 1000, "source": "analytic"}}
             for c, acc, lat in ((a, 0.8, 1.0), (b, 0.9, 2.0))]
    board = {"schema": schema, "dataset": "toy", "dataset_fingerprint": "f" * 16,
             "label_names": ["neg", "pos"], "models": {"tiny": {"path": "x"}},
             "config": {"dataset": "toy"}, "candidates": cands, "selected": cands[1]["id"],
             "target": "host", "baseline": {"id": cands[0]["id"]}}
    board.update(extra)
    return board, a, b


def _write(tmp_path, board, complete=True, name="run"):
    run = tmp_path / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "leaderboard.json").write_text(json.dumps(board))
    if complete:
        (run / COMPLETE).write_text("complete\n")
    return run


@pytest.mark.parametrize("content, match", [
    (b"{}", "missing"), (b"[]", "JSON list"), (b"\xff\xfe garbage", "not UTF-8"),
    (b'{"schema": 2', "corrupt JSON"), (b'"text"', "JSON str"),
])
def test_malformed_leaderboards_are_one_clear_error(tmp_path, content, match):
    run = tmp_path / "run"
    run.mkdir()
    (run / "leaderboard.json").write_bytes(content)
    with pytest.raises(RunDirError, match=match):
        RunDir.open(run)


def test_wrong_types_and_dangling_selection_are_refused(tmp_path):
    board, _, _ = _board()
    board["candidates"] = "nope"
    with pytest.raises(RunDirError, match="'candidates' is a str"):
        RunDir.open(_write(tmp_path, board))
    board, _, _ = _board(selected="not-a-candidate")
    with pytest.raises(RunDirError, match="not among the run's 2 candidates"):
        RunDir.open(_write(tmp_path, board))
    board, _, _ = _board()
    board["candidates"][0]["combine"] = "bogus"
    with pytest.raises(RunDirError, match="candidate #0 .* malformed"):
        RunDir.open(_write(tmp_path, board))


def test_newer_schema_is_refused_with_the_fix(tmp_path):
    board, _, _ = _board(schema=SCHEMA + 1)
    with pytest.raises(RunDirError, match="newer codesign"):
        RunDir.open(_write(tmp_path, board))


def test_an_interrupted_run_is_not_finished(tmp_path, codesign_home):
    board, _, _ = _board()
    runs = codesign_home / "runs"
    done = _write(runs, board, name="a")
    half = runs / "b"
    half.mkdir()
    (half / "leaderboard.json").write_text(json.dumps(board))  # killed before the plots
    with pytest.raises(RunDirError, match="incomplete run"):
        RunDir.open(half)
    assert RunDir.latest(codesign_home) == done


def test_schema_1_loop_migrates_to_its_target_selection(tmp_path):
    board, a, b = _board(schema=1)
    board["loop"] = {"target": "rpi4", "target_hash": "ab" * 32, "selected": a.id,
                     "selected_base": a.id, "emulated": True,
                     "variants": [{"id": a.id, "precision": "fp32", "val_acc": 0.8,
                                   "cost": {"source": "measured", "latency_ms": 3.0,
                                            "model_bytes": 10}}]}
    run = _write(tmp_path, board, complete=False)
    for name in ("report.md", "per_layer.png", "pareto.png"):  # an old, finished run
        (run / name).write_text("x")
    rd = RunDir.open(run)
    assert "loop" not in rd.board and rd.board["schema"] == SCHEMA
    sel = rd.selection(_Spec("rpi4", "ab" * 32))
    assert sel["candidate_id"] == a.id and sel["source"] == "measured" and sel["emulated"]
    assert rd.selection(_Spec("host", "cd" * 32)) is None  # never another target's


def test_selections_are_kept_per_target_and_survive_a_save(tmp_path):
    board, a, b = _board()
    rd = RunDir.open(_write(tmp_path, board))
    rd.set_selection(_Spec("host", "11" * 32), {"candidate_id": b.id, "source": "measured"})
    int8 = Candidate.from_dict({**b.to_dict(), "precision": "int8-dynamic"})
    rd.set_selection(_Spec("rpi4", "22" * 32), {"candidate_id": int8.id, "source": "predicted"})
    rendered = []
    rd.save(rendered.append)
    assert rendered == [rd]
    again = RunDir.open(rd.path)
    assert again.selection(_Spec("host", "11" * 32))["candidate_id"] == b.id
    assert again.selection(_Spec("rpi4", "22" * 32))["candidate_id"] == int8.id
    assert again.resolve(int8.id) == (int8, b.id)
    assert set(again.selections) == {target_key("host", "11" * 32), target_key("rpi4", "22" * 32)}
    with pytest.raises(RunDirError, match="not in this run"):
        rd.set_selection(_Spec("host", "11" * 32), {"candidate_id": "nope", "source": "measured"})
