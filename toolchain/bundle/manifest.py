"""manifest.json: what a bundle is, what it was chosen on, and the sha256 of every file.

The manifest's own sha256 is the bundle's identity (``bundle_id``): it covers every other
file through their hashes, so two bundles with the same id hold the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import BundleError
from .schema import MANIFEST, MAX_MANIFEST_BYTES, SCHEMA_VERSION, SIGNATURE, parse_manifest

__all__ = ["MANIFEST", "SCHEMA_VERSION", "SIGNATURE", "bundle_id", "read_manifest"]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dumps(manifest: dict[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, fixed indentation, trailing newline (reproducible)."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def bundle_files(folder: Path) -> list[str]:
    """Every regular file below ``folder`` except the manifest and its signature, as sorted
    POSIX paths."""
    out = []
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in (MANIFEST, SIGNATURE) and "__pycache__" not in path.parts:
            out.append(rel)
    return out


def write_manifest(folder: Path, manifest: dict[str, Any]) -> str:
    """Fill in ``files`` (sha256) and ``sizes`` (bytes: lets extraction refuse an oversized
    entry from its tar header, before writing it) from ``folder``; write manifest.json; return
    the bundle id."""
    manifest = dict(manifest)
    names = bundle_files(folder)
    manifest["files"] = {name: sha256_file(folder / name) for name in names}
    manifest["sizes"] = {name: (folder / name).stat().st_size for name in names}
    data = dumps(manifest)
    (Path(folder) / MANIFEST).write_bytes(data)
    return sha256_bytes(data)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The validated manifest of a bundle folder (see schema.py), or BundleError."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{folder} is not a bundle (no {MANIFEST}); build one with 'codesign bundle'"
        )
    return parse_manifest(read_capped(path, MAX_MANIFEST_BYTES), str(path))


def read_capped(path: Path, limit: int) -> bytes:
    """At most ``limit`` + 1 bytes of ``path`` (the caller refuses the extra one)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"{path} is unreadable ({exc}); rebuild the bundle") from exc


def bundle_id(folder: Path) -> str:
    return sha256_file(Path(folder) / MANIFEST)


def verify_folder(folder: Path) -> dict[str, Any]:
    """Check every listed file against its sha256 and that no unlisted file is present;
    raise BundleError naming the first offender. Returns the manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    root = folder.resolve()
    for name, expected in sorted(manifest["files"].items()):
        path = (folder / name).resolve()
        if root not in path.parents:
            raise BundleError(f"{folder}: manifest entry {name!r} points outside the bundle")
        if not path.is_file():
            raise BundleError(f"{folder}: file {name!r} listed in the manifest is missing; rebuild")
        size = (manifest.get("sizes") or {}).get(name)
        if size is not None and path.stat().st_size != size:
            raise BundleError(
                f"{folder}: {name} is {path.stat().st_size} bytes, the manifest says {size}; "
                "the bundle was modified or corrupted: rebuild it with 'codesign bundle'"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{folder}: {name} has sha256 {actual[:16]}…, the manifest says {expected[:16]}…; "
                "the bundle was modified or corrupted: rebuild it with 'codesign bundle'"
            )
    extra = sorted(set(bundle_files(folder)) - set(manifest["files"]))
    extra = [e for e in extra if not Path(e).name.startswith(".")]
    if extra:
        raise BundleError(
            f"{folder}: files not listed in the manifest: {', '.join(extra)}; rebuild the bundle"
        )
    return manifest
