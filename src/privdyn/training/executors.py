"""Where the model groups of a run train: in this process, in one process per device, or as Ray tasks.

Every group is independent, resumable from its own saved state and writes only its own files
(``train/group_GGG/``), so the groups can run anywhere that sees the run directory, and the
result does not depend on where they ran: each model's initialisation, data order and updates
depend on (seed, model index) alone. The driver keeps the run's lock and assembles the arrays.

- ``local``, one device: the groups one after another (``training.device``).
- ``local``, several devices (``training.devices``): one worker process per device, each group
  on the device its index selects (round robin), so a machine's GPUs train at once.
- ``ray``: every group a Ray task with its CPU/GPU resources (``ray`` section of the config);
  the dataset goes to the object store once; a task whose worker dies is retried and resumes
  from its group's last saved state; progress comes back to the driver's bar per epoch.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import numpy as np
import torch

from privdyn.config import RunConfig
from privdyn.data import Dataset
from privdyn.errors import PrivdynError
from privdyn.store.rundir import RunDir
from privdyn.training.engine import GroupTask, MakeTrainer, make_trainer, resolve_device, train_group

Advance = Callable[[int], Any] | None


def devices_of(cfg: RunConfig) -> list[torch.device]:
    """The devices groups train on: ``training.devices`` (``auto``: every visible GPU, else the
    CPU), or ``training.device`` alone when no list is given."""
    tc = cfg.training
    if tc.devices == "auto":
        n = torch.cuda.device_count()
        return [torch.device(f"cuda:{i}") for i in range(n)] if n else [torch.device("cpu")]
    if tc.devices:
        return [resolve_device(d) for d in tc.devices]
    return [resolve_device(tc.device)]


def run_groups(cfg: RunConfig, run: RunDir, ds: Dataset, membership: np.ndarray, groups: list[GroupTask],
               advance: Advance = None, make: MakeTrainer | None = None) -> dict[str, Any]:
    """Train every group with the config's backend; returns the summed counts of
    :func:`~privdyn.training.engine.train_group` and where the groups ran."""
    devices = devices_of(cfg)
    if make is not None and (cfg.training.backend == "ray" or len(devices) > 1):
        raise PrivdynError("training.backend=ray and several training.devices are for privdyn's registered models; "
                           "a model and recipe given in Python (privdyn.audit) are closures of this session and "
                           "train here, on one device. Leave training.backend and training.devices at their defaults.")
    if cfg.training.backend == "ray":
        return _ray(cfg, run, ds, membership, groups, advance)
    if len(devices) > 1:
        return _processes(cfg, run, ds, membership, groups, devices, advance)
    totals: Counter[str] = Counter()
    for g in groups:
        totals.update(train_group(cfg, ds, membership, g, run, devices[0], advance, make or make_trainer))
    return {**totals, "backend": "local", "devices": [str(devices[0])]}


def _train_on(cfg_data: dict[str, Any], run_path: str, ds: Dataset, membership: np.ndarray,
              task: dict[str, Any], device: str, report: Any = None) -> dict[str, Any]:
    """One group in a worker (a process or a Ray task): the config arrives as JSON-ready data."""
    cfg = RunConfig.model_validate(cfg_data)
    group = GroupTask.from_dict(task)
    tick = _reporter(report, group.index) if report is not None else None
    return train_group(cfg, ds, membership, group, RunDir(run_path), torch.device(device), tick)


def _reporter(report: Any, group: int) -> Callable[[int], None]:
    """This attempt's progress as the group's running total of epochs (see :class:`_Progress`)."""
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        report.advance.remote(group, done)

    return tick


def _processes(cfg: RunConfig, run: RunDir, ds: Dataset, membership: np.ndarray, groups: list[GroupTask],
               devices: list[torch.device], advance: Advance) -> dict[str, Any]:
    """One worker process per device (spawned: CUDA needs it); group g on device g mod D."""
    totals: Counter[str] = Counter()
    data = cfg.model_dump(mode="json")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(devices), mp_context=ctx) as pool:
        futures = {pool.submit(_train_on, data, str(run.path), ds, membership, g.to_dict(),
                               str(devices[g.index % len(devices)])): g for g in groups}
        for done in as_completed(futures):
            totals.update(done.result())
            if advance is not None:
                advance(cfg.training.epochs)
    return {**totals, "backend": "local", "devices": [str(d) for d in devices]}


def _ray(cfg: RunConfig, run: RunDir, ds: Dataset, membership: np.ndarray, groups: list[GroupTask],
         advance: Advance) -> dict[str, Any]:
    """Every group a Ray task; progress reported per epoch through a small actor."""
    try:
        import ray
    except ImportError:
        raise PrivdynError("training.backend=ray needs Ray: install the extra with `pip install 'privdyn[ray]'`, "
                           "or set training.backend=local.") from None
    rc = cfg.ray
    started = not ray.is_initialized()
    if started and rc.address:
        _check_reachable(rc.address)
    if started:
        local: dict[str, Any] = {} if rc.address else {"_node_ip_address": "127.0.0.1", "num_cpus": rc.local_cpus}
        try:
            ray.init(address=rc.address or "local", include_dashboard=False, log_to_driver=False, **local)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise PrivdynError(f"ray.address={rc.address!r}: could not connect to a Ray cluster ({e}). Start one with "
                               "`ray start --head` and pass its address, or leave ray.address unset for a local "
                               "one.") from None
    try:
        gpus = rc.gpus_per_task if rc.gpus_per_task is not None else (1.0 if torch.cuda.is_available() else 0.0)
        task: Any = ray.remote(num_cpus=rc.cpus_per_task, num_gpus=gpus, max_retries=rc.max_retries,
                               retry_exceptions=False)(_train_on)
        progress: Any = ray.remote(num_cpus=0)(_Progress).remote()
        ds_ref, z_ref = ray.put(ds), ray.put(membership)
        device = "cuda" if gpus > 0 else "cpu"
        data = cfg.model_dump(mode="json")
        pending = [task.remote(data, str(run.path), ds_ref, z_ref, g.to_dict(), device, progress) for g in groups]
        totals: Counter[str] = Counter()
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            if advance is not None:
                advance(ray.get(progress.take.remote()))
            for ref in done:
                try:
                    totals.update(ray.get(ref))
                except ray.exceptions.RayError as e:
                    raise PrivdynError(f"a training task failed on the Ray cluster after {rc.max_retries} retries "
                                       f"({type(e).__name__}: {str(e).splitlines()[0][:300]}). Finished groups are "
                                       "kept: rerun to resume the others.") from None
        if advance is not None:
            advance(ray.get(progress.take.remote()))
        return {**totals, "backend": "ray", "devices": [device], "ray_address": rc.address or "local"}
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail in seconds, not after Ray's minutes of reconnecting, when nothing listens at ``address``."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise PrivdynError(f"ray.address={address!r}: could not connect to a Ray cluster ({e}). Start one with "
                           "`ray start --head` and pass its HOST:PORT, or leave ray.address unset for a local "
                           "one.") from None


class _Progress:
    """A Ray actor that sums the epochs tasks report, for the driver to take and show.

    Each attempt of a group reports its running total of epochs (resumed ones included), and
    only a total beyond the group's best so far counts: a retried task, which resumes from its
    group's last saved state and reports those epochs again, adds only the epochs that are new.
    """

    def __init__(self) -> None:
        self.pending = 0
        self.best: dict[int, int] = {}

    def advance(self, group: int, done: int) -> None:
        """Group ``group`` has ``done`` epochs behind it (in this attempt, resumed ones included)."""
        gain = done - self.best.get(group, 0)
        if gain > 0:
            self.best[group] = done
            self.pending += gain

    def take(self) -> int:
        """The epochs reported since the last call."""
        n, self.pending = self.pending, 0
        return n
