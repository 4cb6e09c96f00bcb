"""Model-level metrics of an attack: balanced accuracy and the sample bootstrap of TPR at fixed FPR."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.analysis.model_level import (
    balanced_accuracy,
    bootstrap_weights,
    checkpoint_metrics,
    global_metrics,
    pairs_of,
    percentile_ci,
    tpr_at_fpr,
    tpr_at_fpr_boot,
)
from privdyn.training.membership import balanced_membership


def scores_and_membership(M=8, N=300, seed=0, decimals=None, balanced=True):
    rng = np.random.default_rng(seed)
    z = balanced_membership(M, N, seed) if balanced else rng.random((M, N)) < 0.5
    s = rng.normal(size=(M, N)) + 1.2 * z + rng.normal(size=(1, N))
    return (s if decimals is None else np.round(s, decimals)), z


def boot_loop(s, z, alpha, weights):
    """Each replicate built explicitly: sample i (all its models) repeated weights[i, b] times."""
    out = []
    for b in range(weights.shape[1]):
        idx = np.repeat(np.arange(s.shape[1]), weights[:, b])
        out.append(tpr_at_fpr(s[:, idx], z[:, idx], alpha))
    return np.array(out)


@pytest.mark.parametrize("decimals", [None, 1])
@pytest.mark.parametrize("balanced", [True, False])
def test_bootstrap_matches_explicit_replicates(decimals, balanced):
    s, z = scores_and_membership(decimals=decimals, balanced=balanced)
    w = bootstrap_weights(z.shape[1], 40, np.random.default_rng(3))
    alphas = [0.001, 0.01, 0.1, 0.5]
    got = tpr_at_fpr_boot(s, z, alphas, w)
    for row, a in enumerate(alphas):
        np.testing.assert_allclose(got[row], boot_loop(s, z, a, w), rtol=1e-12, atol=0)


def test_bootstrap_grows_the_tail_when_a_replicate_needs_it():
    s, z = scores_and_membership(M=4, N=2000, seed=1)
    w = bootstrap_weights(2000, 3, np.random.default_rng(0))
    low = np.argsort(s.max(axis=0))[:200]  # a replicate made of the 200 lowest-scoring samples
    w[:, 0] = 0
    w[low, 0] = 10
    np.testing.assert_allclose(tpr_at_fpr_boot(s, z, [0.01], w)[0], boot_loop(s, z, 0.01, w), rtol=1e-12)


def test_unit_weights_give_the_point_estimate():
    s, z = scores_and_membership(decimals=2)
    ones = np.ones((z.shape[1], 1), dtype=np.int32)
    for a in (0.001, 0.01, 0.2):
        assert tpr_at_fpr_boot(s, z, [a], ones)[0, 0] == tpr_at_fpr(s, z, a)


def test_bootstrap_weights_are_seeded_resamples():
    w = bootstrap_weights(50, 30, np.random.default_rng(5))
    assert w.shape == (50, 30) and (w.sum(axis=0) == 50).all() and (w >= 0).all()
    np.testing.assert_array_equal(w, bootstrap_weights(50, 30, np.random.default_rng(5)))
    # each sample is drawn with probability 1/n per draw: E[w] = 1
    assert abs(bootstrap_weights(200, 400, np.random.default_rng(6)).mean() - 1) < 1e-9


def balanced_accuracy_loop(s, z):
    s, z = s.ravel(), z.ravel()
    best = 0.5
    for c in np.unique(s):
        tpr = np.mean(s[z] >= c)
        tnr = np.mean(s[~z] < c)
        best = max(best, (tpr + tnr) / 2)
    return best


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([None, 0]), st.booleans())
def test_balanced_accuracy_matches_loop(seed, decimals, flip):
    s, z = scores_and_membership(M=4, N=20, seed=seed, decimals=decimals)
    s = -s if flip else s  # an attack worse than chance still has balanced accuracy >= 1/2
    assert balanced_accuracy(s, z) == pytest.approx(balanced_accuracy_loop(s, z), abs=1e-12)


def test_percentile_ci():
    v = np.random.default_rng(0).normal(size=1000)
    np.testing.assert_allclose(percentile_ci(v), np.percentile(v, [2.5, 97.5]), rtol=1e-12)
    np.testing.assert_allclose(percentile_ci(v, 0.9), np.percentile(v, [5, 95]), rtol=1e-12)


def test_checkpoint_metrics_columns_and_coverage():
    T, (s, z) = 3, scores_and_membership(M=16, N=2000, seed=2)
    scores = np.stack([s * (t + 1) / T for t in range(T)])
    out = checkpoint_metrics(scores, z, [0.001, 0.01], n_boot=100, seed=0)
    assert set(out) == {"auc", "balanced_accuracy"} | {f"tpr_at_fpr_{a}{x}" for a in ("0.001", "0.01")
                                                       for x in ("", "_ci_low", "_ci_high")}
    for a in ("0.001", "0.01"):
        lo, mid, hi = out[f"tpr_at_fpr_{a}_ci_low"], out[f"tpr_at_fpr_{a}"], out[f"tpr_at_fpr_{a}_ci_high"]
        assert (lo <= mid).all() and (mid <= hi).all() and (hi - lo < 0.2).all()
    again = checkpoint_metrics(scores, z, [0.001, 0.01], n_boot=100, seed=0)
    for k in out:
        np.testing.assert_array_equal(out[k], again[k])


@pytest.mark.parametrize("big", [False, True])
def test_weighted_sums_from_the_replicate_major_weights_are_exact(big):
    # int32 products where no sum can overflow, int64 where one could (big counts)
    from privdyn.analysis.model_level import _weighted_sum, replicate_counts

    rng = np.random.default_rng(4)
    by_rep = replicate_counts(500, 30, np.random.default_rng(5))
    np.testing.assert_array_equal(by_rep.T, bootstrap_weights(500, 30, np.random.default_rng(5)))
    counts = rng.integers(0, 2**23 if big else 64, size=(3, 500))
    expected = counts.astype(object) @ by_rep.T.astype(object)  # Python integers: no overflow at all
    got = _weighted_sum(counts, by_rep)
    assert got.dtype == np.int64 and (got == expected).all()


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 6), n=st.integers(1, 40), seed=st.integers(0, 10**6))
def test_pairs_select_what_the_masks_select(m, n, seed):
    """pairs_of splits like scores[z] and scores[~z] (same order), counts IN and OUT models per
    sample, and global_metrics and the bootstrap give the same with and without it."""
    rng = np.random.default_rng(seed)
    z = rng.random((m, n)) < rng.uniform(0.1, 0.9)
    s = np.round(rng.normal(size=(m, n)), 1)
    p = pairs_of(z)
    ins, outs = p.split(s)
    np.testing.assert_array_equal(ins, s[z])
    np.testing.assert_array_equal(outs, s[~z])
    np.testing.assert_array_equal(p.in_sample, np.nonzero(z)[1])
    np.testing.assert_array_equal(p.out_sample, np.nonzero(~z)[1])
    np.testing.assert_array_equal(p.n_in, z.sum(axis=0))
    np.testing.assert_array_equal(p.n_out, (~z).sum(axis=0))
    with pytest.raises(ValueError, match="do not match"):
        p.split(s[:, :-1] if n > 1 else np.zeros((m + 1, n)))
    if z.any() and (~z).any():
        a, b = global_metrics(s, z, [0.1, 0.5], p), global_metrics(s, z, [0.1, 0.5])
        assert (a.auc, a.balanced_accuracy) == (b.auc, b.balanced_accuracy)
        np.testing.assert_array_equal(a.tpr_at_fpr, b.tpr_at_fpr)
    if (z.any(axis=0) & (~z).any(axis=0)).all():
        w = bootstrap_weights(n, 7, np.random.default_rng(seed))
        np.testing.assert_array_equal(tpr_at_fpr_boot(s, z, [0.1], w, pairs=p), tpr_at_fpr_boot(s, z, [0.1], w))
