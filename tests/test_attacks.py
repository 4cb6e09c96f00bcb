"""Every attack against a deliberately plain loop implementation (one target, sample, query at a time)."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from privdyn.attacks import ATTACKS, CheckpointData
from privdyn.attacks.lira import LiraOptions
from privdyn.attacks.references import drop_orders, reference_plan
from privdyn.attacks.rmia import RmiaOfflineOptions, RmiaOptions
from privdyn.attacks.shokri import ShokriOptions
from privdyn.training.membership import balanced_membership


def make_data(M=8, N=30, Q=2, Nt=17, seed=0, membership=None, round_to=None, rule="pair"):
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
    return CheckpointData(pool, test, z, reference_plan(z, rule))


def is_paired(z):
    M = z.shape[0]
    return M % 2 == 0 and all((z[2 * j] != z[2 * j + 1]).all() for j in range(M // 2))


def refs(z, m, i, rule="pair", seed=0):
    """DESIGN.md's reference rules stated plainly: the reference models of target m on sample i."""
    M = z.shape[0]
    others = [r for r in range(M) if r != m]
    if rule == "one":
        return others
    if rule == "pair" and is_paired(z):
        return [r for r in others if r != m ^ 1]
    n_in = sum(bool(z[r, i]) for r in others)
    c = min(n_in, len(others) - n_in)  # balanced: the other models' smaller side, on both sides
    order = list(drop_orders(M, z.shape[1], seed)[:, i])  # the sample's own drop order
    kept = []
    for side in ([r for r in others if z[r, i]], [r for r in others if not z[r, i]]):
        kept += sorted(side, key=order.index)[len(side) - c:]  # drop the first in the drop order
    return sorted(kept)


def population_refs(z, m, rule="pair"):
    """References of target m on a population sample (no model trained on it)."""
    partner = rule == "pair" and is_paired(z)
    return [r for r in range(z.shape[0]) if r != m and not (partner and r == m ^ 1)]


# ----- LiRA ------------------------------------------------------------------------------------
def lira_loop(phi, z, variant, center="mean", floor=1e-6, rule="pair"):
    M, N, Q = phi.shape
    centre = np.mean if center == "mean" else np.median
    out = np.zeros((M, N))
    for m in range(M):
        pooled_in, pooled_out = np.zeros(Q), np.zeros(Q)
        for q in range(Q):
            pooled_in[q] = np.mean([np.var([phi[r, i, q] for r in refs(z, m, i, rule) if z[r, i]])
                                    for i in range(N)])
            pooled_out[q] = np.mean([np.var([phi[r, i, q] for r in refs(z, m, i, rule) if not z[r, i]])
                                     for i in range(N)])
        for i in range(N):
            total = 0.0
            for q in range(Q):
                ins = [phi[r, i, q] for r in refs(z, m, i, rule) if z[r, i]]
                outs = [phi[r, i, q] for r in refs(z, m, i, rule) if not z[r, i]]
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
@pytest.mark.parametrize("design,rule", [("pairs", "pair"), ("pairs", "balanced"), ("pairs", "one"),
                                         ("mixed", "pair"), ("mixed", "one")])
def test_lira_matches_loop(name, center, Q, design, rule):
    z = balanced_membership(8, 24, Q) if design == "pairs" else mixed_membership(9, 24, Q)
    data = make_data(M=z.shape[0], N=24, Q=Q, membership=z, rule=rule)
    got = ATTACKS[name].run(data, LiraOptions(center=center))
    want = lira_loop(data.pool["phi"], z, name, center, rule=rule)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("M,rule", [(8, "pair"), (10, "pair"), (8, "one")])
def test_lira_median_even_and_odd_reference_counts(M, rule):
    # pair: M/2-1 references per side (3 odd at M=8, 4 even at M=10); one: 3 and 4 at M=8
    data = make_data(M=M, N=20, Q=1, seed=4, rule=rule)
    got = ATTACKS["lira_online"].run(data, LiraOptions(center="median"))
    want = lira_loop(data.pool["phi"], data.membership, "lira_online", "median", rule=rule)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


# ----- RMIA ------------------------------------------------------------------------------------
def rmia_loop(loss, loss_test, z, offline, a, gamma, population, rule="pair"):
    M, N, Q = loss.shape
    p, pt = np.exp(-loss), np.exp(-loss_test)

    def pr(values):
        mean = np.mean(values)
        return (1 + a) / 2 * mean + (1 - a) / 2 if offline else mean

    out = np.zeros((M, N))
    for m in range(M):
        ratio_x = np.zeros(N)
        for i in range(N):
            use = [r for r in refs(z, m, i, rule) if not (offline and z[r, i])]
            ratio_x[i] = np.mean([p[m, i, q] / pr([p[r, i, q] for r in use]) for q in range(Q)])
        pop = [np.mean([pt[m, j, q] / pr([pt[r, j, q] for r in population_refs(z, m, rule)]) for q in range(Q)])
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
@pytest.mark.parametrize("rule", ["pair", "one"])
def test_rmia_matches_loop(offline, a, gamma, population, Q, rule):
    data = make_data(M=6, N=20, Q=Q, Nt=15, seed=Q, rule=rule)
    if offline:
        name, opts = "rmia_offline", RmiaOfflineOptions(a=a, gamma=gamma, population=population)
    else:
        name, opts = "rmia", RmiaOptions(gamma=gamma, population=population)
    got = ATTACKS[name].run(data, opts)
    want = rmia_loop(data.pool["loss"], data.test["loss"], data.membership, offline, a, gamma, population, rule)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_rmia_matches_loop_without_pairs():
    z = mixed_membership(9, 20, 1)
    data = make_data(M=9, N=20, Q=1, Nt=15, membership=z)
    assert data.refs.rule == "balanced"
    got = ATTACKS["rmia_offline"].run(data, RmiaOfflineOptions())
    want = rmia_loop(data.pool["loss"], data.test["loss"], z, True, 0.3, 1.0, "test")
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("rule", ["pair", "one"])
@pytest.mark.parametrize("big", [[0], [0, 1], [0, 3]])
def test_rmia_is_stable_when_excluded_references_dominate(rule, big):
    # the excluded models' p_y dwarf the references': the mean over the rest must not cancel away
    from privdyn.attacks.references import ref_logmeanexp

    data = make_data(M=6, N=10, Q=1, seed=2, rule=rule)
    lp = -(300.0 + data.pool["loss"])
    lp[big] = -1e-9
    got = ref_logmeanexp(lp, None, data.refs)
    z = data.membership
    want = np.array([[[np.log(np.mean(np.exp(lp[refs(z, m, i, rule), i, 0] + 300))) - 300]
                      for i in range(10)] for m in range(6)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ----- Attack-R and baselines ------------------------------------------------------------------
def attack_r_loop(loss, z, rule="pair"):
    M, N, _ = loss.shape
    L = loss.mean(axis=-1)
    return np.array([[np.mean([L[r, i] >= L[m, i] for r in refs(z, m, i, rule) if not z[r, i]])
                      for i in range(N)] for m in range(M)])


@pytest.mark.parametrize("round_to", [None, 1])
@pytest.mark.parametrize("Q", [1, 2])
@pytest.mark.parametrize("rule", ["pair", "one"])
def test_attack_r_matches_loop_with_ties(round_to, Q, rule):
    data = make_data(M=8, N=40, Q=Q, round_to=round_to, rule=rule)
    got = ATTACKS["attack_r"].run(data)
    np.testing.assert_allclose(got, attack_r_loop(data.pool["loss"], data.membership, rule), rtol=1e-9, atol=0)


def test_attack_r_general_membership():
    z = np.random.default_rng(5).random((7, 30)) < 0.4
    z[:2], z[2:4] = False, True  # every sample keeps an IN and an OUT reference for every target
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
def shokri_loop(data, opts, rule="pair"):
    from privdyn.attacks.shokri import FEATURES, log_odds, make_classifier

    z = data.membership
    M, N = z.shape
    Q = data.pool["loss"].shape[-1]
    K = min(opts.folds, M) if rule == "one" else min(opts.folds, M // 2)
    fold = [r % K if rule == "one" else (r // 2) % K for r in range(M)]
    out = np.zeros((M, N))
    for m in range(M):
        train = [r for r in range(M) if fold[r] != fold[m]]
        X = [[data.pool[f][r, i, q] for f in FEATURES for q in range(Q)] for r in train for i in range(N)]
        y = [z[r, i] for r in train for i in range(N)]
        X, y = np.array(X), np.array(y)
        if len(y) > opts.max_train_rows:  # the documented seeded subsample of the fold's rows
            keep = np.sort(np.random.default_rng([opts.seed, fold[m]]).choice(len(y), opts.max_train_rows,
                                                                            replace=False))
            X, y = X[keep], y[keep]
        clf = make_classifier(opts).fit(X, y)
        target = np.array([[data.pool[f][m, i, q] for f in FEATURES for q in range(Q)] for i in range(N)])
        out[m] = log_odds(clf, target, opts)
    return out


@pytest.mark.parametrize("opts", [ShokriOptions(folds=3), ShokriOptions(folds=2, max_train_rows=100, seed=7),
                                  ShokriOptions(folds=6, classifier="mlp", hidden=4)])
@pytest.mark.parametrize("rule", ["pair", "one"])
def test_shokri_matches_loop(opts, rule):
    data = make_data(M=6, N=40, Q=2, rule=rule)
    want = shokri_loop(data, opts, rule)
    np.testing.assert_allclose(ATTACKS["shokri"].run(data, opts), want, rtol=1e-9, atol=1e-9)


def test_shokri_balances_rows_without_pairs():
    from privdyn.attacks.shokri import balanced_rows

    z = mixed_membership(9, 50, 3)
    keep = balanced_rows(z, seed=0)
    assert (keep <= np.ones_like(z)).all()
    np.testing.assert_array_equal((keep & z).sum(axis=0), (keep & ~z).sum(axis=0))
    np.testing.assert_array_equal((keep & z).sum(axis=0), np.minimum(z.sum(axis=0), (~z).sum(axis=0)))


# ----- no attack sees its target's own membership ----------------------------------------------
@pytest.mark.parametrize("name", [n for n in ATTACKS])
def test_target_membership_is_never_used(name):
    """Changing model m's membership row leaves s[m] unchanged (its references are other models)."""
    data = make_data(M=8, N=30, Q=2, seed=3)
    z2 = data.membership.copy()
    z2[2] = ~z2[2]
    flipped = CheckpointData(data.pool, data.test, z2, data.refs)
    np.testing.assert_allclose(ATTACKS[name].run(flipped)[2], ATTACKS[name].run(data)[2], rtol=1e-9, atol=1e-12)


def test_rmia_pool_population_uses_only_out_samples_of_the_target():
    data = make_data(M=6, N=20, Q=1, Nt=1)
    s = ATTACKS["rmia"].run(data, RmiaOptions(population="test+pool"))
    # 1 test sample + N/2 OUT pool samples per target: every share is a multiple of 1/11
    np.testing.assert_allclose(s * 11, np.round(s * 11), atol=1e-9)
