"""Linux boards (the host, SSH boards and their emulation, labgrid farms, the fake board): the
deploy/rollback/status/bench verbs over a board shell, shared by every kind that has one.

A kind says only how to open its shell (``open_shell``); the steps themselves (upload, verify,
self-check, atomic switch, bench) live in ``toolchain.bundle`` and are the same for all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from .base import Target


class LinuxBoard(Target):
    bundle_runtime: ClassVar[str] = "onnxruntime"
    # Inferences a bench times by default: a board's (often emulated) minutes are dear.
    bench_iterations: ClassVar[int] = 300

    def open_shell(self):
        """The board's shell (``toolchain.bundle.deploy.BoardShell``)."""
        raise self._unsupported("open a shell")

    def deploy(self, bundle_path: Path, *, shell=None, allow_unsigned: bool = False) -> dict[str, Any]:
        from ..bundle.deploy import deploy_linux

        # The shell opens only once the bundle has passed its checks here (lazily, in there).
        return deploy_linux(self, bundle_path, shell=shell, allow_unsigned=allow_unsigned)

    def rollback(self, *, shell=None) -> dict[str, Any]:
        from ..bundle.deploy import rollback_linux

        return rollback_linux(self, shell=shell or self.open_shell())

    def status(self, *, shell=None) -> dict[str, Any]:
        from ..bundle.deploy import status_linux

        return status_linux(self, shell=shell or self.open_shell())

    def bench(self, folder: Path, manifest: dict, *, iterations: int, warmup: int, blocks: int,
              slowdown: float = 0.0, shell=None) -> dict[str, Any]:
        from ..bundle.bench import run_linux_bench

        return run_linux_bench(self, folder, manifest, iterations, warmup, blocks, slowdown,
                               shell or self.open_shell())

    def personalise(self, examples: Path | None, *, rollback: bool = False, max_anchor_drop: float | None = None,
                    holdout: float | None = None, shell=None) -> dict[str, Any]:
        from ..bundle.personalise_linux import head_rollback_linux, personalise_linux

        shell = shell or self.open_shell()
        if rollback:
            return head_rollback_linux(self, shell=shell)
        return personalise_linux(self, Path(examples), shell=shell, max_anchor_drop=max_anchor_drop,
                                 holdout=holdout)
