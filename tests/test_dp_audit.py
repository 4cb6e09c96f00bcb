"""DP audits with known answers: randomized response and a Gaussian mechanism on simulated scores
(exact epsilon known) stay below the truth in at least 1 - beta of seeded repetitions and approach
it as N and M grow; a non-private mechanism's bounds grow with N; a null model's are 0; the
vectorised estimators agree with a deliberately simple loop; properties under hypothesis."""

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from privdyn.analysis import dp_audit as da
from privdyn.errors import DataError

BETA = 0.05


def balanced(M, N, rng):
    """The balanced design: complementary pairs, each model a uniformly random half."""
    z = np.zeros((M, N), dtype=bool)
    for j in range(M // 2):
        z[2 * j, rng.permutation(N)[: N // 2]] = True
        z[2 * j + 1] = ~z[2 * j]
    return z


def randomized_response(z, eps, T, rng):
    """Each canary's score is its membership bit, flipped with probability 1 / (1 + e^eps): eps-DP."""
    flip = rng.random((T, *z.shape)) < 1 / (1 + math.exp(eps))
    return (z[None] ^ flip).astype(np.float64)


def gaussian(z, mu, T, rng):
    """Score = mu * membership + N(0, 1): exactly mu-GDP, so (eps(mu, delta), delta)-DP for every delta."""
    return mu * z[None] + rng.normal(size=(T, *z.shape))


# ----- known answers ----------------------------------------------------------------------------------
def test_randomized_response_bounds_cover_the_truth_and_approach_it():
    eps, rng = 1.0, np.random.default_rng(0)
    z = balanced(4, 400, rng)
    small = da.audit_scores(randomized_response(z, eps, 200, rng), z, da.AuditOptions(delta=0.0))
    for est in ("one_run", "clopper_pearson"):
        assert (small.epsilon(est) <= eps).mean() >= 1 - BETA, est
    assert (small.one_run.per_model <= eps).mean() >= 1 - BETA
    z = balanced(16, 20000, rng)
    large = da.audit_scores(randomized_response(z, eps, 3, rng), z, da.AuditOptions(delta=0.0))
    for est in ("one_run", "clopper_pearson"):
        assert (large.epsilon(est) <= eps).all(), est
        assert large.epsilon(est).mean() > small.epsilon(est).mean() + 0.1, est
    assert large.one_run.epsilon.min() > 0.85 and large.clopper_pearson.epsilon.min() > 0.97


def test_one_run_test_is_calibrated_for_randomized_response():
    """Without the grid and design corrections (one k, i.i.d. rows), the test of the true epsilon
    rejects in at most a beta share of repetitions, and not far below it: randomized response is
    the mechanism the one-run bound is tight for. Each repetition draws its own row (the theorem's
    probability is over the inclusion draw too): the repetitions are the models of one checkpoint."""
    eps, rng, R, N = 1.0, np.random.default_rng(1), 3000, 2000
    z = rng.random((R, N)) < 0.5
    s = randomized_response(z, eps, 1, rng)  # k << N: the guesses are nearly i.i.d. Bernoulli(q) draws
    counts = da.audit_counts(s, z, da.AuditOptions(k=(25,), design="independent"))
    assert not counts.one_run.fixed_weight
    p = da.one_run_p_value(counts.one_run.correct[0, :, 0], counts.one_run.guesses[0], N, np.full(R, eps), 0.0)
    rate = (p <= BETA).mean()
    r, q = counts.one_run.guesses[0], 1 / (1 + math.exp(-eps))
    tails = stats.binom.sf(np.arange(r + 1) - 1, r, q)
    attainable = tails[tails <= BETA].max()  # the binomial's largest level at or below beta
    se = math.sqrt(BETA * (1 - BETA) / R)
    assert attainable - 4 * se < rate <= BETA + 3 * se


def test_gaussian_mechanism_bounds_cover_the_truth_and_approach_it():
    mu, delta, rng = 1.0, 1e-5, np.random.default_rng(2)
    true_eps = float(da.gdp_epsilon(np.array(mu), delta))
    assert true_eps == pytest.approx(4.3772, abs=1e-3)
    z = balanced(4, 400, rng)
    small = da.audit_scores(gaussian(z, mu, 200, rng), z, da.AuditOptions(delta=delta))
    assert (small.gdp.mu <= mu).mean() >= 1 - BETA
    for est in da.ESTIMATORS:
        assert (small.epsilon(est) <= true_eps).mean() >= 1 - BETA, est
    z = balanced(16, 20000, rng)
    large = da.audit_scores(gaussian(z, mu, 3, rng), z, da.AuditOptions(delta=delta))
    assert (large.gdp.mu <= mu).all() and large.gdp.mu.min() > 0.95
    assert large.gdp.epsilon.min() > 0.95 * true_eps and (large.gdp.epsilon <= true_eps).all()
    assert large.clopper_pearson.epsilon.mean() > small.clopper_pearson.epsilon.mean() + 0.5


def test_non_private_bounds_grow_with_n():
    rng = np.random.default_rng(3)
    got = []
    for N in (50, 200, 800, 3200):
        z = balanced(4, N, rng)
        a = da.audit_scores(z[None].astype(float), z, da.AuditOptions(delta=1e-6))
        pure = da.audit_scores(z[None].astype(float), z, da.AuditOptions(delta=0.0))
        got.append((pure.one_run.epsilon[0], a.clopper_pearson.epsilon[0], a.gdp.mu[0], a.gdp.epsilon[0]))
    got = np.array(got)
    assert (np.diff(got, axis=0) > 0).all(), got
    assert (got[-1] > [5, 6, 6, 40]).all(), got[-1]


def test_one_run_is_capped_by_delta():
    """With delta > 0 even perfect guesses prove at most about log(level / delta): the theorem's
    delta term, not a bug; at delta = 2/N (privdyn's default 1/N_train) nothing is proved."""
    N = 3200
    z = balanced(4, N, np.random.default_rng(4))
    perfect = z[None].astype(float)
    a = da.audit_scores(perfect, z, da.AuditOptions(delta=1e-6))
    assert 0 < a.one_run.epsilon[0] < math.log(a.one_run.level / 1e-6) + 0.5
    assert da.audit_scores(perfect, z, da.AuditOptions(delta=2 / N)).one_run.epsilon[0] == 0


def test_null_model_gives_zero():
    rng = np.random.default_rng(5)
    z = balanced(4, 400, rng)
    s = rng.normal(size=(200, 4, 400))
    for delta in (0.0, 1 / 200):
        a = da.audit_scores(s, z, da.AuditOptions(delta=delta))
        for est in da.ESTIMATORS:
            e = a.epsilon(est)
            assert (e == 0).mean() >= 1 - BETA and e.max() < 0.5, (est, delta)


def test_fixed_weight_rows_are_detected_and_corrected():
    rng = np.random.default_rng(6)
    z = balanced(4, 200, rng)
    assert da.fixed_weight_rows(z) and not da.fixed_weight_rows(rng.random((4, 201)) < 0.5)
    s = randomized_response(z, 2.0, 2, rng)
    fixed = da.audit_scores(s, z, da.AuditOptions())
    free = da.audit_scores(s, z, da.AuditOptions(design="independent"))
    assert fixed.one_run.fixed_weight and not free.one_run.fixed_weight
    assert fixed.one_run.level == pytest.approx(free.one_run.level * math.comb(200, 100) / 2**200)
    assert (fixed.one_run.epsilon <= free.one_run.epsilon).all()
    assert (fixed.one_run.epsilon > 0).all()


# ----- agreement with a deliberately simple implementation ----------------------------------------------
def loop_p_value(v, r, m, eps, delta):
    q = 1 / (1 + math.exp(-eps))
    tail = stats.binom.sf(v - 1, r, q)
    alpha = 0.0
    for i in range(1, v + 1):
        alpha = max(alpha, (stats.binom.cdf(v - 1, r, q) - stats.binom.cdf(v - 1 - i, r, q)) / i)
    return min(1.0, tail + 2 * m * delta * alpha)


def loop_epsilon(v, r, m, delta, level):
    if loop_p_value(v, r, m, 0.0, delta) > level:
        return 0.0
    lo, hi = 0.0, 40.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if loop_p_value(v, r, m, mid, delta) <= level else (lo, mid)
    return lo


def loop_one_run(scores, z, ks, delta, confidence):
    T, M, N = scores.shape
    ks = sorted({min(k, N // 2) for k in ks})
    fixed = N % 2 == 0 and all(z[m].sum() == N // 2 for m in range(M))
    factor = math.comb(N, N // 2) / 2**N if fixed else 1.0
    j = math.ceil(M / 2)
    level = (1 - confidence) * j / (M * len(ks)) * factor
    out = []
    for t in range(T):
        per_model = []
        for m in range(M):
            order = sorted(range(N), key=lambda i: (-scores[t, m, i], i))
            best = 0.0
            for k in ks:
                v = sum(bool(z[m, i]) for i in order[:k]) + sum(not z[m, i] for i in order[N - k:])
                best = max(best, loop_epsilon(v, 2 * k, N, delta, level))
            per_model.append(best)
        out.append(sorted(per_model, reverse=True)[j - 1])
    return np.array(out)


def loop_operating(scores, z, fprs, delta, confidence):
    """Clopper-Pearson epsilon and GDP mu per checkpoint, one point and one pair at a time."""
    T = scores.shape[0]
    a = (1 - confidence) / (2 * len(fprs))
    cp, mus = [], []
    for t in range(T):
        s_in = [x for x, m in zip(scores[t].ravel(), z.ravel()) if m]
        s_out = [x for x, m in zip(scores[t].ravel(), z.ravel()) if not m]
        best_eps, best_mu = 0.0, 0.0
        for f in fprs:
            tau = np.quantile(s_out, 1 - f)
            tp, fp = sum(x > tau for x in s_in), sum(x > tau for x in s_out)
            n1, n0 = len(s_in), len(s_out)
            tpr_lo = stats.beta.ppf(a, tp, n1 - tp + 1) if tp > 0 else 0.0
            fpr_hi = stats.beta.ppf(1 - a, fp + 1, n0 - fp) if fp < n0 else 1.0
            for num, den in ((tpr_lo - delta, fpr_hi), (1 - fpr_hi - delta, 1 - tpr_lo)):
                if num > 0:
                    best_eps = max(best_eps, math.log(num / den))
            if tpr_lo > 0:
                best_mu = max(best_mu, stats.norm.ppf(tpr_lo) - stats.norm.ppf(fpr_hi))
        cp.append(best_eps)
        mus.append(best_mu)
    return np.array(cp), np.array(mus)


def loop_gdp_epsilon(mu, delta):
    def d(e):
        return stats.norm.cdf(-e / mu + mu / 2) - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2) - delta

    return 0.0 if mu == 0 or d(0) <= 0 else optimize.brentq(d, 0, 200, xtol=1e-12)


def test_agrees_with_a_loop_on_tied_scores():
    rng = np.random.default_rng(7)
    T, M, N = 3, 4, 30
    z = balanced(M, N, rng)
    scores = (rng.integers(0, 4, size=(T, M, N)) + 1.5 * z[None]).astype(float)  # ties and a signal
    opts = da.AuditOptions(delta=1e-3, k=(3, 8, 40), fprs=(0.05, 0.3, 0.7))
    a = da.audit_scores(scores, z, opts)
    one_run = da.audit_scores(scores, z, replace(opts, delta=1e-5))  # at 1e-3 the delta term leaves 0
    np.testing.assert_allclose(one_run.one_run.epsilon, loop_one_run(scores, z, opts.k, 1e-5, 0.95), atol=1e-6)
    cp, mu = loop_operating(scores, z, opts.fprs, 1e-3, 0.95)
    np.testing.assert_allclose(a.clopper_pearson.epsilon, cp, atol=1e-9)
    np.testing.assert_allclose(a.gdp.mu, mu, atol=1e-9)
    np.testing.assert_allclose(a.gdp.epsilon, [loop_gdp_epsilon(m, 1e-3) for m in mu], atol=1e-8)
    assert (one_run.one_run.epsilon > 0).any() and (cp > 0).any() and (mu > 0).any()


@pytest.mark.parametrize("v,r", [(1, 1), (5, 10), (19, 20), (40, 40), (3, 60), (55, 60)])
def test_p_value_agrees_with_a_loop(v, r):
    for eps in (0.0, 0.3, 1.5, 4.0):
        for delta in (0.0, 1e-4, 0.01):
            got = da.one_run_p_value(np.array(v), np.array(r), 500, np.array(eps), delta)
            assert got == pytest.approx(loop_p_value(v, r, 500, eps, delta), rel=1e-9, abs=1e-15)


def test_gdp_conversion():
    mu = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0, np.nan])
    eps = da.gdp_epsilon(mu, 1e-5)
    assert eps[0] == 0 and np.isnan(eps[-1])
    np.testing.assert_allclose(eps[1:-1], [loop_gdp_epsilon(m, 1e-5) for m in mu[1:-1]], rtol=1e-9)
    np.testing.assert_allclose(da.gdp_delta(eps[1:-1], mu[1:-1]), 1e-5, rtol=1e-6)
    assert (np.diff(eps[:-1]) > 0).all()
    assert np.isinf(da.gdp_epsilon(np.array([0.5]), 0.0)).all()


# ----- properties -------------------------------------------------------------------------------------
@st.composite
def audits(draw):
    T = draw(st.integers(1, 3))
    M = draw(st.sampled_from([2, 4]))
    N = draw(st.integers(2, 24))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    design = draw(st.sampled_from(["balanced", "iid"]))
    z = balanced(M, N, rng) if design == "balanced" else rng.random((M, N)) < 0.5
    levels = draw(st.integers(1, 5))  # few distinct values: many ties
    signal = draw(st.sampled_from([0.0, 0.5, 1.0, 2.5]))
    scores = rng.integers(0, levels, size=(T, M, N)) + signal * z[None]
    return scores.astype(float), z


@settings(max_examples=40)
@given(audits(), st.floats(0.5, 0.99), st.sampled_from([0.0, 1e-4, 0.05]))
def test_shapes_ranges_and_monotone_confidence(case, confidence, delta):
    scores, z = case
    T, M, N = scores.shape
    opts = da.AuditOptions(confidence=confidence, delta=delta, k=(1, 3, 10), fprs=(0.1, 0.5, 0.9))
    counts = da.audit_counts(scores, z, opts)
    assert counts.one_run.correct.shape == (T, M, len(counts.one_run.k))
    assert (counts.one_run.correct >= 0).all() and (counts.one_run.correct <= counts.one_run.guesses).all()
    lo = da.audit(counts, opts)
    hi = da.audit(counts, da.with_confidence(opts, 1 - (1 - confidence) / 10))
    has_both = z.any() and (~z).any()
    for est in da.ESTIMATORS:
        e_lo, e_hi = lo.epsilon(est), hi.epsilon(est)
        assert e_lo.shape == (T,)
        if est == "one_run" or has_both:
            assert not np.isnan(e_lo).any() and (e_lo >= 0).all()
            if est != "gdp" or delta > 0:
                assert np.isfinite(e_lo).all()
            assert (e_hi <= e_lo + 1e-9).all(), est  # more confidence, never a larger bound
    eps, which = lo.best()
    assert eps.shape == (T,) and len(which) == T


@settings(max_examples=25)
@given(audits(), st.integers(0, 2**16))
def test_bounds_depend_on_the_order_of_the_scores_only(case, seed):
    """A strictly increasing transform changes no count and no bound."""
    scores, z = case
    opts = da.AuditOptions(delta=1e-3, k=(1, 4), fprs=(0.2, 0.6))
    a = da.audit_scores(scores, z, opts)
    b = da.audit_scores(np.exp(scores / 2) * 3 - 7, z, opts)
    for est in da.ESTIMATORS:
        np.testing.assert_array_equal(a.epsilon(est), b.epsilon(est))


def test_degenerate_inputs():
    rng = np.random.default_rng(8)
    z = balanced(2, 10, rng)
    flat = np.zeros((2, 2, 10))
    a = da.audit_scores(flat, z, da.AuditOptions(delta=1e-3))
    assert (a.clopper_pearson.epsilon == 0).all() and (a.gdp.epsilon == 0).all()
    everyone = np.ones((2, 10), dtype=bool)  # no OUT pair: the rates are undefined
    b = da.audit_scores(rng.normal(size=(1, 2, 10)), everyone, da.AuditOptions(delta=1e-3))
    assert np.isnan(b.clopper_pearson.epsilon).all() and np.isnan(b.gdp.epsilon).all()
    assert (b.one_run.epsilon >= 0).all()
    with pytest.raises(DataError, match="at least 2 pool samples"):
        da.audit_scores(np.zeros((1, 2, 1)), np.array([[True], [False]]), da.AuditOptions())
    with pytest.raises(DataError, match="NaN or infinite"):
        da.audit_scores(np.full((1, 2, 10), np.nan), z, da.AuditOptions())
    with pytest.raises(DataError, match="membership"):
        da.audit_scores(np.zeros((1, 3, 10)), z, da.AuditOptions())
    with pytest.raises(ValueError, match="confidence"):
        da.AuditOptions(confidence=1.0)
