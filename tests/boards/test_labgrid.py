"""The labgrid target kind: a [labgrid] table in a target file, labgrid (no coordinator here)
acquiring, powering and bringing stand-in boards to a shell, and codesign's own SSH (known_hosts
enforced) measuring on them. Parallel and killed-board behaviour is checked on records; the
wall-time ratio of parallel boards is measured by benchmarks/labgrid_parallel_bench.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from board_helpers import kill_board, logins, power_log, write_env, write_target

from toolchain.boards.registry import open_target
from toolchain.config.target_spec import load_target_spec
from toolchain.errors import CodesignError, ConfigError, TargetError, TransportError
from toolchain.profiling.runner import profile_candidates
from toolchain.store.db import RecordStore

# ---- the spec's [labgrid] table (no labgrid needed) ---------------------------------------


def test_env_path_is_relative_to_the_target_file(tmp_path):
    (tmp_path / "farm").mkdir()
    path = write_target(tmp_path / "farm", "lab-rpi", env="envs/farm.yaml", lg_target="rpi4-1")
    spec = load_target_spec(path)
    assert spec.kind == "labgrid" and spec.labgrid.target == "rpi4-1"
    assert spec.labgrid.env == str((tmp_path / "farm" / "envs" / "farm.yaml").resolve())
    assert spec.labgrid.state == "shell" and spec.labgrid.power_cycle_on_hang is False


def test_specs_without_the_table_keep_their_hash():
    from dataclasses import replace

    from toolchain.config.target_spec import Labgrid

    spec = load_target_spec("rpi4")
    with pytest.raises(ValueError, match="key 'kind' is 'ssh'; use 'labgrid' with a"):
        replace(spec, labgrid=Labgrid(env="/x.yaml", target="t"))
    lab = replace(spec, kind="labgrid", labgrid=Labgrid(env="/x.yaml", target="t"))
    assert lab.hash != replace(spec, kind="labgrid", labgrid=Labgrid(env="/y.yaml", target="t")).hash


@pytest.mark.parametrize("extra, message", [
    ({"target": ""}, "key 'labgrid.target' is ''; use the target's name in that environment"),
    ({"place": "rpi4-1"}, "key 'labgrid.place' is 'rpi4-1'; use it only with labgrid.coordinator"),
    ({"coordinator": "farm lab"}, "key 'labgrid.coordinator' is 'farm lab'; use host[:port]"),
    ({"state": "a shell"}, "key 'labgrid.state' is 'a shell'; use a strategy state name"),
    ({"power_cycle_on_hang": "yes"}, "key 'labgrid.power_cycle_on_hang' must be a bool"),
    ({"powercycle": True}, "unknown key 'labgrid.powercycle'; known keys here: coordinator, env"),
])
def test_bad_labgrid_table_is_one_line_config_error(tmp_path, extra, message):
    fields = {"lg_target": extra.pop("target", "rpi4-1")}
    path = write_target(tmp_path, "lab", env="farm.yaml", **fields, **extra)
    with pytest.raises(ConfigError) as err:
        load_target_spec(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_labgrid_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "labgrid", None)  # import labgrid -> ImportError
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1")
    with pytest.raises(TargetError) as err:
        open_target(str(path))
    text = str(err.value)
    assert "pip install 'codesign[farm]'" in text and "labgrid" in text and "\n" not in text


def test_cli_missing_labgrid_is_one_error_line(tmp_path):
    """Through the CLI, in a process without labgrid: one 'error:' line, no traceback."""
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1")
    blocker = tmp_path / "nolabgrid"
    blocker.mkdir()
    (blocker / "labgrid.py").write_text("raise ImportError('No module named labgrid')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker), "CODESIGN_HOME": str(tmp_path / "home")}
    codesign = Path(sys.executable).with_name("codesign")
    proc = subprocess.run([str(codesign), "targets", "show", str(path)], capture_output=True,
                          text=True, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert any("pip install 'codesign[farm]'" in line for line in lines), proc.stderr


# ---- labgrid without boards ---------------------------------------------------------------


def _fake_service(tmp_path, name="rpi4-1", **kw):
    """A one-target env whose NetworkService points at nothing that answers."""
    env = write_env(tmp_path / "farm.yaml", {name: ("127.0.0.1", 9, "pi")}, **kw)
    return env


def test_unknown_env_target_lists_the_known_ones(labgrid, tmp_path):
    _fake_service(tmp_path)
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-9")
    target = open_target(str(path))
    with pytest.raises(TargetError, match=r"has no target 'rpi4-9' .*its targets: rpi4-1"):
        target.prepare()
    assert not target.reachability().reachable


def test_missing_env_file_names_it(labgrid, tmp_path):
    path = write_target(tmp_path, "lab", env="nowhere.yaml", lg_target="rpi4-1")
    with pytest.raises(TargetError, match=r"nowhere.yaml' \(key 'labgrid.env'\) does not exist"):
        open_target(str(path)).prepare()


def test_broken_env_is_one_line_target_error(labgrid, tmp_path):
    (tmp_path / "farm.yaml").write_text("targets:\n  rpi4-1:\n    drivers:\n      NoSuchDriver: {}\n")
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1")
    with pytest.raises(TargetError) as err:
        open_target(str(path)).prepare()
    assert "NoSuchDriver" in str(err.value) and "\n" not in str(err.value)


def test_prepare_powers_on_without_strategy_and_never_activates_sshdriver(labgrid, tmp_path):
    from labgrid.binding import BindingState

    _fake_service(tmp_path, strategy=False)
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1")
    with open_target(str(path)) as target:
        target.prepare()
        lg = target._lg_target
        ssh_driver = lg.get_driver("SSHDriver", activate=False)
        assert ssh_driver.state != BindingState.active  # it would turn host-key checking off
        assert power_log(tmp_path, "rpi4-1").read_text().split()[0] == "on"
        conn = target.acquire().spec.connection  # codesign's SSH, to the NetworkService
        assert (conn.host, conn.port, conn.user) == ("127.0.0.1", 9, "pi")
    assert target._lg_target is None  # released on close


def test_strategy_failure_is_target_error_and_releases(labgrid, tmp_path):
    _fake_service(tmp_path, boot_timeout=2.0)  # the strategy waits for 127.0.0.1:9: silence
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1")
    target = open_target(str(path))
    with pytest.raises(TargetError, match=r"could not be brought to 'shell'.*did not come up"):
        target.prepare()
    assert target._lg_target is None


def _fake_client(tmp_path, refuse: bool = False) -> tuple[Path, Path]:
    log = tmp_path / "client.log"
    script = tmp_path / "labgrid-client"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        + ("sys.exit('place rpi4-1 is already acquired by ci/other')\n" if refuse else ""))
    script.chmod(0o755)
    return script, log


def test_coordinator_place_is_locked_before_use_and_released(labgrid, tmp_path, monkeypatch):
    from toolchain.boards import labgrid_target

    client, log = _fake_client(tmp_path)
    monkeypatch.setattr(labgrid_target, "_labgrid_client", lambda: str(client))
    _fake_service(tmp_path, strategy=False)
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1",
                        coordinator="farm.lab:20408", place="bench-3")
    with open_target(str(path)) as target:
        target.prepare()
        assert log.read_text().splitlines() == ["-x farm.lab:20408 -p bench-3 acquire"]
        assert power_log(tmp_path, "rpi4-1").is_file()
    assert log.read_text().splitlines()[-1] == "-x farm.lab:20408 -p bench-3 release"


def test_place_held_by_someone_else_is_refused_before_power(labgrid, tmp_path, monkeypatch):
    from toolchain.boards import labgrid_target

    client, log = _fake_client(tmp_path, refuse=True)
    monkeypatch.setattr(labgrid_target, "_labgrid_client", lambda: str(client))
    _fake_service(tmp_path, strategy=False)
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1",
                        coordinator="farm.lab")
    with pytest.raises(TargetError, match=r"place 'rpi4-1' could not be locked on farm.lab: "
                                          r"place rpi4-1 is already acquired by ci/other"):
        open_target(str(path)).prepare()
    assert not power_log(tmp_path, "rpi4-1").exists()  # nothing was powered
    assert log.read_text().splitlines() == ["-x farm.lab -p rpi4-1 acquire"]  # no release


@pytest.mark.parametrize("cycle", [True, False])
def test_power_cycle_on_hang(labgrid, tmp_path, monkeypatch, tiny_job, cycle):
    """A hung run power-cycles the board (through the strategy) and measures once more; without
    the option the TransportError goes up and nothing is cycled."""
    from toolchain.boards.ssh_target import SshTarget

    _fake_service(tmp_path, strategy=False)
    path = write_target(tmp_path, "lab", env="farm.yaml", lg_target="rpi4-1",
                        power_cycle_on_hang=cycle)
    calls = []

    def run_agent(self, job_dir, **kw):
        calls.append(self.spec.connection.host)
        if len(calls) == 1:
            raise TransportError("'python3 agent.py' on pi@127.0.0.1:9 did not finish within 5 s")
        return {"ok": True, "again": True}

    monkeypatch.setattr(SshTarget, "run_agent", run_agent)
    with open_target(str(path)) as target:
        if cycle:
            assert target.run_agent(tiny_job, warmup=1, iterations=2, threads=1)["again"]
        else:
            with pytest.raises(TransportError, match="did not finish"):
                target.run_agent(tiny_job, warmup=1, iterations=2, threads=1)
    verbs = power_log(tmp_path, "rpi4-1").read_text().split()[::2]
    assert verbs == (["on", "cycle"] if cycle else ["on"])
    assert calls == ["127.0.0.1"] * (2 if cycle else 1)


@pytest.fixture
def tiny_job(tmp_path):
    from ssh_helpers import write_job

    return write_job(tmp_path / "job")


# ---- stand-in boards ----------------------------------------------------------------------


def _targets(tmp_path, farm, boards, **labgrid):
    out = {}
    for name, board in boards.items():
        path = write_target(tmp_path, name, env=farm.name, lg_target=name, key=str(board.key),
                            known_hosts=str(board.known_hosts), **labgrid)
        out[name] = open_target(str(path))
    return out


def _heads(run_dir: Path, n: int = 2) -> list[str]:
    return sorted(p.stem for p in (run_dir / "heads").glob("*.safetensors"))[:n]


def _pre_export(run_dir: Path, heads) -> None:
    """Export once before boards run in parallel: two threads must not write one artefact."""
    from toolchain.export.artefact import export_artefact

    for head in heads:
        export_artefact(run_dir, head, "fp32")


def _check_records(records, target, iterations):
    assert records
    for r in records:
        assert r.target == target.spec.name and r.target_hash == target.spec.hash
        assert r.n_samples == iterations and r.emulated is True  # the agent saw QEMU
        assert r.host["machine"] == "aarch64"


@pytest.mark.slow
def test_profile_through_labgrid_writes_records_with_the_boards_name(tiny_run, boards, farm,
                                                                     tmp_path):
    board = boards["board-a"]
    target = _targets(tmp_path, farm, {"board-a": board})["board-a"]
    before = logins(board)
    with target, RecordStore() as store:
        assert target.reachability().reachable
        records = profile_candidates(tiny_run, target, store, _heads(tiny_run, 1), ("fp32",),
                                     warmup=1, iterations=3)
        assert store.records(target="board-a") == records
    _check_records(records, target, 3)
    assert logins(board) > before, "nothing logged in to the stand-in board: not the SSH path"
    assert power_log(tmp_path, "board-a").read_text().startswith("on ")  # labgrid powered it


@pytest.mark.slow
def test_unknown_host_key_is_refused_not_trusted(tiny_run, boards, farm, tmp_path):
    """labgrid's SSHDriver would connect anyway; codesign's SSH refuses the unknown key."""
    from toolchain.errors import HostKeyError

    board = boards["board-a"]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    path = write_target(tmp_path, "board-a", env=farm.name, lg_target="board-a",
                        key=str(board.key), known_hosts=str(empty))
    with open_target(str(path)) as target, RecordStore() as store:
        with pytest.raises(HostKeyError, match="is not in"):
            profile_candidates(tiny_run, target, store, _heads(tiny_run, 1), ("fp32",),
                               warmup=1, iterations=2)
        assert store.records(target="board-a") == []


def _profile_in_thread(run_dir, target, heads, iterations, results, errors):
    def work():
        try:
            with RecordStore() as store:  # one SQLite connection per worker
                results[target.spec.name] = profile_candidates(
                    run_dir, target, store, heads, ("fp32",), warmup=1, iterations=iterations)
        except BaseException as exc:  # collected for the assertions
            errors[target.spec.name] = exc

    thread = threading.Thread(target=work, name=target.spec.name)
    thread.start()
    return thread


@pytest.mark.slow
def test_two_boards_in_parallel_keep_records_per_board(tiny_run, boards, farm, tmp_path):
    targets = _targets(tmp_path, farm, boards)
    heads = _heads(tiny_run, 2)
    _pre_export(tiny_run, heads)
    before = {name: logins(b) for name, b in boards.items()}
    results, errors = {}, {}
    threads = [_profile_in_thread(tiny_run, t, heads, 3, results, errors) for t in targets.values()]
    for thread in threads:
        thread.join(600)
    for t in targets.values():
        t.close()
    assert not errors, errors
    with RecordStore() as store:
        store.check()
        for name, target in targets.items():
            stored = store.records(target=name)
            assert stored == results[name]
            assert sorted(r.candidate_id for r in stored) == sorted(heads)
            _check_records(stored, target, 3)
    for name, board in boards.items():  # each board's records came from that board
        assert logins(board) > before[name]



@pytest.mark.slow
def test_one_board_killed_mid_run_the_other_completes(tiny_run, boards, farm, tmp_path):
    targets = _targets(tmp_path, farm, boards)
    heads = _heads(tiny_run, 2)
    _pre_export(tiny_run, heads)
    iterations = 60  # long enough for the kill to land while board-b's agent is timing
    results, errors = {}, {}
    threads = {name: _profile_in_thread(tiny_run, t, heads, iterations, results, errors)
               for name, t in targets.items()}
    deadline = time.monotonic() + 300
    while (time.monotonic() < deadline and threads["board-b"].is_alive()
           and not boards["board-b"].agent_running()):
        time.sleep(0.1)
    assert boards["board-b"].agent_running(), "board-b never started measuring"
    time.sleep(0.5)
    kill_board(boards["board-b"])
    for thread in threads.values():
        thread.join(600)
    for t in targets.values():
        t.close()
    assert set(errors) == {"board-b"} and isinstance(errors["board-b"], TargetError), errors
    assert isinstance(errors["board-b"], CodesignError)
    with RecordStore() as store:
        store.check()  # PRAGMA integrity_check: ok
        a = store.records(target="board-a")
        assert sorted(r.candidate_id for r in a) == sorted(heads)  # the other board completed
        _check_records(a, targets["board-a"], iterations)
        b = store.records(target="board-b")
        assert len(b) < len(heads)  # it died before finishing
        for r in b:  # whatever it wrote is whole
            assert r.n_samples == iterations and len(r.input_tokens) == iterations
        (session,) = store.unfinished_sessions(target="board-b")
        assert sorted(session["done"]) == sorted(r.candidate_id for r in b)  # progress matches
        assert not store.unfinished_sessions(target="board-a")


def test_the_ci_example_env_and_its_target_file_load(labgrid, tmp_path):
    """ci/labgrid-env.yaml's header holds an example target file: both must stay loadable."""
    import shutil

    from labgrid.config import Config

    env = Path(__file__).resolve().parents[2] / "ci" / "labgrid-env.yaml"
    lines = env.read_text().splitlines()
    start = lines.index("#   # targets/lab-rpi4-1.toml") + 1
    body = []
    for line in lines[start:]:
        if line.strip() == "#":
            break
        body.append(line[4:].split("  #")[0])
    (tmp_path / "ci").mkdir()
    (tmp_path / "targets").mkdir()
    shutil.copy(env, tmp_path / "ci" / env.name)
    (tmp_path / "targets" / "lab-rpi4-1.toml").write_text("\n".join(body) + "\n")
    spec = load_target_spec(tmp_path / "targets" / "lab-rpi4-1.toml")
    assert spec.kind == "labgrid" and Path(spec.labgrid.env) == tmp_path / "ci" / env.name
    assert spec.labgrid.target in Config(spec.labgrid.env).get_targets()
    assert spec.labgrid.coordinator and spec.labgrid.power_cycle_on_hang
