"""The op profile of a measurement made on a target: what the agent brought back, placed in
layers on the host, and checked against the target's cost model.

The agent (bundle/agent.py) returns ONNX Runtime's kernel events compactly: a table of (node
name, op type) and, per profiled inference, (node index, dur us) pairs. The trace names the
nodes of the graph ONNX Runtime optimised on the board; placing the fused ones needs that
graph's edges, and parsing it needs the ``onnx`` package a board's runtime-only install lacks.
So the host optimises the same model.onnx the same way (default ``ORT_ENABLE_ALL``, CPU) and
places the events through its graph (:func:`~.op_profile.assign_groups`); a node the board
named differently (another ONNX Runtime version or provider fused otherwise) is placed by its
name's scope alone, and ``unplaced_by_graph`` counts them.

The aggregated dict (:func:`~.op_profile.aggregate`) goes into ``CostRecord.op_profile`` with
``backbone`` (the encoder's shape, :class:`~toolchain.features.backbone.BackboneInfo` fields) so
the cost model's per-layer slope can be checked against it later from the record alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path

from ..errors import CodesignError, ExportError, TargetError
from .op_profile import KERNEL_SUFFIX, aggregate, graph_nodes, render_table, slope_check

# Profiled passes over the job's inputs, after one untimed pass: 2 x 32 inferences give every
# layer's median over 64 runs, while the profiled session costs a few seconds on a Pi.
RUNS, WARMUP = 2, 1


def optimized_graph(model_path, *, threads: int = 1, tmp_dir=None):
    """(nodes, graph outputs) of ``model_path`` as this host's ONNX Runtime optimises it, or None
    without the ``onnx`` package."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="codesign-optgraph-", dir=tmp_dir) as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # saving an ORT_ENABLE_ALL graph warns it is host-specific
        try:
            ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own unexported classes
            raise ExportError(f"op profile: onnxruntime could not load {model_path}: {exc}") from exc
        return graph_nodes(Path(tmp) / "optimized.onnx")


def per_run_events(payload: Mapping, where: str) -> list[list[dict]]:
    """The agent's compact events as :func:`~.op_profile.aggregate` takes them."""
    try:
        nodes = [(str(n), str(op)) for n, op in payload["nodes"]]
        return [[{"name": nodes[int(i)][0] + KERNEL_SUFFIX, "args": {"op_name": nodes[int(i)][1]}, "dur": float(d)}
                 for i, d in run] for run in payload["runs"]]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise TargetError(f"{where}: the agent's op profile is malformed ({type(exc).__name__}: {exc}); "
                          "the agent on the target is out of date — redeploy it") from exc


def from_agent(payload: Mapping, model_path, lengths: Sequence[int], *, threads: int, where: str,
               backbone=None) -> dict:
    """The record's op profile from the agent's ``op_profile`` report of ``model_path`` (the
    model the job carried) run on inputs of ``lengths`` tokens, in job order."""
    per_run = per_run_events(payload, where)
    runs = int(payload.get("runs_per_input", 1))
    if len(per_run) != runs * len(lengths):
        raise TargetError(f"{where}: the agent profiled {len(per_run)} inferences, {runs} x {len(lengths)} "
                          "inputs were asked; rerun to profile it again")
    graph = optimized_graph(model_path, threads=threads)
    out = aggregate(per_run, graph, tokens=[float(n) for n in lengths] * runs, threads=threads,
                    model=Path(model_path).name)
    named = {n for n, _ in payload["nodes"]}
    placed = {n[0] for n in graph[0]} if graph is not None else set()
    out.update(attribution="host graph" if graph is not None else "names",
               unplaced_by_graph=len(named - placed) if graph is not None else None)
    if backbone is not None:
        out["backbone"] = asdict(backbone)
    return out


def record_slope_check(record, records, spec=None) -> tuple[dict | None, str]:
    """:func:`~.op_profile.slope_check` of ``record``'s op profile against the latency law the
    cost model of its target fits from ``records`` for its precision; (None, why) when there is
    no law to check (no backbone shape kept, an unknown target, too few records)."""
    from ..config.target_spec import load_target_spec
    from ..features.backbone import BackboneInfo
    from ..search.candidate import Candidate
    from .cost_model import CostModel

    prof = record.op_profile or {}
    shape = prof.get("backbone")
    if not shape:
        return None, "the profile keeps no backbone shape"
    try:
        info = BackboneInfo(**{f.name: int(shape[f.name]) for f in fields(BackboneInfo)})
        cand = Candidate.from_dict(record.candidate)
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"the record's candidate or backbone shape is unreadable ({exc})"
    try:
        spec = spec or load_target_spec(record.target)
    except CodesignError as exc:
        return None, f"target '{record.target}' is not known here ({exc})"
    tokens = prof.get("tokens_median")
    seq_len = {}
    for r in records:
        try:
            c = Candidate.from_dict(r.candidate)
        except (KeyError, TypeError, ValueError):
            continue
        if c.backbone == cand.backbone:
            seq_len[(c.backbone, c.max_length)] = r.median_input_tokens or tokens or float(c.max_length)
    model = CostModel.fit(records, spec, {cand.backbone: info}, seq_len)
    law = model.law(record.precision, "latency_ms")
    if law.mode == "analytic":
        return None, (f"no latency law for {record.precision} on {spec.name} yet "
                      f"({model.n_records} record(s) of {spec.threads} thread(s))")
    try:
        return slope_check(prof, law, info, target=spec, precision=record.precision), ""
    except CodesignError as exc:
        return None, str(exc)


def render_record(record, check: Mapping | None, why: str = "") -> str:
    """A record's op profile table and its slope check, for ``codesign results --op-profile``."""
    prof = record.op_profile
    lines = [f"op profile of record {record.record_id[:12]}: {record.candidate_id} {record.precision} on "
             f"{record.target} ({prof.get('attribution', '?')} attribution"
             + (f", {prof['unplaced_by_graph']} node(s) by name" if prof.get("unplaced_by_graph") else "")
             + ")", render_table(prof)]
    if check is None:
        lines.append(f"slope check: none ({why})")
    else:
        spread = f", layer spread {check['spread']:.2f}x" if check.get("spread") else ""
        ratio = "-" if check["ratio"] is None else f"{check['ratio']:.2f}"
        median = "-" if check["ratio_median"] is None else f"{check['ratio_median']:.2f}"
        lines.append(f"slope check ({check['law_mode']} law, {check['tokens']:g} tokens): cost model "
                     f"{check['model_ms_per_layer']:.4g} ms per layer, profile {check['profile_ms_per_layer']:.4g} "
                     f"ms (median {check['profile_median_ms_per_layer']:.4g}): ratio {ratio} (median {median})"
                     + spread)
    return "\n".join(lines)
