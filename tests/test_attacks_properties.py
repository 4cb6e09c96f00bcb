"""Attack properties: shapes, permutations, ties, degenerate input, and LiRA's optimality."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from privdyn.analysis.model_level import global_auc, tpr_at_fpr
from privdyn.attacks import ATTACKS, CheckpointData
from privdyn.attacks.lira import LiraOptions
from privdyn.attacks.references import reference_plan
from privdyn.attacks.rmia import RmiaOptions
from privdyn.errors import PrivdynError
from privdyn.training.membership import balanced_membership

SIGNALS = ("phi", "loss", "top1", "top2", "top3", "entropy", "mentropy")
#: Shokri's K folds follow the model index and its solver sums rows in order: not permutation-exact.
EXACT = [n for n in ATTACKS if n != "shokri"]


@st.composite
def checkpoints(draw):
    """Balanced membership, small integer-valued signals (many ties) or continuous ones."""
    M = draw(st.sampled_from([4, 6, 8]))
    N = draw(st.sampled_from([2, 4, 6, 10]))
    Q = draw(st.integers(1, 2))
    Nt = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    ties = draw(st.booleans())
    rng = np.random.default_rng(seed)

    def sig(shape, scale):
        x = rng.normal(size=shape) * scale
        return np.abs(np.round(x)) if ties else np.abs(x)

    z = balanced_membership(M, N, seed)
    pool = {s: sig((M, N, Q), 3.0) for s in SIGNALS}
    pool["phi"] = pool["phi"] * np.where(rng.random((M, N, Q)) < 0.5, -1, 1)
    return CheckpointData(pool, {"loss": sig((M, Nt, Q), 3.0)}, z)


def permuted(data, models=None, samples=None, rule="pair"):
    pm = slice(None) if models is None else models
    ps = slice(None) if samples is None else samples
    z = data.membership[pm][:, ps]
    return CheckpointData({k: v[pm][:, ps] for k, v in data.pool.items()},
                          {k: v[pm] for k, v in data.test.items()}, z, reference_plan(z, rule))


def pair_permutation(rnd, M):
    """A model permutation that keeps complementary pairs together (the pair design's symmetry)."""
    pairs = rnd.sample(range(M // 2), M // 2)
    return np.array([2 * j + b for j in pairs for b in rnd.sample([0, 1], 2)])


PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(checkpoints(), st.randoms(use_true_random=False))
def test_shapes_finite_and_model_permutation(data, rnd):
    """Scores follow the models under any permutation that preserves the reference sets: one that
    keeps pairs together for ``pair``, any permutation for leave-one-out."""
    M = data.n_models
    loo = permuted(data, rule="one")
    for rule, base, perm in (("pair", data, pair_permutation(rnd, M)),
                             ("one", loo, np.array(rnd.sample(range(M), M)))):
        other = permuted(base, models=perm, rule=rule)
        for name in ATTACKS:
            s = ATTACKS[name].run(base)
            assert s.shape == data.membership.shape and np.isfinite(s).all()
            if name in EXACT:
                np.testing.assert_allclose(ATTACKS[name].run(other), s[perm], rtol=1e-9, atol=1e-9,
                                           err_msg=f"{name} ({rule})")


@PROPS
@given(checkpoints(), st.randoms(use_true_random=False))
def test_sample_permutation_permutes_scores(data, rnd):
    N = data.membership.shape[1]
    perm = np.array(rnd.sample(range(N), N))
    other = permuted(data, samples=perm)
    for name in EXACT:
        for opts in [None] + ([RmiaOptions(population="test+pool")] if name == "rmia" else []):
            np.testing.assert_allclose(ATTACKS[name].run(other, opts), ATTACKS[name].run(data, opts)[:, perm],
                                       rtol=1e-9, atol=1e-9, err_msg=name)


@PROPS
@given(checkpoints())
def test_bounded_attacks_stay_in_unit_interval(data):
    for name in ("rmia", "rmia_offline", "attack_r", "confidence"):
        s = ATTACKS[name].run(data)
        assert (s >= 0).all() and (s <= 1).all()


# ----- degenerate input -------------------------------------------------------------------------
def constant_data(M=8, N=10, Q=1, value=1.0):
    z = balanced_membership(M, N, 0)
    pool = {s: np.full((M, N, Q), value) for s in SIGNALS}
    return CheckpointData(pool, {"loss": np.full((M, 5, Q), value)}, z)


def test_zero_variance_signals_give_documented_finite_scores():
    data = constant_data()
    for name in ATTACKS:
        assert np.isfinite(ATTACKS[name].run(data)).all(), name
    # identical outputs everywhere: LiRA's Gaussians coincide (log-ratio 0); every OUT loss ties
    # with the target's (Attack-R 1); no pairwise ratio exceeds gamma = 1 (RMIA 0)
    np.testing.assert_allclose(ATTACKS["lira_online"].run(data), 0.0, atol=1e-9)
    np.testing.assert_allclose(ATTACKS["attack_r"].run(data), 1.0)
    np.testing.assert_allclose(ATTACKS["rmia"].run(data), 0.0)


def test_zero_variance_sample_uses_the_std_floor():
    data = constant_data(N=4)
    phi = data.pool["phi"].copy()
    phi[0, 0, 0] = 1.5  # model 0 deviates on sample 0; its references there have zero spread
    data = CheckpointData({**data.pool, "phi": phi}, data.test, data.membership)
    s = ATTACKS["lira_offline_cdf"].run(data, LiraOptions(std_floor=1e-3))
    assert s[0, 0] == pytest.approx(norm.logcdf(0.5 / 1e-3)) and np.isfinite(s).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_non_finite_signals_raise_a_clear_error(name, bad):
    data = constant_data()
    spec = ATTACKS[name]
    pool = {k: v.copy() for k, v in data.pool.items()}
    pool[spec.needs[0]][3, 2, 0] = bad
    with pytest.raises(PrivdynError, match="NaN or infinite.*model 3, sample 2"):
        spec.run(CheckpointData(pool, data.test, data.membership))


def test_non_finite_test_signal_raises():
    data = constant_data()
    test = {"loss": data.test["loss"].copy()}
    test["loss"][0, 0, 0] = np.nan
    with pytest.raises(PrivdynError, match="test signal 'loss'"):
        ATTACKS["rmia"].run(CheckpointData(data.pool, test, data.membership))


@pytest.mark.parametrize("name,error,rule", [
    ("lira_online", "at least 4 models", "pair"), ("lira_online_fixed", "at least 4 models", "pair"),
    ("lira_offline_cdf", "no OUT reference", "pair"), ("lira_offline_pdf", "no OUT reference", "pair"),
    ("lira_offline_cdf", "no OUT reference", "one"), ("rmia_offline", "no OUT reference", "pair"),
    ("attack_r", "no OUT reference", "one"), ("rmia", "has no reference", "pair"),
    ("shokri", "at least two folds", "pair"),
    ("rmia", None, "one"), ("shokri", None, "one"),
    ("loss", None, "pair"), ("confidence", None, "pair"), ("entropy", None, "pair"), ("mentropy", None, "pair")])
def test_two_models(name, error, rule):
    rng = np.random.default_rng(0)
    z = balanced_membership(2, 20, 0)
    pool = {s: np.abs(rng.normal(size=(2, 20, 1))) for s in SIGNALS}
    data = CheckpointData(pool, {"loss": np.abs(rng.normal(size=(2, 6, 1)))}, z, reference_plan(z, rule))
    if error is None:
        assert np.isfinite(ATTACKS[name].run(data)).all()
    else:
        with pytest.raises(PrivdynError, match=error):
            ATTACKS[name].run(data)


def test_empty_test_split_raises_for_rmia():
    data = constant_data()
    with pytest.raises(PrivdynError, match="needs test samples"):
        ATTACKS["rmia"].run(CheckpointData(data.pool, {"loss": np.zeros((8, 0, 1))}, data.membership))


def test_bad_shapes_and_options_are_rejected():
    data = constant_data()
    with pytest.raises(PrivdynError, match="expected"):
        CheckpointData({"phi": np.zeros((8, 3, 1))}, {}, data.membership)
    with pytest.raises(TypeError, match="LiraOptions"):
        ATTACKS["lira_online"].run(data, RmiaOptions())
    with pytest.raises(ValueError):
        RmiaOptions(gamma=0)


# ----- LiRA reaches the Neyman-Pearson optimum on Gaussian signals -------------------------------
@pytest.mark.parametrize("name", ["lira_online", "lira_online_fixed", "lira_offline_cdf"])
def test_lira_reaches_neyman_pearson_roc(name):
    """IN ~ N(mu_i + d, 1), OUT ~ N(mu_i, 1) with per-sample mu_i: the optimal test thresholds
    phi - mu_i, so the optimal ROC is TPR = 1 - Phi(Phi^-1(1 - FPR) - d), AUC = Phi(d / sqrt 2)."""
    rng = np.random.default_rng(7)
    M, N, d = 128, 1000, 2.0
    z = balanced_membership(M, N, 1)
    phi = rng.normal(size=(M, N, 1)) + d * z[..., None] + rng.normal(size=(1, N, 1)) * 4
    s = ATTACKS[name].run(CheckpointData({"phi": phi}, {}, z))
    # sampling error: 64k IN and 64k OUT pairs; estimation error of mu from ~63 references
    assert global_auc(s, z) == pytest.approx(norm.cdf(d / math.sqrt(2)), abs=0.01)
    for alpha in (0.01, 0.1):
        assert tpr_at_fpr(s, z, alpha) == pytest.approx(norm.sf(norm.isf(alpha) - d), abs=0.03)


def test_two_sided_offline_lira_is_below_the_optimum_on_one_sided_shifts():
    rng = np.random.default_rng(8)
    M, N, d = 64, 1000, 2.0
    z = balanced_membership(M, N, 1)
    phi = rng.normal(size=(M, N, 1)) + d * z[..., None]
    data = CheckpointData({"phi": phi}, {}, z)
    pdf_auc = global_auc(ATTACKS["lira_offline_pdf"].run(data), z)
    assert pdf_auc < global_auc(ATTACKS["lira_offline_cdf"].run(data), z) - 0.05


@pytest.mark.parametrize("name", [n for n, a in ATTACKS.items() if a.per_sample])
def test_blockwise_scoring_equals_one_block(name, monkeypatch):
    from privdyn.attacks import base

    rng = np.random.default_rng(3)
    z = balanced_membership(6, 50, 1)
    data = CheckpointData({s: np.abs(rng.normal(size=(6, 50, 2))) for s in SIGNALS}, {}, z)
    whole = ATTACKS[name].run(data)
    monkeypatch.setattr(base, "SAMPLE_BLOCK", 6 * 2 * 7)  # blocks of 7 samples, the last one short
    np.testing.assert_array_equal(ATTACKS[name].run(data), whole)
    np.testing.assert_array_equal(ATTACKS[name].score(data, ATTACKS[name].options()), whole)
