"""Convert a saved torch.export program to TFLite. Runs INSIDE the litert-torch converter env.

This script is self-contained on purpose: the converter environment holds torch (the same build
as codesign's), litert-torch and ai-edge-quantizer, but not codesign. codesign builds the
candidate graph itself, exports it with ``torch.export`` at a fixed [1, max_length] shape and
saves it as a ``.pt2`` file; this worker only loads that program, converts it with litert-torch
and, when asked, applies dynamic-range int8 weight quantization with ai-edge-quantizer.

Usage (see toolchain/export/tflite.py):

    python tflite_convert_worker.py --program m.pt2 --out model.tflite --max-length 64 \
        --quantize none|int8-dynamic --torch-version 2.13.0+cpu --meta meta.json

Exit codes: 0 converted; 2 bad arguments or version mismatch; 3 conversion failed.
Errors go to stderr as one line starting with ``codesign-worker-error:``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "probs"
QUANTIZE_CHOICES = ("none", "int8-dynamic")


def _fail(code: int, message: str) -> None:
    print(f"codesign-worker-error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _versions() -> dict:
    out = {}
    for dist in ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "litert-converter"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def convert(program: str, out: str, max_length: int, quantize: str) -> dict:
    import litert_torch
    import torch

    ep = torch.export.load(program)
    inner = ep.module()

    class Named(torch.nn.Module):
        """Named inputs and a named output, so the TFLite signature reads
        (input_ids, attention_mask) -> probs rather than args_0, args_1 -> output_0."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return {OUTPUT_NAME: self.inner(input_ids, attention_mask)}

    module = Named()
    module.training = False  # .eval() would recurse into the exported module, which refuses it
    sample = {
        "input_ids": torch.zeros((1, max_length), dtype=torch.int64),
        "attention_mask": torch.ones((1, max_length), dtype=torch.int64),
    }
    started = time.perf_counter()
    # enable_x64 keeps the int64 inputs of the ONNX graph's contract (otherwise they become int32).
    edge = litert_torch.convert(module, sample_kwargs=sample, enable_x64=True)
    float_path = out if quantize == "none" else out + ".float"
    edge.export(float_path)
    convert_s = time.perf_counter() - started
    info = {"convert_seconds": round(convert_s, 3), "quantize": quantize, "max_length": max_length}
    if quantize == "int8-dynamic":
        from ai_edge_quantizer import quantizer, recipe

        started = time.perf_counter()
        qt = quantizer.Quantizer(float_path, recipe.dynamic_wi8_afp32())
        qt.quantize().export_model(out, overwrite=True)
        info["quantize_seconds"] = round(time.perf_counter() - started, 3)
        info["quantization_recipe"] = "ai_edge_quantizer.recipe.dynamic_wi8_afp32 (per-channel int8 weights)"
        import os

        os.unlink(float_path)
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", required=True, help="torch.export program (.pt2)")
    parser.add_argument("--out", required=True, help="the .tflite file to write")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none")
    parser.add_argument("--torch-version", required=True, help="torch that saved the program")
    parser.add_argument("--meta", required=True, help="JSON file to write versions and timings to")
    args = parser.parse_args(argv)

    versions = _versions()
    if versions["torch"] != args.torch_version:
        _fail(2, f"converter env has torch {versions['torch']} but the program was saved with torch "
                 f"{args.torch_version}; rebuild the converter env (delete it and rerun)")
    if versions["litert-torch"] is None:
        _fail(2, "litert-torch is not installed in this environment; rebuild the converter env")
    try:
        info = convert(args.program, args.out, args.max_length, args.quantize)
    except Exception as exc:  # the converter raises many types; report them as one
        _fail(3, f"litert-torch conversion failed: {type(exc).__name__}: {exc}")
    info["versions"] = versions
    with open(args.meta, "w") as fh:
        json.dump(info, fh, indent=2)


if __name__ == "__main__":
    main()
