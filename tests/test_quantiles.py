"""``linear_quantiles`` is ``np.quantile`` bit for bit: on random, tied, float32, masked and
presorted inputs, on the fast path (large inputs, top levels) and on its fallback, and for
NaN, infinities, the levels 0 and 1 and empty selections."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.analysis import quantiles
from privdyn.analysis.quantiles import linear_quantiles

LEVELS = [0.0, 1e-4, 0.001, 0.01, 0.05, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0]


def expected(values: np.ndarray, qs: list[float], where: np.ndarray | None = None) -> np.ndarray:
    v = values if where is None else values[np.broadcast_to(where, values.shape)]
    return np.quantile(v.astype(np.float64), np.asarray(qs, dtype=np.float64))


@settings(max_examples=150, deadline=None)
@given(m=st.integers(1, 8), n=st.integers(1, 60), seed=st.integers(0, 10**6), decimals=st.sampled_from([None, 1, 0]),
       f32=st.booleans(), masked=st.booleans(), qs=st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4))
def test_equals_numpy_on_small_inputs(m, n, seed, decimals, f32, masked, qs):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(m, n))
    v = v if decimals is None else np.round(v, decimals)
    v = v.astype(np.float32) if f32 else v
    where = rng.random((m, n)) < 0.5 if masked else None
    if where is not None and not where.any():
        where[0, 0] = True
    np.testing.assert_array_equal(linear_quantiles(v, qs, where=where), expected(v, qs, where))
    sel = np.sort((v if where is None else v[where]).astype(np.float64), axis=None)
    np.testing.assert_array_equal(linear_quantiles(sel, qs, presorted=True), expected(v, qs, where))


@pytest.mark.parametrize("decimals", [None, 2])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_equals_numpy_on_the_fast_path(decimals, dtype, monkeypatch):
    """Inputs large enough for the subsample bound (n > 4 x 16,384), top levels (FPR thresholds):
    the selection runs over the top values only."""
    rng = np.random.default_rng(3)
    v = rng.standard_t(3, size=(64, 5000))
    v = (v if decimals is None else np.round(v, decimals)).astype(dtype)
    z = rng.random(v.shape) < 0.5
    qs = [0.999, 0.99, 0.9, 0.8]
    assert quantiles._TOP_SHARE * (~z).sum() > (1 - 0.8) * (~z).sum()  # every level takes the fast path
    sizes = []
    partition = np.partition
    monkeypatch.setattr(np, "partition", lambda a, k: sizes.append(a.size) or partition(a, k))
    got, got_all = linear_quantiles(v, qs, where=~z), linear_quantiles(v, qs)
    monkeypatch.undo()
    np.testing.assert_array_equal(got, expected(v, qs, ~z))
    np.testing.assert_array_equal(got_all, expected(v, qs))
    assert max(sizes) < 0.3 * v.size  # the subsample and the kept top, never everything


def test_a_misleading_subsample_falls_back_to_the_full_selection(monkeypatch):
    """Every strided entry is the largest value, so the bound keeps too few values: the count
    check must notice and select among all of them (numpy's answer either way)."""
    rng = np.random.default_rng(4)
    v = rng.normal(size=200_000)
    stride = max(1, v.size // quantiles._SAMPLE)
    v[::stride] = 1e9
    calls = []
    partition = np.partition
    monkeypatch.setattr(np, "partition", lambda a, k: calls.append(a.size) or partition(a, k))
    qs = [0.8]  # the top 20%: more values than the subsample holds
    np.testing.assert_array_equal(linear_quantiles(v, qs), expected(v, qs))
    assert calls[-1] == v.size  # the last selection ran over everything


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf - inf, in numpy too
def test_nan_infinities_and_edges_match_numpy():
    rng = np.random.default_rng(5)
    v = rng.normal(size=(8, 20000))
    v[0, :5] = np.inf
    v[1, :3] = -np.inf
    for qs in ([0.0], [1.0], [0.5, 0.999, 1.0], [0.9999]):
        np.testing.assert_array_equal(linear_quantiles(v, qs), expected(v, qs))
    v[2, 7] = np.nan
    np.testing.assert_array_equal(linear_quantiles(v, [0.5, 0.99]), [np.nan, np.nan])
    np.testing.assert_array_equal(linear_quantiles(np.sort(v, axis=None), [0.5], presorted=True), [np.nan])
    where = np.ones(v.shape, dtype=bool)
    where[2, 7] = False  # the NaN is not selected: no NaN in the answer
    np.testing.assert_array_equal(linear_quantiles(v, [0.99], where=where), expected(v, [0.99], where))


def test_bad_levels_and_empty_selections_raise_like_numpy():
    with pytest.raises(ValueError, match="range"):
        linear_quantiles(np.arange(5.0), [1.5])
    with pytest.raises((ValueError, IndexError)):
        linear_quantiles(np.arange(5.0), [0.5], where=np.zeros(5, dtype=bool))
    assert linear_quantiles(np.arange(5.0), []).shape == (0,)
