"""Recording from a user's own training loop: :class:`Recorder` and ``privdyn assemble``.

A recorded run is a run directory whose ``source.kind`` is ``record``: privdyn draws the
membership (or takes the user's), the user trains model ``m`` on ``recorder.train_indices(m)``
in any loop, on any machine, and calls ``recorder.record(m, epoch, module)`` at every checkpoint
epoch. Each call evaluates the module on the whole pool and test split under every query and
writes one file, atomically::

    RUN/train/group_MMM/tTTT.npz    model MMM at checkpoint TTT (its index in ``checkpoints``):
                                    every signal [1, N, Q], the test split's as test_NAME, and
                                    the writer's pid; a .crc32 checksum sidecar beside it

so M trainings in M processes fill one run directory without a lock: each writes only its own
files, and the manifest is not touched until :func:`assemble_recorded`, which checks that every
(model, epoch) is there and intact, builds ``signals/NAME.zarr`` ``[T, M, N, Q]`` exactly as
privdyn's own training does, records their provenance and marks the train stage done. Then
score, analyze and report work unchanged. Assembling needs no data: the files hold everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from privdyn.config import TRAIN_SECTIONS, RunConfig, config_from_dict
from privdyn.data import Dataset
from privdyn.data.convert import as_dataset, data_fingerprint
from privdyn.errors import PrivdynError
from privdyn.store import atomic, integrity, provenance
from privdyn.store.rundir import RunDir
from privdyn.training.custom import check_logits
from privdyn.training.engine import (
    GroupTask,
    checkpoint_file,
    clean_up,
    finish_signals,
    save_checkpoint_signals,
    stored_names,
)
from privdyn.training.membership import balanced_membership, checked_membership
from privdyn.training.queries import apply_query
from privdyn.training.signals import evaluate_signals

#: What :meth:`Recorder.create` accepts as data: a privdyn Dataset or (x_pool, y_pool, x_test, y_test).
DataLike = Dataset | tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

#: The model label of a recorded run's config (the model is the user's; privdyn never builds it).
RECORDED_ARCH = "recorded"


def check_membership(membership: Any, n_models: int, n_pool: int) -> np.ndarray:
    """A user's membership as bool ``[M, N]`` (:func:`~privdyn.training.membership.checked_membership`),
    every model trained on >= 1 sample; otherwise a :class:`PrivdynError`."""
    shape = np.shape(membership)
    if shape != (n_models, n_pool):
        raise PrivdynError(f"membership: expected shape [n_models, N] = [{n_models}, {n_pool}], got {list(shape)}")
    z = checked_membership(membership, "membership")
    empty = np.flatnonzero(z.sum(1) == 0)
    if len(empty):
        raise PrivdynError(f"membership: model(s) {empty[:5].tolist()} train on no sample")
    return np.ascontiguousarray(z)


def _as_epoch(e: Any) -> int:
    """An epoch given as an integer (or an integral float such as 5.0); ValueError for 1.7, "5", True."""
    if isinstance(e, bool) or not isinstance(e, int | float | np.integer | np.floating) or not float(e).is_integer():
        raise ValueError(e)
    return int(e)


def _checkpoint_list(checkpoints: Iterable[int]) -> list[int]:
    try:
        epochs = sorted({_as_epoch(e) for e in checkpoints})
    except (TypeError, ValueError, OverflowError):
        raise PrivdynError(f"checkpoints: give the epochs as integers, e.g. [0, 5, 10]; got {checkpoints!r}") from None
    if not epochs or epochs[0] < 0 or epochs[-1] < 1:
        raise PrivdynError(f"checkpoints: give at least one epoch >= 1 (0 = initialisation may come too); got {epochs}")
    return epochs


def record_config(ds: Dataset, *, n_models: int, checkpoints: Iterable[int], queries: Sequence[str], seed: int,
                  name: str | None, description: str, eval_batch_size: int, attacks: Sequence[str] | None,
                  save_logits: bool = False) -> RunConfig:
    """The config of a recorded run: ``source.kind=record`` with the data's fingerprint, the
    checkpoint epochs as a list, and labels for the data and model that privdyn does not build."""
    epochs = _checkpoint_list(checkpoints)
    data: dict[str, Any] = {
        "seed": int(seed),
        "source": {"kind": "record", "description": description, "fingerprint": data_fingerprint(ds)},
        "dataset": {"name": ds.name, "n_pool": ds.n_pool, "n_test": len(ds.y_test)},
        "model": {"arch": RECORDED_ARCH},
        "training": {"n_models": int(n_models), "epochs": epochs[-1], "eval_batch_size": int(eval_batch_size)},
        "checkpoints": {"schedule": "list", "epochs": [e for e in epochs if e > 0], "include_init": epochs[0] == 0,
                        "save_logits": bool(save_logits)},
        "queries": list(queries),
    }
    if name is not None:
        data["name"] = name
    if attacks is not None:
        data["attacks"] = list(attacks)
    cfg = config_from_dict(data, "Recorder.create")
    for q in cfg.queries:  # a query the data cannot take fails now, not at the first record
        try:
            apply_query(q, torch.from_numpy(ds.x_pool[:1]))
        except ValueError as e:
            raise PrivdynError(f"queries: {e}") from None
    return cfg


def _module_device(model: nn.Module) -> torch.device:
    """Where the module's parameters (else buffers) live; the CPU for a module without tensors."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _locked_waiting(run: RunDir, seconds: float = 60.0) -> Iterator[None]:
    """``run.locked()``, waiting up to ``seconds`` while another process holds the lock (e.g. several
    workers creating the same run at once)."""
    run.check_writable()  # the one other refusal of locked(): not worth waiting for
    deadline = time.monotonic() + seconds
    with contextlib.ExitStack() as stack:
        while True:
            try:
                stack.enter_context(run.locked())
                break
            except PrivdynError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield


class Recorder:
    """Records the checkpoint signals of models trained in the user's own loop into a run directory.

    Make one with :meth:`create` (once) and reopen it anywhere with :meth:`open`; train model
    ``m`` on exactly ``train_indices(m)`` and call :meth:`record` at every checkpoint epoch; then
    :meth:`assemble` (or ``privdyn assemble RUN``, which also scores, analyses and reports).
    """

    def __init__(self, run: RunDir, cfg: RunConfig, ds: Dataset, membership: np.ndarray):
        self.run = run
        self.config = cfg
        self.data = ds
        self._membership = membership
        self._membership.setflags(write=False)
        self._tensors: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._lock = threading.Lock()

    # construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, out: str | Path, data: DataLike, *, n_models: int, checkpoints: Iterable[int],
               queries: Sequence[str] = ("identity",), seed: int = 0, name: str | None = None,
               description: str = "", membership: np.ndarray | None = None, eval_batch_size: int = 4096,
               attacks: Sequence[str] | None = None, save_logits: bool = False) -> Recorder:
        """Create the run directory ``out`` for M = ``n_models`` recorded models (or reopen it when it
        was created with the same data and settings; other data or settings are refused).

        Args:
            out: the run directory (new, empty, or this recorded run).
            data: a privdyn :class:`Dataset` or ``(x_pool, y_pool, x_test, y_test)`` numpy arrays.
            n_models: M, even (each sample is IN for half the models).
            checkpoints: the epochs recorded (0 = before training); the last is the final epoch.
            queries: query augmentations evaluated at every checkpoint (``identity``, ``flip``, ``shift:dx,dy``).
            seed: seeds the membership draw (ignored when ``membership`` is given).
            name: the run's name (a slug; default ``run``).
            description: what was trained, for people (kept in the config's ``source``).
            membership: bool ``[M, N]`` to use instead of privdyn's balanced draw.
            eval_batch_size: samples per forward pass when recording.
            attacks: the attacks ``privdyn assemble`` scores (default: the config's).
            save_logits: also keep the float32 logits (for ``privdyn export``).
        """
        ds = as_dataset(data)
        cfg = record_config(ds, n_models=n_models, checkpoints=checkpoints, queries=queries, seed=seed, name=name,
                            description=description, eval_batch_size=eval_batch_size, attacks=attacks,
                            save_logits=save_logits)
        z = (check_membership(membership, cfg.training.n_models, ds.n_pool) if membership is not None
             else cls._draw(cfg, ds.n_pool))
        run = RunDir(out)
        if cls._existing_matches(run, cfg, z):
            # made before (by another worker, say): taking the lock would delete the temp files of
            # records in flight, and nothing needs writing; the stored config may list other attacks
            return cls(run, run.load_config(), ds, z)
        with _locked_waiting(run):
            if not cls._existing_matches(run, cfg, z):
                run.init(cfg)  # refuses a run made from other data or settings
                mpath = run.path / "membership.npy"
                if mpath.exists() and not np.array_equal(run.load_array(mpath, "membership"), z):
                    raise PrivdynError(f"{run.path} was created with another membership matrix; recording with "
                                       "this one would mix models trained on different samples. Pass the same "
                                       "membership, or choose a new run directory.")
                atomic.save_npy(mpath, z)
                digest = (provenance.membership_digest(cfg) if membership is None
                          else "given-" + hashlib.sha256(z.tobytes()).hexdigest()[:16])
                provenance.record(run, digest, mpath)
                atomic.save_npy(run.path / "labels.npy", ds.y_pool)
        return cls(run, cfg, ds, z)

    @staticmethod
    def _draw(cfg: RunConfig, n_pool: int) -> np.ndarray:
        if n_pool % 2:
            raise PrivdynError(f"data: the pool has an odd number of samples ({n_pool}), so privdyn cannot split "
                               "it into complementary halves. Drop one sample, or pass membership=... (bool [M, N]).")
        return balanced_membership(cfg.training.n_models, n_pool, cfg.seed)

    @staticmethod
    def _existing_matches(run: RunDir, cfg: RunConfig, z: np.ndarray) -> bool:
        """True when ``run`` is already this recorded run (same training setup and membership)."""
        if not (run.config_path.exists() and (run.path / "labels.npy").exists()):
            return False
        try:
            same = run.manifest().get("train_hash") == cfg.section_hash(*TRAIN_SECTIONS)
            return same and np.array_equal(run.load_array(run.path / "membership.npy", "membership"), z)
        except PrivdynError:
            return False

    @classmethod
    def open(cls, out: str | Path, data: DataLike) -> Recorder:
        """Reopen the recorded run ``out`` (from any process or machine) with the same data it was created with."""
        run = RunDir(out)
        cfg = recorded_config(run)
        ds = as_dataset(data, cfg.dataset.name)
        got, want = data_fingerprint(ds), cfg.source.fingerprint or ""
        if got != want:
            raise PrivdynError(
                f"{run.path} was created from other data than the data given (fingerprint {want[:12]}... vs "
                f"{got[:12]}...: the features, labels, their order or their number differ). Signals "
                "of different data cannot be mixed: open it with the same arrays, or create a new run.")
        z = run.load_array(run.path / "membership.npy", "membership")
        return cls(run, cfg, ds, z)

    # what to train ----------------------------------------------------------------------
    @property
    def membership(self) -> np.ndarray:
        """Bool ``[M, N]`` (read-only): ``membership[m, i]`` when model m trains on pool sample i."""
        return self._membership

    @property
    def n_models(self) -> int:
        """M, the number of models to record."""
        return self.config.training.n_models

    @property
    def checkpoints(self) -> list[int]:
        """The epochs to record, ascending (0 = before the first training step)."""
        return self.config.checkpoint_epochs()

    def train_indices(self, model_index: int) -> np.ndarray:
        """The pool indices model ``model_index`` trains on (its IN samples), ascending."""
        return np.flatnonzero(self._membership[self._check_model(model_index)])

    def train_data(self, model_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The features and labels model ``model_index`` trains on: the pool at :meth:`train_indices`."""
        idx = self.train_indices(model_index)
        return self.data.x_pool[idx], self.data.y_pool[idx]

    def _check_model(self, model_index: int) -> int:
        if not isinstance(model_index, int | np.integer) or not 0 <= model_index < self.n_models:
            raise PrivdynError(f"model_index={model_index!r}: give an integer in 0..{self.n_models - 1} "
                               f"(the run has {self.n_models} models)")
        return int(model_index)

    # recording --------------------------------------------------------------------------
    def path(self, model_index: int, epoch: int) -> Path:
        """The file :meth:`record` writes for ``model_index`` at ``epoch``."""
        return checkpoint_file(self.run, self._check_model(model_index), self._checkpoint_index(epoch, "path"))

    def _checkpoint_index(self, epoch: int, who: str) -> int:
        """The index of ``epoch`` in :attr:`checkpoints`; a :class:`PrivdynError` for any other epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or int(epoch) not in self.checkpoints:
            raise PrivdynError(f"{who}: epoch={epoch!r} is not a checkpoint of {self.run.path}; its checkpoints "
                               f"are {self.checkpoints}")
        return self.checkpoints.index(int(epoch))

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        with self._lock:
            if device not in self._tensors:
                ds = self.data
                self._tensors[device] = tuple(torch.from_numpy(a).to(device)
                                              for a in (ds.x_pool, ds.y_pool, ds.x_test, ds.y_test))
            return self._tensors[device]

    def evaluate(self, model: nn.Module, *, who: str = "record") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The module's signals ``[1, N, Q]`` on the pool and the test split, in eval mode, on its own
        device, without gradients; every submodule's train/eval mode is restored afterwards.

        Logits of another shape than ``[B, C]``, or NaN or infinite ones (a diverged model), are a
        :class:`PrivdynError` (``who`` starts its message)."""
        cfg, C = self.config, self.data.num_classes
        x_pool, y_pool, x_test, y_test = self._on(_module_device(model))

        def forward(xb: torch.Tensor) -> torch.Tensor:
            out = model(xb)
            check_logits(out, len(xb), C, who)
            if not bool(torch.isfinite(out).all()):
                raise PrivdynError(f"{who}: the model returned NaN or infinite logits (on "
                                   f"{int((~torch.isfinite(out)).any(1).sum())} of a batch of {len(xb)} samples), "
                                   "so its signals would be meaningless and nothing was written. The model has "
                                   "diverged or overflowed: fix its training (a lower learning rate, gradient "
                                   "clipping, checked inputs) and record it again.")
            return out.unsqueeze(0)

        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:  # evaluate_signals runs without gradients
            args = (cfg.queries, cfg.training.eval_batch_size, cfg.checkpoints.save_logits)
            return (evaluate_signals(forward, 1, x_pool, y_pool, *args),
                    evaluate_signals(forward, 1, x_test, y_test, *args))
        finally:
            for m, mode in modes:
                m.training = mode

    def record(self, model_index: int, epoch: int, model: nn.Module) -> Path:
        """Evaluate ``model`` (model ``model_index`` of the run at ``epoch``) and write its signals.

        ``epoch`` must be one of :attr:`checkpoints`. Recording the same (model, epoch) again
        replaces the file atomically. Different model indices may be recorded at once from
        different threads, processes or machines (shared storage). Returns the file written.
        """
        m = self._check_model(model_index)
        t = self._checkpoint_index(epoch, "record")
        if (self.run.path / "epochs.npy").exists():
            raise PrivdynError(f"record: {self.run.path} is already assembled, so a new recording would be ignored. "
                               "Record into a new run directory to change its models.")
        pool, test = self.evaluate(model, who=f"record: model {m} at epoch {int(epoch)}")
        path = checkpoint_file(self.run, m, t)
        save_checkpoint_signals(path, pool, test)
        return path

    # completion -------------------------------------------------------------------------
    def missing(self) -> list[tuple[int, int]]:
        """The (model, epoch) pairs not recorded yet (none once assembled)."""
        return missing_checkpoints(self.run, self.config)

    def assemble(self) -> dict[str, Any]:
        """Check that every (model, epoch) is recorded and intact, then build the signal arrays (idempotent);
        see :func:`assemble_recorded`."""
        return assemble_recorded(self.run)


def recorded_config(run: RunDir) -> RunConfig:
    """The config of the recorded run ``run``; a :class:`PrivdynError` when it is no run or not a recorded one."""
    if not run.is_run():
        raise PrivdynError(f"{run.path} is not a privdyn run directory (no config.yaml). Create a recorded run "
                           "with privdyn.Recorder.create(...).")
    cfg = run.load_config()
    if cfg.source.kind != "record":
        raise PrivdynError(f"{run.path} is not a recorded run (its source.kind is {cfg.source.kind}, not record): "
                           "`privdyn assemble` and privdyn.Recorder are for runs created with "
                           "privdyn.Recorder.create(...). Run this one with `privdyn run` or `privdyn train`.")
    return cfg


def missing_checkpoints(run: RunDir, cfg: RunConfig) -> list[tuple[int, int]]:
    """The (model, epoch) pairs of a recorded run whose file is not there (none once assembled)."""
    if (run.path / "epochs.npy").exists():
        return []
    return [(m, e) for m in range(cfg.training.n_models) for t, e in enumerate(cfg.checkpoint_epochs())
            if not checkpoint_file(run, m, t).exists()]


def _by_model(pairs: list[tuple[int, int]], limit: int = 8) -> str:
    models: dict[int, list[int]] = {}
    for m, e in pairs:
        models.setdefault(m, []).append(e)
    parts = [f"model {m}: epoch{'s' if len(es) > 1 else ''} {', '.join(map(str, es))}"
             for m, es in list(models.items())[:limit]]
    more = f"; and {len(models) - limit} more models" if len(models) > limit else ""
    return "; ".join(parts) + more


def _check_file(path: Path, names: tuple[str, ...], n_pool: int, n_test: int, q: int) -> str | None:
    """Why a recorded file cannot be assembled (damaged, or other shapes), or None."""
    try:
        integrity.verify(path)
        with np.load(path, allow_pickle=False) as f:
            for name in names:
                for key, n in ((name, n_pool), (f"test_{name}", n_test)):
                    shape = f[key].shape if key in f.files else None
                    if shape is None or shape[:3] != (1, n, q):
                        return f"{key} has shape {shape}, expected [1, {n}, {q}, ...]"
    except integrity.CorruptArtifact:
        return "does not match its checksum (truncated or corrupt)"
    except (OSError, ValueError) as e:
        return f"cannot be read ({e})"
    return None


def assemble_recorded(run: RunDir) -> dict[str, Any]:
    """Build a recorded run's signal arrays from its recorded files (idempotent; needs no data).

    Checks that every (model, epoch) is recorded and intact (a :class:`PrivdynError` lists what
    is missing or damaged), gathers them into ``signals/NAME.zarr`` ``[T, M, N, Q]`` with
    :func:`~privdyn.training.engine.assemble_signals`, writes ``epochs.npy``, records the signals'
    provenance, marks the train stage done (as ``privdyn train`` checks it) and deletes
    ``RUN/train``. Returns what it did.
    """
    cfg = recorded_config(run)
    with run.locked():
        digest = cfg.section_hash(*TRAIN_SECTIONS)
        s_digest = provenance.signal_digest(cfg, run)
        files = run.signal_files()
        if run.stage_done("train", digest) and all(provenance.is_current(run, p, s_digest) for p in files):
            clean_up(run)
            return {"assembled_before": True}
        epochs = cfg.checkpoint_epochs()
        M, T = cfg.training.n_models, len(epochs)
        membership = run.load_array(run.path / "membership.npy", "membership")
        run.load_array(run.path / "labels.npy", "labels")
        n_pool, n_test = membership.shape[1], int(cfg.dataset.n_test or 0)
        if not (run.path / "epochs.npy").exists():
            missing = missing_checkpoints(run, cfg)
            if missing:
                raise PrivdynError(
                    f"{run.path} is not complete: {len(missing)} of {M * T} recorded checkpoints are missing "
                    f"({_by_model(missing)}). Record them with recorder.record(model, epoch, module) "
                    f"(Recorder.open({str(run.path)!r}, data) in any process), then run "
                    f"`privdyn assemble {run.path}` again.")
            names, q = stored_names(cfg), len(cfg.queries)
            bad = [(m, e, why) for m in range(M) for t, e in enumerate(epochs)
                   if (why := _check_file(checkpoint_file(run, m, t), names, n_pool, n_test, q)) is not None]
            if bad:
                listing = "; ".join(f"model {m} epoch {e}: {why}" for m, e, why in bad[:8])
                raise PrivdynError(
                    f"{run.path}: {len(bad)} recorded checkpoint file(s) cannot be used ({listing}"
                    f"{'; ...' if len(bad) > 8 else ''}). Record those (model, epoch) pairs again with "
                    f"recorder.record(model, epoch, module), then run `privdyn assemble {run.path}` again.")
            run.mark_stage("train", "running", digest)
            writers = finish_signals(cfg, run, [GroupTask(m, (m,)) for m in range(M)], n_pool, n_test)
        else:  # killed after the arrays were complete: only the bookkeeping is left
            writers = {}
            damaged = [run.key(p) for p in run.signal_files() if not run.intact(p)]
            if damaged:
                raise PrivdynError(f"{run.path}: {', '.join(damaged)} damaged after assembling, and the recorded "
                                   "files are gone. Record the models into a new run directory.")
        provenance.record(run, provenance.signal_digest(cfg, run), *run.signal_files())
        run.mark_stage("train", "done", digest, n_pool=n_pool, n_test=n_test, recorded=M * T,
                       checkpoint_writers=writers)
        clean_up(run)
    return {"models": M, "checkpoints": T, "checkpoint_writers": writers}


def import_weights(out: str | Path, factory: Callable[[], nn.Module], data: DataLike, weights_dir: str | Path,
                   membership: np.ndarray, *, epochs: Iterable[int] | None = None,
                   queries: Sequence[str] = ("identity",), name: str | None = None, description: str = "",
                   eval_batch_size: int = 4096, attacks: Sequence[str] | None = None,
                   device: str | torch.device = "cpu", save_logits: bool = False) -> Recorder:
    """Compute a run's signals from per-epoch weights of M models trained elsewhere, and assemble them.

    ``weights_dir`` is laid out like privdyn's own ``RUN/weights``::

        weights_dir/epoch_EEE/model_MMM.safetensors    model MMM's state_dict after epoch EEE
                                                       (000 = initialisation), e.g. epoch_010/model_003

    Each model ``m`` is built with ``factory()``, loaded with each epoch's state dict
    (``safetensors`` only: nothing is unpickled), moved to ``device`` and recorded. Every model
    ``0..M-1`` (M = ``membership.shape[0]``) must have every epoch (``epochs``: a subset of
    those found; default all). A killed import resumes: recorded (model, epoch) pairs are kept.
    Returns the :class:`Recorder` of the assembled run ``out``.
    """
    from safetensors.torch import load_file

    root = Path(weights_dir)
    found: dict[int, dict[int, Path]] = {}
    for f in sorted(root.glob("epoch_*/model_*.safetensors")):
        try:
            e, m = int(f.parent.name.removeprefix("epoch_")), int(f.stem.removeprefix("model_"))
        except ValueError:
            continue
        found.setdefault(e, {})[m] = f
    if not found:
        raise PrivdynError(f"{root} holds no weights laid out as epoch_EEE/model_MMM.safetensors "
                           "(e.g. epoch_010/model_003.safetensors)")
    z = np.asarray(membership)
    if z.ndim != 2:
        raise PrivdynError(f"membership: expected bool [M, N], got shape {list(z.shape)}")
    M = z.shape[0]
    want = sorted(found) if epochs is None else _checkpoint_list(epochs)
    absent = [(m, e) for e in want for m in range(M) if m not in found.get(e, {})]
    if absent:
        raise PrivdynError(f"{root}: {len(absent)} weight file(s) missing ({_by_model(sorted(absent))}); every "
                           f"model 0..{M - 1} needs every epoch {want}")
    extra = sorted({m for e in want for m in found[e] if m >= M})
    if extra:
        raise PrivdynError(f"{root} has weights of model(s) {extra[:5]}, but the membership has only {M} models "
                           f"(0..{M - 1}); pass the membership of all of them")
    rec = Recorder.create(out, data, n_models=M, checkpoints=want, queries=queries, name=name,
                          description=description or f"weights imported from {root}", membership=z,
                          eval_batch_size=eval_batch_size, attacks=attacks, save_logits=save_logits)
    todo = set(rec.missing())
    dev = torch.device(device)
    for m in range(M):
        if not any((m, e) in todo for e in want):
            continue
        module = factory().to(dev)
        for e in want:
            if (m, e) not in todo:
                continue
            state = load_file(str(found[e][m]), device=str(dev))
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise PrivdynError(f"{found[e][m]} does not fit the module factory() builds: "
                                   f"{str(err).splitlines()[0]} ...") from None
            rec.record(m, e, module)
    rec.assemble()
    return rec
