#!/usr/bin/env python3
"""The on-board measuring agent. Standalone: stdlib + numpy + one runtime; never imports codesign.

    python3 agent.py JOB_DIR --warmup W --iterations N --threads T [--provider P]

JOB_DIR holds ``job.json`` ({"files": {name: sha256}, "model", "runtime", "provider"}), the
model and ``inputs.npz`` (input_ids, attention_mask [N, T] int64; lengths [N] int64). Input i
is fed at batch 1 with its real length. Exactly one JSON object is printed on stdout, also on
failure ({"ok": false, "error", "error_kind"}), with exit status:

    0 ok, 2 bad job/arguments, 3 a file's sha256 does not match job.json,
    4 runtime/provider unavailable or model does not load, 5 inference failed.

A job may ask for ONNX Runtime's kernel profile too (``"op_profile": {"runs": R, "warmup": W}``):
after the timed samples, so their timings are not disturbed, a second session with
``enable_profiling`` runs every input W times untimed, then R times, and the report's
``op_profile`` holds the kernel events of those R passes compactly (:func:`compact_profile`).
Placing nodes in layers needs the ``onnx`` package a board may lack: the host does it.

It is copied to boards running Python 3.8+ (Jetson images, Raspberry Pi OS), so it sticks to
syntax those accept.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import threading
import time

AGENT_VERSION = 1
CHUNK = 1 << 20
# qemu-user binaries as installed by Debian: qemu-aarch64(-static) or, via binfmt_misc,
# /usr/libexec/qemu-binfmt/aarch64-binfmt-P.
_QEMU_MAPPING = re.compile(r"/qemu[^/\s]*(/|$)")
_ARM_PARTS = {
    "0xd03": "ARM Cortex-A53",
    "0xd04": "ARM Cortex-A35",
    "0xd05": "ARM Cortex-A55",
    "0xd07": "ARM Cortex-A57",
    "0xd08": "ARM Cortex-A72",
    "0xd0b": "ARM Cortex-A76",
    "0xd41": "ARM Cortex-A78",
    "0xd42": "ARM Cortex-A78AE",
}
# The instruction sets int8/fp32 kernel speed depends on, in report order. A copy of codesign's
# profiling/isa.py (this file may not import codesign); a test keeps the two equal.
ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
    "neon", "asimd", "asimddp", "i8mm", "sve",
)


class AgentError(Exception):
    def __init__(self, kind: str, message: str, status: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def load_job(job_dir: str) -> dict:
    text = _read(os.path.join(job_dir, "job.json"))
    if text is None:
        raise AgentError("bad_job", f"{job_dir}/job.json is missing or unreadable", 2)
    try:
        job = json.loads(text)
    except ValueError as exc:
        raise AgentError("bad_job", f"{job_dir}/job.json is not JSON: {exc}", 2) from exc
    for key in ("files", "model", "runtime"):
        if key not in job:
            raise AgentError("bad_job", f"{job_dir}/job.json lacks '{key}'", 2)
    return job


def verify_files(job_dir: str, files: dict) -> None:
    """Every listed file must exist, stay inside JOB_DIR and match its sha256."""
    root = os.path.realpath(job_dir)
    for name, expected in sorted(files.items()):
        path = os.path.realpath(os.path.join(root, name))
        if not path.startswith(root + os.sep):
            raise AgentError("bad_job", f"job file '{name}' points outside the job folder", 2)
        if not os.path.isfile(path):
            raise AgentError("hash_mismatch", f"job file '{name}' is missing", 3)
        actual = sha256_file(path)
        if actual != str(expected).lower():
            raise AgentError(
                "hash_mismatch",
                f"job file '{name}' has sha256 {actual}, job.json says {expected}; "
                "the upload was corrupted or the file was modified - rebuild the job",
                3,
            )


def detect_emulation() -> tuple[bool, str]:
    """Whether this process runs under qemu-user, and how that was found out.

    qemu-user fakes what the guest would normally look at - uname, /proc/cpuinfo (or our
    launcher bind-mounts a fake one), /proc/self/{maps,auxv,exe,cmdline} - so none of those
    can tell. It only rewrites the literal ``/proc/self/...`` and ``/proc/<pid>/...`` names,
    though: ``/proc/self/task/<tid>/maps`` and ``/proc/thread-self/maps`` are the kernel's
    real view of the process, where the qemu binary itself is mapped. That catches qemu
    started by us *and* by binfmt_misc. The launcher's ``CODESIGN_EMULATED`` variable is the
    fallback for kernels or qemu versions that hide those files too.
    """
    tid = threading.get_native_id()
    for path in (f"/proc/self/task/{tid}/maps", "/proc/thread-self/maps"):
        text = _read(path)
        if not text:
            continue
        for line in text.splitlines():
            fields = line.split(None, 5)
            if len(fields) == 6 and _QEMU_MAPPING.search(fields[5].strip()):
                return True, f"qemu mapped in {path}: {fields[5].strip()}"
    tag = os.environ.get("CODESIGN_EMULATED")
    if tag:
        return True, f"CODESIGN_EMULATED={tag}"
    return False, "no emulator found"


def cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    part = fields.get("CPU part", "").lower()
    if part:
        return _ARM_PARTS.get(part, f"ARM CPU part {part}")
    return platform.processor() or None


def parse_cpu_flags(cpuinfo: str) -> list:
    """The ISA_FLAGS every core lists in ``flags`` (x86) or ``Features`` (Arm), in order."""
    common = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        # Exactly "flags": Intel kernels also print "vmx flags", which are not instructions.
        if sep and key.strip() in ("flags", "Features"):
            found = set(value.split())
            common = found if common is None else common & found
    return [f for f in ISA_FLAGS if common and f in common]


def cpu_flags() -> list:
    """This board's ISA_FLAGS (under qemu-user: those of the emulated CPU's cpuinfo)."""
    return parse_cpu_flags(_read("/proc/cpuinfo") or "")


def peak_rss_bytes() -> int:
    status = _read("/proc/self/status") or ""
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
    if match:
        return int(match.group(1)) * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def load_inputs(job_dir: str):
    import numpy as np

    path = os.path.join(job_dir, "inputs.npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = np.asarray(data["input_ids"], dtype=np.int64)
            mask = np.asarray(data["attention_mask"], dtype=np.int64)
            lengths = np.asarray(data["lengths"], dtype=np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise AgentError("bad_job", f"{path}: {exc}", 2) from exc
    if ids.ndim != 2 or mask.shape != ids.shape or lengths.shape != (ids.shape[0],):
        raise AgentError("bad_job", f"{path}: shapes {ids.shape}/{mask.shape}/{lengths.shape}", 2)
    if ids.shape[0] == 0 or lengths.min() < 1 or lengths.max() > ids.shape[1]:
        raise AgentError("bad_job", f"{path}: lengths must lie in 1..{ids.shape[1]}", 2)
    return [
        (np.ascontiguousarray(ids[i : i + 1, :n]), np.ascontiguousarray(mask[i : i + 1, :n]))
        for i, n in enumerate(int(v) for v in lengths)
    ]


_ORT_PROVIDERS = {
    "CPU": ["CPUExecutionProvider"],
    "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "TensorRT": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_SHORT = {
    "CPUExecutionProvider": "CPU",
    "CUDAExecutionProvider": "CUDA",
    "TensorrtExecutionProvider": "TensorRT",
}


def _provider_list(wanted: list, available: list) -> list:
    """Providers to try in order. TensorRT builds an engine per model on first use (minutes on
    a Nano); it is cached under ~/.cache so only the first run of a model pays for it."""
    providers: list = []
    for name in wanted:
        if name not in available:
            continue
        if name == "TensorrtExecutionProvider":
            cache = os.path.join(os.path.expanduser("~"), ".cache", "codesign-agent", "tensorrt")
            os.makedirs(cache, exist_ok=True)
            options = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache}
            providers.append((name, options))
        else:
            providers.append(name)
    return providers


class OrtRunner:
    def __init__(self, model: str, provider: str, threads: int, profile_prefix: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise AgentError("runtime_missing", f"onnxruntime is not installed: {exc}", 4) from exc
        available = ort.get_available_providers()
        if provider == "auto":
            # Jetson: the GPU when its provider exists, the CPU otherwise; reported below.
            wanted = next(
                (
                    _ORT_PROVIDERS[p]
                    for p in ("TensorRT", "CUDA")
                    if _ORT_PROVIDERS[p][0] in available
                ),
                _ORT_PROVIDERS["CPU"],
            )
        elif provider in _ORT_PROVIDERS:
            wanted = _ORT_PROVIDERS[provider]
            if wanted[0] not in available:
                raise AgentError(
                    "provider_missing",
                    f"provider {provider} ({wanted[0]}) is not available in onnxruntime "
                    f"{ort.__version__}; available: {', '.join(available)}",
                    4,
                )
        else:
            raise AgentError("bad_job", f"unknown provider '{provider}'", 2)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        try:
            self.session = ort.InferenceSession(
                model, sess_options=options, providers=_provider_list(wanted, available)
            )
        except Exception as exc:  # onnxruntime raises its own unexported exception classes
            raise AgentError("model_load", f"onnxruntime could not load {model}: {exc}", 4) from exc
        names = [i.name for i in self.session.get_inputs()]
        if not {"input_ids", "attention_mask"} <= set(names):
            raise AgentError(
                "bad_job", f"model inputs are {names}; need input_ids, attention_mask", 2
            )
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "probs" if "probs" in outputs else outputs[0]
        used = self.session.get_providers()[0]
        self.info = {
            "name": "onnxruntime",
            "version": ort.__version__,
            "provider": _SHORT.get(used, used),
        }

    def __call__(self, ids, mask):
        return self.session.run([self.output], {"input_ids": ids, "attention_mask": mask})[0]


class TfliteRunner:
    def __init__(self, model: str, provider: str, threads: int) -> None:
        interpreter_cls, name, version = self._import()
        if provider not in ("CPU", "auto"):
            raise AgentError(
                "provider_missing", f"tflite runs on CPU only; job asks for {provider}", 4
            )
        try:
            self.interp = interpreter_cls(model_path=model, num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            raise AgentError("model_load", f"{name} could not load {model}: {exc}", 4) from exc
        self.inputs = {}
        for detail in self.interp.get_input_details():
            for key in ("input_ids", "attention_mask"):
                if key in detail["name"]:
                    self.inputs[key] = detail
        if len(self.inputs) != 2:
            names = [d["name"] for d in self.interp.get_input_details()]
            raise AgentError(
                "bad_job", f"model inputs are {names}; need input_ids, attention_mask", 2
            )
        outputs = self.interp.get_output_details()
        self.output = next((o for o in outputs if "probs" in o["name"]), outputs[0])
        self.shape = None
        self.info = {"name": "tflite", "version": version, "provider": "CPU"}

    @staticmethod
    def _import():
        from importlib.metadata import PackageNotFoundError, version

        for module, dist in (
            ("ai_edge_litert.interpreter", "ai-edge-litert"),
            ("tflite_runtime.interpreter", "tflite-runtime"),
        ):
            try:
                mod = __import__(module, fromlist=["Interpreter"])
            except ImportError:
                continue
            try:
                ver = version(dist)
            except PackageNotFoundError:
                ver = ""
            return mod.Interpreter, dist, ver
        raise AgentError(
            "runtime_missing", "neither ai-edge-litert nor tflite-runtime is installed", 4
        )

    def __call__(self, ids, mask):
        if self.shape != ids.shape:  # resize only when the real length changes
            for key, arr in (("input_ids", ids), ("attention_mask", mask)):
                self.interp.resize_tensor_input(self.inputs[key]["index"], list(arr.shape))
            self.interp.allocate_tensors()
            self.shape = ids.shape
        for key, arr in (("input_ids", ids), ("attention_mask", mask)):
            self.interp.set_tensor(self.inputs[key]["index"], arr.astype(self.inputs[key]["dtype"]))
        self.interp.invoke()
        return self.interp.get_tensor(self.output["index"])


_KERNEL = "_kernel_time"


def compact_profile(events: list, skip: int) -> dict:
    """ONNX Runtime's trace (Chrome trace events) as {"nodes": [[name, op type], ...], "runs":
    [[[node index, dur us], ...] per model_run]}, the first ``skip`` runs (warmup) left out.
    A kernel event belongs to the model_run whose span holds its start."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    starts = [r["ts"] for r in runs]
    index: dict = {}
    nodes: list = []
    out: list = [[] for _ in runs]
    kernels = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith(_KERNEL)]
    for k in sorted(kernels, key=lambda e: e["ts"]):
        i = bisect.bisect_right(starts, k["ts"]) - 1
        if i < 0 or k["ts"] > runs[i]["ts"] + runs[i]["dur"]:
            continue
        key = (k["name"][: -len(_KERNEL)], str((k.get("args") or {}).get("op_name", "?")))
        if key not in index:
            index[key] = len(nodes)
            nodes.append(list(key))
        out[i].append([index[key], int(k.get("dur", 0))])
    return {"nodes": nodes, "runs": out[skip:]}


def op_profile_spec(job: dict):
    """(runs, warmup) of the job's op profile request, or None when it asks for none."""
    spec = job.get("op_profile")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise AgentError("bad_job", "job.json 'op_profile' must be a table {runs, warmup}", 2)
    runs, warmup = spec.get("runs", 1), spec.get("warmup", 1)
    if not (isinstance(runs, int) and isinstance(warmup, int) and runs >= 1 and warmup >= 0):
        raise AgentError("bad_job", f"job.json 'op_profile': runs {runs!r}, warmup {warmup!r}; "
                         "need integers runs >= 1, warmup >= 0", 2)
    if job["runtime"] != "onnxruntime":
        raise AgentError("bad_job", f"an op profile needs onnxruntime; the job runs {job['runtime']}", 2)
    return runs, warmup


def profile_ops(model: str, provider: str, threads: int, inputs: list, runs: int, warmup: int) -> dict:
    """One extra profiled session over every input (see the module doc); its trace is read and
    deleted here."""
    tmp = tempfile.mkdtemp(prefix="codesign-opprof-")
    try:
        runner = OrtRunner(model, provider, threads, profile_prefix=os.path.join(tmp, "ort"))
        try:
            for _ in range(warmup + runs):
                for ids, mask in inputs:
                    runner(ids, mask)
        finally:
            trace = runner.session.end_profiling()
        try:
            with open(trace) as fh:
                events = json.load(fh)
        except (OSError, ValueError) as exc:
            raise AgentError("inference", f"onnxruntime's profile {trace} is unreadable: {exc}", 5) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = compact_profile(events, warmup * len(inputs))
    out.update(runs_per_input=runs, warmup=warmup, inputs=len(inputs))
    return out


def measure(args: argparse.Namespace) -> dict:
    job = load_job(args.job_dir)
    if not isinstance(job["files"], dict) or job["model"] not in job["files"]:
        raise AgentError("bad_job", "job.json 'files' must be a table listing the model", 2)
    verify_files(args.job_dir, job["files"])
    provider = args.provider or job.get("provider") or "CPU"
    inputs = load_inputs(args.job_dir)
    runners = {"onnxruntime": OrtRunner, "tflite": TfliteRunner}
    if job["runtime"] not in runners:
        raise AgentError("bad_job", f"unknown runtime '{job['runtime']}'", 2)
    op_spec = op_profile_spec(job)  # a bad request fails before minutes of timing, not after
    model = os.path.join(args.job_dir, job["model"])
    t0 = time.perf_counter()
    runner = runners[job["runtime"]](model, provider, args.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    try:
        outputs = [runner(ids, mask)[0].astype("float32").tolist() for ids, mask in inputs]
        for i in range(args.warmup):
            runner(*inputs[i % len(inputs)])
        samples = []
        for i in range(args.iterations):
            ids, mask = inputs[i % len(inputs)]
            start = time.perf_counter_ns()
            runner(ids, mask)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        # Before the profiled session loads a second copy of the model: the peak is the timed one's.
        rss = peak_rss_bytes()
        ops = None
        if op_spec is not None:  # after the timed samples: they are not disturbed
            ops = profile_ops(model, provider, args.threads, inputs, *op_spec)
    except AgentError:
        raise
    except Exception as exc:  # a runtime's own error types; reported, never swallowed
        raise AgentError("inference", f"inference failed: {type(exc).__name__}: {exc}", 5) from exc
    emulated, how = detect_emulation()
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    report = {
        "agent_version": AGENT_VERSION,
        "ok": True,
        "runtime": runner.info,
        "load_ms": load_ms,
        "warmup": args.warmup,
        "iterations": args.iterations,
        "threads": args.threads,
        "latency_ms_samples": samples,
        "peak_rss_bytes": rss,
        "outputs": outputs,
        "cpu_model": cpu_model(),
        "isa": cpu_flags(),
        "governor": governor.strip() if governor else None,
        "machine": platform.machine(),
        "emulated": emulated,
        "emulation_evidence": how,
        "python": platform.python_version(),
    }
    if ops is not None:
        report["op_profile"] = ops
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="codesign on-board measuring agent")
    parser.add_argument("job_dir")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--provider", choices=["CPU", "CUDA", "TensorRT", "auto"], default=None)
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.iterations < 1 or args.threads < 1:
        parser.error("--warmup must be >= 0, --iterations and --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        report = measure(args)
        status = 0
    except AgentError as exc:
        report = {
            "agent_version": AGENT_VERSION,
            "ok": False,
            "error_kind": exc.kind,
            "error": str(exc),
        }
        status = exc.status
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
