"""Model registry: architectures written from scratch in PyTorch."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from privdyn.errors import PrivdynError
from privdyn.models.cnn import cnn
from privdyn.models.mlp import mlp

MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn}


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Build an untrained model; ``kwargs`` are the ModelConfig fields (width, depth, norm, dropout)."""
    if arch not in MODELS:
        raise PrivdynError(f"Unknown model.arch {arch!r}; available: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[arch](input_shape, num_classes, **kwargs)
    except ValueError as err:
        raise PrivdynError(f"model.arch={arch}: {err}") from None


__all__ = ["MODELS", "build_model"]
