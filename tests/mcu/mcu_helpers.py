"""Helpers shared by the MCU tests: skip markers, synthetic heads, in-memory ports."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from toolchain.paths import PROJECT_ROOT

FIRMWARE = PROJECT_ROOT / "firmware_stubs"
HERE = Path(__file__).resolve().parent

needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None or shutil.which("make") is None,
    reason="a host C compiler and make are needed (apt-get install gcc make)",
)
needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None,
    reason="arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi)",
)
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm and arm-none-eabi-gcc are needed "
    "(apt-get install qemu-system-arm gcc-arm-none-eabi)",
)


def softmax_head(rng: np.random.Generator, n_in: int = 96, n_cls: int = 6):
    """A softmax-regression head fitted (a few gradient steps) on separable synthetic data."""
    from toolchain.heads.dense import DenseLayer

    centers = rng.normal(size=(n_cls, n_in)) * 1.5
    y = rng.integers(0, n_cls, size=600)
    x = centers[y] + rng.normal(size=(600, n_in))
    x = (x - x.mean(0)) / x.std(0)
    w = np.zeros((n_cls, n_in))
    b = np.zeros(n_cls)
    onehot = np.eye(n_cls)[y]
    for _ in range(100):
        z = x @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * (p - onehot).T @ x / len(x)
        b -= 0.5 * (p - onehot).mean(0)
    layer = DenseLayer(w.astype(np.float32), b.astype(np.float32))
    return [layer], x.astype(np.float32), y


def relu_mlp_head(rng: np.random.Generator, n_in: int = 128, hidden: int = 64, n_cls: int = 5):
    """A 2-layer ReLU head (ELM-style: random hidden layer, least-squares readout)."""
    from toolchain.heads.dense import DenseLayer

    x = rng.normal(size=(500, n_in)).astype(np.float32)
    y = (x[:, :n_cls] + 0.3 * rng.normal(size=(500, n_cls))).argmax(1)
    w1 = rng.normal(size=(hidden, n_in)) / np.sqrt(n_in)
    b1 = rng.normal(size=hidden) * 0.1
    h = np.maximum(x @ w1.T + b1, 0)
    hb = np.hstack([h, np.ones((len(h), 1))])
    sol = np.linalg.lstsq(hb, np.eye(n_cls)[y], rcond=None)[0]
    layers = [
        DenseLayer(w1.astype(np.float32), b1.astype(np.float32), "relu"),
        DenseLayer(sol[:-1].T.astype(np.float32), sol[-1].astype(np.float32)),
    ]
    return layers, x, y


def make(out: Path, *targets: str, **variables: str) -> subprocess.CompletedProcess:
    cmd = ["make", "-C", str(FIRMWARE), f"OUT={out}", *targets]
    cmd += [f"{k}={v}" for k, v in variables.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


class Faults:
    """Byte-stream damage: flip one bit of a byte with probability ``corrupt``, drop a byte
    with probability ``drop``; ``stalled`` swallows everything (a hung device or cable)."""

    def __init__(self, seed: int = 0, corrupt: float = 0.0, drop: float = 0.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.corrupt = corrupt
        self.drop = drop
        self.stalled = False
        self.damaged = 0

    def apply(self, data: bytes) -> bytes:
        if self.stalled:
            return b""
        if not (self.corrupt or self.drop) or not data:
            return data
        out = bytearray()
        for b in data:
            r = self.rng.random()
            if r < self.drop:
                self.damaged += 1
                continue
            if r < self.drop + self.corrupt:
                self.damaged += 1
                b ^= 1 << int(self.rng.integers(0, 8))
            out.append(b)
        return bytes(out)


class PipePort:
    """A pyserial-like port onto a firmware process's stdin/stdout, with a fault-injecting
    proxy in each direction (tx: host -> device, rx: device -> host)."""

    def __init__(self, proc: subprocess.Popen, tx: Faults | None = None, rx: Faults | None = None):
        self.proc = proc
        self.tx = tx or Faults()
        self.rx = rx or Faults()

    def write(self, data: bytes) -> int:
        data = self.tx.apply(data)
        if data:
            os.write(self.proc.stdin.fileno(), data)
        return len(data)

    def read(self, n: int) -> bytes:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], 0.02)
        if not ready:
            return b""
        return self.rx.apply(os.read(fd, max(n, 4096)))

    def close(self) -> None:
        pass


def start_pipe_firmware(binary: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)


class Tamper:
    """Targeted damage: flip bit ``bit`` of the byte ``skip`` bytes after each occurrence of
    ``pattern`` in the stream (matched across chunk boundaries), at most ``times`` times (None:
    every time). Stands in for a Faults object on either direction of a port; ``damaged``
    counts what it really did."""

    def __init__(self, pattern: bytes, *, skip: int = 0, bit: int = 0, times: int | None = 1):
        self.pattern, self.skip, self.bit, self.times = pattern, skip, bit, times
        self.damaged = 0
        self.stalled = False
        self._window = b""
        self._left: int | None = None  # bytes still to pass before the one to flip

    def apply(self, data: bytes) -> bytes:
        out = bytearray(data)
        for i in range(len(out)):
            if self._left is not None:
                if self._left == 0:
                    out[i] ^= 1 << self.bit
                    self.damaged += 1
                    self._left = None
                else:
                    self._left -= 1
            self._window = (self._window + out[i : i + 1])[-len(self.pattern) :]
            more = self.times is None or self.damaged < self.times
            if self._window == self.pattern and self._left is None and more:
                self._left = self.skip
        return bytes(out)


class FakeDevice:
    """Pure-Python model of the firmware protocol, so the host link is tested in memory
    against a byte buffer with no firmware at all. ``proto`` < 2 answers like a protocol-1
    firmware (no m-fcs line). ``tamper(argv, reply_bytes) -> bytes`` damages replies."""

    def __init__(self, proto: int = 2) -> None:
        self.proto = proto
        self.line = bytearray()
        self.out = bytearray()
        self.active: bytes | None = None
        self.staging: bytearray | None = None
        self.expected = self.id = 0
        self.received = 0
        self.commits = 0
        self.commands: list[str] = []  # every command line the device heard
        self.drop_next_replies = 0  # lose the replies of the next N commands
        self.tamper = None
        self.input: bytes | None = None
        self.expected_in = 0
        self.output: np.ndarray | None = None

    def feed(self, data: bytes) -> None:
        for b in data:
            if b == ord("%"):
                raw, self.line = bytes(self.line), bytearray()
                line = raw.decode("ascii", "replace").strip()
                if not line:
                    continue
                self.commands.append(line)
                argv = line.split(" ")
                try:
                    reply = self.handle(argv)
                except (ValueError, IndexError, TypeError):  # like the C parser's e- replies
                    reply = ["e-[bad arguments]"]
                body = "".join(x + "\r\n" for x in reply).encode()
                if self.proto >= 2:  # the frame check: command as heard, '%', reply bytes
                    fcs = zlib.crc32(body, zlib.crc32(b"%", zlib.crc32(raw)))
                    body += f"m-fcs-[{fcs:08x}]\r\n".encode()
                body += b"m-ready\r\n"
                if self.tamper is not None:
                    body = self.tamper(argv, body)
                if self.drop_next_replies:
                    self.drop_next_replies -= 1
                else:
                    self.out += body
            else:
                self.line.append(b)

    def _head(self):
        from toolchain.mcu.blob import from_blob

        return from_blob(self.active)

    def handle(self, argv: list[str]) -> list[str]:
        cmd = argv[0]
        if cmd == "ping":
            return [f"m-pong-{argv[1]}"]
        if cmd == "version":
            return [
                f"m-version-[proto={self.proto};fw=0.1.0;port=fake;cc=none;counter=instructions;"
                "slot=65536;maxdim=4096;layers=8;line=512]"
            ]
        if cmd == "profile":
            if self.active is None:
                return ["m-profile-[codesign 0.1.0]", "m-model-[none]"]
            ident = zlib.crc32(self.active[:-4])
            return ["m-profile-[codesign 0.1.0]", f"m-model-[id={ident:08x};bytes={len(self.active)}]"]
        if cmd == "mload":
            self.staging = bytearray(int(argv[1]))
            self.expected, self.id, self.received = int(argv[1]), int(argv[2], 16), 0
            return [f"m-mload-[expecting {argv[1]}]"]
        if cmd == "mdata":
            off, data = int(argv[1]), bytes.fromhex(argv[2])
            if zlib.crc32(data, zlib.crc32(off.to_bytes(4, "little"))) != int(argv[3], 16):
                return ["e-nak-[chunk crc]"]
            self.staging[off : off + len(data)] = data
            self.received = max(self.received, off + len(data))
            return [f"m-ack-{off + len(data)}"]
        if cmd == "commit":
            ident = int(argv[1], 16)
            if self.staging is None:
                if self.active is not None and zlib.crc32(self.active[:-4]) == ident:
                    return [f"m-commit-[id={ident:08x}]"]  # a retried commit: already active
                return ["e-[commit: nothing staged]"]
            if ident != self.id:
                return ["e-[commit: id differs from the staged upload's, nothing changed]"]
            ok = self.received == self.expected and zlib.crc32(self.staging[:-4]) == self.id
            staged, self.staging = bytes(self.staging), None
            if not ok:
                return ["e-[commit: staged blob does not match its id, previous model kept]"]
            self.active = staged
            self.commits += 1
            return [f"m-commit-[id={ident:08x}]"]
        if cmd == "selfcheck":
            from toolchain.mcu.reference import selfcheck_crc

            head = self._head()
            return [f"m-selfcheck-[n={head.reference_inputs.shape[0]};"
                    f"crc={selfcheck_crc(head):08x};icount=1000]"]
        if cmd == "db" and argv[1] == "load":
            self.input, self.expected_in, self.output = b"", int(argv[2]), None
            return [f"m-[Expecting {argv[2]} bytes]"]
        if cmd == "db":
            self.input += bytes.fromhex(argv[1])
            return ["m-load-done"] if len(self.input) == self.expected_in else []
        if cmd == "infer":
            from toolchain.mcu.reference import run_int8

            self.output = run_int8(self._head(), np.frombuffer(self.input, np.int8))
            return [f"m-infer-done-[n={argv[1]};icount={700 * int(argv[1])};"
                    f"incrc={zlib.crc32(self.input):08x}]"]
        if cmd == "results":
            out = self.output
            return [
                "m-results-[" + ",".join(str(int(v)) for v in out) + "]",
                f"m-argmax-[{int(out.argmax())}]",
                f"m-crc-[{zlib.crc32(out.tobytes()):08x}]",
            ]
        return [f"e-[unknown command '{cmd[:16]}']"]


class MemoryPort:
    """Host side of an in-memory byte buffer connected to a FakeDevice."""

    def __init__(self, device: FakeDevice, tx: Faults | None = None, rx: Faults | None = None):
        self.device = device
        self.tx = tx or Faults()
        self.rx = rx or Faults()
        self.written = bytearray()

    @property
    def in_waiting(self) -> int:
        return len(self.device.out)

    def write(self, data: bytes) -> int:
        self.written += data
        self.device.feed(self.tx.apply(data))
        return len(data)

    def read(self, n: int) -> bytes:
        if not self.device.out:
            time.sleep(0.001)
            return b""
        chunk = bytes(self.device.out[:n])
        del self.device.out[:n]
        return self.rx.apply(chunk)

    def close(self) -> None:
        pass
