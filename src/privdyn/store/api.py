"""``privdyn.open_run``: read access to a finished (or partial) run directory."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from privdyn.analysis.rules import parse_rule
from privdyn.config import RunConfig
from privdyn.errors import PrivdynError
from privdyn.registry import ATTACKS
from privdyn.store import atomic
from privdyn.store.arrays import SUFFIX
from privdyn.store.rundir import RunDir


@dataclass(frozen=True)
class Tables:
    """The analysis tables of one attack and rule (columns: docs/metrics.md)."""

    sample_epoch: pd.DataFrame
    sample: pd.DataFrame
    epoch: pd.DataFrame
    transitions: pd.DataFrame
    clusters: pd.DataFrame
    difficulty_spearman: pd.DataFrame
    difficulty_deciles: pd.DataFrame


class Run:
    """A run directory opened for reading. Arrays are verified on read, never unpickled."""

    def __init__(self, path: str | Path):
        self._dir = RunDir(path)
        if not self._dir.config_path.exists():
            raise PrivdynError(f"{path} is not a privdyn run directory (no config.yaml)")

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._dir.path

    @cached_property
    def _config(self) -> RunConfig:
        return self._dir.load_config()

    @property
    def config(self) -> RunConfig:
        """The run's resolved config (``config.yaml``): a copy, so that changing it changes nothing
        this object reads."""
        return self._config.model_copy(deep=True)

    @property
    def manifest(self) -> dict:
        """``manifest.json``: versions, the seed, stage states and recorded artifacts (read again on each access)."""
        return self._dir.manifest()

    @cached_property
    def membership(self) -> np.ndarray:
        """Bool ``[M, N]``: ``membership[m, i]`` is true when model m trained on sample i."""
        return _read_only(self._dir.load_array(self.path / "membership.npy", "the membership matrix"))

    @cached_property
    def epochs(self) -> np.ndarray:
        """Int ``[T]``: the checkpoint epochs."""
        return _read_only(self._dir.load_array(self.path / "epochs.npy", "the checkpoint epochs"))

    def signal(self, name: str, split: str = "pool") -> np.ndarray:
        """``[T, M, N, Q]`` signal, read and verified; split='test' for the test split. For one
        checkpoint at a time, index ``RunDir(path).checkpoints(...)`` instead."""
        from privdyn.store.provenance import is_current, signal_digest

        if split not in ("pool", "test"):
            raise PrivdynError(f"split {split!r}: a run's signals are of the 'pool' or the 'test' split")
        path = self._dir.signal_path(name, split)
        if not path.exists():
            stored = sorted(p.name.removesuffix(SUFFIX) for p in path.parent.glob(f"*{SUFFIX}"))
            if stored:  # training is done (or under way) and made no such signal
                raise PrivdynError(f"{self.path} stores no {split} signal {name!r}; it stores {stored}.")
        values = np.asarray(self._dir.checkpoints(path, f"signal {name!r}"))  # verifies every chunk
        if not is_current(self._dir, path, signal_digest(self._config, self._dir)):
            raise PrivdynError(f"The signal {name!r} in {self.path} was not made by this run's training setup "
                               f"(stale or from an interrupted training). Run `privdyn run CONFIG --out {self.path}`.")
        return values

    def scores(self, attack: str) -> np.ndarray:
        """float64 ``[T, M, N]`` attack scores (stored as float32); refused when damaged or stale
        (made with other attack options, references, training or signals than the run's)."""
        from privdyn.store.provenance import scores_current

        if attack not in ATTACKS:
            raise PrivdynError(f"Unknown attack {attack!r}; the registered attacks are {ATTACKS.names()}.")
        scores = np.asarray(self._dir.load_scores(attack, f"scores of attack {attack!r} (score it with "
                                                  f"`privdyn score {self.path} --attacks {attack}`)"))
        if not scores_current(self._config, self._dir, attack):
            raise PrivdynError(f"The scores of {attack} in {self.path} are stale: the run's config or signals "
                               f"changed since they were made. Rescore with `privdyn score {self.path} --attacks "
                               f"{attack}`.")
        return scores

    def plane(self, attack: str | None = None, rule: str | None = "fpr:0.01") -> tuple[np.ndarray, np.ndarray]:
        """(FPR, TPR), each ``[T, N]``, computed from the scores for any rule (DESIGN.md's default
        ``fpr:0.01``, whatever the run's own rule; None is that default)."""
        from privdyn.analysis.plane import operating_points
        from privdyn.config import check_rule

        return operating_points(self.scores(attack or self._config.default_attack()), self.membership,
                                check_rule(rule or "fpr:0.01"))

    def summary(self) -> dict:
        """``summary.json``, verified against its checksum; a :class:`PrivdynError` until ``privdyn analyze``
        has written it."""

        if not self._dir.summary_path.exists():
            raise PrivdynError(f"{self.path} has no summary.json yet: run `privdyn analyze {self.path}`")
        return atomic.read_json(self._dir.summary_path)

    def tables(self, attack: str | None = None, rule: str | None = None) -> Tables:
        """The Parquet tables of an attack and rule: per sample-epoch, per sample, per epoch, the
        state transitions, the trajectory clusters and the difficulty correlations and deciles."""
        from privdyn.config import check_rule

        attack, rule = attack or self._config.default_attack(), check_rule(rule or self._config.analysis.rule)
        if parse_rule(rule) == parse_rule(self._config.analysis.rule):
            rule = self._config.analysis.rule  # fpr:0.010 is fpr:0.01: the folder is named as the config spells it
        d = self._dir.analysis_dir(attack, rule)
        names = [f.name for f in fields(Tables)]
        missing = [n for n in names if not (d / f"{n}.parquet").exists()]
        if missing:
            raise PrivdynError(f"No analysis tables {missing} in {d} (not analysed yet, or by an older "
                               f"privdyn): run `privdyn analyze {self.path} --attack {attack} --rule {rule}`")
        from privdyn.store.provenance import analysis_digest, is_current

        if not is_current(self._dir, d, analysis_digest(self._config, self._dir, attack, rule)):
            raise PrivdynError(f"The analysis of {attack} at {rule} in {self.path} is stale or damaged: its scores, "
                               f"signals or analysis options changed since it was made. Rerun it with `privdyn "
                               f"analyze {self.path} --attack {attack} --rule {rule}`.")
        return Tables(*(atomic.read_parquet(d / f"{n}.parquet") for n in names))

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def _read_only(array: np.ndarray) -> np.ndarray:
    """``array``, made read-only: it is cached and shared by every later call on the run."""
    array.flags.writeable = False
    return array


def open_run(path: str | Path) -> Run:
    """Open a run directory made by ``privdyn run``."""
    return Run(path)
