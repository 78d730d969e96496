"""Stand-in boards for the labgrid kind: tests/ssh's sshd board, several at once, each in its own
network namespace, described by one local labgrid environment YAML (no coordinator).

tests/ssh/ssh_helpers.py names a board's namespace after the process id, so it starts one board
per process; ``start_boards`` starts any number with distinct names from its pieces.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ssh"))

import ssh_helpers  # noqa: E402
from ssh_helpers import StandInBoard  # noqa: E402

STRATEGY = HERE / "standin_strategy.py"
POWER = HERE / "standin_power.py"
_started = 0


def start_stand_in(rootfs: Path, work: Path, cpu: str = "cortex-a72") -> StandInBoard:
    """One more stand-in board (sshd, emulated aarch64 python3); ``.stop()`` it when done."""
    global _started
    _started += 1
    # Not ssh_helpers' pid-only tag: no clash with its board, nor between these.
    return ssh_helpers.start_board(rootfs, work, cpu=cpu, tag=f"{os.getpid() % 10000}l{_started}")


def kill_board(board: StandInBoard) -> None:
    """The board dies: its sshd sessions and listener are killed (the namespace stays)."""
    board.kill_sessions()
    board.sshd.kill()
    board.sshd.wait(timeout=10)


def logins(board: StandInBoard) -> int:
    """Public-key logins the board's sshd accepted so far (LogLevel VERBOSE)."""
    try:
        return board.log.read_text(errors="replace").count("Accepted publickey")
    except FileNotFoundError:
        return 0


def power_log(folder: Path, name: str) -> Path:
    return folder / f"power-{name}.log"


def write_env(path: Path, boards: dict[str, StandInBoard | tuple[str, int, str]], *,
              strategy: bool = True, ssh_driver: bool = True, boot_timeout: float = 15.0) -> Path:
    """A local labgrid environment (no coordinator): per board a NetworkService, a logging
    ExternalPowerDriver and (``strategy``) the StandInStrategy. ``ssh_driver`` adds labgrid's
    SSHDriver too, which codesign must never activate (it disables host-key checking).
    JSON is YAML, so the file is written with json."""
    targets = {}
    for name, board in boards.items():
        address, port, user = ((board.host, board.port, board.user)
                               if isinstance(board, StandInBoard) else board)
        log = power_log(path.parent, name)
        cmd = f"{sys.executable} {POWER}"
        drivers: list[dict] = [{"ExternalPowerDriver": {
            "cmd_on": f"{cmd} on {log}", "cmd_off": f"{cmd} off {log}",
            "cmd_cycle": f"{cmd} cycle {log}"}}]
        if ssh_driver:
            drivers.append({"SSHDriver": {}})
        if strategy:
            drivers.append({"StandInStrategy": {"boot_timeout": boot_timeout}})
        targets[name] = {
            "resources": [{"NetworkService": {"address": address, "username": user, "port": port}}],
            "drivers": drivers,
        }
    data = {"targets": targets, "imports": [str(STRATEGY)] if strategy else []}
    path.write_text(json.dumps(data, indent=1))
    return path


def write_target(folder: Path, name: str, *, env: str, lg_target: str, key: str = "",
                 known_hosts: str = "", **labgrid) -> Path:
    """A ``kind = "labgrid"`` target file; ``labgrid`` holds the other [labgrid] keys."""
    lines = [f'name = "{name}"', 'kind = "labgrid"', 'arch = "aarch64"', "",
             "[connection]", f'key = "{key}"', f'known_hosts = "{known_hosts}"',
             "connect_timeout_s = 5.0", "retries = 1", "", "[labgrid]", f'env = "{env}"',
             f'target = "{lg_target}"']
    for k, v in labgrid.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
