"""Trajectory clusters: k-means on the per-sample advantage curves A_i(t), named by behaviour.

Samples are put in a canonical (lexicographic) order before clustering, so the result does not
depend on the order of the pool: permuting samples permutes the labels and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances
from threadpoolctl import threadpool_limits

from privdyn.analysis.population import STATE_NAMES, Bands, states

K_RANGE = (2, 6)


@dataclass(frozen=True)
class Clustering:
    """Labels ``[N]`` (0 = the cluster with the highest mean final advantage), the chosen k, its
    silhouette (NaN with a single cluster) and the silhouette of every k tried."""

    labels: np.ndarray
    k: int
    silhouette: float
    tried: dict[int, float]


def _silhouette(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette from a precomputed distance matrix ``[n, n]``; NaN when it is undefined
    (fewer than two clusters, or every sample its own).

    scikit-learn's ``silhouette_score(dist, labels, metric="precomputed")``, from one product of
    the distances with the labels' indicator matrix (every sample's distance sum to each cluster)
    instead of its per-chunk reductions: five times faster at n = 2000, and equal to it to
    rounding (tested). A sample alone in its cluster scores 0, as there.
    """
    values, lab = np.unique(labels, return_inverse=True)
    n, k = len(lab), len(values)
    if k < 2 or k >= n:
        return float("nan")
    rows = np.arange(n)
    indicator = np.zeros((n, k))
    indicator[rows, lab] = 1.0
    sums = dist @ indicator  # [n, k]: each sample's summed distance to each cluster
    size = indicator.sum(axis=0)
    own = size[lab]
    intra = sums[rows, lab] / np.maximum(own - 1, 1)  # the mean over the others of its cluster
    mean = sums / size
    mean[rows, lab] = np.inf
    nearest = mean.min(axis=1)
    with np.errstate(invalid="ignore"):
        score = np.where(own > 1, (nearest - intra) / np.maximum(intra, nearest), 0.0)
    return float(np.nan_to_num(score).mean())  # 0/0 (all distances 0) is 0, as in scikit-learn


def cluster_trajectories(adv: np.ndarray, k: int | None = None, seed: int = 0,
                         silhouette_sample: int = 2000) -> Clustering:
    """k-means (seeded) on the rows of ``adv.T``; k by the best silhouette in 2..6 unless given.

    The silhouette is computed on a seeded subsample of ``silhouette_sample`` samples when N is
    larger. k is capped at the number of distinct trajectories; with fewer than two there is a
    single cluster.
    """
    T, N = adv.shape
    order = np.lexsort(adv[::-1])
    x = np.ascontiguousarray(adv.T[order], dtype=np.float64)
    n_distinct = 1 + int(np.any(x[1:] != x[:-1], axis=1).sum()) if N else 0
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(N, silhouette_sample, replace=False)) if silhouette_sample < N else np.arange(N)
    candidates = [k] if k is not None else list(range(K_RANGE[0], K_RANGE[1] + 1))
    candidates = sorted({min(c, n_distinct, max(N - 1, 1)) for c in candidates} - {0, 1})
    if not candidates:
        return Clustering(np.zeros(N, dtype=np.int64), 1, float("nan"), {})
    fits, tried = {}, {}
    # one thread: OpenMP/BLAS worker threads spin-wait and slow k-means by 10x or more when the
    # cores are shared (measured: 6.7 s vs 0.45 s on N=8000, T=30, 2 busy cores)
    with threadpool_limits(limits=1):
        dist = pairwise_distances(x[sample])
        for c in candidates:
            fits[c] = KMeans(n_clusters=c, n_init=4, random_state=seed).fit_predict(x)
            tried[c] = _silhouette(dist, fits[c][sample])
    best = max(candidates, key=lambda c: (np.nan_to_num(tried[c], nan=-np.inf), -c))
    lab = np.unique(fits[best], return_inverse=True)[1]
    # relabel: decreasing mean final advantage, then decreasing mean advantage over time
    n_lab = lab.max() + 1
    size = np.bincount(lab, minlength=n_lab)
    final = np.bincount(lab, weights=x[:, -1], minlength=n_lab) / size
    overall = np.bincount(lab, weights=x.mean(axis=1), minlength=n_lab) / size
    rank = np.empty(n_lab, dtype=np.int64)
    rank[np.lexsort((-overall, -final))] = np.arange(n_lab)
    labels = np.empty(N, dtype=np.int64)
    labels[order] = rank[lab]
    return Clustering(labels, int(n_lab), tried[best], tried)


def describe_clusters(labels: np.ndarray, adv: np.ndarray, first_high: np.ndarray, epochs: np.ndarray,
                      bands: Bands) -> pd.DataFrame:
    """One row per cluster: size, mean final advantage, share ever high, mean first-high epoch
    (over members that reach high) and a name.

    The name is the state of the mean final advantage (safe, low, medium); a cluster whose mean
    final advantage is high is "early-high" when its members reach high in the first half of
    training on average, else "late-high". Repeated names get a suffix -2, -3 in label order.
    """
    k = int(labels.max()) + 1 if labels.size else 0
    size = np.bincount(labels, minlength=k)
    final = np.bincount(labels, weights=adv[-1], minlength=k) / size
    ever = np.isfinite(first_high)
    n_ever = np.bincount(labels, weights=ever, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_high = np.bincount(labels, weights=np.where(ever, first_high, 0.0), minlength=k) / n_ever
    span = float(epochs[-1] - epochs[0])
    frac = (t_high - epochs[0]) / span if span > 0 else np.zeros(k)
    names: list[str] = []
    seen: dict[str, int] = {}
    for c in range(k):
        base = STATE_NAMES[int(states(np.array([final[c]]), bands)[0])]
        if base == "high":
            base = "early-high" if frac[c] <= 0.5 else "late-high"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return pd.DataFrame({
        "cluster": np.arange(k), "name": names, "size": size,
        "mean_final_advantage": final, "share_ever_high": n_ever / size, "mean_time_to_high": t_high,
    })
