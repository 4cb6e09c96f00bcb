"""A plain CNN of configurable depth and width, for 1-D sequences and 2-D images."""

from __future__ import annotations

from torch import nn


def cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 32, depth: int = 3,
        norm: str = "batch", dropout: float = 0.0) -> nn.Module:
    """``depth`` blocks of conv-norm-ReLU, each doubling the channels and halving the size.

    Works on ``[C, L]`` (Conv1d) and ``[C, H, W]`` (Conv2d) inputs; a block stops pooling once the
    spatial size would drop below 2, so small inputs (8x8 digits) take any depth.
    """
    if len(input_shape) not in (2, 3):
        raise ValueError(f"cnn needs [C, L] or [C, H, W] inputs, got {input_shape}; use arch=mlp")
    two_d = len(input_shape) == 3
    conv, bn, pool = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if two_d else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
    gap = nn.AdaptiveAvgPool2d(1) if two_d else nn.AdaptiveAvgPool1d(1)
    layers: list[nn.Module] = []
    c_in, size = input_shape[0], min(input_shape[1:])
    for b in range(depth):
        c_out = width * 2**b
        layers += [conv(c_in, c_out, 3, padding=1, bias=norm != "batch")]
        if norm == "batch":
            layers.append(bn(c_out))
        layers.append(nn.ReLU())
        if size >= 4:
            layers.append(pool(2))
            size //= 2
        c_in = c_out
    layers += [gap, nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)
