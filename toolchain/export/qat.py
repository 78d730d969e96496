"""Quantization-aware head refit: the head learns the int8 backbone's feature distribution.

The backbone is frozen and the heads are cheap, so after quantizing the backbone the candidate's
training and validation features are extracted *through the int8 artefact itself* and the
standardiser and head are fitted again on them: the same head kind, size and seed as the search
used. Only the head's weights change: the backbone nodes of the int8 graph stay byte-identical
(the backbone recipes keep the head's MatMuls fp32, quantize.py), and the refitted weights
replace the head's initializers.

Which features: the tensor that enters the head's first MatMul, i.e. the search's combined
vector standardised with the fp32 train statistics (the graph's ``features`` output where it has
one). The refit fits a second standardiser on those int8 features and folds it into the first
head layer (``W' = W / s``, ``b' = b − (m / s) W``): a per-dimension affine map after the fp32
one is again a per-dimension affine map, so for ``single`` and ``concat`` this is exactly a
standardiser refitted on the raw pooled int8 features. For ``mean`` / ``scalarmix`` the
per-layer parts are no longer separable after combining; the refit then standardises the
combined vector (a per-dimension rescale of the mix). Folding it keeps the graph's structure
(and the bundle's, and the board runner's) unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..heads import make_head
from ..heads.base import accuracy
from ..heads.combine import Standardizer
from ..heads.dense import DenseLayer

# Rows of train the refit extracts at most (stratified, seeded): SST-2's 60,614 phrases through
# the int8 backbone would take minutes per candidate; the search itself screens on samples.
REFIT_MAX_TRAIN = 20_000


def features_tensor(model) -> str:
    """Name of the tensor feeding the head: the non-constant input of the first head MatMul (an
    ONNX graph lists its nodes in topological order, so the first one is the head's first layer)."""
    heads = head_nodes_of(model)
    if not heads:
        raise ValueError("no head MatMul (a MatMul on a head_w.* weight) in the graph")
    inits = {i.name for i in model.graph.initializer}
    first = next(n for n in model.graph.node if n.name == heads[0])
    return next(i for i in first.input if i not in inits)


def head_nodes_of(model) -> list[str]:
    heads = {init.name for init in model.graph.initializer if "head_w" in init.name}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and any(i in heads for i in n.input)]


def extract_features(model_path: Path, tokenizer, texts, batch: int = 32) -> np.ndarray:
    """The head's input for every text, computed by the artefact at ``model_path`` (ONNX Runtime,
    length-bucketed batches; padding is masked out)."""
    import onnx
    import onnxruntime as ort

    from .text_inputs import encode, pack

    model = onnx.load(str(model_path))
    name = features_tensor(model)
    if name not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ids = encode(tokenizer, texts)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = None
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        input_ids, mask, _ = pack([ids[i] for i in idx])
        feats = session.run([name], {"input_ids": input_ids, "attention_mask": mask})[0]
        if out is None:
            out = np.empty((len(ids), feats.shape[1]), dtype=np.float32)
        out[idx] = feats
    return out


def refit_rows(labels: np.ndarray, seed: int, limit: int = REFIT_MAX_TRAIN) -> np.ndarray:
    """Indices of the train rows the refit uses: all of them, or a seeded stratified sample."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = max(1, round(limit * len(rows) / len(labels)))
        picks.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(picks))


def refit_head(head: str, size: int, seed: int, x_train: np.ndarray, y_train: np.ndarray,
               n_classes: int) -> list[DenseLayer]:
    """Standardiser + head of this kind fitted on int8 features; the standardiser folded into the
    first layer, so the result takes the same input as the head it replaces."""
    std = Standardizer.fit(x_train)
    fitted = make_head(head, size, seed).fit(std(x_train), y_train, n_classes)
    first = fitted.layers[0]
    # first(std(x)) = (x - m) / s @ W.T + b = x @ (W / s).T + (b - (m / s) @ W.T)
    w = (first.weight / std.std[None, :]).astype(np.float32)
    b = (first.bias - (std.mean / std.std) @ first.weight.T).astype(np.float32)
    return [DenseLayer(w, b, first.activation), *fitted.layers[1:]]


def head_accuracy(layers: list[DenseLayer], x: np.ndarray, y: np.ndarray) -> float:
    from ..heads.dense import run_dense

    return accuracy(run_dense(layers, x).argmax(1), y)


def write_refit(int8_path: Path, out_path: Path, layers: list[DenseLayer]) -> None:
    """Copy of the int8 graph with the head's weights replaced; every other node and initializer
    is left as it is (the caller checks that the backbone is unchanged)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_path))
    inits = {i.name: i for i in model.graph.initializer}
    weights = sorted((n for n in inits if n.startswith("head_w.")), key=lambda n: int(n.rsplit(".", 1)[1]))
    biases = sorted((n for n in inits if n.startswith("head_b.")), key=lambda n: int(n.rsplit(".", 1)[1]))
    if len(weights) != len(layers) or len(biases) != len(layers):
        raise ValueError(f"the graph has {len(weights)} head weights and {len(biases)} biases for a "
                         f"{len(layers)}-layer head; it was not exported with plain head_w/head_b initializers")
    for layer, wn, bn in zip(layers, weights, biases, strict=True):
        w = np.ascontiguousarray(layer.weight.T, dtype=np.float32)  # MatMul(x, w): [in, out]
        if tuple(numpy_helper.to_array(inits[wn]).shape) != w.shape:
            raise ValueError(f"refitted head weight {wn} has shape {w.shape}, the graph's has "
                             f"{tuple(numpy_helper.to_array(inits[wn]).shape)}")
        inits[wn].CopyFrom(numpy_helper.from_array(w, wn))
        inits[bn].CopyFrom(numpy_helper.from_array(np.asarray(layer.bias, np.float32), bn))
    onnx.save(model, str(out_path))


def backbone_digest(model_path: Path) -> str:
    """sha256 over every node and every initializer except the head's: equal before and after a
    refit means the backbone part is identical."""
    import hashlib

    import onnx

    model = onnx.load(str(model_path))
    h = hashlib.sha256()
    for node in model.graph.node:
        h.update(node.SerializeToString())
    for init in sorted(model.graph.initializer, key=lambda i: i.name):
        if not init.name.startswith(("head_w.", "head_b.")):
            h.update(init.SerializeToString())
    return h.hexdigest()
