"""Learning difficulty measures, the vectorised bootstrap Spearman, decile table and the EL2N signal."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import rankdata, spearmanr

from privdyn.analysis import difficulty
from privdyn.training.membership import balanced_membership
from privdyn.training.signals import signals_from_logits


def test_measures_hand_example():
    # 2 models, 1 sample; model 0 IN, model 1 OUT; 4 checkpoints
    z = np.array([[True], [False]])
    correct = np.array([[[1], [0]], [[0], [0]], [[1], [1]], [[1], [1]]], dtype=bool)  # [T, M, N]
    loss = np.array([[[0.5], [9.0]], [[1.5], [9.0]], [[0.2], [9.0]], [[0.2], [9.0]]])
    el2n = np.array([[[0.1], [5.0]], [[0.3], [5.0]], [[0.0], [5.0]], [[0.0], [5.0]]])
    m = difficulty.difficulty_measures(correct, loss, el2n, z, early=1)
    assert m["iteration_learned"][0] == 3  # correct from checkpoint 3 (1-based) on
    assert m["forgetting_events"][0] == 1  # 1 -> 0 once
    assert m["mean_train_loss"][0] == pytest.approx(0.6)
    assert m["consistency"][0] == 1.0  # the OUT model is right at e_T
    assert m["early_el2n"][0] == pytest.approx(0.3)
    correct[-1, 0, 0] = False  # wrong at the end: never learned -> T + 1
    assert difficulty.difficulty_measures(correct, loss, None, z, 0)["iteration_learned"][0] == 5
    assert np.isnan(difficulty.difficulty_measures(correct, loss, None, z, 0)["early_el2n"]).all()


def test_measures_match_loop():
    rng = np.random.default_rng(0)
    T, M, N = 6, 8, 26
    z = balanced_membership(M, N, 0)
    correct = rng.uniform(size=(T, M, N)) < 0.6
    loss = rng.exponential(size=(T, M, N)).astype(np.float32)
    el2n = rng.uniform(0, 1.4, size=(T, M, N)).astype(np.float32)
    m = difficulty.difficulty_measures(correct, loss, el2n, z, early=2)
    for i in range(N):
        ins = [k for k in range(M) if z[k, i]]
        outs = [k for k in range(M) if not z[k, i]]
        learned, forgets = [], []
        for k in ins:
            it = T + 1
            for t in range(T):
                if all(correct[u, k, i] for u in range(t, T)):
                    it = t + 1
                    break
            learned.append(it)
            forgets.append(sum(correct[t - 1, k, i] and not correct[t, k, i] for t in range(1, T)))
        assert math.isclose(m["iteration_learned"][i], np.mean(learned))
        assert math.isclose(m["forgetting_events"][i], np.mean(forgets))
        assert math.isclose(m["mean_train_loss"][i], np.mean([float(loss[t, k, i]) for t in range(T) for k in ins]),
                            rel_tol=1e-9)
        assert math.isclose(m["consistency"][i], np.mean([correct[-1, k, i] for k in outs]))
        assert math.isclose(m["early_el2n"][i], np.mean([float(el2n[2, k, i]) for k in ins]), rel_tol=1e-12)


def test_early_index():
    assert difficulty.early_index(np.arange(1, 31), 0.1) == 2  # epoch 3
    assert difficulty.early_index(np.array([0, 1, 2, 5, 10, 20, 50]), 0.1) == 3  # epoch 5
    assert difficulty.early_index(np.array([0, 10]), 0.1) == 1  # never the initialisation
    assert difficulty.early_index(np.array([4]), 0.1) == 0
    assert difficulty.early_index(np.array([1, 3, 5]), 0.4) == 0  # 2.0: tie between 1 and 3 -> earlier


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(2, 30), elements=st.sampled_from([0.0, 1.0, 2.0, 2.5, 7.0])),
       st.integers(0, 10**6))
def test_centred_ranks_equal_rankdata_of_the_resample(values, seed):
    n = len(values)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(4, n))
    counts = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(float)
    dev, _ = difficulty.centred_ranks(difficulty.ties_of(values), counts)
    ranks = dev + (n + 1) / 2  # a resample of n draws: its mid-ranks average (n + 1) / 2
    for b in range(4):
        resample = values[idx[b]]
        expected = dict(zip(idx[b], rankdata(resample)))
        for i, r in expected.items():
            assert ranks[b, i] == r


@settings(max_examples=50, deadline=None)
@given(st.integers(3, 40), st.integers(0, 10**6), st.booleans())
def test_spearman_of_centred_ranks_equals_scipy_on_the_resample(n, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n)
    y = x * rng.uniform(-1, 1) + rng.normal(size=n)
    idx = rng.integers(0, n, size=(5, n))
    counts = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(float)
    (dx, nx), (dy, ny) = (difficulty.centred_ranks(difficulty.ties_of(v), counts) for v in (x, y))
    got = difficulty._corr(dx, nx, counts * dy, ny)
    for b in range(5):
        xs, ys = x[idx[b]], y[idx[b]]
        if np.ptp(xs) == 0 or np.ptp(ys) == 0:
            assert np.isnan(got[b])
        else:
            assert math.isclose(got[b], spearmanr(xs, ys).statistic, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 1.0, 2.0, 2.5, 7.0]) | st.floats(-5, 5)),
       st.integers(0, 10**6))
def test_centred_ranks_equal_the_explicit_centring_bit_for_bit(values, seed):
    """The mean (W + 1) / 2 and the sum of squares over groups, against explicit weighted sums of
    the resample's mid-ranks: every term is a multiple of 1/4, so they agree exactly."""
    n = len(values)
    idx = np.random.default_rng(seed).integers(0, n, size=(3, n))
    counts = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(float)
    r = np.zeros((3, n))  # each sample's mid-rank in each resample, by rankdata on the resample
    for b in range(3):
        r[b, idx[b]] = rankdata(values[idx[b]])  # a sample drawn twice gets one rank, tied with itself
    mean = (counts * r).sum(axis=1, keepdims=True) / counts.sum(axis=1, keepdims=True)
    dev, norm = difficulty.centred_ranks(difficulty.ties_of(values), counts)
    drawn = counts > 0  # an undrawn sample has no rank in the resample (and weight 0 in every sum)
    assert np.array_equal(dev[drawn], (r - mean)[drawn])
    assert np.array_equal(norm, np.sqrt((counts * (r - mean) ** 2).sum(axis=1)))


def test_spearman_table_point_ci_and_seed():
    rng = np.random.default_rng(5)
    n = 400
    a = rng.normal(size=n)
    target = a + rng.normal(size=n)
    measures = {"m": a, "noise": rng.normal(size=n), "const": np.ones(n), "missing": np.full(n, np.nan)}
    tab = difficulty.spearman_table(measures, {"t": target}, n_boot=300, seed=1)
    row = tab.set_index("measure").loc["m"]
    assert math.isclose(row.rho, spearmanr(a, target).statistic, rel_tol=1e-12)
    assert row.ci_low < row.rho < row.ci_high and row.ci_high - row.ci_low < 0.2
    se = 1.0 / math.sqrt(n - 3)  # Fisher-z standard error: the CI width is about 2 * 1.96 * se * (1 - rho^2)
    assert 0.5 < (row.ci_high - row.ci_low) / (2 * 1.96 * se * (1 - row.rho ** 2)) < 1.5
    noise = tab.set_index("measure").loc["noise"]
    assert noise.ci_low < 0 < noise.ci_high
    for name in ("const", "missing"):
        r = tab.set_index("measure").loc[name]
        assert np.isnan(r.rho) and np.isnan(r.ci_low) and np.isnan(r.ci_high)
    again = difficulty.spearman_table(measures, {"t": target}, n_boot=300, seed=1)
    assert again.equals(tab)
    # the blocks change nothing but speed
    blocked = difficulty.spearman_table(measures, {"t": target}, n_boot=300, seed=1, block=7)
    np.testing.assert_allclose(blocked.rho, tab.rho)


def test_decile_table_matches_loop():
    rng = np.random.default_rng(2)
    n = 137
    v = rng.integers(0, 30, n).astype(float)  # ties on purpose
    adv, auc = rng.uniform(size=n), rng.uniform(size=n)
    high = adv > 0.6
    tab = difficulty.decile_table({"v": v, "nan": np.full(n, np.nan)}, adv, auc, high)
    assert set(tab.measure) == {"v"} and tab.n.sum() == n
    r = rankdata(v)
    for row in tab.itertuples():
        members = [i for i in range(n) if math.floor(10 * (r[i] - 0.5) / n) + 1 == row.decile]
        assert row.n == len(members)
        assert math.isclose(row.mean_final_advantage, np.mean(adv[members]))
        assert math.isclose(row.mean_final_auc, np.mean(auc[members]))
        assert math.isclose(row.share_high_final, np.mean(high[members]))
        assert row.measure_min == v[members].min() and row.measure_max == v[members].max()
    # tied values never straddle two deciles
    assert (tab.measure_max.values[:-1] < tab.measure_min.values[1:]).all()


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (6,), elements=st.floats(-30, 30)), st.integers(0, 5))
def test_el2n_signal_is_distance_of_softmax_to_onehot(logits, y):
    out = signals_from_logits(torch.tensor(logits)[None], torch.tensor([y]))["el2n"][0].item()
    p = np.exp(logits - logits.max())
    p /= p.sum()
    onehot = np.eye(6)[y]
    assert math.isclose(out, np.linalg.norm(p - onehot), rel_tol=1e-9, abs_tol=1e-12)


def test_el2n_signal_stays_exact_when_p_y_rounds_to_one():
    out = signals_from_logits(torch.tensor([[60.0, 0.0, 0.0]]), torch.tensor([0]))["el2n"][0].item()
    # 1 - p_y = 2 e^-60 (to first order), the others are e^-60 each: sqrt(4 + 2) e^-60
    assert math.isclose(out, math.sqrt(6) * math.exp(-60), rel_tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(1, 25), elements=st.sampled_from([0.0, 1.0, 2.0, np.nan])),
       st.integers(0, 10**6))
def test_spearman_table_shapes_ties_and_nan(x, seed):
    y = np.random.default_rng(seed).normal(size=len(x))
    tab = difficulty.spearman_table({"x": x}, {"y": y, "y2": -y}, n_boot=20, seed=seed, block=6)
    assert list(tab.target) == ["y", "y2"] and (tab.n == len(x)).all()
    defined = np.isfinite(x).all() and len(x) > 1 and np.ptp(x) > 0
    if not defined:
        assert tab.rho.isna().all()
    else:
        assert ((tab.rho >= -1 - 1e-12) & (tab.rho <= 1 + 1e-12)).all()
        assert math.isclose(tab.rho[0], -tab.rho[1], abs_tol=1e-12)
    finite = tab.dropna(subset=["ci_low"])
    assert (finite.ci_low <= finite.ci_high).all()
