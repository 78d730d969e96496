"""Depth-0 whole model for the MCU (issue 15, item 2): accuracy of the integer model against fp32.

    .venv/bin/python benchmarks/mcu_depth0_bench.py [--dataset trec] [--max-len 128] [--json OUT]

The vocabulary is pruned on the training split; fp32 depth-0 features (hidden state 0 of the
packaged MiniLM, mean-pooled) of every training text fit a softmax head (full-batch gradient
descent, L2 1e-3, 600 steps: a cheap stand-in for the search's MLP head), which is quantised as
every MCU head is. On the whole test split: the fp32 head on fp32 features, the int8 head on
quantised fp32 features, and the whole integer model (toolchain/mcu/depth0.py, bit-exact with the
firmware: tests/mcu/test_mcu_depth0.py) from token ids. Also the exact bytes of the tables and the
CSD0 blob, against the model slots of the posix/mps2 (1 MiB) and stm32f4 (40 KiB) images.
With --qemu N: the CSD0 blob is baked into the mps2-whole image (used where it lies in flash),
the first N test texts go as raw text over the emulated UART (tload/tdata/tinfer), and the record
holds the bit-exact count against the Python reference, the accuracy on those texts, and QEMU
-icount instructions per inference and per token (deterministic).
Writes benchmarks/results/<date>-<hostname>-mcu-depth0.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from extraction_bench import load_average, machine_info, result_path  # noqa: E402
from vocab_bench import isa  # noqa: E402

SLOTS = {"posix": 1 << 20, "mcu-qemu (mps2)": 1 << 20, "stm32f4-disco": 40 * 1024}
# Flash of the linker scripts (ports/*/ *.ld): a baked whole model is used where it lies.
FLASH = {"mcu-qemu (mps2)": 4 << 20, "stm32f4-disco": 1 << 20}


def fit_softmax(x: np.ndarray, y: np.ndarray, steps: int = 600):
    n_cls = int(y.max()) + 1
    w, b, onehot = np.zeros((n_cls, x.shape[1])), np.zeros(n_cls), np.eye(n_cls)[y]
    for _ in range(steps):
        z = x @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * ((p - onehot).T @ x / len(x) + 1e-3 * w)
        b -= 0.5 * (p - onehot).mean(0)
    return w, b


def run_qemu(blob: bytes, texts, ids, labels, tables, head) -> dict:
    import subprocess
    import tempfile
    import time

    from toolchain.boards.mcu_emulation import qemu_mps2
    from toolchain.boards.serial_link import SerialLink
    from toolchain.boards.text_link import classify_text
    from toolchain.mcu.depth0 import classify_int8
    from toolchain.mcu.depth0_blob import whole_c_header

    with tempfile.TemporaryDirectory() as tmp:
        header = Path(tmp) / "whole.h"
        header.write_text(whole_c_header(blob))
        t0 = time.perf_counter()
        subprocess.run(["make", "-C", str(HERE.parent / "firmware_stubs"), f"OUT={tmp}/fw", "mps2-whole",
                        f"BAKED={header}"], check=True, capture_output=True)
        build_s = time.perf_counter() - t0
        image = Path(tmp) / "fw" / "mps2-whole" / "codesign-fw.elf"
        size = subprocess.run(["arm-none-eabi-size", str(image)], capture_output=True, text=True,
                              check=True).stdout.splitlines()[1].split()
        with qemu_mps2(image) as url, SerialLink(url, timeout_s=20.0) as link:
            link.handshake()
            results = [classify_text(link, t) for t in texts]
    exact = sum(int(np.array_equal(r.output, classify_int8(tables, head, i)) and r.tokens == len(i))
                for r, i in zip(results, ids, strict=True))
    counts = np.array([r.icount for r in results])
    tokens = np.array([r.tokens for r in results])
    return {"n": len(texts), "bit_exact": exact,
            "accuracy": float(np.mean([r.argmax == y for r, y in zip(results, labels, strict=True)])),
            "instructions_per_inference": {"mean": float(counts.mean()), "min": int(counts.min()),
                                           "max": int(counts.max())},
            "instructions_per_token": float(counts.sum() / tokens.sum()),
            "image_text_data_bss": [int(v) for v in size[:3]], "build_s": build_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="trec")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--qemu", type=int, default=0, help="test texts to classify on QEMU mps2-whole")
    args = ap.parse_args(argv)

    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import preset_spec
    from toolchain.export.vocab import prune_for_texts, remap_tokenizer_json
    from toolchain.features.backbone import packaged_model_dir
    from toolchain.heads.dense import DenseLayer
    from toolchain.mcu.budget import WHOLE_FIRMWARE_FLASH_BYTES
    from toolchain.mcu.depth0 import classify_int8, float_features, load_embeddings, quantize_depth0
    from toolchain.mcu.depth0_blob import whole_blob_size
    from toolchain.mcu.quantize import quantize_head
    from toolchain.mcu.reference import run_int8
    from toolchain.mcu.vocab_table import table_from_tokenizer_json
    from toolchain.mcu.wordpiece_host import reference_tokenizer

    started = datetime.now(timezone.utc).isoformat()
    load0 = load_average()
    model_dir = packaged_model_dir()
    ds = load_dataset(preset_spec(args.dataset))
    pruning = prune_for_texts(model_dir / "tokenizer.json", ds.train.texts)
    doc = remap_tokenizer_json(json.loads((model_dir / "tokenizer.json").read_text("utf-8")), pruning)
    tok = reference_tokenizer(doc, args.max_len)
    emb = load_embeddings(model_dir, pruning.kept)
    train_ids = [e.ids for e in tok.encode_batch(list(ds.train.texts))]
    test_ids = [e.ids for e in tok.encode_batch(list(ds.test.texts))]
    f_train = np.stack([float_features(emb, i) for i in train_ids])
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    z_train = (f_train - mean) / std
    z_test = (np.stack([float_features(emb, i) for i in test_ids]) - mean) / std
    y, y_test = np.asarray(ds.train.labels), np.asarray(ds.test.labels)
    w, b = fit_softmax(z_train, y)
    head = quantize_head([DenseLayer(w.astype(np.float32), b.astype(np.float32))], z_train)
    tables = quantize_depth0(emb, args.max_len, mean, std, head.input_scale, head.input_zero_point)
    acc_fp32 = float(((z_test @ w.T + b).argmax(1) == y_test).mean())
    acc_head = float((run_int8(head, head.quantize_input(z_test)).argmax(1) == y_test).mean())
    acc_whole = float(np.mean([classify_int8(tables, head, i).argmax() == t
                               for i, t in zip(test_ids, y_test, strict=True)]))
    vocab_bytes = len(table_from_tokenizer_json(doc))
    blob = whole_blob_size(vocab_bytes, tables, head)
    record = {
        "benchmark": "mcu-depth0", "started_utc": started, "dataset": args.dataset,
        "max_len": args.max_len, "n_train": len(y), "n_test": len(y_test),
        "kept_rows": pruning.n_kept, "head": "softmax (GD stand-in, not the search's MLP)",
        "accuracy": {"fp32": acc_fp32, "int8_head_fp32_features": acc_head, "int8_whole": acc_whole,
                     "whole_minus_fp32_points": 100 * (acc_whole - acc_fp32)},
        "bytes": {"word_rows": int(tables.word.size), "position_rows": int(tables.position.size),
                  "gain_offset": 8 * tables.dim, "vocab_table": vocab_bytes,
                  "head_weights": head.weight_bytes, "csd0_blob": blob,
                  "scratch_ram": tables.scratch_bytes},
        "fits_model_slot": {k: blob <= v for k, v in SLOTS.items()},
        "fits_flash_baked": {
            k: (blob + WHOLE_FIRMWARE_FLASH_BYTES <= v) or
               f"infeasible: blob {blob} B + firmware {WHOLE_FIRMWARE_FLASH_BYTES} B > flash {v} B"
            for k, v in FLASH.items()},
        "machine": {**machine_info(), "isa": isa()}, "load_average_start": load0,
        "load_average_end": load_average(),
    }
    if args.qemu:
        from toolchain.mcu.depth0_blob import to_whole_blob

        blob_bytes = to_whole_blob(table_from_tokenizer_json(doc), tables, head)
        record["qemu"] = run_qemu(blob_bytes, list(ds.test.texts[: args.qemu]), test_ids[: args.qemu],
                                  y_test[: args.qemu], tables, head)
        print(json.dumps(record["qemu"]))
    out = args.json or result_path("mcu-depth0")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["accuracy"]), json.dumps(record["bytes"]), json.dumps(record["fits_model_slot"]),
          json.dumps(record["fits_flash_baked"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
