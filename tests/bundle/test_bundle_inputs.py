"""Malformed bundles: one BundleError naming what is wrong, and nothing left behind, neither on
the board (no ``versions/*.partial``) nor here (no scratch folder)."""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from bundle_tamper import (
    PROJECT,
    archive,
    copy_bundle,
    edit_manifest,
    entry,
    minimal_manifest,
    write_tar,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolchain.boards.registry import open_target
from toolchain.bundle.archive import _stream, extract_bundle
from toolchain.bundle.bench import bench
from toolchain.bundle.deploy import LocalShell, deploy, status
from toolchain.bundle.schema import parse_manifest, validate_manifest
from toolchain.errors import BundleError, CodesignError, ConfigError

MB = 1 << 20


def nothing_left(board: Path, home: Path) -> None:
    partials = list(board.glob("versions/*.partial")) if board.exists() else []
    assert not partials, partials
    scratch = home / "tmp"
    assert not scratch.exists() or not any(scratch.iterdir()), list(scratch.iterdir())


# ---- the manifest's schema ----------------------------------------------------------------------
def _del(key):
    def change(m):
        del m[key]

    return change


def _set(path, value):
    def change(m):
        obj = m
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return change


def _first_file(m):
    return sorted(m["files"])[0]


@pytest.mark.parametrize(
    "change, match",
    [
        (_del("candidate_id"), "manifest key 'candidate_id' is missing"),
        (_set(["target"], "host"), r"'target' is a string \('host'\), it must be an object"),
        (_set(["files"], 3), r"'files' is a number \(3\), it must be an object"),
        (lambda m: m["files"].update({_first_file(m): 7}), r"'files\.[\w.]+' is a number \(7\)"),
        (lambda m: m["files"].update({"../evil": "0" * 64}), "file name '../evil' is not allowed"),
        (lambda m: m["files"].update({"a\nb": "0" * 64}), "is not allowed in a bundle"),
        (_set(["artefact", "model"], "/etc/passwd"), "'artefact.model' is a string"),
        (_set(["artefact"], None), "'artefact' is null"),
        (_set(["schema"], "1"), "has schema '1'"),
        (_set(["target", "name"], ["host"]), "'target.name' is a list"),
        (_set(["sizes"], {"x": 1}), "manifest key 'sizes.x'"),
        (lambda m: [m], "the manifest is a list"),
        (_set(["self_check"], "yes"), "'self_check' is a string"),
    ],
)
def test_malformed_manifests_are_one_error_and_copy_nothing(
    bundle_run, host_board, codesign_home, tmp_path, change, match
):
    bad = edit_manifest(copy_bundle(bundle_run.host, tmp_path / "m"), change)
    target = open_target("host")
    for path in (bad, archive(bad, tmp_path / "bad.tar.gz")):
        with pytest.raises(BundleError, match=match):
            deploy(target, path)
        with pytest.raises(BundleError, match=match):
            bench(target, path, iterations=5)
    assert not host_board.exists()  # validated before anything was copied
    nothing_left(host_board, codesign_home)


def test_not_json_and_oversized_manifests(tmp_path):
    with pytest.raises(BundleError, match="is not valid JSON"):
        parse_manifest(b"{" * 100_000, "m")  # nested too deeply: RecursionError inside json
    with pytest.raises(BundleError, match="is not valid JSON"):
        parse_manifest(b'{"schema": NaN}', "m")
    with pytest.raises(BundleError, match="is not valid JSON"):
        parse_manifest(b"\xff\xfe", "m")
    with pytest.raises(BundleError, match="over 8 MiB"):
        parse_manifest(b" " * (9 * MB), "m")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = (
    "schema kind candidate_id target files sizes artefact self_check cost val_acc versions "
    "label_names measured dataset runner candidate"
).split()
_SUBKEYS = (
    "name model runtime header firmware_selfcheck_crc32 reference summary median_ms n".split()
)


def _good() -> dict:
    return json.loads(minimal_manifest({"model.onnx": b"m", "labels.json": b"[]"}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(
        st.tuples(
            st.sampled_from(_KEYS),
            st.one_of(st.none(), st.sampled_from(_SUBKEYS)),
            st.one_of(st.just("<delete>"), _json),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_manifest_is_valid_or_a_codesign_error(changes):
    manifest = _good()
    for key, sub, value in changes:
        obj = manifest
        if sub is not None and isinstance(manifest.get(key), dict):
            obj, key = manifest[key], sub
        if value == "<delete>":
            obj.pop(key, None)
        else:
            obj[key] = value
    try:
        validate_manifest(manifest, "m")
    except CodesignError:
        pass
    try:
        parse_manifest(json.dumps(manifest).encode(), "m")
    except CodesignError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_manifest_bytes_are_valid_or_a_codesign_error(data):
    try:
        parse_manifest(data, "m")
    except CodesignError:
        pass


# ---- archives -----------------------------------------------------------------------------------
FILES = {"model.onnx": b"model", "labels.json": b"[]\n"}


def _bundle_entries(files=FILES, manifest=None):
    out = [(entry("b", tarfile.DIRTYPE), None)]
    out.append((entry("b/manifest.json"), manifest or minimal_manifest(files)))
    out += [(entry(f"b/{n}"), d) for n, d in files.items()]
    return out


def _extract(tmp_path, entries, **kw):
    path = write_tar(tmp_path / "x.tar.gz", entries)
    dest = tmp_path / "dest"
    try:
        return extract_bundle(path, dest, **kw)
    except BaseException:
        assert not dest.exists() or not any(p.is_file() for p in dest.rglob("*"))
        raise


def test_a_good_minimal_archive_extracts(tmp_path):
    folder = _extract(tmp_path, _bundle_entries())
    assert (folder / "model.onnx").read_bytes() == b"model"


@pytest.mark.parametrize(
    "extra, match",
    [
        ([(entry("b/model.onnx/x"), b"y")], "both a file and a folder"),
        ([(entry("b/labels.json", tarfile.DIRTYPE), None)], "both a file and a folder"),
        ([(entry("."), b"x")], r"no usable name \('\.' or empty\)"),
        ([(entry("b/."), b"x")], "is a file where the bundle's folder should be"),
        ([(entry("b/labels.json"), b"[]\n")], "appears twice"),
        ([(entry("b"), b"x")], "is a file where the bundle's folder should be"),
        ([(entry("c/x"), b"x")], "exactly one top folder"),
        ([(entry("b/link", tarfile.SYMTYPE, "model.onnx"), None)], "is a link"),
        ([(entry("b/hard", tarfile.LNKTYPE, "b/model.onnx"), None)], "is a link"),
        ([(entry("b/../x"), b"x")], "climbs out"),
        ([(entry("/b/x"), b"x")], "absolute path"),
        ([(entry("b/unlisted.bin"), b"x")], "'unlisted.bin' is not listed in the manifest"),
    ],
)
def test_bad_archive_layouts_are_refused_before_writing(tmp_path, extra, match):
    with pytest.raises(BundleError, match=match):
        _extract(tmp_path, _bundle_entries() + extra)


def test_a_dot_folder_entry_is_harmless(tmp_path):
    """``tar -C dist -czf x.tar.gz ./b`` writes a './' entry: that is a normal archive."""
    folder = _extract(tmp_path, [(entry(".", tarfile.DIRTYPE), None)] + _bundle_entries())
    assert folder.name == "b"


def test_too_many_entries(tmp_path):
    extra = [(entry(f"b/d{i}", tarfile.DIRTYPE), None) for i in range(1001)]
    with pytest.raises(BundleError, match="more than 1000 entries"):
        _extract(tmp_path, _bundle_entries() + extra)


def test_corrupt_and_foreign_archives(tmp_path):
    good = write_tar(tmp_path / "g.tar.gz", _bundle_entries())
    data = good.read_bytes()
    cases = {
        "truncated.tar.gz": data[: len(data) // 2],
        "flipped.tar.gz": data[:20] + bytes(b ^ 0x5A for b in data[20:40]) + data[40:],
        "empty.tar.gz": b"",
        "zip.tar.gz": b"PK\x03\x04" + bytes(100),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(BundleError, match="truncated or corrupt|not a readable|no b/manifest"):
            extract_bundle(tmp_path / name, tmp_path / f"d-{name}")


def test_a_stream_longer_than_its_header_is_cut(tmp_path):
    member = tarfile.TarInfo("b/model.onnx")
    member.size = 10
    with pytest.raises(BundleError, match="holds more data than its header"):
        _stream(io.BytesIO(bytes(11)), tmp_path / "out", 100, member, tmp_path / "a.tar.gz")
    with pytest.raises(BundleError, match="size cap"):
        _stream(io.BytesIO(bytes(10)), tmp_path / "out", 5, member, tmp_path / "a.tar.gz")


def _bombs(tmp_path) -> dict[str, tuple[Path, str]]:
    """Small .tar.gz files that expand to 400 MB, three ways."""
    files = dict(FILES)
    big = 400 * MB
    unlisted = write_tar(
        tmp_path / "unlisted.tar.gz", _bundle_entries() + [(entry("b/zeros.bin"), big)]
    )
    listed = write_tar(
        tmp_path / "resized.tar.gz",
        [
            (entry("b/manifest.json"), minimal_manifest(files)),
            (entry("b/labels.json"), files["labels.json"]),
            (entry("b/model.onnx"), big),
        ],
    )
    # No sizes in the manifest (allowed): the cap on the sum of the headers stops it.
    unsized = json.loads(minimal_manifest(files))
    del unsized["sizes"]
    capped = write_tar(
        tmp_path / "capped.tar.gz",
        [
            (entry("b/manifest.json"), json.dumps(unsized).encode()),
            (entry("b/labels.json"), files["labels.json"]),
            (entry("b/model.onnx"), big),
        ],
    )
    return {
        "unlisted": (unlisted, "'zeros.bin' is not listed in the manifest"),
        "resized": (listed, "'model.onnx' is 419430400 bytes, the manifest says 5"),
        "capped": (capped, "bytes, over the 104857600-byte cap"),
    }


def test_a_zip_bomb_is_refused_from_its_headers(tmp_path, codesign_home):
    """A ~400 kB file that expands to 400 MB: refused before a byte of it is written. The CLI
    runs with a 32 MB file-size limit: writing the entry would kill it (SIGXFSZ)."""
    bombs = _bombs(tmp_path)
    assert all(p.stat().st_size < 2 * MB for p, _ in bombs.values())

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 * MB, 32 * MB))

    env = dict(os.environ, CODESIGN_BUNDLE_MAX_BYTES=str(100 * MB))
    env["PYTHONPATH"] = str(PROJECT)
    for path, match in bombs.values():
        proc = subprocess.run(
            [sys.executable, "-m", "toolchain.cli", "deploy", "--target", "host", "--bundle", path],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            preexec_fn=limit,
            timeout=300,
        )
        assert proc.returncode == BundleError.exit_code, (proc.returncode, proc.stderr)
        assert proc.returncode != -signal.SIGXFSZ
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and match in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr
    nothing_left(codesign_home / "boards" / "host", codesign_home)


def test_the_size_cap_setting_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_BUNDLE_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="CODESIGN_BUNDLE_MAX_BYTES='lots'"):
        _extract(tmp_path, _bundle_entries())


# ---- failures mid-deploy ------------------------------------------------------------------------
class StoppedShell(LocalShell):
    """The host board, interrupted (Ctrl-C, or any bug) after ``after`` uploads."""

    def __init__(self, after: int, exc: BaseException) -> None:
        super().__init__("host (interrupted)")
        self.after, self.exc, self.uploads = after, exc, 0

    def upload(self, local, remote):
        if self.uploads >= self.after:
            raise self.exc
        self.uploads += 1
        super().upload(local, remote)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("a bug")])
def test_any_failure_mid_upload_removes_the_partial(bundle_run, host_board, codesign_home, exc):
    target = open_target("host")
    first = deploy(target, bundle_run.host)
    with pytest.raises(type(exc)):
        deploy(target, archive(bundle_run.host_other), shell=StoppedShell(3, exc))
    assert not list((host_board / "versions").glob("*.partial"))
    assert status(target)["current"] == first["version"]
    nothing_left(host_board, codesign_home)


# ---- other inputs of deploy and bench -----------------------------------------------------------
def test_bundle_paths_that_are_not_bundles(tmp_path, host_board):
    target = open_target("host")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match="is neither a folder nor a file"):
        deploy(target, fifo)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="is not a bundle"):
        deploy(target, tmp_path / "empty")


@pytest.mark.parametrize(
    "baseline, match",
    [
        (None, "holds NoneType"),
        ({}, "bad or missing 'summary'"),
        ([1, 2], "holds list"),
        ({"summary": {"stat_ms": 1.0}, "accuracy": [0.9]}, "bad or missing"),
        ({"summary": {"stat_ms": "fast"}, "accuracy": {}}, "bad or missing"),
        ({"summary": {"stat_ms": 1.0}, "accuracy": {"accuracy": "high"}}, "bad or missing"),
    ],
)
def test_malformed_baselines(bundle_run, tmp_path, cli, baseline, match, bench_cli):
    path = tmp_path / "base.json"
    path.write_text(json.dumps(baseline))
    res = bench_cli("host", bundle_run.host, tmp_path / "out.json", "--baseline", path, "--iterations", 5)
    assert res.exit_code == ConfigError.exit_code, res.output
    assert match in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("option, value", [("--iterations", 0), ("--blocks", 0), ("--warmup", -1)])
def test_bench_counts_are_checked(bundle_run, tmp_path, cli, option, value, bench_cli):
    res = bench_cli("host", bundle_run.host, tmp_path / "out.json", option, value)
    assert res.exit_code == ConfigError.exit_code, res.output
    assert f"{option} {value} must be a whole number" in res.output
