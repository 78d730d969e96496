"""One lock per path, held across threads and processes.

``codesign profile --target A --target B`` runs one worker thread per board, and two codesign
processes may profile the same run at once. Both kinds of writer meet on the same files (the
run's leaderboard, an artefact folder), so a lock must exclude a thread of this process and
another process alike: a ``threading.Lock`` per path for the first, ``flock`` on the path for
the second. The lock is taken on a *directory* (the run, the artefact folder), which exists
anyway: no lock file is left behind.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX; elsewhere the in-process lock still serialises this process's threads
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_GUARD = threading.Lock()
_LOCKS: dict[str, threading.Lock] = {}


def _thread_lock(key: str) -> threading.Lock:
    with _GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


@contextmanager
def directory_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of directory ``path`` (created if missing) until the block ends."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    with _thread_lock(key):
        if fcntl is None:  # pragma: no cover
            yield
            return
        fd = os.open(key, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes, even if the process dies
            yield
        finally:
            os.close(fd)


@contextmanager
def file_claim(path: Path, wait: bool = False) -> Iterator[bool]:
    """Hold ``flock`` on the file ``path`` (created if missing) for the block; yields whether
    it is held. ``wait=False`` never blocks: another holder (a live process, or a thread of
    this one) means False at once. The kernel drops the lock when its holder dies, so a claim
    of a SIGKILLed writer is free again, with nothing to clean first.

    Used per chunk by concurrent extractions of one feature cache: a chunk another process is
    computing is skipped, not computed twice. The holder removes the file once its work is on
    disk; a leftover one is harmless (the next claimant takes it)."""
    path = Path(path)
    key = str(path.resolve())
    guard = _thread_lock(key)
    if not guard.acquire(blocking=wait):
        yield False
        return
    try:
        if fcntl is None:  # pragma: no cover
            yield True
            return
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)
    finally:
        guard.release()
