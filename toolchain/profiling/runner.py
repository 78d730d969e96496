"""Measure candidates' artefacts on a target and append one CostRecord per candidate.

Each measurement runs the agent in a fresh process (on the host, over SSH, or in emulation).
A record is written only after the agent's whole report is in hand and its outputs matched
the host's, so a killed run or a dropped link leaves no half-written record; the profile
session's progress table lets the next call resume where it stopped.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..boards.base import Target
from ..errors import CodesignError, ValidationMismatchError
from ..export.artefact import export_artefact
from ..export.tolerances import CROSS_PLATFORM
from ..export.validate import ort_session
from ..profiling.records import CostRecord
from ..progress import progress_bar
from .jobs import build_job

log = logging.getLogger(__name__)


@dataclass
class ProfilePlan:
    """What to measure: every base id × precision, or exactly ``pairs`` when given.

    ``passes`` > 1 interleaves the measurements: the candidates are measured round-robin in
    that many passes of ``iterations / passes`` samples each (one record per pass), so that a
    shared machine's load drifts over all of them alike instead of biasing whichever ran in the
    busy minute. The cost model pools a candidate's records.
    """

    run_dir: Path
    base_ids: list[str]  # fp32 candidate ids of the run (with saved heads)
    precisions: tuple[str, ...] = ("fp32", "int8-dynamic")
    warmup: int = 10
    iterations: int = 60
    n_inputs: int = 32
    predicted: dict[str, float] = field(default_factory=dict)  # candidate id -> predicted ms
    pairs: list[tuple[str, str]] | None = None  # (base id, precision), instead of the product
    passes: int = 1

    def work(self) -> list[tuple[str, str]]:
        if self.pairs is not None:
            return list(self.pairs)
        return [(b, p) for b in self.base_ids for p in self.precisions]

    @property
    def iterations_per_pass(self) -> int:
        return max(1, -(-self.iterations // max(1, self.passes)))


def _host_outputs(artefact_dir: Path, job_dir: Path) -> tuple[np.ndarray, list[int]]:
    """The host's probabilities on the job's inputs, and each input's real length."""
    session = ort_session(artefact_dir / "model.onnx")
    with np.load(job_dir / "inputs.npz", allow_pickle=False) as z:
        ids, mask, lengths = z["input_ids"], z["attention_mask"], z["lengths"]
    outputs = np.stack([session.run(["probs"], {"input_ids": ids[i:i + 1, :n],
                                                "attention_mask": mask[i:i + 1, :n]})[0][0]
                        for i, n in enumerate(lengths)])
    return outputs, [int(n) for n in lengths]


def check_outputs(report: dict, expected: np.ndarray, precision: str, where: str) -> float:
    """The board's outputs against the host's on the same inputs; returns the max |Δprob|."""
    got = np.asarray(report.get("outputs", []), dtype=np.float32)
    if got.shape != expected.shape:
        raise ValidationMismatchError(f"{where}: agent returned outputs of shape {got.shape}, "
                                      f"expected {expected.shape}; the artefact or agent is wrong")
    tol = CROSS_PLATFORM["fp32" if precision == "fp32" else "int8"]
    diff = float(np.abs(got - expected).max())
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    if diff > tol.max_abs_prob or agree < tol.min_argmax_agreement:
        raise ValidationMismatchError(
            f"{where}: outputs differ from the host's by max |Δprob| {diff:.3g} (tolerance "
            f"{tol.max_abs_prob:g}), argmax agreement {agree:.0%}; the {precision} artefact is not "
            "functionally right on this target")
    return diff


def measure_one(target: Target, run_dir: Path, base_id: str, precision: str, texts, plan: ProfilePlan,
                run_id: str) -> CostRecord:
    artefact_dir, meta = export_artefact(run_dir, base_id, precision)
    with tempfile.TemporaryDirectory(prefix="codesign-job-") as tmp:
        job_dir = Path(tmp) / "job"
        # Each pass times every input equally often: as many inputs as samples per pass at most.
        crc = build_job(artefact_dir, texts, job_dir, n_inputs=min(plan.n_inputs, plan.iterations_per_pass),
                        provider=_provider(target))
        expected, lengths = _host_outputs(artefact_dir, job_dir)
        report = target.run_agent(job_dir, warmup=plan.warmup, iterations=plan.iterations_per_pass,
                                  threads=target.spec.threads)
    where = f"target '{target.spec.name}', candidate {meta['candidate_id']}"
    diff = check_outputs(report, expected, precision, where)
    log.info("%s: outputs match the host within %.2g", where, diff)
    runtime = report.get("runtime", {})
    host = {"cpu_model": report.get("cpu_model") or "", "governor": report.get("governor") or "",
            "machine": report.get("machine", ""), "python": report.get("python", ""),
            "emulation_evidence": report.get("emulation_evidence", ""),
            "outputs_max_abs_diff_vs_host": f"{diff:.3g}"}
    return CostRecord(
        target=target.spec.name, target_hash=target.spec.hash, candidate_id=meta["candidate_id"],
        candidate=meta["candidate"], precision=precision, recipe=meta.get("recipe", ""),
        runtime=runtime.get("name", "onnxruntime"), runtime_version=runtime.get("version", ""),
        provider=runtime.get("provider", "CPU"), threads=int(report.get("threads", target.spec.threads)),
        warmup=int(report["warmup"]), iterations=int(report["iterations"]),
        latency_ms_samples=tuple(report["latency_ms_samples"]),
        # The agent times input i % N at sample i (see bundle/agent.py).
        input_tokens=tuple(lengths[i % len(lengths)] for i in range(len(report["latency_ms_samples"]))),
        peak_rss_bytes=int(report.get("peak_rss_bytes", 0)), model_bytes=int(meta["model_bytes"]),
        load_ms=float(report.get("load_ms", 0.0)), input_crc=crc, emulated=bool(report.get("emulated")),
        predicted_latency_ms=plan.predicted.get(meta["candidate_id"]), host=host, run_id=run_id,
    )


def _provider(target: Target) -> str:
    runtimes = [r for r in target.spec.runtimes if r.name == "onnxruntime"]
    return runtimes[0].provider if runtimes and runtimes[0].provider in ("CPU", "CUDA", "TensorRT", "auto") else "CPU"


def profile(target: Target, plan: ProfilePlan, store, texts, session_id: str) -> list[CostRecord]:
    """Measure every (candidate, precision, pass) of the plan not yet done in this session."""
    from dataclasses import replace

    from ..search.fit import SavedHead

    work = []
    for base_id, precision in plan.work():
        base = SavedHead.load(plan.run_dir / "heads" / f"{base_id}.safetensors").candidate
        work.append((base_id, precision, replace(base, precision=precision).id))
    # Pass-major order: every candidate once, then every candidate again (interleaved).
    units = [(base_id, precision, cid, _progress_key(cid, p, plan.passes))
             for p in range(plan.passes) for base_id, precision, cid in work]
    run_id = plan.run_dir.name
    done = store.begin_session(session_id, target=target.spec.name, run_id=run_id,
                               planned=[u[3] for u in units])
    todo = [u for u in units if u[3] not in done]
    if done:
        log.info("profile session %s: resuming, %d of %d already measured", session_id, len(done), len(units))
    records, skipped = [], set()
    with progress_bar(f"profiling on {target.spec.name}", len(todo)) as advance:
        for base_id, precision, cid, key in todo:
            if cid in skipped:
                store.mark_done(session_id, key)
                advance()
                continue
            try:
                record = measure_one(target, plan.run_dir, base_id, precision, texts, plan, run_id)
            except ValidationMismatchError:
                raise
            except CodesignError as exc:
                if "quantization" in str(exc).lower():
                    log.warning("skipping %s: %s", cid, exc)
                    skipped.add(cid)
                    store.mark_done(session_id, key)
                    advance()
                    continue
                raise
            store.append(record, session_id=session_id, progress_key=key)
            records.append(record)
            advance()
    store.finish_session(session_id)
    return records


def _progress_key(cid: str, pass_no: int, passes: int) -> str:
    return cid if passes == 1 else f"{cid}#{pass_no + 1}/{passes}"


def session_id_for(run_dir: Path, target: Target, plan: ProfilePlan, round_no: int) -> str:
    import hashlib

    key = json.dumps([str(run_dir.resolve()), target.spec.hash, sorted(plan.base_ids), plan.precisions,
                      plan.warmup, plan.iterations, round_no]
                     + ([sorted(plan.work()), plan.passes] if plan.pairs is not None or plan.passes != 1 else []))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def profile_candidates(run_dir: Path, target: Target, store, base_ids: list[str],
                       precisions=("fp32",), warmup: int = 10, iterations: int = 60,
                       passes: int = 1) -> list[CostRecord]:
    """Measure exactly these candidates of a run (no loop); resumable like any session."""
    from ..pipeline import run_dataset
    from ..report.write import read_leaderboard

    board = read_leaderboard(run_dir)
    plan = ProfilePlan(Path(run_dir), list(base_ids), tuple(precisions), warmup=warmup, iterations=iterations,
                       passes=passes)
    texts = run_dataset(board).validation.texts
    return profile(target, plan, store, texts, session_id_for(Path(run_dir), target, plan, 0))
