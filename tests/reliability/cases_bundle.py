"""Malformed bundles given to ``codesign deploy --target host``, and a deploy killed mid-copy.

One real bundle is built per session (tiny random BERT, toy dataset, one candidate, unmeasured:
about ten seconds, the first time a case needs it); each case corrupts a copy of it in its own
folder. The host "board" of a case lives in that folder, so a partial upload would show up in
its before/after snapshot, as would anything left in ``$CODESIGN_HOME``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot

TESTS = Path(__file__).resolve().parents[1]
_CACHE: dict = {}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tamper = _load("codesign_bundle_tamper", TESTS / "bundle" / "bundle_tamper.py")


def _built() -> dict:
    """{"folder", "archive", "pub"}: the session's bundle, signed by a key of its own home."""
    if _CACHE:
        return _CACHE
    from toolchain.bundle.archive import archive_path
    from toolchain.bundle.build import build_bundle
    from toolchain.flows.run import RunConfig, run
    from toolchain.store.db import RecordStore, default_db_path

    helpers = _load("codesign_tests_root_conftest", TESTS / "conftest.py")
    base = Path(tempfile.mkdtemp(prefix="codesign-reliability-bundle-"))
    atexit.register(shutil.rmtree, base, True)
    saved = {k: os.environ.get(k) for k in ("CODESIGN_HOME", "CODESIGN_NO_PROGRESS")}
    os.environ.update(CODESIGN_HOME=str(base / "home"), CODESIGN_NO_PROGRESS="1")
    try:
        (base / "models").mkdir()
        model = helpers.save_tiny_bert(base / "models" / "tiny")
        data = helpers.write_toy_dataset(base / "data")
        run_dir, _ = run(
            RunConfig(
                models=(str(model),),
                dataset=str(data),
                max_combinations=1,
                heads=(("softmax", 3),),
                run_dir=str(base / "run"),
            )
        )
        with RecordStore(default_db_path()) as store:
            folder = build_bundle(
                run_dir, "host", base / "bundles", allow_unmeasured=True, store=store
            )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _CACHE.update(
        folder=folder,
        archive=archive_path(folder),
        pub=base / "home" / "keys" / "signing.pub",
    )
    return _CACHE


def _env(tmp: Path) -> dict:
    return {
        "CODESIGN_TRUSTED_KEYS": str(_built()["pub"]),
        "CODESIGN_TARGET_HOST_DEPLOY_DIR": str(tmp / "board"),
    }


def _state(tmp: Path) -> tuple[dict, dict]:
    return snapshot(tmp), snapshot(Path(os.environ["CODESIGN_HOME"]))


def _nothing_left(tmp: Path, before: tuple[dict, dict]) -> str:
    after = _state(tmp)
    left_behind(before[0], after[0])
    left_behind(before[1], after[1])
    assert not (tmp / "board").exists(), "the board was touched"
    return "nothing (no upload on the board, no scratch folder)"


def _deploy_error(tmp: Path, bundle: Path, expect: str) -> Outcome:
    before = _state(tmp)
    msg = cli_error(
        ["deploy", "--target", "host", "--bundle", bundle], expect=expect, env=_env(tmp)
    )
    return Outcome(msg, _nothing_left(tmp, before))


# ---- corrupt copies ----------------------------------------------------------------------------
def _manifest_case(change, expect: str):
    def run(tmp: Path) -> Outcome:
        bad = tamper.edit_manifest(tamper.copy_bundle(_built()["folder"], tmp), change)
        return _deploy_error(tmp, bad, expect)

    return run


def _drop(key):
    def change(m):
        del m[key]

    return change


def _set_first_file(value):
    def change(m):
        m["files"][sorted(m["files"])[0]] = value

    return change


def _tampered_runner(tmp: Path) -> Outcome:
    marker = tmp / "runner-ran"
    folder = tamper.tamper_runner(tamper.copy_bundle(_built()["folder"], tmp / "src"), marker)
    bad = tamper.archive(folder, tmp / "tampered.tar.gz")
    out = _deploy_error(tmp, bad, "does not match manifest.json")
    assert not marker.exists(), "the tampered runner.py ran"
    return out


def _unsigned(tmp: Path) -> Outcome:
    folder = tamper.copy_bundle(_built()["folder"], tmp)
    (folder / "manifest.sig").unlink()
    return _deploy_error(tmp, folder, "is not signed")


def _untrusted(tmp: Path) -> Outcome:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from toolchain.bundle.signing import sign_folder

    folder = tamper.copy_bundle(_built()["folder"], tmp)
    sign_folder(folder, Ed25519PrivateKey.generate())
    return _deploy_error(tmp, folder, "which is not trusted here")


def _retar(tmp: Path, extra) -> Path:
    """The real archive's entries plus ``extra`` (TarInfo, bytes | int | None)."""
    src = _built()["archive"]
    with tarfile.open(src) as tar:
        top = tar.getmembers()[0].name.split("/")[0]
        entries = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    extra = extra(top) if callable(extra) else extra
    return tamper.write_tar(tmp / "bad.tar.gz", entries + extra)


def _archive_case(extra, expect: str):
    def run(tmp: Path) -> Outcome:
        return _deploy_error(tmp, _retar(tmp, extra), expect)

    return run


def _truncated(tmp: Path) -> Outcome:
    data = _built()["archive"].read_bytes()
    bad = tmp / "truncated.tar.gz"
    bad.write_bytes(data[: len(data) // 2])
    return _deploy_error(tmp, bad, "truncated or corrupt")


def _bomb(tmp: Path) -> Outcome:
    """An entry of ~400 kB compressed that expands to 400 MB: refused from the headers
    (tests/bundle checks, under a file-size limit, that not a byte of it is written)."""
    bad = _retar(tmp, lambda top: [(tamper.entry(f"{top}/zeros.bin"), 400 << 20)])
    assert bad.stat().st_size - _built()["archive"].stat().st_size < 1 << 20
    return _deploy_error(tmp, bad, "'zeros.bin' is not listed in the manifest")


# ---- a deploy killed mid-copy -------------------------------------------------------------------
def _cli_ok(args: list, env: dict) -> str:
    from click.testing import CliRunner

    from toolchain.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args], env=env)
    assert res.exit_code == 0, res.output
    return res.output


def _killed_deploy(tmp: Path) -> Outcome:
    built, env = _built(), _env(tmp)
    board = tmp / "board"
    args = ["deploy", "--target", "host", "--bundle", built["archive"]]
    _cli_ok(args, env)
    first = os.readlink(board / "current")
    before = _state(tmp)
    flag_dir = Path(tempfile.mkdtemp(prefix="codesign-pause-"))
    try:
        proc = tamper.start_pausing_deploy(args, env, flag_dir / "paused", pause_at=3)
        tamper.sigkill(proc)
    finally:
        shutil.rmtree(flag_dir, ignore_errors=True)
    assert len(list(board.glob("versions/*.partial"))) == 1, "not killed mid-copy"
    assert os.readlink(board / "current") == first
    # What the user sees: the half-copied upload is no version to roll back to.
    msg = cli_error(
        ["deploy", "--target", "host", "--rollback"], expect="no previous version", env=env
    )
    assert first.split("/")[-1] in msg
    _cli_ok(args, env)  # the rerun goes through, and removes what the killed one left
    after = _state(tmp)
    second = os.readlink(board / "current")
    assert second != first and not list(board.glob("versions/*.partial"))
    left_behind(before[0], after[0], ignore=(f"board/{second}/",))
    left_behind(before[1], after[1])
    status = json.loads(_cli_ok(["status", "--target", "host", "--json"], env))
    assert status["interrupted_uploads"] == [] and len(status["versions"]) == 2
    return Outcome(
        msg,
        "the previous version stayed current; the rerun removed the partial upload "
        "and the killed process's scratch folder",
    )


_DEPLOY = "codesign deploy --target host --bundle "
CASES = [
    Case(
        "bundle",
        "manifest.json without candidate_id",
        _DEPLOY + "BUNDLE/",
        _manifest_case(_drop("candidate_id"), "'candidate_id' is missing"),
    ),
    Case(
        "bundle",
        'manifest "target": "host" (a string, not an object)',
        _DEPLOY + "BUNDLE/",
        _manifest_case(lambda m: m.update(target="host"), "'target' is a string"),
    ),
    Case(
        "bundle",
        "a files entry whose sha256 is the integer 7",
        _DEPLOY + "BUNDLE/",
        _manifest_case(_set_first_file(7), "is a number (7)"),
    ),
    Case(
        "bundle",
        "a files entry named ../../evil",
        _DEPLOY + "BUNDLE/",
        _manifest_case(
            lambda m: m["files"].update({"../../evil": "0" * 64}), "is not allowed in a bundle"
        ),
    ),
    Case(
        "bundle",
        "runner.py changed and manifest.json re-hashed",
        _DEPLOY + "tampered.tar.gz",
        _tampered_runner,
    ),
    Case("bundle", "no manifest.sig (unsigned)", _DEPLOY + "BUNDLE/", _unsigned),
    Case("bundle", "signed by a key not trusted here", _DEPLOY + "BUNDLE/", _untrusted),
    Case(
        "bundle",
        "tar.gz with a file and then a folder of the same name",
        _DEPLOY + "bad.tar.gz",
        _archive_case(
            lambda top: [(tamper.entry(f"{top}/labels.json", tarfile.DIRTYPE), None)],
            "is both a file and a folder",
        ),
    ),
    Case(
        "bundle",
        "tar.gz with '.' as a regular file",
        _DEPLOY + "bad.tar.gz",
        _archive_case([(tamper.entry("."), b"x")], "no usable name"),
    ),
    Case(
        "bundle",
        "tar.gz with a symbolic link to /etc/passwd",
        _DEPLOY + "bad.tar.gz",
        _archive_case(
            lambda top: [(tamper.entry(f"{top}/link", tarfile.SYMTYPE, "/etc/passwd"), None)],
            "is a link",
        ),
    ),
    Case(
        "bundle",
        "tar.gz with an entry climbing out with ..",
        _DEPLOY + "bad.tar.gz",
        _archive_case(lambda top: [(tamper.entry(f"{top}/../evil.txt"), b"x")], "climbs out"),
    ),
    Case(
        "bundle",
        "tar.gz with an absolute path",
        _DEPLOY + "bad.tar.gz",
        _archive_case([(tamper.entry("/tmp/evil.txt"), b"x")], "absolute path"),
    ),
    Case(
        "bundle",
        "tar.gz with an extra entry of 400 kB that expands to 400 MB",
        _DEPLOY + "bad.tar.gz",
        _bomb,
    ),
    Case("bundle", "a truncated tar.gz", _DEPLOY + "truncated.tar.gz", _truncated),
    Case(
        "interrupted work",
        "codesign deploy killed with SIGKILL in the middle of copying a file",
        _DEPLOY + "BUNDLE.tar.gz (killed), then --rollback",
        _killed_deploy,
    ),
]
