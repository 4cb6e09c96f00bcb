"""Base optimizers from the config: SGD (momentum, Nesterov), Adam and AdamW, with weight decay.

All of them act element by element, so on stacked parameters the K models stay independent.
They run fused (one pass over each tensor for the whole update, on the CPU as on a GPU): on the
large stacked tensors of a group the unfused update's separate weight-decay, momentum and step
passes cost about a fifth of a step. SAM (``name: sam``) wraps one of them; see
:mod:`privdyn.training.sam`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from privdyn.config import OptimizerConfig


def base_name(oc: OptimizerConfig) -> str:
    """The element-wise optimizer that steps the weights (SAM's ``base`` when name is sam)."""
    return oc.base if oc.name == "sam" else oc.name


def make_optimizer(params: Iterable[torch.Tensor], oc: OptimizerConfig) -> torch.optim.Optimizer:
    """The base optimizer over ``params`` (the lr is set per step by the schedule)."""
    ps, name = list(params), base_name(oc)
    if name == "sgd":
        return torch.optim.SGD(ps, lr=oc.lr, momentum=oc.momentum, nesterov=oc.nesterov and oc.momentum > 0,
                               weight_decay=oc.weight_decay, fused=True)
    if name == "adam":
        return torch.optim.Adam(ps, lr=oc.lr, weight_decay=oc.weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(ps, lr=oc.lr, weight_decay=oc.weight_decay, fused=True)
    raise ValueError(f"unknown optimizer {name!r}")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``opt`` (the schedule's value for the next step)."""
    for group in opt.param_groups:
        group["lr"] = lr
