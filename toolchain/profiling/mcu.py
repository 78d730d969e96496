"""Profile a run's heads on a microcontroller target (kind "serial").

Issue 5, option (a): the MCU holds the int8 quantized head; the truncated backbone runs
upstream (a gateway or a Pi), so the board receives the head's input features. For each head
this rebuilds the float input features of validation examples exactly as the search did (per
layer standardised with the saved standardizers, combined with the candidate's combination
and learned mix), quantizes the head with train features as calibration, checks the exact
flash/RAM budget, and, when it fits, runs the inputs on the device: every output must equal
the Python integer reference bit for bit, and instruction counts (QEMU) must be identical
across independent sessions. One CostRecord per head is appended to the store only after all
of that passed, so an interrupted profile leaves no partial record.

The result is written to ``<run>/mcu-<target>.json`` and ``<run>/mcu-<target>.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunDirError, TargetError, ValidationMismatchError
from .records import CostRecord, input_crc

log = logging.getLogger(__name__)

PRECISION = "int8-head"
# Calibration uses at most this many train rows (spread evenly): ranges, not statistics.
MAX_CALIBRATION_ROWS = 4096


def default_candidates(board: dict, run_dir: Path, spec=None) -> list[str]:
    """This target's own selection (when it has one), the search's selection and the Pareto
    front, restricted to heads saved in the run; selections first."""
    from ..rundir import target_key

    ids: list[str] = []
    own = (board.get("selections") or {}).get(target_key(spec.name, spec.board_hash)) if spec else None
    for cid in ((own or {}).get("base_id"), board.get("selected")):
        if cid and cid not in ids:
            ids.append(cid)
    for c in board["candidates"]:
        if c.get("pareto") and c["id"] not in ids:
            ids.append(c["id"])
    return [cid for cid in ids if (run_dir / "heads" / f"{cid}.safetensors").is_file()]


class _Features:
    """Per-(backbone, max_length) layer features from the run's feature cache."""

    def __init__(self, board: dict, dataset) -> None:
        self.board, self.dataset = board, dataset
        self._cache: dict[tuple[str, int], Any] = {}

    def get(self, backbone: str, max_length: int):
        from ..features.backbone import resolve_model
        from ..features.layers import layer_features

        key = (backbone, max_length)
        if key not in self._cache:
            models = self.board["models"]
            if backbone not in models:
                raise RunDirError(f"backbone '{backbone}' is not in this run's models "
                                  f"({', '.join(models)}); the leaderboard is inconsistent")
            ref = resolve_model(models[backbone]["path"])
            if ref.weights_hash != models[backbone].get("weights_hash", ref.weights_hash):
                raise RunDirError(f"backbone '{backbone}' at {ref.path} changed since this run "
                                  "(weights hash differs); rerun 'codesign run'")
            poolings = tuple(self.board["config"].get("poolings") or ("cls", "mean"))
            self._cache[key] = layer_features(self.dataset, ref, max_length, poolings)
        return self._cache[key]


def head_inputs(saved, feats, split: str) -> np.ndarray:
    """The head's float inputs for one split, as FeatureBank.inputs built them in the search."""
    from ..heads.combine import combine

    cand = saved.candidate
    parts = [std(feats.get(split, cand.pooling, layer))
             for std, layer in zip(saved.standardizers, cand.layers, strict=True)]
    return combine(parts, cand.combine, saved.mix)


def _calibration_rows(x: np.ndarray) -> np.ndarray:
    if x.shape[0] <= MAX_CALIBRATION_ROWS:
        return x
    return x[np.linspace(0, x.shape[0] - 1, MAX_CALIBRATION_ROWS).astype(int)]


def session_id_for(run_dir: Path, target, ids: list[str], n_inputs: int, repeat: int) -> str:
    key = json.dumps(["mcu", str(Path(run_dir).resolve()), target.spec.hash, sorted(ids),
                      n_inputs, repeat])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def measure_heads(run_dir: Path, target, store, *, candidate_ids: list[str] | None = None,
                n_inputs: int = 100, repeat: int = 2) -> dict:
    """Profile saved heads of ``run_dir`` as int8 heads on a serial ``target``.

    ``candidate_ids`` (fp32 ids of saved heads) default to the selection plus the Pareto front.
    ``repeat`` independent device sessions run the same inputs; deterministic counters
    (instructions, cycles) must agree across them. Writes records only (the flow
    ``toolchain.flows.profile.profile_mcu`` saves the run); returns the summary: per candidate, whether it fits and why not, int8 vs float
    accuracy on the inputs, instruction/latency figures and exact byte counts.
    """
    from ..heads.dense import run_dense
    from ..mcu import check_budget, quantize_head, run_int8
    from ..mcu.blob import blob_size
    from ..rundir import RunDir
    from ..search.fit import SavedHead

    if getattr(target, "measures", "") != "head":
        raise TargetError(f"target '{target.spec.name}' (kind '{getattr(target, 'kind', '?')}') does "
                          "not run int8 heads; profile it with the co-design loop")
    if n_inputs < 1 or repeat < 1:
        raise TargetError(f"n_inputs ({n_inputs}) and repeat ({repeat}) must be at least 1")
    run_dir = Path(run_dir)
    run = RunDir.open(run_dir)
    board = run.board
    ids = list(candidate_ids) if candidate_ids else default_candidates(board, run_dir, target.spec)
    if not ids:
        raise RunDirError(f"{run_dir}: no saved heads to profile (heads/*.safetensors); "
                          "rerun 'codesign run'")
    for cid in ids:
        if not (run_dir / "heads" / f"{cid}.safetensors").is_file():
            raise RunDirError(f"{run_dir}: candidate {cid} has no saved head "
                              f"(heads/{cid}.safetensors); pick one of the saved heads")
    dataset = run.dataset()
    features = _Features(board, dataset)
    spec = target.spec
    session_id = session_id_for(run_dir, target, ids, n_inputs, repeat)
    run_id = run_dir.name
    planned = {cid: replace(SavedHead.load(run_dir / "heads" / f"{cid}.safetensors").candidate,
                            precision=PRECISION).id for cid in ids}
    done = store.begin_session(session_id, target=spec.name, run_id=run_id,
                               planned=list(planned.values()))
    val_labels = np.asarray(dataset.validation.labels)
    rows = []
    for base_id in ids:
        saved = SavedHead.load(run_dir / "heads" / f"{base_id}.safetensors")
        cand = replace(saved.candidate, precision=PRECISION)
        feats = features.get(saved.candidate.backbone, saved.candidate.max_length)
        x_val = head_inputs(saved, feats, "validation")
        float_logits = run_dense(saved.layers, x_val)
        float_val_acc = float((float_logits.argmax(1) == val_labels).mean())
        qhead = quantize_head(saved.layers, _calibration_rows(head_inputs(saved, feats, "train")))
        budget = check_budget(qhead, spec)
        row: dict[str, Any] = {
            "id": cand.id, "base_id": base_id, "candidate": cand.to_dict(),
            "description": cand.describe(), "feasible": budget.feasible, "reason": budget.reason,
            "blob_bytes": blob_size(qhead), "weight_bytes": qhead.weight_bytes,
            "activation_bytes": qhead.activation_bytes,
            "flash_needed_bytes": budget.flash_needed_bytes,
            "flash_limit_bytes": budget.flash_limit_bytes,
            "ram_needed_bytes": budget.ram_needed_bytes, "ram_limit_bytes": budget.ram_limit_bytes,
            # Float head on the whole validation split: equals the search's val_acc when the
            # features were rebuilt exactly as the search built them.
            "float_val_acc": float_val_acc, "search_val_acc": saved.val_acc,
            "features_match_search": abs(float_val_acc - saved.val_acc) < 1e-9,
        }
        if not row["features_match_search"]:
            log.warning("%s: float head gives %.4f on validation, the search recorded %.4f; the "
                        "feature cache or dataset differs from the run's", base_id, float_val_acc,
                        saved.val_acc)
        if not budget.feasible:
            log.warning("%s does not fit target '%s': %s", cand.id, spec.name, budget.reason)
            store.mark_done(session_id, cand.id)
            rows.append(row)
            continue
        n = min(n_inputs, x_val.shape[0])
        x = x_val[:n]
        labels = val_labels[:n]
        x_q = qhead.quantize_input(x)
        expected = run_int8(qhead, x_q)
        if cand.id in done:
            previous = [r for r in store.records(target=spec.name, candidate_id=cand.id,
                                                 run_id=run_id) if r.input_crc == input_crc([x_q])]
            if previous:
                row.update(_from_record(previous[-1], expected, labels, float_logits[:n]))
                row["resumed"] = True
                rows.append(row)
                continue
        runs = []
        for session in range(repeat):
            run = target.run_head(qhead, x_q)
            if not np.array_equal(run.outputs, expected):
                bad = np.flatnonzero((run.outputs != expected).any(axis=1))
                raise ValidationMismatchError(
                    f"target '{spec.name}', candidate {cand.id}: {len(bad)} of {n} int8 outputs "
                    f"differ from the Python integer reference (first at input {int(bad[0])}: "
                    f"device {run.outputs[bad[0]].tolist()}, reference "
                    f"{expected[bad[0]].tolist()}); rebuild the firmware from this checkout")
            if not np.array_equal(run.argmax, expected.argmax(1)):
                raise ValidationMismatchError(
                    f"target '{spec.name}', candidate {cand.id}: the firmware's argmax disagrees "
                    "with its own outputs; the argmax kernel is wrong")
            runs.append(run)
            log.info("%s on %s: session %d of %d bit-exact on %d inputs", cand.id, spec.name,
                     session + 1, repeat, n)
        unit = runs[0].counter_unit
        deterministic = unit in ("instructions", "cycles") and runs[0].emulated
        if deterministic and any(not np.array_equal(r.counts, runs[0].counts) for r in runs[1:]):
            diffs = [int(np.abs(r.counts - runs[0].counts).max()) for r in runs[1:]]
            raise TargetError(
                f"target '{spec.name}', candidate {cand.id}: {unit} counts differ between "
                f"{repeat} identical sessions (max difference {max(diffs)}); the emulator is not "
                "running deterministically (QEMU needs -icount shift=0,align=off,sleep=off)")
        # Deterministic counters: one session's counts are all of them; else keep every sample.
        kept = runs[:1] if deterministic else runs
        samples = [] if runs[0].est_latency_ms is None else [
            float(v) for r in kept for v in r.est_latency_ms]
        instructions = [int(c) for r in kept for c in r.counts] if unit == "instructions" else []
        fw = runs[0].firmware
        record = CostRecord(
            target=spec.name, target_hash=spec.hash, board_hash=spec.board_hash, candidate_id=cand.id,
            candidate=cand.to_dict(), precision=PRECISION,
            recipe=f"int8 per-channel weights, per-tensor activations (TFLite integer-only); "
                   f"calibrated on {min(MAX_CALIBRATION_ROWS, len(dataset.train))} train rows",
            runtime="firmware", runtime_version=_firmware_version(fw, spec),
            provider=str(fw.get("port", "")), threads=1, warmup=0,
            latency_ms_samples=tuple(samples), iterations=len(samples) or len(kept) * n,
            peak_rss_bytes=budget.ram_needed_bytes, model_bytes=blob_size(qhead),
            input_crc=input_crc([x_q]), emulated=bool(runs[0].emulated),
            instructions=tuple(instructions), run_id=run_id,
            host={"counter_unit": unit, "firmware": str(fw.get("firmware", "")),
                  "compiler": str(fw.get("compiler", "")),
                  "protocol": str(fw.get("protocol", "")),
                  "model_crc32": f"{runs[0].model_crc:08x}",
                  "selfcheck_crc32": f"{runs[0].selfcheck_crc:08x}",
                  "sessions": str(repeat), "bit_exact_inputs": str(n * repeat),
                  "counts_identical_across_sessions": str(
                      all(np.array_equal(r.counts, runs[0].counts) for r in runs)),
                  "cpi": str(spec.emulation.cpi), "clock_hz": str(spec.mcu.clock_hz),
                  "calibration_source": spec.emulation.calibration_source},
        )
        store.append(record, session_id=session_id)
        row.update(_from_record(record, expected, labels, float_logits[:n]))
        row["resumed"] = False
        rows.append(row)
    store.finish_session(session_id)
    summary = {
        "schema": 1, "target": spec.name, "target_hash": spec.hash, "kind": "serial",
        "mode": "head on MCU, features computed upstream (issue 5 option a)",
        "emulated": bool(target.uses_emulation()),
        "n_inputs": n_inputs, "sessions": repeat, "session_id": session_id,
        "budgets": {"flash_kb": spec.budgets.flash_kb, "ram_mb": spec.budgets.ram_mb,
                    "mcu_flash_kb": spec.mcu.flash_kb, "mcu_ram_kb": spec.mcu.ram_kb},
        "cpi": spec.emulation.cpi, "clock_hz": spec.mcu.clock_hz,
        "calibration_source": spec.emulation.calibration_source,
        "candidates": rows,
    }
    return summary


def _firmware_version(fw: dict, spec) -> str:
    """The version in the firmware's banner (``codesign-fw 0.1.0`` -> ``0.1.0``)."""
    banner = str(fw.get("firmware", ""))
    parts = banner.split()
    version = next((p for p in reversed(parts) if p[:1].isdigit()), banner)
    return version or next((r.version for r in spec.runtimes if r.name == "firmware"), "")


def _from_record(record: CostRecord, expected: np.ndarray, labels: np.ndarray,
                 float_logits: np.ndarray) -> dict[str, Any]:
    from .stats import median

    int8_pred = expected.argmax(1)  # the device's outputs equal these bit for bit
    samples = list(record.latency_ms_samples)
    instr = list(record.instructions)
    return {
        "record_id": record.record_id, "emulated": record.emulated,
        "counter_unit": record.host.get("counter_unit", ""),
        "n_inputs": int(len(labels)), "bit_exact": True,
        "int8_acc": float((int8_pred == labels).mean()),
        "float_acc": float((float_logits.argmax(1) == labels).mean()),
        "int8_float_agreement": float((int8_pred == float_logits.argmax(1)).mean()),
        "instructions_median": float(median(instr)) if instr else None,
        "instructions_min_max": [min(instr), max(instr)] if instr else None,
        "est_latency_ms_median": median(samples) if samples else None,
        "model_bytes": record.model_bytes, "runtime_version": record.runtime_version,
        "counts_identical_across_sessions":
            record.host.get("counts_identical_across_sessions") == "True",
    }


