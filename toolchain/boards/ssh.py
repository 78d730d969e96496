"""SSH transport over the system OpenSSH client (``ssh``/``scp``), never a shell string.

Why the system client rather than paramiko: it honours the user's agent, ProxyJump and
known_hosts exactly as their own ``ssh`` does, and it is one less wheel on the host.

Safety rules this module keeps:

* Every local process is started from an argument list. The *remote* side always runs a
  command through the login shell, so the remote argv is joined with ``shlex.join`` (POSIX
  quoting) and nothing user-supplied is ever pasted into a shell string.
* Host keys are verified (``StrictHostKeyChecking=yes``) against the spec's known_hosts file
  or ``~/.ssh/known_hosts``. An unknown or changed key raises HostKeyError and is never
  retried; trust-on-first-use (``accept-new``) must be asked for explicitly.
* Failures to *connect* are retried with exponential backoff; a connection lost after the
  remote command started is not (the command may have had effects) and raises
  TransportError so that no measurement record is written from a half run.
"""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import HostKeyError, TargetError, TargetUnreachableError, TransportError

log = logging.getLogger(__name__)

_sleep = time.sleep  # the backoff's clock; tests replace it (patching time.sleep hits subprocess)
SSH_FAILURE = 255  # ssh's own exit status for its errors; anything else is the remote command's
# Paths we hand to scp: legacy (pre-9.0) scp passes the remote path through the remote shell,
# so we accept only characters that need no quoting there.
_SAFE_REMOTE_PATH = re.compile(r"[A-Za-z0-9_.+/-]+")
_HOSTKEY = re.compile(
    r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
    r"host key is known for|Host key for .* has changed|HOST KEY HAS CHANGED"
)
_AUTH = re.compile(r"Permission denied \(|Too many authentication failures")
# Only errors that certainly happen before the remote command starts: safe to retry.
_CONNECT = re.compile(
    r"Connection refused|Connection timed out|Operation timed out|No route to host|"
    r"Network is unreachable|Could not resolve hostname|Name or service not known|"
    r"kex_exchange_identification|timed out during banner exchange|Temporary failure in name"
)
_DROPPED = re.compile(
    r"closed by remote host|Connection closed by|Connection reset|Broken pipe|not responding|"
    r"client_loop:|Connection to .* closed|lost connection"
)


def _ssh_quote_option(value: str) -> str:
    """Quote a path for ``-o Key=value``: ssh splits on spaces and expands ``%`` tokens."""
    if '"' in value:
        raise ValueError(f"path {value!r} contains a double quote, which ssh options cannot carry")
    value = value.replace("%", "%%")
    return f'"{value}"' if any(c.isspace() for c in value) else value


class SshTransport:
    """One board reached with OpenSSH. Cheap to create; each call is its own ssh process."""

    def __init__(
        self,
        host: str,
        *,
        port: int = 0,
        user: str = "",
        key: str = "",
        known_hosts: str = "",
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 300.0,
        retries: int = 2,
        trust_on_first_use: bool = False,
        backoff_s: float = 1.0,
        ssh: str = "ssh",
        scp: str = "scp",
    ) -> None:
        if not host or host.startswith("-") or any(c.isspace() or c in "@/'\"`;$" for c in host):
            raise TargetError(
                f"SSH host {host!r} is not a host name or address; set it in the target's "
                "[connection] table or CODESIGN_TARGET_<NAME>_HOST"
            )
        if user and (
            user.startswith("-") or not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", user)
        ):
            raise TargetError(f"SSH user {user!r} is not a valid login name")
        self.host = host
        self.port = int(port)
        self.user = user
        self.key = str(Path(key).expanduser()) if key else ""
        self.known_hosts = Path(known_hosts or "~/.ssh/known_hosts").expanduser()
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.retries = max(0, int(retries))
        self.trust_on_first_use = trust_on_first_use
        self.backoff_s = backoff_s
        self._ssh = ssh
        self._scp = scp

    @classmethod
    def from_connection(cls, connection, *, trust_on_first_use: bool = False, **overrides):
        """Build from a spec's ``Connection`` (host, port, user, key, known_hosts, timeouts)."""
        kwargs = dict(
            port=connection.port,
            user=connection.user,
            key=connection.key,
            known_hosts=connection.known_hosts,
            connect_timeout_s=connection.connect_timeout_s,
            command_timeout_s=connection.command_timeout_s,
            retries=connection.retries,
            trust_on_first_use=trust_on_first_use,
        )
        kwargs.update(overrides)
        return cls(connection.host, **kwargs)

    @property
    def label(self) -> str:
        """``user@host:port`` for messages."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port or 22}"

    def options(self) -> list[str]:
        """The ``-o`` options shared by ssh and scp."""
        checking = "accept-new" if self.trust_on_first_use else "yes"
        opts = {
            "BatchMode": "yes",  # never prompt: a password/passphrase prompt would hang a run
            "ConnectTimeout": str(max(1, round(self.connect_timeout_s))),
            "StrictHostKeyChecking": checking,
            "UserKnownHostsFile": _ssh_quote_option(str(self.known_hosts)),
            "ServerAliveInterval": "15",  # notice a dead board within ~45 s, not TCP's hours
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",  # keeps stderr to real errors, which we classify
            "ControlMaster": "no",  # a user's shared master would outlive our timeouts
            "ControlPath": "none",
            "ForwardAgent": "no",
            "ForwardX11": "no",
        }
        if self.user:
            opts["User"] = self.user
        if self.key:
            opts["IdentityFile"] = _ssh_quote_option(self.key)
            opts["IdentitiesOnly"] = "yes"
        argv: list[str] = []
        for name, value in opts.items():
            argv += ["-o", f"{name}={value}"]
        return argv

    def ssh_argv(self, argv: Sequence[str]) -> list[str]:
        """The local argv running remote ``argv``; it reaches the remote shell as one quoted line."""
        if not argv:
            raise ValueError("argv must name a remote program")
        port = ["-p", str(self.port)] if self.port else []
        return [self._ssh, *self.options(), *port, "--", self.host, shlex.join(list(argv))]

    def _scp_target(self, remote: str) -> str:
        if not _SAFE_REMOTE_PATH.fullmatch(remote) or remote.startswith("-"):
            raise TransportError(
                f"remote path {remote!r} needs shell quoting; use plain characters [A-Za-z0-9_.+/-]"
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{remote}"

    def _scp_argv(self, sources: Sequence[str], dest: str) -> list[str]:
        port = ["-P", str(self.port)] if self.port else []
        return [self._scp, "-r", "-p", "-q", *self.options(), *port, "--", *sources, dest]

    def _invoke(
        self,
        argv: list[str],
        what: str,
        timeout: float | None,
        input: str | None = None,
        scp: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv``, retrying connect failures; classify ssh/scp failures into errors."""
        timeout = self.command_timeout_s if timeout is None else timeout
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                proc = subprocess.run(
                    argv,
                    input=input,
                    stdin=None if input is not None else subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except FileNotFoundError as exc:
                raise TargetError(
                    f"{argv[0]} not found; install the OpenSSH client ('apt-get install openssh-client')"
                ) from exc
            except subprocess.TimeoutExpired as exc:
                raise TransportError(
                    f"{what} on {self.label} did not finish within {timeout:.0f} s; the board may "
                    "be hung or overloaded; raise connection.command_timeout_s if it is just slow"
                ) from exc
            failed = proc.returncode != 0 if scp else proc.returncode == SSH_FAILURE
            if not failed:
                return proc
            err = proc.stderr.strip()
            last = err.splitlines()[-1] if err else f"exit status {proc.returncode}"
            if _HOSTKEY.search(err):
                raise self._host_key_error(err)
            if _AUTH.search(err):
                raise TargetError(
                    f"{self.label} refused our key ({last}); add the public key of "
                    f"{self.key or 'your default identity'} to the board's ~/.ssh/authorized_keys "
                    "or set CODESIGN_TARGET_<NAME>_KEY"
                )
            if _CONNECT.search(err):
                if attempt + 1 < attempts:
                    delay = self.backoff_s * (2**attempt)
                    log.info("%s: %s; retrying in %.1f s", self.label, last, delay)
                    _sleep(delay)
                    continue
                raise TargetUnreachableError(
                    f"cannot connect to {self.label} after {attempts} attempt(s): {last}; check the "
                    "board is powered and on the network, or fix CODESIGN_TARGET_<NAME>_HOST/PORT"
                )
            if _DROPPED.search(err):
                raise TransportError(f"{what} on {self.label} lost the connection: {last}")
            if scp:
                raise TransportError(f"{what} to/from {self.label} failed: {last}")
            return proc  # the remote command itself exited 255
        raise AssertionError("unreachable")  # pragma: no cover

    def _host_key_error(self, err: str) -> HostKeyError:
        where = f"[{self.host}]:{self.port}" if self.port and self.port != 22 else self.host
        if re.search(r"CHANGED|has changed", err):
            return HostKeyError(
                f"the SSH host key of {self.label} does not match {self.known_hosts}; if the board "
                f"was reinstalled, verify its new fingerprint, then run "
                f"'ssh-keygen -R {where} -f {self.known_hosts}' and reconnect"
            )
        port = f"-p {self.port} " if self.port else ""
        return HostKeyError(
            f"the SSH host key of {self.label} is not in {self.known_hosts}; verify the board's "
            f"fingerprint, then add it with 'ssh-keyscan {port}{self.host} >> {self.known_hosts}' "
            "(or allow trust-on-first-use with CODESIGN_SSH_ACCEPT_NEW=1)"
        )

    # ---- public verbs -------------------------------------------------------------------
    def check(self) -> None:
        """Connect, verify the host key and log in; raise the matching error if any step fails."""
        proc = self.run(["true"], timeout=self.connect_timeout_s + 20)
        if proc.returncode != 0:
            raise TargetError(
                f"{self.label}: 'true' exited {proc.returncode}: {proc.stderr.strip()}"
            )

    def run(
        self, argv: Sequence[str], timeout: float | None = None, *, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run remote ``argv`` (each element arrives as one argument); return its result."""
        if self.trust_on_first_use:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self._invoke(self.ssh_argv(argv), f"'{shlex.join(list(argv))[:80]}'", timeout, input)

    def run_checked(self, argv: Sequence[str], timeout: float | None = None) -> str:
        """Like ``run`` but a non-zero exit raises TargetError; returns stdout."""
        proc = self.run(argv, timeout)
        if proc.returncode != 0:
            raise TargetError(
                f"'{shlex.join(list(argv))[:80]}' on {self.label} exited {proc.returncode}: "
                f"{proc.stderr.strip()[-500:]}"
            )
        return proc.stdout

    def mkdir(self, remote_dir: str) -> None:
        self.run_checked(["mkdir", "-p", "--", remote_dir], timeout=self.connect_timeout_s + 30)

    def make_temp_dir(self, prefix: str = "codesign-agent") -> str:
        """A fresh private directory on the board (``mktemp -d``, honouring its TMPDIR)."""
        out = self.run_checked(["mktemp", "-d", "-t", f"{prefix}.XXXXXXXX"])
        path = out.strip()
        if not path.startswith("/") or not _SAFE_REMOTE_PATH.fullmatch(path):
            raise TransportError(f"mktemp on {self.label} answered {path!r}, not a plain path")
        return path

    def remove(self, remote_path: str) -> None:
        self.run_checked(["rm", "-rf", "--", remote_path], timeout=self.connect_timeout_s + 60)

    def upload(self, local_dir: Path | str, remote_dir: str, timeout: float | None = None) -> None:
        """Copy a local file or directory to exactly ``remote_dir`` (which must not exist yet
        when copying a directory; scp would nest it inside an existing one)."""
        local = Path(local_dir)
        if not local.exists():
            raise TargetError(f"cannot upload {local}: no such file or directory")
        argv = self._scp_argv([str(local)], self._scp_target(remote_dir))
        self._invoke(argv, f"upload of {local}", timeout, scp=True)

    def download(
        self, remote_path: str, local_path: Path | str, timeout: float | None = None
    ) -> None:
        """Copy a remote file or directory to ``local_path``."""
        argv = self._scp_argv([self._scp_target(remote_path)], str(local_path))
        self._invoke(argv, f"download of {remote_path}", timeout, scp=True)
