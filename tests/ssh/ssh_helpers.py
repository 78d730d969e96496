"""Helpers for the SSH target tests: a tiny ONNX job and the stand-in board (a real sshd).

The stand-in board is Debian's OpenSSH server with its own host key, port and
authorized_keys under a work dir, started inside a private network namespace reached through
a veth pair (so its address, 10.77.X.2, is one we created); where namespaces are unavailable
it listens on 127.0.0.1. Its sessions get a PATH whose ``python3`` is the emulated aarch64
python (a qemu-user shim), so ``python3 agent.py`` over SSH behaves as on a Raspberry Pi.

Run by hand (as root) to get a board for the CLI; it prints the environment overrides:

    .venv/bin/python tests/ssh/ssh_helpers.py [--rootfs DIR] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEQ, VOCAB, DIM, CLASSES = 12, 64, 16, 3


# ---- a tiny job ------------------------------------------------------------------------------
def make_tiny_onnx(path: Path, seed: int = 0) -> Path:
    """Masked mean of embeddings -> dense -> softmax; inputs/outputs as the job contract says."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(VOCAB, DIM)).astype(np.float32), "emb"),
        numpy_helper.from_array(rng.normal(size=(DIM, CLASSES)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(CLASSES,)).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
        helper.make_node("ReduceSum", ["em", "axis1"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "axis1"], ["n"], keepdims=1),
        helper.make_node("Div", ["s", "n"], ["mean"]),
        helper.make_node("MatMul", ["mean", "w"], ["z"]),
        helper.make_node("Add", ["z", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, "seq"]),
        ],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loadable by older onnxruntime builds on boards, too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_job(job_dir: Path, n_inputs: int = 4, seed: int = 0) -> Path:
    """A job folder as the agent contract defines it (job.json, model.onnx, inputs.npz)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    make_tiny_onnx(job_dir / "model.onnx", seed)
    rng = np.random.default_rng(seed + 1)
    lengths = rng.integers(3, SEQ + 1, size=n_inputs).astype(np.int64)
    ids = rng.integers(1, VOCAB, size=(n_inputs, SEQ)).astype(np.int64)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    ids *= mask
    np.savez(job_dir / "inputs.npz", input_ids=ids, attention_mask=mask, lengths=lengths)
    files = {
        name: hashlib.sha256((job_dir / name).read_bytes()).hexdigest()
        for name in ("model.onnx", "inputs.npz")
    }
    job = {"files": files, "model": "model.onnx", "runtime": "onnxruntime", "provider": "CPU"}
    (job_dir / "job.json").write_text(json.dumps(job, indent=1))
    return job_dir


def host_outputs(job_dir: Path) -> list[list[float]]:
    """Reference probabilities from the host's onnxruntime, fed as the agent feeds them."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(job_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    with np.load(job_dir / "inputs.npz") as data:
        ids, mask, lengths = data["input_ids"], data["attention_mask"], data["lengths"]
    feeds = [
        {"input_ids": ids[i : i + 1, :n], "attention_mask": mask[i : i + 1, :n]}
        for i, n in enumerate(lengths)
    ]
    return [sess.run(["probs"], feed)[0][0].tolist() for feed in feeds]


# ---- the stand-in board ----------------------------------------------------------------------
@dataclass
class StandInBoard:
    """A running sshd whose ``python3`` is emulated aarch64. Fields are what a spec needs."""

    host: str
    port: int
    user: str
    key: Path  # client private key, authorized on the board
    known_hosts: Path  # holds the board's host key only
    host_key_line: str
    workdir: Path
    sshd: subprocess.Popen
    netns: str | None
    host_if: str | None
    log: Path

    def env(self, target: str = "rpi4") -> dict[str, str]:
        """CODESIGN_TARGET_<NAME>_* overrides pointing ``targets/<target>.toml`` here."""
        prefix = "CODESIGN_TARGET_" + target.upper().replace("-", "_") + "_"
        return {
            prefix + "HOST": self.host,
            prefix + "PORT": str(self.port),
            prefix + "USER": self.user,
            prefix + "KEY": str(self.key),
            prefix + "KNOWN_HOSTS": str(self.known_hosts),
        }

    def transport(self, **kwargs):
        from toolchain.boards.ssh import SshTransport

        args = dict(
            port=self.port,
            user=self.user,
            key=str(self.key),
            known_hosts=str(self.known_hosts),
            connect_timeout_s=5,
            retries=0,
        )
        args.update(kwargs)
        return SshTransport(self.host, **args)

    def agent_running(self) -> bool:
        """Whether a codesign agent (``agent.py``) runs in one of the board's sessions now."""
        for pid in self.session_pids():
            try:
                if b"agent.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:  # the process ended meanwhile
                continue
        return False

    def session_pids(self) -> list[int]:
        """Every process below the sshd listener (sessions, then their commands), top-down."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
        found: list[int] = []
        level = list(children.get(self.sshd.pid, []))
        while level:  # breadth first: the per-connection sshd processes come first
            found.extend(level)
            level = [c for pid in level for c in children.get(pid, [])]
        return found

    def kill_sessions(self) -> int:
        """SIGKILL every session of this sshd (the listener stays up), as a dropped link would.

        The sshd session processes go first: killing the remote command first would let
        sshd report its exit status (137) before the connection drops."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        self.kill_sessions()
        self.sshd.terminate()
        try:
            self.sshd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.sshd.kill()
            self.sshd.wait(timeout=10)
        if self.netns:
            _teardown_netns(self.netns, self.host_if or "")


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _setup_netns(tag: str) -> tuple[str, str, str] | None:
    """A namespace + veth pair on a free 10.77.X.0/24; (netns, host interface, board address)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return None
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    subnet = next((f"10.77.{x}" for x in range(1, 255) if f"10.77.{x}." not in used), None)
    if subnet is None:
        return None
    ns, host_if, board_if = f"cs-ssh-{tag}", f"csh{tag}", f"csb{tag}"
    try:
        _sh("ip", "netns", "add", ns)
    except (subprocess.CalledProcessError, OSError):
        return None
    try:
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", board_if)
        _sh("ip", "link", "set", board_if, "netns", ns)
        _sh("ip", "addr", "add", f"{subnet}.1/24", "dev", host_if)
        _sh("ip", "link", "set", host_if, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{subnet}.2/24", "dev", board_if)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", board_if, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError):
        _teardown_netns(ns, host_if)
        return None
    return ns, host_if, f"{subnet}.2"


def _teardown_netns(ns: str, host_if: str) -> None:
    # Deleting the namespace destroys the board end of the veth pair and with it the host end.
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
    if host_if:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path, comment: str) -> str:
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd on {host}:{port} did not start: {log.read_text()[-2000:]}")


def _sshd_config(work: Path, addr: str, port: int, user: str, path: str, home: Path) -> str:
    lines = [
        f"Port {port}",
        f"ListenAddress {addr}",
        f"HostKey {work / 'ssh_host_ed25519_key'}",
        f"PidFile {work / 'sshd.pid'}",
        f"AuthorizedKeysFile {work / 'authorized_keys'}",
        "StrictModes no",
        "UsePAM no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        # The board's environment: python3 is the emulated aarch64 one.
        f"SetEnv PATH={path} HOME={home}",
        "Subsystem sftp internal-sftp",
        "PrintMotd no",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "LogLevel VERBOSE",
    ]
    return "\n".join(lines) + "\n"


def start_board(rootfs: Path, work: Path, cpu: str = "cortex-a72", tag: str | None = None) -> StandInBoard:
    """Start sshd as the stand-in board; call ``.stop()`` when done (needs root for netns).

    ``tag`` names its network namespace: one board per process by default (the process id);
    pass distinct tags to run several at once."""
    from toolchain.boards.emulation import write_python_shim

    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    host_pub = _keygen(work / "ssh_host_ed25519_key", "stand-in-board")
    client_pub = _keygen(work / "client_key", "codesign-tests")
    (work / "authorized_keys").write_text(client_pub + "\n")
    shim_dir = work / "bin"
    write_python_shim(rootfs, shim_dir, cpu=cpu)
    home = work / "home"
    home.mkdir(exist_ok=True)
    path = f"{shim_dir}:/usr/local/bin:/usr/bin:/bin"
    # bash sources ~/.bashrc even for `ssh host cmd` (Debian builds it with SSH_SOURCE_BASHRC)
    # and the real one may prepend pyenv or a venv; HOME points bash at this one instead.
    for rc in (".bashrc", ".profile"):
        (home / rc).write_text(f"export PATH={path}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir

    tag = tag or str(os.getpid() % 100000)
    net = _setup_netns(tag)
    netns, host_if, addr = net if net else (None, None, "127.0.0.1")
    port = 2222 if netns else _free_port()
    user = getpass.getuser()
    config = work / "sshd_config"
    config.write_text(_sshd_config(work, addr, port, user, path, home))
    log = work / "sshd.log"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen([*prefix, sshd_bin, "-D", "-f", str(config), "-E", str(log)])
    known = work / "known_hosts"
    host_key_line = f"[{addr}]:{port} {' '.join(host_pub.split()[:2])}"
    known.write_text(host_key_line + "\n")
    board = StandInBoard(
        addr, port, user, work / "client_key", known, host_key_line, work, proc, netns, host_if, log
    )
    try:
        _wait_for_port(addr, port, proc, log)
    except BaseException:
        board.stop()
        raise
    return board


def main() -> None:
    from toolchain.boards.emulation import prepare_rootfs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", type=Path, default=None, help="prebuilt rootfs directory")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    rootfs = args.rootfs or prepare_rootfs()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="codesign-board-"))
    board = start_board(rootfs, work)

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Background jobs start with SIGINT ignored; handle INT and TERM so the netns is removed.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for key, value in board.env("rpi4").items():
            print(f"export {key}={value}")
        print("# stand-in board running; Ctrl-C stops it", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()


if __name__ == "__main__":
    main()
