"""The numpy integer reference is bit-exact with the firmware's C kernels (host gcc build)."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
from mcu_helpers import FIRMWARE, relu_mlp_head, softmax_head

from toolchain.heads.dense import DenseLayer
from toolchain.mcu import protocol as P
from toolchain.mcu import quantize_head, run_int8
from toolchain.mcu.blob import to_blob
from toolchain.mcu.reference import requantize


def run_harness(harness, args, data: bytes) -> bytes:
    proc = subprocess.run([str(harness), *args], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def c_model(harness, tmp_path, head, x_q: np.ndarray) -> np.ndarray:
    blob = tmp_path / "model.bin"
    blob.write_bytes(to_blob(head))
    out = run_harness(harness, ["model", str(blob)], np.ascontiguousarray(x_q, np.int8).tobytes())
    return np.frombuffer(out, np.int8).reshape(len(x_q), head.out_dim)


def test_requantize_bit_exact_on_random_and_edge_values(harness, rng):
    n = 20000
    acc = rng.integers(-(2**31), 2**31, size=n, dtype=np.int64)
    acc[: n // 2] //= rng.integers(1, 2**20, size=n // 2)  # many small accumulators too
    mult = rng.integers(2**30, 2**31, size=n, dtype=np.int64)
    shift = rng.integers(-31, 31, size=n, dtype=np.int64)
    edges = [
        (2**31 - 1, 2**31 - 1, 30),  # saturating left shift
        (-(2**31), 2**31 - 1, 30),
        (-(2**31), 2**30, -31),
        (12345, 0, 0),  # zero multiplier
        (-1, 2**31 - 1, -1),  # multiplier ~1, halving: ties round away from zero
        (1, 2**31 - 1, -1),
        (-3, 2**31 - 1, -1),
        (3, 2**31 - 1, -1),
    ]
    acc = np.concatenate([acc, [e[0] for e in edges]])
    mult = np.concatenate([mult, [e[1] for e in edges]])
    shift = np.concatenate([shift, [e[2] for e in edges]])
    triples = np.stack([acc, mult, shift], axis=1).astype("<i4")
    got = np.frombuffer(run_harness(harness, ["requant"], triples.tobytes()), "<i4")
    want = requantize(acc, mult, shift)
    mismatch = np.flatnonzero(got != want)
    assert mismatch.size == 0, triples[mismatch[:5]]
    assert list(want[-4:]) == [-1, 1, -2, 2]  # gemmlowp rounding of -0.5, 0.5, -1.5, 1.5


@pytest.mark.parametrize("seed", range(12))
def test_random_layers_bit_exact(harness, tmp_path, seed):
    rng = np.random.default_rng(seed)
    n_layers = int(rng.integers(1, 4))
    dims = [int(rng.integers(1, 300)) for _ in range(n_layers + 1)]
    layers = []
    for i in range(n_layers):
        # Wild, per-row scales and offsets stress the requantisation paths.
        w = rng.normal(size=(dims[i + 1], dims[i])) * np.exp(rng.normal(size=(dims[i + 1], 1)) * 2)
        if dims[i + 1] > 1:
            w[0] = 0.0  # an all-zero row
        b = rng.normal(size=dims[i + 1]) * rng.choice([0.0, 1.0, 30.0])
        act = "relu" if i < n_layers - 1 or rng.random() < 0.3 else "none"
        layers.append(DenseLayer(w.astype(np.float32), b.astype(np.float32), act))
    calib = (rng.normal(size=(64, dims[0])) * rng.choice([0.1, 1, 20]) + rng.normal()).astype(
        np.float32
    )
    head = quantize_head(layers, calib)
    x_q = rng.integers(-128, 128, size=(200, dims[0])).astype(np.int8)
    x_q[:64] = head.quantize_input(calib)
    assert np.array_equal(c_model(harness, tmp_path, head, x_q), run_int8(head, x_q))


@pytest.mark.parametrize("make_head", [softmax_head, relu_mlp_head])
def test_realistic_heads_bit_exact(harness, tmp_path, rng, make_head):
    layers, x, _ = make_head(rng)
    head = quantize_head(layers, x)
    x_q = head.quantize_input(x)
    c_out = c_model(harness, tmp_path, head, x_q)
    assert np.array_equal(c_out, run_int8(head, x_q))
    assert len(np.unique(c_out.argmax(1))) > 2  # the head really discriminates


def test_protocol_constants_match_header():
    text = (FIRMWARE / "include" / "protocol.h").read_text()

    def define(name: str) -> str:
        m = re.search(rf"#define {name} (.+?)(?:\s*/\*.*)?$", text, re.MULTILINE)
        assert m, name
        return m.group(1).strip()

    assert int(define("CS_PROTOCOL_VERSION")) == P.PROTOCOL_VERSION
    assert define("CS_FW_VERSION") == f'"{P.FW_VERSION}"'
    assert define("CS_TERMINATOR") == f"'{P.TERMINATOR.decode()}'"
    assert define("CS_READY") == f'"{P.READY}"'
    assert (
        define("CS_PREFIX_OK") == f'"{P.PREFIX_OK}"'
        and define("CS_PREFIX_ERR") == f'"{P.PREFIX_ERR}"'
    )
    assert int(define("CS_LINE_MAX")) == P.LINE_MAX
    assert define("CS_TEXT_MAX") == f"{P.TEXT_MAX}u"
    assert int(define("CS_BLOB_MAGIC").rstrip("u"), 16) == P.BLOB_MAGIC
    assert (
        define("CS_INFER_MAX") == f"{P.INFER_MAX}u" and define("CS_CALIB_MAX") == f"{P.CALIB_MAX}u"
    )
    for cmd in (
        "NAME",
        "PROFILE",
        "DB",
        "INFER",
        "RESULTS",
        "PING",
        "VERSION",
        "MLOAD",
        "MDATA",
        "COMMIT",
        "SELFCHECK",
        "CALIB",
        "TLOAD",
        "TDATA",
        "TINFER",
    ):
        assert define(f"CS_CMD_{cmd}") == f'"{getattr(P, "CMD_" + cmd)}"'
