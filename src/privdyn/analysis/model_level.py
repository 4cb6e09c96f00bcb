"""Model-level metrics per checkpoint: accuracies, global ROC AUC, TPR at fixed FPR.

Also the one implementation of each ROC quantity that the plane shares: the OUT-quantile
threshold (:func:`fpr_threshold`, numpy's quantile from two order statistics:
:mod:`~privdyn.analysis.quantiles`), TPR at fixed FPR (:func:`tpr_at_fpr`) and the ROC AUC with
ties counted 1/2 as twice the Mann-Whitney U in integers. The U is counted two ways, each the
fastest for its shape (both tested against one pair loop): along axis 0 for the plane's
per-sample AUC over a few models (:func:`rank_counts`, vectorised over samples), and by one
merge of the sorted IN and OUT scores over all pairs of a checkpoint (:func:`global_metrics`).
Both find tie groups with :func:`_tie_starts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from privdyn.analysis.checkpoints import Checkpoints
from privdyn.analysis.quantiles import lerp, linear_quantiles, neighbours


def fpr_threshold(scores: np.ndarray, membership: np.ndarray, alpha: float) -> float:
    """Tau of FPR alpha: numpy's linear (1 - alpha) quantile of the OUT scores in float64 (flag
    ``s > tau``), selected in place (:func:`~privdyn.analysis.quantiles.linear_quantiles`)."""
    return float(linear_quantiles(scores, _levels([alpha]), where=~np.asarray(membership, dtype=bool))[0])


def _levels(alphas: list[float]) -> np.ndarray:
    """The quantile level of each FPR alpha, 1 - alpha in float64."""
    return 1.0 - np.asarray(alphas, dtype=np.float64)


def tpr_at_fpr(scores: np.ndarray, membership: np.ndarray, alpha: float) -> float:
    """Share of IN pairs above :func:`fpr_threshold` (the plane's rule)."""
    return float(tpr_at_fprs(scores, membership, [alpha])[0])


def tpr_at_fprs(scores: np.ndarray, membership: np.ndarray, alphas: list[float]) -> np.ndarray:
    """:func:`tpr_at_fpr` at several alphas, ``[len(alphas)]`` (see :func:`global_metrics`)."""
    return global_metrics(scores, membership, alphas).tpr_at_fpr


class GlobalMetrics(NamedTuple):
    """One checkpoint's global ROC quantities over all (model, sample) pairs."""

    auc: float
    balanced_accuracy: float
    tpr_at_fpr: np.ndarray  # [len(alphas)]


class Pairs(NamedTuple):
    """The (model, sample) pairs of a membership matrix ``[M, N]``, split into IN and OUT once:
    their flat indices into ``[M, N]`` (ascending, the order a boolean mask selects in) and each
    pair's sample, and per sample the number of IN and of OUT models. Membership is fixed for a
    run, so gathering a checkpoint's scores by these indices replaces a boolean mask per
    checkpoint (ten times faster on a random half-and-half mask)."""

    shape: tuple[int, ...]
    in_flat: np.ndarray
    out_flat: np.ndarray
    in_sample: np.ndarray
    out_sample: np.ndarray
    n_in: np.ndarray

    @property
    def n_out(self) -> np.ndarray:
        """Per sample, the number of OUT models (all entries of the sample's line but the IN ones)."""
        return int(np.prod(self.shape[:-1])) - self.n_in

    def split(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The IN and the OUT pairs' scores, as ``scores[membership]`` and ``scores[~membership]``."""
        if scores.shape != self.shape:
            raise ValueError(f"scores {scores.shape} do not match the membership {self.shape}")
        flat = scores.reshape(-1)
        return flat.take(self.in_flat), flat.take(self.out_flat)


def pairs_of(membership: np.ndarray) -> Pairs:
    """:class:`Pairs` of ``membership`` ``[M, N]`` (any shape whose last axis is the sample)."""
    z = np.asarray(membership, dtype=bool)
    n = z.shape[-1] if z.ndim else 1
    in_flat, out_flat = np.flatnonzero(z), np.flatnonzero(~z)
    return Pairs(z.shape, in_flat, out_flat, in_flat % n, out_flat % n, z.reshape(-1, n).sum(axis=0))


def global_metrics(scores: np.ndarray, membership: np.ndarray, alphas: list[float],
                   pairs: Pairs | None = None) -> GlobalMetrics:
    """ROC AUC (ties 1/2), balanced accuracy and TPR at each FPR ``alpha`` of one checkpoint's
    (model, sample) pairs, from one sort of the IN and one of the OUT scores and one merge.

    The merge (a stable sort of the two sorted runs, IN first) places each IN score after
    exactly the OUT scores below it. The AUC is twice the Mann-Whitney U, sum over IN of
    (2 #OUT below + #OUT tied), one rounding; balanced accuracy is the best (TPR + TNR) / 2 over
    global thresholds (flag ``s >= c``, or nothing: 1/2), attained at an IN score (raising the
    threshold to the next IN score drops only OUT pairs); the TPR at FPR alpha is the share of
    IN scores above :func:`fpr_threshold`. Scores must be finite. ``pairs`` is
    :func:`pairs_of` the membership, made here when not given.
    """
    s = np.asarray(scores)
    s = s if s.dtype in (np.float32, np.float64) else s.astype(np.float64)  # float32 sorts as it is
    if s.dtype == np.float64:  # e.g. stored float32 scores read as float64: sort half the bytes
        narrow = s.astype(np.float32)
        s = narrow if np.array_equal(narrow, s) else s  # exact, so the same order and ties
    if not np.isfinite(s).all():
        raise ValueError(f"{int((~np.isfinite(s)).sum())} scores are not finite: ROC quantities need finite scores")
    ins, outs = (np.sort(v) for v in (pairs or pairs_of(membership)).split(s))
    n1, n0 = np.int64(ins.size), np.int64(outs.size)
    merged = np.concatenate([ins, outs])
    order = np.argsort(merged, kind="stable")  # two sorted runs: one linear merge
    is_in = order < n1
    below = np.flatnonzero(is_in) - np.arange(n1)  # #OUT strictly below each IN score
    first = _tie_starts(ins)  # where each IN score's tie group starts in ins
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = float((2 * below.sum() + _tied_pairs(merged[order], is_in)) / (2 * n1 * n0))
        best = (0.5 * (1.0 + (n1 - first) / n1 - (n0 - below) / n0)).max(initial=0.5)
        taus = linear_quantiles(outs, _levels(alphas), presorted=True) if n0 else np.full(len(alphas), np.nan)
        tpr = (n1 - np.searchsorted(ins, taus, "right")) / n1
    return GlobalMetrics(auc, float(best), tpr)


def _tied_pairs(values: np.ndarray, is_in: np.ndarray) -> np.int64:
    """The number of (IN, OUT) pairs with equal scores, from all scores in ascending order:
    sum over tie groups of #IN x #OUT, counted on the entries that have an equal neighbour."""
    same = values[1:] == values[:-1]
    if not same.any():
        return np.int64(0)
    tied = np.flatnonzero(np.concatenate([[False], same]) | np.concatenate([same, [False]]))
    group = np.cumsum(~np.concatenate([[False], same])[tied])  # tie groups of the tied entries
    n_in = np.bincount(group, weights=is_in[tied]).astype(np.int64)
    return np.int64((n_in * (np.bincount(group) - n_in)).sum())


class RankCounts(NamedTuple):
    """Entries along axis 0 in ascending score order (:func:`rank_counts`): their membership and,
    per entry, the IN and the OUT entries strictly below its tie group (equal within a tie group)."""

    member: np.ndarray
    in_below: np.ndarray
    out_below: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        """Mann-Whitney AUC along axis 0, ties 1/2, from exact integers: twice the U statistic is
        sum_IN #OUT below + n1 n0 - sum_OUT #IN below. NaN where there is no IN or no OUT entry."""
        n1 = self.member.sum(axis=0)
        n0 = len(self.member) - n1
        u2 = (np.where(self.member, self.out_below, 0).sum(axis=0, dtype=np.int64) + n1 * n0
              - np.where(self.member, 0, self.in_below).sum(axis=0, dtype=np.int64))
        return u2 / (2 * n1 * n0)


def rank_counts(scores: np.ndarray, membership: np.ndarray) -> RankCounts:
    """:class:`RankCounts` of ``scores`` and ``membership`` (same shape) along axis 0, from one sort."""
    order = np.argsort(scores, axis=0)
    s = np.sort(scores, axis=0)  # the same values as gathering by order, and faster than the gather
    z = np.take_along_axis(membership, order, axis=0)
    index = np.int32 if len(s) < 2**31 else np.int64  # counts along the axis: half the memory traffic
    first = _tie_starts(s, index)
    below = np.cumsum(z, axis=0, dtype=index)
    np.subtract(below, z, out=below)
    in_below = np.take_along_axis(below, first, axis=0)
    return RankCounts(z, in_below, first - in_below)


def _tie_starts(ascending: np.ndarray, index: type[np.signedinteger] = np.int64) -> np.ndarray:
    """Along axis 0 of ascending values, the position where each entry's tie group starts."""
    pos = np.arange(len(ascending), dtype=index).reshape((-1,) + (1,) * (ascending.ndim - 1))
    starts = np.concatenate([np.ones_like(ascending[:1], dtype=bool), ascending[1:] != ascending[:-1]])
    return np.maximum.accumulate(np.where(starts, pos, index(0)), axis=0)


def global_auc(scores: np.ndarray, membership: np.ndarray) -> float:
    """ROC AUC over all (model, sample) pairs of one checkpoint, ties counted 1/2."""
    return global_metrics(scores, membership, []).auc


def per_model_mean(signal: Checkpoints, membership: np.ndarray | None, query: int = 0) -> np.ndarray:
    """Per checkpoint and model, the mean of a signal ``[T, M, N, Q]`` under query ``query``
    (pass the identity query's index: accuracy and loss are those of the plain input).

    With ``membership`` the mean runs over each model's IN samples (train accuracy or loss);
    without it, over all samples (pass the test split's signal). Streams over checkpoints.
    """
    T, M = signal.shape[:2]
    out = np.empty((T, M))
    for t in range(T):
        v = np.asarray(signal[t, ..., query], dtype=np.float64)
        out[t] = v.mean(axis=1) if membership is None else (v * membership).sum(axis=1) / membership.sum(axis=1)
    return out


def roc_auc_and_balanced_accuracy(scores: np.ndarray, membership: np.ndarray) -> tuple[float, float]:
    """Global ROC AUC and balanced accuracy (:func:`global_metrics`), the "accuracy" the LiRA
    code reports."""
    g = global_metrics(scores, membership, [])
    return g.auc, g.balanced_accuracy


def balanced_accuracy(scores: np.ndarray, membership: np.ndarray) -> float:
    """Best (TPR + TNR) / 2 over all global thresholds; see :func:`roc_auc_and_balanced_accuracy`."""
    return roc_auc_and_balanced_accuracy(scores, membership)[1]


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, B]`` int32 multiplicities of a bootstrap over n samples (n draws with replacement per
    replicate); samples are rows so that gathering the weights of many samples is cheap."""
    return np.ascontiguousarray(replicate_counts(n, n_boot, rng).T)


def replicate_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """:func:`bootstrap_weights` in the replicate-major layout ``[B, n]`` (C-contiguous), the
    layout whose products with per-sample counts are fastest.

    Replicate by replicate, one ``bincount`` of its n draws: each count vector stays in cache,
    where one bincount over all B*n draws scatters across the whole table (twice as slow).
    """
    dtype = np.int32 if n * n_boot < 2**31 else np.int64  # the stream of draws depends on the dtype
    draws = rng.integers(0, n, size=(n_boot, n), dtype=dtype)
    rows = np.empty((n_boot, n), dtype=np.int32)
    for b in range(n_boot):  # B bincounts of n, not a loop over samples
        rows[b] = np.bincount(draws[b], minlength=n)
    return rows


#: elements per [rows, B] block of bootstrap weights held at once
_BLOCK = 1 << 22

#: how many standard deviations of a replicate's running weight a scan window first reaches
#: below (and above) its target ranks; the window is verified and widened when that is too few
_WINDOW_SD = 4.0

#: rows per sub-block whose running sums :func:`_block_crossings` forms only where a target crosses
_SUB = 64


def _block_crossings(block: np.ndarray, left: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Per target row ``left[k]`` and column b, the first row d of ``block [W, B]`` whose running
    column sum (rows 0..d) exceeds ``left[k, b]`` (-1 where none does), and the column totals.

    Exact integers in ``dtype``. The column sums of sub-blocks of :data:`_SUB` rows are formed
    first (a vectorised pass) and accumulated; per target, only the one sub-block where each
    column crosses is gathered and summed row by row (a cumulative sum along rows is several
    times slower per element than a plain sum, so it runs on B x _SUB entries, not W x B)."""
    W, n_boot = block.shape
    full = W // _SUB
    sums = np.empty((-(-W // _SUB), n_boot), dtype=dtype)
    sums[:full] = block[:full * _SUB].reshape(full, _SUB, n_boot).sum(axis=1, dtype=dtype)
    if W % _SUB:
        sums[full] = block[full * _SUB:].sum(axis=0, dtype=dtype)
    cum: np.ndarray = np.cumsum(sums, axis=0, dtype=dtype)
    cols = np.arange(n_boot)
    out = np.full(left.shape, -1, dtype=np.int64)
    for k, target in enumerate(left):
        sub = np.count_nonzero(cum <= target, axis=0)  # the sub-block where the running sum exceeds it
        crosses = sub < len(cum)
        if not crosses.any():
            continue
        sub = np.minimum(sub, len(cum) - 1)
        before: np.ndarray = np.where(sub > 0, cum[np.maximum(sub - 1, 0), cols], 0).astype(dtype)
        idx = np.minimum(sub * _SUB + np.arange(_SUB)[:, None], W - 1)  # repeats the last row past W
        run = np.cumsum(block[idx, cols], axis=0, dtype=dtype) + before
        out[k] = np.where(crosses, sub * _SUB + np.count_nonzero(run <= target, axis=0), -1)
    return out, cum[-1]


def _first_exceeding(weights: np.ndarray, rows: np.ndarray, ranks: np.ndarray,
                     limit: int | None = None) -> np.ndarray:
    """For every replicate b and target ``ranks[k, b]``, the first position d along ``rows`` at
    which the running weight S_b(d) = sum_{d' <= d} weights[rows[d'], b] exceeds the target
    (-1 where it never does within ``rows``).

    The running weight before position L is C_b(L) = sum_i c_i(L) weights[i, b], where c_i(L)
    counts sample i among ``rows[:L]``: for one prefix, every replicate's value comes from one
    bincount and one ``[N] @ [N, B]`` product, whatever the number of pairs. Bootstrap weights
    average 1, so C_b(L) is L on average with variance sum_i c_i(L)^2 - L^2 / N (multinomial
    weights), and each target's crossings lie within a few standard deviations of its rank.
    So per target a window start L0 is placed :data:`_WINDOW_SD` standard deviations below the
    lowest replicate's rank and checked with one product (C_b(L0) <= rank for every b; else L0
    moves down, the gap doubling, until it holds, at the latest at L0 = 0). From C_b(L0), exact
    running sums over ``rows[L0:]`` (:func:`_block_crossings`, all replicates at once) find every
    crossing: first up to the estimated end of the window (as far above the highest rank), then
    in doubling blocks until every target is found or ``rows`` ends. Targets whose windows
    overlap (the two ranks of one alpha) share one window. So only a few standard deviations of
    rows are read per target, not the whole top, in exact integers: int32 when no prefix weight
    can reach 2**31 (``limit``, a bound on every replicate's total weight of ``rows``, when
    known; else ``len(rows)`` times the largest weight), else int64. Equal to one running sum
    over all of ``rows``.
    """
    N, n_boot = weights.shape
    n = len(rows)
    found = np.full(ranks.shape, -1, dtype=np.int64)
    if n == 0:
        return found
    if limit is None:  # every prefix weight, and so every running sum, is at most this
        limit = n * int(weights.max(initial=0))
    dtype = np.int64 if limit >= 2**31 else np.int32
    w: np.ndarray = weights.astype(dtype, copy=False)
    r_min, r_max = ranks.min(axis=1), ranks.max(axis=1)
    windows: list[tuple[int, int, int, list[int]]] = []  # (start, estimated end, gap, targets)
    for k in np.argsort(r_min, kind="stable").tolist():
        centre = min(int(r_min[k]) + 1, n)
        if windows:
            start, end, gap, members = windows[-1]
            if centre - gap <= end:
                windows[-1] = (start, max(end, int(r_max[k]) + 1 + gap), gap, [*members, k])
                continue
        c = np.bincount(rows[:centre], minlength=N)
        gap = int(_WINDOW_SD * np.sqrt(max(int(np.dot(c, c)) - centre**2 / N, 0.0))) + 16
        windows.append((max(0, centre - gap), int(r_max[k]) + 1 + gap, gap, [k]))
    cap = max(_SUB, _BLOCK // n_boot)
    for start, end, gap, members in windows:
        targets = ranks[members]
        while True:  # a start at or below every replicate's targets
            total = np.zeros(n_boot, dtype=np.int64)
            if 0 < start <= min(cap, N // 4):  # fewer rows than the product reads
                total += w[rows[:start]].sum(axis=0, dtype=dtype)
            elif start:
                total += np.einsum("n,nb->b", np.bincount(rows[:start], minlength=N).astype(dtype), w)
            if start == 0 or (total <= targets).all():
                break
            gap *= 2
            start = max(0, start - gap)
        pos, step = start, min(cap, max(end - start, _SUB))
        hits = found[members]
        while pos < n and (hits < 0).any():
            block = w[rows[pos:pos + step]]
            todo = np.flatnonzero((hits < 0).any(axis=1))
            # the targets above this block's start, clipped to its running sums' range
            left = np.clip(targets[todo] - total, -1, np.iinfo(dtype).max).astype(dtype)
            got, block_total = _block_crossings(block, left, dtype)
            hits[todo] = np.where((hits[todo] < 0) & (got >= 0), pos + got, hits[todo])
            total += block_total
            pos, step = pos + len(block), min(cap, max(gap, _SUB) if pos == start else 2 * step)
        found[members] = hits
    return found


def _weighted_sum(counts: np.ndarray, by_replicate: np.ndarray) -> np.ndarray:
    """``counts [K, N] @ weights [N, B]`` in exact integer arithmetic, from the replicate-major
    weights ``[B, N]`` (:func:`replicate_counts`): einsum's own loop (a multithreaded BLAS call
    on these small shapes can stall badly on a busy machine) along contiguous rows, in int32
    where no sum can overflow it (each is at most max(counts) * N), three times as fast as int64."""
    counts = np.asarray(counts)
    N = by_replicate.shape[1]
    exact32 = by_replicate.dtype == np.int32 and int(counts.max(initial=0)) * N < 2**31
    dtype = np.int32 if exact32 else np.int64
    return np.einsum("bn,kn->kb", by_replicate.astype(dtype, copy=False), counts.astype(dtype)).astype(np.int64)


def _descending(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values in descending order (ties in any order), or all of them."""
    if k >= values.size:
        return np.argsort(values, kind="stable")[::-1]
    top = np.argpartition(values, values.size - k)[values.size - k:]
    return top[np.argsort(values[top], kind="stable")[::-1]]


def tpr_at_fpr_boot(scores: np.ndarray, membership: np.ndarray, alphas: list[float],
                    weights: np.ndarray, by_replicate: np.ndarray | None = None,
                    pairs: Pairs | None = None) -> np.ndarray:
    """:func:`tpr_at_fpr` on every bootstrap replicate of the samples, ``[len(alphas), B]``.

    ``weights`` is ``[N, B]`` (:func:`bootstrap_weights`): replicate b repeats sample i, with all
    its M pairs, ``weights[i, b]`` times. Nothing is copied. The replicate's threshold is numpy's
    linear (1 - alpha) quantile of its repeated OUT scores: the two order statistics around it are
    found by running weighted counts down from the top OUT score (only the top ~alpha share is
    sorted, and only windows of a few standard deviations around each rank are read:
    :func:`_first_exceeding`). The IN weight above it is the weight above the highest replicate threshold
    (one integer product of per-sample counts and weights) plus, per replicate, the IN pairs
    between the lowest and the highest replicate threshold. Equal to :func:`tpr_at_fpr` on the
    explicitly repeated arrays. ``by_replicate`` is the same weights ``[B, N]``
    (:func:`replicate_counts`) and ``pairs`` :func:`pairs_of` the membership, each made here
    when not given.
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights)
    N, n_boot = w.shape
    wb = np.ascontiguousarray(w.T) if by_replicate is None else by_replicate
    p = pairs or pairs_of(membership)
    in_s, out_s = p.split(s)
    in_j, out_j = p.in_sample, p.out_sample
    n_out, n_in = _weighted_sum(np.stack([p.n_out, p.n_in]), wb)
    if (n_out == 0).any() or (n_in == 0).any():
        raise ValueError("a bootstrap replicate has no IN or no OUT pair")
    lower, upper, frac = neighbours(n_out, _levels(alphas)[:, None])  # numpy's virtual index, [A, B]
    ranks = np.concatenate([n_out - 1 - lower, n_out - 1 - upper]).astype(np.int64)  # from the top
    top = _descending(out_s, int(1.2 * max(alphas) * out_s.size) + 1024)
    pos = _first_exceeding(w, out_j[top], ranks, int(n_out.max()))
    if (pos < 0).any():  # an extreme replicate reaches below the sorted top: sort everything
        top = _descending(out_s, out_s.size)
        pos = _first_exceeding(w, out_j[top], ranks, int(n_out.max()))
    a, b = np.split(out_s[top[pos]], 2)
    tau = lerp(a, b, frac)  # [A, B]
    hi, lo_tau = tau.max(axis=1), tau.min(axis=1)
    above = _weighted_sum(np.stack([np.bincount(in_j[in_s > c], minlength=N) for c in hi]), wb)
    step = max(1, _BLOCK // n_boot)
    for row in range(len(alphas)):  # IN pairs between the lowest and highest replicate threshold
        band = (in_s > lo_tau[row]) & (in_s <= hi[row])
        band_s, band_j = in_s[band], in_j[band]
        for start in range(0, band_s.size, step):
            chunk = slice(start, start + step)
            above[row] += (w[band_j[chunk]] * (band_s[chunk, None] > tau[row][None])).sum(axis=0)
    return above / n_in


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (numpy's linear percentiles)."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def checkpoint_metrics(scores: Checkpoints, membership: np.ndarray, alphas: list[float], n_boot: int,
                       seed: int, level: float = 0.95) -> dict[str, np.ndarray]:
    """Global metrics of one attack at every checkpoint, each ``[T]``: ``auc``,
    ``balanced_accuracy``, ``tpr_at_fpr_A`` and its bootstrap CI ``tpr_at_fpr_A_ci_low/high``.

    ``scores`` is ``[T, M, N]`` (a memmap is read one checkpoint at a time). The bootstrap
    resamples samples (all M pairs of a sample together); checkpoint t uses the seed
    ``(seed, t)``, so every attack of a run is resampled identically.
    """
    return checkpoint_metrics_of({"": scores}, membership, alphas, n_boot, seed, level)[""]


def checkpoint_metrics_of(scores: Mapping[str, Checkpoints], membership: np.ndarray, alphas: list[float],
                          n_boot: int, seed: int, level: float = 0.95) -> dict[str, dict[str, np.ndarray]]:
    """:func:`checkpoint_metrics` of several attacks (by name) at once, checkpoint by checkpoint:
    the bootstrap weights of a checkpoint are drawn once and serve every attack (they are the
    same for all, by the seed), which is most of the cost of the CIs at small N."""
    first = next(iter(scores.values()))
    T, _, N = first.shape
    keys = ["auc", "balanced_accuracy", *(f"tpr_at_fpr_{a:g}{suffix}" for a in alphas
                                          for suffix in ("", "_ci_low", "_ci_high"))]
    out = {name: {k: np.empty(T) for k in keys} for name in scores}
    pairs = pairs_of(membership)
    for t in range(T):
        by_replicate = replicate_counts(N, n_boot, np.random.default_rng([seed, t]))
        weights = np.ascontiguousarray(by_replicate.T)  # = bootstrap_weights: rows gather fast
        for name, attack_scores in scores.items():
            raw = np.asarray(attack_scores[t])
            o = out[name]
            o["auc"][t], o["balanced_accuracy"][t], point = global_metrics(raw, membership, alphas, pairs)
            boot = tpr_at_fpr_boot(raw, membership, alphas, weights, by_replicate, pairs)
            for a, reps, p in zip(alphas, boot, point, strict=True):
                o[f"tpr_at_fpr_{a:g}"][t] = p
                o[f"tpr_at_fpr_{a:g}_ci_low"][t], o[f"tpr_at_fpr_{a:g}_ci_high"][t] = percentile_ci(reps, level)
    return out
