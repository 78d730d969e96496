"""Malformed target files: each bad value is written to a TOML file in the case's folder and
passed by path (``codesign targets show PATH``, ``codesign profile --target PATH``). The one line
names the file, the key, the value and the allowed range; nothing is written anywhere."""

from __future__ import annotations

import os
from pathlib import Path

from reliability_harness import Case, Outcome, cli_error, left_behind, snapshot

HEAD = 'kind = "local"\narch = "x86_64"\n'


def _home() -> Path:
    return Path(os.environ["CODESIGN_HOME"])


def _bad_file(body: str, command: str, key: str, allowed: str, *, head: str = HEAD, env=None):
    def run(tmp: Path) -> Outcome:
        path = tmp / "board.toml"
        path.write_text(head + body, encoding="utf-8")
        before, home_before = snapshot(tmp), snapshot(_home())
        args = ["targets", "show", path] if command == "show" else ["profile", "--target", path]
        msg = cli_error(args, expect=f"'{key}'", env=env)
        assert "board.toml" in msg and allowed in msg, msg
        assert "no run" not in msg, msg  # the target is checked before any run lookup
        left = left_behind(before, snapshot(tmp))
        left_behind(home_before, snapshot(_home()))
        return Outcome(msg, left)

    return run


def _case(what: str, body: str, command: str, key: str, allowed: str, **kw) -> Case:
    shown = "codesign targets show board.toml" if command == "show" else "codesign profile --target board.toml"
    return Case("target file", what, shown, _bad_file(body, command, key, allowed, **kw))


def _env_port(tmp: Path) -> Outcome:
    before, home_before = snapshot(tmp), snapshot(_home())
    msg = cli_error(["targets", "show", "rpi4"], expect="CODESIGN_TARGET_RPI4_PORT",
                    env={"CODESIGN_TARGET_RPI4_PORT": "-1"})
    assert "1..65535" in msg, msg
    left = left_behind(before, snapshot(tmp))
    left_behind(home_before, snapshot(_home()))
    return Outcome(msg, left)


CASES = [
    _case("gflops_per_thread = 0 (divided by zero)", "[estimate]\ngflops_per_thread = 0\n", "profile",
          "estimate.gflops_per_thread", "> 0"),
    _case("a negative gflops_per_thread (\"-13.93 ms (predicted)\")", "[estimate]\ngflops_per_thread = -2.5\n",
          "show", "estimate.gflops_per_thread", "> 0"),
    _case("a negative latency budget (was no budget)", "[budgets]\nlatency_ms = -5\n", "profile",
          "budgets.latency_ms", "> 0"),
    _case("retries = -3", "[connection]\nretries = -3\n", "show", "connection.retries", "0..100"),
    _case("port = -1", "[connection]\nport = -1\n", "show", "connection.port", "1..65535"),
    _case("threads = 99999999999", "threads = 99999999999\n", "profile", "threads", "1..1024"),
    _case("a zero command timeout", "[connection]\ncommand_timeout_s = 0\n", "show",
          "connection.command_timeout_s", "> 0"),
    _case("latency_scale = nan", "[emulation]\nlatency_scale = nan\n", "show", "emulation.latency_scale", "> 0"),
    _case("an unknown arch", "", "show", "arch", "'aarch64'", head='kind = "local"\narch = "arm65"\n'),
    _case("an emulated CPU qemu-user cannot present", '[emulation]\nmethod = "qemu-user"\ncpu = "cortex-a99"\n',
          "show", "emulation.cpu", "'cortex-a72'"),
    _case("an onnxruntime provider that does not exist", '[[runtimes]]\nname = "onnxruntime"\nprovider = "GPU"\n',
          "show", "runtimes[0].provider", "'CUDA'"),
    Case("target file", "a port override out of range", "CODESIGN_TARGET_RPI4_PORT=-1 codesign targets show rpi4",
         _env_port),
]
