"""The analysis core: the vulnerability plane, population dynamics, difficulty and model-level metrics."""
