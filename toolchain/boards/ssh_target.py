"""Boards reached over SSH (Raspberry Pi, Jetson), with a qemu-user stand-in for each.

The measuring agent (``toolchain/bundle/agent.py``) is copied next to the job on every run,
so a board needs only python3 + numpy + its runtime, never codesign itself. When the board
cannot be reached (or ``emulate`` is asked for) and the spec names a ``qemu-user``
emulation, the very same agent runs locally in the emulated aarch64 rootfs; its report then
says ``"emulated": true`` and its latencies must not be taken for the board's.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from ..config.target_spec import TargetSpec
from ..errors import BundleError, ProtocolError, TargetError, TargetUnreachableError
from .base import Reachability
from .linux import LinuxBoard
from .registry import register_kind

log = logging.getLogger(__name__)

AGENT_PATH = Path(__file__).resolve().parent.parent / "bundle" / "agent.py"
ACCEPT_NEW_ENV = "CODESIGN_SSH_ACCEPT_NEW"
_GPU_PROVIDERS = {"CUDA", "TensorRT"}


def parse_agent_report(proc: subprocess.CompletedProcess[str], where: str) -> dict[str, Any]:
    """The agent's one JSON object, or the error it stands for."""
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    report = None
    if lines:
        try:
            report = json.loads(lines[-1])
        except ValueError:
            report = None
    if not isinstance(report, dict):
        stderr = proc.stderr.strip()[-800:]
        if proc.returncode in (126, 127) or "No module named" in stderr:
            raise TargetError(
                f"the agent could not start on {where} (exit {proc.returncode}): {stderr}; the "
                "board needs python3 with numpy and onnxruntime (or ai-edge-litert) installed"
            )
        raise ProtocolError(
            f"the agent on {where} exited {proc.returncode} without a JSON report: "
            f"{(stderr or proc.stdout.strip())[-800:]}"
        )
    if report.get("ok") is True:
        return report
    kind = report.get("error_kind", "unknown")
    message = report.get("error", "no message")
    if kind == "hash_mismatch":
        raise BundleError(f"the job on {where} failed its integrity check: {message}")
    raise TargetError(f"the agent on {where} failed ({kind}): {message}")


@register_kind("ssh")
class SshTarget(LinuxBoard):
    # A bench on a board (or, worse, its qemu-user emulation) times fewer inferences.
    bench_iterations = 60

    """A board behind OpenSSH; see ``toolchain.boards.ssh`` for the transport's rules."""

    def __init__(
        self, spec: TargetSpec, *, emulate: bool = False, trust_on_first_use: bool | None = None
    ) -> None:
        super().__init__(spec, emulate=emulate)
        if trust_on_first_use is None:
            trust_on_first_use = os.environ.get(ACCEPT_NEW_ENV, "").lower() in ("1", "true", "yes")
        self.trust_on_first_use = trust_on_first_use

    # ---- helpers ------------------------------------------------------------------------
    def _env_hint(self) -> str:
        return "CODESIGN_TARGET_" + "".join(
            c if c.isalnum() else "_" for c in self.spec.name.upper()
        )

    def transport(self, **overrides: Any):
        """The SshTransport for this board (TargetError when no host is configured)."""
        from .ssh import SshTransport

        conn = self.spec.connection
        if not conn.host:
            raise TargetUnreachableError(
                f"target '{self.spec.name}' has no SSH host; set [connection] host in its TOML "
                f"or {self._env_hint()}_HOST"
            )
        return SshTransport.from_connection(
            conn, trust_on_first_use=self.trust_on_first_use, **overrides
        )

    @property
    def can_emulate(self) -> bool:
        return self.spec.emulation.method == "qemu-user"

    def _provider(self) -> str | None:
        # Jetson: let the agent take TensorRT/CUDA when the board's onnxruntime has them.
        if any(r.provider in _GPU_PROVIDERS for r in self.spec.runtimes):
            return "auto"
        return None

    def _agent_args(self, job: str, warmup: int, iterations: int, threads: int) -> list[str]:
        args = [job, "--warmup", str(warmup), "--iterations", str(iterations)]
        args += ["--threads", str(threads)]
        provider = self._provider()
        return args + (["--provider", provider] if provider else [])

    # ---- Target verbs -------------------------------------------------------------------
    def reachability(self) -> Reachability:
        if self.emulate:
            return Reachability(self.can_emulate, "emulated locally with qemu-user")
        try:
            transport = self.transport(
                retries=0, connect_timeout_s=min(5.0, self.spec.connection.connect_timeout_s)
            )
            transport.check()
        except TargetError as exc:  # unreachable, host key, auth: all say "not now" and why
            return Reachability(False, str(exc))
        return Reachability(True, f"ssh {transport.label} answered")

    def prepare(self) -> None:
        """Build the emulation rootfs when the spec uses qemu-user; the board needs nothing."""
        if self.can_emulate:
            from .emulation import DEFAULT_ROOTFS, prepare_rootfs

            prepare_rootfs(self.spec.emulation.rootfs or DEFAULT_ROOTFS)

    def run_agent(
        self, job_dir: Path, *, warmup: int, iterations: int, threads: int
    ) -> dict[str, Any]:
        """Run the agent on the board (or its emulation) and return its JSON report.

        Raises TransportError when the connection drops mid-run (no record may be written),
        BundleError when the job fails the agent's sha256 check, HostKeyError for key
        problems (never silently emulated), TargetError for other agent failures.
        """
        job_dir = Path(job_dir)
        if not (job_dir / "job.json").is_file():
            raise TargetError(f"{job_dir} is not a job folder (no job.json); build the job first")
        if self.emulate:
            return self._run_emulated(job_dir, warmup, iterations, threads)
        try:
            transport = self.transport()
            remote = transport.make_temp_dir()
        except TargetUnreachableError as exc:
            # Nothing ran on the board yet, so falling back cannot double-run anything.
            if not self.can_emulate:
                raise
            log.warning("%s; running the agent in the qemu-user emulation instead", exc)
            return self._run_emulated(job_dir, warmup, iterations, threads)
        return self._run_remote(transport, remote, job_dir, warmup, iterations, threads)

    def open_shell(self):
        """SSH to the board; its qemu-user emulation (a local folder) when it cannot be reached
        and the spec names one, or when ``emulate`` is asked for."""
        from ..bundle.deploy import SshShell

        if not self.emulate:
            try:
                transport = self.transport()
                transport.check()
                return SshShell(transport)
            except TargetUnreachableError as exc:
                if not self.can_emulate:
                    raise
                log.warning("%s; using the qemu-user emulation of %s instead", exc, self.spec.name)
        return self._emulated_shell()

    def _emulated_shell(self):
        from ..bundle.deploy import LocalShell
        from ..errors import DeployError
        from .emulation import DEFAULT_ROOTFS, prepare_rootfs, run_in_rootfs

        spec = self.spec
        if not self.can_emulate:
            raise DeployError(f"target '{spec.name}' has no qemu-user emulation; connect the board")
        rootfs = prepare_rootfs(spec.emulation.rootfs or DEFAULT_ROOTFS)
        cpu = spec.emulation.cpu or "cortex-a72"

        def python(argv, timeout):
            return run_in_rootfs(rootfs, argv, cpu=cpu, timeout=timeout)

        return LocalShell(f"{spec.name} (qemu-user emulation)", python=python)

    def _run_remote(self, transport, remote: str, job_dir: Path, warmup, iterations, threads):
        try:
            transport.upload(job_dir, f"{remote}/job")
            transport.upload(AGENT_PATH, f"{remote}/agent.py")
            argv = [
                "python3",
                f"{remote}/agent.py",
                *self._agent_args(f"{remote}/job", warmup, iterations, threads),
            ]
            proc = transport.run(argv, timeout=self.spec.connection.command_timeout_s)
        finally:
            try:
                transport.remove(remote)
            except TargetError as exc:  # the board is gone: the temp dir dies with its reboot
                log.warning("could not remove %s on %s: %s", remote, transport.label, exc)
        return parse_agent_report(proc, f"{self.spec.name} ({transport.label})")

    def _run_emulated(self, job_dir: Path, warmup: int, iterations: int, threads: int):
        from .emulation import DEFAULT_ROOTFS, prepare_rootfs, run_in_rootfs

        if not self.can_emulate:
            raise TargetError(
                f"target '{self.spec.name}' has no qemu-user emulation ([emulation] method = "
                f"'{self.spec.emulation.method}'); connect the board instead"
            )
        rootfs = prepare_rootfs(self.spec.emulation.rootfs or DEFAULT_ROOTFS)
        cpu = self.spec.emulation.cpu or "cortex-a72"
        # Host paths work inside qemu-user: -L looks in the rootfs first, then the host.
        argv = ["/usr/bin/python3", str(AGENT_PATH)]
        argv += self._agent_args(str(job_dir.resolve()), warmup, iterations, threads)
        proc = run_in_rootfs(rootfs, argv, cpu=cpu, timeout=self.spec.connection.command_timeout_s)
        return parse_agent_report(proc, f"{self.spec.name} (qemu-user {cpu})")
