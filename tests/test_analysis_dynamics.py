"""Encoding speed, transitions and time to vulnerability: hand-computed cases, plain loops, properties."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privdyn.analysis import dynamics
from privdyn.analysis.population import STATE_NAMES, states
from privdyn.config import StatesConfig

EPOCHS = np.array([1, 2, 4])


def test_speed_hand_example():
    # sample 0: (0,0) -> (0,0.5) -> (0.5,0.5): path 1.0 over 3 epochs; A from 0 to 0.0
    # sample 1: stays at (0.25, 0.75): speed 0, net rate 0
    fpr = np.array([[0.0, 0.25], [0.0, 0.25], [0.5, 0.25]])
    tpr = np.array([[0.0, 0.75], [0.5, 0.75], [0.5, 0.75]])
    v, net = dynamics.encoding_speed(fpr, tpr, EPOCHS)
    np.testing.assert_allclose(v, [1.0 / 3, 0.0])
    np.testing.assert_allclose(net, [0.0, 0.0])
    fpr[2, 0] = 0.0  # now A_0 ends at 0.5: net rate 0.5 / 3, path 0.5 / 3
    v, net = dynamics.encoding_speed(fpr, tpr, EPOCHS)
    np.testing.assert_allclose(v, [0.5 / 3, 0.0])
    np.testing.assert_allclose(net, [0.5 / 3, 0.0])


def test_speed_matches_loop_and_single_checkpoint_is_nan():
    rng = np.random.default_rng(0)
    T, N = 6, 30
    fpr, tpr = rng.uniform(size=(T, N)), rng.uniform(size=(T, N))
    epochs = np.array([0, 1, 2, 5, 9, 20])
    v, net = dynamics.encoding_speed(fpr, tpr, epochs)
    for i in range(N):
        path = sum(math.dist((fpr[t + 1, i], tpr[t + 1, i]), (fpr[t, i], tpr[t, i])) for t in range(T - 1))
        assert math.isclose(v[i], path / 20, rel_tol=1e-12)
        assert math.isclose(net[i], ((tpr[-1, i] - fpr[-1, i]) - (tpr[0, i] - fpr[0, i])) / 20, abs_tol=1e-15)
    v1, n1 = dynamics.encoding_speed(fpr[:1], tpr[:1], epochs[:1])
    assert np.isnan(v1).all() and np.isnan(n1).all()


def test_speed_summary_mean_over_high():
    s = dynamics.speed_summary(np.array([1.0, 2.0, 3.0, 10.0]), np.array([False, False, True, True]))
    assert s == {"mean": 4.0, "median": 2.5, "high_mean": 6.5}
    assert math.isnan(dynamics.speed_summary(np.array([1.0]), np.array([False]))["high_mean"])


def test_transitions_hand_example():
    # 3 samples, 3 checkpoints; states 0 safe .. 3 high
    sts = np.array([[0, 0, 3],
                    [3, 0, 3],
                    [3, 3, 3]])
    c = dynamics.transition_counts(sts)
    assert c.shape == (2, 4, 4) and c.sum() == 6
    assert c[0, 0, 3] == 1 and c[0, 0, 0] == 1 and c[0, 3, 3] == 1 and c[0].sum() == 3
    assert c[1, 0, 3] == 1 and c[1, 3, 3] == 2
    p = dynamics.transition_probabilities(c)
    np.testing.assert_allclose(p[0, 0], [0.5, 0, 0, 0.5])
    assert np.isnan(p[0, 1]).all() and np.isnan(p[0, 2]).all()  # nobody in low or medium
    # P(non-high -> high): t=0: 2 non-high, 1 goes high = 0.5; t=1: 1 non-high, it goes high = 1.0
    np.testing.assert_allclose(dynamics.p_to_high(c), [0.5, 1.0])
    assert dynamics.peak(dynamics.p_to_high(c)) == 1.0
    allhigh = dynamics.transition_counts(np.full((3, 2), 3))
    assert np.isnan(dynamics.p_to_high(allhigh)).all() and np.isnan(dynamics.peak(dynamics.p_to_high(allhigh)))


def test_transitions_match_loop_and_table():
    rng = np.random.default_rng(1)
    T, N = 5, 200
    sts = rng.integers(0, 4, size=(T, N))
    c = dynamics.transition_counts(sts)
    p = dynamics.transition_probabilities(c)
    ph = dynamics.p_to_high(c)
    for t in range(T - 1):
        for a in range(4):
            in_a = [i for i in range(N) if sts[t, i] == a]
            for b in range(4):
                assert c[t, a, b] == sum(sts[t + 1, i] == b for i in in_a)
                if in_a:
                    assert math.isclose(p[t, a, b], c[t, a, b] / len(in_a))
        non_high = [i for i in range(N) if sts[t, i] != 3]
        assert math.isclose(ph[t], sum(sts[t + 1, i] == 3 for i in non_high) / len(non_high))
    epochs = np.array([1, 2, 3, 5, 8])
    tab = dynamics.transitions_table(c, epochs)
    assert list(tab.columns) == ["epoch_from", "epoch_to", "state_from", "state_to", "count", "probability"]
    assert len(tab) == (T - 1) * 16 and tab["count"].sum() == (T - 1) * N
    row = tab[(tab.epoch_from == 3) & (tab.state_from == "low") & (tab.state_to == "high")].iloc[0]
    assert row.epoch_to == 5 and row["count"] == c[2, 1, 3] and math.isclose(row.probability, p[2, 1, 3])
    assert list(tab.state_from.cat.categories) == list(STATE_NAMES)


def test_time_to_high_hand_example():
    epochs = np.array([1, 2, 5, 10])
    sts = np.array([[3, 0, 0, 3, 1],
                    [3, 3, 0, 0, 1],
                    [3, 0, 0, 3, 1],
                    [3, 3, 0, 3, 1]])
    first, settled = dynamics.time_to_high(sts, epochs)
    np.testing.assert_array_equal(first, [1, 2, np.nan, 1, np.nan])
    np.testing.assert_array_equal(settled, [1, 10, np.nan, 5, np.nan])


def _time_loop(sts, epochs):
    T, N = sts.shape
    first, settled = np.full(N, np.nan), np.full(N, np.nan)
    for i in range(N):
        for t in range(T):
            if sts[t, i] == 3:
                first[i] = epochs[t]
                break
        for t in range(T):
            if all(sts[u, i] == 3 for u in range(t, T)):
                settled[i] = epochs[t]
                break
    return first, settled


@settings(max_examples=60, deadline=None)
@given(arrays(np.int64, st.tuples(st.integers(1, 7), st.integers(1, 25)), elements=st.integers(0, 3)))
def test_time_to_high_matches_loop(sts):
    epochs = np.cumsum(np.arange(1, sts.shape[0] + 1))
    first, settled = dynamics.time_to_high(sts, epochs)
    lf, ls = _time_loop(sts, epochs)
    np.testing.assert_array_equal(first, lf)
    np.testing.assert_array_equal(settled, ls)
    assert (np.isnan(settled) | (settled >= first)).all()
    c = dynamics.transition_counts(sts)
    assert c.shape == (sts.shape[0] - 1, 4, 4) and (c.sum(axis=(1, 2)) == sts.shape[1]).all()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 20)), elements=st.sampled_from(
    [0.0, 0.125, 0.25, 0.5, 0.75, 1.0])), st.permutations(range(20)))
def test_permuting_samples_permutes_every_per_sample_output(tpr, perm):
    perm = np.array([p for p in perm if p < tpr.shape[1]])
    fpr = tpr[::-1].copy()
    epochs = np.arange(1, tpr.shape[0] + 1)
    sts = states(tpr - fpr, StatesConfig())
    a = dynamics.encoding_speed(fpr, tpr, epochs) + dynamics.time_to_high(sts, epochs)
    b = dynamics.encoding_speed(fpr[:, perm], tpr[:, perm], epochs) + dynamics.time_to_high(sts[:, perm], epochs)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[perm], y)
    np.testing.assert_array_equal(dynamics.transition_counts(sts), dynamics.transition_counts(sts[:, perm]))
