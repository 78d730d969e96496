"""Reproducible ``.tar.gz`` of a bundle folder, and an extractor that refuses unsafe entries.

Byte-identical on rebuild: entries sorted, one fixed mtime, uid/gid 0 with empty owner
names, fixed modes, ustar headers (no pax atime/ctime), and a gzip header without file name
or time stamp.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import BundleError, ConfigError
from .schema import MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE, parse_manifest

# 1980-01-01T00:00:00Z: what reproducible-build tooling uses for "no time"; zip cannot go lower.
FIXED_MTIME = 315532800
EXECUTABLE = ("runner.py",)
MAX_MEMBERS = 1000
_REBUILD = "rebuild it with 'codesign bundle'"
MAX_BYTES_ENV = "CODESIGN_BUNDLE_MAX_BYTES"
DEFAULT_MAX_BYTES = 4 << 30


def archive_path(folder: Path) -> Path:
    folder = Path(folder)
    return folder.with_name(folder.name + ".tar.gz")


def _mode(rel: str) -> int:
    return 0o755 if PurePosixPath(rel).name in EXECUTABLE else 0o644


def write_archive(folder: Path, dest: Path | None = None) -> Path:
    """``folder`` → ``dest`` (default ``<folder>.tar.gz``), every entry under ``<folder name>/``."""
    folder = Path(folder)
    dest = Path(dest) if dest else archive_path(folder)
    files = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in files:
            info = tarfile.TarInfo(f"{folder.name}/{rel}")
            info.size = (folder / rel).stat().st_size
            info.mtime = FIXED_MTIME
            info.mode = _mode(rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(folder / rel, "rb") as fh:
                tar.addfile(info, fh)
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
            gz.write(raw.getvalue())
    os.replace(tmp, dest)
    return dest


def max_bundle_bytes() -> int:
    """The cap on a bundle's expanded size: ``CODESIGN_BUNDLE_MAX_BYTES`` or 4 GiB (an ONNX
    model file is at most 2 GiB; the rest of a bundle is small)."""
    raw = os.environ.get(MAX_BYTES_ENV)
    if raw is None:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise ConfigError(f"{MAX_BYTES_ENV}={raw!r} must be a positive number of bytes")
    return value


def _check_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    name = member.name
    path = PurePosixPath(name)
    where = f"{archive}: entry {name!r}"
    if name.startswith("/") or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise BundleError(
            f"{where} has an absolute path; refusing to extract an unsafe bundle: {_REBUILD}"
        )
    if ".." in path.parts or "\\" in name:
        raise BundleError(
            f"{where} climbs out with '..'; refusing to extract an unsafe bundle: {_REBUILD}"
        )
    if member.issym() or member.islnk():
        raise BundleError(f"{where} is a link; refusing to extract an unsafe bundle: {_REBUILD}")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise BundleError(
            f"{where} is a device or fifo; refusing to extract an unsafe bundle: {_REBUILD}"
        )
    if not (member.isfile() or member.isdir()):
        raise BundleError(
            f"{where} is not a regular file or folder; refusing to extract it: {_REBUILD}"
        )
    if member.issparse():
        raise BundleError(f"{where} is a sparse file; refusing to extract it: {_REBUILD}")
    if (not path.parts and not member.isdir()) or "\x00" in name:
        raise BundleError(
            f"{where} has no usable name ('.' or empty); refusing to extract it: {_REBUILD}"
        )
    return path


def _members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """The entries, read one header at a time so that a flood of entries stops at the cap."""
    out = []
    try:
        for member in tar:
            out.append(member)
            if len(out) > MAX_MEMBERS:
                raise BundleError(
                    f"{archive} has more than {MAX_MEMBERS} entries; a bundle has about ten: "
                    "refusing it (rebuild it with 'codesign bundle')"
                )
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise BundleError(f"{archive} is truncated or corrupt ({exc}); rebuild it") from exc
    return out


def _layout(members, paths, archive: Path) -> tuple[str, dict[str, tarfile.TarInfo]]:
    """(top folder, {path below it: file entry}); BundleError for anything but one folder of
    distinct files (no entry twice, no name that is both a file and a folder)."""
    tops = {p.parts[0] for p in paths if p.parts}  # a '.' folder entry holds nothing
    if len(tops) != 1:
        raise BundleError(
            f"{archive}: a bundle holds exactly one top folder, found {sorted(tops) or 'none'}; "
            f"{_REBUILD}"
        )
    top = tops.pop()
    files: dict[str, tarfile.TarInfo] = {}
    dirs: set[str] = set()
    seen: set[str] = set()
    for member, path in zip(members, paths, strict=True):
        if not path.parts:
            continue
        rel = "/".join(path.parts[1:])
        if member.isdir():
            dirs.add(rel)
        elif rel in seen:
            raise BundleError(
                f"{archive}: entry {member.name!r} appears twice; refusing it: {_REBUILD}"
            )
        elif not rel:
            raise BundleError(
                f"{archive}: entry {member.name!r} is a file where the bundle's folder should "
                f"be; refusing it: {_REBUILD}"
            )
        else:
            seen.add(rel)
            files[rel] = member
        dirs.update("/".join(path.parts[1:i]) for i in range(1, len(path.parts)))
    clash = sorted(set(files) & dirs)
    if clash:
        raise BundleError(
            f"{archive}: {top}/{clash[0]} is both a file and a folder; refusing it: {_REBUILD}"
        )
    return top, files


def _read_entry(tar: tarfile.TarFile, member, limit: int, archive: Path) -> bytes:
    try:
        src = tar.extractfile(member)
        data = src.read(limit + 1) if src is not None else b""
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise BundleError(f"{archive} is truncated or corrupt ({exc}); rebuild it") from exc
    return data


def _check_contents(archive: Path, files: dict, manifest: dict, max_bytes: int) -> None:
    """Every file entry is listed in the manifest, with the size it gives, and the whole fits
    the cap: all from the tar headers, before a byte is written."""
    listed = manifest["files"]
    sizes = manifest.get("sizes") or {}
    for rel, member in sorted(files.items()):
        if rel in (MANIFEST, SIGNATURE):
            continue
        if rel not in listed:
            raise BundleError(
                f"{archive}: entry {rel!r} is not listed in the manifest; the bundle was "
                "modified: rebuild it with 'codesign bundle'"
            )
        if rel in sizes and member.size != sizes[rel]:
            raise BundleError(
                f"{archive}: entry {rel!r} is {member.size} bytes, the manifest says "
                f"{sizes[rel]}; the bundle was modified: rebuild it with 'codesign bundle'"
            )
    missing = sorted(set(listed) - set(files))
    if missing:
        raise BundleError(
            f"{archive}: {missing[0]!r} is listed in the manifest but not in the archive; "
            "rebuild it with 'codesign bundle'"
        )
    total = sum(m.size for m in files.values())
    if total > max_bytes:
        raise BundleError(
            f"{archive} expands to {total} bytes, over the {max_bytes}-byte cap; refusing it "
            f"(raise {MAX_BYTES_ENV} if a bundle really is that large)"
        )


def _stream(src, out: Path, budget: int, member, archive: Path) -> int:
    """Copy one entry, never more than its header's size nor the remaining budget."""
    allowed = min(member.size, budget)
    written = 0
    with open(out, "wb") as fh:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            written += len(block)
            if written > allowed:
                raise BundleError(
                    f"{archive}: entry {member.name!r} holds more data than its header or the "
                    f"size cap allows; refusing it: {_REBUILD}"
                )
            fh.write(block)
    return written


def extract_bundle(archive: Path, dest: Path, *, check=None, max_bytes: int | None = None) -> Path:
    """Extract a bundle archive into ``dest``; return the bundle folder inside it.

    Before anything is written: every entry must be a regular file or folder under one top
    folder (no absolute path, ``..``, link, device or fifo, no name twice or as both file and
    folder), at most MAX_MEMBERS entries; the manifest must be valid (schema.py) and list
    exactly the archive's files with their sizes; the sizes must sum to at most
    ``max_bytes``; and ``check(manifest_bytes, signature_bytes or None)``, when given (the
    signature check), must pass. Writing is capped again while streaming. The folder is then
    checked against its manifest's hashes. BundleError for every refusal, with ``dest`` left
    as it was."""
    from .manifest import verify_folder

    archive = Path(archive)
    dest = Path(dest)
    cap = max_bundle_bytes() if max_bytes is None else max_bytes
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise BundleError(
            f"{archive} is not a readable .tar.gz bundle ({exc}); rebuild it"
        ) from exc
    with tar:
        members = _members(tar, archive)
        paths = [_check_member(m, archive) for m in members]
        top, files = _layout(members, paths, archive)
        if MANIFEST not in files:
            raise BundleError(
                f"{archive} has no {top}/{MANIFEST}; it is not a bundle: build one with "
                "'codesign bundle'"
            )
        manifest_bytes = _read_entry(tar, files[MANIFEST], MAX_MANIFEST_BYTES, archive)
        manifest = parse_manifest(manifest_bytes, f"{archive}: {MANIFEST}")
        _check_contents(archive, files, manifest, cap)
        sig = files.get(SIGNATURE)
        sig_bytes = _read_entry(tar, sig, 64 << 10, archive) if sig is not None else None
        if check is not None:
            check(manifest_bytes, sig_bytes)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / top
        if target.exists():
            raise BundleError(f"{target} already exists; extract into an empty folder")
        staging = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=dest))
        try:
            budget = cap
            for member, path in zip(members, paths, strict=True):
                out = staging.joinpath(*path.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    src = tar.extractfile(member)
                    if src is None:
                        raise BundleError(f"{archive}: entry {member.name!r} has no data")
                    with src:
                        budget -= _stream(src, out, budget, member, archive)
                except (tarfile.TarError, EOFError, zlib.error) as exc:
                    raise BundleError(
                        f"{archive} is truncated or corrupt ({exc}); rebuild it"
                    ) from exc
                except OSError as exc:
                    raise BundleError(f"{archive}: cannot extract {member.name!r} ({exc})") from exc
                os.chmod(out, 0o755 if member.mode & 0o100 else 0o644)
            (staging / top).mkdir(exist_ok=True)
            os.replace(staging / top, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    try:
        verify_folder(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
