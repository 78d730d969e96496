"""Bounded fuzz of the firmware's command parser (posix build, under ASan/UBSan when available):
random byte streams must never crash or hang it, and it must answer a fresh ping afterwards."""

from __future__ import annotations

import subprocess

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis to fuzz the parser")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from mcu_helpers import PipePort, make, start_pipe_firmware, stop  # noqa: E402

from toolchain.boards.serial_link import SerialLink  # noqa: E402
from toolchain.mcu import protocol as P  # noqa: E402

COMMAND_WORDS = [
    b"name",
    b"profile",
    b"db",
    b"db load",
    b"infer",
    b"results",
    b"ping",
    b"version",
    b"mload",
    b"mdata",
    b"commit",
    b"selfcheck",
    b"calib",
    b"load",
]
token = st.one_of(
    st.sampled_from(COMMAND_WORDS),
    st.binary(max_size=12),
    st.integers(-5, 2**33).map(lambda n: str(n).encode()),
    st.binary(max_size=40).map(lambda b: b.hex().encode()),
    st.sampled_from([b" ", b"%", b"\r\n", b"\x00", b"%%"]),
)
stream = st.lists(token, max_size=30).map(b" ".join) | st.binary(max_size=700)


@pytest.fixture(scope="module")
def asan_fw(tmp_path_factory):
    """The posix firmware under AddressSanitizer/UBSan when the compiler supports it."""
    out = tmp_path_factory.mktemp("asan")
    flags = "-fsanitize=address,undefined -fno-sanitize-recover=all -g"
    probe = subprocess.run(
        f"echo 'int main(void){{return 0;}}' | cc {flags} -x c - -o {out}/probe",
        shell=True,
        capture_output=True,
        check=False,
    )
    if probe.returncode == 0:
        make(out, "posix", HOST_CC=f"cc {flags}")
    else:
        make(out, "posix")
    return out / "posix" / "codesign-fw"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(stream, min_size=1, max_size=4))
def test_fuzz_parser_never_crashes_or_hangs(asan_fw, data):
    proc = start_pipe_firmware(asan_fw)
    try:
        link = SerialLink("pipe://fuzz", port=PipePort(proc), timeout_s=1.0, retries=1)
        for chunk in data:
            link._write(chunk)
            # Still alive and in step: answers a fresh ping after the garbage.
            link.sync()
            assert proc.poll() is None
        assert link.command("version")[0].startswith(f"m-version-[proto={P.PROTOCOL_VERSION};")
    finally:
        proc.stdin.close()
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise
        stderr = proc.stderr.read().decode(errors="replace")
    assert rc == 0, stderr[-2000:]
