"""DP-SGD through Opacus: per-sample clipping and Gaussian noise, one model at a time.

Opacus computes per-sample gradients on a plain ``nn.Module``, so a DP group holds one model
(the engine forces ``group_size`` to 1); it keeps the stacked group's interface (initialisation,
signals, state), so a DP run has the same layout as any other. Batches are drawn by Poisson
sampling (each IN sample joins a step with probability q = batch_size / n), the sampling that
the RDP accountant's epsilon assumes. Sampling, noise, augmentation and dropout come from
generators seeded by (seed, model, epoch), so a resumed epoch repeats exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from privdyn.config import DPConfig, OptimizerConfig
from privdyn.training.augment import draw_flip_crop, flip_crop
from privdyn.training.ensemble import EnsembleGroup, epoch_generator, stream_seed
from privdyn.training.optim import make_optimizer, set_lr
from privdyn.training.trainer import DROPOUT_STREAM

if TYPE_CHECKING:
    from privdyn.training.defence import Defence

SAMPLING_STREAM, NOISE_STREAM = 0x5A3, 0x4015E


def dp_steps_per_epoch(n: int, batch_size: int) -> int:
    """Steps per epoch, ceil(n / batch_size): with Poisson sampling an epoch then draws about n samples."""
    return -(-n // batch_size)


def dp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon after ``steps`` Poisson-sampled steps, from Opacus's RDP accountant."""
    from opacus.accountants import RDPAccountant

    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta))


class DPTrainer:
    """DP-SGD for the single model of ``group`` (``in_idx`` is ``[1, n]`` on the device)."""

    def __init__(self, group: EnsembleGroup, oc: OptimizerConfig, dp: DPConfig, lr_at: Callable[[int], float],
                 batch_size: int, augment: bool, x: torch.Tensor, y: torch.Tensor, in_idx: torch.Tensor):
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        if group.k != 1:
            raise ValueError(f"DP-SGD trains one model at a time, got a group of {group.k}")
        self.group, self.lr_at, self.augment = group, lr_at, augment
        self.x, self.y, self.in_idx = x, y, in_idx
        n = in_idx.shape[1]
        self.sample_rate = min(1.0, batch_size / n)
        self.steps_per_epoch = dp_steps_per_epoch(n, batch_size)
        self.net = GradSampleModule(group.module(0), batch_first=True, loss_reduction="mean")
        self.base = make_optimizer(self.net.parameters(), oc)
        self.opt = DPOptimizer(self.base, noise_multiplier=dp.noise_multiplier, max_grad_norm=dp.max_grad_norm,
                               expected_batch_size=min(batch_size, n), loss_reduction="mean")
        self.defence: Defence | None = None  # set by the engine under defence.enabled (remove or weight)

    def train_epoch(self, epoch: int, step: int) -> int:
        """One epoch of Poisson-sampled steps; returns the global step reached.

        A step whose sample is empty makes no update but still counts (for the schedule and the
        accountant, which then overstates epsilon a little: a safe direction).
        """
        g, m = self.group, self.group.model_ids[0]
        torch.manual_seed(stream_seed(g.seed, m, epoch, DROPOUT_STREAM))
        self.opt.generator = epoch_generator(g.seed, m, epoch, NOISE_STREAM, device=g.device)
        n = self.in_idx.shape[1]
        sampler = epoch_generator(g.seed, m, epoch, SAMPLING_STREAM)
        aug = draw_flip_crop(g.seed, [m], epoch, n)[0].to(g.device) if self.augment else None
        self.net.train()
        d = self.defence
        removed = d.flagged(self.in_idx)[0] if d is not None and d.dc.action == "remove" else None
        for _ in range(self.steps_per_epoch):
            cols = torch.nonzero(torch.rand(n, generator=sampler) < self.sample_rate).squeeze(1).to(g.device)
            set_lr(self.base, self.lr_at(step))
            step += 1
            if removed is not None:  # the same draws as without the defence, the removed ones dropped
                cols = cols[~removed[cols]]
            if len(cols) == 0:
                continue
            idx = self.in_idx[0, cols]
            xb = self.x[idx] if aug is None else flip_crop(self.x[idx], aug[cols])
            weights = d.loss_weights(idx.unsqueeze(0)) if d is not None else None
            self.opt.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # Opacus's hooks on an input that needs no gradient
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                if weights is None:
                    nn.functional.cross_entropy(self.net(xb), self.y[idx]).backward()
                else:
                    ce = nn.functional.cross_entropy(self.net(xb), self.y[idx], reduction="none")
                    (ce * weights[0]).mean().backward()
            self.opt.step()
        g.set_model(0, self.net._module)
        return step

    def state(self, epoch: int, step: int) -> dict:
        """Everything needed to resume exactly: the stacked tensors, the base optimizer's state, epoch and step."""
        return {**self.group.tensors(), "optimizer": self.base.state_dict(), "epoch": epoch, "step": step,
                "model_ids": list(self.group.model_ids), **(self.defence.state() if self.defence else {})}

    def load_state(self, state: dict) -> tuple[int, int]:
        """Restore a :meth:`state` into the group, the Opacus module and the optimizer; returns (epoch, step)."""
        self.group.load_tensors(state)
        self.net._module.load_state_dict(self.group.model_state_dicts()[0])
        self.base.load_state_dict(state["optimizer"])
        if self.defence is not None:
            self.defence.load_state(state)
        return int(state["epoch"]), int(state["step"])
