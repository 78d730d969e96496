"""Target: how a board described by a TargetSpec is reached. One subclass per ``kind``.

The verbs are few and fixed (after microTVM's Project API and labgrid's protocols). A kind
implements the ones its boards support; the flows and the CLI call verbs and never branch on a
kind's name. A verb a kind does not implement is a one-line ``TargetError`` naming the kind.

- ``reachability()``: does the board answer now, without side effects;
- ``prepare()``: make it ready (an emulator image...), idempotent;
- ``measure(job_dir, ...)``: run the measuring agent on an exported artefact (Linux boards);
- ``run_head(head, features, ...)``: run an int8 head on upstream features (microcontrollers);
- ``deploy(bundle)``, ``rollback()``, ``status()``: install a bundle with an atomic switch;
- ``bench(folder, manifest, ...)``: the deployed bundle's raw latency samples;
- ``personalise(examples, ...)``: refit the deployed bundle's head on the user's labelled
  examples where they live (``rollback=True``: back to the head before the last switch).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config.target_spec import TargetSpec
from ..errors import TargetError

VERBS = ("prepare", "run_agent", "run_head", "deploy", "rollback", "status", "bench", "personalise")


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    detail: str


class Target(ABC):
    """Behaviour for one kind of target. Subclasses register with ``@register_kind``."""

    kind: ClassVar[str]
    # What `codesign profile` measures on this kind's boards: exported artefacts through the
    # agent ("artefact"), or int8 heads on upstream features ("head").
    measures: ClassVar[str] = "artefact"
    # Interleaved measuring passes per candidate by default: a dedicated board needs one (and
    # each extra agent start over SSH or serial costs seconds); a shared machine needs more.
    default_passes: ClassVar[int] = 1

    def __init__(self, spec: TargetSpec, *, emulate: bool = False) -> None:
        self.spec = spec
        self.emulate = emulate

    @classmethod
    def verbs(cls) -> frozenset[str]:
        """The verbs this kind implements (those it overrides)."""
        return frozenset(v for v in VERBS if getattr(cls, v) is not getattr(Target, v))

    def _unsupported(self, verb: str):
        have = ", ".join(sorted(self.verbs())) or "none"
        return TargetError(
            f"target '{self.spec.name}' (kind '{self.kind}') cannot {verb}; this kind supports: "
            f"{have}"
        )

    def uses_emulation(self) -> bool:
        """Whether measurements on this target come from an emulation (stated in records)."""
        return bool(self.emulate)

    @abstractmethod
    def reachability(self) -> Reachability:
        """Whether the board answers now, without side effects."""

    def prepare(self) -> None:  # noqa: B027 - optional verb, most kinds need nothing
        """Make the target ready (build an emulator image...); idempotent."""

    def run_agent(
        self, job_dir: Path, *, warmup: int, iterations: int, threads: int
    ) -> dict[str, Any]:
        """Run the on-board agent on a prepared job folder and return its JSON report."""
        raise self._unsupported("run an exported artefact (measure)")

    def run_head(self, *args, **kwargs):
        """Run an int8 head on features computed upstream (microcontrollers)."""
        raise self._unsupported("run an int8 head")

    # The unsupported verbs take the options the callers pass (allow_unsigned=, shell=...), so
    # a kind without the verb answers with the one-line error, not a TypeError.
    def deploy(self, bundle_path: Path, **options) -> dict[str, Any]:
        """Install a bundle: integrity and signature checks, self-check, atomic switch."""
        raise self._unsupported("deploy a bundle")

    def rollback(self, **options) -> dict[str, Any]:
        """Switch back to the previous deployed version."""
        raise self._unsupported("roll back a deployment")

    def status(self, **options) -> dict[str, Any]:
        """What is deployed and active."""
        raise self._unsupported("report its deployment status")

    def bench(self, folder: Path, manifest: dict, **options) -> dict[str, Any]:
        """Raw latency samples (and their unit) of a deployed bundle on this board."""
        raise self._unsupported("benchmark a bundle")

    def personalise(self, examples: Path | None, **options) -> dict[str, Any]:
        """Refit the deployed head on ``examples`` (text, label) and switch to it only if the
        old classes are kept; metrics only come back. ``rollback=True``: the previous head."""
        raise self._unsupported("personalise its head")
