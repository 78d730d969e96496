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
from pathlib import Path, PurePosixPath

from ..errors import BundleError

# 1980-01-01T00:00:00Z: what reproducible-build tooling uses for "no time"; zip cannot go lower.
FIXED_MTIME = 315532800
EXECUTABLE = ("runner.py",)


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


def _check_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    name = member.name
    path = PurePosixPath(name)
    where = f"{archive}: entry {name!r}"
    if name.startswith("/") or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"{where} has an absolute path; refusing to extract an unsafe bundle")
    if ".." in path.parts or "\\" in name:
        raise BundleError(f"{where} climbs out with '..'; refusing to extract an unsafe bundle")
    if member.issym() or member.islnk():
        raise BundleError(f"{where} is a link; refusing to extract an unsafe bundle")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise BundleError(f"{where} is a device or fifo; refusing to extract an unsafe bundle")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"{where} is not a regular file or folder; refusing to extract it")
    return path


def extract_bundle(archive: Path, dest: Path) -> Path:
    """Extract a bundle archive into ``dest``; return the bundle folder inside it.

    Every entry must be a regular file or folder under one top folder; absolute paths,
    ``..``, symbolic and hard links, devices and fifos raise BundleError before anything is
    written. The extracted folder is then checked against its manifest."""
    from .manifest import verify_folder

    archive = Path(archive)
    dest = Path(dest)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (OSError, tarfile.TarError) as exc:
        raise BundleError(
            f"{archive} is not a readable .tar.gz bundle ({exc}); rebuild it"
        ) from exc
    with tar:
        try:
            members = tar.getmembers()
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise BundleError(f"{archive} is truncated or corrupt ({exc}); rebuild it") from exc
        paths = [_check_member(m, archive) for m in members]
        tops = {p.parts[0] for p in paths if p.parts}
        if len(tops) != 1:
            raise BundleError(
                f"{archive}: a bundle holds exactly one top folder, found {sorted(tops) or 'none'}"
            )
        top = tops.pop()
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / top
        if target.exists():
            raise BundleError(f"{target} already exists; extract into an empty folder")
        staging = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=dest))
        try:
            for member, path in zip(members, paths, strict=True):
                out = staging.joinpath(*path.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise BundleError(f"{archive}: entry {member.name!r} has no data; rebuild it")
                with src, open(out, "wb") as fh:
                    shutil.copyfileobj(src, fh)
                os.chmod(out, 0o755 if member.mode & 0o100 else 0o644)
            os.replace(staging / top, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    verify_folder(target)
    return target
