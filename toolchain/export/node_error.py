"""Per-node int8 error measured on calibration data, to choose which nodes stay fp32.

The fp32 graph is run once on the calibration inputs with every quantizable node's activation
input exposed as an extra output. Each node's int8 arithmetic is then replayed on those real
activations in numpy, the way ONNX Runtime's dynamic recipe does it (activations per-tensor
asymmetric uint8, computed per call; MatMul weights int8 per output channel with the 7-bit range
of ``reduce_range``; Gather tables as an activation: uint8 per-tensor asymmetric), and compared with the fp32 result:

    error = ||int8 output − fp32 output|| / ||fp32 output||   (Frobenius, pooled over inputs)

It is each node's own error on fp32 inputs (local), not the error it reaches the output with:
errors compound downstream, and a node early in the graph may matter more than its share. The
guard then measures the artefact's accuracy as a whole, which is what decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# reduce_range: weights use 7 bits (see quantize.py for why).
_W_QMAX = 63.0


@dataclass(frozen=True)
class NodeError:
    name: str
    op_type: str
    rel_error: float

    def to_dict(self) -> dict:
        return {"name": self.name, "op_type": self.op_type, "rel_error": self.rel_error}


def _quant_activation(x: np.ndarray) -> np.ndarray:
    """Per-tensor asymmetric uint8 (DynamicQuantizeLinear), dequantized."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.round(-lo / scale)
    q = np.clip(np.round(x / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


def _quant_weight(w: np.ndarray, axis: int | None) -> np.ndarray:
    """Symmetric int8 at 7-bit range, per channel along ``axis`` (None: per tensor), dequantized."""
    peak = np.abs(w).max() if axis is None else np.abs(w).max(axis=axis, keepdims=True)
    scale = np.where(peak > 0, peak / _W_QMAX, 1.0)
    return (np.clip(np.round(w / scale), -_W_QMAX - 1, _W_QMAX) * scale).astype(np.float32)


def quantizable_nodes(model) -> list[tuple[object, np.ndarray, str]]:
    """(node, constant weight, activation input name) for MatMuls with a 2-D initializer weight and
    Gathers on an initializer table: the nodes the dynamic recipe turns into integer ops."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            if w.ndim == 2:
                out.append((node, w.astype(np.float32), node.input[0]))
        elif node.op_type == "Gather" and node.input[0] in inits:
            w = numpy_helper.to_array(inits[node.input[0]])
            if w.ndim == 2 and w.dtype == np.float32:
                out.append((node, w, node.input[1]))
    return out


def measure_node_errors(fp32_path: Path, samples: Sequence[tuple[np.ndarray, np.ndarray]],
                        skip: Sequence[str] = ()) -> list[NodeError]:
    """Every quantizable node's own int8 error on ``samples`` (input_ids, attention_mask) pairs,
    worst first. Nodes named in ``skip`` (the head, kept fp32 anyway) are left out."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32_path))
    nodes = [n for n in quantizable_nodes(model) if n[0].name not in set(skip)]
    exposed = sorted({act for _, _, act in nodes})
    known = {o.name for o in model.graph.output}
    for name in exposed:
        if name not in known:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    # The activations wanted are the graph's own tensors: no fusion may rename or remove them.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    err2 = np.zeros(len(nodes))
    ref2 = np.zeros(len(nodes))
    for ids, mask in samples:
        values = dict(zip(exposed, session.run(exposed, {"input_ids": ids, "attention_mask": mask}), strict=True))
        for k, (node, w, act) in enumerate(nodes):
            x = values[act]
            if node.op_type == "MatMul":
                y = x @ w
                yq = _quant_activation(x) @ _quant_weight(w, axis=0)
            else:  # Gather: the rows these inputs look up
                rows = np.asarray(x, np.int64).reshape(-1)
                y = w[rows]
                yq = _quant_activation(w)[rows]
            err2[k] += float(np.sum((yq - y) ** 2))
            ref2[k] += float(np.sum(y ** 2))
    errors = [NodeError(n.name, n.op_type, float(np.sqrt(e / r)) if r > 0 else 0.0)
              for (n, _, _), e, r in zip(nodes, err2, ref2, strict=True)]
    return sorted(errors, key=lambda e: (-e.rel_error, e.name))
