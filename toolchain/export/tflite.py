"""Candidate → TFLite file, converted in an isolated litert-torch environment, validated with
ai-edge-litert against PyTorch.

Why a separate environment: litert-torch 0.10 (the only converter that takes these models with
torch 2.13) pulls ~2 GB (jax, ai-edge-quantizer, litert-converter...) and pins pydantic, which
would fight codesign's own environment. onnx2tf would pull tensorflow and downgrade
numpy/onnx/onnxruntime. So:

1. codesign builds the candidate graph (graph.build_module) in its own environment and saves it
   with ``torch.export`` at a FIXED shape [1, max_length] as a ``.pt2`` program;
2. ``tflite_convert_worker.py`` (self-contained: torch + litert-torch only) runs in the converter
   env, converts the program and optionally applies dynamic-range int8 weight quantization;
3. ``validate_tflite`` runs the file with ``ai_edge_litert.interpreter.Interpreter`` in codesign's
   environment and compares it with PyTorch's reference outputs at the stated tolerance.

Fixed shape: the TFLite graph takes int64 ``input_ids`` and ``attention_mask`` of shape
[1, max_length] and returns ``probs`` [1, classes]. The runner right-pads ids with 0 and the
mask with 0; padded positions are masked out of attention and pooling, so the probabilities
equal those of the unpadded input (to float rounding). The price: every call costs a full
max_length pass (MiniLM-L6 at 64: ~52 ms vs ONNX Runtime's ~18 ms on a 22-token input). A dynamic
sequence dimension does not convert with litert-torch 0.10 (lowering fails on the
``zeros_like(input_ids)`` of graph.py's token_type_ids: "broadcast_in_dim shape must have every
element be nonnegative").

Interpreter: bundles need ``ai-edge-litert`` >= 2.3 (what the files are validated with).
``tflite-runtime`` 2.14, its last release, is not supported: on these files its int8 kernels
return wrong probabilities without any error (uniform outputs on MiniLM-L6), its fp32 path is
~3.7x slower, and litert-torch graphs with newer op versions (GATHER_ND version 5) do not open.
``describe_tflite`` records the requirement and, per file, the operators known to be too new.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import ExportError, ValidationMismatchError
from ..paths import codesign_home
from .tolerances import TOLERANCES, Tolerance
from .validate import ReferenceSet, ValidationResult, compare

log = logging.getLogger(__name__)

LITERT_TORCH_SPEC = "litert-torch==0.10.*"
RUNTIME_REQUIREMENT = "ai-edge-litert>=2.3,<3"
NOT_SUPPORTED = {
    "tflite-runtime": "2.14 (its last release) is not supported. Seen here on MiniLM-L6 files from "
                      "litert-torch 0.10: the int8 file (ai-edge-quantizer per-channel weights) opens "
                      "but returns WRONG outputs (uniform probabilities) with no error; the fp32 file "
                      "is correct but ~3.7x slower than ai-edge-litert 2.3; and graphs using newer "
                      "op versions (GATHER_ND version 5) do not open at all",
}
# Builtin-op versions known to be newer than tflite-runtime 2.14 registers.
TOO_NEW_FOR_TFLITE_RUNTIME_2_14 = {"GATHER_ND": 5}
WORKER = Path(__file__).with_name("tflite_convert_worker.py")
STAMP = "codesign-converter.json"
STAMP_SCHEMA = 1
# Precision names as in tolerances.py: TFLite int8 here is dynamic-range (int8 weights,
# activations quantized on the fly), the counterpart of ONNX Runtime's int8-dynamic.
TFLITE_PRECISIONS = {"fp32": "none", "int8-dynamic": "int8-dynamic"}
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "probs"
ENV_BUILD_TIMEOUT_S = 3600
CONVERT_TIMEOUT_S = 1800


# --- the converter environment ------------------------------------------------------------------


def converter_env_path() -> Path:
    """Where the litert-torch converter env lives: ``CODESIGN_LITERT_ENV``, else
    ``codesign_home()/envs/litert-torch``."""
    env = os.environ.get("CODESIGN_LITERT_ENV")
    if env:
        return Path(env).expanduser()
    return codesign_home() / "envs" / "litert-torch"


def converter_python(env: Path | None = None) -> Path:
    return (env or converter_env_path()) / "bin" / "python"


def _torch_spec() -> str:
    """The exact torch build codesign runs (e.g. ``torch==2.13.0+cpu``).

    The converter must load programs that this torch saved, and pinning the local build label
    (+cpu) means pip can only take the CPU wheel, never resolve a multi-GB CUDA build.
    """
    try:
        return f"torch=={metadata.version('torch')}"
    except metadata.PackageNotFoundError as exc:
        raise ExportError("torch is not installed in codesign's environment; run 'make install'") from exc


def _requirements() -> dict:
    return {"schema": STAMP_SCHEMA, "torch": _torch_spec(), "litert_torch": LITERT_TORCH_SPEC}


def read_converter_stamp(env: Path | None = None) -> dict | None:
    """The stamp of a complete converter env that matches today's requirements, else None."""
    env = env or converter_env_path()
    stamp = env / STAMP
    if not stamp.is_file() or not converter_python(env).exists():
        return None
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if data.get("requirements") != _requirements():
        return None
    return data


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clean_env() -> dict:
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def _run_step(cmd: list[str], logfile: Path, what: str, timeout: float, env: Path,
              hint: str = "Fix the cause, then rerun (the env is rebuilt from scratch)") -> None:
    started = time.perf_counter()
    log.info("converter env %s: %s ...", env, what)
    with open(logfile, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_clean_env(),
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"converter env {env}: '{what}' took over {timeout:.0f} s; see {logfile}, "
                              "check the network to the package index and retry") from exc
        except OSError as exc:
            raise ExportError(f"converter env {env}: '{what}' could not start ({exc}); check that "
                              f"{cmd[0]} exists and is executable") from exc
    if proc.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-15:])
        raise ExportError(f"converter env {env}: '{what}' failed (exit {proc.returncode}); last lines of "
                          f"{logfile}:\n{tail}\n{hint}")
    log.info("converter env %s: %s done in %.0f s", env, what, time.perf_counter() - started)


def ensure_converter_env(env: Path | None = None, python: str | None = None) -> Path:
    """Create the litert-torch converter env if it is missing or stale; return its path.

    Idempotent and safe under concurrency: a file lock serialises builders, and the stamp file
    (``codesign-converter.json``) is written last, so an interrupted build is seen as incomplete
    and rebuilt from scratch. Takes minutes and ~2 GB the first time.
    """
    env = Path(env or converter_env_path())
    if read_converter_stamp(env) is not None:
        return env
    req = _requirements()
    with _locked(env.parent / f".{env.name}.lock"):
        if read_converter_stamp(env) is not None:  # built by another process meanwhile
            return env
        started = time.perf_counter()
        if env.exists():
            log.info("converter env %s: incomplete or stale, rebuilding", env)
            shutil.rmtree(env)
        env.parent.mkdir(parents=True, exist_ok=True)
        logfile = env.parent / f"{env.name}.build.log"
        logfile.write_text(f"building {env} for {req}\n")
        base = python or getattr(sys, "_base_executable", None) or sys.executable
        _run_step([base, "-m", "venv", str(env)], logfile, "create venv", 300, env)
        py = str(converter_python(env))
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        # torch first, pinned to the exact (CPU) build, so nothing later can pull a CUDA torch.
        _run_step(pip + [req["torch"]], logfile, f"pip install {req['torch']}", ENV_BUILD_TIMEOUT_S, env,
                  hint="The converter needs the very torch build codesign runs; make it installable "
                       "from where 'make install' took it (pip's find-links or extra index), then rerun")
        _run_step(pip + [req["litert_torch"], req["torch"]], logfile,
                  f"pip install {req['litert_torch']}", ENV_BUILD_TIMEOUT_S, env)
        probe = ("import json, torch, litert_torch, ai_edge_quantizer; from importlib import metadata as m; "
                 "print(json.dumps({d: m.version(d) for d in ('torch', 'litert-torch', 'ai-edge-litert', "
                 "'ai-edge-quantizer', 'litert-converter')}))")
        proc = subprocess.run([py, "-c", probe], capture_output=True, text=True, env=_clean_env(),
                              timeout=600, check=False)
        if proc.returncode != 0:
            raise ExportError(f"converter env {env}: litert-torch does not import after install:\n"
                              f"{proc.stderr[-2000:]}\nDelete {env} and rerun")
        versions = json.loads(proc.stdout.strip().splitlines()[-1])
        stamp = {"requirements": req, "versions": versions,
                 "build_seconds": round(time.perf_counter() - started, 1), "built_at": time.time()}
        tmp = env / f".{STAMP}.tmp"
        tmp.write_text(json.dumps(stamp, indent=2))
        tmp.replace(env / STAMP)
        log.info("converter env %s ready in %.0f s: %s", env, stamp["build_seconds"], versions)
    return env


# --- export --------------------------------------------------------------------------------------


def _load_saved(saved_head):
    from ..search.fit import SavedHead

    if isinstance(saved_head, SavedHead):
        return saved_head
    path = Path(saved_head)
    if not path.is_file():
        raise ExportError(f"{path}: no saved head; pass a heads/<candidate>.safetensors file of a run")
    return SavedHead.load(path)


def export_tflite(saved_head_path, model_path: str, out_dir: Path, max_length: int | None = None,
                  quantize: bool = False, env: Path | None = None,
                  timeout: float = CONVERT_TIMEOUT_S, name: str = "model.tflite", pruning=None) -> Path:
    """Convert a candidate to ``out_dir/<name>`` (fp32, or dynamic-range int8 weights when
    ``quantize``), at the fixed input shape [1, max_length]; return the file's path.
    ``pruning`` (export/vocab.py): the embedding table cut to the kept rows, and the remapped
    tokenizer.json written beside it instead of the backbone's.

    ``saved_head_path`` is a saved head file (or a SavedHead); ``model_path`` the backbone
    folder or name. The converter env is created on demand (see ``ensure_converter_env``).
    """
    import torch

    from ..features.backbone import load_backbone, resolve_model
    from .graph import build_module
    from .text_inputs import TOKENIZER_FILES

    saved = _load_saved(saved_head_path)
    max_length = int(max_length or saved.candidate.max_length)
    if max_length < 2:
        raise ExportError(f"candidate {saved.candidate.id}: max_length {max_length} is too short; use >= 2")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = ensure_converter_env(env)

    ref_model = resolve_model(model_path)
    _, model = load_backbone(ref_model)
    module = build_module(model, saved, pruning=pruning)
    for tok_file in TOKENIZER_FILES:
        src, dst = Path(ref_model.path) / tok_file, out_dir / tok_file
        if pruning is not None and tok_file in ("tokenizer.json", "vocab.txt"):
            if tok_file == "tokenizer.json" and src.is_file():
                from .vocab import write_pruned_tokenizer

                write_pruned_tokenizer(src, dst, pruning)
        elif src.is_file() and not dst.exists():
            shutil.copyfile(src, dst)

    ids = torch.zeros((1, max_length), dtype=torch.int64)
    mask = torch.ones((1, max_length), dtype=torch.int64)
    mode = "int8-dynamic" if quantize else "none"
    target = out_dir / name
    with tempfile.TemporaryDirectory(prefix=".tflite-", dir=out_dir) as tmp:
        program = Path(tmp) / "candidate.pt2"
        started = time.perf_counter()
        try:
            with torch.inference_mode(False), torch.no_grad():
                exported = torch.export.export(module, (ids, mask), strict=False)
            torch.export.save(exported, str(program))
        except Exception as exc:  # torch.export raises many types; report them as one
            raise ExportError(f"candidate {saved.candidate.id}: torch.export at [1, {max_length}] failed: "
                              f"{exc}") from exc
        log.info("candidate %s: torch.export at [1, %d] in %.1f s", saved.candidate.id, max_length,
                 time.perf_counter() - started)
        staging, meta = Path(tmp) / "model.tflite", Path(tmp) / "worker.json"
        cmd = [str(converter_python(env)), str(WORKER), "--program", str(program), "--out", str(staging),
               "--max-length", str(max_length), "--quantize", mode,
               "--torch-version", metadata.version("torch"), "--meta", str(meta)]
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=timeout,
                                  check=False, cwd=tmp)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"candidate {saved.candidate.id}: TFLite conversion took over {timeout:.0f} s; "
                              "raise the timeout or convert a shallower candidate") from exc
        if proc.returncode != 0 or not staging.is_file():
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("codesign-worker-error:")]
            detail = errors[-1] if errors else "\n".join(proc.stderr.splitlines()[-20:])
            raise ExportError(f"candidate {saved.candidate.id}: TFLite conversion in {env} failed "
                              f"(exit {proc.returncode}): {detail}")
        info = json.loads(meta.read_text())
        log.info("candidate %s: TFLite (%s) converted in %.1f s", saved.candidate.id, mode,
                 time.perf_counter() - started)
        os.replace(staging, target)
    (out_dir / f"{name}.json").write_text(json.dumps(
        {**info, "candidate_id": saved.candidate.id, **describe_tflite(target)}, indent=2, sort_keys=True))
    return target


# --- inspection and validation ------------------------------------------------------------------


def tflite_operators(path: Path) -> dict[str, int]:
    """Builtin operators of a TFLite file and the highest version of each (what an interpreter
    must register to open it)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    buf = Path(path).read_bytes()
    try:
        model = schema.Model.GetRootAs(buf, 0)
        ops: dict[str, int] = {}
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            name = names.get(code, f"BUILTIN_{code}")
            if code == schema.BuiltinOperator.CUSTOM and oc.CustomCode():
                name = f"CUSTOM:{oc.CustomCode().decode()}"
            ops[name] = max(oc.Version(), ops.get(name, 0))
    except (IndexError, ValueError, TypeError) as exc:  # a malformed flatbuffer
        raise ExportError(f"{path}: not a readable TFLite flatbuffer ({exc}); re-export it") from exc
    return dict(sorted(ops.items()))


def describe_tflite(path: Path) -> dict:
    """What a bundle needs to run this file: the interpreter, its version range, the operators
    (with versions), the fixed input shape and dtypes, and the file size."""
    details = _signature_details(open_interpreter(path))
    ops = tflite_operators(path)
    return {
        "format": "tflite",
        "runtime": "ai-edge-litert",
        "runtime_requirement": RUNTIME_REQUIREMENT,
        "validated_with": {"ai-edge-litert": metadata.version("ai-edge-litert")},
        "not_supported": NOT_SUPPORTED,
        "operators": ops,
        "ops_too_new_for_tflite_runtime_2_14": sorted(
            name for name, version in ops.items() if version >= TOO_NEW_FOR_TFLITE_RUNTIME_2_14.get(name, 10**6)),
        "inputs": {k: {"shape": [int(x) for x in v["shape"]], "dtype": np.dtype(v["dtype"]).name}
                   for k, v in details["inputs"].items()},
        "outputs": list(details["outputs"]),
        "fixed_length": True,
        "padding": "right-pad input_ids with 0 and attention_mask with 0 up to the fixed length",
        "model_bytes": Path(path).stat().st_size,
    }


def open_interpreter(path: Path, threads: int = 1):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ExportError(f"running {path} needs {RUNTIME_REQUIREMENT} (pip install 'ai-edge-litert>=2.3'); "
                          "tflite-runtime cannot open litert-torch files") from exc
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"{path}: ai-edge-litert {metadata.version('ai-edge-litert')} cannot open this "
                          f"TFLite file ({exc}); re-export it") from exc
    return interp


def _signature_details(interp) -> dict:
    runner = interp.get_signature_runner()
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if set(inputs) != set(INPUT_NAMES) or OUTPUT_NAME not in outputs:
        raise ExportError(f"TFLite signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                          f"codesign files take {list(INPUT_NAMES)} and return '{OUTPUT_NAME}'; re-export it")
    return {"runner": runner, "inputs": inputs, "outputs": outputs}


class TFLiteRunner:
    """Batch-1 inference on a fixed-length TFLite candidate: pads, casts, runs."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = Path(path)
        sig = _signature_details(open_interpreter(path, threads))
        self._runner, self._inputs = sig["runner"], sig["inputs"]
        self.max_length = int(self._inputs["input_ids"]["shape"][1])

    def pad(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        ids = np.asarray(ids).reshape(-1)
        if len(ids) > self.max_length:
            raise ExportError(f"{self.path}: input of {len(ids)} tokens exceeds the file's fixed length "
                              f"{self.max_length}; truncate to it (the tokenizer does at max_length)")
        feed = {"input_ids": np.zeros((1, self.max_length), np.int64),
                "attention_mask": np.zeros((1, self.max_length), np.int64)}
        feed["input_ids"][0, : len(ids)] = ids
        feed["attention_mask"][0, : len(ids)] = 1
        return {k: v.astype(self._inputs[k]["dtype"], copy=False) for k, v in feed.items()}

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Class probabilities [C] for one unpadded id sequence."""
        return self._runner(**self.pad(ids))[OUTPUT_NAME][0]


def run_reference_tflite(path: Path, ref: ReferenceSet, threads: int = 1) -> np.ndarray:
    runner = TFLiteRunner(path, threads)
    return np.stack([runner(ref.input_ids[i, :n]) for i, n in enumerate(ref.lengths)])


def validate_tflite(path: Path, reference_set: ReferenceSet, precision: str = "fp32",
                    tol: Tolerance | None = None) -> ValidationResult:
    """Run ``path`` with ai-edge-litert on the reference inputs (padded to its fixed length) and
    compare with PyTorch's outputs at the tolerance of ``precision`` (tolerances.py). Raise
    ValidationMismatchError, saying what differed by how much, when out of tolerance."""
    if precision not in TFLITE_PRECISIONS:
        raise ExportError(f"precision '{precision}' has no TFLite recipe; use one of "
                          f"{', '.join(TFLITE_PRECISIONS)}")
    tol = tol or TOLERANCES[precision]
    got = run_reference_tflite(path, reference_set)
    result = compare(got, reference_set, precision, tol)
    if not result.passed:
        worst = int(np.abs(got - reference_set.expected).max(axis=1).argmax())
        raise ValidationMismatchError(
            f"{path}: {precision} TFLite file differs from PyTorch: max |Δprob| {result.max_abs_prob:.3g} "
            f"(tolerance {result.tolerance['max_abs_prob']:g}; worst reference input #{worst}, "
            f"{int(reference_set.lengths[worst])} tokens), argmax agreement {result.argmax_agreement:.0%} "
            f"(needs {result.tolerance['min_argmax_agreement']:.0%}) on {result.n} reference inputs; "
            + ("re-export it" if precision == "fp32" else "re-export it, or use fp32")
        )
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m toolchain.export.tflite ensure-env``: create the converter env (for make)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m toolchain.export.tflite")
    parser.add_argument("command", choices=["ensure-env", "env-path"])
    args = parser.parse_args(argv)
    if args.command == "env-path":
        print(converter_env_path())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        env = ensure_converter_env()
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"converter env ready: {env} ({read_converter_stamp(env)['versions']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
