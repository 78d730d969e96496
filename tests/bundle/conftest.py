"""Fixtures for the bundle/deploy/bench tests.

One run directory per session (tiny random BERT, toy TSV dataset, five combinations, softmax
heads), measured on the host by the co-design loop so that its selection has a cost record,
and the bundles built from it: the host (measured), a second host candidate, the rpi4
(unmeasured there) and the mcu-pty board. The stand-in SSH board comes from tests/ssh's
helpers (slow tests only).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SSH_TESTS = Path(__file__).resolve().parents[1] / "ssh"


@dataclass
class BundleRun:
    home: Path
    run_dir: Path
    db: Path
    selected: str
    other: str  # a second candidate with a trained head
    host: Path  # bundle folders (each with a .tar.gz beside it)
    host_other: Path
    rpi4: Path
    mcu: Path | None
    mcu_other: Path | None

    def store(self):
        from toolchain.store.db import RecordStore

        return RecordStore(self.db)

    @property
    def key(self) -> Path:
        """The private key the session's bundles were signed with (codesign's own key in
        ``home``, generated on first use by the first build)."""
        return self.home / "keys" / "signing.key"


def _firmware_tools() -> bool:
    return bool(shutil.which("make") and shutil.which("cc"))


@pytest.fixture(scope="session")
def bundle_run(tiny_bert, toy_spec, tmp_path_factory) -> BundleRun:
    from toolchain.boards.registry import open_target
    from toolchain.bundle.build import build_bundle
    from toolchain.flows.bundle import bundle_for_target
    from toolchain.flows.loop import co_design
    from toolchain.flows.run import RunConfig, run
    from toolchain.report.write import read_leaderboard
    from toolchain.store.db import RecordStore

    base = tmp_path_factory.mktemp("bundle-run")
    home = base / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODESIGN_HOME", str(home))
        mp.setenv("CODESIGN_NO_PROGRESS", "1")
        run_dir, _ = run(
            RunConfig(
                models=(str(tiny_bert),),
                dataset=str(toy_spec),
                max_combinations=5,
                heads=(("softmax", 3),),
                run_dir=str(base / "run"),
            )
        )
        from toolchain.store.db import default_db_path

        db = default_db_path()  # the CLI's store under this CODESIGN_HOME
        with RecordStore(db) as store:
            summary = co_design(
                run_dir,
                open_target("host"),
                store,
                rounds=1,
                top_k=1,
                precisions=("fp32",),
                iterations=5,
                warmup=1,
            )
            selected = summary["selected"]
            heads = sorted(p.stem for p in (run_dir / "heads").glob("*.safetensors"))
            other = next(h for h in heads if h != selected)
            out = base / "bundles"
            host = build_bundle(run_dir, "host", out, store=store)
            host_other = build_bundle(
                run_dir,
                "host",
                out / "other",
                candidate_id=other,
                allow_unmeasured=True,
                store=store,
            )
            # Never profiled there: the bundle flow predicts rpi4's own selection first.
            rpi4 = bundle_for_target(run_dir, open_target("rpi4"), out, allow_unmeasured=True,
                                     store=store)
            mcu = mcu_other = None
            if _firmware_tools():
                mcu = bundle_for_target(run_dir, open_target("mcu-pty"), out,
                                        allow_unmeasured=True, store=store)
                mcu_other = build_bundle(
                    run_dir,
                    "mcu-pty",
                    out / "other",
                    candidate_id=other,
                    allow_unmeasured=True,
                    store=store,
                )
        read_leaderboard(run_dir)
    return BundleRun(home, run_dir, db, selected, other, host, host_other, rpi4, mcu, mcu_other)


@pytest.fixture(autouse=True)
def _trust_the_session_bundles(request, monkeypatch):
    """Each test has its own CODESIGN_HOME, so codesign's own key there is not the one that
    signed the session's bundles: trust that one, as a user trusts a CI machine's key."""
    if "bundle_run" in request.fixturenames:
        run = request.getfixturevalue("bundle_run")
        monkeypatch.setenv("CODESIGN_TRUSTED_KEYS", str(run.home / "keys" / "signing.pub"))


@pytest.fixture
def host_board(tmp_path, monkeypatch) -> Path:
    """The host as a deployment target, rooted in this test's tmp dir."""
    root = tmp_path / "board-root"
    monkeypatch.setenv("CODESIGN_TARGET_HOST_DEPLOY_DIR", str(root))
    return root


@pytest.fixture
def cli():
    """``cli(args) -> click Result``: the bundle commands with the main CLI's error handler
    (exit codes from the error tree), as cli.py registers them."""
    import click
    from click.testing import CliRunner

    from toolchain.cli import _adopt
    from toolchain.cli_bundle import COMMANDS

    @click.group()
    def group() -> None:
        pass

    for cmd in COMMANDS:
        group.add_command(_adopt(cmd))
    runner = CliRunner()
    return lambda args: runner.invoke(group, [str(a) for a in args])


@pytest.fixture
def bench_cli(cli):
    """``bench_cli(target, bundle, json_out, *options) -> click Result``: ``codesign bench`` through ``cli``."""
    return lambda target, bundle, out, *options: cli(["bench", "--target", target, "--bundle", bundle,
                                                      "--json", out, *options])


# ---- the stand-in SSH board (slow tests) ------------------------------------------------------------
@pytest.fixture(scope="session")
def ssh_board(tmp_path_factory):
    """tests/ssh's stand-in board (sshd in a netns, python3 = emulated aarch64)."""
    if str(SSH_TESTS) not in sys.path:
        sys.path.insert(0, str(SSH_TESTS))
    from ssh_helpers import start_board

    from toolchain.boards.emulation import DEFAULT_ROOTFS, prepare_rootfs

    missing = [
        t
        for t in ("sshd", "ssh", "scp", "ssh-keygen")
        if not shutil.which(t) and not Path("/usr/sbin", t).exists()
    ]
    if missing or not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")):
        pytest.skip(f"the stand-in board needs OpenSSH and qemu-user (missing: {missing})")
    cache = os.environ.get("CODESIGN_ROOTFS_CACHE")
    base = Path(cache) if cache else tmp_path_factory.mktemp("rootfs")
    if not (base / DEFAULT_ROOTFS / ".codesign-rootfs.json").is_file() and os.geteuid() != 0:
        pytest.skip("building the arm64 rootfs needs root; or set CODESIGN_ROOTFS_CACHE")
    rootfs = prepare_rootfs(DEFAULT_ROOTFS, dest=base / DEFAULT_ROOTFS)
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    except OSError as exc:
        pytest.skip(f"sshd needs /run/sshd: {exc}")
    board = start_board(rootfs, tmp_path_factory.mktemp("board"))
    board.rootfs = rootfs
    try:
        yield board
    finally:
        board.stop()


@pytest.fixture
def rpi4_env(ssh_board, tmp_path, monkeypatch):
    """Point targets/rpi4.toml at the stand-in board, deploying below this test's tmp dir."""
    for key, value in ssh_board.env("rpi4").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CODESIGN_ROOTFS_CACHE", str(ssh_board.rootfs.parent))
    root = tmp_path / "rpi4-root"
    monkeypatch.setenv("CODESIGN_TARGET_RPI4_DEPLOY_DIR", str(root))
    return root
