"""Training a user's model with a user's recipe: batched when it can be, one model at a time otherwise.

A :class:`Recipe` says how every model trains: an optimizer factory (``Callable[[params],
Optimizer]``, as PyTorch's own optimizers are called), an optional epoch scheduler factory, the
batch size and epochs, and, for recipes privdyn cannot express, a training step or a whole
training epoch written by the user. :func:`plan_batching` decides whether the M models can run
as stacked groups (:class:`~privdyn.training.ensemble.EnsembleGroup`): only when nothing in the
recipe needs a real ``nn.Module``, the optimizer acts element by element, and a probe shows the
batched forward reproduces the module's own outputs. Otherwise :class:`ModuleTrainer` trains
each model as a plain module. Both draw each model's initialisation and data order from (seed,
model index) alone, exactly as privdyn's own trainer does, and both resume from saved states.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from privdyn.config import RunConfig
from privdyn.data import Dataset
from privdyn.errors import PrivdynError
from privdyn.training.engine import GroupTask, MakeTrainer
from privdyn.training.ensemble import EnsembleGroup, epoch_generator, epoch_permutation, model_seed, stream_seed
from privdyn.training.signals import evaluate_signals
from privdyn.training.trainer import DROPOUT_STREAM, StackedTrainer

#: Seed stream of a user augmentation's generator.
AUGMENT_STREAM = 0xA06

#: Optimizers whose update of each element depends on that element alone: on stacked parameters
#: the K models stay independent (norm-based ones such as LARS or LAMB would couple them).
ELEMENTWISE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad,
               torch.optim.Adamax, torch.optim.NAdam, torch.optim.RAdam)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
ScheduleFactory = Callable[[torch.optim.Optimizer], Any]
#: ``train_step(model, optimizer, x, y)``: one step on a batch (zero_grad, backward and step included).
TrainStep = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], Any]
#: ``train_epoch(model, optimizer, batches, epoch)``: one epoch over ``(x, y)`` batches of the model's IN samples.
TrainEpoch = Callable[[nn.Module, torch.optim.Optimizer, Iterator[tuple[torch.Tensor, torch.Tensor]], int], Any]
#: ``augment(x, generator)``: a transformed batch, random draws from ``generator`` only (reproducible).
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with lr 0.05 and momentum 0.9, privdyn's default recipe."""
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


@dataclass(frozen=True)
class Recipe:
    """How each of the M models trains. ``schedule(optimizer)`` is a PyTorch lr scheduler stepped
    once per epoch; ``train_step`` / ``train_epoch`` replace privdyn's cross-entropy step for
    recipes it cannot express (mixed precision, custom losses, clipping, EMA...)."""

    optimizer: OptimizerFactory = default_optimizer
    epochs: int = 10
    batch_size: int = 128
    schedule: ScheduleFactory | None = None
    train_step: TrainStep | None = None
    train_epoch: TrainEpoch | None = None
    augment: Augment | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"Recipe: epochs and batch_size must be >= 1 (got {self.epochs}, {self.batch_size})")
        if self.train_step is not None and self.train_epoch is not None:
            raise ValueError("Recipe: give train_step or train_epoch, not both (train_epoch owns its steps)")

    def custom_parts(self) -> list[str]:
        """The user functions that need a plain ``nn.Module`` (so no batched training)."""
        return [n for n in ("train_step", "train_epoch", "augment") if getattr(self, n) is not None]


def describe(obj: Any) -> str:
    """``module.qualname`` of a class or function (the class of any other object)."""
    target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def code_digest(*objs: Any) -> str:
    """A digest of the source code of ``objs`` (a model factory, a recipe's functions, and the class
    each factory returns), or of their names where no source is available: changing the model or
    the recipe then makes the stored signals stale. Values the code closes over are not in it:
    :func:`build_digest` covers those of the model and optimizer through what they build."""
    h = hashlib.sha256()
    for obj in objs:
        if obj is None:
            h.update(b"-")
            continue
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):
            h.update(describe(obj).encode())
        h.update(repr(getattr(obj, "keywords", "")).encode())  # functools.partial arguments
    return h.hexdigest()[:16]


def check_logits(out: Any, n: int, num_classes: int, who: str = "record") -> None:
    """Refuse a model's output on a batch of ``n`` samples unless it is logits ``[n, num_classes]``."""
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PrivdynError(f"{who}: the model must map a batch [B, ...] to logits [B, {num_classes}] (one per "
                           f"class); it returned {got} for B={n}")


def built_model(factory: Callable[[], Any]) -> nn.Module:
    """``factory()``, refused with a :class:`PrivdynError` unless it is an ``nn.Module``."""
    model = factory()
    if not isinstance(model, nn.Module):
        raise PrivdynError(f"the model factory must return a torch.nn.Module, got {type(model).__name__} "
                           f"(from {describe(factory)}); pass a class or a function that builds a fresh model")
    return model


def built_optimizer(recipe: Recipe, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """``recipe.optimizer(params)``, refused with a :class:`PrivdynError` unless it is an Optimizer."""
    opt = recipe.optimizer(params)
    if not isinstance(opt, torch.optim.Optimizer):
        raise PrivdynError(f"recipe.optimizer must return a torch.optim.Optimizer, got {type(opt).__name__} "
                           f"(from {describe(recipe.optimizer)}); e.g. optimizer=lambda p: torch.optim.SGD(p, lr=0.1)")
    return opt


#: Memory addresses in reprs (``<function f at 0x7f...>``): they differ between processes.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")


def _tensor_digest(t: torch.Tensor) -> str:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()[:16] if flat.numel() else "empty"


def _canonical(value: Any, depth: int = 0) -> str:
    """A process-independent text of an optimizer's or scheduler's setting (no ids or addresses)."""
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return repr(value)
    if isinstance(value, torch.Tensor):
        return f"tensor({value.dtype}, {list(value.shape)}, {_tensor_digest(value)})"
    if isinstance(value, np.ndarray):
        return f"array({value.dtype}, {list(value.shape)}, {hashlib.sha256(value.tobytes()).hexdigest()[:16]})"
    if depth < 6 and isinstance(value, list | tuple):
        return f"{type(value).__name__}[{', '.join(_canonical(v, depth + 1) for v in value)}]"
    if depth < 6 and isinstance(value, dict):
        items = (f"{_canonical(k, depth + 1)}: {_canonical(v, depth + 1)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return describe(value)  # a function, class or other object: its name, never its address


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch's, numpy's and Python's global generators seeded with ``seed``, restored afterwards."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


#: The seed the fingerprint's model is built under (any fixed one; the runs' models use their own).
FINGERPRINT_SEED = 0


def build_digest(factory: Callable[[], nn.Module], recipe: Recipe) -> str:
    """A digest of what ``factory`` and ``recipe`` build, so that values their code closes over (a
    width, a learning rate) are part of the fingerprint too, not only their source text.

    The model is built under a fixed seed and described by ``repr(model)`` (addresses removed)
    and every parameter's and buffer's name, shape, dtype, ``requires_grad`` and initial values;
    then ``recipe.optimizer`` is built on it (its type, each parameter group's settings but its
    parameters, and its defaults) and ``recipe.schedule`` on that (its ``state_dict``). The model
    is built twice: a tensor whose values differ between the two builds (``torch.empty`` left
    uninitialised, say) contributes its name, shape and dtype only, so the digest is the same in
    every process. Refuses (:class:`PrivdynError`) a factory that returns no ``nn.Module`` and
    an optimizer factory that returns no Optimizer.
    """
    return _built_and_digest(factory, recipe)[1]


def _built_and_digest(factory: Callable[[], nn.Module], recipe: Recipe) -> tuple[nn.Module, str]:
    with _seeded(FINGERPRINT_SEED):
        model = built_model(factory)
        opt = built_optimizer(recipe, model.parameters())
        groups = [{"n_params": len(g["params"]), **{k: v for k, v in g.items() if k != "params"}}
                  for g in opt.param_groups]
        parts = [_ADDRESS.sub("", repr(model)), describe(opt), _canonical(groups), _canonical(dict(opt.defaults))]
        if recipe.schedule is not None:
            schedule = recipe.schedule(opt)
            state = schedule.state_dict() if hasattr(schedule, "state_dict") else {}
            parts += [describe(schedule), _canonical(state)]
    with _seeded(FINGERPRINT_SEED):
        again = dict(_named_tensors(built_model(factory)))
    for name, t in _named_tensors(model):
        values = _tensor_digest(t)
        other = again.get(name)
        if other is None or other.shape != t.shape or _tensor_digest(other) != values:
            values = "not reproducible"
        parts.append(f"{name} {list(t.shape)} {t.dtype} {t.requires_grad} {values}")
    return model, hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for name, p in model.named_parameters():
        yield f"param {name}", p
    for name, b in model.named_buffers():
        yield f"buffer {name}", b


def check_model_and_recipe(factory: Callable[[], nn.Module], recipe: Recipe, x: torch.Tensor,
                           num_classes: int) -> tuple[type[nn.Module], str]:
    """Check, before anything is written, that ``factory`` builds an ``nn.Module`` mapping the batch
    ``x`` to logits ``[B, num_classes]`` and that ``recipe.optimizer`` builds an Optimizer (a
    :class:`PrivdynError` otherwise); returns the model's class and :func:`build_digest`."""
    model, digest = _built_and_digest(factory, recipe)
    model = model.to(x.device).eval()
    with torch.no_grad():
        try:
            out = model(x)
        except Exception as e:  # noqa: BLE001  # the user's forward: say which input it was given
            raise PrivdynError(f"the model {describe(factory)} fails on a batch of the data's inputs "
                               f"{list(x.shape)}: {type(e).__name__}: {e}") from e
    check_logits(out, len(x), num_classes, "privdyn.audit")
    return type(model), digest


@dataclass(frozen=True)
class BatchingPlan:
    """Whether the models train as stacked groups, and why (recorded and logged)."""

    batched: bool
    reason: str


def plan_batching(factory: Callable[[], nn.Module], recipe: Recipe, x: torch.Tensor, y: torch.Tensor,
                  seed: int, device: torch.device) -> BatchingPlan:
    """Decide batched or one-at-a-time training for a model factory and recipe (see the module docstring).

    The probe builds two models both ways and compares their eval-mode outputs on a few samples
    of ``x`` (before any training step, so BatchNorm's running statistics agree), then runs a
    training loss and backward on the batched pair: anything vmap cannot batch (data-dependent
    control flow, ``.item()``, unsupported in-place updates) or that gives other outputs falls back.
    """
    parts = recipe.custom_parts()
    if parts:
        return BatchingPlan(False, f"the recipe's {', '.join(parts)} runs on a plain nn.Module")
    probe = factory()
    opt = recipe.optimizer(probe.parameters())
    if not isinstance(opt, ELEMENTWISE):
        return BatchingPlan(False, f"optimizer {describe(opt)} is not known to act element by element, so "
                                   "stacked models could influence each other")
    if len(opt.param_groups) > 1:
        return BatchingPlan(False, "the optimizer has several parameter groups, which stacked parameters "
                                   "cannot keep apart")
    xb, yb = x[:4], y[:4]
    try:
        group = EnsembleGroup(factory, [0, 1], seed, device)
        batched_out = group.forward(xb, train=False, shared_input=True).detach()
        group.loss(torch.stack([xb, xb]), torch.stack([yb, yb])).backward()
    except Exception as e:  # noqa: BLE001  # whatever vmap or a grouped layer refuses
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return BatchingPlan(False, f"torch.func cannot batch the model ({type(e).__name__}: {first[:200]})")
    for k in range(2):
        torch.manual_seed(model_seed(seed, k))
        module = factory().to(device).eval()
        with torch.no_grad():
            own = module(xb)
        if own.shape != batched_out[k].shape or not torch.allclose(own, batched_out[k], rtol=1e-4, atol=1e-5):
            return BatchingPlan(False, "the batched forward does not reproduce the module's own outputs")
    return BatchingPlan(True, "the model batches under torch.func and the optimizer acts element by element")


class RecipeStackedTrainer(StackedTrainer):
    """A stacked group trained with a user's optimizer and epoch scheduler (see :class:`Recipe`)."""

    def __init__(self, group: EnsembleGroup, recipe: Recipe, x: torch.Tensor, y: torch.Tensor,
                 in_idx: torch.Tensor):
        super().__init__(group, recipe.optimizer(group.params.values()), None, recipe.batch_size, False, x, y,
                         in_idx)
        self.schedule = recipe.schedule(self.opt) if recipe.schedule is not None else None

    def train_epoch(self, epoch: int, step: int) -> int:
        """One epoch of every model of the group, then one step of the scheduler."""
        step = super().train_epoch(epoch, step)
        if self.schedule is not None:
            self.schedule.step()
        return step

    def state(self, epoch: int, step: int) -> dict:
        """The stacked trainer's state and the scheduler's."""
        return {**super().state(epoch, step), "schedule": _schedule_state(self.schedule)}

    def load_state(self, state: dict) -> tuple[int, int]:
        """Restore :meth:`state`."""
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        return super().load_state(state)


def _schedule_state(schedule: Any) -> dict:
    return schedule.state_dict() if schedule is not None else {}


class ModuleTrainer:
    """One model, a plain ``nn.Module``, trained with a user's recipe on its IN samples ``in_idx`` ``[n]``.

    It is its own ``group`` (``model_ids``, ``evaluate``, ``model_state_dicts``), so privdyn's
    train stage drives it like a stacked group of one.
    """

    def __init__(self, factory: Callable[[], nn.Module], recipe: Recipe, model_id: int, seed: int,
                 device: torch.device, x: torch.Tensor, y: torch.Tensor, in_idx: torch.Tensor):
        torch.manual_seed(model_seed(seed, model_id))
        self.model = factory().to(device)
        self.recipe, self.seed, self.device = recipe, seed, device
        self.opt = recipe.optimizer(self.model.parameters())
        self.schedule = recipe.schedule(self.opt) if recipe.schedule is not None else None
        self.model_ids = [model_id]
        self.group = self
        self.x, self.y, self.in_idx = x, y, in_idx

    def _batches(self, order: torch.Tensor, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, self.model_ids[0], epoch, AUGMENT_STREAM) if self.recipe.augment else None
        for idx in order.split(self.recipe.batch_size):
            xb = self.x[idx]
            if self.recipe.augment is not None:
                assert gen is not None
                xb = self.recipe.augment(xb, gen)
            yield xb, self.y[idx]

    def train_epoch(self, epoch: int, step: int) -> int:
        """One epoch (1-based) in the model's own seeded order; returns the global step reached."""
        m, r = self.model_ids[0], self.recipe
        torch.manual_seed(stream_seed(self.seed, m, epoch, DROPOUT_STREAM))
        n = len(self.in_idx)
        order = self.in_idx[epoch_permutation(self.seed, m, epoch, n).to(self.device)]
        self.model.train()
        if r.train_epoch is not None:
            r.train_epoch(self.model, self.opt, self._batches(order, epoch), epoch)
            step += -(-n // r.batch_size)
        else:
            for xb, yb in self._batches(order, epoch):
                if r.train_step is not None:
                    r.train_step(self.model, self.opt, xb, yb)
                else:
                    self.opt.zero_grad(set_to_none=True)
                    nn.functional.cross_entropy(self.model(xb), yb).backward()
                    self.opt.step()
                step += 1
        if self.schedule is not None:
            self.schedule.step()
        return step

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, queries: list[str], batch_size: int,
                 with_logits: bool = False) -> dict[str, np.ndarray]:
        """Eval-mode signals ``[1, N, Q]`` of the model (its train/eval mode restored after)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return evaluate_signals(lambda xb: self.model(xb).unsqueeze(0), 1, x, y, queries, batch_size,
                                    with_logits)
        finally:
            self.model.train(was_training)

    def model_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """The model's ``state_dict`` (CPU copies), as a one-element list."""
        return [{k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}]

    def state(self, epoch: int, step: int) -> dict:
        """Everything needed to resume exactly (tensors, numbers and dicts: weights_only-safe)."""
        return {"model": self.model_state_dicts()[0], "optimizer": self.opt.state_dict(),
                "schedule": _schedule_state(self.schedule), "epoch": epoch, "step": step,
                "model_ids": list(self.model_ids)}

    def load_state(self, state: dict) -> tuple[int, int]:
        """Restore :meth:`state`; returns (epoch, step)."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        return int(state["epoch"]), int(state["step"])


def recipe_trainers(factory: Callable[[], nn.Module], recipe: Recipe, batched: bool) -> MakeTrainer:
    """The train stage's trainer maker for a user's model and recipe: a stacked group when
    ``batched``, else a :class:`ModuleTrainer` (the groups are then of one model)."""

    def make(cfg: RunConfig, ds: Dataset, membership: np.ndarray, task: GroupTask, device: torch.device) -> Any:
        x, y = torch.from_numpy(ds.x_pool).to(device), torch.from_numpy(ds.y_pool).to(device)
        ids = list(task.model_ids)
        in_idx = torch.from_numpy(np.stack([np.flatnonzero(r) for r in membership[ids]])).to(device)
        if batched:
            return RecipeStackedTrainer(EnsembleGroup(factory, ids, cfg.seed, device), recipe, x, y, in_idx)
        assert len(ids) == 1, "one-at-a-time training plans groups of one model"
        return ModuleTrainer(factory, recipe, ids[0], cfg.seed, device, x, y, in_idx[0])

    return make


def register_user_queries(queries: Sequence[str | Callable[[torch.Tensor], torch.Tensor]]) -> list[str]:
    """Query names for the config: names as they are; each function ``f(x) -> x'`` (a deterministic
    transform of a batch) registered in this session as ``user.<module.qualname>``."""
    from privdyn.config import USER_QUERY
    from privdyn.registry import QUERIES
    from privdyn.training.queries import Query

    names = []
    for q in queries:
        if isinstance(q, str):
            names.append(q)
            continue
        if not callable(q):
            raise PrivdynError(f"queries: give names or functions of a batch, got {type(q).__name__}")
        name = USER_QUERY + describe(q).replace(":", "_")

        def check(args: str, name: str = name) -> None:
            if args:
                raise ValueError(f"query {name!r} takes no arguments")

        def apply(x: torch.Tensor, _args: str, fn: Callable[[torch.Tensor], torch.Tensor] = q) -> torch.Tensor:
            return fn(x)

        QUERIES.register(name, Query(check, apply, name), replace=True)
        names.append(name)
    return names
