"""Measure candidates' artefacts on a target and append one CostRecord per candidate.

Each measurement runs the agent in a fresh process (on the host, over SSH, or in emulation).
A record is written only after the agent's whole report is in hand and its outputs matched
the fp32 reference (:func:`judge_outputs`), so a killed run or a dropped link leaves no
half-written record. A profile session is named by its run, target spec hash and plan
(:func:`session_id_for`): the same request finds the same session again, keeps the passes it
finished and measures the missing ones. Records of a session that has not finished are
provisional (``RecordStore.records(settled=True)`` leaves them out): a candidate with fewer
samples than asked is never taken as measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import (
    ConfigError,
    QuantizationError,
    RunDirError,
    TargetError,
    ValidationMismatchError,
)
from ..export.artefact import export_artefact
from ..export.guard import refuse_infeasible
from ..export.tolerances import ON_TARGET
from ..export.validate import ort_session
from ..profiling.records import CostRecord
from ..progress import progress_bar
from ..search.candidate import PRECISIONS
from .jobs import build_job
from .measurable import Measurable

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
    # ONNX Runtime's kernel profile per layer and op type too, in an extra pass after the timed
    # samples of each candidate's first pass (op_profile_target.py); off by default.
    op_profile: bool = False

    def work(self) -> list[tuple[str, str]]:
        if self.pairs is not None:
            return list(self.pairs)
        return [(b, p) for b in self.base_ids for p in self.precisions]

    @property
    def iterations_per_pass(self) -> int:
        return max(1, -(-self.iterations // max(1, self.passes)))


def validate_request(run_dir: Path, *, precisions: Sequence[str], candidates: Sequence[str] = (),
                     top_k: int | None = None, rounds: int | None = None, passes: int | None = None,
                     iterations: int = 60, warmup: int = 10) -> dict:
    """Check a profile request against its run before anything is exported or measured;
    returns the leaderboard. One-line ConfigError/RunDirError naming the wrong value."""
    from ..rundir import RunDir

    run_dir = Path(run_dir)
    board = RunDir.open(run_dir).board
    ids = [c.get("id") for c in board.get("candidates", [])]
    if board.get("selected") not in ids:
        # The report is rendered from the selection after measuring: refuse it now, not then.
        raise RunDirError(f"{run_dir}: the selected candidate '{board.get('selected')}' is not among the "
                          f"run's {len(ids)} candidates; rerun 'codesign search' to rewrite the leaderboard")
    if not precisions:
        raise ConfigError(f"no --precision given; use one or more of {', '.join(PRECISIONS)}")
    for p in precisions:
        if p not in PRECISIONS:
            raise ConfigError(f"--precision '{p}' is not a precision codesign exports; "
                              f"use one of {', '.join(PRECISIONS)}")
    for name, value, least in (("--top", top_k, 1), ("--rounds", rounds, 1), ("--passes", passes, 1),
                               ("--iterations", iterations, 1), ("--warmup", warmup, 0)):
        if value is not None and value < least:
            raise ConfigError(f"{name} {value}: must be at least {least}; pass {name} {max(least, 1)} or more")
    if passes is not None and iterations < passes:
        raise ConfigError(f"--iterations {iterations} in --passes {passes}: every pass needs at least one "
                          f"sample; pass --iterations {passes} or more, or fewer --passes")
    heads = sorted(p.stem for p in (run_dir / "heads").glob("*.safetensors"))
    for cid in candidates:
        if cid not in heads:
            raise RunDirError(f"{run_dir}: --candidate '{cid}' has no saved head in this run; pick one of "
                              f"{', '.join(heads) or '(none)'} (see 'codesign show {run_dir}')")
    return board


def _host_outputs(artefact_dir: Path, job_dir: Path) -> tuple[np.ndarray, list[int]]:
    """The host's probabilities on the job's inputs, and each input's real length."""
    session = ort_session(artefact_dir / "model.onnx")
    with np.load(job_dir / "inputs.npz", allow_pickle=False) as z:
        ids, mask, lengths = z["input_ids"], z["attention_mask"], z["lengths"]
    outputs = np.stack([session.run(["probs"], {"input_ids": ids[i:i + 1, :n],
                                                "attention_mask": mask[i:i + 1, :n]})[0][0]
                        for i, n in enumerate(lengths)])
    return outputs, [int(n) for n in lengths]


def judge_outputs(got, reference: np.ndarray, precision: str, where: str) -> tuple[float, float]:
    """A target's outputs against the fp32 reference (the fp32 artefact run on the host) at the
    precision's stated tolerance (``ON_TARGET``); returns (max |Δprob|, argmax agreement).

    Never against the host's own int8 outputs: those depend on the host's integer kernels
    (AVX-512 VNNI or not), so a correct board would pass on one host and fail on another."""
    got = np.asarray(got, dtype=np.float32)
    if got.shape != reference.shape:
        raise ValidationMismatchError(f"{where}: agent returned outputs of shape {got.shape}, "
                                      f"expected {reference.shape}; the artefact or agent is wrong")
    tol = ON_TARGET[precision]
    diff = float(np.abs(got - reference).max())
    agree = float((got.argmax(1) == reference.argmax(1)).mean())
    if diff > tol.max_abs_prob or agree < tol.min_argmax_agreement:
        raise ValidationMismatchError(
            f"{where}: outputs differ from the fp32 reference by max |Δprob| {diff:.3g} (tolerance "
            f"{tol.max_abs_prob:g} for {precision}), argmax agreement {agree:.0%} (needs "
            f"{tol.min_argmax_agreement:.0%}); the {precision} artefact is not functionally right on this target")
    return diff, agree


def measure_one(target: Measurable, run_dir: Path, base_id: str, precision: str, texts, plan: ProfilePlan,
                run_id: str, op_profile: bool = False) -> CostRecord:
    artefact_dir, meta = export_artefact(run_dir, base_id, precision)
    fp32_dir = artefact_dir if precision == "fp32" else export_artefact(run_dir, base_id, "fp32")[0]
    # An int8 variant the accuracy guard found infeasible is never measured (nor selected).
    refuse_infeasible(meta, "not measured")
    check = meta.get("validation") or {}
    if precision != "fp32" and check.get("passed") is False:
        # Kept as the best recipe tried, but already outside its tolerance on the host: there is
        # nothing a target's outputs could be judged right against.
        raise QuantizationError(
            f"candidate {meta['candidate_id']}: no {precision} recipe stays within tolerance of PyTorch "
            f"(max |Δprob| {check.get('max_abs_prob', float('nan')):.3g}, argmax agreement "
            f"{check.get('argmax_agreement', 0):.0%}); not measured — profile its fp32 variant instead")
    with tempfile.TemporaryDirectory(prefix="codesign-job-") as tmp:
        job_dir = Path(tmp) / "job"
        # Each pass times every input equally often: as many inputs as samples per pass at most.
        from .op_profile_target import RUNS, WARMUP

        crc = build_job(artefact_dir, texts, job_dir, n_inputs=min(plan.n_inputs, plan.iterations_per_pass),
                        provider=_provider(target), op_profile=(RUNS, WARMUP) if op_profile else None)
        reference, lengths = _host_outputs(fp32_dir, job_dir)
        report = target.run_agent(job_dir, warmup=plan.warmup, iterations=plan.iterations_per_pass,
                                  threads=target.spec.threads)
    where = f"target '{target.spec.name}', candidate {meta['candidate_id']}"
    ops = _op_profile(report, artefact_dir, run_dir, meta, lengths, where) if op_profile else None
    samples = report.get("latency_ms_samples") or []
    if len(samples) != plan.iterations_per_pass:
        raise TargetError(f"{where}: the agent returned {len(samples)} latency samples, "
                          f"{plan.iterations_per_pass} were asked; the agent on the target is out of date "
                          "or was cut short — rerun to measure it again")
    diff, agree = judge_outputs(report.get("outputs", []), reference, precision, where)
    log.info("%s: outputs match the fp32 reference within %.2g", where, diff)
    runtime = report.get("runtime", {})
    host = {"cpu_model": report.get("cpu_model") or "", "governor": report.get("governor") or "",
            "machine": report.get("machine", ""), "python": report.get("python", ""),
            "emulation_evidence": report.get("emulation_evidence", ""),
            "outputs_reference": "fp32 artefact on the host",
            "outputs_max_abs_diff_vs_fp32": f"{diff:.3g}", "outputs_argmax_agreement_vs_fp32": f"{agree:.3g}"}
    if "isa" in report:  # ties each int8/fp32 ratio to the kernels that could run (VNNI, SDOT...)
        host["isa"] = " ".join(report["isa"])  # absent, not "", when an agent did not say
    return CostRecord(
        target=target.spec.name, target_hash=target.spec.hash, board_hash=target.spec.board_hash,
        candidate_id=meta["candidate_id"], candidate=meta["candidate"], precision=precision, recipe=meta.get("recipe", ""),
        runtime=runtime.get("name", "onnxruntime"), runtime_version=runtime.get("version", ""),
        provider=runtime.get("provider", "CPU"), threads=int(report.get("threads", target.spec.threads)),
        warmup=int(report["warmup"]), iterations=int(report["iterations"]),
        latency_ms_samples=tuple(samples),
        # The agent times input i % N at sample i (see bundle/agent.py).
        input_tokens=tuple(lengths[i % len(lengths)] for i in range(len(samples))),
        peak_rss_bytes=int(report.get("peak_rss_bytes", 0)), model_bytes=int(meta["model_bytes"]),
        load_ms=float(report.get("load_ms", 0.0)), input_crc=crc, emulated=bool(report.get("emulated")),
        predicted_latency_ms=plan.predicted.get(meta["candidate_id"]), host=host, run_id=run_id,
        op_profile=ops,
    )


def _op_profile(report: dict, artefact_dir: Path, run_dir: Path, meta: dict, lengths: list[int],
                where: str) -> dict:
    """The record's op profile from the agent's report (placed in layers here, on the host)."""
    from ..features.backbone import backbone_info, resolve_model
    from ..rundir import RunDir
    from .op_profile_target import from_agent

    payload = report.get("op_profile")
    if not isinstance(payload, dict):
        raise TargetError(f"{where}: an op profile was asked but the agent returned none; the agent on "
                          "the target is out of date — redeploy it, or profile without --op-profile")
    backbone = meta["candidate"].get("backbone")
    models = RunDir.open(run_dir).board.get("models", {})
    # The encoder's shape travels with the profile: the slope check needs it, not the run.
    info = backbone_info(resolve_model(models[backbone]["path"])) if backbone in models else None
    return from_agent(payload, artefact_dir / "model.onnx", lengths, threads=int(report.get("threads", 1)),
                      where=where, backbone=info)


def _provider(target: Measurable) -> str:
    runtimes = [r for r in target.spec.runtimes if r.name == "onnxruntime"]
    return runtimes[0].provider if runtimes and runtimes[0].provider in ("CPU", "CUDA", "TensorRT", "auto") else "CPU"


def profile(target: Measurable, plan: ProfilePlan, store, texts, session_id: str) -> list[CostRecord]:
    """Measure every (candidate, precision, pass) of the plan not yet done in this session."""
    from ..search.fit import SavedHead

    work = []
    for base_id, precision in plan.work():
        base = SavedHead.load(plan.run_dir / "heads" / f"{base_id}.safetensors").candidate
        work.append((base_id, precision, replace(base, precision=precision).id))
    # Pass-major order: every candidate once, then every candidate again (interleaved).
    units = [(base_id, precision, cid, _progress_key(cid, p, plan.passes), p)
             for p in range(plan.passes) for base_id, precision, cid in work]
    run_id = plan.run_dir.name
    done = store.begin_session(session_id, target=target.spec.name, run_id=run_id,
                               planned=[u[3] for u in units])
    todo = [u for u in units if u[3] not in done]
    if done:
        log.info("profile session %s: resuming, %d of %d already measured", session_id, len(done), len(units))
    records, skipped = [], set()
    with progress_bar(f"profiling on {target.spec.name}", len(todo)) as advance:
        for base_id, precision, cid, key, pass_no in todo:
            if cid in skipped:
                store.mark_done(session_id, key)
                advance()
                continue
            try:
                # One profile per candidate is enough: the first pass's.
                record = measure_one(target, plan.run_dir, base_id, precision, texts, plan, run_id,
                                     op_profile=plan.op_profile and pass_no == 0)
            except QuantizationError as exc:  # this variant cannot be measured; the others can
                log.warning("skipping %s: %s", cid, exc)
                skipped.add(cid)
                store.mark_done(session_id, key)
                advance()
                continue
            # Which session and pass made it: provisional until the session finishes.
            record = replace(record, host={**record.host, "profile_session": session_id, "profile_unit": key})
            store.append(record, session_id=session_id, progress_key=key)
            records.append(record)
            advance()
    store.finish_session(session_id)
    return records


def _progress_key(cid: str, pass_no: int, passes: int) -> str:
    return cid if passes == 1 else f"{cid}#{pass_no + 1}/{passes}"


def session_id_for(run_dir: Path, target: Measurable, plan: ProfilePlan) -> str:
    """Same run, target spec hash and plan → same session (whichever loop round asks for it)."""
    parts = [str(Path(run_dir).resolve()), target.spec.hash, sorted(map(list, plan.work())),
             plan.passes, plan.warmup, plan.iterations, plan.n_inputs]
    # Only when asked: a plan without it keeps the session id it always had.
    key = json.dumps(parts + ["op_profile"] if plan.op_profile else parts)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _plan_of(planned: Sequence[str], run_dir: Path, variants: Mapping[str, tuple[str, str]],
             warmup: int, iterations: int, n_inputs: int) -> ProfilePlan | None:
    """The plan behind a session's progress keys (``cid`` or ``cid#pass/passes``); None when a
    candidate is not among ``variants`` (id → (base id, precision))."""
    pairs, passes = set(), set()
    for key in planned:
        cid, _, pass_ = key.partition("#")
        if cid not in variants:
            return None
        pairs.add(variants[cid])
        passes.add(int(pass_.partition("/")[2]) if pass_ else 1)
    if not pairs or len(passes) != 1:
        return None
    pairs_list = sorted(pairs)
    return ProfilePlan(run_dir, sorted({b for b, _ in pairs_list}), tuple(sorted({p for _, p in pairs_list})),
                       warmup=warmup, iterations=iterations, n_inputs=n_inputs, pairs=pairs_list,
                       passes=passes.pop())


def resume_unfinished(target: Measurable, run_dir: Path, store, texts, variants: Mapping[str, tuple[str, str]], *,
                      warmup: int, iterations: int, passes: int, n_inputs: int = 32) -> list[CostRecord]:
    """Finish this run's interrupted profile sessions on this target whose plan these settings
    would make again; returns every record of the sessions it finished (old passes included).

    The loop calls it before ranking: its first round would otherwise see new artefacts (their
    accuracy) and plan something else, and the interrupted candidates would never complete."""
    run_dir = Path(run_dir)
    out = []
    for s in store.unfinished_sessions(target=target.spec.name, run_id=run_dir.name):
        plan = _plan_of(s["planned"], run_dir, variants, warmup, iterations, n_inputs)
        if plan is None or plan.passes != passes or session_id_for(run_dir, target, plan) != s["session_id"]:
            log.info("profile session %s was interrupted with other settings; left as is (its %d "
                     "measurements stay provisional)", s["session_id"], len(s["done"]))
            continue
        old = store.session_records(s["session_id"])
        plan.predicted = {r.candidate_id: r.predicted_latency_ms for r in old if r.predicted_latency_ms is not None}
        log.info("profile session %s: resuming the interrupted measurement of %d candidate(s)",
                 s["session_id"], len(plan.work()))
        profile(target, plan, store, texts, s["session_id"])
        out += store.session_records(s["session_id"])
    return out


def profile_candidates(run_dir: Path, target: Measurable, store, base_ids: list[str],
                       precisions=("fp32",), warmup: int = 10, iterations: int = 60,
                       passes: int = 1, op_profile: bool = False) -> list[CostRecord]:
    """Measure exactly these candidates of a run (no loop); resumable like any session."""
    from ..rundir import RunDir

    validate_request(Path(run_dir), precisions=precisions, candidates=base_ids, passes=passes,
                             iterations=iterations, warmup=warmup)
    plan = ProfilePlan(Path(run_dir), list(base_ids), tuple(precisions), warmup=warmup, iterations=iterations,
                       passes=passes, op_profile=op_profile)
    texts = RunDir.open(run_dir).dataset().validation.texts
    return profile(target, plan, store, texts, session_id_for(Path(run_dir), target, plan))
