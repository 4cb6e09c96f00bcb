"""The run directory: its layout, manifest and stage bookkeeping.

Layout::

    RUN/config.yaml          resolved config
    RUN/manifest.json        versions, seeds, per-stage state, hash and timings
    RUN/membership.npy       bool [M, N]
    RUN/epochs.npy           int [T]
    RUN/signals/NAME.npy     [T, M, N, Q] pool signals;  signals/test/NAME.npy for the test split
    RUN/scores/ATTACK.npy    float64 [T, M, N]
    RUN/analysis/ATTACK/RULE/{sample_epoch,sample,epoch,transitions}.parquet, plane.npz
    RUN/summary.json
    RUN/report/index.html and figures
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from privdyn.config import RunConfig, dump_config
from privdyn.errors import PrivdynError
from privdyn.store import atomic

STAGES = ("train", "score", "analyze", "report")


def rule_slug(rule: str) -> str:
    """A folder-safe name for an operating-point rule (``fpr:0.01`` -> ``fpr_0.01``)."""
    return rule.replace(":", "_")


def versions() -> dict[str, str]:
    import numpy
    import pandas
    import torch

    from privdyn import __version__

    return {"privdyn": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__}


class RunDir:
    """Paths and bookkeeping of one run directory (no heavy I/O here)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def signal_path(self, name: str, split: str = "pool") -> Path:
        return self.path / "signals" / ("test" if split == "test" else "") / f"{name}.npy"

    def score_path(self, attack: str) -> Path:
        return self.path / "scores" / f"{attack}.npy"

    def analysis_dir(self, attack: str, rule: str) -> Path:
        return self.path / "analysis" / attack / rule_slug(rule)

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    def group_dir(self, group: int) -> Path:
        return self.path / "train" / f"group_{group:03d}"

    # manifest ----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        return json.loads(self.manifest_path.read_text())

    def _write_manifest(self, m: dict[str, Any]) -> None:
        atomic.write_json(self.manifest_path, m)

    def stage_done(self, stage: str, digest: str) -> bool:
        st = self.manifest()["stages"].get(stage, {})
        return st.get("state") == "done" and st.get("hash") == digest

    def mark_stage(self, stage: str, state: str, digest: str, **extra: Any) -> None:
        m = self.manifest()
        entry = m["stages"].setdefault(stage, {})
        now = time.time()
        if state == "running":
            entry.clear()
            entry["started"] = now
        entry.update(state=state, hash=digest, **extra)
        if state == "done":
            entry["finished"] = now
            entry["seconds"] = round(now - entry.get("started", now), 3)
        # a stage that reruns makes everything after it stale
        if state == "running":
            for later in STAGES[STAGES.index(stage) + 1:]:
                if later in m["stages"]:
                    m["stages"][later]["state"] = "stale"
        self._write_manifest(m)

    # config ------------------------------------------------------------------------------
    def init(self, cfg: RunConfig) -> None:
        """Create the run directory for ``cfg``, or check an existing one was made by it.

        Changing anything that produced the trained signals is an error (the artifacts would be
        stale); later sections may change, and the stages they feed are recomputed.
        """
        from privdyn.config import TRAIN_SECTIONS

        self.path.mkdir(parents=True, exist_ok=True)
        m = self.manifest()
        train_hash = cfg.section_hash(*TRAIN_SECTIONS)
        if m.get("train_hash") not in (None, train_hash):
            raise PrivdynError(
                f"Run directory {self.path} was made with a different training setup "
                f"(seed, dataset, model, training, checkpoints or queries). Reusing it would mix "
                "stale artifacts. Choose a new --out directory, or delete this one to start over."
            )
        atomic.write_text(self.config_path, dump_config(cfg))
        m.update(train_hash=train_hash, seed=cfg.seed, versions=versions())
        m.setdefault("stages", {})
        self._write_manifest(m)

    def load_config(self) -> RunConfig:
        from privdyn.config import load_config

        if not self.config_path.exists():
            raise PrivdynError(f"{self.path} is not a privdyn run directory (no config.yaml). "
                               "Create one with `privdyn run CONFIG --out DIR`.")
        return load_config(self.config_path)

    # arrays ------------------------------------------------------------------------------
    def load_array(self, path: Path, what: str, mmap: bool = True) -> np.ndarray:
        if not path.exists():
            raise PrivdynError(f"{path} is missing: {what}. Run the stage that makes it "
                               f"(`privdyn train|score|analyze {self.path}`).")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
