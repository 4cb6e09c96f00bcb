"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), WRN-28-2 by default.

A 3x3 stem with 16 channels, three groups of n = (depth - 4) / 6 pre-activation blocks with
16k, 32k and 64k channels (strides 1, 2, 2), then norm-ReLU, global average pooling and a
linear head. ``dropout`` sits between a block's two convolutions, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from privdyn.models.layers import conv, global_pool, init_conv_net, norm_layer, spatial_dims


class WideBlock(nn.Module):
    """norm-ReLU-conv-[dropout]-norm-ReLU-conv plus a shortcut (1x1 conv of the activated input
    when the shape changes, the input itself otherwise)."""

    groupable = True  # forward uses channel-wise and element-wise ops only (training.grouped)

    def __init__(self, dims: int, c_in: int, c_out: int, stride: int, norm: str, dropout: float):
        super().__init__()
        bias = norm == "none"
        self.bn1 = norm_layer(norm, c_in, dims)
        self.conv1 = conv(dims, c_in, c_out, 3, stride, bias)
        self.bn2 = norm_layer(norm, c_out, dims)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = conv(dims, c_out, c_out, 3, 1, bias)
        self.shortcut = conv(dims, c_in, c_out, 1, stride, bias) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, ...]`` -> ``[B, C_out, ...]``, the spatial size divided by the stride."""
        a = torch.relu(self.bn1(x))
        out = self.conv2(self.drop(torch.relu(self.bn2(self.conv1(a)))))
        return out + (x if self.shortcut is None else self.shortcut(a))


def wrn(input_shape: tuple[int, ...], num_classes: int, width: int = 2, depth: int = 28,
        norm: str = "batch", dropout: float = 0.0) -> nn.Module:
    """WRN-``depth``-``width``: ``width`` is the widen factor k, ``depth`` must be 6n + 4."""
    dims = spatial_dims(input_shape, "wrn")
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wrn needs depth = 6n + 4 >= 10 (e.g. 16, 22, 28, 40), got model.depth={depth}")
    n = (depth - 4) // 6
    layers: list[nn.Module] = [conv(dims, input_shape[0], 16, 3, 1, norm == "none")]
    c_in = 16
    for g, mult in enumerate((16, 32, 64)):
        c_out = mult * width
        for b in range(n):
            layers.append(WideBlock(dims, c_in, c_out, 2 if g > 0 and b == 0 else 1, norm, dropout))
            c_in = c_out
    layers += [norm_layer(norm, c_in, dims), nn.ReLU(), global_pool(dims), nn.Linear(c_in, num_classes)]
    return init_conv_net(nn.Sequential(*layers))
