"""Storage of run directories: atomic writes, checksums, zarr checkpoint arrays, provenance and ``open_run``."""
