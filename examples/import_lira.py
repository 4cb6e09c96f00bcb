"""Import a LiRA-layout experiment directory and get the full per-epoch analysis.

    python examples/import_lira.py                 # writes a small synthetic LOGDIR first
    python examples/import_lira.py PATH/TO/LOGDIR  # a directory of the LiRA reference code

The synthetic LOGDIR mimics what the LiRA reference code (Carlini et al. 2022) writes: one
``experiment-{m}_{M}`` folder per model with ``keep.npy`` (bool [N], the samples it trained on) and
``logits/%010d.npy`` ([N, 1, augmentations, classes], one file per saved epoch), and ``y_train.npy``.
Its models learn every sample over the epochs and memorise the ones they train on, so the attacks
find a growing signal. Then the directory is imported through ``privdyn.ingest`` (the same as
``privdyn import LOGDIR --layout lira``) and the report path is printed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from privdyn.ingest.api import import_logits


def write_synthetic_logdir(logdir: Path, n: int = 500, models: int = 8, epochs: int = 4, classes: int = 10,
                           augs: int = 2, seed: int = 0) -> Path:
    """A LiRA-layout LOGDIR of ``models`` (even) models saved at epochs 0..``epochs``, in complementary pairs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    difficulty = rng.exponential(1.0, n)                     # hard samples are learnt later
    logdir.mkdir(parents=True, exist_ok=True)
    np.save(logdir / "y_train.npy", y)
    halves = rng.random((models // 2, n)) < 0.5
    keeps = np.stack([halves, ~halves], axis=1).reshape(-1, n)  # models 2j and 2j+1 are complementary
    for m, keep in enumerate(keeps):
        exp = logdir / f"experiment-{m}_{len(keeps)}"
        (exp / "logits").mkdir(parents=True, exist_ok=True)
        np.save(exp / "keep.npy", keep)
        for e in range(epochs + 1):
            progress = e / epochs
            margin = 4 * progress / (1 + difficulty) + 3 * progress * keep  # learning, plus memorisation
            z = rng.normal(0, 1, (n, 1, augs, classes))
            z[np.arange(n), 0, :, y] += margin[:, None]
            np.save(exp / "logits" / f"{e:010d}.npy", z.astype(np.float32))
    return logdir


def main() -> None:
    """Write (or take) a LOGDIR, import it, print where the report is."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logdir", nargs="?", type=Path, help="a LiRA LOGDIR (default: write a synthetic one)")
    ap.add_argument("--out", type=Path, default=Path("runs/lira_import"), help="the run directory")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    logdir, queries = args.logdir, None  # a real LOGDIR's augmentations: identity, aug1, aug2, ...
    if logdir is None:
        logdir = write_synthetic_logdir(Path(tempfile.mkdtemp(prefix="lira_logdir_")), args.samples, args.models,
                                        args.epochs)
        queries = ["identity", "mirror"]  # what the synthetic models' two augmentations stand for
        print(f"wrote a synthetic LiRA LOGDIR: {logdir}")
    result = import_logits(logdir, "lira", args.out, name="lira_import", queries=queries, progress=False)
    final = result.summary["final"] if result.summary else {}
    print(f"imported {result.config.training.n_models} models x {len(result.config.checkpoint_epochs())} "
          f"checkpoints; final AUC {final.get('auc', float('nan')):.3f}, TPR at 1% FPR "
          f"{final.get('tpr_at_fpr_0.01', float('nan')):.3f}")
    print(f"report: {result.report}")


if __name__ == "__main__":
    main()
