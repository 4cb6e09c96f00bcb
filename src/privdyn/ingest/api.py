"""``privdyn import`` as a function: read and check a source, write it into a run directory, then run
score, analyze and report through the pipeline."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privdyn.config import TRAIN_SECTIONS, RunConfig
from privdyn.errors import PrivdynError
from privdyn.ingest import LAYOUTS
from privdyn.ingest.configure import import_config
from privdyn.ingest.fingerprint import fingerprint
from privdyn.ingest.source import LogitSource
from privdyn.ingest.validate import membership_stats
from privdyn.ingest.writer import is_imported, write_import
from privdyn.store.rundir import LOCK_NAME, RunDir


def read_source(path: str | Path, layout: str) -> LogitSource:
    """Read and check the source folder ``path`` in ``layout`` (``lira`` or ``generic``); no logits are
    loaded yet, but every shape, label, epoch and the membership are checked."""
    from privdyn.ingest.generic import read_generic
    from privdyn.ingest.lira import read_lira

    if layout not in LAYOUTS:
        raise PrivdynError(f"--layout {layout!r} is not one of {', '.join(LAYOUTS)} (docs/import.md describes both).")
    path = Path(path)
    if not path.is_dir():
        raise PrivdynError(f"{path} is not a folder: SOURCE is the folder that holds the {layout} layout's files "
                           "(docs/import.md).")
    return read_lira(path) if layout == "lira" else read_generic(path)


@dataclass
class ImportResult:
    """What :func:`import_logits` did: the run, its config, whether anything was written (False: the run
    already held this import), the warnings, the train stage's record, and the summary and report
    when the analysis ran."""

    run: RunDir
    config: RunConfig
    imported: bool
    warnings: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    report: Path | None = None


def _conflicts(run: RunDir, cfg: RunConfig) -> bool:
    """True when ``run`` holds training artifacts made from other files or settings than ``cfg``."""
    old = run.manifest().get("train_hash")
    return old not in (None, cfg.section_hash(*TRAIN_SECTIONS)) and run.has_training_artifacts()


def _clear(run: RunDir) -> None:
    """Delete everything in a run directory but its lock (``--force``)."""
    for p in run.path.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def import_logits(source: str | Path, layout: str, out: str | Path | None = None, *, name: str | None = None,
                  queries: list[str] | None = None, attacks: list[str] | None = None,
                  overrides: list[str] | None = None, force: bool = False, analysis: bool = True,
                  report: bool = True, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> ImportResult:
    """Import the logits at ``source`` (``layout`` lira or generic) into the run directory ``out``
    (default: ``runs/NAME``).

    Everything is checked before anything is written; the signals are computed one checkpoint at a
    time. Re-importing the same files into the same run does nothing; other files are refused unless
    ``force``. Unless ``analysis`` is False, score and analyze follow (and the report, unless
    ``report`` is False). ``queries`` names the Q augmentations, ``attacks`` replaces the default
    attacks, ``overrides`` are ``key=value`` config settings (seed, analysis.*). ``log`` receives
    progress lines and warnings (default: printed to stderr).
    """
    say = log or _stderr
    src = read_source(source, layout)  # before the pipeline (and torch) load: a bad source fails fast
    warnings = membership_stats(src.membership).warnings()
    for w in warnings:
        say(f"warning: {w}")
    cfg = import_config(src, fingerprint(src.path, src.files), name, queries, attacks, overrides)
    run = RunDir(out if out is not None else Path("runs") / cfg.name)
    checked = False
    if not run.is_run():  # a new run: check the values before the folder is made
        src.check_values()
        checked = True
    with run.locked():
        conflict = _conflicts(run, cfg)
        if conflict and not force:
            raise PrivdynError(f"{run.path} already holds a run made from other files or settings (another "
                               "source, other contents, queries or seed), so importing into it would mix stale "
                               "artifacts. Choose a new --out directory, or pass --force to delete that run and "
                               "import anew.")
        from privdyn import pipeline  # loads torch: only once the source and the run directory are checked

        imported = conflict or not is_imported(cfg, run, src.test is not None)
        if imported:
            if not checked:
                src.check_values()  # before anything of the old run is touched
            if conflict:
                _clear(run)
            run.init(cfg)
            say(f"importing {src.describe()}")
            T, done = src.shape[0], [0]

            def tick() -> None:
                done[0] += 1
                if progress:
                    say(f"  checkpoint {done[0]}/{T} (epoch {int(src.epochs[done[0] - 1])})")

            record = write_import(src, cfg, run, tick)
        else:
            run.init(cfg)  # the same import; later sections (attacks, analysis) may have changed
            say(f"{run.path} already holds this import (the same files, every artifact intact): nothing to write")
            record = dict(run.manifest()["stages"]["train"])
        pipeline.train(cfg, run, progress=False)  # only checks: the signals are current
        result = ImportResult(run, cfg, imported, warnings, record)
        if analysis:
            pipeline.score(cfg, run, progress=progress)
            result.summary = pipeline.analyze(cfg, run) or _read_summary(run)
            if report:
                result.report = pipeline.report(cfg, run)
    return result


def _stderr(line: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(line, markup=False, highlight=False, soft_wrap=True)


def _read_summary(run: RunDir) -> dict[str, Any]:
    from privdyn.store import atomic

    return dict(atomic.read_json(run.summary_path))
