"""Null-model AUC of every reference attack under each reference rule (docs/attacks.md's table).

Signals carry no membership effect at all: phi, losses and probabilities are drawn per (model,
sample) around a per-sample offset, independently of the membership matrix. An honest attack
gives a global AUC of 0.5 (within the printed standard error) at every M; leave-one-out
references (``one``) do not. The second table gives every model its own offset (calibration,
overall confidence: real shadow models differ) and a membership without complementary pairs,
balanced columns or iid, which the ``balanced`` rule serves.

    .venv/bin/python benchmarks/null_auc.py [--n 4000] [--seeds 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from privdyn.analysis.model_level import global_auc
from privdyn.attacks import ATTACKS, CheckpointData
from privdyn.attacks.references import reference_plan
from privdyn.training.membership import balanced_membership

REFERENCE_ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline_cdf", "lira_offline_pdf",
                     "rmia", "rmia_offline", "attack_r", "shokri")


def null_signals(M: int, N: int, n_test: int, seed: int, model_sd: float = 0.0) -> tuple[dict, dict]:
    """Pool and test signals ``[M, N, 1]`` that do not depend on membership (``model_sd``: the
    spread of a per-model offset)."""
    rng = np.random.default_rng(seed)
    offset, b = rng.normal(size=(1, N, 1)) * 3, rng.normal(size=(M, 1, 1)) * model_sd
    probs = np.sort(rng.dirichlet(np.ones(5), size=(M, N, 1)), axis=-1)[..., ::-1]
    pool = {"phi": rng.normal(size=(M, N, 1)) + offset + b,
            "loss": rng.gamma(2.0, 0.5, size=(M, N, 1)) * np.exp(offset - b),
            "top1": probs[..., 0], "top2": probs[..., 1], "top3": probs[..., 2]}
    return pool, {"loss": rng.gamma(2.0, 0.5, size=(M, n_test, 1)) * np.exp(-b)}


def membership(M: int, N: int, design: str, seed: int) -> np.ndarray:
    """``pairs`` (privdyn's design), ``columns`` (balanced columns, pairs shuffled away) or ``iid``
    (each entry IN with probability 1/2, as the LiRA reference code's keep arrays; samples with
    fewer than two models on a side, which no reference attack can score, left out)."""
    rng = np.random.default_rng([seed, 1])
    if design == "iid":
        z = rng.random((M, N)) < 0.5
        k = z.sum(axis=0)
        return z[:, (k >= 2) & (k <= M - 2)]
    z = balanced_membership(M, N, seed)
    return z if design == "pairs" else np.take_along_axis(z, np.argsort(rng.random(z.shape), axis=0), axis=0)


def null_auc(attack: str, M: int, N: int, rule: str, seed: int, design: str = "pairs",
             model_sd: float = 0.0) -> float:
    z = membership(M, N, design, seed)
    pool, test = null_signals(M, z.shape[1], 500, seed + 1000, model_sd)
    return global_auc(ATTACKS[attack].run(CheckpointData(pool, test, z, reference_plan(z, rule, seed))), z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="pool samples N")
    ap.add_argument("--seeds", type=int, default=3, help="independent repetitions per cell")
    ap.add_argument("--models", type=int, nargs="+", default=[4, 8, 16, 32])
    args = ap.parse_args()
    print(f"global AUC under the null, mean over {args.seeds} seeds, N = {args.n} "
          f"(iid standard error of one AUC 1/sqrt(3MN) in the last row)\n")
    print("| attack | rule | " + " | ".join(f"M = {m}" for m in args.models) + " |")
    print("|---|---|" + "---:|" * len(args.models))
    for attack in REFERENCE_ATTACKS:
        for rule in ("pair", "one"):
            cells = [np.mean([null_auc(attack, m, args.n, rule, s) for s in range(args.seeds)]) for m in args.models]
            print(f"| `{attack}` | `{rule}` | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    se = [1 / np.sqrt(3 * m * args.n * args.seeds) for m in args.models]
    print("| (standard error of the mean) | | " + " | ".join(f"{s:.4f}" for s in se) + " |")
    print("\nmodels that differ (a per-model offset, sd 2), memberships without complementary pairs, "
          "`balanced` references; the worst |AUC - 0.5| over the seeds\n")
    print("| attack | membership | " + " | ".join(f"M = {m}" for m in args.models) + " |")
    print("|---|---|" + "---:|" * len(args.models))
    for attack in REFERENCE_ATTACKS:
        for design in ("columns", "iid"):
            cells = [max(abs(null_auc(attack, m, args.n, "balanced", s, design, 2.0) - 0.5)
                         for s in range(args.seeds)) for m in args.models]
            print(f"| `{attack}` | {design} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print("| (standard error of one AUC) | | " + " | ".join(f"{np.sqrt(args.seeds) * s:.4f}" for s in se) + " |")


if __name__ == "__main__":
    main()
