"""The early-warning stage: every proxy validated against the shadow-model ground truth, per epoch.

A run-level analysis (:class:`~privdyn.pipeline.run_level.RunAnalysis`), on by default
(``analysis.early_warning.enabled``). It reads the stored pool signals (identity query), the
final lira_online scores (stored when the run scores lira_online; otherwise computed here at the
final checkpoint only, from the stored signals, and not stored) and the default attack's scores
(V at the config's rule and bands, and the measured TPR per epoch when lira_online is not
stored), and writes

- ``analysis/early_warning.parquet``: proxy, truth, epoch, fraction, k, metric, mean, ci_low,
  ci_high, n_models, k_mean (:class:`~privdyn.analysis.warning.ProxyValidation`);
- ``analysis/early_warning_model.parquet``: the loss-tail estimate of TPR at low FPR against the
  measured TPR (:class:`~privdyn.analysis.warning.TailValidation`), with the measuring attack.

Memory is bounded: the models are validated in blocks sized to :data:`MEMORY_BUDGET` (each block
reads the signals of its models at every checkpoint), counting the working memory of every proxy
validated at once: one per CPU this process may use, at most one per proxy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from privdyn.analysis.difficulty import early_index
from privdyn.analysis.proxies import PROXIES, Traces, available_proxies
from privdyn.analysis.warning import (
    SPEARMAN_TARGET,
    ProxyValidation,
    TailValidation,
    WarningOptions,
    attack_truth,
    proxy_options_for,
    tail_validation,
    validate_proxies,
)
from privdyn.attacks.base import ATTACKS, CheckpointData
from privdyn.attacks.references import reference_plan
from privdyn.config import RunConfig
from privdyn.errors import PrivdynError
from privdyn.pipeline.run_level import EARLY_WARNING, Entries
from privdyn.pipeline.workers import usable_cpus
from privdyn.store import atomic
from privdyn.store.arrays import CheckpointArray
from privdyn.store.rundir import RunDir

if TYPE_CHECKING:
    from privdyn.pipeline.analysis import TrainingMeasures

#: The attack whose final flags are the per-model ground truth (Pollock et al. 2024).
TRUTH_ATTACK = "lira_online"
#: Bytes of working memory the proxy validation may hold at once (signals and curves of a block).
MEMORY_BUDGET = 1 << 30
#: Working bytes per (checkpoint, model, sample) entry: four float32 signals and their member
#: view, shared by the proxies; and the float64 prefix sums and curve of each proxy being validated.
_SHARED_BYTES_PER_ENTRY = 24
_PROXY_BYTES_PER_ENTRY = 40
#: The fractions of training whose best precision the summary reports.
FRACTIONS = (0.25, 0.5)


def pool_signals(cfg: RunConfig, run: RunDir) -> dict[str, CheckpointArray]:
    """The stored pool signals a proxy can use, ``[T, M, N]`` at the identity query, as float32:
    the loss, which every run stores, and phi, correct and el2n where the run stored them (the
    proxies that need a missing one are left out)."""
    from privdyn.pipeline.analysis import identity_query

    q = identity_query(cfg)
    out = {}
    for name in ("loss", "phi", "correct", "el2n"):
        path = run.signal_path(name)
        if name != "loss" and not path.exists():
            continue
        out[name] = run.checkpoints(path, f"signal {name}").at_query(q).as_type(np.float32)
    return out


def final_truth_scores(cfg: RunConfig, run: RunDir, membership: np.ndarray) -> tuple[np.ndarray, str]:
    """lira_online's scores ``[M, N]`` at the final checkpoint and where they come from: the stored
    scores, or computed now from the stored signals with the run's reference rule."""
    if TRUTH_ATTACK in cfg.attacks:
        scores = run.load_scores(TRUTH_ATTACK)
        return np.asarray(scores[scores.shape[0] - 1], dtype=np.float64), "stored"
    spec = ATTACKS[TRUTH_ATTACK]
    pool = {s: run.checkpoints(run.signal_path(s), f"signal {s} (needed by {TRUTH_ATTACK})") for s in spec.needs}
    test = {s: run.checkpoints(run.signal_path(s, "test"), f"test signal {s}") for s in spec.needs_test}
    last = {k: np.asarray(v[v.shape[0] - 1]) for k, v in pool.items()}
    data = CheckpointData(last, {k: np.asarray(v[v.shape[0] - 1]) for k, v in test.items()}, membership,
                          reference_plan(membership, cfg.references, cfg.seed))
    return np.asarray(spec.run(data, cfg.options_for(TRUTH_ATTACK)), dtype=np.float64), "computed"


def final_plane(cfg: RunConfig, run: RunDir) -> tuple[np.ndarray, np.ndarray]:
    """A_i(e_T) ``[N]`` and V ``[N]`` of the default attack at the config's rule and bands, as its
    analysis stored them (``sample.parquet``; run-level analyses run after the per-attack ones)."""
    sample = atomic.read_parquet(run.analysis_dir(cfg.default_attack(), cfg.analysis.rule) / "sample.parquet",
                                 columns=["sample", "final_advantage", "finally_vulnerable"]).sort_values("sample")
    return sample["final_advantage"].to_numpy(np.float64), sample["finally_vulnerable"].to_numpy(bool)


def _proxies(cfg: RunConfig, have: set[str]) -> tuple[str, ...]:
    asked = cfg.analysis.early_warning.proxies
    if asked is None:
        probe = Traces(np.zeros(1), np.zeros((1, 1)), **{k: np.zeros((1, 1)) for k in have - {"loss"}})
        return tuple(available_proxies(probe))
    lacking = {p: sorted(set(PROXIES[p].needs) - have) for p in asked}
    lacking = {p: s for p, s in lacking.items() if s}
    if lacking:
        raise PrivdynError(f"analysis.early_warning.proxies: {', '.join(lacking)} need signals this run did not "
                           f"store ({lacking}); leave them out or set the field to null (every proxy the run "
                           "supports)")
    return tuple(asked)


def _block_size(T: int, M: int, N: int, workers: int = 1) -> int:
    per_entry = _SHARED_BYTES_PER_ENTRY + _PROXY_BYTES_PER_ENTRY * workers
    return max(1, min(M, MEMORY_BUDGET // max(1, per_entry * T * N)))


def validate_run(cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray,
                 k_early: int) -> tuple[ProxyValidation, TailValidation, dict[str, Any]]:
    """The proxy validation, the loss-tail validation and what they were made from."""
    ew = cfg.analysis.early_warning
    sig = pool_signals(cfg, run)
    try:
        truth_scores: np.ndarray | None
        truth_scores, source = final_truth_scores(cfg, run, membership)
    except PrivdynError as e:  # e.g. too few models for LiRA's references: validate against V alone
        truth_scores, source = None, f"unavailable: {e}"
    final_adv, high = final_plane(cfg, run)
    z = np.asarray(membership, dtype=bool)
    truths = {"final_high": high}
    if truth_scores is not None:
        truths["attack"] = attack_truth(truth_scores, z, ew.truth_rule)
    names = _proxies(cfg, set(sig))
    workers = min(usable_cpus(), len(names))
    options = WarningOptions(proxies=names, proxy_options=proxy_options_for(epochs, k_early), k_share=ew.k_share,
                             workers=workers)
    T, (M, N) = len(epochs), z.shape
    step = _block_size(T, M, N, workers)
    parts = []
    loss: Any = sig["loss"]  # streamed by the tail validation, unless one block holds every model
    for m0 in range(0, M, step):
        block = slice(m0, min(M, m0 + step))
        arrays = {k: v[:, block] for k, v in sig.items()}  # one read of every checkpoint's chunks
        if step >= M:
            loss = arrays["loss"]
        traces = Traces(epochs, arrays.pop("loss"), **arrays)
        block_truths = {name: (t[block] if t.ndim == 2 else t) for name, t in truths.items()}
        parts.append(validate_proxies(traces, z[block], block_truths, final_adv, options))
    validation = ProxyValidation.concat(parts)
    measured_by = TRUTH_ATTACK if TRUTH_ATTACK in cfg.attacks else cfg.default_attack()
    tail = tail_validation(loss, z, run.load_scores(measured_by), epochs, ew.tail_alphas)
    about = {"truth_attack": TRUTH_ATTACK, "truth_rule": ew.truth_rule, "truth_scores": source,
             "v_attack": cfg.default_attack(), "v_rule": cfg.analysis.rule, "n_final_high": int(high.sum()),
             "tail_measured_by": measured_by, "proxies": list(names)}
    return validation, tail, about


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def summarise(validation: ProxyValidation, tail: TailValidation, about: dict[str, Any]) -> dict[str, Any]:
    """The summary entries: at the checkpoints nearest 25% and 50% of training, the best proxy's
    precision@k=1% against the attack's flags (``best_precision_at_25pct``, ...) and its
    precision@k=|V| against V (``best_v_precision_at_25pct``, ..., the one-model counterpart of
    the shadow models' recall(t)); every proxy's final values; the final tail estimate."""
    ep = validation.epochs
    out: dict[str, Any] = dict(about)
    out["mean_truth_per_model"] = {t: _num(np.mean(s)) for t, s in validation.truth_size.items()}
    out["k_1pct"] = _num(np.mean(validation.k_used[("final_high", "1%")]))  # the same k for every truth
    for f in FRACTIONS:
        j = early_index(ep, f)
        for key, (truth, k) in (("best_precision", ("attack", "1%")), ("best_v_precision", ("final_high", "truth"))):
            best: dict[str, Any] = {"proxy": None, "epoch": _num(ep[j]), "fraction": _num(ep[j] / ep[-1]),
                                    "mean": None, "ci": [None, None]}
            for p in validation.proxies:
                if (p, truth, "precision", k) not in validation.values:
                    continue
                s = validation.summary(p, truth, "precision", k)
                if np.isfinite(s.mean[j]) and (best["mean"] is None or s.mean[j] > best["mean"]):
                    best.update(proxy=p, mean=_num(s.mean[j]), ci=[_num(s.ci_low[j]), _num(s.ci_high[j])])
            out[f"{key}_at_{round(100 * f)}pct"] = best
    final: dict[str, dict[str, float | None]] = {}
    names = {("attack", "precision", "1%"): "precision_at_1pct", ("attack", "precision", "truth"): "precision_at_truth",
             ("attack", "recall", "1%"): "recall_at_1pct", ("attack", "auc", "all"): "auc",
             ("final_high", "precision", "1%"): "v_precision_at_1pct",
             ("final_high", "precision", "truth"): "v_precision_at_v", ("final_high", "auc", "all"): "v_auc",
             (SPEARMAN_TARGET, "spearman", "all"): "spearman_final_advantage"}
    for p in validation.proxies:
        final[p] = {label: _num(validation.summary(p, *key).mean[-1]) if (p, *key) in validation.values else None
                    for key, label in names.items()}
    out["final"] = final
    tail_out = {}
    for a, alpha in enumerate(tail.alphas):
        est = np.nanmean(tail.estimate[-1, a]) if np.isfinite(tail.estimate[-1, a]).any() else np.nan
        meas = np.nanmean(tail.measured[-1, a]) if np.isfinite(tail.measured[-1, a]).any() else np.nan
        err = np.abs(tail.estimate[:, a] - tail.measured[:, a])
        tail_out[f"{alpha:g}"] = {"estimate_final": _num(est), "measured_final": _num(meas),
                                  "mean_abs_error": _num(np.nanmean(err)) if np.isfinite(err).any() else None}
    out["tail"] = tail_out
    return out


def early_warning_stage(cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray,
                        measures: TrainingMeasures) -> Entries:
    """Write both tables and return the run-level summary entry (:func:`summarise`)."""
    validation, tail, about = validate_run(cfg, run, membership, epochs, measures.k_early)
    table = pd.DataFrame(validation.columns())
    table.insert(3, "fraction", table["epoch"] / float(epochs[-1]) if epochs[-1] > 0 else np.nan)
    validation_path, tail_path, _ = EARLY_WARNING.paths(run)
    atomic.write_parquet(validation_path, table)
    model = pd.DataFrame(tail.columns())
    model.insert(0, "attack", about["tail_measured_by"])
    atomic.write_parquet(tail_path, model)
    return Entries(run=summarise(validation, tail, about))
