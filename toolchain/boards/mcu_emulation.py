"""Emulated microcontrollers: build the firmware, then run it on a pty (posix port) or in
QEMU (mps2-an386). Each runner is a context manager that yields a serial URL and always
ends the process it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import TargetError, TargetUnreachableError
from ..paths import PROJECT_ROOT, codesign_home

# QEMU flags that make the mps2 SysTick count instructions: 1 ns of virtual time per
# instruction (shift=0), no sync to host time (align=off) and idle time skipped (sleep=off).
QEMU_ICOUNT = "shift=0,align=off,sleep=off"
QEMU_MACHINE = "mps2-an386"
PORT_BINARIES = {
    "posix": "posix/codesign-fw",
    "mps2": "mps2/codesign-fw.elf",
    "stm32f4": "stm32f4/codesign-fw.elf",
}


def firmware_source_dir() -> Path:
    return PROJECT_ROOT / "firmware_stubs"


def default_build_dir() -> Path:
    return codesign_home() / "firmware-build"


def build_firmware(port: str, out_dir: Path | None = None, *, baked: Path | None = None) -> Path:
    """``make -C firmware_stubs OUT=out_dir <port>``; returns the built image. Make decides
    whether anything needs rebuilding, so calling this again is cheap."""
    if port not in PORT_BINARIES:
        raise TargetError(f"unknown firmware port {port!r}; known: {', '.join(PORT_BINARIES)}")
    src = firmware_source_dir()
    if not (src / "Makefile").is_file():
        raise TargetError(
            f"firmware sources not found at {src}; MCU targets need a source checkout of codesign"
        )
    make = shutil.which("make")
    if make is None:
        raise TargetError("'make' is not installed; install it (apt-get install make gcc)")
    if port != "posix" and shutil.which("arm-none-eabi-gcc") is None:
        raise TargetError(
            f"building the {port} firmware needs arm-none-eabi-gcc; "
            "install it (apt-get install gcc-arm-none-eabi)"
        )
    out = Path(out_dir or default_build_dir()).resolve()
    cmd = [make, "-C", str(src), f"OUT={out}", port]
    if baked is not None:
        cmd.append(f"BAKED={Path(baked).resolve()}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-1500:]
        raise TargetError(f"firmware build for {port!r} failed ({' '.join(cmd)}):\n{tail}")
    return out / PORT_BINARIES[port]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)


@contextmanager
def posix_pty(binary: Path) -> Iterator[str]:
    """Run the posix firmware with stdin/stdout on a pty master; yield the slave's path,
    which the host opens exactly like /dev/ttyUSB0."""
    import tty

    if not Path(binary).is_file():
        raise TargetError(f"posix firmware {binary} does not exist; build it with build_firmware")
    master, slave = os.openpty()
    try:
        # Raw before the firmware starts: otherwise the line discipline echoes the firmware's
        # own output back to it as commands and holds input until a newline.
        tty.setraw(slave)
        path = os.ttyname(slave)
        proc = subprocess.Popen(
            [str(binary)],
            stdin=master,
            stdout=master,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    os.close(master)  # the firmware holds it now
    try:
        # Our slave fd stays open, so the firmware never sees a hang-up between host links.
        yield path
    finally:
        _stop(proc)
        os.close(slave)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qemu_command(image: Path, port: int, qemu: str = "qemu-system-arm") -> list[str]:
    # wait=on: QEMU starts the guest only once the host is connected, so no output is lost
    # to an unconnected chardev; nodelay=on: without it each round trip costs ~44 ms (Nagle).
    chardev = f"socket,id=ser0,host=127.0.0.1,port={port},server=on,wait=on,nodelay=on"
    return [
        qemu,
        "-M",
        QEMU_MACHINE,
        "-nographic",
        "-monitor",
        "none",
        "-icount",
        QEMU_ICOUNT,
        "-chardev",
        chardev,
        "-serial",
        "chardev:ser0",
        "-kernel",
        str(image),
    ]


@contextmanager
def qemu_mps2(
    image: Path, *, qemu: str = "qemu-system-arm", start_timeout_s: float = 10.0
) -> Iterator[str]:
    """Run the mps2 image in QEMU; yield ``socket://127.0.0.1:PORT`` for its UART0."""
    exe = shutil.which(qemu)
    if exe is None:
        raise TargetUnreachableError(
            f"{qemu} not found; install it (apt-get install qemu-system-arm) to emulate the MCU"
        )
    if not Path(image).is_file():
        raise TargetError(f"mps2 firmware image {image} does not exist; build it first")
    with tempfile.TemporaryFile(mode="w+") as log:
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            proc = subprocess.Popen(
                qemu_command(image, port, exe),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + start_timeout_s
                while proc.poll() is None and time.monotonic() < deadline:
                    log.seek(0)
                    if "waiting for connection" in log.read():
                        break
                    time.sleep(0.02)
                if proc.poll() is None:
                    yield f"socket://127.0.0.1:{port}"
                    return
                log.seek(0)
                text = log.read()
                if "Address already in use" not in text:
                    raise TargetUnreachableError(
                        f"QEMU exited with code {proc.returncode} before accepting a connection: "
                        f"{text[-800:]}"
                    )
            finally:
                _stop(proc)
        raise TargetUnreachableError("QEMU could not bind a local TCP port after 3 tries")


@contextmanager
def emulated_device(
    method: str, build_dir: Path | None = None, *, baked_header: Path | None = None
) -> Iterator[str]:
    """Build the firmware for ``method`` ("pty" -> posix, "qemu-system" -> mps2) and run it.

    ``baked_header`` (from ``toolchain.mcu.blob.to_c_header``) builds an image with that model
    already committed, into its own folder: QEMU's UART takes ~70 us per character, so a
    megabyte head uploads in minutes but bakes in seconds."""
    out = Path(build_dir or default_build_dir())
    if baked_header is not None:
        out = out / f"baked-{Path(baked_header).stem}"
    if method == "pty":
        with posix_pty(build_firmware("posix", out, baked=baked_header)) as url:
            yield url
    elif method == "qemu-system":
        with qemu_mps2(build_firmware("mps2", out, baked=baked_header)) as url:
            yield url
    else:
        raise TargetError(
            f"emulation method {method!r} cannot run MCU firmware; "
            "set [emulation] method to 'pty' or 'qemu-system' in the target file"
        )
