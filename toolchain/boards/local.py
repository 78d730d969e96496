"""The host itself: the agent runs in a fresh Python subprocess, so each measurement starts
from a cold process and its peak RSS is the model's alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import TargetError
from .base import Reachability
from .linux import LinuxBoard
from .registry import register_kind
from .ssh_target import AGENT_PATH, parse_agent_report


@register_kind("local")
class LocalTarget(LinuxBoard):
    # The host is a shared machine whose load drifts: interleave three passes.
    default_passes = 3

    def reachability(self) -> Reachability:
        return Reachability(True, f"this machine ({sys.executable})")

    def open_shell(self):
        from ..bundle.deploy import LocalShell

        return LocalShell(f"{self.spec.name} (this machine)")

    def run_agent(self, job_dir: Path, *, warmup: int, iterations: int, threads: int) -> dict[str, Any]:
        argv = [sys.executable, str(AGENT_PATH), str(job_dir), "--warmup", str(warmup),
                "--iterations", str(iterations), "--threads", str(threads)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=self.spec.connection.command_timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(
                f"target '{self.spec.name}': the agent ran past {exc.timeout:.0f} s on {job_dir}; "
                "raise connection.command_timeout_s or lower --iterations"
            ) from exc
        return parse_agent_report(proc, f"{self.spec.name} (local)")


@register_kind("emulated")
class EmulatedLocalTarget(LocalTarget):
    """A target that only exists as an emulation run on this machine."""

    default_passes = 1
