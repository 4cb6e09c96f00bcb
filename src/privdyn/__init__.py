"""privdyn: how membership-inference privacy risk emerges, sample by sample, during training."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["AuditResult", "Recipe", "Run", "Tables", "__version__", "audit", "open_run"]

#: Public names by the module that defines them (imported on first use).
_LAZY = {"Run": "privdyn.store.api", "Tables": "privdyn.store.api", "open_run": "privdyn.store.api",
         "audit": "privdyn.pipeline.custom", "AuditResult": "privdyn.pipeline.custom",
         "Recipe": "privdyn.training.custom"}


def __getattr__(name: str) -> Any:
    """``privdyn.open_run`` and friends, imported on first use: importing a core module
    (``privdyn.attacks``, ``privdyn.analysis``) then loads no I/O layer."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'privdyn' has no attribute {name!r}")
