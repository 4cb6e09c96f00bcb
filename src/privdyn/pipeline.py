"""Stage orchestration: train -> score -> analyze -> report, each skipped when already done.

A stage is done when the manifest records it finished with the hash of the config sections it
depends on; a changed section makes that stage and every later one rerun.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from privdyn.config import ANALYZE_SECTIONS, SCORE_SECTIONS, TRAIN_SECTIONS, RunConfig
from privdyn.data import load_dataset
from privdyn.errors import PrivdynError
from privdyn.store import atomic
from privdyn.store.rundir import RunDir
from privdyn.training.membership import balanced_membership

console = Console(stderr=True)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as p:
        yield p


def train(cfg: RunConfig, run: RunDir, progress: bool = True) -> None:
    from privdyn.training.engine import run_train_stage

    digest = cfg.section_hash(*TRAIN_SECTIONS)
    if run.stage_done("train", digest):
        damaged = [p for p in run.signal_files() if not run.intact(p)]
        if not damaged:
            return
        # the per-group files are gone once the signals are assembled: retrain (seeded, so the
        # intact artifacts come out the same and what was computed from them stays current)
        console.print(f"damaged: {', '.join(str(p.relative_to(run.path)) for p in damaged)}; retraining")
        for p in [*damaged, run.path / "epochs.npy"]:
            p.unlink(missing_ok=True)
    run.mark_stage("train", "running", digest)
    ds = load_dataset(cfg.dataset.name, cfg.dataset.n_pool, cfg.dataset.n_test, cfg.seed, cfg.dataset.options,
                      root=cfg.dataset.root)
    mpath = run.path / "membership.npy"
    if run.intact(mpath):
        membership = np.load(mpath, allow_pickle=False)
    else:
        membership = balanced_membership(cfg.training.n_models, ds.n_pool, cfg.seed)
        atomic.save_npy(mpath, membership)
    atomic.save_npy(run.path / "labels.npy", ds.y_pool)
    with _progress(progress) as p:
        stats = run_train_stage(cfg, run, ds, membership, p)
    run.mark_stage("train", "done", digest, n_pool=ds.n_pool, n_test=int(len(ds.y_test)), **stats)


def score(cfg: RunConfig, run: RunDir, attacks: list[str] | None = None, progress: bool = True) -> None:
    from privdyn.attacks.stage import score_attack, scores_current

    digest = cfg.section_hash(*SCORE_SECTIONS)
    current = [a for a in cfg.attacks if scores_current(cfg, run, a)]
    if attacks is None and run.stage_done("score", digest) and current == cfg.attacks:
        return
    names = attacks or cfg.attacks
    # Only a pass that covers every configured attack completes the stage; scoring a subset
    # (or extra attacks) must not make a later `run` skip the configured ones.
    complete = set(cfg.attacks) <= set(names)
    if complete:
        run.mark_stage("score", "running", digest)
    with _progress(progress) as p:
        for a in names:
            # attacks named explicitly are rescored; otherwise a current artifact (e.g. finished
            # before a kill) is kept
            if attacks is None and a in current:
                continue
            score_attack(cfg, run, a, p)
    if complete:
        run.mark_stage("score", "done", digest)


def require_current_scores(cfg: RunConfig, run: RunDir, attack: str) -> None:
    """Refuse scores that another setup made (other options, references, training or signals)."""
    from privdyn.attacks.stage import scores_current

    if not scores_current(cfg, run, attack):
        state = "missing" if not run.score_path(attack).exists() else "stale (made with another setup)"
        raise PrivdynError(f"The scores of {attack} in {run.path} are {state}, so analysing them would "
                           f"describe another attack. Run `privdyn score {run.path} --attacks {attack}` "
                           f"or `privdyn run` on this config, which rescores exactly what is stale.")


def analysis_files(cfg: RunConfig, run: RunDir) -> list[Path]:
    """What the analyze stage makes (at the config's rule), to check before skipping it."""
    files = [run.summary_path] + ([run.path / "analysis" / "sensitivity.parquet"] if cfg.analysis.sensitivity else [])
    for a in cfg.attacks:
        d = run.analysis_dir(a, cfg.analysis.rule)
        files += [d / "plane.npz", *(d / f"{t}.parquet" for t in ("sample_epoch", "sample", "epoch"))]
    return files


def analyze(cfg: RunConfig, run: RunDir, attack: str | None = None, rule: str | None = None) -> dict:
    from privdyn.analysis.stage import analyze as analyze_one
    from privdyn.analysis.stage import (
        sensitivity_stage,
        training_measures,
        write_summary,
    )

    digest = cfg.section_hash(*ANALYZE_SECTIONS)
    if attack is None and rule is None and run.stage_done("analyze", digest) and run.intact(*analysis_files(cfg, run)):
        return {}
    for a in [attack] if attack else cfg.attacks:
        require_current_scores(cfg, run, a)
    if attack is not None or rule is not None:
        return analyze_one(cfg, run, attack or cfg.default_attack(), rule or cfg.analysis.rule)
    run.mark_stage("analyze", "running", digest)
    membership = run.load_array(run.path / "membership.npy", "membership", mmap=False)
    epochs = run.load_array(run.path / "epochs.npy", "checkpoint epochs", mmap=False)
    measures = training_measures(cfg, run, membership, epochs)  # shared by every attack
    per_attack = {a: analyze_one(cfg, run, a, cfg.analysis.rule, measures) for a in cfg.attacks}
    if cfg.analysis.sensitivity:
        for a, entry in sensitivity_stage(cfg, run, membership, epochs, measures).items():
            per_attack[a]["sensitivity"] = entry
    summary = write_summary(cfg, run, per_attack)
    run.mark_stage("analyze", "done", digest)
    return summary


def report(cfg: RunConfig, run: RunDir, force: bool = False) -> Path:
    """Write the report, unless it is up to date with the analysis (``force``: always)."""
    from privdyn.report.html import build_report

    digest = cfg.section_hash(*ANALYZE_SECTIONS)
    index = run.report_dir / "index.html"
    if not force and run.stage_done("report", digest) and run.intact(index):
        return index  # nothing it reads has changed
    run.mark_stage("report", "running", digest)
    index = build_report(cfg, run)
    run.mark_stage("report", "done", digest)
    return index


def run_all(cfg: RunConfig, out: str | Path, progress: bool = True,
            with_report: bool = True) -> tuple[RunDir, Path | None]:
    """Every stage that is not done yet; returns the run directory and the report path.

    ``with_report=False`` stops after the analysis (sweeps whose runs need no HTML report).
    """
    run = RunDir(out)
    with run.locked():
        run.init(cfg)
        train(cfg, run, progress)
        score(cfg, run, progress=progress)
        analyze(cfg, run)
        return run, report(cfg, run) if with_report else None
