"""The ``personalise`` verb on a Linux board (host, emulated, SSH, labgrid, fake): over the
board's shell, like deploy.

The examples file is uploaded into the deployment's ``state/incoming/`` folder, the deployed
bundle's own runner learns from it there (``runner.py --learn``), and the uploaded copy is
removed whatever happens: texts and features stay on the board (the runner keeps the features
of an accepted learn in its state folder); only the runner's metrics come back. The head's
``rollback`` goes through the same runner; ``status`` reads the state file (deploy.head_status).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ..errors import DatasetError, DeployError
from .deploy import BoardShell, _readlink, _version_name, deploy_root, runner_report


def _runner(shell: BoardShell, root: str, argv: list, timeout: float, what: str,
            names: tuple[str, str] | None = None) -> dict:
    """The runner's JSON report; an error names the user's own file (``names`` = the uploaded
    copy's path and the local one), never the board-side copy's random name."""
    proc = shell.run(["python3", f"{root}/current/runner.py", *argv], timeout)
    report = runner_report(proc, f"{what} on {shell.label}")
    if not report.get("ok"):
        kind, msg = report.get("error_kind"), str(report.get("error"))
        if names:
            msg = msg.replace(*names)
        if kind == "bad_examples":
            raise DatasetError(f"{msg} (nothing was switched)")
        raise DeployError(f"{what} on {shell.label} failed ({kind}): {msg}; nothing was switched")
    return report


def _current(target, shell: BoardShell) -> tuple[str, str]:
    root = deploy_root(target.spec, shell)
    current = _version_name(_readlink(shell, f"{root}/current"))
    if not current:
        raise DeployError(
            f"target '{target.spec.name}' runs no bundle; deploy one first "
            f"('codesign deploy --target {target.spec.name} --bundle B', or pass --bundle)"
        )
    return root, current


def personalise_linux(target, examples: Path, *, shell: BoardShell, max_anchor_drop: float | None = None,
                      holdout: float | None = None) -> dict[str, Any]:
    """Learn from ``examples`` on the board; return the runner's report plus where it ran."""
    examples = Path(examples)
    suffix = examples.suffix.lower()
    if not examples.is_file():
        raise DatasetError(f"{examples}: no such file; give a .jsonl or .csv file of text,label examples")
    root, current = _current(target, shell)
    # The board's runner tells the format by the suffix, so it travels (an odd one as
    # ".unknown": the runner's own error then names the allowed formats).
    safe = suffix if suffix[1:].isalnum() and len(suffix) <= 12 else ".unknown"
    remote = f"{root}/state/incoming/{uuid.uuid4().hex}{safe}"
    argv = ["--learn", remote]
    if max_anchor_drop is not None:
        argv += ["--max-anchor-drop", repr(float(max_anchor_drop))]
    if holdout is not None:
        argv += ["--holdout", repr(float(holdout))]
    shell.checked(["mkdir", "-p", "--", f"{root}/state/incoming"])
    try:
        shell.upload(examples, remote)
        report = _runner(shell, root, argv, target.spec.connection.command_timeout_s, "the learn",
                         names=(remote, str(examples)))
    finally:
        shell.run(["rm", "-f", "--", remote])
    report.update({"target": target.spec.name, "board": shell.label, "version": current,
                   "board_hash": target.spec.board_hash,
                   "emulated": bool(report.get("emulated") or shell.emulated)})
    return report


def head_rollback_linux(target, *, shell: BoardShell) -> dict[str, Any]:
    root, current = _current(target, shell)
    report = _runner(shell, root, ["--rollback"], target.spec.connection.command_timeout_s, "the head rollback")
    return dict(report, target=target.spec.name, board=shell.label, version=current)
