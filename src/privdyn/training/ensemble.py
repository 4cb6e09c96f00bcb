"""K models of one architecture trained and evaluated at once with ``torch.func.vmap``.

Parameters and buffers of the K models are stacked along a leading axis; one vmapped forward
runs all of them, and a plain optimizer steps the stacked tensors. Optimizers used here act
element by element, so the K models stay independent: a group of K gives the same models as K
groups of one, up to float rounding. Each model's initialisation and data order depend only on
(seed, model index), never on the grouping.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from privdyn.training.queries import apply_query
from privdyn.training.signals import SIGNALS, signals_from_logits


def model_seed(seed: int, model: int) -> int:
    """The seed of model ``model`` of a run: independent of how models are grouped."""
    return int(np.random.SeedSequence([seed, model, 0xA11]).generate_state(1)[0])


def epoch_generator(seed: int, model: int, epoch: int) -> torch.Generator:
    """The RNG for one model's data order in one epoch (so a resumed run repeats it exactly)."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, model, epoch, 0xDA7A]).generate_state(1)[0]))
    return g


def cosine_lr(lr: float, step: int, total: int) -> float:
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class EnsembleGroup:
    """A group of models with stacked state; ``factory()`` builds one untrained model."""

    def __init__(self, factory: Callable[[], nn.Module], model_ids: list[int], seed: int,
                 device: torch.device):
        modules = []
        for m in model_ids:
            torch.manual_seed(model_seed(seed, m))
            modules.append(factory())
        params, buffers = stack_module_state(modules)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.detach().to(device) for k, v in buffers.items()}
        self.base = copy.deepcopy(modules[0]).to("meta")
        self.model_ids = list(model_ids)
        self.seed = seed
        self.device = device

    @property
    def k(self) -> int:
        return len(self.model_ids)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, train: bool, shared_input: bool = False) -> torch.Tensor:
        """Logits ``[K, B, C]`` for inputs ``[K, B, ...]`` (or ``[B, ...]`` when shared_input)."""
        self.base.train(train)
        fn = vmap(self._call, in_dims=(0, 0, None if shared_input else 0),
                  randomness="different" if train else "error")
        return fn(self.params, self.buffers, x)

    def make_optimizer(self, name: str, lr: float, momentum: float, nesterov: bool,
                       weight_decay: float) -> torch.optim.Optimizer:
        ps = list(self.params.values())
        if name == "sgd":
            return torch.optim.SGD(ps, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                                   weight_decay=weight_decay)
        if name == "adam":
            return torch.optim.Adam(ps, lr=lr, weight_decay=weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(ps, lr=lr, weight_decay=weight_decay)
        raise ValueError(f"unknown optimizer {name!r}")

    def epoch_order(self, in_idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """Each model's shuffled IN indices for this epoch, ``[K, N/2]``."""
        perms = torch.stack([
            torch.randperm(in_idx.shape[1], generator=epoch_generator(self.seed, m, epoch))
            for m in self.model_ids
        ]).to(in_idx.device)
        return in_idx.gather(1, perms)

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, in_idx: torch.Tensor, epoch: int,
                    batch_size: int, opt: torch.optim.Optimizer, lr_at: Callable[[int], float],
                    step: int) -> int:
        """One epoch over each model's own IN samples; returns the global step reached."""
        order = self.epoch_order(in_idx, epoch)
        n = order.shape[1]
        for start in range(0, n, batch_size):
            idx = order[:, start:start + batch_size]
            logits = self.forward(x[idx], train=True)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1), reduction="none"
            ).view(idx.shape).mean(dim=1).sum()
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        return step

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, queries: list[str],
                 batch_size: int) -> dict[str, np.ndarray]:
        """Eval-mode signals of every model on every sample: name -> ``[K, N, Q]``."""
        n, q = len(y), len(queries)
        out = {s: np.empty((self.k, n, q), dtype=bool if s == "correct" else np.float32) for s in SIGNALS}
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            for j, name in enumerate(queries):
                logits = self.forward(apply_query(name, xb), train=False, shared_input=True)
                sig = signals_from_logits(logits, yb.expand(self.k, -1))
                for s, v in sig.items():
                    out[s][:, start:start + len(yb), j] = v.cpu().numpy()
        return out

    def state(self, opt: torch.optim.Optimizer, epoch: int, step: int) -> dict:
        """Everything needed to resume exactly (tensors, ints and dicts only: weights_only-safe)."""
        return {
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "buffers": {k: v.cpu() for k, v in self.buffers.items()},
            "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
            "model_ids": list(self.model_ids),
        }

    def load_state(self, state: dict, opt: torch.optim.Optimizer) -> tuple[int, int]:
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
            for k, v in state["buffers"].items():
                self.buffers[k].copy_(v)
        opt.load_state_dict(state["optimizer"])
        return int(state["epoch"]), int(state["step"])
