"""privdyn: how membership-inference privacy risk emerges, sample by sample, during training."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["AuditResult", "ImportResult", "Monitor", "MonitorCallback", "PrivdynCallback", "Recipe", "Recorder", "Run",
           "Tables", "__version__", "assemble", "audit", "export_logits", "import_logits", "import_weights", "monitor",
           "open_run"]

#: Public names by the module that defines them (imported on first use).
_LAZY = {"Run": "privdyn.store.api", "Tables": "privdyn.store.api", "open_run": "privdyn.store.api",
         "audit": "privdyn.pipeline.custom", "AuditResult": "privdyn.pipeline.custom",
         "Recipe": "privdyn.training.custom",
         "Recorder": "privdyn.training.recorder", "import_weights": "privdyn.training.recorder",
         "PrivdynCallback": "privdyn.training.lightning", "assemble": "privdyn.pipeline.assemble",
         "import_logits": "privdyn.ingest.api", "ImportResult": "privdyn.ingest.api",
         "export_logits": "privdyn.ingest.export",
         "Monitor": "privdyn.training.monitor", "monitor": "privdyn.training.monitor",
         "MonitorCallback": "privdyn.training.lightning"}


def __getattr__(name: str) -> Any:
    """``privdyn.open_run``, ``privdyn.audit`` and the other entry points, imported on first use:
    importing a core module (``privdyn.attacks``, ``privdyn.analysis``) then loads no I/O layer,
    and ``PrivdynCallback`` needs Lightning only when it is used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'privdyn' has no attribute {name!r}")
