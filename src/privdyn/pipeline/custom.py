"""``privdyn.audit``: the whole pipeline for a user's own model, data and recipe.

It writes the same run directory as ``privdyn run`` (so ``privdyn score|analyze|report|compare``
and ``privdyn.open_run`` work on it unchanged), with ``source.kind: python`` and a fingerprint of
the model's and recipe's code, of the model and optimizer they build (so values closed over count
too) and of the data, so a changed model or dataset is never mixed with stored signals. The model,
optimizer, output shape and pool size are checked before the run directory is touched. Training
resumes after a kill when called again with the same arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privdyn.config import config_from_dict, set_dotted
from privdyn.data.convert import as_dataset, data_fingerprint
from privdyn.errors import PrivdynError
from privdyn.store.api import Run, open_run
from privdyn.store.rundir import RunDir
from privdyn.training.custom import (
    BatchingPlan,
    Recipe,
    check_model_and_recipe,
    code_digest,
    describe,
    plan_batching,
    recipe_trainers,
    register_user_queries,
)
from privdyn.training.engine import resolve_device


@dataclass(frozen=True)
class AuditResult:
    """What :func:`audit` made: the opened run, its report (None without one), and how it trained."""

    run: Run
    report: Path | None
    batched: bool
    reason: str


def audit(model: Callable[[], nn.Module], data: Any, *, out: str | Path, recipe: Recipe | None = None,
          n_models: int = 16, checkpoints: Sequence[int] | None = None,
          queries: Sequence[str | Callable[[torch.Tensor], torch.Tensor]] = ("identity",),
          attacks: Sequence[str] | None = None, seed: int = 0, name: str = "audit",
          n_pool: int | None = None, n_test: int | None = None,
          settings: Mapping[str, Any] | None = None, device: str = "auto", group_size: int = 16,
          batched: bool | None = None, progress: bool = True, report: bool = True) -> AuditResult:
    """Train ``n_models`` copies of ``model()`` on random halves of the pool, record their signals at
    every checkpoint, attack, analyse and report, into the run directory ``out``.

    Args:
        model: a factory returning a fresh, untrained ``nn.Module`` (a class, a lambda, anything);
            it is called under a per-model seed, so initialisations are reproducible.
        data: ``(x_pool, y_pool, x_test, y_test)`` arrays, a ``(pool, test)`` pair of torch
            Datasets, a privdyn Dataset or a registered dataset name.
        recipe: the optimizer and schedule factories, epochs, batch size, or a user training
            step / epoch (:class:`~privdyn.training.custom.Recipe`).
        checkpoints: epochs at which every model is evaluated (0 = initialisation); default every epoch.
        queries: names (``identity``, ``hflip``, ``shift:1,0``) or functions ``f(x) -> x'`` that transform a
            batch deterministically; every model is evaluated under each at every checkpoint.
        queries, attacks, seed, name: as in the config file; ``settings`` sets any other config key
            by dotted name, e.g. ``{"analysis.rule": "fpr:0.001"}`` (not ``dataset.*``: the data is given).
        n_pool, n_test: a seeded subsample of a registered dataset (given by name).
        batched: force (True) or forbid (False) stacked training; None decides by probing the model.

    Returns:
        An :class:`AuditResult` with the opened run (``.summary()``, ``.tables()``, ``.plane()``).
    """
    from privdyn import pipeline

    recipe = recipe or Recipe()
    if any(k.startswith("dataset.") for k in settings or {}):
        raise PrivdynError("settings: the dataset is given by the data argument; pass n_pool and n_test for a "
                           "subsample of a registered dataset instead of dataset.* settings")
    ds = as_dataset(data, name="user" if not isinstance(data, str) else data, seed=seed, n_pool=n_pool,
                    n_test=n_test)
    if ds.n_pool % 2:
        raise PrivdynError(f"data: the pool has an odd number of samples ({ds.n_pool}), so privdyn cannot split it "
                           "into complementary halves (each sample IN for half the models). Drop one pool sample"
                           + (", or pass an even n_pool." if isinstance(data, str) else "."))
    # everything the user gave is checked before the run directory is touched
    dev = resolve_device(device)
    x, y = (torch.from_numpy(a[:4]).to(dev) for a in (ds.x_pool, ds.y_pool))  # the probes need a few samples
    built = check_model_and_recipe(model, recipe, x, ds.num_classes)
    if batched is False:
        plan = BatchingPlan(False, "batched=False was asked for")
    else:
        plan = plan_batching(model, recipe, x, y, seed, dev)
        if batched is True and not plan.batched:
            raise PrivdynError(f"batched=True, but this model and recipe cannot train batched: {plan.reason}. "
                               "Leave batched unset to train one model at a time.")
    use_batched, reason = plan.batched, plan.reason
    epochs = list(checkpoints) if checkpoints is not None else list(range(1, recipe.epochs + 1))
    cfg = _config(model, built, recipe, ds, epochs, n_models, queries, attacks, seed, name, settings, device,
                  group_size)
    how = f"in batched groups of {min(group_size, n_models)}" if use_batched else "one at a time"
    pipeline.console.print(f"training {n_models} models of {describe(model)} {how}: {reason}")
    run = RunDir(out)
    with run.locked():
        _refuse_another_source(run, cfg)
        run.init(cfg)
        pipeline.train(cfg, run, progress, data=ds, make_trainer=recipe_trainers(model, recipe, use_batched),
                       group_size=group_size if use_batched else 1,
                       note={"training_mode": "batched" if use_batched else "one at a time", "mode_reason": reason})
        pipeline.score(cfg, run, progress=progress)
        pipeline.analyze(cfg, run)
        index = pipeline.report(cfg, run) if report else None
    return AuditResult(open_run(out), index, use_batched, reason)


def _config(model: Callable[[], nn.Module], built_digest: tuple[type[nn.Module], str], recipe: Recipe, ds: Any,
            epochs: list[int], n_models: int, queries: Sequence[Any], attacks: Sequence[str] | None, seed: int,
            name: str, settings: Mapping[str, Any] | None, device: str, group_size: int) -> Any:
    """The run's config: the recipe's numbers where the config has a field, labels for the rest.

    ``source.fingerprint`` is ``CODE-DATA``: CODE digests the source text of the factory, the
    class it builds and the recipe's and queries' functions together with ``built_digest`` (the
    class the factory builds and :func:`~privdyn.training.custom.build_digest`: the model and
    optimizer they actually build, closed-over values included); DATA digests the data."""
    parts = [recipe.optimizer, recipe.schedule, recipe.train_step, recipe.train_epoch, recipe.augment,
             *(q for q in queries if not isinstance(q, str))]
    built, what = built_digest
    built = model if isinstance(model, type) else built  # the class whose code matters
    code = hashlib.sha256(f"{code_digest(model, built, *parts)}:{what}".encode()).hexdigest()[:16]
    data: dict[str, Any] = {
        "name": name, "seed": seed, "queries": register_user_queries(queries),
        "source": {"kind": "python",
                   "description": f"model {describe(model)}; optimizer {describe(recipe.optimizer)}"
                                  + "".join(f"; {n} {describe(getattr(recipe, n))}" for n in
                                            ("schedule", "train_step", "train_epoch", "augment")
                                            if getattr(recipe, n) is not None),
                   "fingerprint": f"{code}-{data_fingerprint(ds)[:16]}",
                   "optimizer": describe(recipe.optimizer)},
        "dataset": {"name": ds.name, "n_pool": ds.n_pool, "n_test": len(ds.y_test)},
        "model": {"arch": describe(built)},
        "training": {"n_models": n_models, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
                     "group_size": group_size, "device": device},
        "checkpoints": {"schedule": "list", "epochs": [e for e in epochs if e != 0], "include_init": 0 in epochs},
    }
    if attacks is not None:
        data["attacks"] = list(attacks)
    for key, value in (settings or {}).items():
        set_dotted(data, key, value)
    if not data["checkpoints"]["epochs"]:
        raise PrivdynError("checkpoints: give at least one epoch >= 1 (0 alone, the initialisation, is not enough)")
    return config_from_dict(data, "privdyn.audit arguments")


def _refuse_another_source(run: RunDir, cfg: Any) -> None:
    """Refuse, naming what changed, a run directory whose signals come from another model, recipe or
    data (its ``source.fingerprint`` differs); ``run.init`` refuses any other change of the setup."""
    if not (run.config_path.exists() and run.has_training_artifacts()):
        return
    try:
        old = run.load_config().source
    except PrivdynError:
        return  # run.init explains what is wrong with the directory
    new = cfg.source
    if old.kind != new.kind or not old.fingerprint or old.fingerprint == new.fingerprint:
        return
    old_code, _, old_data = old.fingerprint.partition("-")
    new_code, _, new_data = (new.fingerprint or "").partition("-")
    changed = [w for w, c in (("the model or recipe", old_code != new_code), ("the data", old_data != new_data)) if c]
    what = " and ".join(changed) + (" differ" if len(changed) > 1 else " differs")
    raise PrivdynError(
        f"{run.path} holds the signals of another model, recipe or data: {what} from those it was "
        f"trained with (source.fingerprint {old.fingerprint} there, {new.fingerprint} now; it covers the code of "
        "the model factory and recipe, the model and optimizer they build, and the data). Reusing it would mix "
        "stale signals. Choose a new out directory, or delete this one to start over.")
