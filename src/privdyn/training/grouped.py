"""Grouped execution: K stacked models run as one model whose channels are the K models' side by side.

A stacked ensemble can run under ``vmap``, but on the CPU vmap's batching rules for BatchNorm
and pooling cost more than the layers themselves. Folding the K models into the channel axis
makes every layer one native op on ``[B, K*C, ...]``: a convolution with ``groups=K``,
BatchNorm or GroupNorm over K*C channels (per-channel statistics, so per model), pooling and
activations channel by channel, and a batched matmul for linear layers. The stacked tensors
``[K, ...]`` are passed in as views, so their gradients and in-place BatchNorm updates land in
the stack. Models with any other layer run under vmap instead (:func:`grouped_module` says which).

A stack of linear layers (an MLP without normalisation) runs model-major instead: activations
stay ``[K, features, B]`` from input to logits and each layer is one ``W @ h`` batched over the
models, so no activation is transposed and copied between layouts and each weight gradient
``dh_out @ h_in^T`` comes out in the weight's own layout (on the CPU those copies cost a fifth of
a step of the quickstart's MLP group).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

#: Layers that act channel by channel or element by element: unchanged on folded inputs.
PASSTHROUGH = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
               nn.Dropout, nn.Identity)


class GroupedLinear(nn.Module):
    """K linear layers; weight ``[K, out, in]``. Takes model-major ``[K, in, B]`` -> ``[K, out, B]``,
    or channel-folded ``[B, K*in]`` (model-major blocks of features) -> ``[B, K*out]``."""

    def __init__(self, k: int, d_in: int, d_out: int, bias: bool):
        super().__init__()
        self.k, self.d_in = k, d_in
        self.weight = nn.Parameter(torch.empty(k, d_out, d_in, device="meta"))
        self.bias = nn.Parameter(torch.empty(k, d_out, device="meta")) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The K layers on model-major ``[K, in, B]`` or channel-folded ``[B, K*in]`` inputs (else ValueError)."""
        if x.ndim == 3:
            if self.bias is None:
                return torch.bmm(self.weight, x)
            return torch.baddbmm(self.bias.unsqueeze(2), self.weight, x)
        if x.ndim != 2:
            raise ValueError(f"grouped linear layers take [K, in, B] or [B, K*in] inputs, got {tuple(x.shape)}")
        xs = x.view(x.shape[0], self.k, self.d_in).transpose(0, 1)
        w = self.weight.transpose(1, 2)
        out = torch.bmm(xs, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), xs, w)
        return out.transpose(0, 1).reshape(x.shape[0], -1)


def _grouped_leaf(m: nn.Module, k: int) -> nn.Module | None:
    """The K-model version of one layer, or None when it has none."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.padding_mode == "zeros":
        conv: Any = type(m)  # its own kernel, stride, padding and dilation tuples fit it
        return conv(k * m.in_channels, k * m.out_channels, m.kernel_size, m.stride, m.padding,
                    m.dilation, k * m.groups, m.bias is not None, device="meta")
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.momentum is not None:
        return type(m)(k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, device="meta")
    if isinstance(m, nn.GroupNorm):
        return nn.GroupNorm(k * m.num_groups, k * m.num_channels, m.eps, m.affine, device="meta")
    if isinstance(m, nn.Linear):
        return GroupedLinear(k, m.in_features, m.out_features, m.bias is not None)
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return m
    return None


#: Layers a model-major linear stack may hold, once grouped (see the module docstring).
LINEAR_STACK = (GroupedLinear, nn.Flatten, nn.ReLU, nn.Dropout, nn.Identity)


def is_linear_stack(grouped: nn.Module) -> bool:
    """Whether a grouped module is a ``Sequential`` of linear layers and element-wise activations
    with at most a leading flatten: such a stack can run model-major."""
    layers = list(grouped.children()) if isinstance(grouped, nn.Sequential) else []
    return (bool(layers) and all(isinstance(m, LINEAR_STACK) for m in layers)
            and not any(isinstance(m, nn.Flatten) for m in layers[1:]))


def grouped_module(base: nn.Module, k: int) -> tuple[nn.Module, bool] | None:
    """A grouped copy of ``base`` (on the meta device) for K models and whether it is
    model-major, or None when some layer has no grouped form. Containers qualify when they are
    ``nn.Sequential`` or set ``groupable = True`` (their forward uses only channel-wise and
    element-wise operations). A linear stack is model-major (its flatten moves into
    :func:`fold_input`); any other is not."""
    out = copy.deepcopy(base).to("meta")

    def convert(parent: nn.Module) -> bool:
        for name, child in parent.named_children():
            if not any(True for _ in child.children()) and not isinstance(child, nn.Sequential):
                new = child if isinstance(child, PASSTHROUGH) else _grouped_leaf(child, k)
                if new is None:
                    return False
                setattr(parent, name, new)
            elif not (isinstance(child, nn.Sequential) or getattr(child, "groupable", False)) or not convert(child):
                return False
        return True

    top_ok = isinstance(out, nn.Sequential) or getattr(out, "groupable", False)
    if not (top_ok and convert(out)):
        return None
    model_major = is_linear_stack(out)
    if model_major and isinstance(out, nn.Sequential) and isinstance(out[0], nn.Flatten):
        out[0] = nn.Identity()  # fold_input flattens model-major inputs
    return out, model_major


def fold_tensors(stacked: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Views of the stacked ``[K, ...]`` tensors in the grouped module's shapes (BatchNorm's
    per-model step counters ``[K]`` stay as they are)."""
    return {n: t.view(shapes[n]) if t.numel() == shapes[n].numel() else t for n, t in stacked.items()}


def fold_input(x: torch.Tensor, k: int, shared: bool, model_major: bool = False) -> torch.Tensor:
    """``[K, B, C, ...]`` (or ``[B, C, ...]`` shared by all models) -> ``[B, K*C, ...]``, or for a
    model-major module the view ``[K, C*..., B]`` (a shared input is expanded, not copied)."""
    if model_major:
        x = x.expand(k, *x.shape) if shared else x
        return x.flatten(2).transpose(1, 2)
    if shared:
        return x.repeat(1, k, *([1] * (x.ndim - 2)))
    return x.transpose(0, 1).reshape(x.shape[1], k * x.shape[2], *x.shape[3:])


def unfold_output(out: torch.Tensor, k: int, model_major: bool = False) -> torch.Tensor:
    """``[B, K*classes]`` (or model-major ``[K, classes, B]``) -> ``[K, B, classes]``."""
    return out.transpose(1, 2) if model_major else out.view(out.shape[0], k, -1).transpose(0, 1)
