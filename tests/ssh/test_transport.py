"""SshTransport: argv construction (fast) and behaviour against the real stand-in sshd."""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path

import pytest

from toolchain.boards.ssh import SshTransport
from toolchain.errors import HostKeyError, TargetError, TargetUnreachableError, TransportError

NASTY = [
    "a b",
    "it's",
    'say "hi"',
    "x; touch /tmp/codesign-pwned",
    "$(touch /tmp/codesign-pwned)",
    "`id`",
    "*",
    "~",
    "",
    "--",
    "-n",
    "tab\there",
    "new\nline",
    "back\\slash",
    "ünïcödé",
    "a && b || c > d < e | f & g",
]


# ---- fast: argv construction ---------------------------------------------------------------
def test_ssh_argv_is_strict_and_quoted(tmp_path):
    t = SshTransport(
        "board.local", port=2200, user="pi", key="/k", known_hosts=str(tmp_path / "kh")
    )
    argv = t.ssh_argv(["echo", "a b", "c;d"])
    assert argv[0] == "ssh" and argv[-2:] == ["board.local", "echo 'a b' 'c;d'"]
    assert argv[-3] == "--"
    opts = " ".join(argv)
    for want in (
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={tmp_path}/kh",
        "IdentityFile=/k",
        "IdentitiesOnly=yes",
        "User=pi",
        "ConnectTimeout=10",
    ):
        assert want in opts
    assert argv[argv.index("-p") + 1] == "2200"


def test_trust_on_first_use_only_when_asked():
    assert (
        "StrictHostKeyChecking=accept-new" in SshTransport("h", trust_on_first_use=True).options()
    )
    assert "StrictHostKeyChecking=yes" in SshTransport("h").options()


@pytest.mark.parametrize("host", ["", "-oProxyCommand=touch x", "a b", "u@h", "h;id", "$(id)"])
def test_bad_hosts_are_refused(host):
    with pytest.raises(TargetError, match="host"):
        SshTransport(host)


def test_known_hosts_path_with_space_and_percent_is_quoted():
    t = SshTransport("h", known_hosts="/tmp/my dir/k%h")
    assert 'UserKnownHostsFile="/tmp/my dir/k%%h"' in t.options()


def test_scp_refuses_paths_needing_quotes():
    t = SshTransport("h")
    with pytest.raises(TransportError, match="quoting"):
        t.upload(Path(__file__), "/tmp/a b")


def test_connect_failures_retry_with_backoff_then_unreachable(monkeypatch):
    sleeps = []
    monkeypatch.setattr("toolchain.boards.ssh._sleep", sleeps.append)
    # A port nobody listens on, on an address we own: refused at once.
    t = SshTransport("127.0.0.1", port=1, retries=2, backoff_s=0.5, connect_timeout_s=2)
    with pytest.raises(TargetUnreachableError, match="3 attempt"):
        t.check()
    assert sleeps == [0.5, 1.0]


# ---- against the stand-in board ------------------------------------------------------------
@pytest.mark.slow
def test_nasty_arguments_round_trip(board):
    marker = Path("/tmp/codesign-pwned")
    marker.unlink(missing_ok=True)
    proc = board.transport().run(["printf", "%s\\0", *NASTY])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\0")[:-1] == NASTY
    assert not marker.exists()


@pytest.mark.slow
def test_remote_exit_status_and_stdin(board):
    t = board.transport()
    assert t.run(["sh", "-c", "exit 7"]).returncode == 7
    assert t.run(["cat"], input="hello\n").stdout == "hello\n"


@pytest.mark.slow
def test_unknown_host_key_is_refused(board, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError) as info:
        board.transport(known_hosts=str(empty), retries=3).check()
    message = str(info.value)
    assert board.host in message and "ssh-keyscan" in message
    assert empty.read_text() == ""  # nothing was learnt


@pytest.mark.slow
def test_changed_host_key_is_refused(board, tmp_path):
    other = tmp_path / "known_hosts"
    # Another ed25519 key for the same [host]:port, as after a man-in-the-middle.
    other.write_text(
        f"[{board.host}]:{board.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIEB0Q1qBtGHfNx4l8B3YLqvZJd6yS6nUYc0qKQ2pK1Ab\n"
    )
    with pytest.raises(HostKeyError, match="does not match"):
        board.transport(known_hosts=str(other)).check()


@pytest.mark.slow
def test_trust_on_first_use_learns_the_key(board, tmp_path):
    learnt = tmp_path / "sub" / "known_hosts"
    board.transport(known_hosts=str(learnt), trust_on_first_use=True).check()
    assert board.host_key_line.split()[-1] in learnt.read_text()
    board.transport(known_hosts=str(learnt)).check()  # strict now passes with the learnt key


@pytest.mark.slow
def test_upload_download_mkdir_remove(board, tmp_path):
    t = board.transport()
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "deep" / "f.bin").write_bytes(bytes(range(256)))
    (src / "a.txt").write_text("x")
    remote = t.make_temp_dir()
    try:
        t.mkdir(f"{remote}/m/n")
        t.upload(src, f"{remote}/copy")
        listing = t.run_checked(["find", f"{remote}/copy", "-type", "f"]).split()
        assert sorted(Path(p).name for p in listing) == ["a.txt", "f.bin"]
        t.download(f"{remote}/copy", tmp_path / "back")
        assert (tmp_path / "back" / "deep" / "f.bin").read_bytes() == bytes(range(256))
    finally:
        t.remove(remote)
    assert t.run(["test", "-e", remote]).returncode == 1


@pytest.mark.slow
def test_command_timeout_is_a_transport_error(board):
    t = board.transport()
    start = time.monotonic()
    with pytest.raises(TransportError, match="did not finish"):
        t.run(["sleep", "30"], timeout=2)
    assert time.monotonic() - start < 25  # bounded by the timeout, not a hang (generous under load)


@pytest.mark.slow
def test_killed_connection_is_a_transport_error(board):
    import threading

    tag = uuid.uuid4().hex
    errors = []

    def victim():
        try:
            board.transport().run(["sh", "-c", f"sleep 60 # {tag}"], timeout=60)
        except TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=victim)
    thread.start()
    _wait_for_remote(board, tag)
    board.kill_sessions()
    thread.join(30)
    assert not thread.is_alive()
    assert errors and "lost the connection" in str(errors[0])


def _wait_for_remote(board, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in board.session_pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if needle in cmdline:
                return
        time.sleep(0.1)
    raise AssertionError(f"no remote process with {needle!r} appeared")


def test_remote_command_is_shlex_joined():
    t = SshTransport("h")
    assert shlex.split(t.ssh_argv(NASTY)[-1]) == NASTY
