"""Deploying to microcontrollers: the blob over the framed serial protocol, with the history of
what was deployed kept on this host (the firmware holds one model and no metadata)."""

from __future__ import annotations

import json
import os
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import DeployError
from ..paths import codesign_home
from .deploy import _check_target, _Step, manifest_summary
from .manifest import bundle_id
from .opening import open_bundle


def _mcu_log_path(spec) -> Path:
    return codesign_home() / "deployments" / f"{spec.name}.json"


def _mcu_log(spec) -> dict:
    path = _mcu_log_path(spec)
    if not path.is_file():
        return {"history": []}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"history": []}


def _mcu_log_write(spec, data: dict) -> None:
    path = _mcu_log_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _keep_blob(spec, blob: bytes, selfcheck: str) -> Path:
    folder = codesign_home() / "deployments" / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{selfcheck}.blob"
    if not path.is_file():
        path.write_bytes(blob)
    return path


def content_crc(blob: bytes) -> str:
    """The blob's own CRC32 of its content (its last 4 bytes). The CRC32 of the *whole* blob,
    which ``mload`` and ``profile`` use, is the same for every blob (the CRC-32 residue of
    data followed by its own CRC), so it cannot tell two models apart."""
    return f"{struct.unpack('<I', blob[-4:])[0]:08x}"


def deploy_mcu(
    target, bundle_path: Path, *, link=None, allow_unsigned: bool = False
) -> dict[str, Any]:
    """Upload the bundle's blob over the framed protocol (per-chunk CRCs, whole-blob CRC32),
    which the firmware stages in its inactive slot and commits only when complete and intact;
    then run the firmware self-check against the bundle's expected CRC. An interrupted upload
    leaves the previous model active; a failed self-check re-uploads the previous model.

    The firmware has no "self-check the staged slot" command, so the check runs right after the
    commit; what runs is identified by its self-check CRC (see :func:`content_crc`).

    ``link``: an open, handshaken SerialLink (else one is opened with ``target.connect()``).
    The signature covers the blob through its sha256 in the manifest."""
    spec = target.spec
    with open_bundle(bundle_path, allow_unsigned=allow_unsigned) as (folder, manifest, trust):
        _check_target(manifest, spec)
        art = manifest.get("artefact") or {}
        if art.get("runtime") != "firmware":
            raise DeployError(
                f"bundle {bundle_path} is not an MCU bundle; rebuild it for '{spec.name}'"
            )
        blob = (folder / art["model"]).read_bytes()
        expected = manifest["self_check"]["firmware_selfcheck_crc32"]
        bid = bundle_id(folder)
        if link is None:
            with target.connect() as opened:
                result = _deploy_mcu_on(target, opened, blob, expected, bid, manifest)
        else:
            result = _deploy_mcu_on(target, link, blob, expected, bid, manifest)
        return dict(result, signature=trust.to_dict())


def _running(link) -> str | None:
    """The self-check CRC of the active model (None when the firmware has none)."""
    if link.active_model_crc() is None:
        return None
    return f"{link.self_check().crc:08x}"


def _deploy_mcu_on(target, link, blob, expected: str, bid, manifest) -> dict[str, Any]:
    from ..errors import TransportError

    spec = target.spec
    try:
        before = _running(link)
    except TransportError as exc:
        raise DeployError(
            f"deploy of bundle {bid[:12]} to '{spec.name}' failed at step 2 "
            f"(read the active model): {exc}; nothing was changed"
        ) from exc
    still = f"the model with self-check CRC {before}" if before else "no model"
    step = _Step(spec, bid[:12], still, done=2)
    with step("upload (staged, CRC-checked) and commit"):
        try:
            link.upload_model(blob)
        except TransportError as exc:
            raise DeployError(str(exc)) from exc
    with step("self-check on the device"):
        try:
            check = link.self_check(timeout_s=spec.connection.command_timeout_s)
        except TransportError as exc:
            raise DeployError(str(exc)) from exc
        if f"{check.crc:08x}" != expected:
            restored = _restore_mcu(target, link, before)
            raise DeployError(
                f"firmware self-check gave CRC {check.crc:08x}, the bundle expects {expected} "
                f"(the firmware's int8 kernels disagree with the reference); {restored}"
            )
    log_data = _mcu_log(spec)
    entry = {
        "bundle_id": bid,
        "candidate_id": manifest["candidate_id"],
        "model_crc32": content_crc(blob),
        "selfcheck_crc32": expected,
        "deployed_at": datetime.now(timezone.utc).isoformat(),
        "previous_selfcheck_crc32": before,
        "manifest": manifest_summary(manifest),
        "device": link.url,
        "blob": str(_keep_blob(spec, blob, expected)),
    }
    log_data["history"] = (log_data.get("history") or [])[-19:] + [entry]
    _mcu_log_write(spec, log_data)
    return {
        "target": spec.name,
        "bundle_id": bid,
        "model_crc32": entry["model_crc32"],
        "previous_crc32": before,
        "device": link.url,
        "emulated": target.uses_emulation(),
        "self_check": {"crc32": f"{check.crc:08x}", "n": check.n, "passed": True},
    }


def _restore_mcu(target, link, selfcheck: str | None) -> str:
    if selfcheck is None:
        return "the device had no model before"
    path = codesign_home() / "deployments" / target.spec.name / f"{selfcheck}.blob"
    if not path.is_file():
        return f"the previous model ({selfcheck}) is not kept here; deploy a known-good bundle"
    link.upload_model(path.read_bytes())
    return f"the previous model ({selfcheck}) was re-uploaded and is active again"


def rollback_mcu(target, *, link=None) -> dict[str, Any]:
    spec = target.spec
    history = _mcu_log(spec).get("history") or []
    if len(history) < 2:
        raise DeployError(
            f"target '{spec.name}' has no earlier deployment recorded in "
            f"{_mcu_log_path(spec)}; deploy a bundle instead"
        )
    prev = history[-2]
    blob = Path(prev["blob"]).read_bytes()

    def go(lk):
        lk.upload_model(blob)
        return lk.self_check(timeout_s=spec.connection.command_timeout_s)

    if link is None:
        with target.connect() as opened:
            check = go(opened)
    else:
        check = go(link)
    if f"{check.crc:08x}" != prev["selfcheck_crc32"]:
        raise DeployError(
            f"rollback on '{spec.name}': the restored model's self-check gave "
            f"{check.crc:08x}, expected {prev['selfcheck_crc32']}"
        )
    entry = dict(prev, deployed_at=datetime.now(timezone.utc).isoformat(), rollback=True)
    data = _mcu_log(spec)
    data["history"] = history[-19:] + [entry]
    _mcu_log_write(spec, data)
    return {
        "target": spec.name,
        "current": prev["bundle_id"][:12],
        "previous": history[-1]["bundle_id"][:12],
        "self_check": f"{check.crc:08x}",
    }


def status_mcu(target, *, link=None) -> dict[str, Any]:
    """What the firmware runs (identified by its self-check CRC), matched with the
    deployments recorded on this host."""
    spec = target.spec
    if link is None:
        with target.connect() as opened:
            running, url = _running(opened), opened.url
    else:
        running, url = _running(link), link.url
    history = _mcu_log(spec).get("history") or []
    match = next((h for h in reversed(history) if h.get("selfcheck_crc32") == running), None)
    out = {
        "target": spec.name,
        "device": url,
        "active_selfcheck_crc32": running,
        "active_model_crc32": (match or {}).get("model_crc32"),
        "emulated": target.uses_emulation(),
        "deployed": match,
        "manifest": (match or {}).get("manifest"),
        "last_recorded": history[-1] if history else None,
    }
    if target.uses_emulation():
        out["note"] = (
            "the emulated firmware starts afresh for each connection, so it holds no "
            "model between commands; 'last_recorded' is what was deployed last"
        )
    return out
