"""Microcontroller targets reached over a serial link (kind "serial").

An MCU runs int8 quantized heads, not the ONNX measuring agent. The flow is
``run_head``: check the flash/RAM budget, upload the blob (staged, CRC-verified, committed),
run the firmware self-check against the integer reference, then N inferences that each
report the board's counter (instructions on QEMU, cycles on a real board, ns on the pty).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config.target_spec import TargetSpec
from ..errors import DeployError, TargetError, TargetUnreachableError, ValidationMismatchError
from .base import Reachability, Target
from .registry import register_kind

# Above this blob size an emulated QEMU board gets the model baked into its image.
BAKE_ABOVE_BYTES = 64 * 1024

_EMULATION_TOOLS = {
    "pty": ("make", "cc"),
    "qemu-system": ("make", "arm-none-eabi-gcc", "qemu-system-arm"),
}


@dataclass(frozen=True)
class McuRun:
    """What one upload -> self-check -> N inferences produced."""

    target: str
    emulated: bool
    firmware: dict[str, Any]
    model_crc: int  # the model id: CRC32 of the blob without its trailer (blob.model_id)
    selfcheck_crc: int
    selfcheck_icount: int
    outputs: np.ndarray  # int8 [N, out_dim]
    argmax: np.ndarray  # int64 [N]
    counts: np.ndarray  # int64 [N]: counter per inference, in counter_unit
    counter_unit: str  # "instructions" | "cycles" | "ns"
    est_cycles: np.ndarray | None  # counts x cpi for instruction counts; counts for cycles
    est_latency_ms: np.ndarray | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "emulated": self.emulated,
            "firmware": self.firmware,
            "model_crc32": f"{self.model_crc:08x}",
            "selfcheck_crc32": f"{self.selfcheck_crc:08x}",
            "selfcheck_icount": self.selfcheck_icount,
            "counter_unit": self.counter_unit,
            "counts": self.counts.tolist(),
            "argmax": self.argmax.tolist(),
            "est_latency_ms": None if self.est_latency_ms is None else self.est_latency_ms.tolist(),
        }


@register_kind("serial")
class SerialTarget(Target):
    # A microcontroller holds the int8 head; the backbone runs upstream (issue 5, option a).
    measures = "head"
    bundle_runtime = "firmware"
    bench_iterations = 48  # inferences per bench, in passes of 16 reference inputs

    # ---- deployment verbs (the framed protocol's two slots and atomic commit) -----------
    def deploy(self, bundle_path: Path, *, link=None, allow_unsigned: bool = False) -> dict[str, Any]:
        from ..bundle.deploy_mcu import deploy_mcu

        return deploy_mcu(self, bundle_path, link=link, allow_unsigned=allow_unsigned)

    def rollback(self, *, link=None) -> dict[str, Any]:
        from ..bundle.deploy_mcu import rollback_mcu

        return rollback_mcu(self, link=link)

    def status(self, *, link=None) -> dict[str, Any]:
        from ..bundle.deploy_mcu import status_mcu

        return status_mcu(self, link=link)

    def bench(self, folder: Path, manifest: dict, *, iterations: int, warmup: int = 0,
              blocks: int = 1, slowdown: float = 0.0, shell=None) -> dict[str, Any]:
        from ..bundle.bench import run_mcu_bench

        return run_mcu_bench(self, folder, manifest, passes=max(1, iterations // 16),
                             slowdown=slowdown)

    def __init__(
        self, spec: TargetSpec, *, emulate: bool = False, build_dir: Path | None = None
    ) -> None:
        super().__init__(spec, emulate=emulate)
        self.build_dir = build_dir

    # ------------------------------------------------------------------ where the board is
    def uses_emulation(self) -> bool:
        """Emulate when asked to, when no device is configured, or when a configured device
        node is absent and the spec names an emulation method."""
        device = self.spec.connection.device
        if self.emulate or not device:
            return True
        missing = "://" not in device and not os.path.exists(device)
        return missing and self.spec.emulation.method in _EMULATION_TOOLS

    def _require_emulation_method(self) -> str:
        method = self.spec.emulation.method
        if method not in _EMULATION_TOOLS:
            device = self.spec.connection.device or "(none configured)"
            raise TargetUnreachableError(
                f"target '{self.spec.name}': serial device {device} is not available and "
                f"[emulation] method is {method!r}; connect the board, set "
                "CODESIGN_TARGET_<NAME>_DEVICE, or use method 'pty' / 'qemu-system'"
            )
        return method

    def reachability(self) -> Reachability:
        import shutil

        if self.uses_emulation():
            try:
                method = self._require_emulation_method()
            except TargetUnreachableError as exc:
                return Reachability(False, str(exc))
            missing = [t for t in _EMULATION_TOOLS[method] if shutil.which(t) is None]
            if missing:
                return Reachability(
                    False, f"emulation ({method}) needs {', '.join(missing)}; install them"
                )
            return Reachability(True, f"emulated with {method} (firmware built on demand)")
        from .serial_link import SerialLink

        conn = self.spec.connection
        if "://" not in conn.device and not os.path.exists(conn.device):
            return Reachability(
                False, f"serial device {conn.device} does not exist; connect the board"
            )
        link = SerialLink(
            conn.device, baud=conn.baud, timeout_s=1.0, retries=1, connect_timeout_s=2.0
        )
        try:
            with link:
                info = link.handshake()
        except TargetError as exc:
            return Reachability(False, str(exc))
        return Reachability(True, f"{conn.device}: firmware {info.firmware} on {info.port}")

    @contextmanager
    def connect(self, *, baked_header: Path | None = None) -> Iterator[Any]:
        """A handshaken ``SerialLink`` to the board or its emulation; cleans up on exit.
        ``baked_header`` (emulation only) boots an image with that model already committed."""
        from .mcu_emulation import emulated_device
        from .serial_link import SerialLink

        conn = self.spec.connection
        # One reply should come well within a few seconds; long inferences get command_timeout_s.
        per_reply = max(1.0, min(5.0, conn.command_timeout_s))
        if self.uses_emulation():
            method = self._require_emulation_method()
            with emulated_device(method, self.build_dir, baked_header=baked_header) as url:
                link = SerialLink(
                    url,
                    baud=conn.baud,
                    timeout_s=per_reply,
                    retries=conn.retries,
                    connect_timeout_s=conn.connect_timeout_s,
                )
                with link:
                    link.handshake()
                    yield link
            return
        link = SerialLink(
            conn.device,
            baud=conn.baud,
            timeout_s=per_reply,
            retries=conn.retries,
            connect_timeout_s=conn.connect_timeout_s,
        )
        with link:
            link.handshake()
            yield link

    # ------------------------------------------------------------------ verbs
    def deploy_head(self, link: Any, head: Any, *, check_budget: bool = True) -> tuple[int, Any]:
        """Budget check, upload and self-check on an open link; returns the model id and
        the ``SelfCheck`` (its CRC already matched against the integer reference)."""
        from ..mcu.blob import model_id, to_blob
        from ..mcu.budget import check_budget as _check
        from ..mcu.reference import selfcheck_crc

        if check_budget:
            report = _check(head, self.spec)
            if not report.feasible:
                raise DeployError(f"head does not fit target '{self.spec.name}': {report.reason}")
        if link.info and (
            head.in_dim > link.info.max_dim or len(head.layers) > link.info.max_layers
        ):
            raise DeployError(
                f"head ({len(head.layers)} layers, widest input {head.in_dim}) exceeds firmware "
                f"limits on {link.url} (max {link.info.max_layers} layers, {link.info.max_dim} wide)"
            )
        blob = to_blob(head)
        expected = selfcheck_crc(head)
        timeout = self.spec.connection.command_timeout_s
        # Skip the upload when the board already runs this exact model (baked or uploaded):
        # the firmware reports the active model's id, which differs between models.
        crc = model_id(blob)
        if link.active_model_id() != crc:
            crc = link.upload_model(blob)
        # Every reply is frame-checked and retried when corrupted, so a CRC that differs here
        # is what the firmware computed, not a wire fault.
        check = link.self_check(timeout_s=timeout)
        if check.crc != expected:
            raise ValidationMismatchError(
                f"firmware self-check on target '{self.spec.name}' gave CRC {check.crc:08x}, the "
                f"integer reference {expected:08x}: the C kernels and toolchain.mcu.reference "
                "disagree; rebuild the firmware from this checkout"
            )
        return crc, check

    def run_head(
        self, head: Any, inputs: np.ndarray, *, repeat: int = 1, bake: bool | None = None
    ) -> McuRun:
        """Upload -> self-check -> one inference per row of ``inputs`` (int8 quantized rows, or
        float standardized features which are quantized with the head's input scale).

        ``bake`` (emulation only) builds the model into the image instead of uploading it;
        None bakes heads over BAKE_ABOVE_BYTES on QEMU, whose UART is slow."""
        x = np.asarray(inputs)
        x_q = x if x.dtype == np.int8 else head.quantize_input(x)
        x_q = x_q.reshape(-1, head.in_dim)
        with self._maybe_baked(head, bake) as header, self.connect(baked_header=header) as link:
            crc, check = self.deploy_head(link, head)
            results = [
                link.infer(row, repeat=repeat, timeout_s=self.spec.connection.command_timeout_s)
                for row in x_q
            ]
            info = link.info
        counts = np.asarray([r.icount for r in results], dtype=np.int64) // max(repeat, 1)
        est_cycles, est_ms = self._estimate(counts, info.counter_unit)
        return McuRun(
            target=self.spec.name,
            emulated=self.uses_emulation(),
            firmware=vars(info).copy(),
            model_crc=crc,
            selfcheck_crc=check.crc,
            selfcheck_icount=check.icount,
            outputs=np.stack([r.output for r in results]).astype(np.int8),
            argmax=np.asarray([r.argmax for r in results], dtype=np.int64),
            counts=counts,
            counter_unit=info.counter_unit,
            est_cycles=est_cycles,
            est_latency_ms=est_ms,
        )

    @contextmanager
    def _maybe_baked(self, head: Any, bake: bool | None) -> Iterator[Path | None]:
        from ..mcu.blob import blob_size, to_c_header

        if not self.uses_emulation():
            yield None
            return
        if bake is None:
            bake = (
                self.spec.emulation.method == "qemu-system" and blob_size(head) > BAKE_ABOVE_BYTES
            )
        if not bake:
            yield None
            return
        from .mcu_emulation import default_build_dir

        text = to_c_header(head)
        # Named by content and kept: make then sees the baked image as up to date next time.
        folder = Path(self.build_dir or default_build_dir()) / "baked-headers"
        folder.mkdir(parents=True, exist_ok=True)
        header = folder / f"model-{zlib.crc32(text.encode()):08x}.h"
        if not header.is_file():
            header.write_text(text)
        yield header

    def _estimate(
        self, counts: np.ndarray, unit: str
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        clock = self.spec.mcu.clock_hz
        if unit == "ns":
            return None, counts / 1e6
        cycles = (
            counts * self.spec.emulation.cpi if unit == "instructions" else counts.astype(float)
        )
        return cycles, (cycles / clock * 1e3 if clock else None)

    def run_agent(
        self, job_dir: Path, *, warmup: int, iterations: int, threads: int
    ) -> dict[str, Any]:
        raise TargetError(
            f"target '{self.spec.name}' is a microcontroller: it runs int8 quantized heads, not "
            "the ONNX measuring agent; quantize with toolchain.mcu.quantize_head and call "
            "SerialTarget.run_head(head, features)"
        )
