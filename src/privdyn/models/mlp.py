"""Multi-layer perceptron over flattened inputs."""

from __future__ import annotations

import math

from torch import nn

from privdyn.models.layers import norm_layer


def mlp(input_shape: tuple[int, ...], num_classes: int, width: int = 128, depth: int = 2,
        norm: str = "none", dropout: float = 0.0) -> nn.Module:
    """``depth`` hidden layers of ``width`` units with ReLU (and BatchNorm1d or GroupNorm when asked)."""
    layers: list[nn.Module] = [nn.Flatten()]
    d_in = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(d_in, width))
        if norm != "none":
            layers.append(norm_layer(norm, width, 1))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        d_in = width
    layers.append(nn.Linear(d_in, num_classes))
    return nn.Sequential(*layers)
