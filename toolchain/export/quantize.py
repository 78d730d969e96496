"""int8 recipes with ONNX Runtime, tried in order until accuracy holds.

Weights use 7-bit range (reduce_range): x86 CPUs without VNNI compute u8×s8 with a saturating
16-bit intermediate (VPMADDUBSW), which clips full-range weights; seen here, the same model's
int8 outputs then differed from an aarch64 board's by 0.19 in probability, and by 3e-4 with
reduce_range.

Known failure: per-tensor dynamic int8 wrecks small BERTs (onnxruntime #11286, #9599). Seen
here on MiniLM-L6: per-tensor kept a mean cosine of 0.957 to fp32, per-channel 0.9915. So the
guard falls back: per-channel → also skip the embedding and attention-output nodes → static
calibration on training text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RECIPES = {
    "int8-dynamic": ("dynamic-per-tensor", "dynamic-per-channel", "dynamic-per-channel-skip-sensitive",
                     "static-qdq-per-channel"),
    "int8-static": ("static-qdq-per-channel", "dynamic-per-channel-skip-sensitive"),
    "int8-head": ("head-dynamic-per-channel",),
}


def _node_names(model_path: Path) -> list[tuple[str, str]]:
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return [(n.op_type, n.name) for n in model.graph.node]


def sensitive_nodes(model_path: Path) -> list[str]:
    """Embedding lookups and attention-output projections: the usual int8 casualties."""
    return [name for op, name in _node_names(model_path)
            if (op == "Gather" and "embeddings" in name) or ("attention/output/dense" in name)]


def head_nodes(model_path: Path) -> list[str]:
    # The head is exported as MatMul + Add after the pooling; its MatMuls read head_w.* weights.
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    heads = {init.name for init in model.graph.initializer if "head_w" in init.name}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(i in heads for i in n.input)]


class _Calibration:
    """ONNX Runtime CalibrationDataReader over real training inputs (batch 1, real lengths)."""

    def __init__(self, samples: list[tuple[np.ndarray, np.ndarray]]):
        self._it = iter(samples)

    def get_next(self):
        nxt = next(self._it, None)
        if nxt is None:
            return None
        return {"input_ids": nxt[0], "attention_mask": nxt[1]}

    def rewind(self):  # pragma: no cover - interface completeness
        pass


def apply_recipe(recipe: str, fp32: Path, out: Path,
                 calibration: Callable[[], list[tuple[np.ndarray, np.ndarray]]]) -> Path:

    out.parent.mkdir(parents=True, exist_ok=True)
    # onnxruntime.quantization logs advice on the root logger at WARNING for every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _apply(recipe, fp32, out, calibration)
    finally:
        root.setLevel(level)


def _apply(recipe, fp32, out, calibration):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if recipe == "dynamic-per-tensor":
        quantize_dynamic(fp32, out, per_channel=False, weight_type=QuantType.QInt8, reduce_range=True)
    elif recipe == "dynamic-per-channel":
        quantize_dynamic(fp32, out, per_channel=True, weight_type=QuantType.QInt8, reduce_range=True)
    elif recipe == "dynamic-per-channel-skip-sensitive":
        quantize_dynamic(fp32, out, per_channel=True, weight_type=QuantType.QInt8, reduce_range=True,
                         nodes_to_exclude=sensitive_nodes(fp32))
    elif recipe == "head-dynamic-per-channel":
        quantize_dynamic(fp32, out, per_channel=True, weight_type=QuantType.QInt8, reduce_range=True,
                         nodes_to_quantize=head_nodes(fp32))
    elif recipe == "static-qdq-per-channel":
        quantize_static(fp32, out, _Calibration(calibration()), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"], nodes_to_exclude=sensitive_nodes(fp32))
    else:
        raise ValueError(f"unknown quantization recipe {recipe!r}")
    return out
