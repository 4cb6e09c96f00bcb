"""Null-model AUC of every reference attack under each reference rule (docs/attacks.md's table).

Signals carry no membership effect at all: phi, losses and probabilities are drawn per (model,
sample) around a per-sample offset, independently of the membership matrix. An honest attack
gives a global AUC of 0.5 (within the printed standard error) at every M; leave-one-out
references (``one``) do not.

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


def null_signals(M: int, N: int, n_test: int, seed: int) -> tuple[dict, dict]:
    """Pool and test signals ``[M, N, 1]`` that do not depend on membership."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=(1, N, 1)) * 3
    probs = np.sort(rng.dirichlet(np.ones(5), size=(M, N, 1)), axis=-1)[..., ::-1]
    pool = {"phi": rng.normal(size=(M, N, 1)) + offset,
            "loss": rng.gamma(2.0, 0.5, size=(M, N, 1)) * np.exp(offset),
            "top1": probs[..., 0], "top2": probs[..., 1], "top3": probs[..., 2]}
    return pool, {"loss": rng.gamma(2.0, 0.5, size=(M, n_test, 1))}


def null_auc(attack: str, M: int, N: int, rule: str, seed: int) -> float:
    z = balanced_membership(M, N, seed)
    pool, test = null_signals(M, N, 500, seed + 1000)
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


if __name__ == "__main__":
    main()
