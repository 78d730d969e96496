"""CostRecord: one append-only measurement of one candidate on one target.

A record keeps the raw latency samples and never summary statistics: those are derived on
demand by :mod:`toolchain.profiling.stats`, so a record can be re-analysed later. Units are in
the field names. ``to_dict``/``from_dict`` round-trip through JSON-safe values.
"""

from __future__ import annotations

import math
import os
import platform
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from ..errors import StoreError
from .isa import cpu_flags


def utc_now_iso() -> str:
    """Now, as ISO-8601 UTC with microseconds (``2025-01-31T12:00:00.123456+00:00``)."""
    return datetime.now(timezone.utc).isoformat()


def new_record_id() -> str:
    return uuid.uuid4().hex


def input_crc(arrays: Iterable[Any]) -> str:
    """CRC32 (8 hex digits) over the bytes of the input tensors, in order.

    Accepts numpy arrays, torch tensors (``.numpy()``), ``bytes`` or anything ``bytes()`` takes.
    Two measurements with the same CRC ran on the same inputs.
    """
    crc = 0
    for a in arrays:
        if isinstance(a, (bytes, bytearray, memoryview)):
            data = bytes(a)
        elif hasattr(a, "detach"):  # torch tensor
            data = a.detach().cpu().contiguous().numpy().tobytes()
        elif hasattr(a, "tobytes"):  # numpy array
            import numpy as np

            data = np.ascontiguousarray(a).tobytes()
        else:
            data = bytes(a)
        crc = zlib.crc32(data, crc)
    return f"{crc & 0xFFFFFFFF:08x}"


def _read_first(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _cpu_model() -> str:
    text = _read_first("/proc/cpuinfo")
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
            return value.strip()
    return platform.processor() or ""


def host_info() -> dict[str, str]:
    """What the measuring machine was: CPU model, its ISA flags (:mod:`.isa`, space-separated
    like every host value, a string), frequency governor, machine type, Python."""
    return {
        "cpu_model": _cpu_model(),
        "isa": " ".join(cpu_flags()),
        "governor": _read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count() or 0),
    }


@dataclass(frozen=True)
class CostRecord:
    """One measurement. Build it with keyword arguments; identity and time are filled in."""

    target: str
    target_hash: str
    candidate_id: str
    candidate: dict
    precision: str
    runtime: str
    latency_ms_samples: tuple[float, ...]
    recipe: str = ""  # quantization recipe actually used; "" for fp32
    runtime_version: str = ""
    provider: str = "CPU"
    codesign_version: str = __version__
    threads: int = 1
    warmup: int = 0
    iterations: int = 0  # 0: the number of samples
    peak_rss_bytes: int = 0
    model_bytes: int = 0
    load_ms: float = 0.0
    input_crc: str = ""
    emulated: bool = False
    instructions: tuple[int, ...] = ()  # MCU/emulator instruction counts per inference
    # Real token count of the input behind each latency sample (same order); () when unknown.
    # It lets the cost model compare records made on different datasets' length mixes.
    input_tokens: tuple[int, ...] = ()
    predicted_latency_ms: float | None = None  # what the cost model said before measuring
    host: dict = field(default_factory=dict)
    # ONNX Runtime's kernel profile of an extra pass after the timed samples, per layer and op
    # type (profiling/op_profile.py, op_profile_target.py); None when not asked for (and in every
    # record made before it could be).
    op_profile: dict | None = None
    # TargetSpec.board_hash: what the board is, without its name and address. Boards sharing it
    # (a farm of identical Pis) pool their records into one cost model. "" when unknown (a record
    # of an older codesign whose target file has changed since).
    board_hash: str = ""
    run_id: str = ""
    record_id: str = field(default_factory=new_record_id)
    recorded_at: str = field(default_factory=utc_now_iso)

    def __post_init__(self) -> None:
        samples = tuple(float(x) for x in self.latency_ms_samples)
        bad = [x for x in samples if not math.isfinite(x) or x < 0]
        if bad:
            raise ValueError(f"record for candidate {self.candidate_id}: latency sample {bad[0]!r} "
                             "is not a finite non-negative number of milliseconds")
        object.__setattr__(self, "latency_ms_samples", samples)
        object.__setattr__(self, "instructions", tuple(int(x) for x in self.instructions))
        object.__setattr__(self, "input_tokens", tuple(int(x) for x in self.input_tokens))
        if self.input_tokens and len(self.input_tokens) != len(samples):
            raise ValueError(f"record for candidate {self.candidate_id}: {len(self.input_tokens)} "
                             f"input token counts for {len(samples)} latency samples")
        object.__setattr__(self, "candidate", dict(self.candidate))
        object.__setattr__(self, "host", {str(k): str(v) for k, v in dict(self.host).items()})
        object.__setattr__(self, "emulated", bool(self.emulated))
        if self.op_profile is not None:
            if not isinstance(self.op_profile, Mapping):
                raise ValueError(f"record for candidate {self.candidate_id}: op_profile is "
                                 f"{type(self.op_profile).__name__}, not a table")
            object.__setattr__(self, "op_profile", dict(self.op_profile))
        for name in ("threads", "warmup", "iterations", "peak_rss_bytes", "model_bytes"):
            value = int(getattr(self, name))
            if value < 0:
                raise ValueError(f"record for candidate {self.candidate_id}: {name}={value} is negative")
            object.__setattr__(self, name, value)
        if self.iterations == 0:
            object.__setattr__(self, "iterations", len(samples))
        object.__setattr__(self, "load_ms", float(self.load_ms))
        if self.predicted_latency_ms is not None:
            object.__setattr__(self, "predicted_latency_ms", float(self.predicted_latency_ms))
        if not self.candidate_id or not self.target:
            raise ValueError("a record needs a target and a candidate_id")

    # A record is identified by its id; dict fields would make the generated hash fail.
    def __hash__(self) -> int:
        return hash(self.record_id)

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-safe (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostRecord:
        """Inverse of :meth:`to_dict`. Unknown keys (from a newer codesign) are ignored."""
        known = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        ident = data.get("record_id", "?")
        if missing:
            raise StoreError(f"record {ident}: missing field(s) {', '.join(missing)}; "
                             "the record was written incompletely — delete it or re-measure")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise StoreError(f"record {ident}: {exc}; delete the record or re-measure") from exc

    @property
    def isa(self) -> tuple[str, ...] | None:
        """The measuring CPU's ISA flags (``host["isa"]``); None for records made before they
        were kept, () for a CPU with none of :data:`~toolchain.profiling.isa.ISA_FLAGS`."""
        value = self.host.get("isa")
        return None if value is None else tuple(value.split())

    @property
    def n_samples(self) -> int:
        return len(self.latency_ms_samples)

    @property
    def median_input_tokens(self) -> float | None:
        """Median real length of the measured inputs; None for records made before it was kept."""
        from .stats import median

        return float(median(self.input_tokens)) if self.input_tokens else None

