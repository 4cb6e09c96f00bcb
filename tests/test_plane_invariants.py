"""DESIGN.md invariants of the vulnerability plane under the balanced design."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.analysis.model_level import tpr_at_fpr
from privdyn.analysis.plane import compute_plane, plane_at, sample_auc, threshold
from privdyn.training.membership import balanced_membership


@settings(max_examples=40, deadline=None)
@given(m=st.sampled_from([4, 8, 16]), n=st.integers(20, 300).map(lambda k: 2 * k),
       alpha=st.sampled_from([0.001, 0.01, 0.1, 0.3]), seed=st.integers(0, 10**6))
def test_mean_fpr_is_alpha_and_mean_tpr_is_global_tpr(m, n, alpha, seed):
    rng = np.random.default_rng(seed)
    z = balanced_membership(m, n, seed)
    s = rng.normal(size=(m, n)) + z * rng.uniform(0, 2)  # continuous: no quantile ties
    tau = threshold(s, z, f"fpr:{alpha}")
    fpr, tpr = plane_at(s, z, tau)
    n_out = (~z).sum()
    # the share of OUT scores strictly above the (1 - alpha) quantile, up to one score's step
    assert abs(fpr.mean() - alpha) <= 1.0 / n_out + 1e-12
    assert np.isclose(tpr.mean(), tpr_at_fpr(s, z, alpha))


def test_plane_matches_loop_definition():
    rng = np.random.default_rng(0)
    M, N = 8, 40
    z = balanced_membership(M, N, 1)
    s = np.round(rng.normal(size=(M, N)) + z, 1)  # rounded: ties on purpose
    tau = threshold(s, z, "fpr:0.1")
    fpr, tpr = plane_at(s, z, tau)
    auc = sample_auc(s, z)
    for i in range(N):
        ins = [s[m, i] for m in range(M) if z[m, i]]
        outs = [s[m, i] for m in range(M) if not z[m, i]]
        assert tpr[i] == np.mean([v > tau for v in ins])
        assert fpr[i] == np.mean([v > tau for v in outs])
        pairs = [(a > b) + 0.5 * (a == b) for a in ins for b in outs]
        assert auc[i] == np.mean(pairs)  # exact: the AUC is rounded once


def test_score_rule_uses_fixed_threshold_and_sample_that_never_separates_is_safe():
    z = balanced_membership(8, 10, 2)
    s = np.where(z, 1.0, -1.0)
    s[:, 0] = 0.5  # sample 0: all models give the same score
    p = compute_plane(s[None], z, "score:0")
    assert p.tau[0] == 0.0
    assert p.tpr[0, 1:].min() == 1.0 and p.fpr[0, 1:].max() == 0.0
    assert p.adv[0, 0] == 0.0 and p.auc[0, 0] == 0.5


def test_several_rules_from_one_read_of_each_checkpoint():
    """operating_points_of gives every rule what operating_points gives it alone (and the plane's
    FPR and TPR), reading each checkpoint once whatever the number of rules."""
    from privdyn.analysis.plane import operating_points, operating_points_of

    rng = np.random.default_rng(5)
    T, M, N = 4, 8, 60
    z = balanced_membership(M, N, 2)
    scores = np.round(rng.normal(size=(T, M, N)) + z * rng.uniform(0, 2, size=(T, 1, 1)), 1)

    class Counted:
        shape = scores.shape
        reads = 0

        def __getitem__(self, t):
            Counted.reads += 1
            return scores[t]

    rules = ["fpr:0.01", "fpr:0.1", "score:0.5", "fpr:0.01"]
    got = operating_points_of(Counted(), z, rules)
    assert Counted.reads == T and sorted(got) == sorted(set(rules))
    for rule in rules:
        alone = operating_points(scores, z, rule)
        for a, b in zip(got[rule], alone, strict=True):
            np.testing.assert_array_equal(a, b)
    plane = compute_plane(scores, z, "fpr:0.1")
    np.testing.assert_array_equal(plane.fpr, got["fpr:0.1"][0])
    np.testing.assert_array_equal(plane.tpr, got["fpr:0.1"][1])
