"""Where a run's wall time goes: the share of each stage, and of training against evaluation.

    python benchmarks/pipeline_cost.py                 # runs the quickstart in a temporary folder
    python benchmarks/pipeline_cost.py --run RUN_DIR   # reads a finished run's manifest instead
    python benchmarks/pipeline_cost.py CONFIG.yaml --set training.epochs=5
    python benchmarks/pipeline_cost.py --run RUN_DIR --noop   # and time a no-op `privdyn run` on it
    python benchmarks/pipeline_cost.py --one-process           # and the baseline: analyze + report in one process

Stage times come from the manifest (every stage records its seconds); inside the train stage,
``train_seconds`` and ``eval_seconds`` split model updates from the per-checkpoint evaluation of
every model on the pool and test split. The last line, ``bookkeeping: X``, is the share of
analyze and report (issue #16's target for the quickstart: at most 0.15). ``no-op run`` is the
wall time of ``python -m privdyn run`` in a fresh process on the finished run, which has nothing
left to do: it checks every artifact and rebuilds nothing (always measured on the temporary run;
with ``--run``, only when ``--noop`` is given, since a stale artifact would be remade).
``--one-process`` analyses and reports a copy of the run again, in a fresh process with
``analysis.workers=1`` (everything in that process, as before there were workers), and prints
both shares and the ratio of the bookkeeping seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("train", "score", "analyze", "report")


def split(manifest: dict) -> dict[str, float]:
    """Seconds per stage, and the train stage's own split, from a run's manifest."""
    st = manifest["stages"]
    out = {s: float(st[s]["seconds"]) for s in STAGES if s in st and "seconds" in st[s]}
    train = st.get("train", {})
    for key in ("train_seconds", "eval_seconds"):
        if key in train:
            out[key] = float(train[key])
    return out


def noop_seconds(run_dir: Path) -> float:
    """Wall seconds of ``privdyn run`` on a finished run, in a fresh process (imports included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "privdyn", "run", str(run_dir / "config.yaml"), "--out", str(run_dir)],
                   check=True, capture_output=True)
    return time.perf_counter() - t


def one_process_seconds(run_dir: Path, scratch: Path) -> dict[str, float]:
    """Stage seconds of the analyze and report stages redone on a copy of the run in a fresh
    process with ``analysis.workers=1``."""
    copy = scratch / "one-process"
    shutil.copytree(run_dir, copy)
    for folder in ("analysis", "report"):
        shutil.rmtree(copy / folder, ignore_errors=True)
    (copy / "summary.json").unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "privdyn", "run", str(copy / "config.yaml"), "--out", str(copy),
                    "--no-progress", "--set", "analysis.workers=1"], check=True, capture_output=True)
    return split(json.loads((copy / "manifest.json").read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", default=None, help="a YAML config (default: the quickstart)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, as in privdyn run")
    ap.add_argument("--run", type=Path, default=None, help="a finished run directory to read instead")
    ap.add_argument("--noop", action="store_true", help="with --run: also time a no-op privdyn run on it")
    ap.add_argument("--one-process", action="store_true",
                    help="also redo analyze + report on a copy with analysis.workers=1 (the baseline)")
    args = ap.parse_args()
    noop, baseline = None, None
    if args.run is None:
        from privdyn.config import load_config
        from privdyn.pipeline import run_all

        cfg = load_config(args.config, args.overrides)
        with tempfile.TemporaryDirectory() as tmp:
            run, _ = run_all(cfg, Path(tmp) / "run", progress=False)
            manifest = json.loads(run.manifest_path.read_text())
            noop = noop_seconds(run.path)
            baseline = one_process_seconds(run.path, Path(tmp)) if args.one_process else None
    else:
        manifest = json.loads((args.run / "manifest.json").read_text())
        noop = noop_seconds(args.run) if args.noop else None
        if args.one_process:
            with tempfile.TemporaryDirectory() as tmp:
                baseline = one_process_seconds(args.run, Path(tmp))
    times = split(manifest)
    total = sum(times.get(s, 0.0) for s in STAGES)
    for s in STAGES:
        if s in times:
            print(f"{s:8s} {times[s]:8.1f} s  {times[s] / total:6.1%}")
    if "train_seconds" in times:
        rest = times["train"] - times["train_seconds"] - times["eval_seconds"]
        print(f"  of train: updates {times['train_seconds']:.1f} s, evaluation {times['eval_seconds']:.1f} s, "
              f"the rest (data, assembly, start-up) {rest:.1f} s")
    print(f"total    {total:8.1f} s")
    books = times.get("analyze", 0.0) + times.get("report", 0.0)
    print(f"bookkeeping: {books / total:.2f}")
    if baseline is not None:
        base = baseline["analyze"] + baseline["report"]
        base_total = total - books + base
        print(f"one process: analyze {baseline['analyze']:.1f} s, report {baseline['report']:.1f} s, "
              f"bookkeeping {base / base_total:.2f} (same training); workers take {books / base:.2f} of its time")
    if noop is not None:
        print(f"no-op run: {noop:.1f} s (a fresh process on the finished run)")


if __name__ == "__main__":
    main()
