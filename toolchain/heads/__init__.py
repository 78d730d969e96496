"""Light heads trained on cached features."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Head
from .elm import ClosedFormSLFN
from .mlp import SmallMLP
from .softmax import SoftmaxRegression

HEADS: dict[str, type[Head]] = {
    SoftmaxRegression.name: SoftmaxRegression,
    ClosedFormSLFN.name: ClosedFormSLFN,
    SmallMLP.name: SmallMLP,
}


def make_head(name: str, size: int, seed: int = 0) -> Head:
    try:
        return HEADS[name](size, seed)
    except KeyError:
        raise ConfigError(f"unknown head '{name}'; heads: {', '.join(HEADS)}") from None
