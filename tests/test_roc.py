"""The one ROC AUC, OUT-quantile threshold and TPR at fixed FPR, against plain loops.

The AUC is exact (twice the Mann-Whitney U in integers, one rounding), so it is compared with
``==`` to a double loop over (IN, OUT) pairs; the threshold is numpy's linear quantile, written
out on a sorted Python list.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.analysis.model_level import (
    fpr_threshold,
    global_auc,
    global_metrics,
    rank_counts,
    roc_auc_and_balanced_accuracy,
    tpr_at_fpr,
)
from privdyn.analysis.plane import compute_plane, sample_auc, threshold


def auc_loop(ins, outs):
    """Share of (IN, OUT) pairs with the IN score higher, ties 1/2, rounded once."""
    twice_u = sum(2 * (a > b) + (a == b) for a in ins for b in outs)
    return twice_u / (2 * len(ins) * len(outs))


def quantile_loop(values, q):
    """Numpy's ``method="linear"`` quantile on a sorted list (its virtual index and lerp)."""
    v = sorted(float(x) for x in values)
    h = (len(v) - 1) * q
    lo = math.floor(h)
    a, b = v[lo], v[min(lo + 1, len(v) - 1)]
    frac = h - lo
    return b - (b - a) * (1 - frac) if frac >= 0.5 else a + (b - a) * frac


def tpr_loop(ins, outs, alpha):
    tau = quantile_loop(outs, 1.0 - alpha)
    return sum(a > tau for a in ins) / len(ins)


def random_case(m, n, seed, decimals):
    rng = np.random.default_rng(seed)
    z = rng.random((m, n)) < 0.5
    z[0, 0], z[1, 0] = True, False  # at least one IN and one OUT pair
    s = rng.normal(size=(m, n)) + z * rng.uniform(0, 2) + rng.normal(size=(1, n))
    return (s if decimals is None else np.round(s, decimals)), z


@settings(max_examples=60, deadline=None)
@given(m=st.integers(2, 9), n=st.integers(1, 30), seed=st.integers(0, 10**6),
       decimals=st.sampled_from([None, 1, 0]))
def test_auc_equals_the_pair_loop(m, n, seed, decimals):
    s, z = random_case(m, n, seed, decimals)
    expected = auc_loop(s[z].tolist(), s[~z].tolist())
    assert global_auc(s, z) == expected
    assert roc_auc_and_balanced_accuracy(s, z)[0] == expected
    with np.errstate(invalid="ignore"):
        per_sample = sample_auc(s, z)
    for i in range(n):
        ins, outs = s[z[:, i], i].tolist(), s[~z[:, i], i].tolist()
        if ins and outs:
            assert per_sample[i] == auc_loop(ins, outs)
        else:
            assert np.isnan(per_sample[i])  # no IN or no OUT model: undefined


@pytest.mark.parametrize(("ins", "outs", "expected"), [
    ([1.0, 1.0, 1.0], [1.0, 1.0], 0.5),  # all tied
    ([0.3], [0.3], 0.5),  # one pair, tied
    ([0.0], [-0.0], 0.5),  # signed zeros are one score
    ([2.0, 3.0], [0.0, 1.0], 1.0),  # separated
    ([0.0, 1.0], [2.0, 3.0], 0.0),  # separated the wrong way
    ([1.0, 1.0, 2.0], [1.0, 0.0], 5 / 6),  # ties at one end
    ([5.0], [5.0, 5.0, 5.0, 4.0], 0.625),
])
def test_auc_degenerate_inputs(ins, outs, expected):
    s = np.array(ins + outs)
    z = np.arange(s.size) < len(ins)
    assert auc_loop(ins, outs) == expected
    assert global_auc(s, z) == expected
    assert roc_auc_and_balanced_accuracy(s, z)[0] == expected
    assert sample_auc(s[:, None], z[:, None])[0] == expected
    for order in (np.argsort(s), np.argsort(-s, kind="stable"), np.arange(s.size)[::-1]):
        assert global_auc(s[order], z[order]) == expected  # the input order does not matter


def test_all_tied_plane_and_global():
    z = np.arange(8)[:, None] < np.array([4, 1, 7])
    s = np.full(z.shape, 0.25)
    assert global_auc(s, z) == 0.5
    np.testing.assert_array_equal(compute_plane(s[None], z, "fpr:0.1").auc[0], [0.5, 0.5, 0.5])
    assert roc_auc_and_balanced_accuracy(s, z) == (0.5, 0.5)


def test_rank_counts_are_strictly_below_the_tie_group():
    r = rank_counts(np.array([2.0, 1.0, 2.0, 0.0, 2.0]), np.array([True, False, False, True, True]))
    # ascending: 0.0 (IN), 1.0 (OUT), then the tie group 2.0 x3 (two IN, one OUT, in any order)
    assert r.member[:2].tolist() == [True, False] and r.member[2:].sum() == 2
    np.testing.assert_array_equal(r.in_below, [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(r.out_below, [0, 0, 1, 1, 1])
    assert r.auc == auc_loop([2.0, 0.0, 2.0], [1.0, 2.0])


@settings(max_examples=60, deadline=None)
@given(m=st.integers(2, 9), n=st.integers(1, 40), seed=st.integers(0, 10**6),
       decimals=st.sampled_from([None, 1, 0]), alpha=st.sampled_from([0.001, 0.01, 0.1, 0.3, 0.5, 0.9]))
def test_threshold_and_tpr_equal_the_sorted_list(m, n, seed, decimals, alpha):
    s, z = random_case(m, n, seed, decimals)
    ins, outs = s[z].tolist(), s[~z].tolist()
    tau = quantile_loop(outs, 1.0 - alpha)
    assert fpr_threshold(s, z, alpha) == tau
    assert threshold(s, z, f"fpr:{alpha}") == tau
    assert tpr_at_fpr(s, z, alpha) == tpr_loop(ins, outs, alpha)


def test_threshold_edge_cases():
    z = np.array([True, False, True])
    s = np.array([3.0, 1.0, 0.5])
    assert fpr_threshold(s, z, 0.5) == 1.0  # a single OUT score is its own quantile
    assert tpr_at_fpr(s, z, 0.5) == 0.5
    assert threshold(s, z, "score:0.75") == 0.75
    s = np.array([5.0, 5.0, 5.0, 5.0])
    z = np.array([True, False, True, False])
    assert fpr_threshold(s, z, 0.01) == 5.0 and tpr_at_fpr(s, z, 0.01) == 0.0  # ties: nothing above


@settings(max_examples=60, deadline=None)
@given(m=st.integers(2, 9), n=st.integers(1, 30), seed=st.integers(0, 10**6),
       decimals=st.sampled_from([None, 1, 0]), dtype=st.sampled_from(["float32", "float64", "float32 as float64"]))
def test_global_metrics_equal_the_loops(m, n, seed, decimals, dtype):
    # the merge's counts against the pair loop, a threshold loop for balanced accuracy (every
    # distinct score, flag s >= c) and the sorted-list quantile; float32 scores as stored, and
    # as the store reads them (float64 holding float32 values, which are sorted as float32)
    s, z = random_case(m, n, seed, decimals)
    s = s.astype(np.float32).astype(np.float64) if dtype == "float32 as float64" else s.astype(dtype)
    ins, outs = s[z].astype(float).tolist(), s[~z].astype(float).tolist()
    alphas = [0.001, 0.01, 0.1, 0.5]
    g = global_metrics(s, z, alphas)
    assert g.auc == auc_loop(ins, outs)
    best = max([0.5, *(0.5 * (sum(a >= c for a in ins) / len(ins) + sum(b < c for b in outs) / len(outs))
                       for c in set(ins + outs))])
    assert g.balanced_accuracy == pytest.approx(best, abs=1e-12)
    assert g.tpr_at_fpr.tolist() == [tpr_loop(ins, outs, a) for a in alphas]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_global_metrics_refuse_non_finite_scores(bad):
    s = np.array([[0.1, bad], [0.3, 0.4]])
    with pytest.raises(ValueError, match="not finite"):
        global_metrics(s, np.array([[True, False], [False, True]]), [0.1])
