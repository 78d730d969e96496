"""Personalisation over SSH on the stand-in Raspberry Pi (sshd in a network namespace whose
python3 is the emulated aarch64 rootfs): the board's own runner learns, the head switches, only
metrics come back, the uploaded examples are removed, and --rollback restores the shipped head.
Skips where the stand-in cannot run, as tests/bundle/test_ssh_board.py does."""

from __future__ import annotations

import json

import pytest

from toolchain.boards.registry import open_target
from toolchain.bundle.archive import archive_path
from toolchain.bundle.deploy import SshShell, deploy, status

pytestmark = [pytest.mark.slow, pytest.mark.emulator]


def test_learn_and_rollback_over_ssh_on_the_stand_in_board(bundle_run, rpi4_env, ssh_board, examples):
    target = open_target("rpi4")
    deploy(target, archive_path(bundle_run.rpi4))
    report = target.personalise(examples())
    assert report["ok"] and report["switched"], report["reason"]
    assert report["new_classes"] == ["colour"] and report["n_examples"] == 28
    assert report["after"]["per_class"]["colour"] > report["before"]["per_class"]["colour"] == 0.0
    # Measured on the board, and marked: its python3 runs under qemu-user.
    assert report["emulated"] is True and report["learn_ms"] > 0 and report["peak_rss_bytes"] > 0
    assert report["target"] == "rpi4" and "text" not in json.dumps(report)
    st = status(target)
    assert st["head"]["active"] == report["active"] != "shipped" and "colour" in st["head"]["labels"]
    # The examples' board-side copy is gone; the features stay on the board, in its state folder.
    shell = SshShell(target.transport())
    left = shell.run(["ls", "-A", "--", f"{rpi4_env}/state/incoming"])
    assert left.returncode == 0 and left.stdout.strip() == ""
    back = target.personalise(None, rollback=True)
    assert back["active"] == "shipped" and back["previous"] == report["active"]
    assert status(target)["head"]["active"] == "shipped"
