import numpy as np
import pytest

from privdyn.data import load_dataset


@pytest.mark.parametrize("n_pool,n_test", [(1296, 497), (8000, 2000), (10, 3)])
def test_mnist1d_gives_exactly_the_requested_sizes(n_pool, n_test):
    ds = load_dataset("mnist1d", n_pool, n_test, seed=0)
    assert ds.x_pool.shape == (n_pool, 1, 40) and len(ds.y_pool) == n_pool
    assert ds.x_test.shape == (n_test, 1, 40) and len(ds.y_test) == n_test
    assert set(np.unique(ds.y_pool)) <= set(range(10))


def test_mnist1d_is_generated_once_per_process_and_handed_out_as_copies(monkeypatch):
    """A sweep's runs share their data: the second load of the same MNIST-1D reuses the
    generated arrays (no second make_dataset call) and gives the same dataset; a different
    generator seed generates anew; what a caller gets can be changed without touching the
    next caller's data."""
    import mnist1d.data

    from privdyn.data import builtin

    calls = []
    make = mnist1d.data.make_dataset
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda args: calls.append(args.seed) or make(args))
    builtin._mnist1d.cache_clear()
    a = load_dataset("mnist1d", 200, 100, 0)
    b = load_dataset("mnist1d", 200, 100, 0)
    assert calls == [42]
    for name in ("x_pool", "y_pool", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    a.y_pool[:] = -1
    a.x_pool[:] = 0
    c = load_dataset("mnist1d", 200, 100, 0)
    np.testing.assert_array_equal(c.y_pool, b.y_pool)
    np.testing.assert_array_equal(c.x_pool, b.x_pool)
    load_dataset("mnist1d", 200, 100, 0, options={"seed": 7})
    assert calls == [42, 7]
    builtin._mnist1d.cache_clear()
