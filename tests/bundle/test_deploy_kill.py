"""A real ``codesign deploy`` killed with SIGKILL in the middle of copying a file: the board keeps
running the previous version (the switch is one rename), the half-copied upload is never taken
for a version, and the next deploy removes it and goes through."""

from __future__ import annotations

import os
import subprocess
import sys

from bundle_tamper import sigkill, start_pausing_deploy

from toolchain.boards.registry import open_target
from toolchain.bundle.archive import archive_path
from toolchain.bundle.deploy import deploy, rollback, status
from toolchain.bundle.manifest import bundle_id, read_manifest
from toolchain.errors import DeployError


def test_sigkill_mid_copy_keeps_the_previous_version(bundle_run, host_board, codesign_home):
    target = open_target("host")
    first = deploy(target, bundle_run.host)
    env = {
        "CODESIGN_HOME": str(codesign_home),
        "CODESIGN_TARGET_HOST_DEPLOY_DIR": str(host_board),
    }
    args = ["deploy", "--target", "host", "--bundle", archive_path(bundle_run.host_other)]
    proc = start_pausing_deploy(args, env, codesign_home.parent / "paused", pause_at=3)
    sigkill(proc)

    # It died mid-copy: a partial upload with a half-written file, and its scratch folder.
    partials = list((host_board / "versions").glob("*.partial"))
    assert len(partials) == 1 and partials[0].name.startswith(bundle_id(bundle_run.host_other)[:12])
    order = sorted(read_manifest(bundle_run.host_other)["files"])  # deploy's upload order
    assert sorted(p.name for p in partials[0].iterdir()) == sorted(order[:3])
    third = bundle_run.host_other / order[2]
    assert (partials[0] / order[2]).stat().st_size == third.stat().st_size // 2
    assert list((codesign_home / "tmp").glob(f"bundle-{proc.pid}-*"))
    # The board still runs the first version, whose self-check passes there.
    assert os.readlink(host_board / "current") == f"versions/{first['version']}"
    st = status(target)
    assert st["current"] == first["version"] and st["versions"] == [first["version"]]
    assert st["interrupted_uploads"] == [partials[0].name]
    check = subprocess.run(
        [sys.executable, str(host_board / "current" / "runner.py"), "--self-check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # The partial is no version to roll back to.
    try:
        rollback(target)
        raise AssertionError("rollback to a partial upload")
    except DeployError as exc:
        assert "no previous version" in str(exc)

    # A rerun deploys cleanly and removes what the killed one left.
    second = deploy(target, archive_path(bundle_run.host_other))
    assert second["previous"] == first["version"]
    assert not list((host_board / "versions").glob("*.partial"))
    assert not list((codesign_home / "tmp").glob(f"bundle-{proc.pid}-*"))
    st = status(target)
    assert st["current"] == second["version"] and st["interrupted_uploads"] == []
    assert sorted(st["versions"]) == sorted([first["version"], second["version"]])
