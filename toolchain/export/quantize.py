"""int8 recipes with ONNX Runtime, tried in order until accuracy holds.

Weights use 7-bit range (reduce_range): x86 CPUs without VNNI compute u8×s8 with a saturating
16-bit intermediate (VPMADDUBSW), which clips full-range weights; seen here, the same model's
int8 outputs then differed from an aarch64 board's by 0.19 in probability, and by 3e-4 with
reduce_range.

Known failure: per-tensor dynamic int8 wrecks small BERTs (onnxruntime #11286, #9599). Seen
here on MiniLM-L6: per-tensor kept a mean cosine of 0.957 to fp32, per-channel 0.9915. So the
guard falls back: per-channel → also skip the embedding and attention-output nodes → static
calibration on training text.

Recipes chosen by measurement: ``dynamic-per-channel-keep-worst-K`` measures every node's own
int8 error on the calibration inputs (:mod:`toolchain.export.node_error`) and keeps the K worst
in fp32; ``static-qdq-percentile`` / ``static-qdq-entropy`` calibrate activation ranges on
training text with a 99.99th-percentile or an entropy (KL) criterion instead of min/max, which
an outlier activation stretches. Every backbone recipe keeps the head's MatMuls fp32
(``keep_fp32``): the head is tiny, and the quantization-aware refit (qat.py) replaces exactly
those weights. Each recipe reports the nodes it left fp32 (``fp32_nodes``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEEP_WORST = 4  # nodes a keep-worst recipe leaves fp32: "a few"; MiniLM-L6 has ~37 quantizable
RECIPES = {
    "int8-dynamic": ("dynamic-per-tensor", "dynamic-per-channel", f"dynamic-per-channel-keep-worst-{KEEP_WORST}",
                     "dynamic-per-channel-skip-sensitive", "static-qdq-percentile", "static-qdq-entropy",
                     "static-qdq-per-channel"),
    "int8-static": ("static-qdq-per-channel", "static-qdq-percentile", "static-qdq-entropy",
                    "dynamic-per-channel-skip-sensitive"),
    "int8-head": ("head-dynamic-per-channel",),
}
# Recipes that quantize the backbone (and keep the head fp32, so that it can be refitted).
BACKBONE_PRECISIONS = ("int8-dynamic", "int8-static")


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


def padded_to_common_length(samples: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batch-1 inputs padded (id 0, mask 0) to the longest one's length.

    ONNX Runtime's histogram calibrators (percentile, entropy) stack every sample's activations
    into one array, so real-length inputs of different lengths fail inside onnxruntime
    ("inhomogeneous shape"; seen on CI's rpi4 profile). MinMax reduces each sample on its own and
    keeps real lengths. The padded positions' activations enter the histograms too: a small bias
    towards [PAD] rows, accepted for these two recipes only.
    """
    if not samples:
        return samples
    n = max(ids.shape[1] for ids, _ in samples)
    out = []
    for ids, mask in samples:
        pad = n - ids.shape[1]
        out.append((np.pad(ids, ((0, 0), (0, pad))), np.pad(mask, ((0, 0), (0, pad)))))
    return out


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
                 calibration: Callable[[], list[tuple[np.ndarray, np.ndarray]]],
                 keep_fp32: Sequence[str] = ()) -> dict:
    """Write ``out`` quantized by ``recipe``, leaving the nodes ``keep_fp32`` in fp32; returns what
    it did: ``fp32_nodes`` (every quantizable node left fp32, by name) and, for a keep-worst
    recipe, the measured per-node errors it chose from."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # onnxruntime.quantization logs advice on the root logger at WARNING for every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _apply(recipe, fp32, out, calibration, list(keep_fp32))
    finally:
        root.setLevel(level)


def known_recipe(recipe: str) -> bool:
    """A recipe of some precision, or keep-worst with any K (``dynamic-per-channel-keep-worst-K``)."""
    return any(recipe in r for r in RECIPES.values()) or _keep_worst(recipe) is not None


def _keep_worst(recipe: str) -> int | None:
    prefix = "dynamic-per-channel-keep-worst-"
    return int(recipe[len(prefix):]) if recipe.startswith(prefix) and recipe[len(prefix):].isdigit() else None


def _apply(recipe, fp32, out, calibration, keep):
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    info: dict = {}
    dynamic = {"per_channel": True, "weight_type": QuantType.QInt8, "reduce_range": True}
    static_calib = {"static-qdq-per-channel": (CalibrationMethod.MinMax, {}),
                    "static-qdq-percentile": (CalibrationMethod.Percentile, {"CalibPercentile": 99.99}),
                    "static-qdq-entropy": (CalibrationMethod.Entropy, {})}
    worst = _keep_worst(recipe)
    if recipe == "dynamic-per-tensor":
        excluded = keep
        quantize_dynamic(fp32, out, **{**dynamic, "per_channel": False}, nodes_to_exclude=excluded)
    elif recipe == "dynamic-per-channel":
        excluded = keep
        quantize_dynamic(fp32, out, **dynamic, nodes_to_exclude=excluded)
    elif worst is not None:
        from .node_error import measure_node_errors

        errors = measure_node_errors(fp32, calibration(), skip=keep)
        excluded = keep + [e.name for e in errors[:worst]]
        info["node_errors"] = [e.to_dict() for e in errors]
        quantize_dynamic(fp32, out, **dynamic, nodes_to_exclude=excluded)
    elif recipe == "dynamic-per-channel-skip-sensitive":
        excluded = keep + sensitive_nodes(fp32)
        quantize_dynamic(fp32, out, **dynamic, nodes_to_exclude=excluded)
    elif recipe == "head-dynamic-per-channel":
        excluded = []
        quantize_dynamic(fp32, out, **dynamic, nodes_to_quantize=head_nodes(fp32))
    elif recipe in static_calib:
        method, extra = static_calib[recipe]
        # MatMuls only (the Gather of a static recipe would need its own calibration): the
        # embedding lookups stay fp32, and so do the sensitive attention outputs.
        excluded = keep + sensitive_nodes(fp32)
        samples = calibration()
        if method != CalibrationMethod.MinMax:
            samples = padded_to_common_length(samples)
        quantize_static(fp32, out, _Calibration(samples), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul"], nodes_to_exclude=excluded, calibrate_method=method,
                        extra_options=extra)
    else:
        raise ValueError(f"unknown quantization recipe {recipe!r}")
    info["fp32_nodes"] = fp32_nodes(fp32, out, recipe, excluded)
    info["n_quantizable"] = _n_quantizable(fp32)
    return info


def _n_quantizable(fp32: Path) -> int:
    import onnx

    from .node_error import quantizable_nodes

    return len(quantizable_nodes(onnx.load(str(fp32), load_external_data=False)))


def fp32_nodes(fp32: Path, out: Path, recipe: str, excluded: Sequence[str]) -> list[str]:
    """The quantizable nodes (MatMul with a constant weight, Gather on a table) the recipe left
    fp32: excluded by name, or outside the op types it quantizes."""
    import onnx

    from .node_error import quantizable_nodes

    names = [n.name for n, _, _ in quantizable_nodes(onnx.load(str(fp32), load_external_data=False))]
    if recipe == "head-dynamic-per-channel":
        heads = set(head_nodes(fp32))
        return [n for n in names if n not in heads]
    if recipe.startswith("static-qdq"):
        ops = {n.name: n.op_type for n in onnx.load(str(fp32), load_external_data=False).graph.node}
        return [n for n in names if n in set(excluded) or ops[n] != "MatMul"]
    return [n for n in names if n in set(excluded)]
