"""Many boards at once (issue 12, item 5): ``codesign profile --target A --target B`` measures
in parallel, one worker per board, keeps records per board and each board's own selection; a
board that fails mid-run is reported while the others finish; two workers asking for one
artefact build it once.

Parallelism is shown by behaviour, never by timings: the boards' first measurements meet at a
barrier that a sequential profile could never pass."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from toolchain.boards.local import LocalTarget
from toolchain.cli import main
from toolchain.config.target_spec import load_target_spec
from toolchain.errors import TransportError
from toolchain.flows.run import RunConfig, run
from toolchain.rundir import RunDir
from toolchain.store.db import RecordStore

pytestmark = pytest.mark.slow

BARRIER_S = 120  # generous: a sequential profile would wait here forever, a parallel one not at all


@pytest.fixture
def tiny_run(tiny_bert, toy_spec, codesign_home):
    run_dir = codesign_home / "runs" / "tiny"
    run(RunConfig(models=(str(tiny_bert),), dataset=str(toy_spec), max_combinations=6,
                  heads=(("softmax", 3),), run_dir=str(run_dir)))
    return run_dir


def _board(tmp_path, name: str, storage_mb: float = 0):
    """A host-like board (kind local) called ``name``; another storage budget is another board
    spec (board hash)."""
    from toolchain.paths import targets_dir

    text = (targets_dir() / "host.toml").read_text().replace("storage_mb = 0", f"storage_mb = {storage_mb}")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path, load_target_spec(str(path))


def _profile(run_dir, *paths, extra=()):
    args = ["profile", "--run-dir", str(run_dir), "--rounds", "1", "--top", "1", "--precision", "fp32",
            "--warmup", "0", *extra]
    for p in paths:
        args += ["--target", str(p)]
    return CliRunner().invoke(main, args)


def _meet_at_start(monkeypatch, n: int):
    """Every worker's loop reads the run only once all have: a worker that saved the leaderboard
    it read at its start would then drop the other's selection, every time."""
    import toolchain.profiling.runner as runner

    barrier = threading.Barrier(n, timeout=BARRIER_S)
    original = runner.validate_request

    def validate(*args, **kwargs):
        board = original(*args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            barrier.wait()
        return board

    monkeypatch.setattr(runner, "validate_request", validate)


def test_two_boards_measure_in_parallel_each_with_its_records_and_selection(tiny_run, tmp_path, monkeypatch):
    (path_a, spec_a), (path_b, spec_b) = _board(tmp_path, "board-a"), _board(tmp_path, "board-b", 500)
    _meet_at_start(monkeypatch, 2)
    first_measurement = threading.Barrier(2, timeout=BARRIER_S)
    calls: dict[str, list[str]] = {"board-a": [], "board-b": []}
    original = LocalTarget.run_agent

    def run_agent(self, job_dir, **kw):
        mine = calls[self.spec.name]
        mine.append(threading.current_thread().name)
        if len(mine) == 1:
            first_measurement.wait()  # passes only if both boards are measuring at once
        return original(self, job_dir, **kw)

    monkeypatch.setattr(LocalTarget, "run_agent", run_agent)
    result = _profile(tiny_run, path_a, path_b, extra=("--iterations", "2", "--passes", "1"))
    assert result.exit_code == 0, result.output
    # One worker thread per board, none of it on the main thread.
    assert set(calls["board-a"]) == {"profile-board-a"} and set(calls["board-b"]) == {"profile-board-b"}
    assert "== board-a ==" in result.output and "== board-b ==" in result.output
    sel_a = RunDir.open(tiny_run).selection(spec_a)
    sel_b = RunDir.open(tiny_run).selection(spec_b)
    for spec, sel in ((spec_a, sel_a), (spec_b, sel_b)):
        assert sel is not None, f"{spec.name}'s selection was lost"
        loop = json.loads((tiny_run / f"loop-{spec.name}.json").read_text())
        assert sel["candidate_id"] == loop["selected"] and sel["source"] == "measured"
    with RecordStore() as store:
        for spec in (spec_a, spec_b):
            recs = store.records(target=spec.name, settled=True)
            assert len(recs) == len(calls[spec.name])  # one record per agent run, per board
            assert {(r.target_hash, r.board_hash) for r in recs} == {(spec.hash, spec.board_hash)}
    report = (tiny_run / "report.md").read_text()
    assert "board-a" in report and "board-b" in report


def test_a_board_failing_mid_run_is_reported_and_the_others_finish(tiny_run, tmp_path, monkeypatch):
    (path_a, spec_a), (path_b, spec_b) = _board(tmp_path, "board-a"), _board(tmp_path, "board-b", 500)
    calls = {"board-a": 0, "board-b": 0}
    original = LocalTarget.run_agent

    def run_agent(self, job_dir, **kw):
        calls[self.spec.name] += 1
        if self.spec.name == "board-b" and calls["board-b"] == 2:  # its link drops after one pass
            raise TransportError("target 'board-b': connection lost mid-measurement (link dropped)")
        return original(self, job_dir, **kw)

    monkeypatch.setattr(LocalTarget, "run_agent", run_agent)
    result = _profile(tiny_run, path_a, path_b, extra=("--iterations", "4", "--passes", "2"))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "board board-b failed: target 'board-b': connection lost mid-measurement (link dropped)" \
        in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 boards failed (board-b;") and f"--target {path_b}" in last
    assert "== board-a ==" in result.output and "== board-b ==" not in result.output
    run_dir = RunDir.open(tiny_run)
    assert run_dir.selection(spec_a) is not None and run_dir.selection(spec_b) is None
    with RecordStore() as store:
        a = store.records(target="board-a", settled=True)
        assert a and all(r.n_samples == 2 for r in a)  # 4 iterations in 2 passes: every pass whole
        assert not store.unfinished_sessions(target="board-a")
        # board-b's one finished pass is kept, whole, but provisional: its session never ended.
        assert store.records(target="board-b", settled=True) == []
        (b,) = store.records(target="board-b")
        assert b.n_samples == 2 and len(store.unfinished_sessions(target="board-b")) == 1


def test_a_board_that_cannot_be_opened_is_one_of_the_failures(tiny_run, tmp_path, monkeypatch):
    from toolchain.config.target_spec import TargetSpec
    from toolchain.flows.profile import ProfileOptions, profile_boards

    _, spec_a = _board(tmp_path, "board-a")
    gone = TargetSpec(name="gone", kind="ssh", arch="aarch64")  # no host: it cannot be reached
    import toolchain.flows.profile as flow

    original = flow.open_target

    def open_target(spec, **kw):
        if spec.name == "gone":
            from toolchain.errors import TargetUnreachableError

            raise TargetUnreachableError("target 'gone': no route to host")
        return original(spec, **kw)

    monkeypatch.setattr(flow, "open_target", open_target)
    heard = []
    outcomes = profile_boards(tiny_run, [spec_a, gone], ProfileOptions(
        precisions=("fp32",), top_k=1, rounds=1, warmup=0, iterations=1, passes=1), on_done=heard.append)
    assert [o.name for o in outcomes] == ["board-a", "gone"]
    assert outcomes[0].ok and outcomes[0].mode == "loop" and outcomes[0].summary["selected"]
    assert not outcomes[1].ok and outcomes[1].error == "target 'gone': no route to host"
    assert sorted(o.name for o in heard) == ["board-a", "gone"]


def test_two_workers_exporting_one_artefact_build_it_once(tiny_run, monkeypatch):
    import toolchain.export.artefact as artefact

    base = sorted(p.stem for p in (tiny_run / "heads").glob("*.safetensors"))[0]
    # Each worker's first look at each artefact folder happens before either builds anything:
    # without a lock, both would find nothing and both would export into the same folder.
    barriers: dict[str, threading.Barrier] = {}  # dict.setdefault is atomic: one per folder
    seen = threading.local()
    original_read = artefact.read_artefact

    def read_artefact(out_dir):
        looked = seen.__dict__.setdefault("dirs", set())
        if out_dir.name not in looked:
            looked.add(out_dir.name)
            barriers.setdefault(out_dir.name, threading.Barrier(2, timeout=BARRIER_S)).wait()
        return original_read(out_dir)

    built = {"fp32": 0, "int8": 0}
    original_fp32, original_recipe = artefact.export_fp32, artefact.apply_recipe

    def export_fp32(*args, **kwargs):
        built["fp32"] += 1
        return original_fp32(*args, **kwargs)

    def apply_recipe(*args, **kwargs):
        built["int8"] += 1
        return original_recipe(*args, **kwargs)

    monkeypatch.setattr(artefact, "read_artefact", read_artefact)
    monkeypatch.setattr(artefact, "export_fp32", export_fp32)
    monkeypatch.setattr(artefact, "apply_recipe", apply_recipe)
    results, errors = [], []

    def worker():
        try:
            results.append(artefact.export_artefact(tiny_run, base, "int8-dynamic"))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert built["fp32"] == 1, "the fp32 artefact was exported twice"
    (dir_1, meta_1), (dir_2, meta_2) = results
    assert dir_1 == dir_2 and meta_1 == meta_2
    # Whole and valid: every file matches the hash artefact.json recorded.
    assert original_read(dir_1) == meta_1 and original_read(tiny_run / "artefacts" / base) is not None
    # The quantization ran for one worker only: the same count as one worker alone would make.
    assert built["int8"] == len(meta_1.get("recipes_tried", []))
    assert not list(dir_1.glob(".*.onnx"))  # no staging file left by either worker
