"""Analysis at scale: time and peak memory of `analyze` on N x T x M synthetic scores and signals.

Writes a synthetic run directory (memory-mapped, one checkpoint at a time) to a temporary
folder, then runs the full analyze stage (plane, dynamics, clusters, difficulty with bootstrap
CIs, early determination, model-level metrics, tables, summary.json) in a child process and
reports its wall time, CPU time (user + system, including imports; a load-independent figure
on shared machines) and peak resident memory (resource.getrusage ru_maxrss, which counts the
memory-mapped pages it touched).

    python benchmarks/analysis_scale.py                  # N=50,000, T=50, M=64
    python benchmarks/analysis_scale.py --n 2000 --t 10 --m 16   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ATTACK = "lira_online"
N_TEST = 10_000


def write_synthetic_run(path: Path, n: int, t: int, m: int, seed: int = 0) -> None:
    """A run directory with scores and the signals analyze reads; samples differ in how strongly
    and how early their membership separates, and in how hard they are to learn."""
    from privdyn.config import config_from_dict
    from privdyn.store import arrays, atomic, provenance
    from privdyn.store.rundir import RunDir
    from privdyn.training.membership import balanced_membership

    cfg = config_from_dict({
        "name": "analysis-scale", "seed": seed,
        "dataset": {"name": "synthetic", "n_pool": n, "n_test": N_TEST},
        "training": {"n_models": m, "epochs": t}, "attacks": [ATTACK],
    })
    run = RunDir(path)
    run.init(cfg)
    rng = np.random.default_rng(seed)
    z = balanced_membership(m, n, seed)
    atomic.save_npy(path / "membership.npy", z)
    atomic.save_npy(path / "epochs.npy", np.arange(1, t + 1))
    strength = rng.exponential(0.5, n) * (rng.uniform(size=n) < 0.3)
    onset = rng.uniform(0, 1, n)
    hardness = rng.uniform(size=n)
    layout = {
        run.score_path(ATTACK): ((t, m, n), np.float32),
        run.signal_path("correct"): ((t, m, n, 1), bool),
        run.signal_path("loss"): ((t, m, n, 1), np.float32),
        run.signal_path("el2n"): ((t, m, n, 1), np.float32),
        run.signal_path("correct", "test"): ((t, m, N_TEST, 1), bool),
        run.signal_path("loss", "test"): ((t, m, N_TEST, 1), np.float32),
    }
    with contextlib.ExitStack() as stack:
        mm = {p: stack.enter_context(arrays.create_array(p, shape, dt)) for p, (shape, dt) in layout.items()}
        for k in range(t):
            frac = k / max(t - 1, 1)
            ramp = np.clip((frac - onset) * 4, 0, 1)
            mm[run.score_path(ATTACK)][k] = rng.standard_normal((m, n)) + z * (strength * ramp * 8)
            p_right = 1 - hardness * (1 - 0.9 * frac)
            mm[run.signal_path("correct")][k, ..., 0] = rng.uniform(size=(m, n)) < p_right
            mm[run.signal_path("loss")][k, ..., 0] = -np.log(np.clip(p_right, 1e-3, 1)) * (1 - 0.5 * z) \
                + rng.exponential(0.05, (m, n))
            mm[run.signal_path("el2n")][k, ..., 0] = np.sqrt(2) * (1 - p_right) + rng.uniform(0, 0.05, (m, n))
            mm[run.signal_path("correct", "test")][k, ..., 0] = rng.uniform(size=(m, N_TEST)) < 0.5 + 0.4 * frac
            mm[run.signal_path("loss", "test")][k, ..., 0] = rng.exponential(1 - 0.5 * frac, (m, N_TEST))
    # scores made outside the score stage: record their provenance, as an import would
    provenance.record(run, provenance.score_digest(cfg, run, ATTACK), run.score_path(ATTACK))


def analyze_and_measure(path: Path) -> dict:
    """Run the analyze stage on ``path``; return wall time and this process's peak RSS."""
    from privdyn import pipeline
    from privdyn.store.rundir import RunDir

    run = RunDir(path)
    cfg = run.load_config()
    t0 = time.perf_counter()
    summary = pipeline.analyze(cfg, run)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": round(seconds, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "load_average_1min_after": round(os.getloadavg()[0], 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "n_high_final": summary["n_high_final"], "n_clusters": summary["n_clusters"],
            "epoch_recall_0.7": summary["epoch_recall_0.7"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--t", type=int, default=50)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the run (default: a temp dir)")
    ap.add_argument("--analyze-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.analyze_only is not None:
        print(json.dumps(analyze_and_measure(args.analyze_only)))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "run"
        t0 = time.perf_counter()
        write_synthetic_run(path, args.n, args.t, args.m)
        gen = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30
        child = subprocess.run([sys.executable, __file__, "--analyze-only", str(path)],
                               capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(n=args.n, t=args.t, m=args.m, arrays_gib=round(size, 2), generate_seconds=round(gen, 1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
