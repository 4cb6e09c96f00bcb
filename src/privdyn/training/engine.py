"""The train stage: model groups trained with a checkpoint signal at every checkpoint epoch.

The unit of work is a :class:`GroupTask` (a few model indices): serialisable, independent of the
other groups, and resumable at its last completed checkpoint. After every checkpoint a group
writes that checkpoint's signals, then its full training state, both atomically, so a run killed
at any moment resumes without redoing finished checkpoints and ends with the same arrays.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from privdyn.config import RunConfig
from privdyn.data import Dataset
from privdyn.models import build_model
from privdyn.store import atomic
from privdyn.store.rundir import RunDir
from privdyn.training.ensemble import EnsembleGroup, cosine_lr
from privdyn.training.signals import SIGNALS


@dataclass(frozen=True)
class GroupTask:
    """Models ``model_ids`` of a run, trained together as group ``index``."""

    index: int
    model_ids: tuple[int, ...]


def plan_groups(n_models: int, group_size: int) -> list[GroupTask]:
    return [GroupTask(g, tuple(range(s, min(s + group_size, n_models))))
            for g, s in enumerate(range(0, n_models, group_size))]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _save_state(path, state: dict) -> None:
    with atomic.atomic_path(path) as tmp:
        torch.save(state, tmp)


def train_group(cfg: RunConfig, ds: Dataset, membership: np.ndarray, task: GroupTask, run: RunDir,
                device: torch.device, on_epoch: Any = None) -> None:
    """Train one group to the end, writing ``t{idx}.npz`` signal files and a resumable state."""
    gdir = run.group_dir(task.index)
    if (gdir / "done").exists():
        return
    tc, oc = cfg.training, cfg.training.optimizer
    ckpts = cfg.checkpoint_epochs()
    factory = lambda: build_model(cfg.model.arch, ds.input_shape, ds.num_classes,  # noqa: E731
                                  width=cfg.model.width, depth=cfg.model.depth,
                                  norm=cfg.model.norm, dropout=cfg.model.dropout)
    group = EnsembleGroup(factory, list(task.model_ids), cfg.seed, device)
    opt = group.make_optimizer(oc.name, oc.lr, oc.momentum, oc.nesterov, oc.weight_decay)
    x_pool = torch.from_numpy(ds.x_pool).to(device)
    y_pool = torch.from_numpy(ds.y_pool).to(device)
    x_test = torch.from_numpy(ds.x_test).to(device)
    y_test = torch.from_numpy(ds.y_test).to(device)
    z = membership[list(task.model_ids)]
    in_idx = torch.from_numpy(np.stack([np.flatnonzero(r) for r in z])).to(device)
    steps_per_epoch = -(-in_idx.shape[1] // tc.batch_size)
    total = steps_per_epoch * tc.epochs
    lr_at = (lambda s: cosine_lr(oc.lr, s, total)) if tc.schedule == "cosine" else (lambda s: oc.lr)

    epoch, step = 0, 0
    state_path = gdir / "state.pt"
    if state_path.exists():
        epoch, step = group.load_state(torch.load(state_path, weights_only=True, map_location=device), opt)

    def checkpoint(e: int) -> None:
        t = ckpts.index(e)
        pool = group.evaluate(x_pool, y_pool, cfg.queries, tc.eval_batch_size)
        test = group.evaluate(x_test, y_test, cfg.queries, tc.eval_batch_size)
        atomic.save_npz(gdir / f"t{t:03d}.npz", **pool, **{f"test_{k}": v for k, v in test.items()})
        _save_state(state_path, group.state(opt, e, step))

    if epoch == 0 and 0 in ckpts and not (gdir / "t000.npz").exists():
        checkpoint(0)
    for e in range(epoch + 1, tc.epochs + 1):
        step = group.train_epoch(x_pool, y_pool, in_idx, e, tc.batch_size, opt, lr_at, step)
        if e in ckpts:
            checkpoint(e)
        if on_epoch is not None:
            on_epoch()
    atomic.write_text(gdir / "done", "done\n")


def assemble_signals(cfg: RunConfig, run: RunDir, groups: list[GroupTask], n_pool: int, n_test: int) -> None:
    """Gather the groups' per-checkpoint files into ``signals/NAME.npy`` arrays ``[T, M, N, Q]``."""
    T, M, Q = len(cfg.checkpoint_epochs()), cfg.training.n_models, len(cfg.queries)
    for split, n, prefix in (("pool", n_pool, ""), ("test", n_test, "test_")):
        for name in SIGNALS:
            dtype = bool if name == "correct" else np.float32
            with atomic.open_memmap_atomic(run.signal_path(name, split), (T, M, n, Q), dtype) as arr:
                for g in groups:
                    ids = list(g.model_ids)
                    for t in range(T):
                        with np.load(run.group_dir(g.index) / f"t{t:03d}.npz", allow_pickle=False) as f:
                            arr[t, ids] = f[prefix + name]


def run_train_stage(cfg: RunConfig, run: RunDir, ds: Dataset, membership: np.ndarray, progress: Any = None) -> None:
    """Train every group (skipping finished ones), then assemble the signal arrays."""
    device = resolve_device(cfg.training.device)
    groups = plan_groups(cfg.training.n_models, cfg.training.group_size)
    total = len(groups) * cfg.training.epochs
    task_id = progress.add_task("train", total=total) if progress else None
    for g in groups:
        done_before = (run.group_dir(g.index) / "done").exists()
        if progress and done_before:
            progress.advance(task_id, cfg.training.epochs)
        train_group(cfg, ds, membership, g, run, device,
                    on_epoch=(lambda: progress.advance(task_id)) if progress else None)
    assemble_signals(cfg, run, groups, ds.n_pool, len(ds.y_test))
    atomic.save_npy(run.path / "epochs.npy", np.asarray(cfg.checkpoint_epochs(), dtype=np.int64))
    shutil.rmtree(run.path / "train", ignore_errors=True)
