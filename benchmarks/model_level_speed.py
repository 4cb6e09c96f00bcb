"""The model-level metrics' per-checkpoint parts, today's code against the previous, side by side:
the global ROC metrics (AUC, balanced accuracy, TPR at FPR: a sorted-split merge against one
argsort and a quantile), the plane's per-sample AUC over the models (``rank_counts``) and the
bootstrap weights (B = 200 replicates; one bincount per replicate against one over all draws).

    python benchmarks/model_level_speed.py                  # M = 64, N = 20,000 and 50,000
    python benchmarks/model_level_speed.py --n 8000 --m 16  # the quickstart's shape

The previous code (``roc_auc_and_balanced_accuracy`` from one argsort of all M*N pairs, then
``tpr_at_fprs`` from ``np.quantile`` of the OUT scores) is loaded from ``git show`` of
:data:`BEFORE` into a temporary module; both run on the same float32 scores (as the store keeps
them) and must give identical numbers. Prints the fewest CPU milliseconds of 5 and the ratio.
The per-sample AUC runs on the same scores in float64, as the plane passes them.
"""

from __future__ import annotations

import argparse

import numpy as np
from analysis_scale import baseline_module, best_cpu  # benchmarks/analysis_scale.py

from privdyn.analysis.model_level import bootstrap_weights, global_metrics, rank_counts

#: The commit before the sorted-split global metrics.
BEFORE = "4d50f3f"
ALPHAS = [0.001, 0.01, 0.1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--m", type=int, default=64)
    args = ap.parse_args()
    old = baseline_module(BEFORE)
    print(f"{'M':>4} {'N':>7} {'before ms':>10} {'now ms':>8} {'ratio':>6}  identical")
    for n in args.n:
        rng = np.random.default_rng(n)
        z = rng.random((args.m, n)) < 0.5
        s = (rng.normal(size=(args.m, n)) + 0.5 * z + rng.normal(size=(1, n))).astype(np.float32)

        def before(s: np.ndarray = s, z: np.ndarray = z) -> tuple[float, float, list[float]]:
            auc, ba = old.roc_auc_and_balanced_accuracy(s, z)
            return auc, ba, old.tpr_at_fprs(s.astype(np.float64), z, ALPHAS).tolist()

        def now(s: np.ndarray = s, z: np.ndarray = z) -> tuple[float, float, list[float]]:
            g = global_metrics(s, z, ALPHAS)
            return g.auc, g.balanced_accuracy, g.tpr_at_fpr.tolist()

        t_before, r_before = best_cpu(before, 5)
        t_now, r_now = best_cpu(now, 5)
        print(f"{args.m:4d} {n:7d} {1e3 * t_before:10.1f} {1e3 * t_now:8.1f} {t_before / t_now:5.1f}x  "
              f"{r_before == r_now}")
        s64 = s.astype(np.float64)
        t_before, a_before = best_cpu(lambda s64=s64, z=z: old.rank_counts(s64, z).auc, 5)
        t_now, a_now = best_cpu(lambda s64=s64, z=z: rank_counts(s64, z).auc, 5)
        print(f"{'':4s} {'':7s} {1e3 * t_before:10.1f} {1e3 * t_now:8.1f} {t_before / t_now:5.1f}x  "
              f"{np.array_equal(a_before, a_now, equal_nan=True)}   (per-sample AUC)")
        t_before, w_before = best_cpu(lambda n=n: old.bootstrap_weights(n, 200, np.random.default_rng([0, 3])), 5)
        t_now, w_now = best_cpu(lambda n=n: bootstrap_weights(n, 200, np.random.default_rng([0, 3])), 5)
        print(f"{'':4s} {'':7s} {1e3 * t_before:10.1f} {1e3 * t_now:8.1f} {t_before / t_now:5.1f}x  "
              f"{np.array_equal(w_before, w_now)}   (bootstrap weights, B = 200)")


if __name__ == "__main__":
    main()
