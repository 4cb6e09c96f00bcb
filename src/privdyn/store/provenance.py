"""What each artifact of a run is made from (DESIGN.md, "Provenance and integrity").

An artifact's *input digest* combines its own parameters, the privdyn version and the content
digests of the artifacts it reads. The manifest records it (with the artifact's own content
digest) once the artifact is written; an artifact is *current* when it exists, is intact and
its recorded digest equals the one today's config and inputs give. Because the inputs enter by
content, an artifact stays current when an upstream one is recomputed with the same result
(a seeded retrain after damage, a rescore with options that do not change the scores).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from privdyn.config import ANALYZE_SECTIONS, TRAIN_SECTIONS, RunConfig
from privdyn.store.rundir import RunDir

#: The pool and test signals the analysis reads (model metrics and difficulty).
ANALYSIS_SIGNALS = (("correct", "pool"), ("loss", "pool"), ("el2n", "pool"), ("correct", "test"), ("loss", "test"))


def _digest(**parts: Any) -> str:
    from privdyn import __version__

    blob = json.dumps({**parts, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def membership_digest(cfg: RunConfig) -> str:
    """The membership matrix: the seed, the number of models and the pool."""
    return _digest(seed=cfg.seed, n_models=cfg.training.n_models, dataset=cfg.section_hash("dataset"))


def signal_digest(cfg: RunConfig, run: RunDir) -> str:
    """Every signal: the whole training setup and the membership it trained on."""
    return _digest(train=cfg.section_hash(*TRAIN_SECTIONS), membership=run.content_digest(run.path / "membership.npy"))


def score_digest(cfg: RunConfig, run: RunDir, attack: str) -> str:
    """``scores/ATTACK``: the attack's setup and the contents of the signals it reads."""
    from privdyn.attacks.base import ATTACKS

    spec = ATTACKS[attack]
    inputs = [run.path / "membership.npy", run.path / "epochs.npy", *(run.signal_path(s) for s in spec.needs),
              *(run.signal_path(s, "test") for s in spec.needs_test)]
    return f"{cfg.attack_digest(attack)}-{run.content_digest(*inputs)}"


def scores_current(cfg: RunConfig, run: RunDir, attack: str) -> bool:
    """True when ``scores/ATTACK`` exists, is intact and was made from today's setup and signals."""
    return is_current(run, run.score_path(attack), score_digest(cfg, run, attack))


def _analysis_inputs(run: RunDir) -> list[Path]:
    sig = [run.signal_path(n, split) for n, split in ANALYSIS_SIGNALS]
    return [run.path / "membership.npy", run.path / "epochs.npy", *(p for p in sig if p.exists())]


def _analysis_options(cfg: RunConfig) -> dict[str, Any]:
    # the run-level analyses' switches and options do not change what one attack's analysis is, nor
    # does the number of worker processes
    return cfg.analysis.model_dump(mode="json", exclude={"sensitivity", "rule", "early_warning", "dp_audit", "workers"})


def analysis_digest(cfg: RunConfig, run: RunDir, attack: str, rule: str) -> str:
    """``analysis/ATTACK/RULE``: the analysis options, the scores and the signals it reads."""
    return _digest(options=_analysis_options(cfg), attack=attack, rule=rule, seed=cfg.seed,
                   inputs=run.content_digest(run.score_path(attack), *_analysis_inputs(run)))


def sensitivity_digest(cfg: RunConfig, run: RunDir) -> str:
    """``analysis/sensitivity.parquet``: the analysis options and every attack's scores."""
    return _digest(options=_analysis_options(cfg), rule=cfg.analysis.rule, attacks=cfg.attacks, seed=cfg.seed,
                   inputs=run.content_digest(*(run.score_path(a) for a in cfg.attacks), *_analysis_inputs(run)))


def summary_digest(cfg: RunConfig, run: RunDir, parts: list[Path]) -> str:
    """``summary.json``: the per-attack entries it gathers and the run's description."""
    return _digest(config=cfg.section_hash(*ANALYZE_SECTIONS), inputs=run.content_digest(*parts))


def report_digest(cfg: RunConfig, run: RunDir, inputs: list[Path]) -> str:
    """``report/index.html``: the config and the analysis files (the gallery's inputs among them)."""
    return _digest(config=cfg.section_hash(*ANALYZE_SECTIONS), inputs=run.content_digest(*inputs))


def is_current(run: RunDir, path: Path, digest: str) -> bool:
    """True when the artifact at ``path`` exists, is intact and was made from ``digest``."""
    return run.artifact_current(run.key(path), digest, path)


def record(run: RunDir, digest: str, *paths: Path) -> None:
    """Record that the artifacts at ``paths`` (written atomically just before) were made from ``digest``."""
    run.record_artifacts({run.key(p): {"digest": digest, "content": run.content_digest(p)} for p in paths})


def early_warning_digest(cfg: RunConfig, run: RunDir) -> str:
    """``analysis/early_warning*.parquet``: its options, the rule and bands that give V, the ground-truth
    attack's setup, and the signals and scores it reads (lira_online's when stored, the default attack's)
    and the default attack's per-sample table, which gives A_i(e_T) and V."""
    attacks = sorted({cfg.default_attack(), *(["lira_online"] if "lira_online" in cfg.attacks else [])})
    signals = [run.signal_path(n) for n in ("loss", "phi", "correct", "el2n")]
    return _digest(options=cfg.analysis.early_warning.model_dump(mode="json"), rule=cfg.analysis.rule,
                   bands=cfg.analysis.states.model_dump(mode="json"), el2n_fraction=cfg.analysis.el2n_fraction,
                   default_attack=cfg.default_attack(), lira=cfg.attack_digest("lira_online"),
                   references=cfg.references, queries=cfg.queries,
                   inputs=run.content_digest(run.path / "membership.npy", run.path / "epochs.npy",
                                             *(p for p in signals if p.exists()),
                                             *(run.score_path(a) for a in attacks),
                                             *(p for p in [run.analysis_dir(cfg.default_attack(), cfg.analysis.rule)
                                                           / "sample.parquet"] if p.exists())))


def dp_audit_digest(cfg: RunConfig, run: RunDir) -> str:
    """``analysis/dp_audit.parquet``: the audit's options, every attack's scores, the membership, the
    epochs and, for a DP-SGD run, ``dp.json`` (the accountant's epsilon and delta)."""
    dp = run.path / "dp.json"
    return _digest(options=cfg.analysis.dp_audit.model_dump(mode="json"), attacks=cfg.attacks,
                   dp_delta=cfg.training.dp.delta,
                   inputs=run.content_digest(*(run.score_path(a) for a in cfg.attacks), run.path / "membership.npy",
                                             run.path / "epochs.npy", *([dp] if dp.exists() else [])))
