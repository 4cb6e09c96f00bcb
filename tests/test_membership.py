import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.training.membership import balanced_membership


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 16).map(lambda k: 2 * k), n=st.integers(1, 200).map(lambda k: 2 * k),
       seed=st.integers(0, 2**31))
def test_balanced_membership_invariants(m, n, seed):
    z = balanced_membership(m, n, seed)
    assert z.dtype == bool and z.shape == (m, n)
    assert (z.sum(axis=0) == m // 2).all()  # every sample IN for exactly half the models
    assert (z.sum(axis=1) == n // 2).all()  # every model trains on exactly half the pool
    assert (z[0::2] ^ z[1::2]).all()  # complementary pairs


def test_membership_is_seeded_and_varies_with_seed():
    a, b, c = balanced_membership(8, 100, 1), balanced_membership(8, 100, 1), balanced_membership(8, 100, 2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[0], a[2])  # pairs are drawn independently


@pytest.mark.parametrize("m,n", [(3, 10), (4, 11)])
def test_membership_rejects_odd_sizes(m, n):
    with pytest.raises(ValueError, match="even"):
        balanced_membership(m, n, 0)
