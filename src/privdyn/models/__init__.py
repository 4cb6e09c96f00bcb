"""Model registry: architectures written from scratch in PyTorch."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from privdyn.errors import PrivdynError
from privdyn.models.cnn import cnn
from privdyn.models.mlp import mlp
from privdyn.models.resnet import resnet18
from privdyn.models.wrn import wrn

MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn, "resnet18": resnet18, "wrn": wrn}


def build_model(arch: str, input_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Build an untrained model; ``kwargs`` are the ModelConfig fields (width, depth, norm, dropout).

    A keyword set to None takes the architecture's own default.
    """
    if arch not in MODELS:
        raise PrivdynError(f"Unknown model.arch {arch!r}; available: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[arch](input_shape, num_classes, **{k: v for k, v in kwargs.items() if v is not None})
    except ValueError as err:
        raise PrivdynError(f"model.arch={arch}: {err}") from None


__all__ = ["MODELS", "build_model"]
