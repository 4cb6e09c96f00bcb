"""Analysis at scale: CPU seconds per attack of `analyze` on N x T x M synthetic scores and signals.

Writes a synthetic run directory (zarr arrays, one checkpoint at a time) with three attacks
(lira_online, and lira_online_fixed and lira_offline_cdf as small perturbations of it) to a
temporary folder, then runs the whole analyze stage (per attack: plane, dynamics, clusters,
difficulty with bootstrap CIs, early determination, model-level metrics with bootstrap CIs,
tables; for the run: training measures, sensitivity, early warning, DP audit, summary.json) in
a child process. It reports CPU time (user + system: a load-independent figure on shared
machines) per part of the stage and per attack, wall time and peak resident memory.

It also times the order-statistic search of the model-level bootstrap
(``model_level._first_exceeding``) against the previous one (commit 8dde97e, loaded from
``git show`` into a temporary module) on the same synthetic checkpoints, and checks that both
give the same positions and the same bootstrap TPRs. ``--baseline`` also runs the whole stage
a second time with the previous search swapped in.

    python benchmarks/analysis_scale.py                  # N=50,000, T=50, M=64
    python benchmarks/analysis_scale.py --n 2000 --t 10 --m 16   # a quick check
    python benchmarks/analysis_scale.py --baseline       # and the whole stage with the previous search
    python benchmarks/analysis_scale.py --search-only    # only the side-by-side timing of the search
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ATTACKS = ("lira_online", "lira_online_fixed", "lira_offline_cdf")
N_TEST = 10_000
#: the commit whose model-level search is the baseline
BASELINE = "8dde97e"


def write_synthetic_run(path: Path, n: int, t: int, m: int, seed: int = 0) -> None:
    """A run directory with scores and the signals analyze reads; samples differ in how strongly
    and how early their membership separates, and in how hard they are to learn. The second and
    third attacks are the first with small independent perturbations (and, for the third, a
    monotone rescaling), so their thresholds and ties differ."""
    from privdyn.config import config_from_dict
    from privdyn.store import arrays, atomic, provenance
    from privdyn.store.rundir import RunDir
    from privdyn.training.membership import balanced_membership

    cfg = config_from_dict({
        "name": "analysis-scale", "seed": seed,
        "dataset": {"name": "synthetic", "n_pool": n, "n_test": N_TEST},
        "training": {"n_models": m, "epochs": t}, "attacks": list(ATTACKS),
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
        **{run.score_path(a): ((t, m, n), np.float32) for a in ATTACKS},
        run.signal_path("correct"): ((t, m, n, 1), bool),
        run.signal_path("loss"): ((t, m, n, 1), np.float32),
        run.signal_path("phi"): ((t, m, n, 1), np.float32),
        run.signal_path("el2n"): ((t, m, n, 1), np.float32),
        run.signal_path("correct", "test"): ((t, m, N_TEST, 1), bool),
        run.signal_path("loss", "test"): ((t, m, N_TEST, 1), np.float32),
    }
    with contextlib.ExitStack() as stack:
        mm = {p: stack.enter_context(arrays.create_array(p, shape, dt)) for p, (shape, dt) in layout.items()}
        for k in range(t):
            frac = k / max(t - 1, 1)
            ramp = np.clip((frac - onset) * 4, 0, 1)
            online = rng.standard_normal((m, n)) + z * (strength * ramp * 8)
            mm[run.score_path("lira_online")][k] = online
            mm[run.score_path("lira_online_fixed")][k] = online + 0.05 * rng.standard_normal((m, n))
            mm[run.score_path("lira_offline_cdf")][k] = 0.7 * online + 0.1 * rng.standard_normal((m, n))
            p_right = 1 - hardness * (1 - 0.9 * frac)
            mm[run.signal_path("correct")][k, ..., 0] = rng.uniform(size=(m, n)) < p_right
            loss = -np.log(np.clip(p_right, 1e-3, 1)) * (1 - 0.5 * z) + rng.exponential(0.05, (m, n))
            mm[run.signal_path("loss")][k, ..., 0] = loss
            mm[run.signal_path("phi")][k, ..., 0] = -np.log(np.expm1(np.maximum(loss, 1e-6)))  # log p / (1 - p)
            mm[run.signal_path("el2n")][k, ..., 0] = np.sqrt(2) * (1 - p_right) + rng.uniform(0, 0.05, (m, n))
            mm[run.signal_path("correct", "test")][k, ..., 0] = rng.uniform(size=(m, N_TEST)) < 0.5 + 0.4 * frac
            mm[run.signal_path("loss", "test")][k, ..., 0] = rng.exponential(1 - 0.5 * frac, (m, N_TEST))
    # scores made outside the score stage: record their provenance, as an import would
    for a in ATTACKS:
        provenance.record(run, provenance.score_digest(cfg, run, a), run.score_path(a))


def baseline_module(rev: str = BASELINE) -> ModuleType:
    """``privdyn.analysis.model_level`` as of ``rev``, from ``git show``, as a temporary module."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:src/privdyn/analysis/model_level.py"], cwd=root,
                            capture_output=True, text=True, check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        spec = importlib.util.spec_from_file_location(f"model_level_{rev}", f.name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.unlink(f.name)
    return module


def use_baseline_search() -> None:
    """Swap the previous order-statistic search into today's model-level bootstrap."""
    from privdyn.analysis import model_level

    old = baseline_module()._first_exceeding

    def search(weights: np.ndarray, rows: np.ndarray, ranks: np.ndarray, limit: int | None = None) -> np.ndarray:
        return old(weights, rows, ranks)

    model_level._first_exceeding = search


@contextlib.contextmanager
def cpu_timers() -> Iterator[dict[str, float]]:
    """CPU seconds spent in each part of the analyze stage, by wrapping the functions it calls
    (nested parts are counted in their own key and in the enclosing one)."""
    from privdyn.analysis import model_level
    from privdyn.pipeline import analysis
    from privdyn.pipeline.run_level import RunAnalysis

    spent: dict[str, float] = defaultdict(float)

    def timed(key: Callable[..., str], f: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return f(*args, **kwargs)
            finally:
                spent[key(*args)] += time.process_time() - t0
        return wrapper

    patches = [
        (analysis, "training_measures", lambda *a: "training measures (shared)"),
        (analysis, "analyze_attacks", lambda *a: "per-attack analysis (all attacks)"),
        (analysis, "compute_plane", lambda *a: "  of which planes"),
        (model_level, "checkpoint_metrics_of", lambda *a: "  of which model-level metrics"),
        (model_level, "_first_exceeding", lambda *a: "    of which the bootstrap's order-statistic search"),
        (RunAnalysis, "run_and_record", lambda self, *a: f"run level: {self.name}"),
        (analysis, "write_summary", lambda *a: "summary.json"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, key in patches:
        setattr(owner, name, timed(key, getattr(owner, name)))
    try:
        yield spent
    finally:
        for owner, name, f in saved:
            setattr(owner, name, f)


def analyze_and_measure(path: Path, baseline: bool = False) -> dict[str, Any]:
    """Run the analyze stage on ``path``; return CPU seconds per part and per attack, wall time
    and this process's peak RSS."""
    from privdyn import pipeline
    from privdyn.store.rundir import RunDir

    if baseline:
        use_baseline_search()
    run = RunDir(path)
    cfg = run.load_config()  # in this process (its CPU timers see every part), not in worker processes
    cfg = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"workers": 1})})
    c0, t0 = time.process_time(), time.perf_counter()
    with cpu_timers() as spent:
        summary = pipeline.analyze(cfg, run)
    cpu, seconds = time.process_time() - c0, time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    per_attack = spent["per-attack analysis (all attacks)"] / len(cfg.attacks)
    spent["other (score provenance checks, records)"] = cpu - sum(v for k, v in spent.items() if k[0] != " ")
    attacks = json.dumps(summary["attacks"], sort_keys=True).encode()
    return {"search": "baseline " + BASELINE if baseline else "today",
            "attacks": list(cfg.attacks), "stage_cpu_seconds": round(cpu, 1), "stage_seconds": round(seconds, 1),
            "cpu_seconds_per_attack": round(per_attack, 1),
            "stage_cpu_seconds_per_attack": round(cpu / len(cfg.attacks), 1),
            "parts_cpu_seconds": {k: round(v, 1) for k, v in spent.items()},
            "process_cpu_seconds_incl_imports": round(usage.ru_utime + usage.ru_stime, 1),
            "load_average_1min_after": round(os.getloadavg()[0], 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "n_high_final": {a: summary["attacks"][a]["n_high_final"] for a in cfg.attacks},
            "attack_entries_sha256": hashlib.sha256(attacks).hexdigest()[:16]}


def best_cpu(f: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fewest CPU seconds of ``repeats`` calls of ``f``, and its result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        out = f()
        best = min(best, time.process_time() - t0)
    return best, out


def capture_search_args(s: np.ndarray, z: np.ndarray, alphas: list[float], w: np.ndarray) -> tuple[Any, ...]:
    """The arguments today's :func:`~privdyn.analysis.model_level.tpr_at_fpr_boot` passes to its
    order-statistic search (its first call)."""
    from privdyn.analysis import model_level

    captured: list[tuple[Any, ...]] = []
    search = model_level._first_exceeding

    def spy(weights: np.ndarray, rows: np.ndarray, ranks: np.ndarray, limit: int | None = None) -> np.ndarray:
        captured.append((weights, rows, ranks, limit))
        return search(weights, rows, ranks, limit)

    model_level._first_exceeding = spy
    try:
        model_level.tpr_at_fpr_boot(s, z, alphas, w)
    finally:
        model_level._first_exceeding = search
    return captured[0]


def compare_at(old: ModuleType, s: np.ndarray, z: np.ndarray, alphas: list[float], w: np.ndarray,
               repeats: int) -> dict[str, Any]:
    """CPU milliseconds of the previous and today's search and bootstrap TPR on one checkpoint,
    after checking that they give the same positions and TPRs."""
    from privdyn.analysis import model_level

    args = capture_search_args(s, z, alphas, w)
    t_old, pos_old = best_cpu(lambda: old._first_exceeding(*args[:3]), repeats)
    t_new, pos_new = best_cpu(lambda: model_level._first_exceeding(*args), repeats)
    tb_old, boot_old = best_cpu(lambda: old.tpr_at_fpr_boot(s, z, alphas, w), repeats)
    tb_new, boot_new = best_cpu(lambda: model_level.tpr_at_fpr_boot(s, z, alphas, w), repeats)
    assert np.array_equal(pos_old, pos_new) and np.array_equal(boot_old, boot_new), "results differ"
    return {"n_sorted_out_pairs": len(args[1]), "search_cpu_ms_old": round(1e3 * t_old, 1),
            "search_cpu_ms_new": round(1e3 * t_new, 1), "search_speedup": round(t_old / t_new, 1),
            "tpr_boot_cpu_ms_old": round(1e3 * tb_old, 1), "tpr_boot_cpu_ms_new": round(1e3 * tb_new, 1),
            "tpr_boot_speedup": round(tb_old / tb_new, 2), "identical": True}


def search_side_by_side(path: Path, checkpoints: list[int], repeats: int = 3) -> dict[str, Any]:
    """The previous and today's order-statistic search (and the whole bootstrap TPR) on the
    same checkpoints of lira_online, with the stage's alphas and bootstrap weights; both must
    give the same positions and TPRs."""
    from privdyn.analysis import model_level
    from privdyn.store.rundir import RunDir

    old = baseline_module()
    run = RunDir(path)
    cfg = run.load_config()
    z = run.load_array(path / "membership.npy", "membership")
    scores = run.load_scores("lira_online")
    alphas = sorted(set(cfg.analysis.report_alphas) | {0.001, 0.01})
    n_boot = cfg.analysis.model_bootstrap
    rows = []
    for t in checkpoints:
        w = model_level.bootstrap_weights(z.shape[1], n_boot, np.random.default_rng([cfg.seed, t]))
        s = np.asarray(scores[t], dtype=np.float64)
        rows.append({"checkpoint": t, **compare_at(old, s, z, alphas, w, repeats)})
    return {"baseline": BASELINE, "alphas": alphas, "n_boot": n_boot, "checkpoints": rows}


def child(args: list[str]) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh process; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--t", type=int, default=50)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--dir", type=Path, default=None, help="where to write the run (default: a temp dir)")
    ap.add_argument("--baseline", action="store_true",
                    help=f"also run the whole stage with the search of {BASELINE} (a second analysis)")
    ap.add_argument("--search-only", dest="no_analyze", action="store_true",
                    help="only the side-by-side timing of the search (no analyze stage)")
    ap.add_argument("--analyze-only", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--search-at", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--old-search", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.analyze_only is not None:
        print(json.dumps(analyze_and_measure(args.analyze_only, args.old_search)))
        return
    if args.search_at is not None:
        print(json.dumps(search_side_by_side(args.search_at, [args.t // 2, args.t - 1])))
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "run"
        t0 = time.perf_counter()
        write_synthetic_run(path, args.n, args.t, args.m)
        gen = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30
        print(json.dumps({"n": args.n, "t": args.t, "m": args.m, "arrays_gib": round(size, 2),
                          "generate_seconds": round(gen, 1)}), flush=True)
        print(json.dumps({"search_side_by_side": child(["--t", str(args.t), "--search-at", str(path)])},
                         indent=1), flush=True)
        if args.no_analyze:
            return
        print(json.dumps({"analyze": child(["--analyze-only", str(path)])}, indent=1), flush=True)
        if args.baseline:
            shutil.rmtree(path / "analysis")  # analyse afresh
            print(json.dumps({"analyze_baseline": child(["--analyze-only", str(path), "--old-search"])},
                             indent=1), flush=True)


if __name__ == "__main__":
    main()
