"""``kind = "fake"``: a board for users' own tests, shipped as labgrid ships fake drivers.

It is the host in every functional respect (the real agent runs the real artefact in a fresh
subprocess, so outputs, self-checks and deployments are real), but its *timings* are a
deterministic function of the model's size: ``latency_ms = model_bytes / bytes_per_ms``, the same
for every sample. A test can therefore gate on latencies, and on a regression it injected, with
no wall-clock noise. Every record it produces says ``emulated = true``, with the fake rate as
its emulation evidence.

The rate is ``[emulation] latency_scale`` bytes per microsecond in the target file (default 1).
``targets/fake.toml`` is such a board. ``codesign bench`` on it runs the bundle's real runner
(self-check and reference accuracy are real) but reports the same deterministic samples, so two
benches of one bundle give the same statistic, and ``--inject-slowdown`` stretches them exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .local import LocalTarget
from .registry import register_kind


def fake_latency_ms(model_bytes: int, latency_scale: float) -> float:
    """The fake board's latency for a model of ``model_bytes``: 1 ms per ``1000 * scale`` bytes."""
    return float(model_bytes) / (1000.0 * (latency_scale or 1.0))


@register_kind("fake")
class FakeTarget(LocalTarget):
    default_passes = 1  # its timings are deterministic: one pass says it all

    def uses_emulation(self) -> bool:
        return True

    def run_agent(self, job_dir: Path, *, warmup: int, iterations: int, threads: int) -> dict[str, Any]:
        report = super().run_agent(job_dir, warmup=warmup, iterations=iterations, threads=threads)
        job = json.loads((Path(job_dir) / "job.json").read_text())
        model_bytes = (Path(job_dir) / job["model"]).stat().st_size
        lat = fake_latency_ms(model_bytes, self.spec.emulation.latency_scale)
        report["latency_ms_samples"] = [lat] * len(report["latency_ms_samples"])
        report["emulated"] = True
        report["emulation_evidence"] = f"fake board: {model_bytes} bytes -> {lat:.4g} ms"
        return report

    def bench(self, folder: Path, manifest: dict, *, iterations: int, warmup: int, blocks: int,
              slowdown: float = 0.0, shell=None) -> dict[str, Any]:
        # The runner's own bench runs once, for its self-check and reference accuracy; its
        # timings would be thrown away, so it times one inference, not `iterations`.
        report = super().bench(folder, manifest, iterations=1, warmup=0, blocks=1, slowdown=0.0,
                               shell=shell)
        model_bytes = (Path(folder) / manifest["artefact"]["model"]).stat().st_size
        lat = fake_latency_ms(model_bytes, self.spec.emulation.latency_scale)
        sample = lat * (1.0 + float(slowdown))
        return dict(
            report,
            iterations=iterations,
            warmup=warmup,
            blocks=blocks,
            injected_slowdown=slowdown,
            load_ms=lat,  # a fake timing too: nothing in the report depends on the clock
            latency_ms_samples=[sample] * iterations,
            emulated=True,
            emulation_evidence=f"fake board: {model_bytes} bytes -> {lat:.4g} ms",
        )
