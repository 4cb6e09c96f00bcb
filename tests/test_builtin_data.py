import numpy as np
import pytest

from privdyn.data import load_dataset


@pytest.mark.parametrize("n_pool,n_test", [(1296, 497), (8000, 2000), (10, 3)])
def test_mnist1d_gives_exactly_the_requested_sizes(n_pool, n_test):
    ds = load_dataset("mnist1d", n_pool, n_test, seed=0)
    assert ds.x_pool.shape == (n_pool, 1, 40) and len(ds.y_pool) == n_pool
    assert ds.x_test.shape == (n_test, 1, 40) and len(ds.y_test) == n_test
    assert set(np.unique(ds.y_pool)) <= set(range(10))
