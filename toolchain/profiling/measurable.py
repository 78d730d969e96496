"""What the measuring runner needs of a board: its spec and the ``run_agent`` verb.

The boards (``toolchain.boards``) sit above profiling and implement this; the runner depends on
the protocol only, so measuring never imports a board's transport."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..config.target_spec import TargetSpec


class Measurable(Protocol):
    spec: TargetSpec
    emulate: bool

    def run_agent(self, job_dir: Path, *, warmup: int, iterations: int, threads: int) -> dict[str, Any]:
        ...
