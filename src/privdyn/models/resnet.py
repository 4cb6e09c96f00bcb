"""ResNet-18, CIFAR variant (He et al. 2016): a 3x3 stem at stride 1 and no max-pool.

Four stages of two basic blocks with ``width * (1, 2, 4, 8)`` channels (64..512 by default),
the last three starting at stride 2, then global average pooling and a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from privdyn.models.layers import conv, global_pool, init_conv_net, norm_layer, spatial_dims


class BasicBlock(nn.Module):
    """conv-norm-ReLU-conv-norm plus a shortcut (1x1 conv-norm when the shape changes), then ReLU."""

    groupable = True  # forward uses channel-wise and element-wise ops only (training.grouped)

    def __init__(self, dims: int, c_in: int, c_out: int, stride: int, norm: str):
        super().__init__()
        bias = norm == "none"
        self.conv1 = conv(dims, c_in, c_out, 3, stride, bias)
        self.bn1 = norm_layer(norm, c_out, dims)
        self.conv2 = conv(dims, c_out, c_out, 3, 1, bias)
        self.bn2 = norm_layer(norm, c_out, dims)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(dims, c_in, c_out, 1, stride, bias), norm_layer(norm, c_out, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, ...]`` -> ``[B, C_out, ...]``, the spatial size divided by the stride."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet18(input_shape: tuple[int, ...], num_classes: int, width: int = 64, depth: int = 18,
             norm: str = "batch", dropout: float = 0.0) -> nn.Module:
    """ResNet-18 for small images (or sequences); ``width`` is the stem's channel count."""
    dims = spatial_dims(input_shape, "resnet18")
    if depth != 18:
        raise ValueError(f"resnet18 has depth 18 (got model.depth={depth}); leave model.depth unset")
    layers: list[nn.Module] = [conv(dims, input_shape[0], width, 3, 1, norm == "none"),
                               norm_layer(norm, width, dims), nn.ReLU()]
    c_in = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        c_out = width * mult
        for b in range(2):
            layers.append(BasicBlock(dims, c_in, c_out, 2 if stage > 0 and b == 0 else 1, norm))
            c_in = c_out
    layers.append(global_pool(dims))
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c_in, num_classes))
    return init_conv_net(nn.Sequential(*layers))
