"""Sharpness-aware minimisation (Foret et al. 2021) for stacked ensembles.

SAM steps the base optimizer with the gradient taken at ``w + e(w)``, where
``e(w) = rho * g / ||g||`` is the ascent step. With K models stacked along the first axis of
every tensor, ``||g||`` must be each model's own norm: the norm over that model's slice of every
tensor. A norm over the whole stack would couple the models, and a group of K would no longer
equal K groups of one.
"""

from __future__ import annotations

import torch


def per_model_grad_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """``[K]``: the 2-norm of each model's gradient over all its stacked tensors."""
    return torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()


def sam_perturbation(grads: list[torch.Tensor], rho: float, eps: float = 1e-12) -> list[torch.Tensor]:
    """The ascent step ``rho * g_k / (||g_k|| + eps)`` for every stacked tensor, model by model."""
    scale = rho / (per_model_grad_norm(grads) + eps)
    return [g * scale.view(-1, *([1] * (g.ndim - 1))) for g in grads]
