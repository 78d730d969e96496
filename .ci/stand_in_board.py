"""Start the stand-in Raspberry Pi for CI and keep it up until SIGTERM/SIGINT.

The board is tests/ssh's: a real OpenSSH server (own host key, port, authorized_keys) in a
network namespace with a veth pair (127.0.0.1 where namespaces are unavailable), whose
sessions' python3 is the emulated aarch64 root filesystem. Once it answers, this writes the
CODESIGN_TARGET_<NAME>_* overrides as shell ``export`` lines to --env-file (atomically: the
file appears complete or not at all), plus CI_BOARD_SSHD_LOG, the sshd log in which CI checks
that the profile really logged in. On exit it stops sshd and removes the namespace.

    python .ci/stand_in_board.py --rootfs DIR --workdir DIR --env-file FILE [--target rpi4]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ssh"))

from ssh_helpers import start_board  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", type=Path, required=True, help="built arm64 rootfs folder")
    parser.add_argument("--workdir", type=Path, required=True, help="sshd config, keys, log")
    parser.add_argument("--env-file", type=Path, required=True)
    parser.add_argument("--target", default="rpi4", help="target whose overrides to write")
    args = parser.parse_args()

    stop_requested = False

    def stop(signum, frame):
        nonlocal stop_requested
        stop_requested = True
        raise KeyboardInterrupt

    # Background jobs start with SIGINT ignored; take INT and TERM so the netns is removed.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    board = start_board(args.rootfs.resolve(), args.workdir.resolve())
    try:
        env = board.env(args.target)
        env["CI_BOARD_SSHD_LOG"] = str(board.log)
        env["CI_BOARD_NETNS"] = board.netns or ""
        text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        tmp = args.env_file.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.env_file)
        where = f"netns {board.netns}" if board.netns else "loopback (no netns here)"
        print(f"stand-in board: {board.user}@{board.host}:{board.port} ({where})", flush=True)
        while not stop_requested:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        args.env_file.unlink(missing_ok=True)
        print("stand-in board stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
