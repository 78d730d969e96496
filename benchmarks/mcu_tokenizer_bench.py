"""The firmware's C WordPiece tokenizer against the `tokenizers` library (issue 15, item 1).

    .venv/bin/python benchmarks/mcu_tokenizer_bench.py [--max-len 128] [--json OUT]

For trec, emotion and sst2: every text of the test split is tokenized by the C code
(firmware_stubs/src/wordpiece.c, built for the host and called through ctypes) and by the
packaged MiniLM's tokenizer.json in `tokenizers`, once over the full vocabulary and once over the
vocabulary pruned on that dataset's training split (toolchain/export/vocab.py: the remapped
tokenizer.json, so pieces outside the kept set become [UNK]); with --extra-splits also every
train and validation text over the full vocabulary. Agreement is the share of texts
with identical ids ([CLS] ... [SEP], truncated to --max-len); every difference is listed. Also
recorded: the packed table's exact bytes per vocabulary, and the tokenizer's Cortex-M4 object
size (arm-none-eabi-size) when arm-none-eabi-gcc is installed. The texts/s figures are host
timings of both tokenizers in this process (a ratio, not an MCU figure).
Writes benchmarks/results/<date>-<hostname>-mcu-tokenizer.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from extraction_bench import load_average, machine_info, result_path  # noqa: E402
from vocab_bench import isa  # noqa: E402

DATASETS = ("trec", "emotion", "sst2")
BAR = 0.995


def pruned_doc(doc: dict, tokenizer_json: Path, train_texts) -> tuple[dict, int]:
    from toolchain.export.vocab import prune_for_texts, remap_tokenizer_json

    pruning = prune_for_texts(tokenizer_json, train_texts)
    return remap_tokenizer_json(doc, pruning), pruning.n_kept


def qemu_counts(table: bytes, texts, tmp: Path, max_len: int) -> list[dict]:
    """Each text tokenized on the emulated Cortex-M4 (QEMU mps2-an386 -icount): ids and
    instructions per encode, deterministic."""
    import socket

    from toolchain.boards.mcu_emulation import qemu_mps2
    from toolchain.mcu.wordpiece_host import build_count_image, parse_count_output

    image = build_count_image(table, texts, tmp, max_len=max_len)
    with qemu_mps2(image) as url:
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=120) as sock:
            out = b""
            while not out.endswith(b"done\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                out += chunk
    return parse_count_output(out.decode("ascii"))


def texts_per_second(fn, texts) -> float:
    start = time.perf_counter()
    fn(texts)
    return len(texts) / max(time.perf_counter() - start, 1e-9)


def main(argv: list[str] | None = None) -> int:
    from toolchain.data.dataset import load_dataset
    from toolchain.data.presets import preset_spec
    from toolchain.features.backbone import packaged_model_dir
    from toolchain.mcu.vocab_table import table_from_tokenizer_json, table_layout
    from toolchain.mcu.wordpiece_host import (
        CTokenizer,
        build_library,
        compare,
        cortexm_size,
        cortexm_table_bytes,
        reference_tokenizer,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--extra-splits", action="store_true",
                    help="also compare every train and validation text (full vocabulary)")
    args = ap.parse_args(argv)
    tok_json = packaged_model_dir() / "tokenizer.json"
    full = json.loads(tok_json.read_text(encoding="utf-8"))
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mcu-tok-") as tmp:
        lib = build_library(Path(tmp))
        arm = cortexm_size(Path(tmp)) if shutil.which("arm-none-eabi-gcc") else None
        if arm is not None:  # the opt-in case/accent fold beyond Latin-1
            arm["wide_fold"] = cortexm_size(Path(tmp), defines=("CS_WP_WIDE_FOLD",))
        for name in DATASETS:
            ds = load_dataset(preset_spec(name))
            texts = list(ds.test.texts)
            pruned, n_kept = pruned_doc(full, tok_json, ds.train.texts)
            row = {"test_texts": len(texts), "kept_ids": n_kept}
            for vocab, doc in (("full", full), ("pruned", pruned)):
                table = table_from_tokenizer_json(doc)
                ctok, ref = CTokenizer(lib, table), reference_tokenizer(doc, args.max_len)
                result = compare(ctok, ref, texts, args.max_len)
                c_rate = texts_per_second(lambda ts, c=ctok: [c.encode(t, args.max_len) for t in ts], texts)
                ref_rate = texts_per_second(lambda ts, r=ref: [r.encode(t) for t in ts], texts)
                if arm is not None:
                    arm.setdefault("table_rodata_bytes", {})[f"{name}-{vocab}"] = cortexm_table_bytes(
                        table, Path(tmp))
                row[vocab] = {**result, "meets_bar": result["agreement"] >= BAR,
                              "table": table_layout(table),
                              "host_texts_per_s": {"c_ctypes": c_rate, "tokenizers": ref_rate,
                                                   "c_vs_tokenizers": c_rate / ref_rate}}
                print(f"{name:8s} {vocab:6s} {result['identical']}/{result['texts']} identical "
                      f"({100 * result['agreement']:.2f} %), table {len(table):,} B", flush=True)
                for d in result["differences"][:20]:
                    print(f"    #{d['index']}: {d['text']!r}\n      c   {d['c_ids']}\n"
                          f"      ref {d['tokenizers_ids']}", flush=True)
            if args.extra_splits:  # the train split defines the pruning, so full vocabulary only
                ctok = CTokenizer(lib, table_from_tokenizer_json(full))
                ref = reference_tokenizer(full, args.max_len)
                for split in ("train", "validation"):
                    split_texts = list(getattr(ds, split).texts)
                    row[f"{split}_full"] = result = compare(ctok, ref, split_texts, args.max_len)
                    print(f"{name:8s} {split} full {result['identical']}/{result['texts']} identical", flush=True)
            if name == "trec" and arm is not None and shutil.which("qemu-system-arm"):
                table = table_from_tokenizer_json(pruned)
                counts = qemu_counts(table, texts, Path(tmp), args.max_len)
                want = [e.ids for e in reference_tokenizer(pruned, args.max_len).encode_batch(texts)]
                per_text = [c["instructions"] for c in counts]
                per_token = [c["instructions"] / max(len(c["ids"]) - 2, 1) for c in counts]
                row["cortexm4_qemu_pruned"] = {
                    "texts": len(counts), "ids_equal_tokenizers": sum(c["ids"] == w for c, w in zip(counts, want, strict=True)),
                    "instructions_per_text": {"mean": sum(per_text) / len(per_text), "max": max(per_text)},
                    "instructions_per_piece": {"mean": sum(per_token) / len(per_token), "max": max(per_token)},
                    "note": "QEMU -icount shift=0: 40 instructions per SysTick tick, 8 encodes per reading"}
                print(f"trec pruned on QEMU Cortex-M4: {row['cortexm4_qemu_pruned']}", flush=True)
            rows[name] = row
    out = {"benchmark": "mcu-tokenizer", "date": datetime.now(timezone.utc).isoformat(),
           "machine": {**machine_info(), "isa": isa()}, "load_average_start": load_average(),
           "max_len": args.max_len, "bar": BAR, "cortexm4_object": arm, "datasets": rows,
           "tokenizer_json": str(tok_json)}
    path = args.json or result_path("mcu-tokenizer")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0 if all(r[v]["meets_bar"] for r in rows.values() for v in ("full", "pruned")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
