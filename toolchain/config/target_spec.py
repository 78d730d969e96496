"""TargetSpec: what a board is. Plain, frozen data validated from ``targets/*.toml``.

How a board is *reached* lives in the kind classes registered in ``registry.py``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, TargetError
from ..paths import targets_dir
from ..specfile import build, read_toml, spec_hash


@dataclass(frozen=True)
class Connection:
    """How to reach the board. Each field can be overridden by CODESIGN_TARGET_<NAME>_<FIELD>."""

    host: str = ""
    port: int = 0
    user: str = ""
    key: str = ""
    known_hosts: str = ""
    device: str = ""  # serial: /dev/ttyUSB0, a pty path, or socket://host:port
    baud: int = 115200
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 300.0
    retries: int = 2


@dataclass(frozen=True)
class Runtime:
    name: Literal["onnxruntime", "tflite", "torch", "firmware"]
    provider: str = "CPU"  # CPU, CUDA, TensorRT, or the firmware's port name
    version: str = ""


@dataclass(frozen=True)
class Budgets:
    """Hard limits a deployable candidate must meet; 0 means unlimited."""

    ram_mb: float = 0.0
    storage_mb: float = 0.0
    latency_ms: float = 0.0
    flash_kb: float = 0.0  # MCU only


@dataclass(frozen=True)
class Estimate:
    """Analytic cost model used before any measurement exists."""

    gflops_per_thread: float = 10.0
    int8_speedup: float = 1.8
    fixed_ms: float = 0.3
    memory_overhead_mb: float = 60.0  # runtime + interpreter resident set


@dataclass(frozen=True)
class Emulation:
    method: Literal["none", "native", "qemu-user", "qemu-system", "pty"] = "none"
    qemu_machine: str = ""
    cpu: str = ""  # e.g. cortex-a72 (cpuinfo to present), cortex-m4
    rootfs: str = ""  # e.g. debian-bookworm-arm64
    # Emulated wall time says nothing about the real board; latency is predicted with the
    # analytic model times this factor, and the source of the factor is stated.
    latency_scale: float = 1.0
    calibration_source: str = ""
    cpi: float = 1.0  # MCU: cycles per instruction for instruction-count estimates


@dataclass(frozen=True)
class Mcu:
    clock_hz: int = 0
    flash_kb: int = 0
    ram_kb: int = 0
    core: str = ""


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: Literal["local", "ssh", "serial", "emulated"]
    arch: str
    description: str = ""
    threads: int = 1
    runtimes: tuple[Runtime, ...] = (Runtime(name="onnxruntime"),)
    connection: Connection = field(default_factory=Connection)
    budgets: Budgets = field(default_factory=Budgets)
    estimate: Estimate = field(default_factory=Estimate)
    emulation: Emulation = field(default_factory=Emulation)
    mcu: Mcu = field(default_factory=Mcu)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.name):
            raise ValueError(f"target name {self.name!r} must be lower-case letters, digits, - or _")
        if self.threads < 1:
            raise ValueError("'threads' must be at least 1")

    @property
    def hash(self) -> str:
        """Content hash of the spec; every measurement record carries it."""
        return spec_hash(self)

    @property
    def runtime_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.runtimes)


def known_target_files(directory: Path | None = None) -> dict[str, Path]:
    directory = directory or targets_dir()
    return {p.stem: p for p in sorted(directory.glob("*.toml"))}


def _apply_env_overrides(spec: TargetSpec) -> TargetSpec:
    prefix = "CODESIGN_TARGET_" + re.sub(r"[^A-Z0-9]", "_", spec.name.upper()) + "_"
    changes = {}
    for fname, current in vars(spec.connection).items():
        raw = os.environ.get(prefix + fname.upper())
        if raw is None:
            continue
        try:
            changes[fname] = type(current)(raw)
        except ValueError as exc:
            raise ConfigError(f"environment variable {prefix + fname.upper()}={raw!r}: {exc}") from exc
    if not changes:
        return spec
    return replace(spec, connection=replace(spec.connection, **changes))


def load_target_spec(name_or_path: str | Path, apply_env: bool = True) -> TargetSpec:
    """Load a target by name (from ``targets/``) or by path to a TOML file."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (text.endswith(".toml") or path.is_file()):
        known = known_target_files()
        if text not in known:
            names = ", ".join(known) or "(none)"
            raise TargetError(f"unknown target '{text}'; known targets: {names}; or pass a path to a .toml file")
        path = known[text]
    data = read_toml(path)
    data.setdefault("name", path.stem)
    spec = build(TargetSpec, data, source=str(path))
    return _apply_env_overrides(spec) if apply_env else spec
