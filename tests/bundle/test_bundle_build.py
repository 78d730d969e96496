"""Building bundles: contents, the manifest, reproducibility, refusal of unmeasured candidates,
safe extraction, and the standalone runner."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from toolchain.bundle.archive import archive_path, extract_bundle, write_archive
from toolchain.bundle.build import build_bundle
from toolchain.bundle.manifest import SCHEMA_VERSION, read_manifest, verify_folder
from toolchain.errors import BundleError


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_linux_bundle_holds_what_the_issue_lists(bundle_run):
    folder = bundle_run.host
    names = {p.name for p in folder.iterdir()}
    assert {
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
        "labels.json",
        "reference.npz",
        "reference.json",
        "runner.py",
    } <= names
    m = read_manifest(folder)
    assert m["schema"] == SCHEMA_VERSION
    assert m["candidate_id"] == bundle_run.selected and m["candidate"]["precision"] == "fp32"
    assert m["target"]["name"] == "host" and len(m["target"]["hash"]) == 16
    assert m["target"]["spec"]["kind"] == "local"
    assert m["measured"] is True
    record = m["cost"]["record"]
    assert record["candidate_id"] == bundle_run.selected and record["target"] == "host"
    assert record["latency_ms_samples"] and m["cost"]["summary"]["median_ms"] > 0
    assert 0 <= m["val_acc"] <= 1 and "artefact" in m["val_acc_source"]
    assert m["versions"]["codesign"] and m["versions"]["runtime"]["validated_with"]
    assert m["versions"]["converter"]["torch"]
    assert set(m["files"]) == names - {"manifest.json", "manifest.sig"}
    assert m["sizes"] == {n: (folder / n).stat().st_size for n in m["files"]}
    for name, digest in m["files"].items():
        assert sha(folder / name) == digest
    assert json.loads((folder / "labels.json").read_text()) == ["negative", "positive"]
    assert verify_folder(folder)["candidate_id"] == bundle_run.selected


def test_mcu_bundle_has_blob_and_header(bundle_run):
    if bundle_run.mcu is None:
        pytest.skip("needs make and cc for the posix firmware")
    from toolchain.mcu.blob import from_blob

    m = read_manifest(bundle_run.mcu)
    assert m["artefact"]["runtime"] == "firmware" and m["measured"] is False
    blob = (bundle_run.mcu / "model.blob").read_bytes()
    head = from_blob(blob)
    assert head.in_dim == m["artefact"]["in_dim"]
    header = (bundle_run.mcu / "model.h").read_text()
    assert "cs_baked_blob" in header and m["artefact"]["model_crc32"] in header
    assert m["self_check"]["firmware_selfcheck_crc32"]


def test_rebuild_gives_the_same_sha256(bundle_run, tmp_path):
    # Same key, same bytes: ed25519 signatures are deterministic.
    with bundle_run.store() as store:
        again = build_bundle(
            bundle_run.run_dir, "host", tmp_path / "again", store=store, key=bundle_run.key
        )
        assert sha(archive_path(again)) == sha(archive_path(bundle_run.host))
        # Rebuilding into the same place is just as stable (the old folder is replaced).
        third = build_bundle(
            bundle_run.run_dir, "host", tmp_path / "again", store=store, key=bundle_run.key
        )
    assert sha(archive_path(third)) == sha(archive_path(bundle_run.host))
    with tarfile.open(archive_path(third)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
        (0, 0, "", "", 315532800)
    }


def test_unmeasured_candidate_is_refused(bundle_run, tmp_path):
    with bundle_run.store() as store:
        with pytest.raises(BundleError, match="codesign profile --target rpi4"):
            build_bundle(bundle_run.run_dir, "rpi4", tmp_path, store=store)
        with pytest.raises(BundleError, match="no measurement on target 'host'"):
            build_bundle(
                bundle_run.run_dir, "host", tmp_path, candidate_id=bundle_run.other, store=store
            )
    assert not any(tmp_path.iterdir()) or not list(tmp_path.glob("*.tar.gz"))
    assert read_manifest(bundle_run.rpi4)["measured"] is False


def test_unmeasured_refused_through_the_cli(bundle_run, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CODESIGN_HOME", str(bundle_run.home))
    res = cli(["bundle", "--target", "rpi4", "--run-dir", bundle_run.run_dir, "--out", tmp_path])
    assert res.exit_code != 0 and "--allow-unmeasured" in res.output
    res = cli(["bundle", "--target", "host", "--run-dir", bundle_run.run_dir, "--out", tmp_path])
    assert res.exit_code == 0, res.output
    assert sha(tmp_path / f"host-{bundle_run.selected}.tar.gz") == sha(
        archive_path(bundle_run.host)
    )


# ---- extraction ---------------------------------------------------------------------------------
def _tar(path: Path, entries) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


@pytest.mark.parametrize(
    "entry, why",
    [
        (_file("b/../../evil.txt"), "'..'"),
        (_file("../evil.txt"), "'..'"),
        (_file("/tmp/evil.txt"), "absolute"),
        (_special("b/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_special("b/hard", tarfile.LNKTYPE, "b/manifest.json"), "link"),
        (_special("b/dev", tarfile.CHRTYPE), "device"),
        (_special("b/fifo", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path, entry, why):
    archive = _tar(tmp_path / "bad.tar.gz", [_file("b/manifest.json", b"{}"), entry])
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match=why):
        extract_bundle(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or not any(dest.iterdir())


def test_extract_roundtrip_and_tampered_archive(bundle_run, tmp_path):
    folder = extract_bundle(archive_path(bundle_run.host), tmp_path / "x")
    assert verify_folder(folder)["candidate_id"] == bundle_run.selected
    # A tampered copy (a changed file re-archived) is refused on extraction: by its size in
    # the tar header when that changed (before anything is written), else by its sha256.
    labels = folder / "labels.json"
    original = labels.read_bytes()
    labels.write_bytes(original.replace(b"negative", b"negativX"))
    bad = write_archive(folder, tmp_path / "tampered.tar.gz")
    with pytest.raises(BundleError, match="labels.json has sha256"):
        extract_bundle(bad, tmp_path / "y")
    labels.write_text('["a", "b"]\n')
    bad = write_archive(folder, tmp_path / "resized.tar.gz")
    with pytest.raises(BundleError, match="'labels.json' is 11 bytes, the manifest says"):
        extract_bundle(bad, tmp_path / "z")
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())


# ---- the standalone runner ------------------------------------------------------------------------
BLOCK_TOOLCHAIN = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "toolchain" or name.startswith("toolchain."):
            raise ImportError("the runner must not import codesign")
sys.meta_path.insert(0, Block())
sys.argv = ["runner.py"] + sys.argv[1:]
try:
    runpy.run_path("runner.py", run_name="__main__")
finally:
    assert not any(m == "toolchain" or m.startswith("toolchain.") for m in sys.modules)
"""


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CODESIGN"))}
    return env


def test_runner_self_check_in_a_clean_process(bundle_run, tmp_path):
    folder = extract_bundle(archive_path(bundle_run.host), tmp_path)
    proc = subprocess.run(
        [sys.executable, "-I", "-c", BLOCK_TOOLCHAIN, "--self-check"],
        cwd=folder,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["passed"] and report["tokenizer_matches"]
    assert report["max_abs_prob"] <= report["tolerance"]["max_abs_prob"]
    # python3 -m runner, from the bundle folder: classify a text.
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "the film was really great"],
        cwd=folder,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["label"] in ("negative", "positive") and abs(sum(row["probs"]) - 1) < 1e-4


def test_runner_detects_a_modified_file(bundle_run, tmp_path):
    folder = extract_bundle(archive_path(bundle_run.host), tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    proc = subprocess.run(
        [sys.executable, "-I", "runner.py", "--self-check"],
        cwd=folder,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert "model.onnx" in json.loads(proc.stdout)["error"]
