"""The analyze stage: plane, population geometry and model-level metrics for one attack and rule.

Reads the score and signal arrays of a run, writes Parquet tables and a ``plane.npz`` under
``analysis/ATTACK/RULE/``, and returns the summary entries for ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privdyn.analysis import difficulty, dynamics, model_level, population, sensitivity
from privdyn.analysis.plane import Plane, compute_plane
from privdyn.analysis.results import AttackSummary, DynamicsOptions, Summary, measure_dynamics
from privdyn.config import RunConfig
from privdyn.pipeline import workers
from privdyn.pipeline.run_level import SENSITIVITY, Entries
from privdyn.store import atomic
from privdyn.store.arrays import CheckpointArray
from privdyn.store.rundir import RunDir


def identity_query(cfg: RunConfig) -> int:
    """Index of the identity query (the first query when identity is not scored)."""
    return cfg.queries.index("identity") if "identity" in cfg.queries else 0


def has_test_split(run: RunDir) -> bool:
    """False only for a run whose train stage recorded no test split (``n_test: 0``: imported logits without one)."""
    return bool(run.manifest()["stages"].get("train", {}).get("n_test", 1))


def model_metrics(cfg: RunConfig, run: RunDir, membership: np.ndarray) -> dict[str, np.ndarray]:
    """Per checkpoint and model: train/test accuracy and loss ``[T, M]``, under the identity query
    (test: NaN for a run without a test split)."""
    q = identity_query(cfg)

    def mean(name: str, split: str, z: np.ndarray | None) -> np.ndarray:
        return model_level.per_model_mean(run.checkpoints(run.signal_path(name, split), f"signal {name}"), z, q)

    test = has_test_split(run)
    nan = np.full((len(cfg.checkpoint_epochs()), cfg.training.n_models), np.nan)
    return {"train_accuracy": mean("correct", "pool", membership), "train_loss": mean("loss", "pool", membership),
            "test_accuracy": mean("correct", "test", None) if test else nan,
            "test_loss": mean("loss", "test", None) if test else nan}


def difficulty_signals(cfg: RunConfig, run: RunDir) -> dict[str, CheckpointArray | None]:
    """``[T, M, N]`` arrays of the pool's correct, loss and el2n signals under the identity
    query (the first query when identity is not scored); el2n is None in runs that lack it."""
    q = identity_query(cfg)
    out: dict[str, CheckpointArray | None] = {
        name: run.checkpoints(run.signal_path(name), f"signal {name}").at_query(q) for name in ("correct", "loss")}
    el2n = run.signal_path("el2n")
    out["el2n"] = run.checkpoints(el2n, "signal el2n").at_query(q) if el2n.exists() else None
    return out


@dataclass(frozen=True)
class TrainingMeasures:
    """What the analysis reads from the trained signals alone: the same for every attack and
    rule, so a stage that analyses several attacks computes it once."""

    metrics: dict[str, np.ndarray]      # per checkpoint and model: train/test accuracy and loss
    difficulty: dict[str, np.ndarray]   # per sample: the learning-difficulty measures
    has_el2n: bool                      # False for runs trained before el2n was stored
    k_early: int                        # the checkpoint index early EL2N is read at


def training_measures(cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray) -> TrainingMeasures:
    """Read the run's training signals once and compute its model metrics and difficulty measures."""
    sig = difficulty_signals(cfg, run)
    assert sig["correct"] is not None and sig["loss"] is not None  # every run records them
    k_early = difficulty.early_index(epochs, cfg.analysis.el2n_fraction)
    return TrainingMeasures(
        model_metrics(cfg, run, membership),
        difficulty.difficulty_measures(sig["correct"], sig["loss"], sig["el2n"], membership, k_early),
        sig["el2n"] is not None, k_early)


def dynamics_options(cfg: RunConfig) -> DynamicsOptions:
    """The core's options for the dynamics, from the config's analysis section."""
    ac = cfg.analysis
    return DynamicsOptions(n_clusters=ac.n_clusters, silhouette_sample=ac.silhouette_sample,
                           bands=ac.states.bands(), n_bootstrap=ac.n_bootstrap,
                           recall_levels=tuple(ac.recall_levels), seed=cfg.seed)


#: Samples whose inputs each analysis stores for the report's gallery (the most vulnerable first).
GALLERY_SIZE = 24


@dataclass(frozen=True)
class PoolInputs:
    """The pool's inputs for the gallery, or why a run has none to show (``reason``)."""

    x: np.ndarray | None
    kind: str
    reason: str = ""


def pool_inputs(cfg: RunConfig, run: RunDir) -> PoolInputs:
    """The run's pool inputs: those the train stage kept (``inputs.npz``, small pools), else
    reloaded once per analyze stage from the config, or the reason there is no picture. Reloaded
    labels must match the run's ``labels.npy``, so a changed dataset or loader can never put the
    wrong picture next to a sample."""
    from privdyn.data import load_dataset
    from privdyn.errors import PrivdynError

    c, labels, kept = cfg.dataset, run.path / "labels.npy", run.path / "inputs.npz"
    if kept.exists() and labels.exists():
        stored = atomic.load_npz(kept)
        if len(stored["x"]) == len(run.load_array(labels, "labels")):
            return PoolInputs(stored["x"], str(stored["kind"]))
    if cfg.source.kind != "train":
        return PoolInputs(None, "", f"the inputs of a run whose data came from outside privdyn ({cfg.source.kind}) "
                                    "are not stored in it")
    if not labels.exists():
        return PoolInputs(None, "", "the run has no labels.npy to check the reloaded dataset against")
    try:
        ds = load_dataset(c.name, c.n_pool, c.n_test, cfg.seed, c.options, root=c.root)
    except PrivdynError as e:
        return PoolInputs(None, "", f"the dataset could not be reloaded: {e}")
    if ds.kind not in ("image", "sequence"):
        return PoolInputs(None, ds.kind, f"{c.name} is {ds.kind} data, which has no picture")
    y = run.load_array(labels, "labels")
    if ds.y_pool.shape != y.shape or not np.array_equal(ds.y_pool, y):
        return PoolInputs(None, ds.kind, "reloading the dataset gave other labels than the run's labels.npy (the "
                                         "dataset or its loader changed since the run), so its pictures would not "
                                         "match the samples")
    return PoolInputs(np.asarray(ds.x_pool), ds.kind)


def save_gallery(path: Path, plane: Plane, inputs: PoolInputs) -> None:
    """``gallery.npz``: the inputs of the :data:`GALLERY_SIZE` most vulnerable samples (the
    report shows them without reloading the dataset), or the reason there are none."""
    top = population.most_vulnerable(plane.adv[-1], plane.auc[-1], GALLERY_SIZE)
    if inputs.x is None:
        atomic.save_npz(path, sample=top[:0], reason=np.array(inputs.reason), kind=np.array(inputs.kind))
    else:
        atomic.save_npz(path, compress=True, sample=top, x=np.asarray(inputs.x[top], dtype=np.float32),
                        reason=np.array(""), kind=np.array(inputs.kind))


#: Bytes of planes held at once when several attacks are analysed together (their bootstrap
#: draws are shared): attacks are taken in chunks whose planes fit.
PLANE_BUDGET = 1 << 29


def analyze(cfg: RunConfig, run: RunDir, attack: str, rule: str,
            measures: TrainingMeasures | None = None) -> dict[str, Any]:
    """Analyse one attack under one rule; write its tables and return its summary entry
    (:meth:`~privdyn.analysis.results.AttackSummary.to_dict`).

    ``measures`` (from :func:`training_measures`) is computed here when not given.
    """
    return analyze_attacks(cfg, run, [attack], rule, measures)[attack]


def analyze_attacks(cfg: RunConfig, run: RunDir, attacks: list[str], rule: str,
                    measures: TrainingMeasures | None = None,
                    done: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """:func:`analyze` for several attacks at once: every attack's bootstrap uses the same draws
    (by the seed), so the model-level CIs draw each checkpoint's weights once and the difficulty
    Spearman CIs rank each draw's measures once, for all attacks of a chunk (a chunk's planes
    stay within :data:`PLANE_BUDGET`). The results equal those of one attack at a time.

    ``done(attack, entry)`` is called as soon as an attack's tables are written (the stage
    records it there, so a killed stage keeps every finished attack).
    """
    membership = run.load_array(run.path / "membership.npy", "membership")
    epochs = run.load_array(run.path / "epochs.npy", "checkpoint epochs")
    if measures is None:
        measures = training_measures(cfg, run, membership, epochs)
    alphas = sorted(set(cfg.analysis.report_alphas) | {0.001, 0.01})
    per_plane = 4 * 8 * len(epochs) * membership.shape[1]  # fpr, tpr, auc, adv: float64 [T, N]
    step = max(1, PLANE_BUDGET // per_plane)
    inputs = pool_inputs(cfg, run)
    out = {}
    for start in range(0, len(attacks), step):
        chunk = attacks[start:start + step]
        scores = {a: run.load_scores(a) for a in chunk}
        planes = {a: compute_plane(scores[a], membership, rule) for a in chunk}
        spearman = difficulty.spearman_tables(
            measures.difficulty, {a: {"final_advantage": p.adv[-1], "final_auc": p.auc[-1]} for a, p in planes.items()},
            cfg.analysis.n_bootstrap, cfg.seed)
        ml = model_level.checkpoint_metrics_of(scores, membership, alphas, cfg.analysis.model_bootstrap, cfg.seed)
        for a in chunk:
            out[a] = _write_analysis(cfg, run, a, rule, epochs, planes[a], ml[a], spearman[a], measures, alphas)
            save_gallery(run.analysis_dir(a, rule) / "gallery.npz", planes[a], inputs)
            if done is not None:
                done(a, out[a])
    return out


def _write_analysis(cfg: RunConfig, run: RunDir, attack: str, rule: str, epochs: np.ndarray, plane: Plane,
                    ml: dict[str, np.ndarray], spearman: pd.DataFrame, measures: TrainingMeasures,
                    alphas: list[float]) -> dict[str, Any]:
    """The rest of one attack's analysis from its plane, model-level metrics and Spearman table:
    write its tables and return its summary entry."""
    T, N = plane.adv.shape
    st = population.states(plane.adv, cfg.analysis.states.bands())
    com = population.centre_of_mass(plane.fpr, plane.tpr)
    disp, path = population.com_displacement_and_path(com)
    entropy = population.spatial_entropy(plane.fpr, plane.tpr, cfg.grid_size())
    metrics = measures.metrics
    dyn = measure_dynamics(plane, st, epochs, measures.difficulty, measures.has_el2n,
                           int(epochs[measures.k_early]), dynamics_options(cfg), spearman=spearman)

    out_dir = run.analysis_dir(attack, rule)
    atomic.save_npz(out_dir / "plane.npz", compress=True, **plane.arrays(), epochs=epochs)
    sample_epoch = pd.DataFrame({
        "sample": np.tile(np.arange(N), T), "epoch": np.repeat(epochs, N),
        "fpr": plane.fpr.ravel(), "tpr": plane.tpr.ravel(), "advantage": plane.adv.ravel(),
        "auc": plane.auc.ravel(),
        "state": pd.Categorical.from_codes(st.ravel(), population.STATE_NAMES),
    })
    sample = pd.DataFrame({
        "sample": np.arange(N),
        "final_fpr": plane.fpr[-1], "final_tpr": plane.tpr[-1], "final_advantage": plane.adv[-1],
        "final_auc": plane.auc[-1],
        "final_state": pd.Categorical.from_codes(st[-1], population.STATE_NAMES),
        "max_advantage": plane.adv.max(axis=0),
        **dyn.sample,
    })
    state_counts = {f"n_{name}": (st == k).sum(axis=1) for k, name in enumerate(population.STATE_NAMES)}
    epoch_table = pd.DataFrame({
        "epoch": epochs, "tau": plane.tau, "com_fpr": com[:, 0], "com_tpr": com[:, 1],
        "entropy_bits": entropy, **ml,
        **{k: v.mean(axis=1) for k, v in metrics.items()},
        "generalisation_gap": (metrics["train_accuracy"] - metrics["test_accuracy"]).mean(axis=1),
        **state_counts,
        **dyn.epoch,
    })
    atomic.write_parquet(out_dir / "sample_epoch.parquet", sample_epoch)
    atomic.write_parquet(out_dir / "sample.parquet", sample)
    atomic.write_parquet(out_dir / "epoch.parquet", epoch_table)
    for name, table in dyn.tables().items():
        atomic.write_parquet(out_dir / f"{name}.parquet", table)

    return AttackSummary(
        attack=attack, rule=rule, epochs=epochs,
        test_accuracy=epoch_table["test_accuracy"].to_numpy(), train_accuracy=epoch_table["train_accuracy"].to_numpy(),
        auc=ml["auc"], balanced_accuracy=ml["balanced_accuracy"],
        tpr_at_fpr={a: ml[f"tpr_at_fpr_{a:g}"] for a in alphas},
        tpr_ci={a: np.column_stack([ml[f"tpr_at_fpr_{a:g}_ci_low"], ml[f"tpr_at_fpr_{a:g}_ci_high"]])
                for a in alphas},
        com_displacement_pp=disp, com_path_pp=path, entropy_bits=entropy,
        n_high_final=int((st[-1] == dynamics.HIGH).sum()), dynamics=dyn.summary,
    ).to_dict()


def sensitivity_stage(cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray,
                      measures: TrainingMeasures) -> Entries:
    """``analysis/sensitivity.parquet`` for every attack; returns each attack's summary entry."""
    tables = []
    for attack in cfg.attacks:
        variants = sensitivity.variants_for(attack, cfg.training.n_models, cfg.analysis.rule, cfg.grid_size(),
                                            cfg.analysis.states.bands())
        scores = run.load_scores(attack)
        table = sensitivity.sensitivity_table(scores, membership, epochs, measures.difficulty["consistency"],
                                              variants)
        tables.append(table.assign(attack=attack))
    table = pd.concat(tables, ignore_index=True)
    table.insert(0, "attack", table.pop("attack"))
    atomic.write_parquet(SENSITIVITY.paths(run)[0], table)
    return Entries(attacks=sensitivity.summarise_by_attack(table))


def _stage_inputs(cfg: RunConfig, run: RunDir, token: str) -> tuple[np.ndarray, np.ndarray, TrainingMeasures]:
    """Membership, epochs and the training measures; a worker computes the measures once for all
    the tasks it runs for one stage (``token``) and keeps no other stage's."""
    membership = run.load_array(run.path / "membership.npy", "membership")
    epochs = run.load_array(run.path / "epochs.npy", "checkpoint epochs")
    measures = workers.stage_value(token, "training measures",
                                   lambda: training_measures(cfg, run, membership, epochs))
    return membership, epochs, measures


def attack_task(cfg: RunConfig, path: Path, attack: str, rule: str, token: str) -> dict[str, Any]:
    """A worker's task: :func:`analyze` one attack of the run at ``path``; returns its entry."""
    run = RunDir(path)
    _, _, measures = _stage_inputs(cfg, run, token)
    with run.scores_in_memory():
        return analyze(cfg, run, attack, rule, measures)


def run_analysis_task(cfg: RunConfig, path: Path, name: str, token: str) -> Entries:
    """A worker's task: write the files of the run-level analysis ``name``; returns its entries."""
    from privdyn.pipeline.run_level import run_analyses

    run = RunDir(path)
    analysis = next(x for x in run_analyses() if x.name == name)
    membership, epochs, measures = _stage_inputs(cfg, run, token)
    with run.scores_in_memory():
        return analysis.compute_files(cfg, run, membership, epochs, measures)


def write_summary(cfg: RunConfig, run: RunDir, per_attack: dict[str, dict[str, Any]],
                  run_entries: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``summary.json`` (:class:`~privdyn.analysis.results.Summary`) and return its content."""
    summary = Summary(
        name=cfg.name, dataset=cfg.dataset.name, model=cfg.model.arch,
        optimizer=cfg.optimizer_label(),
        n_models=cfg.training.n_models,
        n_samples=int(run.load_array(run.path / "membership.npy", "membership").shape[1]),
        default_attack=cfg.default_attack(), attacks=per_attack, run_level=run_entries or {},
    ).to_dict()
    atomic.write_json(run.summary_path, summary, strict=True)
    return summary
