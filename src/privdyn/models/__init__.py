"""Model registry: architectures written from scratch in PyTorch."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from privdyn.errors import PrivdynError
from privdyn.models.cnn import cnn
from privdyn.models.mlp import mlp
from privdyn.models.resnet import resnet18
from privdyn.models.wrn import wrn
from privdyn.registry import MODELS as _MODELS
from privdyn.registry import Registry

#: Model factories ``(input_shape, num_classes, **options) -> nn.Module`` by ``model.arch``.
MODELS: Registry[Callable[..., nn.Module]] = _MODELS
for _name, _factory in (("mlp", mlp), ("cnn", cnn), ("resnet18", resnet18), ("wrn", wrn)):
    MODELS.register(_name, _factory)


def register(name: str, factory: Callable[..., nn.Module], *, replace: bool = False) -> Callable[..., nn.Module]:
    """Make a model factory available as ``model.arch: NAME``. It is called as
    ``factory(input_shape, num_classes, width=..., depth=..., norm=..., dropout=...)`` with the
    options the config sets (unset ones are left out, so give them defaults)."""
    return MODELS.register(name, factory, replace=replace)


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


__all__ = ["MODELS", "build_model", "register"]
