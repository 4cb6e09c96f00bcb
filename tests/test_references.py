"""The reference plans of DESIGN.md "References" and the statistics over them."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.attacks.references import (
    RULES,
    drop_orders,
    has_pairs,
    ref_counts,
    ref_logmeanexp,
    ref_median,
    ref_moments,
    reference_plan,
)
from privdyn.errors import PrivdynError
from privdyn.training.membership import balanced_membership


def kept_mask(refs, M):
    """[M target, M reference, N]: True where the reference serves the target (from the plan)."""
    E, _, N = refs.excluded.shape
    keep = np.ones((M, M + 1, N), dtype=bool)
    for e in range(E):
        for m in range(M):
            keep[m, refs.excluded[e, m], np.arange(N)] = False
    return keep[:, :M]


def test_pair_rule_gives_half_minus_one_per_side():
    z = balanced_membership(8, 50, 0)
    refs = reference_plan(z)
    assert refs.rule == "pair" and has_pairs(z)
    np.testing.assert_array_equal(ref_counts(z, refs), 3)
    np.testing.assert_array_equal(ref_counts(~z, refs), 3)
    keep = kept_mask(refs, 8)
    for m in range(8):
        others = [r for r in range(8) if r not in (m, m ^ 1)]
        assert not keep[m, m].any() and not keep[m, m ^ 1].any() and keep[m, others].all()


def test_one_rule_is_leave_one_out():
    z = balanced_membership(6, 10, 0)
    refs = reference_plan(z, "one")
    np.testing.assert_array_equal(ref_counts(z, refs) + ref_counts(~z, refs), 5)
    np.testing.assert_array_equal(ref_counts(z, refs), np.where(z, 2, 3))


def test_balanced_rule_on_a_balanced_matrix_drops_one_from_the_larger_side():
    z = balanced_membership(8, 40, 0)[[0, 2, 4, 6, 1, 3, 5, 7]]
    z[:, :20] = z[::-1, :20]  # balanced columns, no complementary pairs
    refs = reference_plan(z, "pair", seed=5)
    assert refs.rule == "balanced"
    np.testing.assert_array_equal(ref_counts(z, refs), 3)
    np.testing.assert_array_equal(ref_counts(~z, refs), 3)
    orders = drop_orders(8, 40, 5)
    keep = kept_mask(refs, 8)
    for m in range(8):
        for i in range(40):
            order = list(orders[:, i])  # the sample's own permutation
            other = [r for r in range(8) if r != m and z[r, i] != z[m, i]]
            dropped = [r for r in other if not keep[m, r, i]]
            assert dropped == [min(other, key=order.index)]


def test_balanced_rule_drops_every_model_of_the_larger_side_equally_often():
    """The dropped model is uniform over the larger side, whatever the target's bit: one order
    for all samples always dropped the same model, which then served only the target's own side."""
    z = np.tile(balanced_membership(8, 2, 0)[[0, 2, 4, 6, 1, 3, 5, 7]], (1, 20_000))
    refs = reference_plan(z, "balanced", seed=1)
    ex, own = refs.excluded, np.arange(8)[:, None]
    dropped = np.where(ex[0] == own, ex[1], ex[0])  # [M, N]: the one model each target drops per sample
    for m in range(8):
        for col in range(2):
            other = [r for r in range(8) if r != m and z[r, col] != z[m, col]]
            share = np.bincount(dropped[m, col::2], minlength=8)[other] / 20_000
            np.testing.assert_allclose(share, 1 / len(other), atol=0.02)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(3, 9), st.integers(1, 12), st.integers(0, 2**16), st.sampled_from(RULES))
def test_every_plan_balances_any_membership(M, N, seed, rule):
    rng = np.random.default_rng(seed)
    z = rng.random((M, N)) < rng.uniform(0.2, 0.8)
    refs = reference_plan(z, rule, seed)
    n_in, n_out = ref_counts(z, refs), ref_counts(~z, refs)
    keep = kept_mask(refs, M)
    assert not keep[np.arange(M), np.arange(M)].any()  # never the target itself
    np.testing.assert_array_equal(n_in + n_out, keep.sum(axis=1))
    if rule != "one":  # both sides keep the smaller count among the other models
        others_in = z.sum(axis=0) - z
        c = np.minimum(others_in, M - 1 - others_in) if refs.rule == "balanced" else np.full((M, N), M // 2 - 1)
        np.testing.assert_array_equal(n_in, c)
        np.testing.assert_array_equal(n_out, c)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(4, 9), st.integers(1, 8), st.integers(1, 2), st.integers(0, 2**16), st.sampled_from(RULES),
       st.booleans())
def test_statistics_match_the_plain_sets(M, N, Q, seed, rule, ties):
    rng = np.random.default_rng(seed)
    z = balanced_membership(M, 2 * N, seed) if M % 2 == 0 and seed % 2 else rng.random((M, 2 * N)) < 0.5
    z[:2], z[2:4] = True, False
    x = rng.normal(size=(M, 2 * N, Q)) * 5
    if ties:
        x = np.round(x)
    refs = reference_plan(z, rule, seed)
    keep = kept_mask(refs, M)
    mu, var = ref_moments(x, z, refs, "IN")
    med = ref_median(x, ~z, refs, "OUT")
    lme = ref_logmeanexp(x * 40, None, refs)
    for m in range(M):
        for i in range(2 * N):
            ins = x[keep[m, :, i] & z[:, i], i]
            outs = x[keep[m, :, i] & ~z[:, i], i]
            every = x[keep[m, :, i], i] * 40
            np.testing.assert_allclose(mu[m, i], ins.mean(axis=0), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(var[m, i], ins.var(axis=0), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(med[m, i], np.median(outs, axis=0), rtol=1e-12)
            top = every.max(axis=0)
            np.testing.assert_allclose(lme[m, i], top + np.log(np.exp(every - top).mean(axis=0)), rtol=1e-9,
                                       atol=1e-9)


def test_unknown_rule_and_missing_references_are_clear_errors():
    z = balanced_membership(4, 6, 0)
    with pytest.raises(PrivdynError, match="unknown reference rule"):
        reference_plan(z, "two")
    z[:, 0] = True  # sample 0 is IN for every model: no OUT reference can exist
    with pytest.raises(PrivdynError, match="no OUT reference for sample 0"):
        ref_moments(np.zeros((4, 6, 1)), ~z, reference_plan(z), "OUT")
