"""Target kinds come from the registry: built-in kinds, kinds registered in code, and third-party
kinds installed through the ``codesign.target_kinds`` entry point group. A target file naming
any of them loads; one naming none is one line listing the known kinds. The shipped ``fake``
board and a third-party kind both go profile -> bundle -> deploy -> bench through the CLI.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from kind_helpers import host_like_target, write_acme_distribution

import toolchain.config.target_spec as ts
from toolchain.boards import registry
from toolchain.boards.base import Reachability, Target
from toolchain.boards.fake import fake_latency_ms
from toolchain.errors import ConfigError, TargetError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "reliability"))  # cli_error: the one-line error check

from reliability_harness import cli_error  # noqa: E402


# ---- the kind names a spec may use -------------------------------------------------------------------
def test_the_built_in_kind_names_in_config_are_the_registrys():
    assert set(ts.BUILTIN_KINDS) == set(registry._BUILTIN_MODULES)
    assert ts.KIND_ENTRY_POINT_GROUP == registry.ENTRY_POINT_GROUP == "codesign.target_kinds"
    for kind in ("local", "emulated", "ssh", "serial", "fake"):  # labgrid needs its extra
        assert registry.kind_class(kind).kind == kind


def test_an_unknown_kind_is_one_line_listing_the_known_kinds(tmp_path):
    path = host_like_target(tmp_path / "board.toml", "board", "acme")
    with pytest.raises(ConfigError) as info:
        ts.load_target_spec(path)
    msg = str(info.value)
    assert "\n" not in msg and "board.toml" in msg and "key 'kind' is 'acme'" in msg, msg
    for kind in ts.BUILTIN_KINDS:
        assert f"'{kind}'" in msg, msg
    assert "codesign.target_kinds" in msg, msg  # how a third-party kind would be found


@pytest.mark.parametrize("kind", ["Acme", "acme board", "1acme", "-acme", ""])
def test_a_kind_must_look_like_a_name(tmp_path, kind):
    path = host_like_target(tmp_path / "board.toml", "board", kind)
    with pytest.raises(ConfigError, match="key 'kind' is .*; use a kind name: a lower-case letter"):
        ts.load_target_spec(path)
    with pytest.raises(ConfigError, match="is not a kind name"):
        registry.register_kind(kind)


def test_the_fake_target_file_ships_and_loads():
    spec = ts.load_target_spec("fake")
    target = registry.open_target(spec)
    assert spec.kind == "fake" and type(target).__name__ == "FakeTarget"
    assert {"run_agent", "deploy", "rollback", "status", "bench"} <= target.verbs()
    assert target.uses_emulation()


class _Headless(Target):
    """A kind that can only say whether its board answers: no deploy, no bench."""

    def reachability(self) -> Reachability:
        return Reachability(True, "always")


@pytest.fixture
def registered_in_code(tmp_path):
    """Kind ``headless`` registered in code (no entry point) and a target file naming it."""
    registry.register_kind("headless")(_Headless)
    try:
        yield host_like_target(tmp_path / "headless-1.toml", "headless-1", "headless")
    finally:
        registry._KINDS.pop("headless", None)
        ts._DECLARED_KINDS.discard("headless")


def test_a_kind_registered_in_code_loads_from_a_target_file(registered_in_code):
    target = registry.open_target(str(registered_in_code))
    assert isinstance(target, _Headless) and target.kind == "headless"
    assert "headless" in ts.known_kinds()


def test_a_kind_without_deploy_says_which_verbs_it_has(registered_in_code, tmp_path):
    bundle = tmp_path / "some-bundle"
    bundle.mkdir()
    msg = cli_error(["deploy", "--target", registered_in_code, "--bundle", bundle])
    assert msg == ("error: target 'headless-1' (kind 'headless') cannot deploy a bundle; this kind "
                   "supports: none"), msg
    msg = cli_error(["status", "--target", registered_in_code])
    assert "cannot report its deployment status; this kind supports: none" in msg, msg
    assert not bundle.joinpath("manifest.json").exists() and list(bundle.iterdir()) == []


def test_a_kind_registered_twice_is_refused():
    class Other(_Headless):
        pass

    registry.register_kind("headless-twice")(_Headless)
    try:
        with pytest.raises(ConfigError, match="registered twice"):
            registry.register_kind("headless-twice")(Other)
    finally:
        registry._KINDS.pop("headless-twice", None)
        ts._DECLARED_KINDS.discard("headless-twice")


# ---- the CLI, in process ---------------------------------------------------------------------------
def _codesign(*args, ok: bool = True):
    from click.testing import CliRunner

    from toolchain.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    out = result.stdout + result.stderr
    if ok:
        assert result.exit_code == 0, f"codesign {' '.join(map(str, args))}:\n{out}"
    return result


def _line(output: str, prefix: str) -> str:
    return next(ln for ln in output.splitlines() if ln.startswith(prefix))


def _profile_bundle_deploy(target: str, run_dir: Path, out: Path, source: str) -> Path:
    """profile (one short loop), bundle its selection, deploy it; the bundle's archive. The
    selection is ``source`` ("measured", or "predicted" where every record is emulated)."""
    _codesign("profile", "--target", target, "--run-dir", run_dir, "--top", 1, "--rounds", 1,
              "--precision", "fp32", "--iterations", 4, "--warmup", 1, "--passes", 1)
    result = _codesign("bundle", "--target", target, "--run-dir", run_dir, "--out", out)
    archive = Path(_line(result.stdout, "archive").split()[1])
    assert archive.is_file() and f"({source} selection for" in result.stdout, result.stdout
    assert "measured median" in result.stdout, result.stdout  # the bundled candidate was measured
    result = _codesign("deploy", "--target", target, "--bundle", archive)
    assert "self-check passed" in result.stdout, result.stdout
    return archive


def _bench(target: str, archive: Path, out: Path, *extra, ok: bool = True) -> dict:
    _codesign("bench", "--target", target, "--bundle", archive, "--json", out, "--iterations", 20,
              "--warmup", 2, *extra, ok=ok)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_the_fake_board_goes_profile_bundle_deploy_bench_deterministically(tiny_run, tmp_path):
    from toolchain.bundle.manifest import read_manifest
    from toolchain.store.db import RecordStore

    # The fake's records are emulated, so its cost model is not fitted on them: the selection
    # is predicted (as for any emulated board), the bundled candidate measured all the same.
    archive = _profile_bundle_deploy("fake", tiny_run, tmp_path / "dist", "predicted")
    first = _bench("fake", archive, tmp_path / "b1.json")
    second = _bench("fake", archive, tmp_path / "b2.json")
    folder = archive.with_name(archive.name.removesuffix(".tar.gz"))
    manifest = read_manifest(folder)
    scale = ts.load_target_spec("fake").emulation.latency_scale
    expected = fake_latency_ms((folder / manifest["artefact"]["model"]).stat().st_size, scale)
    # Deterministic counters, not timings: model bytes / rate, the same in every run.
    assert first["summary"]["stat_ms"] == second["summary"]["stat_ms"] == expected
    assert first["latency_ms_samples"] == [expected] * 20
    assert first["emulated"] and first["self_check_passed"] and first["accuracy"].get("accuracy") is not None
    with RecordStore() as store:
        records = store.records(target="fake")
    assert records and all(r.emulated for r in records)
    chosen = [r for r in records if r.candidate_id == manifest["candidate_id"]]
    assert chosen and set(chosen[0].latency_ms_samples) == {expected}  # profile and bench agree
    # The regression gate on the fake is exact: a 50% injected slowdown is a 1.5x ratio.
    slow = _bench("fake", archive, tmp_path / "b3.json", "--baseline", tmp_path / "b1.json",
                  "--inject-slowdown", 0.5, ok=False)
    assert slow["summary"]["stat_ms"] == pytest.approx(1.5 * expected, rel=1e-12)
    assert slow["comparison"]["regressed"] and not slow["passed"]


# ---- a third-party kind through a real entry point ------------------------------------------------
@pytest.fixture
def acme(tmp_path, monkeypatch):
    """The ``acme_boards`` distribution installed into a folder on sys.path and PYTHONPATH."""
    site = write_acme_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("ACME_LOG", str(tmp_path / "acme.log"))
    importlib.invalidate_caches()  # importlib.metadata must see the new dist-info
    try:
        yield SimpleNamespace(site=site, log=tmp_path / "acme.log",
                              target=host_like_target(tmp_path / "acme-1.toml", "acme-1", "acme"))
    finally:
        sys.modules.pop("acme_boards", None)
        registry._KINDS.pop("acme", None)
        ts._DECLARED_KINDS.discard("acme")
        importlib.invalidate_caches()


def _logged(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def test_an_entry_point_kind_is_known_before_its_package_is_imported(acme):
    assert "acme" in ts.entry_point_kinds() and "acme_boards" not in sys.modules
    spec = ts.load_target_spec(acme.target)  # validated against the entry point, not loaded
    assert spec.kind == "acme" and "acme_boards" not in sys.modules
    target = registry.open_target(spec)  # now the entry point is loaded
    assert type(target).__module__ == "acme_boards" and target.kind == "acme"
    assert target.verbs() >= {"run_agent", "deploy", "rollback", "status", "bench"}


@pytest.mark.slow
def test_a_third_party_kind_goes_profile_bundle_deploy_bench(acme, tiny_run, tmp_path):
    from toolchain.store.db import RecordStore

    archive = _profile_bundle_deploy(str(acme.target), tiny_run, tmp_path / "dist", "measured")
    with RecordStore() as store:
        records = store.records(target="acme-1")
    assert records and not any(r.emulated for r in records)
    # deploy went through the kind's own shell: it ran the on-board self-check and switched
    deployed = _logged(acme.log)
    assert any("--self-check" in argv for argv in deployed), deployed
    assert any(argv[:1] == ["mv"] for argv in deployed), deployed
    status = _codesign("status", "--target", acme.target)
    assert "board    acme board acme-1" in status.stdout, status.stdout
    # bench in a fresh process: the kind is found through the entry point on PYTHONPATH alone
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "toolchain.cli", "bench", "--target", str(acme.target),
                           "--bundle", str(archive), "--json", str(out), "--iterations", "10",
                           "--warmup", "1"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["target"] == "acme-1" and report["board"] == "acme board acme-1"
    assert report["self_check_passed"] and len(report["latency_ms_samples"]) == 10
    assert sum("--bench" in argv for argv in _logged(acme.log)) == 1  # the subprocess's shell


def test_without_the_distribution_the_kind_is_unknown(tmp_path):
    path = host_like_target(tmp_path / "acme-1.toml", "acme-1", "acme")
    with pytest.raises(ConfigError, match="install the package whose 'codesign.target_kinds'"):
        ts.load_target_spec(path)


def test_an_entry_point_that_registers_nothing_is_one_line(acme):
    (acme.site / "acme_boards" / "__init__.py").write_text('"""registers nothing"""\n')
    with pytest.raises(TargetError) as info:
        registry.open_target(str(acme.target))
    msg = str(info.value)
    assert "\n" not in msg and "acme = acme_boards" in msg and "@register_kind('acme')" in msg, msg


def test_an_entry_point_that_fails_to_import_is_one_line(acme):
    (acme.site / "acme_boards" / "__init__.py").write_text("import no_such_module_here\n")
    with pytest.raises(TargetError) as info:
        registry.open_target(str(acme.target))
    msg = str(info.value)
    assert "\n" not in msg and "does not load" in msg and "no_such_module_here" in msg, msg
