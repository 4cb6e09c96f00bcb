"""K models of one architecture, stacked, trained and evaluated at once.

Parameters and buffers of the K models are stacked along a leading axis; one forward runs all
of them, grouped (the models folded into channels, :mod:`privdyn.training.grouped`) or, for
layers without a grouped form, under ``torch.func.vmap``. BatchNorm keeps K sets of running
statistics, and a plain optimizer steps the stacked tensors. Optimizers used here act element by
element, so the K models stay independent: a group of K gives the same models as K groups of one,
up to float rounding. Each model's initialisation and data order depend only on (seed, model
index), never on the grouping.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from privdyn.training.grouped import fold_input, fold_tensors, grouped_module, unfold_output
from privdyn.training.signals import evaluate_signals

#: Seed stream of the per-epoch data order.
ORDER_STREAM = 0xDA7A


def model_seed(seed: int, model: int) -> int:
    """The seed of model ``model`` of a run: independent of how models are grouped."""
    return int(np.random.SeedSequence([seed, model, 0xA11]).generate_state(1)[0])


def stream_seed(*keys: int) -> int:
    """A 32-bit seed derived from integer keys (run seed, model, epoch, stream tag, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def epoch_generator(seed: int, model: int, epoch: int, stream: int = ORDER_STREAM,
                    device: torch.device | str = "cpu") -> torch.Generator:
    """The RNG of one model, one epoch and one purpose (so a resumed run repeats it exactly)."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, model, epoch, stream))
    return g


def epoch_permutation(seed: int, model: int, epoch: int, n: int) -> torch.Tensor:
    """Model ``model``'s order of its ``n`` IN samples in ``epoch`` (CPU): the same however it is grouped."""
    return torch.randperm(n, generator=epoch_generator(seed, model, epoch))


class EnsembleGroup:
    """A group of models with stacked state; ``factory()`` builds one untrained model."""

    def __init__(self, factory: Callable[[], nn.Module], model_ids: list[int], seed: int,
                 device: torch.device, precision: str = "fp32", eval_precision: str = "fp32",
                 memory_format: str = "contiguous"):
        modules = []
        for m in model_ids:
            torch.manual_seed(model_seed(seed, m))
            modules.append(factory())
        params, buffers = stack_module_state(modules)
        self.params = {k: v.detach().to(device).requires_grad_(True) for k, v in params.items()}
        self.buffers = {k: v.detach().to(device) for k, v in buffers.items()}
        self.base = copy.deepcopy(modules[0]).to("meta")
        found = grouped_module(self.base, len(model_ids))
        self.grouped: nn.Module | None = found[0] if found is not None else None
        self.model_major = found is not None and found[1]
        self.shapes = {} if self.grouped is None else {
            n: t.shape for n, t in (*self.grouped.named_parameters(), *self.grouped.named_buffers())}
        self.model_ids = list(model_ids)
        self.seed = seed
        self.device = device
        self.precision = precision  # bf16: training forward under autocast
        self.eval_precision = eval_precision  # bf16: evaluation forward under autocast, logits back to fp32
        if memory_format not in ("contiguous", "channels_last"):
            raise ValueError(f"memory_format must be contiguous or channels_last, not {memory_format!r}")
        # folded image inputs [B, K*C, H, W] of a model with convolutions as NHWC
        self.channels_last = memory_format == "channels_last" and any(
            isinstance(m, nn.Conv2d) for m in self.base.modules())

    @property
    def k(self) -> int:
        """K, the number of models in the group."""
        return len(self.model_ids)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, train: bool, shared_input: bool = False,
                buffers: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits ``[K, B, C]`` for inputs ``[K, B, ...]`` (or ``[B, ...]`` when shared_input).

        In train mode BatchNorm updates the running statistics in ``buffers`` (default: the
        group's own) in place. Models made of layers with a grouped form run grouped (see
        :mod:`privdyn.training.grouped`), any other under vmap.
        """
        buffers = self.buffers if buffers is None else buffers
        if self.grouped is not None:
            self.grouped.train(train)
            major = self.model_major
            folded = fold_input(x, self.k, shared_input, major)
            if self.channels_last and folded.ndim == 4:  # convolutions then run, and return, NHWC
                folded = folded.contiguous(memory_format=torch.channels_last)
            out = functional_call(self.grouped,
                                  (fold_tensors(self.params, self.shapes), fold_tensors(buffers, self.shapes)),
                                  (folded,))
            return unfold_output(out, self.k, major)
        self.base.train(train)
        fn = vmap(self._call, in_dims=(0, 0, None if shared_input else 0),
                  randomness="different" if train else "error")
        return fn(self.params, buffers, x)

    def loss(self, x: torch.Tensor, y: torch.Tensor, buffers: dict[str, torch.Tensor] | None = None,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over models of each model's mean cross-entropy on its own batch ``x[k], y[k]``.

        The sum keeps the models' gradients apart: model k's slice of the gradient is the
        gradient of its own mean loss. ``weights`` ``[K, B]`` multiply each sample's loss before
        the mean over the batch (a defence's down-weighting; None: every sample counts 1).
        """
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.forward(x, train=True, buffers=buffers)
        ce = nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none"
        ).view(y.shape)
        return (ce if weights is None else ce * weights).mean(dim=1).sum()

    def epoch_order(self, n: int, epoch: int) -> torch.Tensor:
        """Each model's shuffled positions ``0..n-1`` for this epoch, ``[K, n]`` on the device."""
        return torch.stack([epoch_permutation(self.seed, m, epoch, n) for m in self.model_ids]).to(self.device)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, queries: list[str], batch_size: int,
                 with_logits: bool = False) -> dict[str, np.ndarray]:
        """Eval-mode signals of every model on every sample: name -> ``[K, N, Q]`` (and
        ``logits`` ``[K, N, Q, C]`` float32 when ``with_logits``)."""
        def logits(xb: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.eval_precision == "bf16"):
                return self.forward(xb, train=False, shared_input=True).float()

        return evaluate_signals(logits, self.k, x, y, queries, batch_size, with_logits)

    # state --------------------------------------------------------------------------------
    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        """Stacked parameters and buffers on the CPU."""
        return {"params": {k: v.detach().cpu() for k, v in self.params.items()},
                "buffers": {k: v.cpu() for k, v in self.buffers.items()}}

    def load_tensors(self, state: dict) -> None:
        """Copy stacked parameters and buffers (as :meth:`tensors` returns them) into the group's, in place."""
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
            for k, v in state["buffers"].items():
                self.buffers[k].copy_(v)

    def model_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """One ``state_dict`` per model (CPU tensors), loadable into the architecture's module."""
        t = self.tensors()
        return [{k: v[i].clone() for part in ("params", "buffers") for k, v in t[part].items()}
                for i in range(self.k)]

    def module(self, i: int) -> nn.Module:
        """A plain ``nn.Module`` on the group's device holding a copy of model ``i``'s weights."""
        mod = copy.deepcopy(self.base).to_empty(device=self.device)
        mod.load_state_dict(self.model_state_dicts()[i])
        return mod

    def set_model(self, i: int, module: nn.Module) -> None:
        """Copy a plain module's weights into slot ``i`` of the stack."""
        with torch.no_grad():
            for k, v in module.state_dict().items():
                (self.params if k in self.params else self.buffers)[k][i].copy_(v)
