"""Target: how a board described by a TargetSpec is reached. One subclass per ``kind``.

The verbs are few and fixed (after microTVM's Project API): is it reachable, prepare it
(e.g. build an emulation root filesystem), and run the measuring agent on an artefact folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config.target_spec import TargetSpec


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    detail: str


class Target(ABC):
    """Behaviour for one kind of target. Subclasses register with ``@register_kind``."""

    kind: ClassVar[str]

    def __init__(self, spec: TargetSpec, *, emulate: bool = False) -> None:
        self.spec = spec
        self.emulate = emulate

    @abstractmethod
    def reachability(self) -> Reachability:
        """Whether the board answers now, without side effects."""

    def prepare(self) -> None:  # noqa: B027 - optional verb, most kinds need nothing
        """Make the target ready (build an emulator image...); idempotent."""

    @abstractmethod
    def run_agent(
        self, job_dir: Path, *, warmup: int, iterations: int, threads: int
    ) -> dict[str, Any]:
        """Run the on-board agent on a prepared job folder and return its JSON report."""
