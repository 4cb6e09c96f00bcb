"""Model registry: architectures written from scratch in PyTorch.

The built-in factories import their modules (and so torch) when first called: validating a
config looks its ``model.arch`` up here, and commands that only analyse or report a run should
not pay for importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from privdyn.errors import PrivdynError
from privdyn.registry import MODELS as _MODELS
from privdyn.registry import Registry

if TYPE_CHECKING:
    from torch import nn

#: Model factories ``(input_shape, num_classes, **options) -> nn.Module`` by ``model.arch``.
MODELS: Registry[Callable[..., nn.Module]] = _MODELS


def _builtin(module: str, name: str) -> Callable[..., nn.Module]:
    """The factory ``privdyn.models.MODULE.NAME``, imported on its first call."""
    def factory(*args: Any, **kwargs: Any) -> nn.Module:
        return getattr(importlib.import_module(f"privdyn.models.{module}"), name)(*args, **kwargs)
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"Build a {name} (privdyn.models.{module}.{name}); its module is imported on the first call."
    return factory


for _module, _name in (("mlp", "mlp"), ("cnn", "cnn"), ("resnet", "resnet18"), ("wrn", "wrn")):
    MODELS.register(_name, _builtin(_module, _name))


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
