"""privdyn: how membership-inference privacy risk emerges, sample by sample, during training."""

__version__ = "0.1.0"

from privdyn.store.api import Run, Tables, open_run  # noqa: E402

__all__ = ["Run", "Tables", "__version__", "open_run"]
