"""Learning difficulty from the models' own checkpoint signals, and how it relates to risk.

Measures per sample (Toneva et al. 2019; Jiang et al. 2021; Paul et al. 2021), from the IN
models unless said otherwise, under one query (the identity):

- ``iteration_learned``: the first checkpoint index (1-based) from which the sample stays
  correctly classified to the end; T + 1 when it is misclassified at the last checkpoint.
- ``forgetting_events``: the number of correct -> incorrect transitions between consecutive
  checkpoints.
- ``mean_train_loss``: the training loss averaged over checkpoints.
- ``consistency``: the mean correctness at e_T over the OUT models (a C-score estimate).
- ``early_el2n``: ||softmax - onehot||_2 at the checkpoint nearest a fraction of training.

Each is averaged over the sample's IN models (consistency: OUT models). Streams over checkpoints.
Spearman correlations come with percentile bootstrap CIs computed without a loop over draws
per sample: a draw is a vector of multiplicities, and ranks within it follow from cumulative sums.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from privdyn.analysis.checkpoints import Checkpoints

MEASURES = ("iteration_learned", "forgetting_events", "mean_train_loss", "consistency", "early_el2n")


def early_index(epochs: np.ndarray, fraction: float) -> int:
    """Index of the checkpoint nearest ``fraction * e_T`` (ties: the earlier), never e_0 = 0
    unless it is the only checkpoint."""
    ep = np.asarray(epochs, dtype=np.float64)
    dist = np.abs(ep - fraction * ep[-1])
    dist[ep <= 0] = np.inf if (ep > 0).any() else 0.0
    return int(np.argmin(dist))


def difficulty_measures(correct: Checkpoints, loss: Checkpoints, el2n: Checkpoints | None,
                        membership: np.ndarray, early: int) -> dict[str, np.ndarray]:
    """Every measure of :data:`MEASURES` per sample ``[N]``.

    ``correct`` and ``loss`` (and ``el2n``, or None when it was not stored: NaN then) are
    ``[T, M, N]`` array-likes such as memmap views; one checkpoint is read at a time.
    """
    T = correct.shape[0]
    z = np.asarray(membership, dtype=bool)
    n_in = z.sum(axis=0)
    n_out = z.shape[0] - n_in
    last_wrong = np.zeros(z.shape, dtype=np.int32)  # 1-based index of the last incorrect checkpoint
    forgets = np.zeros(z.shape, dtype=np.int32)
    loss_sum = np.zeros(z.shape[1])
    prev = None
    for t in range(T):
        c = np.asarray(correct[t], dtype=bool)
        last_wrong[~c] = t + 1
        if prev is not None:
            forgets += prev & ~c
        prev = c
        loss_sum += np.where(z, np.asarray(loss[t], dtype=np.float64), 0.0).sum(axis=0)
    out = {
        "iteration_learned": np.where(z, last_wrong + 1, 0).sum(axis=0) / n_in,
        "forgetting_events": np.where(z, forgets, 0).sum(axis=0) / n_in,
        "mean_train_loss": loss_sum / (T * n_in),
        "consistency": (prev & ~z).sum(axis=0) / n_out,
    }
    if el2n is None:
        out["early_el2n"] = np.full(z.shape[1], np.nan)
    else:
        out["early_el2n"] = np.where(z, np.asarray(el2n[early], dtype=np.float64), 0.0).sum(axis=0) / n_in
    return out


class Ties(NamedTuple):
    """How a vector's values tie: each sample's group among the sorted distinct values (``inv``),
    the samples in group order (``order``) and where each group starts in it (``starts``)."""

    inv: np.ndarray
    order: np.ndarray
    starts: np.ndarray

    @property
    def n_groups(self) -> int:
        """The number of distinct values."""
        return len(self.starts)


def ties_of(values: np.ndarray) -> Ties:
    """The :class:`Ties` of ``values`` (made once per vector; every draw reuses them)."""
    inv = np.unique(values, return_inverse=True)[1].ravel()
    order = np.argsort(inv, kind="stable")
    sorted_inv = inv[order]
    starts = np.flatnonzero(np.r_[True, sorted_inv[1:] != sorted_inv[:-1]]) if inv.size else inv[:0]
    return Ties(inv, order, starts)


def _group_counts(ties: Ties, counts: np.ndarray) -> np.ndarray:
    """The drawn count of every group of tied values in every draw, ``[B, n_groups]``: the draws'
    columns in group order, summed within each group (none to sum when no value ties)."""
    by_group = np.take(counts, ties.order, axis=1)
    return by_group if ties.n_groups == len(ties.order) else np.add.reduceat(by_group, ties.starts, axis=1)


def centred_ranks(ties: Ties, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-ranks ``[B, N]`` of each sample within resamples given by multiplicities ``counts``,
    less their weighted mean, and the root of their weighted sum of squares per draw ``[B]``.

    A sample's mid-rank in draw b is the count of drawn values below its group (tied values share
    one) plus (the drawn count of its group + 1) / 2, what ``rankdata`` gives on the resample.
    The mid-ranks of W drawn values sum to W (W + 1) / 2, ties or not, so the mean is (W + 1) / 2
    without a pass over the samples (a rank less the mean is the count below its group plus half
    its group's count, less W / 2), and the sum of squares is taken over the groups. Every term
    is a multiple of 1/4 far below 2**53, so each sum is exact in float64, in any order: the
    result equals the centring by explicit sums, bit for bit.
    """
    w = _group_counts(ties, counts)
    dev = np.cumsum(w, axis=1)
    half_total = 0.5 * dev[:, -1:]  # W / 2
    dev -= 0.5 * w
    dev -= half_total
    return np.take(dev, ties.inv, axis=1), np.sqrt(np.einsum("bg,bg->b", w * dev, dev))


def _corr(dx: np.ndarray, nx: np.ndarray, weighted_dy: np.ndarray, ny: np.ndarray) -> np.ndarray:
    """Per draw, sum(c dx dy) / (|x| |y|) from :func:`centred_ranks` (``weighted_dy``: c dy); NaN
    where either is constant."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((nx > 0) & (ny > 0), np.einsum("bn,bn->b", dx, weighted_dy) / (nx * ny), np.nan)


def spearman_table(measures: dict[str, np.ndarray], targets: dict[str, np.ndarray], n_boot: int,
                   seed: int, level: float = 0.95, block: int = 32) -> pd.DataFrame:
    """Spearman rho of every measure with every target, with percentile bootstrap CIs.

    Draws resample the samples with replacement (the same draws for every pair, seeded) and are
    processed in blocks of ``block`` draws, each block vectorised over draws and samples. A
    measure that is not finite everywhere (e.g. a signal that was not stored) gives NaN.
    """
    return spearman_tables(measures, {"": targets}, n_boot, seed, level, block)[""]


def spearman_tables(measures: Mapping[str, np.ndarray], targets: Mapping[str, Mapping[str, np.ndarray]],
                    n_boot: int, seed: int, level: float = 0.95, block: int = 32) -> dict[str, pd.DataFrame]:
    """:func:`spearman_table` for several target sets at once (one per attack, by name): the
    measures are the same for all and so are the draws, so each block ranks and centres the
    measures once and only the targets once per set."""
    n = len(next(iter(measures.values())))
    ok = {k: bool(np.isfinite(v).all()) and n > 1 for k, v in measures.items()}
    groups = {k: ties_of(v) for k, v in measures.items() if ok[k]}
    target_ok = {(t, k): bool(np.isfinite(v).all()) and n > 1 for t, vs in targets.items() for k, v in vs.items()}
    target_groups = {key: ties_of(targets[key[0]][key[1]]) for key, good in target_ok.items() if good}

    def rho(counts: np.ndarray) -> dict[tuple[str, str, str], np.ndarray]:
        # Spearman's rho of every pair in every draw, each measure's and target's ranks made once
        centred = {k: centred_ranks(groups[k], counts) for k in measures if ok[k]}
        out = {}
        for key, good in target_ok.items():
            if good:
                dev, norm = centred_ranks(target_groups[key], counts)
                weighted = counts * dev
            for m in measures:
                out[(key[0], m, key[1])] = (_corr(*centred[m], weighted, norm) if ok[m] and good
                                            else np.full(len(counts), np.nan))
        return out

    point = rho(np.ones((1, n)))
    rng = np.random.default_rng(seed)
    draws: dict[tuple[str, str, str], list[np.ndarray]] = {p: [] for p in point}
    for start in range(0, n_boot if n > 1 else 0, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n)
        for p, r in rho(counts.astype(np.float64)).items():
            draws[p].append(r)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    rows: dict[str, list[dict[str, object]]] = {t: [] for t in targets}
    for t, vs in targets.items():
        for m in measures:
            for target in vs:
                pair = (t, m, target)
                d = np.concatenate(draws[pair]) if draws[pair] else np.array([np.nan])
                d = d[np.isfinite(d)]
                lo, hi = np.percentile(d, q) if d.size and np.isfinite(point[pair][0]) else (np.nan, np.nan)
                rows[t].append({"measure": m, "target": target, "rho": float(point[pair][0]),
                                "ci_low": float(lo), "ci_high": float(hi), "n": n, "n_boot": n_boot})
    return {t: pd.DataFrame(r) for t, r in rows.items()}


def decile_table(measures: dict[str, np.ndarray], final_adv: np.ndarray, final_auc: np.ndarray,
                 high_final: np.ndarray) -> pd.DataFrame:
    """Mean vulnerability per difficulty decile, for every measure.

    A sample's decile is floor(10 (r - 1/2) / N) + 1 with r its average rank, so tied values share
    a decile (a heavily tied measure has fewer than ten non-empty deciles; empty ones are left out).
    """
    from scipy.stats import rankdata

    frames = []
    n = len(final_adv)
    for name, v in measures.items():
        if n == 0 or not np.isfinite(v).all():
            continue
        dec = np.floor(10 * (rankdata(v) - 0.5) / n).astype(np.int64) + 1
        df = pd.DataFrame({"decile": dec, "value": v, "adv": final_adv, "auc": final_auc,
                           "high": high_final.astype(np.float64)})
        g = df.groupby("decile", sort=True).agg(
            n=("value", "size"), measure_min=("value", "min"), measure_max=("value", "max"),
            measure_mean=("value", "mean"), mean_final_advantage=("adv", "mean"),
            mean_final_auc=("auc", "mean"), share_high_final=("high", "mean")).reset_index()
        g.insert(0, "measure", name)
        frames.append(g)
    cols = ["measure", "decile", "n", "measure_min", "measure_max", "measure_mean",
            "mean_final_advantage", "mean_final_auc", "share_high_final"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
