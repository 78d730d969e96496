"""The learn report's peak_rss_bytes is the runner's own peak, not its parent's: on Linux
ru_maxrss survives exec, so a runner started by a large process (the host target's codesign,
~1.2 GB in bench-personalise) used to report the parent's RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BOARD = Path(__file__).resolve().parents[2] / "toolchain" / "bundle"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_runner_peak_rss_is_its_own_not_its_parents():
    ballast = bytearray(400 * 2**20)
    ballast[:: 4096] = b"\x01" * len(ballast[:: 4096])  # touch every page: 400 MiB resident here
    code = (f"import sys; sys.path.insert(0, {str(BOARD)!r}); import personalise_board as p; "
            "print(p.peak_rss_bytes())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    child = int(proc.stdout)
    assert 0 < child < 200 * 2**20, child  # a bare interpreter + numpy-free module: tens of MiB
    del ballast
