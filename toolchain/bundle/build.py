"""``codesign bundle``: one deployable folder (and its reproducible .tar.gz) per target.

Linux boards (runtime onnxruntime) get the validated ONNX artefact, its tokenizer, labels,
the reference set and ``runner.py``. Microcontrollers (runtime "firmware") get the int8
head as a weights blob plus a generated C header, the feature standardisation and the
int8 reference. Either way ``manifest.json`` says what it is, what it was chosen on, and
the sha256 of every file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..config.target_spec import TargetSpec, load_target_spec
from ..errors import BundleError, RunDirError
from ..rundir import RunDir
from ..search.candidate import Candidate
from .archive import FIXED_MTIME, write_archive
from .manifest import SCHEMA_VERSION, write_manifest

log = logging.getLogger(__name__)
RUNNER_PATH = Path(__file__).resolve().parent / "runner.py"
N_MCU_REFERENCE = 16


# ---- what to bundle ----------------------------------------------------------------------------
def resolve_candidate(
    run: RunDir, spec: TargetSpec, candidate_id: str | None
) -> tuple[Candidate, str, str]:
    """(candidate, fp32 base id, selection source) for ``candidate_id`` ("explicit"), or for
    this target's own selection in the run ("measured" or "predicted"). Never another target's:
    a target with no selection is an error here; the bundle flow predicts one for it first."""
    source = "explicit"
    if candidate_id is None:
        sel = run.selection(spec)
        if sel is None:
            raise RunDirError(
                f"{run.path}: no selection for target '{spec.name}' (spec {spec.hash[:12]}) in "
                f"this run; run 'codesign profile --target {spec.name}', or 'codesign bundle' "
                "to predict one for it, or pass --candidate ID"
            )
        candidate_id, source = sel["candidate_id"], sel["source"]
    cand, base_id = run.resolve(candidate_id)
    return cand, base_id, source


def find_cost_record(store, spec: TargetSpec, candidate_id: str):
    """The measurement the candidate was chosen on for this target: a real board's record
    over an emulated one, one taken with this exact spec over an older spec, newest first."""
    records = store.records(target=spec.name, candidate_id=candidate_id)
    if not records:
        return None
    ranked = sorted(
        enumerate(records),
        key=lambda ir: (not ir[1].emulated, ir[1].target_hash == spec.hash, ir[0]),
    )
    return ranked[-1][1]


def _runtime_kind(spec: TargetSpec) -> str:
    names = spec.runtime_names
    if "firmware" in names:
        return "firmware"
    if "onnxruntime" in names:
        return "onnxruntime"
    raise BundleError(
        f"target '{spec.name}' runs {', '.join(names)}; bundles are built for onnxruntime boards "
        "and firmware MCUs: add an onnxruntime [[runtimes]] entry to its TOML"
    )


# ---- helpers that keep the bytes reproducible -----------------------------------------------------
def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez with fixed zip timestamps (np.savez stamps the current time: not reproducible)."""
    import io

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)


def _host_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "codesign": __version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def _dataset(board: dict, run_dir: Path):
    return RunDir(Path(run_dir), board).dataset()  # checked against the run's fingerprint


# ---- the two kinds of bundle ------------------------------------------------------------------------
def _linux_payload(run_dir: Path, board: dict, cand: Candidate, base_id: str, folder: Path) -> dict:
    from ..export.artefact import export_artefact
    from ..export.text_inputs import TOKENIZER_FILES
    from ..export.tolerances import TOLERANCES

    art_dir, meta = export_artefact(run_dir, base_id, cand.precision, vocab=cand.vocab)
    from ..export.guard import refuse_infeasible

    refuse_infeasible(meta, "not bundled")  # never shipped silently
    _copy(art_dir / "model.onnx", folder / "model.onnx")
    tokenizer = []
    for name in TOKENIZER_FILES:
        if (art_dir / name).is_file():
            _copy(art_dir / name, folder / name)
            tokenizer.append(name)
    _copy(art_dir / "reference.npz", folder / "reference.npz")
    with np.load(folder / "reference.npz", allow_pickle=False) as z:
        n_ref = int(z["lengths"].shape[0])
    dataset = _dataset(board, run_dir)
    _write_json(
        folder / "reference.json",
        {
            "texts": list(dataset.validation.texts[:n_ref]),
            "labels": [int(x) for x in dataset.validation.labels[:n_ref]],
            "source": "first validation examples; expected outputs from PyTorch",
        },
    )
    _copy(RUNNER_PATH, folder / "runner.py")
    os.chmod(folder / "runner.py", 0o755)
    from ..search.fit import SavedHead
    from .personalise_build import write_personalisation

    saved = SavedHead.load(run_dir / "heads" / f"{base_id}.safetensors")
    personalise = write_personalisation(folder, saved.layers, dataset, meta["max_length"], save_npz)
    tol = TOLERANCES[cand.precision]
    return {
        "personalise": personalise,
        "artefact": {
            "format": "onnx",
            "runtime": "onnxruntime",
            "model": "model.onnx",
            "precision": cand.precision,
            "recipe": meta.get("recipe", ""),
            "opset": meta.get("opset"),
            "max_length": meta["max_length"],
            "model_bytes": meta["model_bytes"],
            "tokenizer": tokenizer,
            "validation": meta.get("validation"),
            "exporter": meta.get("exporter", ""),
        },
        "val_acc": meta["val_acc"],
        "val_acc_source": "artefact (ONNX Runtime on the validation split)",
        "converter_versions": meta.get("versions", {}),
        "runner": {
            "file": "runner.py",
            "needs": ["python3>=3.8", "numpy", "onnxruntime", "tokenizers"],
            "usage": "python3 runner.py TEXT | --self-check | --bench N",
        },
        "self_check": {
            "reference": "reference.npz",
            "texts": "reference.json",
            "n": n_ref,
            "tolerance": {
                "max_abs_prob": tol.max_abs_prob,
                "min_argmax_agreement": tol.min_argmax_agreement,
            },
            "compares": "ONNX Runtime on the board vs PyTorch on the host",
        },
    }


def head_inputs(run_dir: Path, board: dict, base_id: str) -> tuple[Any, dict[str, np.ndarray], Any]:
    """(SavedHead, {split: standardised+combined head inputs}, dataset) from the feature cache."""
    from ..features.backbone import resolve_model
    from ..features.layers import layer_features
    from ..heads.combine import combine
    from ..search.fit import SavedHead

    head_path = run_dir / "heads" / f"{base_id}.safetensors"
    if not head_path.is_file():
        raise RunDirError(
            f"{run_dir}: no trained head for candidate {base_id}; pick a Pareto or "
            "selected candidate (codesign show RUN_DIR)"
        )
    saved = SavedHead.load(head_path)
    cand = saved.candidate
    dataset = _dataset(board, run_dir)
    model = resolve_model(board["models"][cand.backbone]["path"])
    poolings = tuple(board["config"].get("poolings") or (cand.pooling,))
    feats = layer_features(dataset, model, cand.max_length, poolings)
    out = {}
    for split in ("train", "validation"):
        parts = [
            std(feats.get(split, cand.pooling, la))
            for std, la in zip(saved.standardizers, cand.layers, strict=True)
        ]
        out[split] = np.asarray(combine(parts, cand.combine, saved.mix), dtype=np.float32)
    return saved, out, dataset


def _mcu_payload(
    run_dir: Path, board: dict, cand: Candidate, base_id: str, folder: Path, spec: TargetSpec
) -> dict:
    from ..heads.dense import run_dense
    from ..mcu import check_budget, quantize_head, run_int8, selfcheck_crc
    from ..mcu.blob import to_blob, to_c_header

    saved, x, dataset = head_inputs(run_dir, board, base_id)
    head = quantize_head(saved.layers, x["train"])
    report = check_budget(head, spec)
    if not report.feasible:
        raise BundleError(
            f"candidate {cand.id} does not fit target '{spec.name}': {report.reason}; "
            "pick a smaller head (codesign show RUN_DIR)"
        )
    blob = to_blob(head)
    (folder / "model.blob").write_bytes(blob)
    (folder / "model.h").write_text(to_c_header(head))
    val = x["validation"]
    n = min(N_MCU_REFERENCE, len(val))
    inputs_q = head.quantize_input(val[:n])
    expected_q = np.stack([run_int8(head, row) for row in inputs_q]).astype(np.int8)
    labels = np.asarray(dataset.validation.labels[:n], dtype=np.int64)
    save_npz(folder / "reference.npz", inputs_q=inputs_q, expected_q=expected_q, labels=labels)
    stds = {}
    for i, std in enumerate(saved.standardizers):
        stds[f"std{i}_mean"], stds[f"std{i}_std"] = std.mean, std.std
    if saved.mix is not None:
        stds["mix"] = saved.mix
    save_npz(folder / "features.npz", **stds)
    # Accuracy of the int8 head itself on the validation split (what the MCU computes).
    all_q = head.quantize_input(val)
    pred = np.asarray([int(run_int8(head, row).argmax()) for row in all_q])
    int8_acc = float((pred == np.asarray(dataset.validation.labels)).mean())
    float_acc = float(
        (run_dense(saved.layers, val).argmax(1) == np.asarray(dataset.validation.labels)).mean()
    )
    import zlib

    return {
        "artefact": {
            "format": "mcu-blob",
            "runtime": "firmware",
            "model": "model.blob",
            "header": "model.h",
            "precision": "int8 (per-channel weights, per-tensor activations)",
            "blob_bytes": len(blob),
            "model_crc32": f"{zlib.crc32(blob):08x}",
            "in_dim": head.in_dim,
            "out_dim": head.out_dim,
            "n_layers": len(head.layers),
            "input_scale": head.input_scale,
            "input_zero_point": head.input_zero_point,
            "output_scale": head.output_scale,
            "output_zero_point": head.output_zero_point,
            "budget": {
                "flash_needed_bytes": report.flash_needed_bytes,
                "flash_limit_bytes": report.flash_limit_bytes,
                "ram_needed_bytes": report.ram_needed_bytes,
                "ram_limit_bytes": report.ram_limit_bytes,
            },
            "features": {
                "file": "features.npz",
                "backbone": cand.backbone,
                "layers": list(cand.layers),
                "pooling": cand.pooling,
                "combine": cand.combine,
                "max_length": cand.max_length,
                "note": "the MCU runs the head only; its inputs are the backbone's pooled "
                "layers, standardised with these statistics and combined",
            },
        },
        "val_acc": int8_acc,
        "val_acc_source": "int8 integer reference (bit-exact with the firmware) on the validation split",
        "float_head_val_acc": float_acc,
        "converter_versions": {"codesign": __version__, "numpy": np.__version__},
        "runner": None,
        "self_check": {
            "reference": "reference.npz",
            "n": int(n),
            "firmware_selfcheck_crc32": f"{selfcheck_crc(head):08x}",
            "tolerance": {"int8_exact": True},
            "compares": "the firmware's int8 kernels vs the host's integer reference",
        },
    }


# ---- entry point -------------------------------------------------------------------------------
def build_bundle(
    run_dir: Path,
    target_spec: TargetSpec | str,
    out_dir: Path,
    candidate_id: str | None = None,
    allow_unmeasured: bool = False,
    store=None,
    key: Path | str | None = None,
) -> Path:
    """Build ``out_dir/<target>-<candidate id>/`` and its ``.tar.gz``; return the folder.

    The manifest is signed (``manifest.sig``) with ``key``, else ``$CODESIGN_SIGNING_KEY``,
    else codesign's own key (see signing.py). Raises BundleError for a candidate without a
    measurement on this target (unless ``allow_unmeasured``), RunDirError for a run or
    candidate that does not exist, ConfigError for an unusable key."""
    from ..store.db import RecordStore
    from .signing import sign_folder, signing_key

    signer, _ = signing_key(key)  # a bad key fails before minutes of export

    run_dir = Path(run_dir)
    spec = target_spec if isinstance(target_spec, TargetSpec) else load_target_spec(target_spec)
    run = RunDir.open(run_dir)
    board = run.board
    cand, base_id, selection_source = resolve_candidate(run, spec, candidate_id)
    runtime = _runtime_kind(spec)
    if runtime == "firmware" and cand.precision != "int8-head":
        # An MCU runs the int8 head on features computed upstream; that variant is what
        # 'codesign profile --target <mcu>' measured.
        cand = replace(cand, precision="int8-head")
    own_store = store is None
    store = store if store is not None else RecordStore()
    try:
        record = find_cost_record(store, spec, cand.id)
    finally:
        if own_store:
            store.close()
    if record is None and not allow_unmeasured:
        raise BundleError(
            f"candidate {cand.id} ({cand.describe()}) has no measurement on target '{spec.name}'; "
            f"measure it first with 'codesign profile --target {spec.name} --candidate {cand.id}' "
            "(or bundle it anyway with --allow-unmeasured)"
        )
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(
            f"cannot create the output folder {out_dir} ({exc.strerror or exc}); pass a "
            "writable --out"
        ) from exc
    name = f"{spec.name}-{cand.id}"
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out_dir))
    try:
        folder = staging / name
        folder.mkdir()
        if runtime == "firmware":
            payload = _mcu_payload(run_dir, board, cand, base_id, folder, spec)
        else:
            payload = _linux_payload(run_dir, board, cand, base_id, folder)
        _write_json(folder / "labels.json", list(board["label_names"]))
        manifest = _manifest(board, spec, cand, base_id, record, payload)
        manifest["selection_source"] = selection_source
        write_manifest(folder, manifest)
        sign_folder(folder, signer)
        for path in folder.rglob("*"):
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        final = out_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(folder, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_archive(final)
    log.info("bundle %s for %s written to %s", cand.id, spec.name, final)
    return final


def _manifest(
    board: dict, spec: TargetSpec, cand: Candidate, base_id: str, record, payload: dict
) -> dict:
    from ..profiling.stats import summarize
    from ..specfile import to_plain

    versions = {"codesign": __version__, "converter": payload.pop("converter_versions")}
    if payload["artefact"]["runtime"] == "onnxruntime":
        versions["runtime"] = {
            "name": "onnxruntime",
            "validated_with": _host_versions()["onnxruntime"],
            "target_spec": next((r.version for r in spec.runtimes if r.name == "onnxruntime"), ""),
        }
    else:
        versions["runtime"] = {
            "name": "firmware",
            "target_spec": next((r.version for r in spec.runtimes if r.name == "firmware"), ""),
        }
    cost = None
    if record is not None:
        cost = {
            "record": record.to_dict(),
            "summary": summarize(record.latency_ms_samples).to_dict()
            if record.latency_ms_samples
            else None,
            "emulated": record.emulated,
            "same_target_spec": record.target_hash == spec.hash,
        }
    return {
        "schema": SCHEMA_VERSION,
        "kind": "codesign-bundle",
        "candidate_id": cand.id,
        "base_candidate_id": base_id,
        "candidate": cand.to_dict(),
        "candidate_description": cand.describe(),
        "target": {"name": spec.name, "hash": spec.hash, "spec": to_plain(spec)},
        "measured": record is not None,
        "cost": cost,
        "label_names": list(board["label_names"]),
        "dataset": board.get("dataset"),
        "run": {
            "created_at": board.get("created_at"),
            "dataset_fingerprint": board.get("dataset_fingerprint"),
        },
        "versions": versions,
        **payload,
    }
