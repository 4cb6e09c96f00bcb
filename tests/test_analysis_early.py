"""Early determination: the finally-vulnerable set, recall(t) with ties, Spearman to the final plane."""

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import spearmanr

from privdyn.analysis import early


def test_final_vulnerable_high_or_top_share():
    adv = np.array([0.1, 0.7, 0.65, 0.2])
    np.testing.assert_array_equal(early.final_vulnerable(adv, adv >= 0.6), [False, True, True, False])
    # nobody high: top 1% of 250 samples = 3 samples, plus every sample tied with the third
    adv = np.linspace(0, 0.5, 250)
    v = early.final_vulnerable(adv, np.zeros(250, bool))
    assert v.sum() == 3 and v[-3:].all()
    adv[-4] = adv[-3]
    assert early.final_vulnerable(adv, np.zeros(250, bool)).sum() == 4
    # no advantage is no vulnerability: V holds only samples with A > 0, and may be empty
    assert not early.final_vulnerable(np.zeros(5), np.zeros(5, bool)).any()
    adv = np.zeros(250)
    adv[[7, 9]] = 0.25  # top 1% would be 3 samples, but only two have any advantage
    np.testing.assert_array_equal(np.flatnonzero(early.final_vulnerable(adv, np.zeros(250, bool))), [7, 9])
    assert early.vulnerable_set_rule(np.zeros(5, bool), np.zeros(5, bool)).startswith("none")


def test_recall_hand_example_with_ties():
    target = np.array([True, True, False, False])
    adv = np.array([
        [0.0, 0.0, 0.0, 0.0],  # all tied: expected recall = share of V = 2/4... of 2 places: 0.5
        [0.5, 0.0, 0.0, 0.0],  # sample 0 sure; 1 free place among 3 tied, 1 of them in V: 1 + 1/3
        [0.5, 0.4, 0.1, 0.0],  # exact
        [0.0, 0.1, 0.5, 0.4],  # none
    ])
    np.testing.assert_allclose(early.recall_curve(adv, target), [0.5, (1 + 1 / 3) / 2, 1.0, 0.0])


def _recall_by_enumerating_tie_breaks(adv, target):
    """The definition with every tie-break order averaged, for small N."""
    T, N = adv.shape
    k = int(target.sum())
    out = []
    for t in range(T):
        vals = []
        for perm in itertools.permutations(range(N)):
            order = sorted(perm, key=lambda i: -adv[t, i])  # stable: ties in perm order
            vals.append(sum(target[i] for i in order[:k]) / k)
        out.append(np.mean(vals))
    return np.array(out)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 5)),
              elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])), st.data())
def test_recall_is_the_average_over_tie_breaks(adv, data):
    N = adv.shape[1]
    target = np.array(data.draw(st.lists(st.booleans(), min_size=N, max_size=N)))
    got = early.recall_curve(adv, target)
    if not target.any():
        assert np.isnan(got).all()
        return
    np.testing.assert_allclose(got, _recall_by_enumerating_tie_breaks(adv, target), atol=1e-12)
    assert ((got >= 0) & (got <= 1)).all()


def test_recall_is_one_at_the_end_for_the_high_set():
    rng = np.random.default_rng(0)
    adv = np.round(rng.uniform(-0.2, 1, size=(5, 300)), 1)
    v = early.final_vulnerable(adv[-1], adv[-1] >= 0.6)
    assert early.recall_curve(adv, v)[-1] == 1.0
    v = early.final_vulnerable(adv[-1] * 0.1, np.zeros(300, bool))
    assert early.recall_curve(adv * 0.1, v)[-1] == 1.0


def test_spearman_to_final_matches_scipy():
    rng = np.random.default_rng(1)
    adv = np.round(rng.normal(size=(6, 50)), 1)
    adv[0] = 0.3  # constant row: undefined
    got = early.spearman_to_final(adv)
    assert np.isnan(got[0]) and math.isclose(got[-1], 1.0)
    for t in range(1, 6):
        assert math.isclose(got[t], spearmanr(adv[t], adv[-1]).statistic, rel_tol=1e-12)


def test_earliest_epochs():
    recall = np.array([0.1, 0.5, 0.69, 0.8, 1.0])
    epochs = np.array([2, 4, 6, 8, 10])
    got = early.earliest_epochs(recall, epochs, [0.5, 0.7, 0.9, 1.0])
    assert got[0.5] == (4.0, 0.4) and got[0.7] == (8.0, 0.8) and got[0.9] == (10.0, 1.0)
    got = early.earliest_epochs(np.array([0.1, 0.2]), np.array([1, 2]), [0.5])
    assert all(math.isnan(x) for x in got[0.5])
