#!/usr/bin/env python3
"""Standalone runner of a codesign bundle. Needs only numpy, onnxruntime and ``tokenizers``;
never imports codesign. Copied into every Linux bundle as ``runner.py``.

    python3 runner.py "some text" ["more text" ...]   # classify (stdin lines when no text)
    python3 -m runner "some text"                     # the same, with cwd = the bundle folder
    python3 runner.py --verify                        # every file's sha256 against manifest.json
    python3 runner.py --self-check                    # verify, then the reference set
    python3 runner.py --bench 200 [--warmup 20] [--blocks 5]
    python3 runner.py --info
    python3 runner.py --learn examples.jsonl [--max-anchor-drop 0.02] [--holdout 0.2]
    python3 runner.py --rollback                      # the head active before the last switch
    python3 runner.py --head-status                   # which head classifies: shipped or learned

``--learn`` refits the head on the user's examples on the board (``personalise_board.py``,
shipped beside this file); texts and features stay in the board's state folder, only metrics
are printed. Classification uses the learned head while it is active.

Or import it: ``from runner import Bundle; Bundle("/path").classify(["text"])``.

Each command prints exactly one JSON object on stdout (classification: one per line) and
exits 0 ok (a refused learn too: its report says ``"switched": false`` and why), 2 bad
arguments, bundle or examples, 3 a file's sha256 differs from the manifest,
4 runtime or model does not load, 5 the self-check is out of tolerance.

It runs on boards with Python 3.8+ (Raspberry Pi OS, Jetson images), so it sticks to syntax
those accept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import threading
import time

RUNNER_VERSION = 1
CHUNK = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
_QEMU_MAPPING = re.compile(r"/qemu[^/\s]*(/|$)")
# Names the runner itself or a deployment adds next to the bundle's files.
_IGNORED = ("__pycache__",)


class RunnerError(Exception):
    def __init__(self, kind: str, message: str, status: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def detect_emulation() -> bool:
    """True under qemu-user (seen in the kernel's own map of this thread) or when the
    launcher says so with CODESIGN_EMULATED."""
    tid = threading.get_native_id() if hasattr(threading, "get_native_id") else 0
    for path in (f"/proc/self/task/{tid}/maps", "/proc/thread-self/maps"):
        try:
            with open(path, errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split(None, 5)
            if len(fields) == 6 and _QEMU_MAPPING.search(fields[5].strip()):
                return True
    return bool(os.environ.get("CODESIGN_EMULATED"))


class Bundle:
    """A bundle folder: its manifest, tokenizer and ONNX session (opened on first use)."""

    def __init__(self, root: str = HERE, threads: int = 1) -> None:
        self.root = os.path.abspath(root)
        self.threads = threads
        path = os.path.join(self.root, "manifest.json")
        try:
            with open(path) as fh:
                self.manifest = json.load(fh)
        except (OSError, ValueError) as exc:
            raise RunnerError("bad_bundle", f"{path} is missing or not JSON: {exc}", 2) from exc
        art = self.manifest.get("artefact") or {}
        if art.get("runtime") != "onnxruntime":
            raise RunnerError(
                "bad_bundle",
                "this runner runs ONNX bundles; {} is for runtime {!r}".format(
                    self.root, art.get("runtime")
                ),
                2,
            )
        self.model_file = art.get("model", "model.onnx")
        self.max_length = int(art.get("max_length", 128))
        self.labels = self._read_json("labels.json")
        self._session = None
        self._tokenizer = None
        self.runtime_info = {}
        self.state_dir = None  # the learned heads' folder; None: personalise.default_state_dir

    def _read_json(self, name: str):
        try:
            with open(os.path.join(self.root, name)) as fh:
                return json.load(fh)
        except (OSError, ValueError) as exc:
            raise RunnerError("bad_bundle", f"{self.root}/{name}: {exc}", 2) from exc

    # ---- integrity -----------------------------------------------------------------------
    def verify(self) -> dict:
        """Every file the manifest lists exists, stays inside the bundle and matches its
        sha256; no unlisted file sits beside them."""
        files = self.manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise RunnerError("bad_bundle", "manifest.json lists no files", 2)
        for name, expected in sorted(files.items()):
            path = os.path.realpath(os.path.join(self.root, name))
            if not path.startswith(os.path.realpath(self.root) + os.sep):
                raise RunnerError(
                    "bad_bundle", f"manifest entry {name!r} points outside the bundle", 2
                )
            if not os.path.isfile(path):
                raise RunnerError("hash_mismatch", f"bundle file {name!r} is missing", 3)
            actual = sha256_file(path)
            if actual != str(expected).lower():
                raise RunnerError(
                    "hash_mismatch",
                    f"bundle file {name!r} has sha256 {actual}, manifest.json says {expected}; the copy is corrupted "
                    "or was modified - deploy the bundle again",
                    3,
                )
        listed = set(files) | {"manifest.json", "manifest.sig"}  # the signature signs the manifest
        extra = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in _IGNORED and not d.startswith(".")]
            for fname in filenames:
                rel = os.path.relpath(os.path.join(dirpath, fname), self.root).replace(os.sep, "/")
                if not fname.startswith(".") and rel not in listed:
                    extra.append(rel)
        if extra:
            raise RunnerError(
                "hash_mismatch",
                "files not in manifest.json: {}; the bundle was modified - deploy it again".format(
                    ", ".join(sorted(extra))
                ),
                3,
            )
        return {"files": len(files)}

    # ---- inference -----------------------------------------------------------------------
    @property
    def session(self):
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise RunnerError(
                    "runtime_missing", f"onnxruntime is not installed: {exc}", 4
                ) from exc
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            path = os.path.join(self.root, self.model_file)
            try:
                self._session = ort.InferenceSession(
                    path, sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own unexported classes
                raise RunnerError(
                    "model_load", f"onnxruntime could not load {path}: {exc}", 4
                ) from exc
            self.runtime_info = {
                "name": "onnxruntime",
                "version": ort.__version__,
                "provider": "CPU",
            }
        return self._session

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            try:
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise RunnerError(
                    "runtime_missing", f"tokenizers is not installed: {exc}", 4
                ) from exc
            tok = Tokenizer.from_file(os.path.join(self.root, "tokenizer.json"))
            tok.enable_truncation(max_length=self.max_length)
            tok.no_padding()
            self._tokenizer = tok
        return self._tokenizer

    def encode(self, texts):
        import numpy as np

        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(list(texts))]

    def probs_one(self, ids, mask):
        return self.session.run(["probs"], {"input_ids": ids, "attention_mask": mask})[0][0]

    def classify(self, texts) -> list:
        """[{"text", "label", "index", "probs"}] for each text, at batch 1, by the active head
        (a learned one on the model's ``features`` output, else the model's own ``probs``)."""
        import numpy as np

        out = []
        encoded = self.encode(texts)
        learned = self.active_head() if self.manifest.get("personalise") else None
        labels = learned.labels if learned is not None else self.labels
        for i, text in enumerate(texts):
            ids = encoded[i][None, :]
            if learned is None:
                probs = self.probs_one(ids, np.ones_like(ids))
            else:
                probs = learned.probs(self.features_one(ids, np.ones_like(ids))[None, :])[0]
            k = int(probs.argmax())
            label = labels[k] if k < len(labels) else str(k)
            out.append(
                {
                    "text": text,
                    "label": label,
                    "index": k,
                    "probs": [round(float(p), 6) for p in probs],
                }
            )
        return out

    # ---- personalisation (personalise_board.py) ---------------------------------------------
    @property
    def bundle_id(self) -> str:
        return sha256_file(os.path.join(self.root, "manifest.json"))

    def personalise_module(self):
        """The bundle's own personalise_board.py (numpy only), loaded once by file path."""
        import importlib.util

        path = os.path.join(self.root, "personalise_board.py")
        mod = sys.modules.get("personalise_board")
        if mod is not None and os.path.abspath(getattr(mod, "__file__", "")) == path:
            return mod
        if not self.manifest.get("personalise") or not os.path.isfile(path):
            raise RunnerError("unsupported", "this bundle ships no personalisation (built before it): rebuild "
                              "and deploy it with this codesign", 2)
        spec = importlib.util.spec_from_file_location("personalise_board", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["personalise_board"] = mod
        spec.loader.exec_module(mod)
        return mod

    def head_state(self):
        mod = self.personalise_module()
        return mod.HeadState(self.state_dir or mod.default_state_dir(self.root, self.bundle_id))

    def shipped_head(self):
        conf = self.manifest["personalise"]
        return self.personalise_module().Head.load(
            os.path.join(self.root, conf["head"]), conf["activations"], self.labels)

    def active_head(self):
        """The learned head in use, or None while the shipped one is."""
        mod = self.personalise_module()
        state = self.head_state()
        active = state.read().get("active", mod.SHIPPED)
        return None if active == mod.SHIPPED else state.load(active, self.shipped_head())[0]

    def features_one(self, ids, mask):
        if "features" not in [o.name for o in self.session.get_outputs()]:
            raise RunnerError("unsupported", f"{self.model_file} has no 'features' output (exported before "
                              "personalisation); rebuild and deploy the bundle", 2)
        return self.session.run(["features"], {"input_ids": ids, "attention_mask": mask})[0][0]

    def features_of(self, texts):
        """(features [n, d] of ``texts``, how many were cut to the model's max length)."""
        import numpy as np

        encoded = self.tokenizer.encode_batch(list(texts))
        truncated = sum(1 for e in encoded if e.overflowing)
        rows = []
        for e in encoded:
            ids = np.asarray(e.ids, dtype=np.int64)[None, :]
            rows.append(self.features_one(ids, np.ones_like(ids)))
        return np.stack(rows).astype(np.float32), truncated

    def anchor(self):
        import numpy as np

        path = os.path.join(self.root, self.manifest["personalise"]["anchor"])
        with np.load(path, allow_pickle=False) as z:
            x = np.asarray(z["features"], dtype=np.float32)
            labels = [self.labels[int(i)] for i in z["labels"]]
            check = [bool(c) for c in z["check"]]
        return x, labels, check

    def learn(self, path: str, max_anchor_drop=None, holdout=None) -> dict:
        mod = self.personalise_module()
        conf = self.manifest["personalise"]
        drop = float(conf.get("max_anchor_drop", mod.DEFAULT_MAX_ANCHOR_DROP)
                     if max_anchor_drop is None else max_anchor_drop)
        state = self.head_state()
        os.makedirs(state.heads, exist_ok=True)
        report = mod.learn(path, self.shipped_head(), self.anchor(), self.features_of, state, drop,
                           mod.DEFAULT_HOLDOUT if holdout is None else holdout, detect_emulation())
        report.update({"ok": True, "bundle_id": self.bundle_id, "candidate_id": self.manifest.get("candidate_id"),
                       "machine": platform.machine(), "python": platform.python_version()})
        return report

    def head_status(self) -> dict:
        state = self.head_state()
        return dict(state.read(), ok=True, state_dir=state.folder, bundle_id=self.bundle_id)

    def rollback_head(self) -> dict:
        return dict(self.head_state().rollback(), ok=True)

    # ---- the reference set ---------------------------------------------------------------
    def reference(self):
        import numpy as np

        check = self.manifest.get("self_check") or {}
        path = os.path.join(self.root, check.get("reference", "reference.npz"))
        try:
            with np.load(path, allow_pickle=False) as z:
                ref = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError) as exc:
            raise RunnerError("bad_bundle", f"{path}: {exc}", 2) from exc
        ref["inputs"] = [
            (
                np.ascontiguousarray(ref["input_ids"][i : i + 1, :n]),
                np.ascontiguousarray(ref["attention_mask"][i : i + 1, :n]),
            )
            for i, n in enumerate(int(v) for v in ref["lengths"])
        ]
        return ref

    def run_reference(self, ref) -> dict:
        """Outputs on the reference inputs vs the expected ones (PyTorch's), and accuracy."""
        import numpy as np

        tol = (self.manifest.get("self_check") or {}).get("tolerance") or {}
        max_abs_tol = float(tol.get("max_abs_prob", 5e-4))
        min_agree = float(tol.get("min_argmax_agreement", 1.0))
        got = np.stack([self.probs_one(ids, mask) for ids, mask in ref["inputs"]])
        expected = ref["expected"]
        if got.shape != expected.shape:
            raise RunnerError("mismatch", f"outputs {got.shape} vs expected {expected.shape}", 5)
        max_abs = float(np.abs(got - expected).max())
        agree = float((got.argmax(1) == expected.argmax(1)).mean())
        result = {
            "n": int(len(got)),
            "max_abs_prob": max_abs,
            "argmax_agreement": agree,
            "tolerance": {"max_abs_prob": max_abs_tol, "min_argmax_agreement": min_agree},
            "passed": max_abs <= max_abs_tol and agree >= min_agree,
        }
        extra = (
            self._read_json("reference.json")
            if os.path.isfile(os.path.join(self.root, "reference.json"))
            else {}
        )
        labels = extra.get("labels")
        if labels is not None and len(labels) == len(got):
            result["accuracy"] = float((got.argmax(1) == np.asarray(labels)).mean())
        texts = extra.get("texts")
        if texts:
            # The board's tokenizer must give the ids the reference was computed from.
            ids = self.encode(texts)
            lengths = [int(n) for n in ref["lengths"]]
            same = len(ids) == len(lengths) and all(
                len(ids[i]) == n and (ids[i] == ref["input_ids"][i, :n]).all()
                for i, n in enumerate(lengths)
            )
            result["tokenizer_matches"] = bool(same)
            result["passed"] = result["passed"] and same
        return result

    def self_check(self) -> dict:
        verified = self.verify()
        result = self.run_reference(self.reference())
        result.update({"ok": result["passed"], "verified_files": verified["files"]})
        if not result["passed"]:
            raise RunnerError(
                "mismatch",
                "self-check out of tolerance: max |dprob| {:.3g} (tolerance {:g}), argmax "
                "agreement {:.0%} (needs {:.0%}){} on {} reference inputs".format(
                    result["max_abs_prob"],
                    result["tolerance"]["max_abs_prob"],
                    result["argmax_agreement"],
                    result["tolerance"]["min_argmax_agreement"],
                    "" if result.get("tokenizer_matches", True) else ", tokenizer ids differ",
                    result["n"],
                ),
                5,
            )
        return result

    def bench(self, iterations: int, warmup: int, blocks: int, slowdown: float = 0.0) -> dict:
        """Latency per inference at batch 1, cycling through the reference inputs.

        ``slowdown`` (tests of the regression gate only) stretches each timed inference by
        that fraction with a busy wait, which is exact where a sleep would overshoot."""
        ref = self.reference()
        inputs = ref["inputs"]
        t0 = time.perf_counter()
        self.session  # noqa: B018 - load the model outside the timed loop
        load_ms = (time.perf_counter() - t0) * 1e3
        accuracy = self.run_reference(ref)
        for i in range(warmup):
            self.probs_one(*inputs[i % len(inputs)])
        samples = []
        for i in range(iterations):
            ids, mask = inputs[i % len(inputs)]
            start = time.perf_counter()
            self.probs_one(ids, mask)
            if slowdown > 0:
                end = start + (time.perf_counter() - start) * (1.0 + slowdown)
                while time.perf_counter() < end:
                    pass
            samples.append((time.perf_counter() - start) * 1e3)
        return {
            "ok": True,
            "runner_version": RUNNER_VERSION,
            "bundle_id": self.manifest.get("candidate_id"),
            "iterations": iterations,
            "warmup": warmup,
            "blocks": blocks,
            "threads": self.threads,
            "injected_slowdown": slowdown,
            "load_ms": load_ms,
            "latency_ms_samples": samples,
            "reference": accuracy,
            "runtime": self.runtime_info,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "emulated": detect_emulation(),
        }


def parse_args(argv):
    parser = argparse.ArgumentParser(description="codesign bundle runner")
    parser.add_argument("texts", nargs="*", help="texts to classify (stdin lines when none)")
    parser.add_argument("--bundle", default=HERE, help="bundle folder (default: this file's)")
    parser.add_argument("--verify", action="store_true", help="check every file's sha256")
    parser.add_argument("--self-check", action="store_true", help="verify + reference set")
    parser.add_argument("--bench", type=int, metavar="N", help="time N inferences")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--inject-slowdown", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--info", action="store_true", help="print the manifest")
    parser.add_argument("--learn", metavar="FILE", help="refit the head on FILE (.jsonl or .csv)")
    parser.add_argument("--max-anchor-drop", type=float, default=None,
                        help="largest anchor-accuracy drop a learn may cause (default: the bundle's)")
    parser.add_argument("--holdout", type=float, default=None, help="fraction held out (default 0.2)")
    parser.add_argument("--rollback", action="store_true", help="back to the head before the last switch")
    parser.add_argument("--head-status", action="store_true", help="which head is active")
    parser.add_argument("--state", default=None, help="learned heads' folder (default: beside the deployment)")
    args = parser.parse_args(argv)
    if args.max_anchor_drop is not None and not 0.0 <= args.max_anchor_drop <= 1.0:
        parser.error("--max-anchor-drop must be within 0..1")
    if args.holdout is not None and not 0.0 <= args.holdout < 1.0:
        parser.error("--holdout must be within 0..1 (1 excluded)")
    if args.bench is not None and args.bench < 1:
        parser.error("--bench needs N >= 1")
    if args.warmup < 0 or args.threads < 1 or args.blocks < 1 or args.inject_slowdown < 0:
        parser.error("--warmup >= 0, --threads and --blocks >= 1, --inject-slowdown >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        bundle = Bundle(args.bundle, threads=args.threads)
        bundle.state_dir = args.state
        if args.learn:
            report = bundle.learn(args.learn, args.max_anchor_drop, args.holdout)
        elif args.rollback:
            report = bundle.rollback_head()
        elif args.head_status:
            report = bundle.head_status()
        elif args.info:
            report = {"ok": True, "manifest": bundle.manifest}
        elif args.verify:
            report = dict(bundle.verify(), ok=True)
        elif args.self_check:
            report = bundle.self_check()
        elif args.bench is not None:
            report = bundle.bench(args.bench, args.warmup, args.blocks, args.inject_slowdown)
        else:
            texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
            for row in bundle.classify(texts):
                sys.stdout.write(json.dumps(row) + "\n")
            return 0
        status = 0
    except RunnerError as exc:
        report = {"ok": False, "error_kind": exc.kind, "error": str(exc)}
        status = exc.status
    except Exception as exc:  # personalise_board's LearnError: the module is loaded by path
        if type(exc).__name__ != "LearnError":
            raise
        report = {"ok": False, "error_kind": exc.kind, "error": str(exc), "switched": False}
        status = exc.status
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
