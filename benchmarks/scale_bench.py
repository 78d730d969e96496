"""Scale: a synthetic corpus of >= 1 M short texts, extraction throughput on 1 and 2 workers, and a
head fitted on features larger than a memory cap.

    .venv/bin/python benchmarks/scale_bench.py                       # defaults below
    .venv/bin/python benchmarks/scale_bench.py --extract-texts 4096 --fit-rows 1048576 --cap-mib 1024

1. Corpus: ``--corpus-texts`` texts (default 1,048,576), each 4-16 words drawn from one of the
   three datasets' vocabularies (../shared/data: trec, sst2, emotion; word frequencies as
   counted there), labelled by the dataset it was drawn from. Written as TSV and read back with
   codesign's streaming reader (its wall time and the reader process's peak RSS are recorded).
2. Extraction: the first ``--extract-texts`` texts of the corpus through the packaged MiniLM at
   max length 32, as ``codesign extract`` in one process (1 worker, 1 thread) and as two
   ``--shard k/2`` processes at once (2 workers, 1 thread each) plus ``--finalize``; texts per
   second of wall time, process start and model load included. The 2-worker cache is checked
   byte-identical to the 1-worker one. The baseline is the 1-worker run of the same invocation.
3. Heads: ``--fit-rows`` rows of synthetic 384-wide features in two layers (float32, written as
   cache chunks), fitted streamed from the memory maps in a child process whose peak RSS
   (VmHWM) is compared with ``--cap-mib``: ridge and an ELM output layer from chunked normal
   equations. Then, on the first ``--check-rows`` rows, the streamed fit is compared with the
   in-memory fit of the same rows (max abs weight difference).

Writes benchmarks/results/<date>-<hostname>-scale.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
DIM, LAYERS, CHUNK = 384, 2, 8192


def machine() -> dict:
    from toolchain.profiling.isa import cpu_flags

    info = {"hostname": socket.gethostname(), "cores": os.cpu_count(), "load_average_start": os.getloadavg()}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
            break
    info["isa"] = cpu_flags()  # the same flags, in the same order, as every profiling record
    info["mem_total_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return info


def vocabularies(data: Path) -> list[tuple[list[str], np.ndarray]]:
    """(words, probabilities) per dataset, counted over its train file."""
    files = [data / "trec" / "train_5500.label", data / "sst2" / "train.tsv", data / "emotion" / "train.txt"]
    out = []
    for path in files:
        text = path.read_bytes().decode("latin-1").lower()
        counts = collections.Counter(re.findall(r"[a-z']{2,}", text))
        words, n = zip(*counts.most_common(20000), strict=True)
        p = np.array(n, dtype=np.float64)
        out.append((list(words), p / p.sum()))
    return out


def write_corpus(folder: Path, n: int, data: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vocabs = vocabularies(data)
    labels = rng.integers(0, len(vocabs), n)
    lengths = rng.integers(4, 17, n)
    draws = [rng.choice(len(w), size=int((labels == c).sum() * 16), p=p) for c, (w, p) in enumerate(vocabs)]
    used = [0] * len(vocabs)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.tsv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("text\tlabel\n")
        for lab, length in zip(labels, lengths, strict=True):
            words, d = vocabs[lab][0], draws[lab]
            fh.write(" ".join(words[i] for i in d[used[lab] : used[lab] + length]) + f"\t{'tse'[lab]}\n")
            used[lab] += length
    return path


def read_corpus_child(path: Path) -> dict:
    code = ("import sys, time, resource\nfrom pathlib import Path\nsys.path.insert(0, sys.argv[2])\n"
            "from toolchain.data.readers import read_split\nfrom toolchain.data.presets import file_spec\n"
            "t = time.perf_counter()\n"
            "rows = read_split(file_spec(Path(sys.argv[1])), Path(sys.argv[1]))\n"
            "print(len(rows[0]), time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(ROOT)], capture_output=True, text=True)
    if out.returncode:
        return {"error": out.stderr[-500:]}
    n, secs, rss = out.stdout.split()
    return {"rows": int(n), "seconds": float(secs), "peak_rss_mib": int(rss) / 1024,
            "file_mib": path.stat().st_size / 2**20}


def split_files(corpus: Path, folder: Path, n: int) -> Path:
    """train/dev/test TSVs from the corpus's first n texts (80/10/10) and a spec."""
    with open(corpus, encoding="utf-8") as fh:
        header, lines = fh.readline(), [fh.readline() for _ in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    cut = [0, int(n * 0.8), int(n * 0.9), n]
    for name, a, b in zip(("train", "dev", "test"), cut, cut[1:], strict=False):
        (folder / f"{name}.tsv").write_text(header + "".join(lines[a:b]), encoding="utf-8")
    spec = folder / "synth.toml"
    spec.write_text('name = "synth"\nformat = "tsv"\ntrain = "train.tsv"\nvalidation = "dev.tsv"\n'
                    'test = "test.tsv"\n')
    return spec


def extract_runs(spec: Path, work: Path, n: int) -> dict:
    env = {**os.environ, "CODESIGN_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "CODESIGN_CHUNK_SIZE": "256", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "toolchain.cli", "extract", "--dataset", str(spec), "--max-length", "32"]
    code = "import sys, torch; torch.set_num_threads(1); from toolchain.cli import main; main(sys.argv[1:])"
    cmd = [sys.executable, "-c", code, *args[3:]]

    def timed(procs_args, home):
        t = time.perf_counter()
        procs = [subprocess.Popen(cmd + extra, env={**env, "CODESIGN_HOME": str(home)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for extra in procs_args]
        outs = [p.communicate() for p in procs]
        for p, (_out, e) in zip(procs, outs, strict=True):
            if p.returncode:
                raise SystemExit(f"extraction failed: {e[-2000:]}")
        return time.perf_counter() - t

    one_s = timed([[]], work / "one")
    two_s = timed([["--shard", "0/2"], ["--shard", "1/2"]], work / "two")
    fin_s = timed([["--finalize"]], work / "two")
    (c1,) = (work / "one" / "cache" / "features").iterdir()
    (c2,) = (work / "two" / "cache" / "features").iterdir()
    same = {p.name: p.read_bytes() for p in c1.iterdir()} == {p.name: p.read_bytes() for p in c2.iterdir()}
    return {"texts": n, "max_length": 32, "model": "all-MiniLM-L6-v2 (packaged)",
            "one_worker": {"wall_s": one_s, "texts_per_s": n / one_s},
            "two_workers": {"wall_s": two_s, "texts_per_s": n / two_s, "finalize_wall_s": fin_s},
            "two_over_one_throughput": one_s / two_s, "caches_byte_identical": same,
            "note": "wall time of whole processes: start-up, model load and all three splits included"}


def write_features(root: Path, rows: int, seed: int = 1) -> Path:
    """A cache folder of synthetic chunks (3-class, separable in layer 1) in codesign's format."""
    from toolchain.features.cache import FeatureCache

    cache = FeatureCache(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.08, (3, DIM)).astype(np.float32)  # overlapping classes
    labels = rng.integers(0, 3, rows)
    for i, a in enumerate(range(0, rows, CHUNK)):
        y = labels[a : a + CHUNK]
        x = rng.standard_normal((LAYERS, len(y), DIM), dtype=np.float32) * 2.0
        x[1] += centres[y]
        cache.write_chunk("train", i, {"mean": x, "lengths": np.full(len(y), 12, dtype=np.int64)})
    np.save(root / "labels.npy", labels)
    return root


FIT_CHILD = """
import json, sys, time, resource
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[3])
import torch
torch.set_num_threads(2)
from toolchain.features.mapped import ChunkMaps, MappedLayer, read_header
from toolchain.heads.combine import Standardizer
from toolchain.heads.stream import Moments
from toolchain.heads.elm import ClosedFormSLFN
from toolchain.heads.ridge import RidgeClassifier
root, limit = Path(sys.argv[1]), int(sys.argv[2])
y = np.load(root / "labels.npy")[:limit] if limit else np.load(root / "labels.npy")
paths = sorted(root.glob("train-*.safetensors"))
spans = [(p, read_header(p, "rebuild")["mean"]) for p in paths]
n_chunks = -(-len(y) // 8192)
layer = MappedLayer(ChunkMaps(), spans[:n_chunks], 1)

class Rows:
    def __init__(self, layer, std, y):
        self.layer, self.std, self.y, self.dim = layer, std, y, layer.dim
    def __len__(self):
        return len(self.y)
    def __iter__(self):
        for (a, b), blk in zip(self.layer.block_bounds(), self.layer.blocks()):
            yield self.std(blk), self.y[a:b]
    def take(self, rows):
        return self.std(self.layer.take(rows))

out = {"rows": len(y), "feature_bytes_this_layer": layer.nbytes}
t = time.perf_counter()
m = Moments()
for blk in layer.blocks():
    m.update(blk)
std = Standardizer.from_moments(m)
out["moments_s"] = time.perf_counter() - t
rows = Rows(layer, std, y)
res = {}
for name, head in (("ridge", RidgeClassifier(3)), ("elm-512", ClosedFormSLFN(512, seed=0))):
    t = time.perf_counter()
    head.fit_stream(rows, 3)
    fit_s = time.perf_counter() - t
    correct = sum(int((head.predict(x) == yy).sum()) for x, yy in rows)
    res[name] = {"fit_s": fit_s, "train_acc": correct / len(y)}
    np.save(root / f"weights-{name}-{limit}.npy", np.concatenate([l.weight.ravel() for l in head.layers] + [l.bias for l in head.layers]))
out["heads"] = res
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM"):
        out["peak_rss_mib"] = int(line.split()[1]) / 1024
print(json.dumps(out))
"""


def fit_child(root: Path, limit: int) -> dict:
    out = subprocess.run([sys.executable, "-c", FIT_CHILD, str(root), str(limit), str(ROOT)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"fit failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_memory_check(root: Path, rows: int) -> dict:
    """The in-memory fit of the first ``rows`` rows vs the streamed one saved by fit_child."""
    from toolchain.features.mapped import ChunkMaps, MappedLayer, read_header
    from toolchain.heads.combine import Standardizer
    from toolchain.heads.elm import ClosedFormSLFN
    from toolchain.heads.ridge import RidgeClassifier

    y = np.load(root / "labels.npy")[:rows]
    paths = sorted(root.glob("train-*.safetensors"))[: -(-rows // CHUNK)]
    x = np.asarray(MappedLayer(ChunkMaps(), [(p, read_header(p, "rebuild")["mean"]) for p in paths], 1))
    x = Standardizer.fit(x)(x)
    out = {}
    for name, head in (("ridge", RidgeClassifier(3)), ("elm-512", ClosedFormSLFN(512, seed=0))):
        head.fit(x, y, 3)
        w = np.concatenate([la.weight.ravel() for la in head.layers] + [la.bias for la in head.layers])
        streamed = np.load(root / f"weights-{name}-{rows}.npy")
        out[name] = {"max_abs_weight_diff": float(np.abs(w - streamed).max())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-texts", type=int, default=1_048_576)
    ap.add_argument("--extract-texts", type=int, default=4096)
    ap.add_argument("--fit-rows", type=int, default=1_048_576)
    ap.add_argument("--check-rows", type=int, default=65_536)
    ap.add_argument("--cap-mib", type=int, default=1024)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--skip", default="", help="comma list of corpus,extract,fit")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    result = {"benchmark": "scale_bench", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="scale-bench-", dir=os.environ.get("SCALE_BENCH_TMP")) as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        corpus = write_corpus(work / "corpus", args.corpus_texts, Path(args.data))
        result["corpus"] = {"texts": args.corpus_texts, "generate_s": time.perf_counter() - t}
        if "corpus" not in skip:
            result["corpus"]["streaming_read"] = read_corpus_child(corpus)
        if "extract" not in skip:
            spec = split_files(corpus, work / "subset", args.extract_texts)
            result["extraction"] = extract_runs(spec, work, args.extract_texts)
            print(json.dumps(result["extraction"], indent=1), flush=True)
        if "fit" not in skip:
            t = time.perf_counter()
            root = write_features(work / "features", args.fit_rows)
            feat_bytes = sum(p.stat().st_size for p in root.glob("*.safetensors"))
            fit = {"write_s": time.perf_counter() - t, "cache_bytes": feat_bytes, "cap_mib": args.cap_mib}
            fit["streamed"] = fit_child(root, 0)
            fit["streamed"]["under_cap"] = fit["streamed"]["peak_rss_mib"] < args.cap_mib
            fit["features_over_cap"] = fit["streamed"]["feature_bytes_this_layer"] / 2**20 > args.cap_mib
            fit_child(root, args.check_rows)  # the same streamed fit on the check rows
            fit["exactness_on_first_rows"] = {"rows": args.check_rows, **in_memory_check(root, args.check_rows)}
            result["head_fit"] = fit
    result["machine"]["load_average_end"] = os.getloadavg()
    result["peak_rss_this_process_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(args.out) if args.out else HERE / "results" / (
        f"{datetime.now(timezone.utc):%Y-%m-%d}-{socket.gethostname()}-scale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
