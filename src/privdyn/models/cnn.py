"""A plain CNN of configurable depth and width, for 1-D sequences and 2-D images."""

from __future__ import annotations

from torch import nn

from privdyn.models.layers import conv, global_pool, max_pool, norm_layer, spatial_dims


def cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 32, depth: int = 3,
        norm: str = "batch", dropout: float = 0.0) -> nn.Module:
    """``depth`` blocks of conv-norm-ReLU, each doubling the channels and halving the size.

    Works on ``[C, L]`` (Conv1d) and ``[C, H, W]`` (Conv2d) inputs; a block stops pooling once the
    spatial size would drop below 2, so small inputs (8x8 digits) take any depth.
    """
    dims = spatial_dims(input_shape, "cnn")
    layers: list[nn.Module] = []
    c_in, size = input_shape[0], min(input_shape[1:])
    for b in range(depth):
        c_out = width * 2**b
        layers.append(conv(dims, c_in, c_out, 3, bias=norm == "none"))
        if norm != "none":
            layers.append(norm_layer(norm, c_out, dims))
        layers.append(nn.ReLU())
        if size >= 4:
            layers.append(max_pool(dims))
            size //= 2
        c_in = c_out
    layers.append(global_pool(dims))
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)
