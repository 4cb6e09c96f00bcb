"""Import logits of models trained elsewhere into a run directory, and export a run's logits.

Two layouts are read and written (docs/import.md): the LiRA reference code's experiment folders
(:mod:`privdyn.ingest.lira`) and a generic one of plain ``.npy`` arrays
(:mod:`privdyn.ingest.generic`). An import validates everything first
(:mod:`privdyn.ingest.validate`), then streams one checkpoint at a time through
``signals_from_logits`` into the run's signal arrays (:mod:`privdyn.ingest.writer`), so that
score, analyze and report run on it unchanged. :func:`privdyn.ingest.api.import_logits` is the
entry point; :func:`privdyn.ingest.export.export_logits` writes a run's stored logits back out.

This package sits above the pipeline (it runs the later stages); nothing below imports it.
"""

from __future__ import annotations

LAYOUTS = ("lira", "generic")
