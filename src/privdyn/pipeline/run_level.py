"""Run-level analyses: computed once per run from every attack's stored scores and signals.

The sensitivity table, the early-warning validation and the DP audit each read all attacks at
once. They share one protocol (:class:`RunAnalysis`): a name, whether the config asks for it, the
digest of what it reads, and a function that writes its files under ``analysis/`` and returns its
summary entries. The stage records the entries in ``analysis/NAME.json`` with the files, so a
current analysis is read back instead of redone and its entries reach ``summary.json``: under each
attack's entry (``attacks``) and, for what belongs to the run, at the top level (``run``).

The analyses are declared here, with the function that computes each named by its module: a run
whose analyses are all current is checked without importing them (and scipy, scikit-learn).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from privdyn.config import RunConfig
from privdyn.store import atomic, provenance
from privdyn.store.rundir import RunDir

if TYPE_CHECKING:
    from privdyn.pipeline.analysis import TrainingMeasures


class Entries(TypedDict, total=False):
    """A run-level analysis's summary entries: per attack, and for the run as a whole."""

    attacks: dict[str, Any]
    run: Any


@dataclass(frozen=True)
class RunAnalysis:
    """One run-level analysis: its ``name`` (the summary key and the stem of ``analysis/NAME.json``),
    the ``files`` it writes under ``analysis/``, its ``enabled`` and ``digest`` functions, and
    ``compute``, the ``"module:function"`` that writes the files and returns the entries (called as
    ``function(cfg, run, membership, epochs, measures)``; imported when the analysis runs), and
    whether it ``reads_default_analysis`` (then it runs after the default attack is analysed)."""

    name: str
    files: tuple[str, ...]
    enabled: Callable[[RunConfig], bool]
    digest: Callable[[RunConfig, RunDir], str]
    compute: str
    reads_default_analysis: bool = False

    def paths(self, run: RunDir) -> list[Path]:
        """The analysis's files, its entries file last."""
        folder = run.path / "analysis"
        return [*(folder / f for f in self.files), folder / f"{self.name}.json"]

    def current(self, cfg: RunConfig, run: RunDir) -> bool:
        """True when every file exists, is intact and was made from today's config and inputs."""
        digest = self.digest(cfg, run)
        return all(provenance.is_current(run, p, digest) for p in self.paths(run))

    def run_and_record(self, cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray,
                       measures: TrainingMeasures) -> Entries:
        """Compute, write the entries file and record every file with its digest."""
        digest = self.digest(cfg, run)  # of the inputs as read now, before anything is written
        entries = self.compute_files(cfg, run, membership, epochs, measures)
        self.record(run, digest, entries)
        return entries

    def compute_files(self, cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray,
                      measures: TrainingMeasures) -> Entries:
        """Write the analysis's files (not the entries file) and return its entries; records nothing,
        so that a worker process can do it (:mod:`privdyn.pipeline.workers`)."""
        module, _, function = self.compute.partition(":")
        compute: Callable[[RunConfig, RunDir, np.ndarray, np.ndarray, TrainingMeasures], Entries] = getattr(
            importlib.import_module(module), function)
        return compute(cfg, run, membership, epochs, measures)

    def record(self, run: RunDir, digest: str, entries: Entries) -> None:
        """Write the entries file and record every file with ``digest`` (taken before computing)."""
        *_, entry_file = self.paths(run)
        atomic.write_json(entry_file, dict(entries))
        provenance.record(run, digest, *self.paths(run))

    def read(self, run: RunDir) -> Entries:
        """The stored entries (of a current analysis)."""
        *_, entry_file = self.paths(run)
        return Entries(**atomic.read_json(entry_file))


def audit_enabled(cfg: RunConfig) -> bool:
    """``analysis.dp_audit.enabled``, or when it is None (the default) whether the run trains with DP-SGD."""
    on = cfg.analysis.dp_audit.enabled
    return cfg.training.dp.enabled if on is None else on


#: The sensitivity of the headline dynamics to the rule, grid and bands (DESIGN.md, "Sensitivity").
SENSITIVITY = RunAnalysis("sensitivity", ("sensitivity.parquet",), lambda cfg: cfg.analysis.sensitivity,
                          provenance.sensitivity_digest, "privdyn.pipeline.analysis:sensitivity_stage")
#: The early-warning validation (DESIGN.md, "Early warning").
EARLY_WARNING = RunAnalysis("early_warning", ("early_warning.parquet", "early_warning_model.parquet"),
                            lambda cfg: cfg.analysis.early_warning.enabled, provenance.early_warning_digest,
                            "privdyn.pipeline.warning:early_warning_stage", reads_default_analysis=True)
#: Empirical epsilon lower bounds per checkpoint and attack (DESIGN.md, "DP auditing").
DP_AUDIT = RunAnalysis("dp_audit", ("dp_audit.parquet",), audit_enabled, provenance.dp_audit_digest,
                       "privdyn.pipeline.dp_audit:dp_audit_stage")


def run_analyses() -> list[RunAnalysis]:
    """Every run-level analysis, in the order the summary lists them."""
    return [SENSITIVITY, EARLY_WARNING, DP_AUDIT]
