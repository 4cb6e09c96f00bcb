"""What a report reads from one run directory, loaded once; optional tables are None when absent.

The plane comes from ``plane.npz`` (``[T, N]`` arrays, cheaper than the long sample-epoch table);
everything else from the Parquet tables and ``summary.json`` the analyze stage wrote. Panels look
at what is present and are skipped, with a note on the page, when their inputs are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privdyn.analysis.plane import Plane
from privdyn.analysis.population import states
from privdyn.config import RunConfig
from privdyn.errors import PrivdynError
from privdyn.store.atomic import load_npz, read_json, read_parquet
from privdyn.store.rundir import RunDir

#: Optional Parquet tables a panel may need, by file stem under ``analysis/ATTACK/RULE/``.
OPTIONAL_TABLES = ("transitions", "clusters", "difficulty_spearman", "difficulty_deciles")


@dataclass
class RunData:
    """One analysed run, for one attack and rule."""

    run: RunDir
    config: RunConfig
    attack: str
    rule: str
    summary: dict[str, Any]
    epochs: np.ndarray            # int [T]
    plane: Plane                  # fpr, tpr, adv, auc [T, N]; tau [T]
    states: np.ndarray            # int [T, N], indices into STATE_NAMES
    epoch: pd.DataFrame           # one row per checkpoint
    sample: pd.DataFrame          # one row per sample, in sample order
    labels: np.ndarray | None     # int [N] pool labels
    tables: dict[str, pd.DataFrame]  # the optional tables that exist
    gallery: dict[str, np.ndarray] | None  # gallery.npz: the most vulnerable samples' inputs, or why none
    cache: dict[str, Any] = field(default_factory=dict)  # derived data shared by panels and figures

    @property
    def name(self) -> str:
        """The run's name (``config.name``)."""
        return self.config.name

    @property
    def n_samples(self) -> int:
        """N, the number of pool samples on the plane."""
        return int(self.plane.adv.shape[1])

    @property
    def n_models(self) -> int:
        """M, the number of models trained."""
        return self.config.training.n_models

    def table(self, stem: str) -> pd.DataFrame | None:
        """The optional table ``stem`` (see ``OPTIONAL_TABLES``), or None when the analysis did not write it."""
        return self.tables.get(stem)


def load_run_data(run_dir: str | Path, attack: str | None = None, rule: str | None = None) -> RunData:
    """Read everything a report needs; raises PrivdynError naming the stage to run when missing."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    attack = attack or cfg.default_attack()
    rule = rule or cfg.analysis.rule
    adir = run.analysis_dir(attack, rule)
    needed = [adir / "plane.npz", adir / "epoch.parquet", adir / "sample.parquet", run.summary_path]
    missing = [p for p in needed if not p.exists()]
    if missing:
        if run.next_stage() in ("train", "score"):
            raise run.missing(f"the analysis of {attack} at {rule}")
        raise PrivdynError(f"{run.path} is not analysed for {attack} at {rule} ({missing[0].name} is missing): "
                           f"run `privdyn analyze {run.path}` first")
    arrays = load_npz(adir / "plane.npz")
    plane = Plane.from_arrays(arrays)
    summary = read_json(run.summary_path)
    if summary.get("default_attack") != attack:
        summary = {**summary, **summary.get("attacks", {}).get(attack, {})}
    sample = read_parquet(adir / "sample.parquet")
    if "sample" in sample.columns:
        sample = sample.sort_values("sample", kind="stable").reset_index(drop=True)
    labels_path = run.path / "labels.npy"
    labels = np.load(labels_path, allow_pickle=False) if labels_path.exists() else None
    tables = {stem: read_parquet(adir / f"{stem}.parquet")
              for stem in OPTIONAL_TABLES if (adir / f"{stem}.parquet").exists()}
    for stem in ("early_warning", "early_warning_model"):  # run-level: one table for the run
        if (run.path / "analysis" / f"{stem}.parquet").exists():
            tables[stem] = read_parquet(run.path / "analysis" / f"{stem}.parquet")
    sens = run.path / "analysis" / "sensitivity.parquet"
    if sens.exists():
        tables["sensitivity"] = read_parquet(sens, filters=[("attack", "==", attack)])
    dp_audit = run.path / "analysis" / "dp_audit.parquet"
    if dp_audit.exists():  # every attack: the panel compares them
        tables["dp_audit"] = read_parquet(dp_audit)
    return RunData(run=run, config=cfg, attack=attack, rule=rule, summary=summary,
                   epochs=np.asarray(arrays["epochs"]), plane=plane,
                   states=states(plane.adv, cfg.analysis.states.bands()),
                   epoch=read_parquet(adir / "epoch.parquet"), sample=sample, labels=labels, tables=tables,
                   gallery=load_npz(adir / "gallery.npz") if (adir / "gallery.npz").exists() else None)
