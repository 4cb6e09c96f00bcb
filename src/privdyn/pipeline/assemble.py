"""``privdyn assemble RUN``: a recorded run's signals assembled, then scored, analysed and reported.

The recorded files (``privdyn.Recorder``) hold everything the signal arrays need, so this needs
no dataset; the analysis that follows is the same as for any run.
"""

from __future__ import annotations

from pathlib import Path

from privdyn.store.rundir import RunDir
from privdyn.training.recorder import assemble_recorded, recorded_config


def assemble(run_dir: str | Path, analysis: bool = True, report: bool = True,
             progress: bool = True) -> tuple[RunDir, Path | None]:
    """Assemble the recorded run ``run_dir`` (idempotent), then, with ``analysis``, score and analyse it
    and (with ``report``) write its HTML report. Returns the run directory and the report's path
    (None when no report was written)."""
    from privdyn import pipeline

    run = RunDir(run_dir)
    cfg = recorded_config(run)
    with run.locked():
        assemble_recorded(run)
        if not analysis:
            return run, None
        pipeline.train(cfg, run, progress)  # only checks, for a recorded run: the signals are current
        pipeline.score(cfg, run, progress=progress)
        pipeline.analyze(cfg, run)
        return run, pipeline.report(cfg, run) if report else None
