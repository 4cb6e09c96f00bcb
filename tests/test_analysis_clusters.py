"""Trajectory clusters: recovery of planted groups, names, degenerate inputs, order independence."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import silhouette_score

from privdyn.analysis import dynamics
from privdyn.analysis.clusters import cluster_trajectories, describe_clusters
from privdyn.analysis.population import states
from privdyn.config import StatesConfig

EPOCHS = np.arange(1, 11)


def _planted(n_each=40, seed=0):
    """Three behaviours over 10 epochs: high from epoch 2, high from epoch 9, never above 0.05."""
    rng = np.random.default_rng(seed)
    t = np.arange(10)[:, None]
    early = np.where(t >= 1, 0.9, 0.1) + rng.normal(0, 0.02, (10, n_each))
    late = np.where(t >= 8, 0.8, 0.1) + rng.normal(0, 0.02, (10, n_each))
    safe = 0.02 + rng.normal(0, 0.01, (10, n_each))
    adv = np.concatenate([safe, late, early], axis=1)
    truth = np.repeat([2, 1, 0], n_each)
    return adv, truth


def test_planted_clusters_are_found_and_named():
    adv, truth = _planted()
    c = cluster_trajectories(adv, seed=0)
    assert c.k == 3
    # labels ordered by decreasing mean final advantage: early-high (0.9) first, safe last
    np.testing.assert_array_equal(c.labels, truth)
    assert c.silhouette > 0.8 and set(c.tried) == {2, 3, 4, 5, 6}
    assert c.silhouette == max(c.tried.values())
    np.testing.assert_allclose(c.silhouette, silhouette_score(adv.T, c.labels))
    first, _ = dynamics.time_to_high(states(adv, StatesConfig()), EPOCHS)
    tab = describe_clusters(c.labels, adv, first, EPOCHS, StatesConfig())
    assert list(tab.name) == ["early-high", "late-high", "safe"]
    assert list(tab["size"]) == [40, 40, 40]
    # loop check of the descriptive columns
    for k in range(3):
        members = [i for i in range(adv.shape[1]) if c.labels[i] == k]
        assert math.isclose(tab.mean_final_advantage[k], np.mean([adv[-1, i] for i in members]))
        reached = [first[i] for i in members if not np.isnan(first[i])]
        assert math.isclose(tab.share_ever_high[k], len(reached) / len(members))
        if reached:
            assert math.isclose(tab.mean_time_to_high[k], np.mean(reached))
        else:
            assert np.isnan(tab.mean_time_to_high[k])


def test_fixed_k_and_duplicate_names_get_suffixes():
    adv, _ = _planted()
    c = cluster_trajectories(adv, k=4, seed=1)
    assert c.k == 4 and set(c.tried) == {4}
    first, _ = dynamics.time_to_high(states(adv, StatesConfig()), EPOCHS)
    names = list(describe_clusters(c.labels, adv, first, EPOCHS, StatesConfig()).name)
    assert len(set(names)) == 4
    assert any(n.endswith("-2") for n in names)


def test_identical_trajectories_make_one_cluster():
    c = cluster_trajectories(np.full((5, 30), 0.25))
    assert c.k == 1 and math.isnan(c.silhouette) and (c.labels == 0).all()
    two = np.zeros((5, 30))
    two[:, :10] = 0.8
    c = cluster_trajectories(two)  # only two distinct rows: k capped at 2
    assert c.k == 2 and set(c.tried) == {2}
    np.testing.assert_array_equal(c.labels, np.r_[np.zeros(10), np.ones(20)])


def test_silhouette_subsample_is_seeded_and_close():
    adv, _ = _planted(n_each=200)
    a = cluster_trajectories(adv, seed=3, silhouette_sample=150)
    b = cluster_trajectories(adv, seed=3, silhouette_sample=150)
    full = cluster_trajectories(adv, seed=3)
    assert a.silhouette == b.silhouette
    np.testing.assert_array_equal(a.labels, full.labels)
    assert abs(a.silhouette - full.silhouette) < 0.05


@settings(max_examples=25, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 30)),
              elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])), st.randoms(use_true_random=False))
def test_permuting_samples_permutes_labels(adv, rnd):
    perm = np.array(rnd.sample(range(adv.shape[1]), adv.shape[1]))
    a = cluster_trajectories(adv, seed=0)
    b = cluster_trajectories(adv[:, perm], seed=0)
    assert a.k == b.k and (a.silhouette == b.silhouette or (math.isnan(a.silhouette) and math.isnan(b.silhouette)))
    np.testing.assert_array_equal(a.labels[perm], b.labels)
    assert a.labels.shape == (adv.shape[1],) and (np.bincount(a.labels) > 0).all()


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 4)),
              elements=st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0])), st.data())
def test_silhouette_equals_scikit_learn(points, data):
    """The silhouette from one product equals scikit-learn's on tied distances, singleton clusters,
    clusters of identical points and label sets that are not 0..k-1."""
    from sklearn.metrics import pairwise_distances

    from privdyn.analysis.clusters import _silhouette

    n = len(points)
    labels = np.array(data.draw(st.lists(st.sampled_from([3, 7, 8, 20]), min_size=n, max_size=n)))
    dist = pairwise_distances(points)
    ours = _silhouette(dist, labels)
    if not 2 <= len(np.unique(labels)) < n:
        assert math.isnan(ours)
    else:
        np.testing.assert_allclose(ours, silhouette_score(dist, labels, metric="precomputed"), rtol=1e-12, atol=1e-12)
