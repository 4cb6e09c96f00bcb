"""Early-warning validation: how well one model's own proxies find its at-risk samples, per epoch.

For every proxy (:mod:`privdyn.analysis.proxies`), every model m taken as the monitored model and
every checkpoint t, the proxy is computed from model m's own signals up to t and compared with
two ground truths that only the shadow models can give (DESIGN.md, "Early warning"):

- ``attack``: the samples the strong attack flags on target m at the end (LiRA online at
  ``fpr:0.001`` at e_T: ``s[T, m, i] > tau``, tau the 0.999 quantile of every OUT score at e_T,
  the plane's rule), a per-model truth as in Pollock et al. 2024;
- ``final_high``: the finally-high set V of the plane (:func:`privdyn.analysis.early.final_vulnerable`).

**Only the monitored model's training samples are ranked.** A monitor sees its training data
and nothing else, and a non-member cannot be a membership-inference hit on that model, so the
candidates of model m are {i : Z[m, i] = 1}; V is intersected with them.

Metrics, per model (NaN where undefined: every metric of a model whose truth is empty, since
there is nothing to find; such models are left out of the mean, and ``n_models`` says how many
remain):

- ``precision`` at ``k="1%"``: the share of the truth among the top k by the proxy, with
  k = ceil(1% of the monitored model's training set) (Pollock et al.'s precision@k=1%: 250 of
  a 25,000-sample training set); at ``k="truth"``: k = that model's truth size (R-precision,
  which equals recall at the same k; for V this is the "k = |V|" of DESIGN.md, restricted to
  the model's members);
- ``recall`` at ``k="1%"``: the share of the truth found in the top k;
- ``auc``: Mann-Whitney AUC of truth vs the other candidates, ties 1/2;
- ``spearman`` (truth ``final_advantage``): Spearman of the proxy with A_i(e_T) over the candidates.

Ties at the k-th score share the remaining places (the expected count under random tie-breaking,
as :func:`~privdyn.analysis.early.recall_curve`), so nothing depends on sample order. A NaN proxy
score ranks below every finite one (tied with the other NaNs).

Across models: the mean and a two-sided Student-t interval over the monitored models with a
finite value (mean +- t_{(1+level)/2, n-1} sd / sqrt(n)). The models share samples (each sample
is IN for half of them), so the interval is a summary of the model-to-model spread of the mean,
not an exact CI.

Model level (:func:`tail_validation`): the loss-tail estimate of TPR at low FPR of Dodd et al.
2025 ("The Tail Tells All") against the measured TPR of the strong attack, per model and epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from privdyn.analysis.checkpoints import Checkpoints
from privdyn.analysis.plane import threshold
from privdyn.analysis.proxies import PROXIES, Traces, available_proxies, proxy_curve
from privdyn.analysis.quantiles import sorted_quantile

#: The two ground truths ranked against, and the per-sample target of the Spearman correlation.
TRUTHS = ("attack", "final_high")
SPEARMAN_TARGET = "final_advantage"
#: (metric, k) pairs computed for each truth.
TRUTH_METRICS = (("precision", "1%"), ("precision", "truth"), ("recall", "1%"), ("auc", "all"))

Key = tuple[str, str, str, str]  # (proxy, truth, metric, k)


# --- ranking metrics over the valid entries of each row ----------------------------------------

class Ranking:
    """Rows of scores ranked once (one argsort per row): average ranks among the ``valid``
    entries, every entry's position in sorted order and the tie group of every position. NaN
    scores rank below every finite score, invalid entries below everything and outside every count.
    """

    def __init__(self, scores: np.ndarray, valid: np.ndarray):
        s = np.asarray(scores, dtype=np.float64)
        self.valid = np.asarray(valid, dtype=bool)
        if not np.isfinite(s).all():  # NaN below every number, infinities kept apart from -inf
            low = np.finfo(np.float64).min
            s = np.where(np.isnan(s), low, np.clip(s, low / 2, np.finfo(np.float64).max))
        self.s = s if self.valid.all() else np.where(self.valid, s, -np.inf)
        self.n_valid = self.valid.sum(axis=-1)
        shape, n = self.s.shape, self.s.shape[-1]
        order = np.argsort(self.s, axis=-1)  # ties are averaged: any order will do
        # flat indices: numpy's take and fancy assignment are several times faster than *_along_axis
        rows = np.arange(self.s.size // max(n, 1)).reshape(shape[:-1] + (1,)) * n
        self._rows = rows[..., 0]
        flat = (order + rows).reshape(-1)
        srt = self.s.reshape(-1).take(flat).reshape(shape)
        pos = np.broadcast_to(np.arange(n), shape)
        tied = srt[..., 1:] == srt[..., :-1]
        if tied.any():
            starts = np.ones(shape, dtype=bool)
            starts[..., 1:] = ~tied
            ends = np.ones(shape, dtype=bool)
            ends[..., :-1] = ~tied
            self.first = np.maximum.accumulate(np.where(starts, pos, 0), axis=-1)
            self.last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, pos, n - 1), axis=-1), axis=-1),
                                axis=-1)
        else:
            self.first = self.last = pos
        offset = (n - self.n_valid)[..., None] - 1.0  # the lowest valid entry gets rank 1
        self.position = np.empty(shape, dtype=np.int64)  # each entry's place in sorted order
        self.position.reshape(-1)[flat] = pos.reshape(-1)
        self.ranks = np.empty(shape)
        self.ranks.reshape(-1)[flat] = ((self.first + self.last) / 2.0 - offset).reshape(-1)
        self._centred: tuple[np.ndarray, np.ndarray] | None = None

    def _at(self, a: np.ndarray, p: np.ndarray) -> np.ndarray:
        return a.reshape(-1).take(self._rows + p)

    def hits_at(self, truth: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The expected number of ``truth`` entries among the top k valid entries per row, the
        entries tied at the k-th score sharing the remaining places equally (NaN where k is not in
        1..the valid count)."""
        n = self.s.shape[-1]
        t = np.broadcast_to(np.asarray(truth, dtype=bool), self.s.shape) & self.valid
        k = np.broadcast_to(np.asarray(k), self.n_valid.shape)
        ok = (k >= 1) & (k <= self.n_valid)
        p = np.clip(n - np.where(ok, k, 1), 0, n - 1)  # sorted position of the k-th largest
        f, last = self._at(self.first, p), self._at(self.last, p)
        above = (t & (self.position > last[..., None])).sum(axis=-1)
        group = (t & (self.position >= f[..., None]) & (self.position <= last[..., None])).sum(axis=-1)
        free = k - (n - 1 - last)  # places left for the tie group at the k-th score
        return np.where(ok, above + free / (last - f + 1) * group, np.nan)

    def auc(self, truth: np.ndarray) -> np.ndarray:
        """Mann-Whitney AUC of the ``truth`` entries vs the other valid entries, ties 1/2."""
        t = np.broadcast_to(np.asarray(truth, dtype=bool), self.s.shape) & self.valid
        n1 = t.sum(axis=-1)
        n0 = self.n_valid - n1
        rank_sum = np.where(t, self.ranks, 0.0).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n1 > 0) & (n0 > 0), (rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * n0), np.nan)

    def centred(self) -> tuple[np.ndarray, np.ndarray]:
        """Ranks minus their mean (n + 1) / 2 over the valid entries (0 elsewhere), and their norm."""
        if self._centred is None:
            c = np.where(self.valid, self.ranks - (self.n_valid[..., None] + 1) / 2.0, 0.0)
            self._centred = c, np.sqrt((c * c).sum(axis=-1))
        return self._centred

    def spearman(self, other: Ranking) -> np.ndarray:
        """Spearman correlation with another ranking of the same valid entries (NaN if constant)."""
        (cx, nx), (cy, ny) = self.centred(), other.centred()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((nx > 0) & (ny > 0), (cx * cy).sum(axis=-1) / (nx * ny), np.nan)


def precision_at_k(scores: np.ndarray, truth: np.ndarray, valid: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row: the expected share of ``truth`` among the top k valid entries by ``scores``."""
    k = np.asarray(k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return Ranking(scores, valid).hits_at(truth, k) / np.where(k > 0, k, np.nan)


def recall_at_k(scores: np.ndarray, truth: np.ndarray, valid: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row: the expected share of the ``truth`` entries found among the top k valid entries."""
    n = (np.asarray(truth, dtype=bool) & np.asarray(valid, dtype=bool)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return Ranking(scores, valid).hits_at(truth, np.asarray(k)) / np.where(n > 0, n, np.nan)


def rank_auc(scores: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row: Mann-Whitney AUC of the truth vs the other valid entries, ties 1/2."""
    return Ranking(scores, valid).auc(truth)


def rank_spearman(scores: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row: Spearman correlation of ``scores`` and ``target`` over the valid entries."""
    return Ranking(scores, valid).spearman(Ranking(target, valid))


def interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Over the last axis (models), ignoring NaN: mean, Student-t interval (low, high) and count."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, v, 0.0).sum(axis=-1) / n
        dev = np.where(ok, v - mean[..., None], 0.0)
        sd = np.sqrt((dev * dev).sum(axis=-1) / (n - 1))
        half = stats.t.ppf((1 + level) / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    mean = np.where(n > 0, mean, np.nan)
    half = np.where(n > 1, half, np.nan)
    return mean, mean - half, mean + half, n


# --- ground truths ------------------------------------------------------------------------------

def attack_truth(final_scores: np.ndarray, membership: np.ndarray, rule: str = "fpr:0.001") -> np.ndarray:
    """``[M, N]``: the members the attack flags on each target at the end, ``s > tau`` with tau of
    the plane's ``rule`` (for ``fpr:alpha`` the (1 - alpha) quantile of every OUT score,
    :func:`~privdyn.analysis.plane.threshold`)."""
    s = np.asarray(final_scores, dtype=np.float64)
    z = np.asarray(membership, dtype=bool)
    return (s > threshold(s, z, rule)) & z


@dataclass(frozen=True)
class MemberView:
    """Each model's members laid out densely: ``index`` ``[M, n]`` (padded with 0 where a model has
    fewer than n members) and ``valid`` ``[M, n]``."""

    index: np.ndarray
    valid: np.ndarray

    @classmethod
    def of(cls, membership: np.ndarray) -> MemberView:
        """The view of a membership ``[M, N]`` (balanced designs need no padding)."""
        z = np.asarray(membership, dtype=bool)
        counts = z.sum(axis=1)
        n = int(counts.max()) if counts.size else 0
        order = np.argsort(~z, axis=1, kind="stable")[:, :n]  # members first, in sample order
        valid = np.arange(n)[None, :] < counts[:, None]
        return cls(np.where(valid, order, 0), valid)

    def take(self, x: np.ndarray) -> np.ndarray:
        """``x`` ``[..., M, N]`` at the members: ``[..., M, n]`` (padding: NaN for floats)."""
        idx = np.broadcast_to(self.index, x.shape[:-1] + self.index.shape[-1:])
        out = np.take_along_axis(x, idx, axis=-1)
        if out.dtype.kind == "f":
            out = np.where(self.valid, out, np.nan)
        elif out.dtype == bool:
            out = out & self.valid
        return out

    def traces(self, tr: Traces) -> Traces:
        """The traces at the members (padding NaN)."""
        def cut(v: np.ndarray | None) -> np.ndarray | None:
            if v is None:
                return None
            v = np.asarray(v)
            return self.take(v if v.dtype.kind == "f" else v.astype(np.float32))  # float32 stays float32

        loss = cut(tr.loss)
        assert loss is not None
        return Traces(tr.epochs, loss, cut(tr.phi), cut(tr.correct), cut(tr.el2n))


# --- the proxy validation -----------------------------------------------------------------------

@dataclass(frozen=True)
class WarningOptions:
    """Options of :func:`validate_proxies`: the proxies (None: every registered one the traces
    support), per-proxy options, the k share, the interval level, whether e_0 (epoch 0, the
    initialisation: no training loss yet) is left out of the traces, and how many proxies are
    validated at once in threads (``workers``; numpy's sorts and reductions release the GIL, and
    the results do not depend on it)."""

    proxies: tuple[str, ...] | None = None
    proxy_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    k_share: float = 0.01
    level: float = 0.95
    skip_init: bool = True
    workers: int = 1


@dataclass(frozen=True)
class CurveSummary:
    """One metric's curve across models: mean, interval and the number of models, each ``[T]``."""

    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_models: np.ndarray


@dataclass(frozen=True)
class ProxyValidation:
    """Every proxy's metrics per validated checkpoint and monitored model.

    ``values[(proxy, truth, metric, k)]`` is ``[T, M]`` (NaN where undefined); ``k_used[(truth,
    k)]`` the k each model used ``[M]``; ``truth_size[truth]`` each model's truth size ``[M]``.
    """

    epochs: np.ndarray
    values: Mapping[Key, np.ndarray]
    k_used: Mapping[tuple[str, str], np.ndarray]
    truth_size: Mapping[str, np.ndarray]
    level: float = 0.95

    @property
    def proxies(self) -> list[str]:
        """The proxies validated, in order."""
        return list(dict.fromkeys(k[0] for k in self.values))

    def summary(self, proxy: str, truth: str, metric: str, k: str) -> CurveSummary:
        """The curve of one metric: :func:`interval` over the models at every checkpoint."""
        return CurveSummary(*interval(self.values[(proxy, truth, metric, k)], self.level))

    def columns(self) -> dict[str, np.ndarray]:
        """Long table columns: proxy, truth, epoch, k, metric, mean, ci_low, ci_high, n_models,
        k_mean (the mean k over the models with a non-empty truth, those the metric is averaged over;
        NaN for whole-ranking metrics)."""
        cols: dict[str, list[Any]] = {c: [] for c in ("proxy", "truth", "epoch", "k", "metric", "mean", "ci_low",
                                                      "ci_high", "n_models", "k_mean")}
        T = len(self.epochs)
        for key in self.values:
            proxy, truth, metric, k = key
            s = self.summary(*key)
            kk = self.k_used.get((truth, k))
            if kk is not None:
                kk = kk[self.truth_size[truth] > 0]
            cols["proxy"] += [proxy] * T
            cols["truth"] += [truth] * T
            cols["epoch"] += list(self.epochs)
            cols["k"] += [k] * T
            cols["metric"] += [metric] * T
            cols["mean"] += list(s.mean)
            cols["ci_low"] += list(s.ci_low)
            cols["ci_high"] += list(s.ci_high)
            cols["n_models"] += list(s.n_models)
            cols["k_mean"] += [float(np.mean(kk)) if kk is not None and kk.size else math.nan] * T
        out = {c: np.asarray(v) for c, v in cols.items()}
        for c in ("mean", "ci_low", "ci_high", "k_mean", "epoch"):
            out[c] = out[c].astype(np.float64)
        out["n_models"] = out["n_models"].astype(np.int64)
        return out

    @staticmethod
    def concat(parts: Sequence[ProxyValidation]) -> ProxyValidation:
        """Join validations of disjoint model blocks (same proxies and checkpoints) along the models."""
        first = parts[0]
        return ProxyValidation(
            first.epochs,
            {k: np.concatenate([p.values[k] for p in parts], axis=1) for k in first.values},
            {k: np.concatenate([p.k_used[k] for p in parts]) for k in first.k_used},
            {k: np.concatenate([p.truth_size[k] for p in parts]) for k in first.truth_size},
            first.level)


def validate_proxies(traces: Traces, membership: np.ndarray, truths: Mapping[str, np.ndarray],
                     final_adv: np.ndarray, options: WarningOptions | None = None) -> ProxyValidation:
    """Validate the proxies on ``traces`` ``[T, M, N]`` (every model's own signals on every sample).

    ``membership`` is ``[M, N]``; ``truths`` maps each ground truth's name to a bool array
    ``[M, N]`` (per model, e.g. :func:`attack_truth`) or ``[N]`` (one set, e.g. V); ``final_adv``
    ``[N]`` is A_i(e_T). Each model ranks only its own members. Models may be given in blocks and
    joined with :meth:`ProxyValidation.concat` (nothing here mixes models). With
    ``options.workers`` > 1 several proxies are computed at once, in threads: a proxy must be a
    pure function of its traces (as every built-in one is).
    """
    opt = options or WarningOptions()
    z = np.asarray(membership, dtype=bool)
    if traces.loss.ndim != 3 or traces.loss.shape[1:] != z.shape:
        raise ValueError(f"traces must be [T, M, N] with [M, N] = membership's {z.shape}, got {traces.loss.shape}")
    tr = traces
    if opt.skip_init and (tr.epochs > 0).any():
        tr = tr.since(float(tr.epochs[tr.epochs > 0][0]))
    view = MemberView.of(z)
    mt = view.traces(tr)
    names = list(opt.proxies) if opt.proxies is not None else available_proxies(tr)
    truth_m = {name: view.take(np.broadcast_to(np.asarray(t, dtype=bool), z.shape)) for name, t in truths.items()}
    n_members = view.valid.sum(axis=1)
    k_top = np.where(n_members > 0, np.ceil(opt.k_share * n_members - 1e-9).astype(np.int64), 0)
    k_top = np.maximum(k_top, (n_members > 0).astype(np.int64))
    sizes = {name: t.sum(axis=1) for name, t in truth_m.items()}
    k_used: dict[tuple[str, str], np.ndarray] = {}
    for name in truth_m:
        k_used[(name, "1%")] = k_top
        k_used[(name, "truth")] = sizes[name]
    adv_rank = Ranking(view.take(np.broadcast_to(np.asarray(final_adv, dtype=np.float64), z.shape)), view.valid)
    unknown = [p for p in names if p not in PROXIES]  # also loads the registry before any thread reads it
    if unknown:
        raise ValueError(f"unknown proxies {unknown}; registered: {', '.join(PROXIES.names())}")

    def validate(proxy: str) -> dict[Key, np.ndarray]:
        curve = proxy_curve(proxy, mt, **dict(opt.proxy_options.get(proxy, {})))  # [T, M, n]
        rows: dict[Key, list[np.ndarray]] = {}
        for t in range(tr.n_epochs):
            r = Ranking(curve[t], view.valid)
            for name, truth in truth_m.items():
                size = np.where(sizes[name] > 0, sizes[name], np.nan)  # an empty truth: nothing to find
                with np.errstate(invalid="ignore", divide="ignore"):
                    hits_top = r.hits_at(truth, k_top)
                    got = {("precision", "1%"): np.where(sizes[name] > 0, hits_top, np.nan) / np.where(
                               k_top > 0, k_top, np.nan),
                           ("precision", "truth"): r.hits_at(truth, sizes[name]) / size,
                           ("recall", "1%"): hits_top / size,
                           ("auc", "all"): r.auc(truth)}
                for (metric, k), v in got.items():
                    rows.setdefault((proxy, name, metric, k), []).append(v)
            rows.setdefault((proxy, SPEARMAN_TARGET, "spearman", "all"), []).append(r.spearman(adv_rank))
        return {key: np.stack(v) for key, v in rows.items()}

    workers = max(1, min(opt.workers, len(names)))
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="privdyn-proxy") as pool:
            per_proxy = list(pool.map(validate, names))  # in the proxies' order, whichever finishes first
    else:
        per_proxy = [validate(proxy) for proxy in names]
    values = {key: v for part in per_proxy for key, v in part.items()}
    return ProxyValidation(tr.epochs.copy(), values, k_used, sizes, opt.level)


# --- model level: the loss-tail estimate (Dodd et al. 2025) -------------------------------------

def _row_quantile(x: np.ndarray, mask: np.ndarray, q: float) -> np.ndarray:
    """Numpy's linear q-quantile of each row of ``x`` over the entries where ``mask`` (one sort
    along the rows, NaN last, as :func:`~privdyn.analysis.proxies.nan_quantile`)."""
    s = np.sort(np.where(mask, x, np.nan), axis=-1)
    return sorted_quantile(s, np.isfinite(s).sum(axis=-1), q, axis=-1)


def tail_tpr_estimate(loss: np.ndarray, membership: np.ndarray, alpha: float) -> np.ndarray:
    """The Tail-Tells-All estimate of each model's TPR at FPR ``alpha`` ``[M]`` from its own losses
    ``[M, N]`` alone: the TNR of the LOSS attack at FNR ``alpha``.

    The LOSS attack calls a sample a non-member when its loss is high. Its threshold at FNR alpha
    is the (1 - alpha) quantile of the members' losses (alpha of the members lie above it: the
    high-loss tail the training set keeps); the estimate is the share of non-members above it.
    Dodd et al. observe that the samples at risk are the ones training moves out of that tail, so
    a tail that the non-members fill and the members have left means a vulnerable model. No
    reference model and no fitted calibration is used: the raw TNR is the estimate.
    """
    z = np.asarray(membership, dtype=bool)
    x = np.asarray(loss, dtype=np.float64)
    tau = _row_quantile(x, z, 1.0 - alpha)
    n_out = (~z).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((x > tau[:, None]) & ~z).sum(axis=1) / n_out


def per_model_tpr(scores: np.ndarray, membership: np.ndarray, alpha: float) -> np.ndarray:
    """The attack's measured TPR on each target at FPR ``alpha`` ``[M]``: members above the
    (1 - alpha) quantile of that target's own OUT scores."""
    z = np.asarray(membership, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    tau = _row_quantile(s, ~z, 1.0 - alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((s > tau[:, None]) & z).sum(axis=1) / z.sum(axis=1)


@dataclass(frozen=True)
class TailValidation:
    """The loss-tail estimate against the measured TPR: ``estimate`` and ``measured``
    ``[T, A, M]`` (per checkpoint, alpha and model; measured NaN where no scores were given)."""

    epochs: np.ndarray
    alphas: tuple[float, ...]
    estimate: np.ndarray
    measured: np.ndarray
    level: float = 0.95

    def columns(self) -> dict[str, np.ndarray]:
        """Long table columns: epoch, alpha, quantity (estimate | measured | abs_error), mean,
        ci_low, ci_high, n_models; abs_error is the per-model |estimate - measured|."""
        T, A, _ = self.estimate.shape
        parts = {"estimate": self.estimate, "measured": self.measured,
                 "abs_error": np.abs(self.estimate - self.measured)}
        cols: dict[str, list[Any]] = {c: [] for c in ("epoch", "alpha", "quantity", "mean", "ci_low", "ci_high",
                                                      "n_models")}
        for name, v in parts.items():
            for a in range(A):
                mean, lo, hi, n = interval(v[:, a, :], self.level)
                cols["epoch"] += list(self.epochs)
                cols["alpha"] += [self.alphas[a]] * T
                cols["quantity"] += [name] * T
                cols["mean"] += list(mean)
                cols["ci_low"] += list(lo)
                cols["ci_high"] += list(hi)
                cols["n_models"] += list(n)
        out = {c: np.asarray(v) for c, v in cols.items()}
        for c in ("epoch", "alpha", "mean", "ci_low", "ci_high"):
            out[c] = out[c].astype(np.float64)
        out["n_models"] = out["n_models"].astype(np.int64)
        return out


def tail_validation(loss: Checkpoints, membership: np.ndarray, scores: Checkpoints | None,
                    epochs: np.ndarray, alphas: Sequence[float] = (0.001, 0.01),
                    level: float = 0.95) -> TailValidation:
    """:func:`tail_tpr_estimate` and (with ``scores`` ``[T, M, N]``) :func:`per_model_tpr` at every
    checkpoint of ``loss`` ``[T, M, N]``, one checkpoint read at a time."""
    z = np.asarray(membership, dtype=bool)
    T, M = loss.shape[0], z.shape[0]
    est = np.full((T, len(alphas), M), np.nan)
    meas = np.full((T, len(alphas), M), np.nan)
    for t in range(T):
        x = np.asarray(loss[t], dtype=np.float64)
        s = None if scores is None else np.asarray(scores[t], dtype=np.float64)
        for a, alpha in enumerate(alphas):
            est[t, a] = tail_tpr_estimate(x, z, alpha)
            if s is not None:
                meas[t, a] = per_model_tpr(s, z, alpha)
    return TailValidation(np.asarray(epochs, dtype=np.float64), tuple(float(a) for a in alphas), est, meas, level)


def proxy_options_for(epochs: np.ndarray, el2n_index: int) -> dict[str, dict[str, Any]]:
    """The options the validation passes: early EL2N read at the run's early checkpoint."""
    return {"early_el2n": {"epoch": float(np.asarray(epochs)[el2n_index])}}

