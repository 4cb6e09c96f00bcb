"""Empirical differential-privacy audits from the runs privdyn already trains (DESIGN.md, "DP auditing").

Three lower bounds on the epsilon of (epsilon, delta)-DP, each at confidence 1 - beta and at every
checkpoint, from one attack's scores ``[T, M, N]`` (higher = more likely IN) and the membership
``Z [M, N]``:

- **one-run** (Steinke, Nasr and Jagielski 2023, "Privacy Auditing with One (1) Training Run"):
  every model is one run whose N canaries are the pool. Guess IN for the k highest scores of the
  model, OUT for the k lowest, abstain on the rest; v correct out of r = 2k guesses rejects
  "(epsilon, delta)-DP" when the paper's p-value (:func:`one_run_p_value`) is below the level.
  The best over a pre-declared grid of k (Bonferroni), then the median over the models.
- **Gaussian DP** (f-DP, Dong, Roth and Su 2022; as audited by Nasr et al. 2023): a lower
  confidence bound on mu of mu-GDP from the attack's trade-off curve at declared operating points,
  converted to epsilon at delta with the exact GDP curve (:func:`gdp_epsilon`).
- **multi-run Clopper-Pearson** (Jagielski et al. 2020, Nasr et al. 2021): the classic audit,
  ``log((TPR_lo - delta) / FPR_hi)`` and ``log((1 - FPR_hi - delta) / (1 - TPR_lo))`` from the
  global TPR/FPR over all (model, sample) pairs at the same operating points.

Counting streams over checkpoints (:func:`audit_counts` reads ``scores[t]`` once); the bounds are
functions of the counts alone (vectorised over checkpoints, models and grid points), so one pass
over the scores serves any confidence.

What each bound assumes, in short (read before quoting a number):

- Every bound is about add/remove adjacency (one sample in or out: Opacus's accounting) and holds
  for the *training procedure*, randomised over its seeds, not for one trained model.
- The attack's guess for model m may use anything independent of that model's membership row:
  the default ``references: pair`` excludes the target and its complementary partner (whose row
  is the complement of the target's), so every attack privdyn ships qualifies. Leave-one-out
  references (``references: one``) include the partner: the scores then carry the target's row
  and no bound here is valid.
- Epsilon is never negative (no evidence gives 0). NaN only where a bound is undefined: the
  Gaussian-DP and Clopper-Pearson bounds of a checkpoint without any IN or any OUT pair.
- With delta = 0 the Gaussian-DP epsilon is infinite wherever mu's bound is positive (a Gaussian
  trade-off curve is not pure DP for any finite epsilon).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import special, stats

from privdyn.analysis.checkpoints import Checkpoints
from privdyn.analysis.plane import check_finite
from privdyn.errors import DataError

#: The estimators, in the order every table lists them.
ESTIMATORS = ("one_run", "gdp", "clopper_pearson")
#: The attack name of the rows that combine every attack (the strongest bound per epoch).
STRONGEST = "*"

#: The one-run search: epsilon in [0, ONE_RUN_MAX] (guesses that are all right at epsilon 40
#: would need about e^40 of them), a coarse scan then bisection inside the first cell not rejected.
ONE_RUN_MAX = 40.0
_SCAN = 81
_BISECT = 32
_GDP_BISECT = 64


@dataclass(frozen=True)
class AuditOptions:
    """What the audit is asked: confidence 1 - beta, the delta of (epsilon, delta), the one-run
    grid of guesses per side ``k`` (k+ = k- = k; capped at N/2, duplicates dropped), the operating
    points ``fprs`` of the Gaussian-DP and Clopper-Pearson bounds (each the OUT-score quantile of
    that FPR, as the plane's ``fpr:alpha`` rule), and the design of the membership rows
    (``auto``: ``fixed_weight`` when every row has exactly N/2 IN, else ``independent``).

    ``k`` and ``fprs`` must be declared before the scores are seen: the multiple-testing
    correction is for these grids, not for one picked after looking.
    """

    confidence: float = 0.95
    delta: float = 0.0
    k: tuple[int, ...] = (10, 30, 100, 300, 1000, 3000)
    fprs: tuple[float, ...] = (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999)
    design: Literal["auto", "fixed_weight", "independent"] = "auto"

    def __post_init__(self) -> None:
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if not 0 <= self.delta < 1:
            raise ValueError(f"delta must be in [0, 1), got {self.delta}")
        if not self.k or any(int(k) < 1 for k in self.k):
            raise ValueError(f"k needs at least one entry, each >= 1, got {self.k}")
        if not self.fprs or any(not 0 < f < 1 for f in self.fprs):
            raise ValueError(f"fprs needs at least one entry, each in (0, 1), got {self.fprs}")
        if self.design not in ("auto", "fixed_weight", "independent"):
            raise ValueError(f"design must be auto, fixed_weight or independent, got {self.design!r}")

    @property
    def beta(self) -> float:
        """The error probability 1 - confidence."""
        return 1.0 - self.confidence


# ----- counts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OneRunCounts:
    """Per checkpoint, model and grid entry, the correct guesses ``correct [T, M, K]`` of the
    one-run game with ``k [K]`` guesses per side (``guesses = 2 k``) among ``n_canaries`` = N;
    ``fixed_weight`` says whether every membership row has exactly N/2 IN."""

    k: np.ndarray
    correct: np.ndarray
    n_canaries: int
    fixed_weight: bool

    @property
    def guesses(self) -> np.ndarray:
        """The guesses r = k+ + k- per grid entry ``[K]``."""
        return 2 * self.k


@dataclass(frozen=True)
class OperatingCounts:
    """Per checkpoint and operating point: the threshold ``tau [T, P]`` (the OUT-score quantile of
    FPR ``fprs[p]``), the IN pairs ``tp`` and OUT pairs ``fp`` above it (``s > tau``), out of
    ``n_in`` and ``n_out`` (model, sample) pairs."""

    fprs: np.ndarray
    tau: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_in: int
    n_out: int

    @property
    def tpr(self) -> np.ndarray:
        """Empirical TPR ``[T, P]`` (NaN without IN pairs)."""
        return self.tp / self.n_in if self.n_in else np.full(self.tp.shape, np.nan)

    @property
    def fpr(self) -> np.ndarray:
        """Empirical FPR ``[T, P]`` (NaN without OUT pairs)."""
        return self.fp / self.n_out if self.n_out else np.full(self.fp.shape, np.nan)


@dataclass(frozen=True)
class AuditCounts:
    """Everything the bounds read, from one pass over the scores."""

    one_run: OneRunCounts
    operating: OperatingCounts


def one_run_grid(k: Sequence[int], n_canaries: int) -> np.ndarray:
    """The effective grid: each k capped at N/2 (k+ + k- <= N), duplicates dropped, sorted."""
    if n_canaries < 2:
        raise DataError(f"the one-run audit needs at least 2 pool samples, got {n_canaries}")
    return np.unique(np.minimum(np.asarray(k, dtype=np.int64), n_canaries // 2))


def fixed_weight_rows(membership: np.ndarray) -> bool:
    """True when every model trains on exactly half of an even pool (privdyn's balanced design)."""
    N = membership.shape[1]
    return N % 2 == 0 and bool((membership.sum(axis=1) == N // 2).all())


def audit_counts(scores: Checkpoints, membership: np.ndarray, options: AuditOptions) -> AuditCounts:
    """Count the one-run guesses and the operating points' pairs, one checkpoint read at a time.

    One-run guesses of model m: IN for its k highest scores, OUT for its k lowest. Ties are broken
    by sample index (a fixed order, independent of the membership draw, so the guess remains a
    function of the scores and of nothing that depends on the row).
    """
    z = np.asarray(membership, dtype=bool)
    if z.ndim != 2:
        raise DataError(f"membership must be [M, N], got shape {z.shape}")
    T, M, N = scores.shape
    if z.shape != (M, N):
        raise DataError(f"scores are [T, M, N] = {scores.shape} but the membership is {z.shape}")
    k = one_run_grid(options.k, N)
    fprs = np.asarray(options.fprs, dtype=np.float64)
    n_in_row = z.sum(axis=1)[:, None]
    n_in, n_out = int(z.sum()), int((~z).sum())
    correct = np.empty((T, M, len(k)), dtype=np.int64)
    tau = np.full((T, len(fprs)), np.nan)
    tp = np.zeros((T, len(fprs)), dtype=np.int64)
    fp = np.zeros((T, len(fprs)), dtype=np.int64)
    for t in range(T):
        s = np.asarray(scores[t], dtype=np.float64)
        check_finite(s, f"checkpoint {t}")
        order = np.argsort(-s, axis=1, kind="stable")  # descending, ties by index
        in_rank = np.cumsum(np.take_along_axis(z, order, axis=1), axis=1)  # IN among the top j+1
        top_in = in_rank[:, k - 1]
        bottom_in = n_in_row - in_rank[:, N - k - 1]  # IN among the k lowest
        correct[t] = top_in + (k - bottom_in)
        if n_out:
            tau[t] = np.quantile(s[~z], 1.0 - fprs)  # numpy's linear quantile, as fpr_threshold
            fp[t] = n_out - np.searchsorted(np.sort(s[~z]), tau[t], side="right")
            if n_in:
                tp[t] = n_in - np.searchsorted(np.sort(s[z]), tau[t], side="right")
    fixed = {"auto": fixed_weight_rows(z), "fixed_weight": True, "independent": False}[options.design]
    return AuditCounts(OneRunCounts(k, correct, N, fixed),
                       OperatingCounts(fprs, tau, tp, fp, n_in, n_out))


# ----- one-run --------------------------------------------------------------------------------------
def _window_max(v: np.ndarray, r: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The maximum over 1 <= i <= v of P[v - i <= X <= v - 1] / i, X ~ Binomial(r, q); 0 where v = 0.

    The mean of the binomial pmf over a window growing down from v - 1 is unimodal in the window
    length (the pmf is log-concave), so the maximum is at the first i where the next pmf value
    falls to the running mean or below: a binary search, not a loop over i.
    """
    out = np.zeros(v.shape)
    act = v >= 1
    if not act.any():
        return out
    v, r, q = v[act], r[act], q[act]
    top = v - 1
    cdf_top, sf_top = stats.binom.cdf(top, r, q), stats.binom.sf(top, r, q)
    upper = cdf_top > 0.5  # subtract upper tails there: both small, no cancellation

    def mass(i: np.ndarray) -> np.ndarray:
        low = top - i  # P[low < X <= top]
        m = np.where(upper, stats.binom.sf(low, r, q) - sf_top, cdf_top - stats.binom.cdf(low, r, q))
        return np.maximum(m, 0.0)

    lo, hi = np.ones_like(v), v.copy()
    for _ in range(int(np.ceil(np.log2(v.max() + 1))) + 1):
        mid = (lo + hi) // 2
        stop = mid * stats.binom.pmf(top - mid, r, q) <= mass(mid)
        busy = lo < hi
        hi = np.where(busy & stop, mid, hi)
        lo = np.where(busy & ~stop, mid + 1, lo)
    best = mass(lo) / lo
    for step in (-1, 1):  # the neighbours, against rounding at a flat maximum
        j = np.clip(lo + step, 1, v)
        best = np.maximum(best, mass(j) / j)
    out[act] = best
    return out


def one_run_p_value(correct: np.ndarray, guesses: np.ndarray, n_canaries: int, epsilon: np.ndarray,
                    delta: float) -> np.ndarray:
    """The one-run p-value of at least ``correct`` right out of ``guesses`` under (epsilon, delta)-DP.

    Steinke, Nasr and Jagielski (2023), the theorem for (epsilon, delta)-DP: with m canaries each
    included independently with probability 1/2 and r guesses from the output,
    P[W >= v] <= f(v) + 2 m delta max_{1<=i<=v} (f(v - i) - f(v)) / i, where
    f(v) = P[Binomial(r, e^eps / (1 + e^eps)) >= v]. Broadcasts over its array arguments.
    """
    v, r, eps = np.broadcast_arrays(np.asarray(correct, dtype=np.int64), np.asarray(guesses, dtype=np.int64),
                                    np.asarray(epsilon, dtype=np.float64))
    if (v < 0).any() or (v > r).any():
        raise DataError("correct guesses must lie in 0..guesses")
    q = special.expit(eps)
    tail = stats.binom.sf(v - 1, r, q)
    alpha = _window_max(v.ravel(), r.ravel(), q.ravel()).reshape(v.shape) if delta > 0 else 0.0
    return np.minimum(tail + 2.0 * n_canaries * delta * alpha, 1.0)


def one_run_epsilon(correct: np.ndarray, guesses: np.ndarray, n_canaries: int, delta: float,
                    level: float | np.ndarray) -> np.ndarray:
    """The one-run lower bound: the smallest epsilon that :func:`one_run_p_value` does not reject
    at ``level`` (the per-test level, after any correction); 0 where even epsilon = 0 stands.

    Computed once per distinct (correct, guesses, level): a scan of [0, ONE_RUN_MAX] for the first
    epsilon not rejected, then bisection inside that cell (the bound is the cell's lower end,
    within 1e-8 below the exact root: the safe side).
    """
    v, r, lv = np.broadcast_arrays(np.asarray(correct, dtype=np.int64), np.asarray(guesses, dtype=np.int64),
                                   np.asarray(level, dtype=np.float64))
    keys = np.column_stack([v.ravel(), r.ravel(), lv.ravel()])
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    uv, ur, ul = uniq[:, 0].astype(np.int64), uniq[:, 1].astype(np.int64), uniq[:, 2]
    out = np.zeros(len(uniq))

    def rejected(idx: np.ndarray, eps: np.ndarray) -> np.ndarray:
        return one_run_p_value(uv[idx], ur[idx], n_canaries, eps, delta) <= ul[idx]

    act = np.flatnonzero(rejected(np.arange(len(uniq)), np.zeros(len(uniq))))
    grid = np.linspace(0.0, ONE_RUN_MAX, _SCAN)
    lo = np.zeros(len(act))
    hi = np.full(len(act), ONE_RUN_MAX)
    open_ = np.ones(len(act), dtype=bool)  # still rejected at every grid point so far
    for g in grid[1:]:
        if not open_.any():
            break
        idx = np.flatnonzero(open_)
        rej = rejected(act[idx], np.full(len(idx), g))
        lo[idx[rej]] = g
        hi[idx[~rej]] = g
        open_[idx[~rej]] = False
    for _ in range(_BISECT):
        mid = (lo + hi) / 2
        rej = rejected(act, mid)
        lo, hi = np.where(rej, mid, lo), np.where(rej, hi, mid)
    out[act] = lo
    return out[inverse.ravel()].reshape(v.shape)


def balanced_design_factor(n_canaries: int) -> float:
    """P[|S| = N/2] for S uniform on {0,1}^N: the price of fixed-weight rows (see :func:`one_run_audit`)."""
    return float(stats.binom.pmf(n_canaries // 2, n_canaries, 0.5))


@dataclass(frozen=True)
class OneRunAudit:
    """The one-run bounds per checkpoint: ``epsilon [T]``, the median over the models of each
    model's best bound over k, with the model, k, correct and guesses that give it, and
    ``per_model [T, M]`` every model's best over k. Each (model, k) test runs at ``level``."""

    epsilon: np.ndarray
    model: np.ndarray
    k: np.ndarray
    correct: np.ndarray
    guesses: np.ndarray
    per_model: np.ndarray
    level: float
    confidence: float
    delta: float
    fixed_weight: bool


def one_run_audit(counts: OneRunCounts, options: AuditOptions) -> OneRunAudit:
    """One-run epsilon lower bounds at confidence ``options.confidence`` (see the module docstring).

    Every model m is one run with the N pool samples as canaries. Its bound is the best over the
    K grid entries, each tested at level l / K (Bonferroni). The reported bound is the j-th
    largest of the M models' bounds, j = ceil(M/2) (the upper median): it exceeds the true epsilon
    only if at least j models' bounds do, which by Markov's inequality has probability at most
    M l / j whatever the dependence between the models; so l = j beta / M (about beta / 2).

    The theorem needs each canary included independently with probability 1/2. privdyn's rows are
    not that: model 2j trains on a uniformly random half (exactly N/2 samples) and 2j+1 on the
    rest, so the S_i of one row are exchangeable but not independent (given the others, S_i is
    known). The bound still applies, rigorously, after a correction: a uniformly random half is the
    i.i.d. draw conditioned on the event E = {|S| = N/2}, so for any event B, P[B | E] <= P[B] / P[E];
    a test run at level l P[E] (P[E] = C(N, N/2) / 2^N, about sqrt(2 / (pi N)): 0.056 at N = 200,
    0.0036 at N = 50000) keeps its error at most l. The mechanism of the i.i.d. world is the same
    training procedure on {i : S_i = 1} with its DP parameters fixed (Poisson rate B / (N/2), as
    the accountant assumes); on E it is what privdyn ran. With ``design: independent`` (rows drawn
    i.i.d., as a LiRA-layout import's rows are) no correction is applied; applying it to privdyn's
    own rows would make the bound an approximation. The guesses for model m may use the other
    models only when their rows are independent of m's: true of the other complementary pairs,
    false of m's partner, which ``references: pair`` excludes.

    The delta term limits what any one-run audit can show: its p-value is at least about
    2 delta (the window of the theorem's maximum reaches down to i = v), so no epsilon is rejected
    at a per-test level below 2 delta. At privdyn's default delta = 1/N_train = 2/N that needs
    N > 4 K / (l P[E]): a pool of a few hundred thousand samples. Ask for a smaller delta
    (``analysis.dp_audit.delta``) to audit one run.
    """
    T, M, K = counts.correct.shape
    factor = balanced_design_factor(counts.n_canaries) if counts.fixed_weight else 1.0
    j = -(-M // 2)
    level = options.beta * j / (M * K) * factor
    r = np.broadcast_to(counts.guesses, counts.correct.shape)
    eps = one_run_epsilon(counts.correct, r, counts.n_canaries, options.delta, level)  # [T, M, K]
    best_k = np.argmax(eps, axis=2)
    per_model = np.take_along_axis(eps, best_k[..., None], axis=2)[..., 0]  # [T, M]
    order = np.argsort(-per_model, axis=1, kind="stable")
    m = order[:, j - 1]  # the j-th largest
    ts = np.arange(T)
    kk = best_k[ts, m]
    return OneRunAudit(epsilon=per_model[ts, m], model=m, k=counts.k[kk], correct=counts.correct[ts, m, kk],
                       guesses=counts.guesses[kk], per_model=per_model, level=level,
                       confidence=options.confidence, delta=options.delta, fixed_weight=counts.fixed_weight)


# ----- operating points: Clopper-Pearson and Gaussian DP ----------------------------------------------
def clopper_pearson_lower(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bound of a binomial rate: P[p < bound] <= alpha."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, stats.beta.ppf(alpha, np.maximum(x, 1), n - x + 1), 0.0)


def clopper_pearson_upper(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound of a binomial rate: P[p > bound] <= alpha."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x < n, stats.beta.ppf(1 - alpha, x + 1, np.maximum(n - x, 1)), 1.0)


@dataclass(frozen=True)
class RateBounds:
    """Simultaneous bounds ``[T, P]`` at every operating point: TPR from below and FPR from above,
    each one-sided Clopper-Pearson at ``alpha`` = beta / (2 P) (Bonferroni over the 2 P bounds)."""

    tpr_lo: np.ndarray
    fpr_hi: np.ndarray
    alpha: float


def rate_bounds(counts: OperatingCounts, confidence: float) -> RateBounds:
    """The bounds every operating-point estimator reads; NaN where there is no IN or no OUT pair."""
    P = len(counts.fprs)
    alpha = (1.0 - confidence) / (2 * P)
    if not counts.n_in or not counts.n_out:
        nan = np.full(counts.tp.shape, np.nan)
        return RateBounds(nan, nan, alpha)
    return RateBounds(clopper_pearson_lower(counts.tp, counts.n_in, alpha),
                      clopper_pearson_upper(counts.fp, counts.n_out, alpha), alpha)


@dataclass(frozen=True)
class ThresholdAudit:
    """The multi-run Clopper-Pearson bounds per checkpoint: ``epsilon [T]`` with the operating point
    (index into ``fprs``) and the side (0: flagged IN, ``log((TPR_lo - d) / FPR_hi)``; 1: not
    flagged, ``log((1 - FPR_hi - d) / (1 - TPR_lo))``) that give it; the bounds ``tpr_lo``,
    ``fpr_hi [T, P]``."""

    epsilon: np.ndarray
    point: np.ndarray
    side: np.ndarray
    tpr_lo: np.ndarray
    fpr_hi: np.ndarray
    confidence: float
    delta: float


def clopper_pearson_audit(counts: OperatingCounts, options: AuditOptions) -> ThresholdAudit:
    """The classic multi-run audit from the global TPR/FPR over all (model, sample) pairs.

    Any (epsilon, delta)-DP procedure satisfies, for every test, TPR <= e^eps FPR + delta and
    1 - FPR <= e^eps (1 - TPR) + delta, per sample and so for the average over samples at one
    threshold; plugging in simultaneous one-sided Clopper-Pearson bounds (TPR from below, FPR from
    above, Bonferroni over the operating points) gives the bound.

    What is assumed independent: Clopper-Pearson treats the M N / 2 IN pairs as i.i.d.
    Bernoulli(TPR) draws and the M N / 2 OUT pairs as i.i.d. Bernoulli(FPR). They are not: the
    pairs of one model share that model, the pairs of one sample share the sample's difficulty,
    complementary models hold each sample once IN and once OUT, and the threshold is the OUT
    scores' own quantile. The estimand is a valid lower bound (the DP inequalities hold for the
    pooled rates), but the stated confidence is nominal: the effective number of trials is smaller
    than M N / 2, so the interval is too narrow by an unknown factor. Also, an IN and an OUT model
    of sample i differ in the rest of their data too (random halves); with the balanced design an
    OUT model trains on one sample more, so the comparison is strictly one of substitution (not
    add/remove) adjacency: a one-sample difference among N/2 that we treat as negligible.
    """
    b = rate_bounds(counts, options.confidence)
    d = options.delta
    with np.errstate(divide="ignore", invalid="ignore"):
        sides = np.stack([np.log(np.maximum(b.tpr_lo - d, 0.0) / b.fpr_hi),
                          np.log(np.maximum(1.0 - b.fpr_hi - d, 0.0) / (1.0 - b.tpr_lo))], axis=-1)
    T, P = counts.tp.shape
    flat = np.where(np.isnan(sides), -np.inf, sides).reshape(T, 2 * P)
    j = np.argmax(flat, axis=1)
    eps = np.maximum(flat[np.arange(T), j], 0.0)
    undefined = np.isnan(b.tpr_lo).all(axis=1)
    eps = np.where(undefined, np.nan, eps)
    return ThresholdAudit(epsilon=eps, point=j // 2, side=j % 2, tpr_lo=b.tpr_lo, fpr_hi=b.fpr_hi,
                          confidence=options.confidence, delta=d)


def gdp_delta(epsilon: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """delta(eps) of mu-GDP: Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (Dong, Roth and Su,
    Corollary 2.13), from log-CDFs so that large epsilon does not overflow; 0 where mu = 0."""
    eps, mu = np.broadcast_arrays(np.asarray(epsilon, dtype=np.float64), np.asarray(mu, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(mu > 0, mu, 1.0)
        a = special.log_ndtr(-eps / m + m / 2)
        b = eps + special.log_ndtr(-eps / m - m / 2)
        d = np.exp(a) - np.exp(b)
    return np.where(mu > 0, np.maximum(d, 0.0), 0.0)


def gdp_epsilon(mu: np.ndarray, delta: float) -> np.ndarray:
    """The smallest epsilon with mu-GDP => (epsilon, delta)-DP, solving :func:`gdp_delta` = delta
    by bisection (vectorised over ``mu``; delta(eps) decreases in eps). 0 where mu = 0; infinite
    where mu > 0 and delta = 0; NaN where mu is NaN."""
    mu = np.asarray(mu, dtype=np.float64)
    out = np.zeros(mu.shape)
    nan = np.isnan(mu)
    pos = ~nan & (mu > 0)
    if delta <= 0:
        out[pos] = np.inf
        out[nan] = np.nan
        return out
    act = pos & (gdp_delta(np.zeros(mu.shape), mu) > delta)  # else epsilon = 0 already suffices
    m = mu[act]
    lo = np.zeros(m.shape)
    # the privacy loss of mu-GDP is N(mu^2/2, mu^2): delta(eps) <= P[loss > eps], so this eps suffices
    hi = m * m / 2 + m * special.ndtri(1.0 - delta)
    for _ in range(_GDP_BISECT):
        mid = (lo + hi) / 2
        above = gdp_delta(mid, m) > delta
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    out[act] = hi  # the smallest eps on the grid whose delta is at most the target
    out[nan] = np.nan
    return out


@dataclass(frozen=True)
class GDPAudit:
    """The Gaussian-DP bounds per checkpoint: ``mu [T]`` (a lower confidence bound on mu), the
    operating point (index into ``fprs``) that gives it, and ``epsilon [T]`` = :func:`gdp_epsilon`
    of it at delta."""

    mu: np.ndarray
    point: np.ndarray
    epsilon: np.ndarray
    confidence: float
    delta: float


def gdp_audit(counts: OperatingCounts, options: AuditOptions) -> GDPAudit:
    """mu_lb = max over the operating points of Phi^-1(TPR_lo) - Phi^-1(FPR_hi), then epsilon.

    Under mu-GDP every test has TPR <= Phi(Phi^-1(FPR) + mu), so mu >= Phi^-1(TPR) - Phi^-1(FPR)
    at every point (the complementary test gives the same expression); the simultaneous bounds of
    :func:`rate_bounds` make the maximum a lower bound at the stated confidence, with the same
    independence caveat as :func:`clopper_pearson_audit`.

    mu_lb is a lower bound on the GDP parameter of a procedure that is mu-GDP. Its epsilon is a
    lower bound on the procedure's (epsilon, delta) only if its trade-off curve is Gaussian (as
    DP-SGD's is approximately, by the central limit theorem of Dong et al., for many steps):
    (epsilon, delta)-DP alone does not imply any GDP. For another curve, e.g. randomized
    response, the number is an estimate of a Gaussian fit, not a bound.
    """
    b = rate_bounds(counts, options.confidence)
    with np.errstate(invalid="ignore"):
        gap = special.ndtri(b.tpr_lo) - special.ndtri(b.fpr_hi)
    T = len(gap)
    flat = np.where(np.isnan(gap), -np.inf, gap)
    j = np.argmax(flat, axis=1)  # the point of the largest raw bound, also where it is clipped to 0
    mu = np.maximum(flat[np.arange(T), j], 0.0)
    mu = np.where(np.isnan(b.tpr_lo).all(axis=1), np.nan, mu)
    return GDPAudit(mu=mu, point=j, epsilon=gdp_epsilon(mu, options.delta), confidence=options.confidence,
                    delta=options.delta)


# ----- all three ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DPAudit:
    """The three audits of one attack at one confidence and delta."""

    one_run: OneRunAudit
    gdp: GDPAudit
    clopper_pearson: ThresholdAudit

    def epsilon(self, estimator: str) -> np.ndarray:
        """The ``[T]`` epsilon lower bounds of one estimator (a name in :data:`ESTIMATORS`)."""
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
        result: OneRunAudit | GDPAudit | ThresholdAudit = getattr(self, estimator)
        return result.epsilon

    def best(self) -> tuple[np.ndarray, list[str]]:
        """Per checkpoint, the largest bound over the estimators (NaN ones skipped) and its
        estimator. Each bound holds at the audit's confidence; their maximum only at
        1 - 3 beta (union bound): audit at 1 - beta / 3 for a maximum at 1 - beta."""
        stack = np.stack([self.epsilon(e) for e in ESTIMATORS])
        j = np.argmax(np.where(np.isnan(stack), -np.inf, stack), axis=0)
        return stack[j, np.arange(stack.shape[1])], [ESTIMATORS[i] for i in j]


def audit(counts: AuditCounts, options: AuditOptions) -> DPAudit:
    """The three bounds of :func:`audit_counts`' counts at ``options``' confidence and delta."""
    return DPAudit(one_run_audit(counts.one_run, options), gdp_audit(counts.operating, options),
                   clopper_pearson_audit(counts.operating, options))


def audit_scores(scores: Checkpoints, membership: np.ndarray, options: AuditOptions) -> DPAudit:
    """Count and bound in one call (:func:`audit_counts` then :func:`audit`)."""
    return audit(audit_counts(scores, membership, options), options)


def with_confidence(options: AuditOptions, confidence: float) -> AuditOptions:
    """The same options at another confidence (e.g. corrected for a maximum over several audits)."""
    return replace(options, confidence=confidence)
