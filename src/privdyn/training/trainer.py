"""Training a stacked :class:`EnsembleGroup` for one epoch at a time: plain or SAM steps of a base
optimizer, the lr schedule and image augmentation, all resumable from :meth:`state`.

DP-SGD trains plain modules instead: see :mod:`privdyn.training.dp`, which has the same interface.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from privdyn.config import OptimizerConfig
from privdyn.training.augment import draw_flip_crop, flip_crop
from privdyn.training.ensemble import EnsembleGroup, stream_seed
from privdyn.training.optim import make_optimizer, set_lr
from privdyn.training.sam import sam_perturbation

if TYPE_CHECKING:
    from privdyn.training.defence import Defence

#: Seed stream of the global RNG during an epoch (dropout masks under vmap).
DROPOUT_STREAM = 0xD80


class StackedTrainer:
    """Trains the K models of ``group`` on their own IN samples ``x[in_idx[k]]``.

    ``in_idx`` is ``[K, n]`` on the device; ``opt`` steps the stacked parameters and must act
    element by element (so the models stay independent). ``lr_at(step)`` sets the lr before each
    step (None: the optimizer's own, e.g. under a user's epoch scheduler). With ``rho`` every step
    is a SAM step whose ascent uses each model's own gradient norm.
    """

    def __init__(self, group: EnsembleGroup, opt: torch.optim.Optimizer, lr_at: Callable[[int], float] | None,
                 batch_size: int, augment: bool, x: torch.Tensor, y: torch.Tensor, in_idx: torch.Tensor,
                 rho: float | None = None, compile: bool = False):
        self.group, self.lr_at, self.batch_size, self.augment = group, lr_at, batch_size, augment
        self.rho, self.opt = rho, opt
        self.x, self.y, self.in_idx = x, y, in_idx
        self.loss = torch.compile(group.loss) if compile else group.loss
        self.defence: Defence | None = None  # set by the engine under defence.enabled

    @classmethod
    def from_config(cls, group: EnsembleGroup, oc: OptimizerConfig, lr_at: Callable[[int], float],
                    batch_size: int, augment: bool, x: torch.Tensor, y: torch.Tensor,
                    in_idx: torch.Tensor, compile: bool = False) -> StackedTrainer:
        """The trainer of a config's optimizer (SAM's radius when ``oc.name`` is sam)."""
        return cls(group, make_optimizer(group.params.values(), oc), lr_at, batch_size, augment, x, y, in_idx,
                   oc.rho if oc.name == "sam" else None, compile)

    def train_epoch(self, epoch: int, step: int) -> int:
        """One epoch (1-based) over each model's IN samples; returns the global step reached."""
        g, d = self.group, self.defence
        torch.manual_seed(stream_seed(g.seed, *g.model_ids, epoch, DROPOUT_STREAM))
        in_idx = self.in_idx if d is None else d.kept(self.in_idx)  # a defence may remove members
        n = in_idx.shape[1]
        perm = g.epoch_order(n, epoch)
        order = in_idx.gather(1, perm)
        aug = None
        if self.augment:
            aug = draw_flip_crop(g.seed, g.model_ids, epoch, n).to(g.device)
            aug = aug.gather(1, perm.unsqueeze(-1).expand(-1, -1, 3))
        # the schedule advances by epochs: with members removed, fewer steps spread over the epoch's
        full, steps = -(-self.in_idx.shape[1] // self.batch_size), -(-n // self.batch_size)
        gens = d.noise_generators(epoch) if d is not None else None
        for j, start in enumerate(range(0, n, self.batch_size)):
            idx = order[:, start:start + self.batch_size]
            xb = self.x[idx]
            if aug is not None:
                xb = flip_crop(xb, aug[:, start:start + self.batch_size])
            if self.lr_at is not None:
                set_lr(self.opt, self.lr_at(step + j * full // steps))
            weights = d.loss_weights(idx) if d is not None else None
            loss = self.loss if weights is None else functools.partial(self.loss, weights=weights)
            if d is not None and d.clips:
                d.clip_step(g, self.opt, xb, self.y[idx], idx, gens)
            elif self.rho is None:
                self.opt.zero_grad(set_to_none=True)
                loss(xb, self.y[idx]).backward()
            else:
                self._sam_gradient(xb, self.y[idx], loss)
            self.opt.step()
        return step + full

    def _sam_gradient(self, xb: torch.Tensor, yb: torch.Tensor,
                      loss: Callable[..., torch.Tensor] | None = None) -> None:
        """Leave in ``.grad`` the gradient at ``w + e(w)`` of ``loss`` (default: the group's), the
        weights back at ``w``.

        The first pass updates BatchNorm's running statistics; the second, at the perturbed
        weights, runs on copies of them, so each step updates them once.
        """
        g = self.group
        loss = loss or self.loss
        params = list(g.params.values())
        raw = torch.autograd.grad(loss(xb, yb), params, allow_unused=True)
        grads = [torch.zeros_like(p) if d is None else d for p, d in zip(params, raw)]
        assert self.rho is not None  # SAM steps only
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, e in zip(params, sam_perturbation(grads, self.rho)):
                p.add_(e)
        self.opt.zero_grad(set_to_none=True)
        loss(xb, yb, buffers={k: v.clone() for k, v in g.buffers.items()}).backward()
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)

    def state(self, epoch: int, step: int) -> dict:
        """Everything needed to resume exactly (tensors, ints and dicts only: weights_only-safe)."""
        return {**self.group.tensors(), "optimizer": self.opt.state_dict(), "epoch": epoch, "step": step,
                "model_ids": list(self.group.model_ids), **(self.defence.state() if self.defence else {})}

    def load_state(self, state: dict) -> tuple[int, int]:
        """Restore a :meth:`state` into the group and the optimizer; returns the (epoch, step) to resume from."""
        self.group.load_tensors(state)
        self.opt.load_state_dict(state["optimizer"])
        if self.defence is not None:
            self.defence.load_state(state)
        return int(state["epoch"]), int(state["step"])
