"""TargetSpec: what a board is. Plain, frozen data validated from ``targets/*.toml``.

How a board is *reached* lives in the kind classes registered in ``registry.py``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, TargetError
from ..paths import targets_dir
from ..specfile import build, read_toml, spec_hash, to_plain


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
class Labgrid:
    """Where a ``kind = "labgrid"`` board is in a labgrid farm (boards/labgrid_target.py)."""

    env: str = ""  # labgrid environment YAML; a relative path is relative to the target file
    target: str = ""  # the target's name in that environment
    coordinator: str = ""  # host[:port]; empty: a local environment, nothing is locked
    place: str = ""  # the place to lock on the coordinator (default: the target's name)
    state: str = "shell"  # the strategy state to reach; "" for none (power on only)
    power_cycle_on_hang: bool = False


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str  # a registered target kind: BUILTIN_KINDS or an entry point (known_kinds())
    arch: str
    description: str = ""
    threads: int = 1
    runtimes: tuple[Runtime, ...] = (Runtime(name="onnxruntime"),)
    connection: Connection = field(default_factory=Connection)
    budgets: Budgets = field(default_factory=Budgets)
    estimate: Estimate = field(default_factory=Estimate)
    emulation: Emulation = field(default_factory=Emulation)
    mcu: Mcu = field(default_factory=Mcu)
    labgrid: Labgrid = field(default_factory=Labgrid)

    def __post_init__(self) -> None:
        # Checked here, not only when a file is read, so that env overrides and specs built in
        # code meet the same ranges; load_target_spec names the file around the message.
        problem = spec_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def hash(self) -> str:
        """Content hash of the spec; every measurement record carries it."""
        plain = to_plain(self)
        if self.labgrid == Labgrid():  # hashes of specs without the table stay what they were
            del plain["labgrid"]
        return spec_hash(plain)

    @property
    def board_hash(self) -> str:
        """Hash of what the board *is*, not how it is reached nor what it is called: boards of
        one kind and spec (a farm of identical Pis at different addresses) share it, so their
        records pool into one cost model and a selection survives a changed address."""
        plain = to_plain(self)
        for key in ("name", "description", "connection", "labgrid"):
            plain.pop(key, None)
        return spec_hash(plain)

    @property
    def runtime_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.runtimes)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric field may take. ``unset`` is the default that means "not stated"
    (a budget of 0, port 0 for the transport's default) and is always allowed."""

    lo: float
    hi: float
    lo_open: bool = False
    unset: float | None = None
    unset_means: str = "not stated"

    def allows(self, value: float) -> bool:
        if self.unset is not None and value == self.unset:
            return True
        if not math.isfinite(value):
            return False
        return (value > self.lo if self.lo_open else value >= self.lo) and value <= self.hi

    def text(self, integer: bool) -> str:
        kind = "an integer" if integer else "a number"
        if self.lo_open:
            allowed = f"{kind} > {_num(self.lo)} and <= {_num(self.hi)}"
        else:
            allowed = f"{kind} {_num(self.lo)}..{_num(self.hi)}"
        if self.unset is not None:
            allowed += f" (or leave the key out: {_num(self.unset)} means {self.unset_means})"
        return allowed


_POS = dict(lo=0.0, lo_open=True)
# Every numeric key of a target file, by its dotted name. The upper ends are far beyond any real
# board; they catch a unit slip (ms for s, bytes for MB) before it becomes a silly prediction.
RANGES: dict[str, Range] = {
    "threads": Range(1, 1024),
    "connection.port": Range(1, 65535, unset=0, unset_means="the default, 22 for SSH"),
    "connection.baud": Range(50, 10_000_000),
    "connection.connect_timeout_s": Range(hi=3600.0, **_POS),
    "connection.command_timeout_s": Range(hi=86_400.0, **_POS),
    "connection.retries": Range(0, 100),
    "budgets.ram_mb": Range(hi=1_048_576.0, unset=0.0, **_POS),
    "budgets.storage_mb": Range(hi=1_048_576.0 * 64, unset=0.0, **_POS),
    "budgets.latency_ms": Range(hi=3_600_000.0, unset=0.0, **_POS),
    "budgets.flash_kb": Range(hi=1_048_576.0, unset=0.0, **_POS),
    "estimate.gflops_per_thread": Range(hi=1_000_000.0, **_POS),
    "estimate.int8_speedup": Range(hi=100.0, **_POS),
    "estimate.fixed_ms": Range(0.0, 60_000.0),
    "estimate.memory_overhead_mb": Range(0.0, 1_048_576.0),
    "emulation.latency_scale": Range(hi=10_000.0, **_POS),
    "emulation.cpi": Range(hi=1_000.0, **_POS),
    "mcu.clock_hz": Range(1, 10_000_000_000, unset=0),
    "mcu.flash_kb": Range(1, 1_048_576, unset=0),
    "mcu.ram_kb": Range(1, 1_048_576, unset=0),
}

# Allowed strings. The CPU lists mirror the emulators' own tables (boards/emulation/aarch64.py's
# cpuinfo templates, the QEMU Cortex-M models); a test keeps them in step.
ARCHES = ("x86_64", "aarch64", "armv7l", "armv6-m", "armv7-m", "armv7e-m", "armv8-m", "riscv32",
          "riscv64")
PROVIDERS = {
    "onnxruntime": ("CPU", "CUDA", "TensorRT", "auto"),
    "tflite": ("CPU",),
    "torch": ("CPU", "CUDA"),
}
QEMU_USER_CPUS = ("cortex-a53", "cortex-a57", "cortex-a72", "cortex-a76")
QEMU_SYSTEM_CPUS = ("cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")
QEMU_MACHINES = ("mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505")
_ROOTFS = r"debian-[a-z]+-arm64"
_PORT_NAME = r"[a-z0-9][a-z0-9_.-]*"  # a firmware port: posix, mps2-an386, stm32f4
_COORDINATOR = r"[A-Za-z0-9_.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
_STATE = r"[A-Za-z_][A-Za-z0-9_-]{0,63}"


def _one_of(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


# ---- target kinds ---------------------------------------------------------------------------------
# The kinds codesign itself implements, as data: config sits below the boards and must not import
# them (tests/boards/test_kinds.py keeps this in step with boards/registry.py's module map).
BUILTIN_KINDS = ("local", "ssh", "serial", "emulated", "labgrid", "fake")
# Third-party kinds: an installed distribution's entry point ``name = package.module`` in this
# group; importing the module registers the kind (``@register_kind(name)``).
KIND_ENTRY_POINT_GROUP = "codesign.target_kinds"
KIND_NAME = r"[a-z][a-z0-9_-]{0,63}"
# Kinds registered in this process without an entry point (boards/registry.py's register_kind
# declares each one here: a kind defined in a test's conftest loads as a built-in one does).
_DECLARED_KINDS: set[str] = set()


def declare_kind(name: str) -> None:
    """Let specs name ``name`` (called by ``register_kind``)."""
    _DECLARED_KINDS.add(name)


def entry_point_kinds() -> tuple[str, ...]:
    """The kind names of the installed ``codesign.target_kinds`` entry points (not loaded)."""
    return tuple(sorted({ep.name for ep in entry_points(group=KIND_ENTRY_POINT_GROUP)}))


def known_kinds() -> tuple[str, ...]:
    """Every kind a target file may name: built-in, declared in this process, entry points."""
    return tuple(sorted(set(BUILTIN_KINDS) | _DECLARED_KINDS | set(entry_point_kinds())))


def _kind_problem(kind: str) -> str:
    if not isinstance(kind, str) or not re.fullmatch(KIND_NAME, kind):
        return ("a kind name: a lower-case letter, then lower-case letters, digits, - or _ "
                f"(known kinds: {_one_of(known_kinds())})")
    # The entry points are read only for a name that is not built in: most specs never pay it.
    if kind in BUILTIN_KINDS or kind in _DECLARED_KINDS or kind in entry_point_kinds():
        return ""
    return (f"one of {_one_of(known_kinds())}; or install the package whose "
            f"'{KIND_ENTRY_POINT_GROUP}' entry point provides '{kind}'")


def _numeric_problem(key: str, value) -> str:
    rng = RANGES[key]
    if rng.allows(value):
        return ""
    return f"key '{key}' is {value!r}; use {rng.text(isinstance(value, int))}"


def _string_problems(spec: TargetSpec):
    yield "kind", spec.kind, _kind_problem(spec.kind)
    yield "name", spec.name, (
        "lower-case letters, digits, - or _ (at most 64, starting with a letter or digit)"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", spec.name) else "")
    yield "arch", spec.arch, "" if spec.arch in ARCHES else f"one of {_one_of(ARCHES)}"
    if not spec.runtimes:
        yield "runtimes", [], "at least one [[runtimes]] table"
    for i, rt in enumerate(spec.runtimes):
        allowed = PROVIDERS.get(rt.name)
        if allowed is None:  # firmware: the provider names the firmware port
            ok = re.fullmatch(_PORT_NAME, rt.provider) is not None
            yield f"runtimes[{i}].provider", rt.provider, "" if ok else "a firmware port name (e.g. 'posix')"
        else:
            yield (f"runtimes[{i}].provider", rt.provider,
                   "" if rt.provider in allowed else f"one of {_one_of(allowed)} for {rt.name}")
    emu = spec.emulation
    cpus = {"qemu-user": QEMU_USER_CPUS, "qemu-system": QEMU_SYSTEM_CPUS}.get(emu.method)
    if cpus is not None:
        yield ("emulation.cpu", emu.cpu,
               "" if emu.cpu in ("", *cpus) else f"one of {_one_of(cpus)} for method '{emu.method}'")
    yield ("emulation.qemu_machine", emu.qemu_machine,
           "" if emu.qemu_machine in ("", *QEMU_MACHINES) else f"one of {_one_of(QEMU_MACHINES)}")
    yield from _labgrid_problems(spec)
    yield ("emulation.rootfs", emu.rootfs,
           "" if not emu.rootfs or re.fullmatch(_ROOTFS, emu.rootfs) else "'debian-<suite>-arm64', "
           "e.g. 'debian-bookworm-arm64'")


def _labgrid_problems(spec: TargetSpec):
    lg = spec.labgrid
    if spec.kind != "labgrid":
        yield "kind", spec.kind, ("" if lg == Labgrid() else
                                  "'labgrid' with a [labgrid] table, or remove the table")
        return
    yield "labgrid.env", lg.env, "" if lg.env else "the path of a labgrid environment YAML"
    yield "labgrid.target", lg.target, "" if lg.target else "the target's name in that environment"
    yield ("labgrid.coordinator", lg.coordinator, "" if not lg.coordinator or re.fullmatch(
        _COORDINATOR, lg.coordinator) else "host[:port], e.g. 'farm.lab:20408'")
    yield ("labgrid.place", lg.place, "" if not lg.place or lg.coordinator else
           "it only with labgrid.coordinator (a local environment has no places to lock)")
    yield ("labgrid.state", lg.state, "" if not lg.state or re.fullmatch(_STATE, lg.state) else
           "a strategy state name such as 'shell', or '' for none")


def _sections(spec: TargetSpec):
    yield "", spec
    for section in ("connection", "budgets", "estimate", "emulation", "mcu", "labgrid"):
        yield f"{section}.", getattr(spec, section)


def spec_problem(spec: TargetSpec) -> str:
    """The first value of ``spec`` outside its allowed range or set, as "key 'k' is v; use ..."
    (empty when every value is allowed)."""
    for prefix, obj in _sections(spec):
        for f in fields(obj):
            key = prefix + f.name
            value = getattr(obj, f.name)
            if isinstance(value, str) and not value.isprintable():
                return f"key '{key}' is {value!r}; use printable text (no control characters)"
            if key in RANGES and isinstance(value, int | float) and not isinstance(value, bool):
                problem = _numeric_problem(key, value)
                if problem:
                    return problem
    for i, rt in enumerate(spec.runtimes):
        for name in ("provider", "version"):
            value = getattr(rt, name)
            if not value.isprintable():
                return f"key 'runtimes[{i}].{name}' is {value!r}; use printable text (no control characters)"
    for key, value, allowed in _string_problems(spec):
        if allowed:
            return f"key '{key}' is {value!r}; use {allowed}"
    return ""


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
    try:
        return replace(spec, connection=replace(spec.connection, **changes))
    except ValueError as exc:
        names = ", ".join(prefix + k.upper() for k in changes)
        raise ConfigError(f"environment ({names}) for target '{spec.name}': {exc}; fix or unset the "
                          "variable") from exc


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
    lg = data.get("labgrid")
    if isinstance(lg, dict) and isinstance(lg.get("env"), str) and lg["env"]:
        # Relative to the target file, so a farm's targets and env travel together.
        lg["env"] = str((path.parent / Path(lg["env"]).expanduser()).resolve())
    spec = build(TargetSpec, data, source=str(path))
    return _apply_env_overrides(spec) if apply_env else spec
