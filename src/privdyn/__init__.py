"""privdyn: how membership-inference privacy risk emerges, sample by sample, during training."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Run", "Tables", "__version__", "open_run"]


def __getattr__(name: str) -> Any:
    """``privdyn.open_run`` and friends, imported on first use: importing a core module
    (``privdyn.attacks``, ``privdyn.analysis``) then loads no I/O layer."""
    if name in ("Run", "Tables", "open_run"):
        from privdyn.store import api

        return getattr(api, name)
    raise AttributeError(f"module 'privdyn' has no attribute {name!r}")
