"""Building blocks shared by the architectures: the layer classes for 1-D and 2-D inputs.

Every architecture takes sequences ``[C, L]`` and images ``[C, H, W]`` alike, so it picks its
convolution, normalisation and pooling layers here by the number of spatial dimensions.
"""

from __future__ import annotations

import math

from torch import nn


def spatial_dims(input_shape: tuple[int, ...], arch: str) -> int:
    """1 for ``[C, L]``, 2 for ``[C, H, W]``; tabular inputs are an error naming the fix."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"{arch} needs [C, L] or [C, H, W] inputs, got {input_shape}; use arch=mlp")
    return len(input_shape) - 1


def conv(dims: int, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = False) -> nn.Module:
    """A 'same'-padded convolution (the padding keeps the size at stride 1)."""
    cls = nn.Conv2d if dims == 2 else nn.Conv1d
    return cls(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)


def norm_layer(kind: str, channels: int, dims: int) -> nn.Module:
    """BatchNorm, GroupNorm or identity.

    GroupNorm normalises each sample on its own, so DP-SGD can use it; it takes up to 16 groups
    of at least 2 channels each (a group of one channel on a 1x1 map would output zeros).
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(16, channels // 2) if channels >= 2 else 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm {kind!r} is not one of batch, group, none")


def max_pool(dims: int) -> nn.Module:
    """Max pooling with window and stride 2 (halving each spatial size), for ``dims`` spatial dimensions."""
    return nn.MaxPool2d(2) if dims == 2 else nn.MaxPool1d(2)


def global_pool(dims: int) -> nn.Module:
    """Global average pooling to ``[B, C]``."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1), nn.Flatten())


def init_conv_net(model: nn.Module) -> nn.Module:
    """He initialisation for convolutions (fan-out), unit norms, zero biases: the ResNet/WRN recipe."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    return model
