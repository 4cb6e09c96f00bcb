"""The DP audit stage: empirical epsilon lower bounds of every attack at every checkpoint, beside
the accountant's epsilon of a DP-SGD run (DESIGN.md, "DP auditing"; docs/dp_audit.md).

A run-level analysis (:class:`~privdyn.pipeline.run_level.RunAnalysis`): on by default for DP-SGD
runs (``analysis.dp_audit.enabled: null``), off otherwise. It reads every attack's scores one
checkpoint at a time, the membership, the epochs and ``dp.json``, writes
``analysis/dp_audit.parquet`` (one row per attack, epoch and estimator, the attack's best of the
three as estimator ``best``, and the strongest bound per epoch under ``attack = "*"``) and returns
the summary entries: each attack's bounds per epoch (``attacks``) and the run's strongest bound
per epoch beside the accountant's epsilon (``run``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from privdyn.analysis import dp_audit
from privdyn.analysis.dp_audit import ESTIMATORS, STRONGEST, AuditOptions, DPAudit, with_confidence
from privdyn.analysis.results import num, nums
from privdyn.config import RunConfig
from privdyn.pipeline.run_level import DP_AUDIT, Entries
from privdyn.store import atomic
from privdyn.store.rundir import RunDir

if TYPE_CHECKING:
    from privdyn.pipeline.analysis import TrainingMeasures


def dp_record(run: RunDir) -> dict[str, Any] | None:
    """The train stage's ``dp.json`` (accountant, delta, epsilon per checkpoint), None without DP-SGD."""
    path = run.path / "dp.json"
    return atomic.read_json(path) if path.exists() else None


def recorded_epsilons(rec: dict[str, Any]) -> list[float]:
    """``dp.json``'s epsilon per checkpoint; null is read as infinity (no noise: no finite epsilon)."""
    return [math.inf if e is None else float(e) for e in rec["epsilon_per_checkpoint"]]


def audit_delta(cfg: RunConfig, run: RunDir, n_pool: int) -> float:
    """The delta of the bounds: ``analysis.dp_audit.delta``, else the DP run's delta, else 1/N_train
    (N_train = N/2, the samples each model trains on)."""
    if cfg.analysis.dp_audit.delta is not None:
        return cfg.analysis.dp_audit.delta
    rec = dp_record(run)
    if rec is not None:
        return float(rec["delta"])
    if cfg.training.dp.delta is not None:
        return cfg.training.dp.delta
    return 1.0 / max(1, n_pool // 2)


def accountant_epsilon(run: RunDir, epochs: np.ndarray, delta: float) -> list[float] | None:
    """Opacus's epsilon at every checkpoint at ``delta`` (None without ``dp.json``): as recorded when
    delta is the run's own, else recomputed from the recorded noise, sample rate and steps."""
    rec = dp_record(run)
    if rec is None:
        return None
    if math.isclose(float(rec["delta"]), delta, rel_tol=1e-12):
        by_epoch = dict(zip(rec["epochs"], recorded_epsilons(rec)))
        if all(int(e) in by_epoch for e in epochs):
            return [by_epoch[int(e)] for e in epochs]
    from privdyn.training.dp import dp_epsilon

    return [dp_epsilon(rec["noise_multiplier"], rec["sample_rate"], int(e) * rec["steps_per_epoch"], delta)
            for e in epochs]


def audit_options(cfg: RunConfig, delta: float) -> AuditOptions:
    """The core's options from ``analysis.dp_audit`` and the delta of :func:`audit_delta`."""
    c = cfg.analysis.dp_audit
    return AuditOptions(confidence=c.confidence, delta=delta, k=tuple(c.k), fprs=tuple(c.fpr_levels),
                        design=c.design)


def _rows(attack: str, epochs: np.ndarray, a: DPAudit, counts: dp_audit.AuditCounts,
          accountant: list[float] | None, best: tuple[np.ndarray, list[str | None]],
          best_confidence: float) -> pd.DataFrame:
    """The long table's rows of one attack: one per epoch and estimator, then its best of the
    three (at ``best_confidence``, the estimator that gives it in ``winner``)."""
    T = len(epochs)
    o, g, cp = a.one_run, a.gdp, a.clopper_pearson
    ts = np.arange(T)
    fprs, tpr, fpr = counts.operating.fprs, counts.operating.tpr, counts.operating.fpr
    nan = np.full(T, np.nan)
    per = {
        "one_run": dict(epsilon_lb=o.epsilon, k=o.k, correct=o.correct, guesses=o.guesses, model=o.model,
                        mu_lb=nan, fpr_level=nan, tpr_lo=nan, fpr_hi=nan, tpr=nan, fpr=nan),
        "gdp": dict(epsilon_lb=g.epsilon, mu_lb=g.mu, fpr_level=fprs[g.point], tpr_lo=cp.tpr_lo[ts, g.point],
                    fpr_hi=cp.fpr_hi[ts, g.point], tpr=tpr[ts, g.point], fpr=fpr[ts, g.point]),
        "clopper_pearson": dict(epsilon_lb=cp.epsilon, fpr_level=fprs[cp.point], tpr_lo=cp.tpr_lo[ts, cp.point],
                                fpr_hi=cp.fpr_hi[ts, cp.point], tpr=tpr[ts, cp.point], fpr=fpr[ts, cp.point]),
    }
    frames = []
    for est, cols in per.items():
        frames.append(pd.DataFrame({"attack": attack, "epoch": epochs, "estimator": est, **cols}))
    table = pd.concat(frames, ignore_index=True)
    table["confidence"] = a.one_run.confidence
    table["delta"] = a.one_run.delta
    acc = np.asarray(accountant if accountant is not None else nan, float)
    table["accountant_epsilon"] = np.tile(acc, 3)
    best_rows = pd.DataFrame({"attack": attack, "epoch": epochs, "estimator": "best", "epsilon_lb": best[0],
                              "confidence": best_confidence, "delta": a.one_run.delta, "accountant_epsilon": acc,
                              "winner": [w or "" for w in best[1]]})
    return pd.concat([table, best_rows], ignore_index=True)


def _named_best(a: DPAudit) -> tuple[np.ndarray, list[str | None]]:
    """:meth:`DPAudit.best` with no estimator named where the best bound is 0 (no evidence at all)."""
    eps, which = a.best()
    return eps, [w if e > 0 else None for e, w in zip(eps, which)]


def _attack_entry(epochs: np.ndarray, a: DPAudit, best: tuple[np.ndarray, list[str | None]], best_confidence: float,
                  counts: dp_audit.AuditCounts) -> dict[str, Any]:
    """One attack's ``summary.json`` entry: per-epoch lists and final values per estimator."""
    o, g, cp = a.one_run, a.gdp, a.clopper_pearson
    fprs = counts.operating.fprs
    eps, which = best
    return {
        "epochs": [int(e) for e in epochs], "confidence": o.confidence, "delta": o.delta,
        "one_run": {"epsilon_lb": nums(o.epsilon), "final": num(float(o.epsilon[-1])),
                    "k": o.k.tolist(), "correct": o.correct.tolist(), "guesses": o.guesses.tolist(),
                    "model": o.model.tolist(), "design": "fixed_weight" if o.fixed_weight else "independent"},
        "gdp": {"epsilon_lb": nums(g.epsilon), "final": num(float(g.epsilon[-1])), "mu_lb": nums(g.mu),
                "mu_lb_final": num(float(g.mu[-1])), "fpr_level": fprs[g.point].tolist()},
        "clopper_pearson": {"epsilon_lb": nums(cp.epsilon), "final": num(float(cp.epsilon[-1])),
                            "fpr_level": fprs[cp.point].tolist()},
        "best": {"epsilon_lb": nums(eps), "estimator": which, "final": num(float(eps[-1])),
                 "confidence": best_confidence},
    }


def exceeding_epochs(epochs: np.ndarray, bounds: np.ndarray, accountant: list[float]) -> list[int]:
    """The epochs where the largest of ``bounds`` ``[K, T]`` (NaN: undefined) is above the accountant's epsilon."""
    top = np.max(np.where(np.isnan(bounds), -np.inf, bounds), axis=0)
    return [int(e) for e, lb, up in zip(epochs, top, accountant, strict=True) if np.isfinite(lb) and lb > up + 1e-9]


def dp_audit_stage(cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray,
                   measures: TrainingMeasures) -> Entries:
    """``analysis/dp_audit.parquet`` and the entries: every attack's three bounds per epoch at the
    configured confidence, each attack's best of the three at 1 - beta/3 and the run's strongest
    over attacks and estimators at 1 - beta / (3 A), so that each maximum holds at 1 - beta too.

    ``exceeds_accountant`` is one verdict over all T checkpoints, so its bounds are taken at
    1 - beta / (3 A T): a correct accountant is then flagged at some epoch with probability at
    most beta, where the per-epoch strongest bounds would allow up to T beta."""
    n_pool = membership.shape[1]
    delta = audit_delta(cfg, run, n_pool)
    opts = audit_options(cfg, delta)
    n_est = len(ESTIMATORS)
    per_attack_conf = 1 - opts.beta / n_est
    strongest_conf = 1 - opts.beta / (n_est * len(cfg.attacks))
    accountant = accountant_epsilon(run, epochs, delta)
    T = len(epochs)
    check_conf = 1 - opts.beta / (n_est * len(cfg.attacks) * T)
    tables, entries, strong, checked = [], {}, [], []
    design = "independent"
    for attack in cfg.attacks:
        counts = dp_audit.audit_counts(run.load_scores(attack), membership, opts)
        design = "fixed_weight" if counts.one_run.fixed_weight else "independent"
        a = dp_audit.audit(counts, opts)
        b = dp_audit.audit(counts, with_confidence(opts, per_attack_conf))
        s = b if len(cfg.attacks) == 1 else dp_audit.audit(counts, with_confidence(opts, strongest_conf))
        best = _named_best(b)
        tables.append(_rows(attack, epochs, a, counts, accountant, best, per_attack_conf))
        entries[attack] = _attack_entry(epochs, a, best, per_attack_conf, counts)
        strong.append(np.stack([s.epsilon(e) for e in ESTIMATORS]))  # [3, T]
        if accountant is not None:  # the verdict's bounds: at 1 - beta / (3 A T)
            c = s if T == 1 else dp_audit.audit(counts, with_confidence(opts, check_conf))
            checked.append(c.best()[0])
    names = [(a, e) for a in cfg.attacks for e in ESTIMATORS]
    stack = np.concatenate(strong)  # [A * 3, T]
    j = np.argmax(np.where(np.isnan(stack), -np.inf, stack), axis=0)
    eps = stack[j, np.arange(T)]
    winners: list[tuple[str, str] | None] = [names[i] if eps[k] > 0 else None for k, i in enumerate(j)]
    table = pd.concat(tables, ignore_index=True)
    acc = np.asarray(accountant if accountant is not None else np.full(T, np.nan), float)
    strongest_rows = pd.DataFrame({"attack": STRONGEST, "epoch": epochs, "estimator": "strongest",
                                   "epsilon_lb": eps, "confidence": strongest_conf, "delta": delta,
                                   "accountant_epsilon": acc,
                                   "winner": [f"{w[0]}/{w[1]}" if w else "" for w in winners]})
    table = pd.concat([table, strongest_rows], ignore_index=True)
    table["winner"] = table["winner"].fillna("")
    for col in ("k", "correct", "guesses", "model"):
        table[col] = table[col].astype("Int64")
    atomic.write_parquet(DP_AUDIT.paths(run)[0], table)
    exceeds = None if accountant is None else exceeding_epochs(epochs, np.stack(checked), accountant)
    run_entry = {
        "epochs": [int(e) for e in epochs], "confidence": opts.confidence, "delta": delta,
        "design": design, "n_canaries": int(n_pool),
        "accountant_epsilon": nums(np.asarray(accountant)) if accountant else None,  # null: no finite epsilon
        "accountant_epsilon_final": num(accountant[-1]) if accountant else None,
        "strongest": {"epsilon_lb": nums(eps), "attack": [w[0] if w else None for w in winners],
                      "estimator": [w[1] if w else None for w in winners], "final": num(float(eps[-1])),
                      "confidence": strongest_conf},
        "exceeds_accountant": exceeds,
        "exceeds_accountant_confidence": check_conf if accountant is not None else None,
    }
    return Entries(attacks=entries, run=run_entry)
