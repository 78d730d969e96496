"""``codesign personalise``: refit a deployed bundle's head on the user's examples, on the board.

With ``bundle``, the board is first made to run that bundle (deployed through the kind's deploy
verb unless it already is the current one). The learning itself is the kind's ``personalise``
verb: on a Linux board the bundle's own runner learns where the bundle runs (host, emulated
board, SSH), and only its metrics come back. The report is written to ``json_out`` when given
(whole or not at all: a temporary file renamed into place).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..bundle.deploy import deploy, status
from ..bundle.opening import open_bundle
from ..errors import ConfigError


def _bundle_id(bundle: Path, allow_unsigned: bool) -> str:
    from ..bundle.manifest import bundle_id

    with open_bundle(bundle, allow_unsigned=allow_unsigned) as (folder, _manifest, _trust):
        return bundle_id(folder)


def ensure_deployed(target, bundle: Path, allow_unsigned: bool = False) -> dict[str, Any] | None:
    """Deploy ``bundle`` unless the board already runs it; the deploy result, or None."""
    wanted = _bundle_id(bundle, allow_unsigned)
    running = (status(target).get("deployed") or {}).get("bundle_id")
    if running == wanted:
        return None
    return deploy(target, bundle, allow_unsigned=allow_unsigned)


def write_report(path: Path, report: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(report, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def personalise(target, examples: Path | None, *, bundle: Path | None = None, rollback: bool = False,
                max_anchor_drop: float | None = None, holdout: float | None = None,
                json_out: Path | None = None, allow_unsigned: bool = False) -> dict[str, Any]:
    if rollback == (examples is not None):
        raise ConfigError("give exactly one of --examples FILE or --rollback")
    deployed = ensure_deployed(target, Path(bundle), allow_unsigned) if bundle is not None else None
    if rollback:
        report = target.personalise(None, rollback=True)
    else:
        report = target.personalise(Path(examples), max_anchor_drop=max_anchor_drop, holdout=holdout)
    if deployed is not None:
        report["deployed"] = {k: deployed.get(k) for k in ("bundle_id", "version", "previous")}
    if json_out is not None:
        write_report(json_out, report)
    return report
