"""Fixtures for the MCU tests: firmware builds (make into a tmp dir), the kernel harness, heads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mcu_helpers import FIRMWARE, HERE, make


@pytest.fixture(scope="session")
def fw_dir(tmp_path_factory) -> Path:
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("a host C compiler and make are needed (apt-get install gcc make)")
    out = tmp_path_factory.mktemp("fw")
    make(out)  # every port this machine's toolchains allow
    return out


@pytest.fixture(scope="session")
def posix_fw(fw_dir) -> Path:
    return fw_dir / "posix" / "codesign-fw"


@pytest.fixture(scope="session")
def harness(tmp_path_factory) -> Path:
    if shutil.which("cc") is None:
        pytest.skip("a host C compiler is needed (apt-get install gcc)")
    exe = tmp_path_factory.mktemp("harness") / "harness"
    src = [FIRMWARE / "src" / f for f in ("kernels.c", "kernels_dsp.c", "model.c", "crc32.c")]
    cmd = ["cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{FIRMWARE / 'include'}",
           f"-I{FIRMWARE / 'src'}"]
    cmd += [str(HERE / "harness.c"), *map(str, src), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return exe


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
