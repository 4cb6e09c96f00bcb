"""count_below (the core's batched searchsorted) against a plain double loop, with ties and +inf."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.attacks import base


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.integers(1, 80), st.integers(1, 80), st.integers(0, 2**31 - 1), st.booleans())
def test_count_below_matches_a_loop(rows, k, j, seed, pairwise):
    rng = np.random.default_rng(seed)
    pop = rng.integers(-3, 4, size=(rows, k)).astype(float)  # small integers: many ties
    pop[rng.uniform(size=pop.shape) < 0.2] = np.inf
    values = rng.integers(-4, 5, size=(rows, j)).astype(float)
    limit = base.PAIRWISE_LIMIT
    try:
        base.PAIRWISE_LIMIT = 10**9 if pairwise else 0  # both code paths
        got = base.count_below(pop, values)
    finally:
        base.PAIRWISE_LIMIT = limit
    want = np.array([[sum(p < v for p in pop[r]) for v in values[r]] for r in range(rows)])
    np.testing.assert_array_equal(got, want)
