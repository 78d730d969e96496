"""The on-board agent run natively on the host (fast): report shape, hashes, providers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ssh_helpers import host_outputs

from toolchain.boards.ssh_target import AGENT_PATH


def run_agent(job: Path, *extra: str, env: dict | None = None) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, str(AGENT_PATH), str(job), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"agent must print exactly one line: {proc.stdout!r} {proc.stderr!r}"
    return proc.returncode, json.loads(lines[0])


def test_agent_reports_samples_and_outputs(tiny_job):
    rc, report = run_agent(tiny_job, "--warmup", "2", "--iterations", "7", "--threads", "1")
    assert rc == 0, report
    assert report["ok"] is True and report["agent_version"] == 1
    assert report["runtime"]["name"] == "onnxruntime" and report["runtime"]["provider"] == "CPU"
    assert report["runtime"]["version"]
    assert len(report["latency_ms_samples"]) == 7
    assert all(s > 0 for s in report["latency_ms_samples"])
    assert report["warmup"] == 2 and report["iterations"] == 7 and report["threads"] == 1
    assert report["load_ms"] > 0 and report["peak_rss_bytes"] > 10 * 2**20
    assert report["emulated"] is False
    assert report["machine"] and report["python"].startswith("3.")
    assert "governor" in report and "cpu_model" in report
    np.testing.assert_allclose(report["outputs"], host_outputs(tiny_job), atol=1e-6)


def test_agent_rejects_tampered_file(tiny_job):
    data = bytearray((tiny_job / "model.onnx").read_bytes())
    data[-1] ^= 0x01
    (tiny_job / "model.onnx").write_bytes(bytes(data))
    rc, report = run_agent(tiny_job, "--iterations", "1")
    assert rc == 3
    assert report["ok"] is False and report["error_kind"] == "hash_mismatch"
    assert "model.onnx" in report["error"]


def test_agent_rejects_missing_file_and_escape(tiny_job):
    job = json.loads((tiny_job / "job.json").read_text())
    job["files"]["../outside"] = "0" * 64
    (tiny_job / "job.json").write_text(json.dumps(job))
    rc, report = run_agent(tiny_job, "--iterations", "1")
    assert rc == 2 and "outside the job folder" in report["error"]


def test_agent_unavailable_provider_is_an_error(tiny_job):
    rc, report = run_agent(tiny_job, "--iterations", "1", "--provider", "TensorRT")
    assert rc == 4 and report["error_kind"] == "provider_missing"
    assert "TensorrtExecutionProvider" in report["error"]


def test_agent_auto_provider_falls_back_to_cpu(tiny_job):
    rc, report = run_agent(tiny_job, "--iterations", "1", "--provider", "auto")
    assert rc == 0 and report["runtime"]["provider"] == "CPU"


def test_agent_emulation_flag_from_launcher(tiny_job):
    env = {"PATH": "/usr/bin:/bin", "CODESIGN_EMULATED": "qemu-user:cortex-a72"}
    rc, report = run_agent(tiny_job, "--iterations", "1", env=env)
    assert rc == 0 and report["emulated"] is True
    assert "CODESIGN_EMULATED" in report["emulation_evidence"]


def test_agent_does_not_import_codesign():
    source = AGENT_PATH.read_text()
    assert "toolchain" not in source.split('"""', 2)[2]  # only the docstring may mention it
    assert "import tokenizers" not in source


@pytest.mark.parametrize("lengths", [[0], [99]])
def test_agent_rejects_bad_lengths(tiny_job, lengths):
    import hashlib

    with np.load(tiny_job / "inputs.npz") as data:
        arrays = dict(data)
    arrays["input_ids"], arrays["attention_mask"] = (
        arrays["input_ids"][:1],
        arrays["attention_mask"][:1],
    )
    arrays["lengths"] = np.array(lengths, dtype=np.int64)
    np.savez(tiny_job / "inputs.npz", **arrays)
    job = json.loads((tiny_job / "job.json").read_text())
    job["files"]["inputs.npz"] = hashlib.sha256((tiny_job / "inputs.npz").read_bytes()).hexdigest()
    (tiny_job / "job.json").write_text(json.dumps(job))
    rc, report = run_agent(tiny_job, "--iterations", "1")
    assert rc == 2 and report["error_kind"] == "bad_job"
