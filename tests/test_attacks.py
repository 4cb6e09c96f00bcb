"""Every attack against a deliberately plain loop implementation (one target, sample, query at a time)."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from privdyn.attacks import ATTACKS, CheckpointData
from privdyn.attacks.lira import LiraOptions
from privdyn.attacks.rmia import RmiaOfflineOptions, RmiaOptions
from privdyn.attacks.shokri import ShokriOptions
from privdyn.training.membership import balanced_membership


def make_data(M=8, N=30, Q=2, Nt=17, seed=0, membership=None, round_to=None):
    """Signals with per-sample offsets and an IN shift; ``round_to`` creates ties."""
    rng = np.random.default_rng(seed)
    z = balanced_membership(M, N, seed) if membership is None else membership
    phi = rng.normal(size=(M, N, Q)) * 2 + 3 * z[..., None] + rng.normal(size=(1, N, 1)) * 5
    loss = rng.gamma(2.0, 0.7, size=(M, N, Q)) * np.where(z[..., None], 0.4, 1.0)
    probs = np.sort(rng.dirichlet(np.ones(5), size=(M, N, Q)), axis=-1)[..., ::-1]
    pool = {"phi": phi, "loss": loss, "top1": probs[..., 0], "top2": probs[..., 1], "top3": probs[..., 2],
            "entropy": rng.gamma(1.0, 1.0, size=(M, N, Q)), "mentropy": rng.gamma(1.0, 1.0, size=(M, N, Q))}
    if round_to is not None:
        pool = {k: np.round(v, round_to) for k, v in pool.items()}
    test = {"loss": rng.gamma(2.0, 0.7, size=(M, Nt, Q))}
    return CheckpointData(pool, test, z)


def refs(M, m):
    return [r for r in range(M) if r != m]


# ----- LiRA ------------------------------------------------------------------------------------
def lira_loop(phi, z, variant, center="mean", floor=1e-6):
    M, N, Q = phi.shape
    centre = np.mean if center == "mean" else np.median
    out = np.zeros((M, N))
    for m in range(M):
        pooled_in, pooled_out = np.zeros(Q), np.zeros(Q)
        for q in range(Q):
            pooled_in[q] = np.mean([np.var([phi[r, i, q] for r in refs(M, m) if z[r, i]]) for i in range(N)])
            pooled_out[q] = np.mean([np.var([phi[r, i, q] for r in refs(M, m) if not z[r, i]]) for i in range(N)])
        for i in range(N):
            total = 0.0
            for q in range(Q):
                ins = [phi[r, i, q] for r in refs(M, m) if z[r, i]]
                outs = [phi[r, i, q] for r in refs(M, m) if not z[r, i]]
                if variant == "lira_online_fixed":
                    s_in, s_out = math.sqrt(pooled_in[q]), math.sqrt(pooled_out[q])
                else:
                    s_in, s_out = np.std(ins), np.std(outs)
                s_in, s_out = max(s_in, floor), max(s_out, floor)
                x = phi[m, i, q]
                mu_out = centre(outs)
                if variant == "lira_offline_cdf":
                    total += norm.logcdf((x - mu_out) / s_out)
                elif variant == "lira_offline_pdf":
                    total -= norm.logpdf(x, mu_out, s_out)
                else:
                    total += norm.logpdf(x, centre(ins), s_in) - norm.logpdf(x, mu_out, s_out)
            out[m, i] = total
    return out


def mixed_membership(M, N, seed):
    """Unbalanced random membership in which every sample has two IN and two OUT models."""
    z = np.random.default_rng(seed).random((M, N)) < 0.5
    z[:2], z[2:4] = True, False
    return z


@pytest.mark.parametrize("name", ["lira_online", "lira_online_fixed", "lira_offline_cdf", "lira_offline_pdf"])
@pytest.mark.parametrize("center", ["mean", "median"])
@pytest.mark.parametrize("Q", [1, 3])
@pytest.mark.parametrize("balanced", [True, False])
def test_lira_matches_loop(name, center, Q, balanced):
    z = balanced_membership(8, 24, Q) if balanced else mixed_membership(9, 24, Q)
    data = make_data(M=z.shape[0], N=24, Q=Q, membership=z)
    got = ATTACKS[name].run(data, LiraOptions(center=center))
    np.testing.assert_allclose(got, lira_loop(data.pool["phi"], z, name, center), rtol=1e-9, atol=1e-9)


def test_lira_median_even_and_odd_reference_counts():
    # M = 8 balanced: an IN target has 3 IN refs (odd) and 4 OUT refs (even)
    data = make_data(M=8, N=20, Q=1, seed=4)
    got = ATTACKS["lira_online"].run(data, LiraOptions(center="median"))
    np.testing.assert_allclose(got, lira_loop(data.pool["phi"], data.membership, "lira_online", "median"),
                               rtol=1e-9, atol=1e-9)


# ----- RMIA ------------------------------------------------------------------------------------
def rmia_loop(loss, loss_test, z, offline, a, gamma, population):
    M, N, Q = loss.shape
    p, pt = np.exp(-loss), np.exp(-loss_test)

    def pr(values):
        mean = np.mean(values)
        return (1 + a) / 2 * mean + (1 - a) / 2 if offline else mean

    out = np.zeros((M, N))
    for m in range(M):
        ratio_x = np.zeros(N)
        for i in range(N):
            use = [r for r in refs(M, m) if not (offline and z[r, i])]
            ratio_x[i] = np.mean([p[m, i, q] / pr([p[r, i, q] for r in use]) for q in range(Q)])
        pop = [np.mean([pt[m, j, q] / pr([pt[r, j, q] for r in refs(M, m)]) for q in range(Q)])
               for j in range(loss_test.shape[1])]
        if population == "test+pool":
            pop += [ratio_x[i] for i in range(N) if not z[m, i]]
        for i in range(N):
            out[m, i] = np.mean([ratio_x[i] / rz > gamma for rz in pop])
    return out


@pytest.mark.parametrize("offline,a", [(False, 1.0), (True, 0.3), (True, 0.0), (True, 1.0)])
@pytest.mark.parametrize("gamma", [1.0, 0.8, 2.0])
@pytest.mark.parametrize("population", ["test", "test+pool"])
@pytest.mark.parametrize("Q", [1, 2])
def test_rmia_matches_loop(offline, a, gamma, population, Q):
    data = make_data(M=6, N=20, Q=Q, Nt=15, seed=Q)
    if offline:
        name, opts = "rmia_offline", RmiaOfflineOptions(a=a, gamma=gamma, population=population)
    else:
        name, opts = "rmia", RmiaOptions(gamma=gamma, population=population)
    got = ATTACKS[name].run(data, opts)
    want = rmia_loop(data.pool["loss"], data.test["loss"], data.membership, offline, a, gamma, population)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_rmia_is_stable_when_one_reference_dominates():
    # the target's own p_y dwarfs the references': the leave-one-out mean must not cancel away
    data = make_data(M=6, N=10, Q=1, seed=2)
    loss = data.pool["loss"].copy()
    loss[0] = 1e-9
    loss[1:] = 300.0 + loss[1:]
    lp = -loss
    from privdyn.attacks.loo import loo_logmeanexp

    got = loo_logmeanexp(lp, None)
    want = np.array([[[np.log(np.mean(np.exp(lp[refs(6, m), i, 0] + 300))) - 300]
                      for i in range(10)] for m in range(6)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ----- Attack-R and baselines ------------------------------------------------------------------
def attack_r_loop(loss, z):
    M, N, _ = loss.shape
    L = loss.mean(axis=-1)
    return np.array([[np.mean([L[r, i] >= L[m, i] for r in refs(M, m) if not z[r, i]])
                      for i in range(N)] for m in range(M)])


@pytest.mark.parametrize("round_to", [None, 1])
@pytest.mark.parametrize("Q", [1, 2])
def test_attack_r_matches_loop_with_ties(round_to, Q):
    data = make_data(M=8, N=40, Q=Q, round_to=round_to)
    got = ATTACKS["attack_r"].run(data)
    np.testing.assert_allclose(got, attack_r_loop(data.pool["loss"], data.membership), rtol=1e-9, atol=0)


def test_attack_r_general_membership():
    z = np.random.default_rng(5).random((7, 30)) < 0.4
    z[:2] = False  # every sample keeps at least one OUT reference for every target
    data = make_data(M=7, N=30, Q=1, membership=z, round_to=1)
    np.testing.assert_allclose(ATTACKS["attack_r"].run(data), attack_r_loop(data.pool["loss"], z), rtol=1e-9)


@pytest.mark.parametrize("name,signal,fn", [
    ("loss", "loss", lambda v: -v), ("confidence", "loss", lambda v: math.exp(-v)),
    ("entropy", "entropy", lambda v: -v), ("mentropy", "mentropy", lambda v: -v)])
def test_baselines_match_loop(name, signal, fn):
    data = make_data(M=4, N=12, Q=3)
    x = data.pool[signal]
    M, N, Q = x.shape
    want = np.array([[np.mean([fn(x[m, i, q]) for q in range(Q)]) for i in range(N)] for m in range(M)])
    np.testing.assert_allclose(ATTACKS[name].run(data), want, rtol=1e-9)


# ----- Shokri ----------------------------------------------------------------------------------
def shokri_loop(data, opts):
    from privdyn.attacks.shokri import FEATURES, log_odds, make_classifier

    z = data.membership
    M, N = z.shape
    Q = data.pool["loss"].shape[-1]
    K = min(opts.folds, M)
    out = np.zeros((M, N))
    for m in range(M):
        train = [r for r in range(M) if r % K != m % K]
        X = [[data.pool[f][r, i, q] for f in FEATURES for q in range(Q)] for r in train for i in range(N)]
        y = [z[r, i] for r in train for i in range(N)]
        X, y = np.array(X), np.array(y)
        if len(y) > opts.max_train_rows:  # the documented seeded subsample of the fold's rows
            keep = np.sort(np.random.default_rng([opts.seed, m % K]).choice(len(y), opts.max_train_rows,
                                                                            replace=False))
            X, y = X[keep], y[keep]
        clf = make_classifier(opts).fit(X, y)
        target = np.array([[data.pool[f][m, i, q] for f in FEATURES for q in range(Q)] for i in range(N)])
        out[m] = log_odds(clf, target, opts)
    return out


@pytest.mark.parametrize("opts", [ShokriOptions(folds=3), ShokriOptions(folds=2, max_train_rows=100, seed=7),
                                  ShokriOptions(folds=6, classifier="mlp", hidden=4)])
def test_shokri_matches_loop(opts):
    data = make_data(M=6, N=40, Q=2)
    np.testing.assert_allclose(ATTACKS["shokri"].run(data, opts), shokri_loop(data, opts), rtol=1e-9, atol=1e-9)


# ----- no attack sees its target's own membership ----------------------------------------------
@pytest.mark.parametrize("name", [n for n in ATTACKS])
def test_target_membership_is_never_used(name):
    """Changing model m's membership row leaves s[m] unchanged (leave-one-out / leave-one-fold-out)."""
    data = make_data(M=8, N=30, Q=2, seed=3)
    z2 = data.membership.copy()
    z2[2] = ~z2[2]
    flipped = CheckpointData(data.pool, data.test, z2)
    np.testing.assert_allclose(ATTACKS[name].run(flipped)[2], ATTACKS[name].run(data)[2], rtol=1e-9, atol=1e-12)


def test_rmia_pool_population_uses_only_out_samples_of_the_target():
    data = make_data(M=6, N=20, Q=1, Nt=1)
    s = ATTACKS["rmia"].run(data, RmiaOptions(population="test+pool"))
    # 1 test sample + N/2 OUT pool samples per target: every share is a multiple of 1/11
    np.testing.assert_allclose(s * 11, np.round(s * 11), atol=1e-9)
