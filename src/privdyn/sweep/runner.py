"""Run every point of a sweep: skip finished runs, resume interrupted ones, survive failures.

Layout of a sweep folder::

    OUT/sweep.yaml                 the sweep file with its base inlined
    OUT/manifest.json              per point: values, run directory, status, seconds, error; its
                                   ``"format": "privdyn-sweep"`` marks the folder as a sweep's own
    OUT/runs/SLUG/                 one ordinary run directory per point
    OUT/errors/SLUG.txt            the traceback of a point that failed on an unexpected error
    OUT/comparison.{parquet,csv,md}, OUT/comparison_agg.{parquet,csv}, OUT/report/ (tables.py)

A sweep writes only into a new or empty folder, or into a folder that an earlier sweep wrote
(recognised by its manifest.json, :func:`read_sweep_manifest`): anything else is refused before
a file is written, so no file of the user's is overwritten.
"""

from __future__ import annotations

import fnmatch
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privdyn.config import ANALYZE_SECTIONS, SCORE_SECTIONS, TRAIN_SECTIONS, RunConfig
from privdyn.errors import PrivdynError
from privdyn.store import atomic, folders
from privdyn.store.rundir import RunDir, versions
from privdyn.sweep.spec import Sweep, SweepPoint

#: ``OUT/manifest.json``'s ``format``: what tells a sweep folder privdyn wrote from any other folder.
SWEEP_FORMAT = "privdyn-sweep"
#: The keys of a manifest written before ``format`` was recorded (accepted so old sweeps resume).
_LEGACY_KEYS = frozenset({"name", "created", "versions", "varying", "points"})


def _is_sweep_manifest(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("points"), dict):
        return False
    entries = data["points"].values()
    if not all(isinstance(e, dict) and isinstance(e.get("run_dir"), str) and "status" in e for e in entries):
        return False
    if data.get("format") == SWEEP_FORMAT:
        return True
    return ("format" not in data and set(data) >= _LEGACY_KEYS and isinstance(data["versions"], dict)
            and "privdyn" in data["versions"] and isinstance(data["varying"], list)
            and all(e["run_dir"].startswith("runs/") for e in entries))


def read_sweep_manifest(out: Path) -> dict[str, Any] | None:
    """``out/manifest.json`` when it is a sweep manifest privdyn wrote, else None (missing, not
    JSON, or another manifest, such as a run directory's)."""
    path = out / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if _is_sweep_manifest(data) else None


def prepare_folder(out: Path) -> dict[str, Any]:
    """Make sure ``out`` may be written by a sweep and create it; the earlier manifest when it has one.

    A new folder, an empty one, or one an earlier sweep wrote (its manifest.json is a sweep
    manifest) is used; anything else raises :class:`PrivdynError` before a file is written.
    """
    old = read_sweep_manifest(out) if out.is_dir() else None
    folders.claim(out, old is not None, "The sweep folder", "its comparison tables, report/ and runs/",
                  "a folder that privdyn sweep wrote (it has no manifest.json written by a sweep)",
                  "Give --out a new or empty folder, or the folder of an earlier run of a sweep to resume it. "
                  "Nothing was written.")
    return old or {}


def refuse_retrained_points(points: list[SweepPoint], out: Path) -> None:
    """One :class:`PrivdynError`, before anything is written, when a point's existing run directory
    was trained with another setup (the sweep's base or the point changed a training key since):
    every such point would fail alike, and the folder's earlier tables would be overwritten."""
    def trained_otherwise(point: SweepPoint) -> bool:
        path = run_dir_of(out, point)
        try:
            return path.is_dir() and RunDir(path).trained_otherwise(point.config)
        except PrivdynError:
            return False  # a damaged manifest: the point itself reports it when it runs

    stale = [p.slug for p in points if trained_otherwise(p)]
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise PrivdynError(
            f"The sweep folder {out} holds {len(stale)} run(s) trained with a different training setup than "
            f"this sweep gives them ({shown}): the base config or a point changed the seed, dataset, model, "
            "training, checkpoints or queries since they ran, and reusing them would mix stale artifacts. Give "
            f"--out a new folder, or delete those run directories ({out / 'runs'}/SLUG) to train them again. "
            "Nothing was written.")


def run_dir_of(out: Path, point: SweepPoint) -> Path:
    """``OUT/runs/SLUG``, the run directory of ``point`` in the sweep folder ``out``."""
    return out / "runs" / point.slug


def is_finished(cfg: RunConfig, path: Path, with_report: bool = True) -> bool:
    """True when every stage of the run at ``path`` is done for exactly this config."""
    run = RunDir(path)
    if not run.intact(path / "summary.json"):
        return False
    analyze_hash = cfg.section_hash(*ANALYZE_SECTIONS)
    try:
        run.manifest()
    except PrivdynError:
        return False  # a damaged manifest: the point reruns and reports the problem
    return (run.stage_done("train", cfg.section_hash(*TRAIN_SECTIONS))
            and run.stage_done("score", cfg.section_hash(*SCORE_SECTIONS))
            and run.stage_done("analyze", analyze_hash)
            and (not with_report or run.stage_done("report", analyze_hash)))


@dataclass
class PointOutcome:
    """What this call did with one point, how many seconds it took and, when it failed, the error."""

    slug: str
    status: str  # done (ran now), skipped (finished before), failed
    seconds: float = 0.0
    error: str | None = None


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did with each selected point, in order; ``out`` is the sweep folder."""

    out: Path
    outcomes: list[PointOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[PointOutcome]:
        """The points that failed."""
        return [o for o in self.outcomes if o.status == "failed"]


def select_points(sweep: Sweep, patterns: list[str] | None) -> list[SweepPoint]:
    """The points whose slug matches any glob pattern (all points when none is given)."""
    if not patterns:
        return list(sweep.points)
    chosen = [p for p in sweep.points if any(fnmatch.fnmatchcase(p.slug, pat) for pat in patterns)]
    if not chosen:
        raise PrivdynError(f"--select {patterns} matches no point of sweep {sweep.spec.name}; "
                           f"its points are: {', '.join(p.slug for p in sweep.points)}")
    return chosen


class _Manifest:
    """OUT/manifest.json, rewritten atomically after every point so progress survives a crash."""

    def __init__(self, out: Path, sweep: Sweep, old: dict[str, Any]):
        self.path = out / "manifest.json"
        self.data: dict[str, Any] = {
            "format": SWEEP_FORMAT, "name": sweep.spec.name, "created": old.get("created", time.time()),
            "versions": versions(), "varying": sweep.varying, "points": {},
        }
        previous = old.get("points", {})
        for p in sweep.points:
            entry = dict(previous.get(p.slug, {"status": "pending"}))
            entry.update(values=p.values, run_dir=str(Path("runs") / p.slug))
            self.data["points"][p.slug] = entry

    def write(self) -> None:
        atomic.write_json(self.path, self.data)

    def update(self, slug: str, **entry: Any) -> None:
        self.data["points"][slug].update(entry)
        self.data["updated"] = time.time()
        self.write()


def _error_text(exc: BaseException, out: Path, slug: str) -> str:
    if isinstance(exc, PrivdynError):
        return str(exc)
    log = out / "errors" / f"{slug}.txt"
    atomic.write_text(log, "".join(traceback.format_exception(exc)))
    return f"{type(exc).__name__}: {exc} (traceback in {log})"


def run_sweep(sweep: Sweep, out: str | Path, select: list[str] | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> SweepOutcome:
    """Run the selected points in order; a failing point is recorded and the next one starts.

    ``out`` must be new, empty or an earlier sweep's folder (:func:`prepare_folder`).
    """
    from privdyn.pipeline import run_all

    out = Path(out)
    points = select_points(sweep, select)
    refuse_retrained_points(points, out)
    manifest = _Manifest(out, sweep, prepare_folder(out))
    manifest.write()  # first: from now on the folder is recognised as this sweep's own
    atomic.write_text(out / "sweep.yaml", sweep.resolved_yaml())
    result = SweepOutcome(out)
    for k, point in enumerate(points, 1):
        path = run_dir_of(out, point)
        head = f"[{k}/{len(points)}] {point.slug}"
        if is_finished(point.config, path, sweep.spec.run_reports):
            result.outcomes.append(PointOutcome(point.slug, "skipped"))
            manifest.update(point.slug, status="done", error=None)
            log(f"{head}: finished before, skipped")
            continue
        log(f"{head}: running")
        manifest.update(point.slug, status="running", started=time.time(), error=None)
        t0 = time.perf_counter()
        try:
            run_all(point.config, path, progress=progress, with_report=sweep.spec.run_reports)
        except KeyboardInterrupt:
            manifest.update(point.slug, status="interrupted", seconds=round(time.perf_counter() - t0, 3))
            raise
        except Exception as exc:  # noqa: BLE001 -- one failing point must not stop the sweep
            seconds = time.perf_counter() - t0
            text = _error_text(exc, out, point.slug)
            result.outcomes.append(PointOutcome(point.slug, "failed", seconds, text))
            manifest.update(point.slug, status="failed", seconds=round(seconds, 3), error=text)
            log(f"{head}: FAILED after {seconds:.0f} s: {text}")
            continue
        seconds = time.perf_counter() - t0
        result.outcomes.append(PointOutcome(point.slug, "done", seconds))
        manifest.update(point.slug, status="done", seconds=round(seconds, 3), finished=time.time())
        log(f"{head}: done in {seconds:.0f} s")
    return result
