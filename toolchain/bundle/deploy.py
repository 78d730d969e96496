"""``codesign deploy`` / ``status`` / ``deploy --rollback``.

Linux boards (over SSH, or the host itself): the bundle is uploaded file by file into a new
``<root>/versions/<id>.partial`` folder, every hash is checked *on the board*
(``sha256sum --check``), the bundle's own runner runs its self-check there, and only then is
the folder renamed and the ``current`` symlink switched atomically (``ln -sfn`` to a temporary
name, then ``mv -T``, which is one rename(2)). ``previous`` keeps the version before, for
``rollback``. A failure at any step raises DeployError naming the step and leaves ``current``
as it was. Every remote command is an argument list; nothing is pasted into a shell line.

The deployment root is ``codesign`` in the login folder of the board, or
``$CODESIGN_TARGET_<NAME>_DEPLOY_DIR``; for the host and emulated boards it is
``$CODESIGN_HOME/boards/<name>``.

Microcontrollers: see :mod:`.deploy_mcu`. Opening and checking a bundle: :mod:`.opening`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import BundleError, DeployError, TargetError
from ..paths import codesign_home
from .manifest import MANIFEST, bundle_id
from .opening import open_bundle

log = logging.getLogger(__name__)
KEEP_VERSIONS = 3
_SAFE = re.compile(r"[A-Za-z0-9_.+/-]+")


# ---- the board's shell ---------------------------------------------------------------------------
class BoardShell:
    """What deploy needs from a board: run an argv, copy one file there. ``python3`` in an
    argv means the board's Python."""

    label = "board"
    emulated = False
    on_board = False  # a real board's login (relative deploy folder), not this machine

    def run(self, argv: Sequence[str], timeout: float | None = None) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def upload(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def checked(self, argv: Sequence[str], timeout: float | None = None) -> str:
        proc = self.run(argv, timeout)
        if proc.returncode != 0:
            raise TargetError(
                f"'{' '.join(argv)[:100]}' on {self.label} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-400:]}"
            )
        return proc.stdout


class SshShell(BoardShell):
    on_board = True

    def __init__(self, transport) -> None:
        self.transport = transport
        self.label = transport.label

    def run(self, argv, timeout=None):
        return self.transport.run(list(argv), timeout)

    def upload(self, local, remote):
        self.transport.upload(Path(local), remote)


class LocalShell(BoardShell):
    """The host as a board (and the emulated board: the same folders, its python3 emulated).

    ``python`` runs a ``python3 ...`` argv when given (an emulated board passes its qemu-user
    runner, ``boards.emulation.run_in_rootfs`` bound to its rootfs); otherwise this Python."""

    def __init__(self, label: str, *, python=None) -> None:
        self.label = label
        self.python = python
        self.emulated = python is not None

    def run(self, argv, timeout=None):
        argv = list(argv)
        if argv[0] == "python3":
            if self.python is not None:
                return self.python(["/usr/bin/python3", *argv[1:]], timeout=timeout or 600.0)
            argv[0] = sys.executable
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"'{argv[0]}' on {self.label} ran past {timeout} s") from exc
        except FileNotFoundError as exc:
            return subprocess.CompletedProcess(argv, 127, "", f"{argv[0]}: {exc}")

    def upload(self, local, remote):
        dest = Path(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        shutil.copymode(local, dest)


def deploy_root(spec, shell=None) -> str:
    env = "CODESIGN_TARGET_" + re.sub(r"[^A-Z0-9]", "_", spec.name.upper()) + "_DEPLOY_DIR"
    root = os.environ.get(env)
    if root is None:
        # On a board, relative to the login folder; on this machine (the host as a board, or a
        # board's qemu-user emulation) under CODESIGN_HOME, never the current directory.
        on_board = shell is not None and shell.on_board
        root = "codesign" if on_board else str(codesign_home() / "boards" / spec.name)
    root = root.rstrip("/") or "/"
    if not _SAFE.fullmatch(root) or root.startswith("-"):
        raise DeployError(f"deploy folder {root!r} ({env}) must use only [A-Za-z0-9_.+/-]")
    return root


def open_shell(target) -> BoardShell:
    """The board's shell, as its kind opens it (``target.open_shell()``)."""
    return target.open_shell()


# ---- the bundle on this side ----------------------------------------------------------------------
def _check_target(manifest: dict, spec) -> None:
    built_for = manifest.get("target", {}).get("name")
    if built_for != spec.name:
        raise DeployError(
            f"the bundle was built for target '{built_for}', not '{spec.name}'; build "
            f"one with 'codesign bundle --target {spec.name}'"
        )


class _Step:
    """Names the deployment step that failed, and what the board still runs."""

    def __init__(self, spec, bundle: str, still: str | None, done: int = 1) -> None:
        self.spec, self.bundle, self.still = spec, bundle, still
        self.number, self.name = done, ""  # step 1, checking the bundle here, is done

    @contextmanager
    def __call__(self, name: str):
        self.number += 1
        self.name = name
        try:
            yield
        except (TargetError, BundleError, DeployError, OSError) as exc:
            still = self.still or "nothing (no version was active)"
            raise DeployError(
                f"deploy of bundle {self.bundle} to '{self.spec.name}' failed at step "
                f"{self.number} ({name}): {exc}; the board keeps running {still}"
            ) from exc


def _runner_json(proc: subprocess.CompletedProcess, what: str) -> dict:
    report = runner_report(proc, what)
    if not report.get("ok"):
        raise DeployError(f"{what} failed ({report.get('error_kind')}): {report.get('error')}")
    return report


def runner_report(proc: subprocess.CompletedProcess, what: str) -> dict:
    """The JSON report on the runner's last stdout line, ``ok`` or not; a run that printed none
    (a crash, a board without the runtime) is a DeployError with the end of its output."""
    lines = [ln for ln in (proc.stdout or "").splitlines() if ln.strip()]
    try:
        report = json.loads(lines[-1]) if lines else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        err = (proc.stderr or proc.stdout or "").strip()[-600:]
        hint = (
            "; the board needs python3 with numpy, onnxruntime and tokenizers"
            if proc.returncode in (126, 127) or "No module named" in err
            else ""
        )
        raise DeployError(f"{what} exited {proc.returncode} without a report: {err}{hint}")
    return report


def _readlink(shell: BoardShell, path: str) -> str | None:
    proc = shell.run(["readlink", "--", path])
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and out else None


def _switch(shell: BoardShell, root: str, link: str, target: str) -> None:
    tmp = f"{root}/.{link}.tmp"
    shell.checked(["ln", "-sfn", target, tmp])
    shell.checked(["mv", "-T", "-f", tmp, f"{root}/{link}"])


def _version_name(link: str | None) -> str | None:
    return link.rsplit("/", 1)[-1] if link else None


def deploy(target, bundle_path: Path, **options) -> dict[str, Any]:
    """Deploy a bundle to ``target`` through its kind's ``deploy`` verb."""
    return target.deploy(Path(bundle_path), **options)


def rollback(target, **options) -> dict[str, Any]:
    """Switch the board back to its previous version (its kind's ``rollback`` verb)."""
    return target.rollback(**options)


def status(target, **options) -> dict[str, Any]:
    """What the board runs (its kind's ``status`` verb)."""
    return target.status(**options)


def deploy_linux(
    target,
    bundle_path: Path,
    *,
    shell: BoardShell | None = None,
    allow_unsigned: bool = False,
) -> dict[str, Any]:
    """Deploy a bundle folder or archive to a Linux board's shell; return what was done.

    Steps: (1) check the bundle here (manifest, signature, hashes), (2) prepare the board,
    (3) upload, (4) verify every hash on the board, (5) self-check on the board, (6) switch
    ``current``. Raises DeployError naming the failed step; ``current`` is untouched unless
    step 6 completed, and the partial upload is removed on every failure (a killed deploy's
    is removed by the next one)."""
    spec = target.spec
    with open_bundle(bundle_path, allow_unsigned=allow_unsigned) as (folder, manifest, trust):
        _check_target(manifest, spec)
        if (manifest.get("artefact") or {}).get("runtime") != "onnxruntime":
            raise DeployError(
                f"bundle {bundle_path} is not an onnxruntime bundle; rebuild it for '{spec.name}'"
            )
        bid = bundle_id(folder)
        shell = shell or target.open_shell()
        root = deploy_root(spec, shell)
        before = _version_name(_readlink(shell, f"{root}/current"))
        step = _Step(spec, bid[:12], before)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        version = f"{bid[:12]}-{stamp}"
        staging = f"{root}/versions/{version}.partial"
        final = f"{root}/versions/{version}"
        files = sorted(manifest["files"]) + [MANIFEST]
        with step("prepare the board"):
            shell.checked(["mkdir", "-p", "--", f"{root}/versions"])
            shell.run(
                [
                    "find",
                    f"{root}/versions",
                    "-mindepth",
                    "1",
                    "-maxdepth",
                    "1",
                    "-name",
                    "*.partial",
                    "-exec",
                    "rm",
                    "-rf",
                    "--",
                    "{}",
                    "+",
                ]
            )
            shell.checked(["mkdir", "--", staging])
        try:
            with step("upload"):
                subdirs = sorted({str(Path(f).parent) for f in files if "/" in f})
                for sub in subdirs:
                    shell.checked(["mkdir", "-p", "--", f"{staging}/{sub}"])
                for name in files:
                    shell.upload(folder / name, f"{staging}/{name}")
                with tempfile.TemporaryDirectory() as tmp:
                    sums = Path(tmp) / "sha256sums"
                    digests = dict(manifest["files"], **{MANIFEST: bid})
                    sums.write_text("".join(f"{digests[n]}  {staging}/{n}\n" for n in files))
                    shell.upload(sums, f"{staging}/.sha256sums")
                    record = Path(tmp) / "deploy.json"
                    record.write_text(
                        json.dumps(
                            {
                                "bundle_id": bid,
                                "version": version,
                                "candidate_id": manifest["candidate_id"],
                                "deployed_at": datetime.now(timezone.utc).isoformat(),
                                "deployed_from": os.uname().nodename,
                                "previous": before,
                                "signature": trust.to_dict(),
                            },
                            indent=2,
                        )
                    )
                    shell.upload(record, f"{staging}/.deploy.json")
            with step("verify hashes on the board"):
                proc = shell.run(
                    ["sha256sum", "--check", "--strict", "--quiet", f"{staging}/.sha256sums"]
                )
                if proc.returncode == 127:  # no coreutils: the runner checks the hashes itself
                    _runner_json(
                        shell.run(["python3", f"{staging}/runner.py", "--verify"]),
                        "runner --verify",
                    )
                elif proc.returncode != 0:
                    bad = (proc.stdout + proc.stderr).strip().splitlines()
                    raise DeployError(
                        "sha256 mismatch on the board: "
                        + "; ".join(bad[:5])
                        + " - the upload was corrupted or tampered with"
                    )
            with step("self-check on the board"):
                check = _runner_json(
                    shell.run(
                        ["python3", f"{staging}/runner.py", "--self-check"],
                        timeout=spec.connection.command_timeout_s,
                    ),
                    "the bundle's self-check",
                )
            with step("switch current"):
                shell.checked(["mv", "-T", "--", staging, final])
                if before and before != version:
                    _switch(shell, root, "previous", f"versions/{before}")
                _switch(shell, root, "current", f"versions/{version}")
        except BaseException:  # any failure, Ctrl-C included: no partial upload stays behind
            try:
                shell.run(["rm", "-rf", "--", staging])
            except TargetError as exc:  # the link is gone: the next deploy removes it
                log.warning("could not remove %s on %s: %s", staging, shell.label, exc)
            raise
        _prune(shell, root, keep={version, before})
    return {
        "target": spec.name,
        "bundle_id": bid,
        "version": version,
        "previous": before,
        "root": root,
        "board": shell.label,
        "emulated": shell.emulated,
        "self_check": check,
        "signature": trust.to_dict(),
    }


def _prune(shell: BoardShell, root: str, keep: set) -> None:
    """Remove all but the newest KEEP_VERSIONS versions (never current or previous)."""
    proc = shell.run(["ls", "-1", "--", f"{root}/versions"])
    if proc.returncode != 0:
        return
    names = [n for n in proc.stdout.split() if not n.endswith(".partial")]
    names.sort(key=lambda n: n.split("-", 1)[-1])  # version names end in a UTC stamp
    for name in names[:-KEEP_VERSIONS]:
        if name not in keep:
            shell.run(["rm", "-rf", "--", f"{root}/versions/{name}"])


def rollback_linux(target, *, shell: BoardShell) -> dict[str, Any]:
    """Switch ``current`` back to ``previous`` (after re-running its self-check)."""
    spec = target.spec
    root = deploy_root(spec, shell)
    current = _version_name(_readlink(shell, f"{root}/current"))
    previous = _version_name(_readlink(shell, f"{root}/previous"))
    if not previous:
        raise DeployError(
            f"target '{spec.name}' has no previous version to roll back to "
            f"(current: {current or 'none'}); deploy another bundle first"
        )
    step = _Step(spec, previous[:12], current, done=0)
    with step("self-check of the previous version"):
        _runner_json(
            shell.run(
                ["python3", f"{root}/versions/{previous}/runner.py", "--self-check"],
                timeout=spec.connection.command_timeout_s,
            ),
            f"self-check of {previous}",
        )
    with step("switch current"):
        _switch(shell, root, "current", f"versions/{previous}")
        if current:
            _switch(shell, root, "previous", f"versions/{current}")
    return {
        "target": spec.name,
        "current": previous,
        "previous": current,
        "root": root,
        "board": shell.label,
    }


def status_linux(target, *, shell: BoardShell) -> dict[str, Any]:
    """What the board runs: the current version, its manifest summary and deployment record."""
    spec = target.spec
    root = deploy_root(spec, shell)
    current = _version_name(_readlink(shell, f"{root}/current"))
    out: dict[str, Any] = {
        "target": spec.name,
        "board": shell.label,
        "root": root,
        "emulated": shell.emulated,
        "current": current,
        "previous": _version_name(_readlink(shell, f"{root}/previous")),
    }
    proc = shell.run(["ls", "-1", "--", f"{root}/versions"])
    names = sorted(proc.stdout.split()) if proc.returncode == 0 else []
    # An upload that was cut off (a killed deploy) is no version; the next deploy removes it.
    out["versions"] = [n for n in names if not n.endswith(".partial")]
    out["interrupted_uploads"] = [n for n in names if n.endswith(".partial")]
    if current:
        for name, key in ((MANIFEST, "manifest"), (".deploy.json", "deployed")):
            proc = shell.run(["cat", "--", f"{root}/current/{name}"])
            try:
                out[key] = json.loads(proc.stdout) if proc.returncode == 0 else None
            except ValueError:
                out[key] = None
        # Which head classifies: the shipped one, or one learned on the board (personalise).
        out["head"] = head_status(shell, root, (out.get("deployed") or {}).get("bundle_id"))
    return out


def head_status(shell: BoardShell, root: str, bundle_id: str | None) -> dict[str, Any]:
    """Which head the deployed bundle classifies with, read from its state file (no runner
    start): ``{"active": "shipped"}`` or the learned head's id, labels and switch time."""
    if not bundle_id:
        return {"active": "shipped"}
    path = f"{root}/state/{bundle_id[:16]}/active.json"
    proc = shell.run(["cat", "--", path])
    if proc.returncode != 0:
        return {"active": "shipped"}
    try:
        state = json.loads(proc.stdout)
    except ValueError:
        return {"active": "unknown", "error": f"{path} is not JSON"}
    return {k: state.get(k) for k in ("active", "previous", "switched_at", "labels", "n_user_examples",
                                      "learned_at") if k in state}


def manifest_summary(manifest: dict | None) -> dict:
    if not manifest:
        return {}
    cost = manifest.get("cost") or {}
    summary = cost.get("summary") or {}
    return {
        "candidate": manifest.get("candidate_description") or manifest.get("candidate_id"),
        "candidate_id": manifest.get("candidate_id"),
        "precision": (manifest.get("artefact") or {}).get("precision"),
        "val_acc": manifest.get("val_acc"),
        "measured": manifest.get("measured"),
        "latency_ms_median": summary.get("median_ms"),
        "codesign": (manifest.get("versions") or {}).get("codesign"),
    }
