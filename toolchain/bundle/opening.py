"""Opening a bundle given on the command line: a folder or a .tar.gz, its manifest validated
(schema.py) and its signature judged (signing.py) before anything in it is extracted, copied
or run, then every file checked against its sha256."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..paths import codesign_home
from .manifest import verify_folder


@contextmanager
def open_bundle(path: Path, *, allow_unsigned: bool = False) -> Iterator[tuple[Path, dict, Any]]:
    """(folder, manifest, signing.Trust) of a checked bundle, from a folder or a .tar.gz
    (extracted to a scratch folder, removed afterwards). The manifest is validated and the
    signature judged before anything is extracted, copied or run (see signing.py)."""
    from .archive import extract_bundle
    from .manifest import read_manifest
    from .signing import check_folder, check_signature

    path = Path(path)
    if path.is_dir():
        read_manifest(path)  # types first: a malformed manifest is named as such
        trust = check_folder(path, allow_unsigned)
        yield path, verify_folder(path), trust
        return
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is neither a folder nor a file"
        raise BundleError(f"bundle {path} {what}; pass a bundle folder or its .tar.gz")
    judged = []

    def check(manifest_bytes: bytes, sig_bytes: bytes | None) -> None:
        judged.append(check_signature(manifest_bytes, sig_bytes, str(path), allow_unsigned))

    with scratch_dir("bundle") as tmp:
        folder = extract_bundle(path, tmp, check=check)
        yield folder, verify_folder(folder), judged[0]


@contextmanager
def scratch_dir(kind: str) -> Iterator[Path]:
    """A folder under ``$CODESIGN_HOME/tmp`` named after this process, removed on the way out.
    A process killed outright cannot remove its own, so each call first removes those of
    processes that no longer exist."""
    base = codesign_home() / "tmp"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(
            f"cannot create {base} ({exc.strerror or exc}); check CODESIGN_HOME"
        ) from exc
    for old in base.glob(f"{kind}-*-*"):
        try:
            pid = int(old.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-{os.getpid()}-", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True
