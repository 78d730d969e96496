"""The CPU instruction-set extensions that decide int8 and fp32 kernel speed, read from
``/proc/cpuinfo``, so that every measured ratio names the instructions that produced it.

An int8/fp32 latency ratio means little without them: onnxruntime's int8 GEMM takes VNNI
(``avx512_vnni``, ``avx_vnni``) or AMX paths on x86 and SDOT/SMMLA (``asimddp``, ``i8mm``) on
Arm when they are there, and falls back to much slower widening multiplies when not.

The on-board agent (``toolchain/bundle/agent.py``) keeps its own copy of :data:`ISA_FLAGS` and
:func:`parse_cpu_flags`: it is shipped to boards as one stdlib-only file and may not import
codesign. ``tests/profiling/test_isa_flags.py`` checks the two stay the same.
"""

from __future__ import annotations

# In this order in every record. x86 names as Linux prints them in ``flags``; Arm names as in
# ``Features`` (``neon`` on 32-bit kernels, ``asimd`` on arm64 for the same SIMD unit).
ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
    "neon", "asimd", "asimddp", "i8mm", "sve",
)


def parse_cpu_flags(cpuinfo: str) -> list[str]:
    """The :data:`ISA_FLAGS` that every core of a ``/proc/cpuinfo`` text lists, in that order.

    Every core, not any: a thread may be scheduled on any of them, so a flag only some cores
    report (a heterogeneous part) cannot be relied on by the kernels."""
    common: set[str] | None = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        # Exactly "flags": Intel kernels also print "vmx flags", which are not instructions.
        if sep and key.strip() in ("flags", "Features"):
            found = set(value.split())
            common = found if common is None else common & found
    return [f for f in ISA_FLAGS if common and f in common]


def cpu_flags(path: str = "/proc/cpuinfo") -> list[str]:
    """This machine's :data:`ISA_FLAGS`; [] where there is no cpuinfo (macOS) to read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_cpu_flags(fh.read())
    except OSError:
        return []
