"""The train stage: model groups trained with a checkpoint signal at every checkpoint epoch.

The unit of work is a :class:`GroupTask` (a few model indices): serialisable, independent of the
other groups, and resumable at its last completed checkpoint. At every checkpoint a group first
writes its full training state, then that checkpoint's signals (``t{idx}.npz``), both
atomically. A run killed at any moment resumes from the last state, writes what that checkpoint
still lacks, re-trains only the epochs since it, never rewrites a finished checkpoint file, and
ends with the same arrays as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privdyn.config import RunConfig
from privdyn.data import Dataset
from privdyn.errors import PrivdynError
from privdyn.models import build_model
from privdyn.store import arrays, atomic, integrity
from privdyn.store.rundir import RunDir
from privdyn.training.ensemble import EnsembleGroup
from privdyn.training.schedules import lr_schedule
from privdyn.training.signals import SIGNALS
from privdyn.training.weights import save_weights, weights_meta


@dataclass(frozen=True)
class GroupTask:
    """Models ``model_ids`` of a run, trained together as group ``index``."""

    index: int
    model_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, so another process or machine can be handed the task."""
        return {"index": self.index, "model_ids": list(self.model_ids)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroupTask:
        """The task that :meth:`to_dict` wrote."""
        return cls(int(data["index"]), tuple(int(m) for m in data["model_ids"]))


def plan_groups(n_models: int, group_size: int) -> list[GroupTask]:
    """Models ``0..n_models-1`` in consecutive groups of ``group_size`` (the last may be smaller)."""
    return [GroupTask(g, tuple(range(s, min(s + group_size, n_models))))
            for g, s in enumerate(range(0, n_models, group_size))]


def effective_group_size(cfg: RunConfig) -> int:
    """``training.group_size``, except 1 under DP-SGD (Opacus trains one plain module at a time)."""
    return 1 if cfg.training.dp.enabled else cfg.training.group_size


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PrivdynError(f"training.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PrivdynError(f"training.device={name} but no CUDA device is visible; use auto or cpu")
    return device


def check_training_data(cfg: RunConfig, ds: Dataset) -> None:
    """Checks that need the data: augmentation is for images only; a ``remove`` defence must
    leave every model members to train on (the pool size is known only now when the config
    leaves ``dataset.n_pool`` unset)."""
    if cfg.training.augment != "none" and len(ds.input_shape) != 3:
        raise PrivdynError(f"training.augment={cfg.training.augment} needs images [C, H, W]; dataset "
                           f"{ds.name} has inputs of shape {ds.input_shape}. Set training.augment=none.")
    try:
        cfg.check_removal(ds.n_pool // 2)
    except ValueError as err:
        raise PrivdynError(f"{err}.") from None


#: Makes the trainer of one group: ``(cfg, dataset, membership, task, device) -> trainer``. A
#: trainer has ``group`` (with ``model_ids``, ``evaluate`` and ``model_state_dicts``), ``x``, ``y``,
#: ``train_epoch(epoch, step) -> step``, ``state(epoch, step)`` and ``load_state(state)``.
MakeTrainer = Callable[["RunConfig", Dataset, np.ndarray, "GroupTask", torch.device], Any]


def make_trainer(cfg: RunConfig, ds: Dataset, membership: np.ndarray, task: GroupTask, device: torch.device) -> Any:
    """The trainer of one group: stacked (plain or SAM) or, under DP, Opacus's DP-SGD."""
    from privdyn.training.trainer import StackedTrainer

    tc = cfg.training
    mc = cfg.model.model_dump(exclude={"arch"})
    group = EnsembleGroup(lambda: build_model(cfg.model.arch, ds.input_shape, ds.num_classes, **mc),
                          list(task.model_ids), cfg.seed, device, tc.precision, tc.eval_precision,
                          memory_format(tc.memory_format, device))
    if device.type == "cuda":  # process-wide switches; fp32 and bf16 keep full-precision matmuls
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tc.precision == "tf32"
    x = torch.from_numpy(ds.x_pool).to(device)
    y = torch.from_numpy(ds.y_pool).to(device)
    in_idx = torch.from_numpy(np.stack([np.flatnonzero(r) for r in membership[list(task.model_ids)]])).to(device)
    steps_per_epoch = -(-in_idx.shape[1] // tc.batch_size)
    lr_at = lr_schedule(tc.schedule, tc.optimizer.lr, steps_per_epoch, tc.epochs, tc.milestones, tc.gamma)
    augment = tc.augment == "flip_crop"
    if tc.dp.enabled:
        from privdyn.training.dp import DPTrainer

        trainer: Any = DPTrainer(group, tc.optimizer, tc.dp, lr_at, tc.batch_size, augment, x, y, in_idx)
    else:
        trainer = StackedTrainer.from_config(group, tc.optimizer, lr_at, tc.batch_size, augment, x, y, in_idx,
                                             tc.compile)
    if cfg.defence.enabled:
        from privdyn.training.defence import Defence

        trainer.defence = Defence.from_config(cfg, ds, in_idx.cpu().numpy(), list(task.model_ids), device)
    return trainer


def memory_format(asked: str, device: torch.device) -> str:
    """The activation layout for ``training.memory_format`` on ``device`` (auto: NHWC on CUDA only)."""
    if asked == "auto":
        return "channels_last" if device.type == "cuda" else "contiguous"
    return asked


def _clock(device: torch.device) -> float:
    """Seconds now, after the device's queued work (so a split of train and eval time is honest)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _save_state(path, state: dict) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_group(cfg: RunConfig, ds: Dataset, membership: np.ndarray, task: GroupTask, run: RunDir,
                device: torch.device, advance: Callable[[int], Any] | None = None,
                make: MakeTrainer = make_trainer) -> dict[str, Any]:
    """Train one group to the end (resuming from its last state); ``advance(n)`` reports epochs.

    Returns what this call did: epochs skipped thanks to a saved state, epochs trained,
    checkpoints evaluated, and the seconds spent training and evaluating.
    """
    tick = advance or (lambda n: None)
    E, gdir = cfg.training.epochs, run.group_dir(task.index)
    if (gdir / "done").exists():
        tick(E)
        return {"resumed_epochs": E, "trained_epochs": 0, "evaluations": 0}
    trainer = make(cfg, ds, membership, task, device)
    group, ckpts, save_at = trainer.group, cfg.checkpoint_epochs(), set(cfg.checkpoints.save_weights)
    x_pool, y_pool = trainer.x, trainer.y
    x_test, y_test = torch.from_numpy(ds.x_test).to(device), torch.from_numpy(ds.y_test).to(device)
    meta = weights_meta(cfg.model.model_dump(mode="json"), ds.input_shape, ds.num_classes)
    counts: dict[str, Any] = {"resumed_epochs": 0, "trained_epochs": 0, "evaluations": 0,
                              "train_seconds": 0.0, "eval_seconds": 0.0}
    state_path = gdir / "state.pt"

    def finish(e: int, step: int, resumed: bool) -> None:
        """Write what epoch ``e`` owes that is not on disk yet: state, signals, weights."""
        if e in ckpts:
            if not resumed:
                _save_state(state_path, trainer.state(e, step))
            t_path = checkpoint_file(run, task.index, ckpts.index(e))
            if not t_path.exists():
                q, bs, lg = cfg.queries, cfg.training.eval_batch_size, cfg.checkpoints.save_logits
                t0 = _clock(device)
                pool, test = group.evaluate(x_pool, y_pool, q, bs, lg), group.evaluate(x_test, y_test, q, bs, lg)
                counts["eval_seconds"] += _clock(device) - t0
                save_checkpoint_signals(t_path, pool, test)
                counts["evaluations"] += 1
        if e in save_at:
            save_weights(run.path, e, group.model_ids, group.model_state_dicts(), meta)

    from privdyn.training.defence import after_epoch  # flags at-risk samples when a defence is on

    epoch, step, resumed = 0, 0, state_path.exists()
    if resumed:
        epoch, step = trainer.load_state(torch.load(state_path, weights_only=True, map_location=device))
        counts["resumed_epochs"] = epoch
        tick(epoch)
    finish(epoch, step, resumed)
    after_epoch(trainer, run, task.index, ckpts, epoch)
    for e in range(epoch + 1, E + 1):
        t0 = _clock(device)
        step = trainer.train_epoch(e, step)
        counts["train_seconds"] += _clock(device) - t0
        counts["trained_epochs"] += 1
        finish(e, step, resumed=False)
        after_epoch(trainer, run, task.index, ckpts, e)
        tick(1)
    atomic.write_text(gdir / "done", "done\n")
    return counts


def checkpoint_file(run: RunDir, group: int, t: int) -> Path:
    """``RUN/train/group_GGG/tTTT.npz``: group ``group``'s signals at checkpoint index ``t``."""
    return run.group_dir(group) / f"t{t:03d}.npz"


def save_checkpoint_signals(path: Path, pool: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> None:
    """One checkpoint's signals of a group (``[K, N, Q]`` per name, test split prefixed ``test_``),
    written atomically with the writing process's id (the resume record)."""
    named: dict[str, Any] = {**pool, **{f"test_{k}": v for k, v in test.items()}, "writer_pid": np.int64(os.getpid())}
    atomic.save_npz(path, **named)


def stored_names(cfg: RunConfig) -> tuple[str, ...]:
    """The arrays training stores per split: every signal, and the logits when asked for."""
    return (*SIGNALS, "logits") if cfg.checkpoints.save_logits else SIGNALS


def assemble_signals(cfg: RunConfig, run: RunDir, groups: list[GroupTask], n_pool: int, n_test: int) -> dict[str, int]:
    """Gather the groups' per-checkpoint files into ``signals/NAME.zarr`` arrays ``[T, M, N, Q]``,
    one checkpoint at a time (each group's file is read once per checkpoint).

    Returns how many checkpoint files each process wrote (pid -> count): the resume record.
    """
    T, M, Q = len(cfg.checkpoint_epochs()), cfg.training.n_models, len(cfg.queries)
    size, prefix = {"pool": n_pool, "test": n_test}, {"pool": "", "test": "test_"}
    keys = [(split, name) for split in ("pool", "test") for name in stored_names(cfg)]  # (split, signal)
    writers: Counter[str] = Counter()
    with np.load(checkpoint_file(run, groups[0].index, 0), allow_pickle=False) as f:
        tail = {key: f[prefix[key[0]] + key[1]].shape[3:] for key in keys}  # the logits' classes
    with contextlib.ExitStack() as stack:
        out = {(split, name): stack.enter_context(arrays.create_array(
                   run.signal_path(name, split), (T, M, size[split], Q, *tail[split, name]),
                   bool if name == "correct" else np.float32))
               for split, name in keys}
        for t in range(T):
            chunk = {key: np.empty(out[key].shape[1:], out[key].dtype) for key in keys}
            for g in groups:
                path = checkpoint_file(run, g.index, t)
                integrity.verify(path)
                with np.load(path, allow_pickle=False) as f:
                    for split, name in keys:
                        chunk[split, name][list(g.model_ids)] = f[prefix[split] + name]
                    writers[str(int(f["writer_pid"]))] += 1
            for key in keys:
                out[key][t] = chunk[key]
    return dict(writers)


def dp_report(cfg: RunConfig, n_train: int) -> dict[str, Any]:
    """Epsilon per model at every checkpoint (all models share it: same N_train, q and steps)."""
    from privdyn.analysis.results import num
    from privdyn.training.dp import dp_epsilon, dp_steps_per_epoch

    dp, B = cfg.training.dp, cfg.training.batch_size
    delta = dp.delta if dp.delta is not None else 1.0 / n_train
    q, spe = min(1.0, B / n_train), dp_steps_per_epoch(n_train, B)
    eps = [num(dp_epsilon(dp.noise_multiplier, q, e * spe, delta)) for e in cfg.checkpoint_epochs()]  # inf: null
    out = {"accountant": "rdp (opacus)", "sampling": "poisson", "delta": delta, "n_train": n_train,
           "noise_multiplier": dp.noise_multiplier, "max_grad_norm": dp.max_grad_norm, "sample_rate": q,
           "steps_per_epoch": spe, "epochs": cfg.checkpoint_epochs(), "epsilon_per_checkpoint": eps,
           "epsilon": {str(m): eps[-1] for m in range(cfg.training.n_models)},
           "note": "DP-SGD trains one model at a time (group_size forced to 1)"}
    if None in eps:
        out["epsilon_note"] = ("null: no finite epsilon (noise_multiplier 0 clips the gradients but adds no "
                               "noise, so the accountant's epsilon is infinite)")
    return out


def clean_up(run: RunDir) -> None:
    """Delete ``RUN/train`` (renamed first, so a kill never leaves it half deleted) and the
    temporary files that killed attempts left among the saved weights."""
    trash = run.path / ".train.trash"
    if (run.path / "train").exists():
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(run.path / "train", trash)
    shutil.rmtree(trash, ignore_errors=True)
    for tmp in (run.path / "weights").glob("epoch_*/.*.tmp"):
        tmp.unlink()


def finish_signals(cfg: RunConfig, run: RunDir, groups: list[GroupTask], n_pool: int, n_test: int) -> dict[str, int]:
    """Assemble the groups' files into the signal arrays, write ``dp.json`` under DP-SGD, then
    ``epochs.npy`` last (its presence says the arrays are complete) and delete ``RUN/train``.
    Returns :func:`assemble_signals`' resume record."""
    writers = assemble_signals(cfg, run, groups, n_pool, n_test)
    if cfg.training.dp.enabled:
        atomic.write_json(run.path / "dp.json", dp_report(cfg, n_pool // 2), strict=True)
    if cfg.defence.enabled:
        from privdyn.training.defence import write_flags

        write_flags(cfg, run, groups, n_pool)
    atomic.save_npy(run.path / "epochs.npy", np.asarray(cfg.checkpoint_epochs(), dtype=np.int64))
    clean_up(run)
    return writers


def run_train_stage(cfg: RunConfig, run: RunDir, ds: Dataset, membership: np.ndarray,
                    progress: Any = None, make: MakeTrainer | None = None,
                    group_size: int | None = None) -> dict[str, Any]:
    """Train every group (resuming unfinished ones), then assemble the signal arrays.

    ``make`` and ``group_size`` replace the config's trainer and group size (a model and recipe
    given in Python). Returns what this attempt did, for the manifest. ``epochs.npy`` is written
    last, so when it exists the arrays are complete and only the group files remain to delete.
    """
    if (run.path / "epochs.npy").exists():
        clean_up(run)
        return {"assembled_before": True}
    from privdyn.training.executors import run_groups

    check_training_data(cfg, ds)
    size = group_size or effective_group_size(cfg)
    groups = plan_groups(cfg.training.n_models, size)
    label = "train (1 at a time)" if size == 1 else "train"
    task_id = progress.add_task(label, total=len(groups) * cfg.training.epochs) if progress else None
    advance = (lambda n: progress.advance(task_id, n)) if progress else None
    where = run_groups(cfg, run, ds, membership, groups, advance, make)
    writers = finish_signals(cfg, run, groups, ds.n_pool, len(ds.y_test))
    return {**where, "groups": len(groups), "group_size": size, "checkpoint_writers": writers}
