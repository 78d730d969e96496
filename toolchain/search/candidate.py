"""Candidate: an immutable choice of backbone, depth, layer set, combination, pooling, head,
precision, max length and vocabulary. Its id is a short hash of its canonical JSON.

``vocab`` (``full`` or ``pruned``: the embedding table cut to the tokens the training split
uses, see toolchain/export/vocab.py) was added after runs existed: its default is left out of
the canonical JSON, so every full-vocabulary candidate keeps the id it always had."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from ..heads.combine import COMBINES

PRECISIONS = ("fp32", "int8-dynamic", "int8-static", "int8-head")
VOCABS = ("full", "pruned")


@dataclass(frozen=True, order=True)
class Candidate:
    backbone: str
    layers: tuple[int, ...]
    combine: str
    pooling: str
    head: str
    head_size: int
    precision: str = "fp32"
    max_length: int = 64
    vocab: str = "full"
    depth: int = field(default=-1)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a candidate needs at least one layer")
        layers = tuple(sorted(set(int(x) for x in self.layers)))
        object.__setattr__(self, "layers", layers)
        # Truncation depth is the deepest layer used: everything above it is cut off.
        object.__setattr__(self, "depth", layers[-1])
        if self.combine not in COMBINES:
            raise ValueError(f"unknown combination {self.combine!r}")
        if self.combine == "single" and len(layers) != 1:
            raise ValueError("combine='single' takes exactly one layer")
        if self.combine != "single" and len(layers) < 2:
            raise ValueError(f"combine={self.combine!r} needs two or more layers")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.vocab not in VOCABS:
            raise ValueError(f"unknown vocab {self.vocab!r}; use one of {', '.join(VOCABS)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        if self.vocab == "full":
            del d["vocab"]  # the default stays out of the JSON: ids of older candidates unchanged
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "depth"}
        d["layers"] = tuple(d["layers"])
        return cls(**d)

    @property
    def id(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def feature_key(self) -> tuple:
        """What determines the combined input features (shared across heads)."""
        return (self.backbone, self.max_length, self.pooling, self.layers, self.combine)

    def describe(self) -> str:
        layers = ",".join(map(str, self.layers))
        return f"{self.backbone} L[{layers}] {self.combine}/{self.pooling} {self.head}-{self.head_size} {self.precision}" + (
            " pruned-vocab" if self.vocab == "pruned" else "")
