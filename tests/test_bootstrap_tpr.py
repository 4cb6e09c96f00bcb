"""The bootstrap of TPR at fixed FPR (model_level.tpr_at_fpr_boot) and its windowed order-statistic
search (model_level._first_exceeding): exactly equal to the replicates built by repetition and
to the previous full-scan search, on ties, tiny and extreme inputs and random properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.analysis import model_level
from privdyn.analysis.model_level import _first_exceeding, bootstrap_weights, tpr_at_fpr, tpr_at_fpr_boot


def first_exceeding_reference(weights, rows, ranks):
    """The previous implementation (commit 8dde97e), kept verbatim as the reference: running
    sums over every row from the top, in doubling blocks, until every target is passed."""
    block = 1 << 22
    n_boot = weights.shape[1]
    found = np.full(ranks.shape, -1, dtype=np.int64)
    total = np.zeros(n_boot)
    cap = max(1, block // n_boot)
    start, step = 0, min(cap, int(1.1 * ranks.max()) + 64)
    while start < len(rows) and (found < 0).any():
        # float64 counts are exact integers (< 2**53)
        run = np.cumsum(weights[rows[start:start + step]], axis=0, dtype=np.float64) + total
        hit = (found < 0) & (run[-1] > ranks)
        if hit.any():
            span = np.arange(n_boot) * (run[-1].max() + 1)
            idx = np.searchsorted((run + span).T.ravel(), ranks + span, side="right")
            found[hit] = (start + idx - np.arange(n_boot) * len(run))[hit]
        total = run[-1]
        start, step = start + step, min(cap, 2 * step)
    return found


def first_exceeding_plain(weights, rows, ranks):
    """The definition: one running sum per replicate over all rows, first position above each target."""
    run = np.cumsum(weights[rows], axis=0, dtype=np.int64)  # [len(rows), B]
    out = np.full(ranks.shape, -1, dtype=np.int64)
    for k in range(ranks.shape[0]):
        for b in range(ranks.shape[1]):
            d = np.searchsorted(run[:, b], ranks[k, b], side="right")
            out[k, b] = d if d < len(rows) else -1
    return out


def repeated_tpr(s, z, alpha, weights):
    """Each replicate built explicitly: sample i (all its models) repeated weights[i, b] times."""
    out = []
    for b in range(weights.shape[1]):
        idx = np.repeat(np.arange(s.shape[1]), weights[:, b])
        out.append(tpr_at_fpr(s[:, idx], z[:, idx], alpha))
    return np.array(out)


def mixed_membership(M, N, rng):
    """Random membership in which every sample is IN for one model and OUT for another at least."""
    z = rng.random((M, N)) < rng.uniform(0.2, 0.8)
    z[0], z[1] = True, False
    return np.take_along_axis(z, rng.permuted(np.tile(np.arange(M)[:, None], (1, N)), axis=0), axis=0)


def scores(M, N, rng, decimals=None):
    z = mixed_membership(M, N, rng)
    s = rng.normal(size=(M, N)) + 1.5 * z * rng.exponential(1.0, N) + rng.normal(size=(1, N))
    return (s if decimals is None else np.round(s, decimals)), z


def check(s, z, alphas, w):
    """tpr_at_fpr_boot equals the repeated replicates bit for bit, and its order-statistic search
    equals the previous one (seen through the same call with the reference swapped in)."""
    got = tpr_at_fpr_boot(s, z, alphas, w)
    for row, a in enumerate(alphas):
        np.testing.assert_array_equal(got[row], repeated_tpr(s, z, a, w))
    return got


def reference_search(*args):
    """tpr_at_fpr_boot with the previous search instead (the rest of the function is shared)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(model_level, "_first_exceeding", lambda w, rows, ranks, limit=None:
                  first_exceeding_reference(w, rows, ranks))
        return tpr_at_fpr_boot(*args)


ALPHAS = [0.0, 1e-6, 0.001, 0.01, 0.1, 0.5, 0.9, 0.999999, 1.0]


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("M, N, B", [(2, 2, 1), (2, 1, 3), (2, 7, 5), (3, 40, 20), (8, 300, 30), (16, 500, 1)])
def test_equals_the_repeated_replicates_and_the_previous_search(decimals, M, N, B):
    rng = np.random.default_rng([M, N, B])
    s, z = scores(M, N, rng, decimals)
    w = bootstrap_weights(N, B, rng)
    got = check(s, z, ALPHAS, w)
    np.testing.assert_array_equal(got, reference_search(s, z, ALPHAS, w))


def test_all_scores_tied():
    rng = np.random.default_rng(0)
    z = mixed_membership(4, 50, rng)
    s = np.zeros((4, 50))
    w = bootstrap_weights(50, 10, rng)
    np.testing.assert_array_equal(check(s, z, ALPHAS, w), reference_search(s, z, ALPHAS, w))


@pytest.mark.parametrize("who", ["top", "bottom", "middle"])
def test_one_sample_takes_all_the_weight(who):
    rng = np.random.default_rng(1)
    M, N, B = 2, 400, 6
    s, z = scores(M, N, rng, decimals=2)
    out_score = np.where(z, -np.inf, s).max(axis=0)
    order = np.argsort(out_score)
    w = bootstrap_weights(N, B, rng)
    i = {"top": order[-1], "bottom": order[0], "middle": order[N // 2]}[who]
    w[:, 1] = 0
    w[i, 1] = N  # replicate 1 is sample i, N times
    w[:, 4] = 0
    w[order[:5], 4] = N // 5  # replicate 4: the five lowest-scoring samples (beyond any sorted top)
    got = check(s, z, ALPHAS, w)
    np.testing.assert_array_equal(got, reference_search(s, z, ALPHAS, w))


def test_replicates_of_the_top_and_of_the_bottom_samples(monkeypatch):
    """One replicate puts all its weight on the highest-scoring samples: its running weight runs
    far ahead of the others, so the first window start is too high and must move down. Another
    takes only the lowest-scoring samples: its order statistics lie below the sorted top, so the
    search runs again over every OUT pair."""
    rng = np.random.default_rng(2)
    M, N, B = 8, 3000, 12
    s, z = scores(M, N, rng)
    order = np.argsort(np.where(z, -np.inf, s).max(axis=0))
    w = bootstrap_weights(N, B, rng)
    w[:, 3] = 0
    w[order[-300:], 3] = N // 300
    w[:, 7] = 0
    w[order[:300], 7] = N // 300
    calls = []
    search = model_level._first_exceeding
    monkeypatch.setattr(model_level, "_first_exceeding", lambda *a: calls.append(len(a[1])) or search(*a))
    alphas = [0.001, 0.01, 0.1]
    got = check(s, z, alphas, w)
    assert len(calls) == 2 and calls[0] < calls[1] == (~z).sum()  # the fallback sorted every OUT pair
    np.testing.assert_array_equal(got, reference_search(s, z, alphas, w))


@pytest.mark.parametrize("window_sd", [0.0, 0.5, 4.0])
@pytest.mark.parametrize("block, sub", [(1 << 22, 64), (64, 1), (300, 7)])
def test_search_equals_the_previous_one_for_any_window_and_block(window_sd, block, sub, monkeypatch):
    """Windows that are always too narrow (widened, scans extended block by block), single-row
    blocks and sub-blocks: the same positions as the previous full scan and the definition."""
    monkeypatch.setattr(model_level, "_WINDOW_SD", window_sd)
    monkeypatch.setattr(model_level, "_BLOCK", block)
    monkeypatch.setattr(model_level, "_SUB", sub)
    rng = np.random.default_rng(3)
    N, B, n = 200, 9, 700
    w = bootstrap_weights(N, B, rng)
    w[:, 2] = 0
    w[:7, 2] = N // 7  # an extreme replicate
    rows = rng.integers(0, N, n)
    totals = w[rows].sum(axis=0)
    ranks = np.concatenate([rng.integers(0, totals + 1, (5, B)), [[0] * B], totals[None] - 1, totals[None] + 3])
    got = _first_exceeding(w, rows, ranks)
    np.testing.assert_array_equal(got, first_exceeding_reference(w, rows, ranks))
    np.testing.assert_array_equal(got, first_exceeding_plain(w, rows, ranks))
    np.testing.assert_array_equal(_first_exceeding(w, rows, ranks, int(totals.max())), got)


def test_search_in_int64_when_running_weights_pass_two_to_the_31():
    rng = np.random.default_rng(4)
    N, B, n = 50, 3, 5000
    w = rng.integers(0, 2**21, (N, B)).astype(np.int64)
    rows = rng.integers(0, N, n)
    totals = w[rows].sum(axis=0)
    assert totals.min() > 2**31
    ranks = np.stack([totals // 3, totals // 2, totals - 1, np.full(B, 2**31 + 5)])
    got = _first_exceeding(w, rows, ranks)
    np.testing.assert_array_equal(got, first_exceeding_plain(w, rows, ranks))
    np.testing.assert_array_equal(got, first_exceeding_reference(w, rows, ranks))


def test_no_rows_finds_nothing():
    w = np.ones((3, 2), dtype=np.int32)
    np.testing.assert_array_equal(_first_exceeding(w, np.zeros(0, dtype=np.int64), np.zeros((2, 2), np.int64)),
                                  np.full((2, 2), -1))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(1, 60), st.integers(1, 8),
       st.sampled_from([None, 1, 0]), st.sampled_from(["bootstrap", "sparse", "heavy"]),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
def test_property_equals_the_repeated_replicates(seed, M, N, B, decimals, kind, alphas):
    rng = np.random.default_rng(seed)
    s, z = scores(M, N, rng, decimals)
    if kind == "bootstrap":
        w = bootstrap_weights(N, B, rng)
    else:  # arbitrary non-negative weights, some zero; every replicate keeps one sample at least
        hi = 3 if kind == "sparse" else 40
        w = (rng.integers(0, hi, (N, B)) * (rng.random((N, B)) < 0.4)).astype(np.int32)
        w[rng.integers(0, N, B), np.arange(B)] += 1
    got = check(s, z, alphas, w)
    np.testing.assert_array_equal(got, reference_search(s, z, alphas, w))


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.integers(1, 12), st.integers(0, 800),
       st.sampled_from([0.0, 1.0, 4.0]), st.sampled_from([1, 3, 64]))
def test_property_search_equals_the_previous_one(seed, N, B, n, window_sd, sub):
    rng = np.random.default_rng(seed)
    w = bootstrap_weights(N, B, rng) if rng.random() < 0.7 else rng.integers(0, 5, (N, B)).astype(np.int32)
    rows = rng.integers(0, N, n)
    totals = w[rows].sum(axis=0) if n else np.zeros(B, dtype=np.int64)
    ranks = rng.integers(0, totals + 2, (rng.integers(1, 7), B))
    want = first_exceeding_plain(w, rows, ranks)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(model_level, "_WINDOW_SD", window_sd)
        m.setattr(model_level, "_SUB", sub)
        np.testing.assert_array_equal(_first_exceeding(w, rows, ranks), want)
    np.testing.assert_array_equal(first_exceeding_reference(w, rows, ranks), want)
