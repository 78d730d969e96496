"""Local emulation of boards we may not have on the desk (qemu-user + a foreign root filesystem)."""

from __future__ import annotations

from .aarch64 import (
    DEFAULT_ROOTFS,
    cpuinfo_text,
    emulator_command,
    find_qemu,
    prepare_rootfs,
    rootfs_cache_dir,
    run_in_rootfs,
    write_python_shim,
)

__all__ = [
    "DEFAULT_ROOTFS",
    "cpuinfo_text",
    "emulator_command",
    "find_qemu",
    "prepare_rootfs",
    "rootfs_cache_dir",
    "run_in_rootfs",
    "write_python_shim",
]
