"""The early-warning validation against loop references, null and oracle proxies, and the
loss-tail estimate on synthetic Gaussian losses with a known TPR."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm, spearmanr

from privdyn.analysis.proxies import PROXIES, Proxy, Traces
from privdyn.analysis.warning import (
    MemberView,
    ProxyValidation,
    WarningOptions,
    attack_truth,
    interval,
    per_model_tpr,
    precision_at_k,
    rank_auc,
    rank_spearman,
    recall_at_k,
    tail_tpr_estimate,
    tail_validation,
    validate_proxies,
)

# --- loop references: one row at a time, plain Python ------------------------------------------


def loop_hits(scores, truth, valid, k):
    """Expected truth count in the top k when ties at the k-th score are broken at random."""
    items = [(s if not math.isnan(s) else -math.inf, t) for s, t, v in zip(scores, truth, valid) if v]
    if not 1 <= k <= len(items):
        return math.nan
    values = sorted((s for s, _ in items), reverse=True)
    kth = values[k - 1]
    above = [t for s, t in items if s > kth]
    at = [t for s, t in items if s == kth]
    return sum(above) + (k - len(above)) / len(at) * sum(at)


def loop_auc(scores, truth, valid):
    pos = [(s if not math.isnan(s) else -math.inf) for s, t, v in zip(scores, truth, valid) if v and t]
    neg = [(s if not math.isnan(s) else -math.inf) for s, t, v in zip(scores, truth, valid) if v and not t]
    if not pos or not neg:
        return math.nan
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return total / (len(pos) * len(neg))


def loop_spearman(scores, target, valid):
    x = [(s if not math.isnan(s) else -1e300) for s, v in zip(scores, valid) if v]
    y = [t for t, v in zip(target, valid) if v]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return spearmanr(x, y).statistic


def random_rows(rng, rows=4, n=30, levels=None):
    s = rng.normal(size=(rows, n)) if levels is None else rng.choice(levels, size=(rows, n))
    s[rng.random((rows, n)) < 0.1] = np.nan
    truth = rng.random((rows, n)) < 0.2
    valid = rng.random((rows, n)) < 0.85
    return s, truth, valid


@pytest.mark.parametrize("levels", [None, [0.0, 1.0, 2.0]])  # continuous, and heavily tied
def test_ranking_metrics_equal_loop_references(levels):
    rng = np.random.default_rng(0)
    for _ in range(5):
        s, truth, valid = random_rows(rng, levels=levels)
        k = rng.integers(1, 12, size=len(s))
        n_truth = (truth & valid).sum(axis=1)
        target = rng.normal(size=s.shape)
        want_p = [loop_hits(s[r], truth[r], valid[r], k[r]) / k[r] for r in range(len(s))]
        want_r = [loop_hits(s[r], truth[r], valid[r], k[r]) / n_truth[r] if n_truth[r] else math.nan
                  for r in range(len(s))]
        np.testing.assert_allclose(precision_at_k(s, truth, valid, k), want_p, equal_nan=True)
        np.testing.assert_allclose(recall_at_k(s, truth, valid, k), want_r, equal_nan=True)
        np.testing.assert_allclose(rank_auc(s, truth, valid), [loop_auc(s[r], truth[r], valid[r])
                                                               for r in range(len(s))], equal_nan=True)
        np.testing.assert_allclose(rank_spearman(s, target, valid),
                                   [loop_spearman(s[r], target[r], valid[r]) for r in range(len(s))],
                                   rtol=1e-10, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 25), st.integers(1, 25), st.data())
def test_precision_does_not_depend_on_sample_order(n, k, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    s = rng.choice([0.0, 1.0, np.nan], size=(1, n))
    truth = rng.random((1, n)) < 0.4
    valid = np.ones((1, n), dtype=bool)
    perm = rng.permutation(n)
    a = precision_at_k(s, truth, valid, np.array([k]))
    b = precision_at_k(s[:, perm], truth[:, perm], valid, np.array([k]))
    np.testing.assert_allclose(a, b, equal_nan=True)
    want = loop_hits(s[0], truth[0], valid[0], k)
    np.testing.assert_allclose(a * k, [want], equal_nan=True)


def test_interval_is_a_student_t_interval():
    v = np.array([[0.1, 0.3, 0.5, np.nan], [1.0, np.nan, np.nan, np.nan]])
    mean, lo, hi, n = interval(v, 0.95)
    assert mean[0] == pytest.approx(0.3) and n.tolist() == [3, 1]
    half = 4.302653 * 0.2 / math.sqrt(3)  # t_{0.975, 2}, sd 0.2
    assert (hi[0] - mean[0]) == pytest.approx(half, rel=1e-5) and (mean[0] - lo[0]) == pytest.approx(half, rel=1e-5)
    assert mean[1] == 1.0 and np.isnan(lo[1]) and np.isnan(hi[1])


def test_member_view_handles_unbalanced_memberships():
    z = np.array([[1, 0, 1, 1], [0, 1, 0, 0]], dtype=bool)
    view = MemberView.of(z)
    assert view.valid.tolist() == [[True, True, True], [True, False, False]]
    x = np.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(view.take(x)[0], [0.0, 2.0, 3.0])
    assert view.take(x)[1, 0] == 5.0 and np.isnan(view.take(x)[1, 1:]).all()


# --- the validation: null, oracle and loop agreement ------------------------------------------

def balanced_membership(rng, m, n):
    z = np.zeros((m, n), dtype=bool)
    for j in range(m // 2):
        half = rng.permutation(n)[: n // 2]
        z[2 * j, half] = True
        z[2 * j + 1] = ~z[2 * j]
    return z


def test_null_proxy_gives_auc_one_half_and_precision_base_rate():
    """Random proxy scores: AUC about 0.5, precision at k about the truth's share of the members."""
    rng = np.random.default_rng(1)
    T, M, N = 3, 8, 4000
    z = balanced_membership(rng, M, N)
    truth = (rng.random((M, N)) < 0.1) & z
    tr = Traces(np.arange(1, T + 1), rng.random((T, M, N)))
    PROXIES.register("test_random", Proxy(lambda tr: tr.loss[-1]))
    try:
        res = validate_proxies(tr, z, {"attack": truth}, rng.random(N),
                               WarningOptions(proxies=("test_random",), k_share=0.1))
    finally:
        PROXIES.unregister("test_random")
    auc = res.summary("test_random", "attack", "auc", "all").mean
    prec = res.summary("test_random", "attack", "precision", "1%").mean
    rho = res.summary("test_random", "final_advantage", "spearman", "all").mean
    assert np.abs(auc - 0.5).max() < 0.02
    assert np.abs(prec - 0.1).max() < 0.03  # the truth is 10% of each model's members
    assert np.abs(rho).max() < 0.03
    assert res.k_used[("attack", "1%")].tolist() == [200] * M


def test_oracle_proxy_gives_precision_one():
    """A proxy equal to the ground truth finds it: precision 1 at k = |truth|, AUC 1, and at
    k = 1% wherever the truth has at least k members."""
    rng = np.random.default_rng(2)
    T, M, N = 4, 6, 1000
    z = balanced_membership(rng, M, N)
    final = rng.normal(size=(M, N)) + 3 * (rng.random((M, N)) < 0.05) * z
    truth = attack_truth(final, z, "fpr:0.01")
    loss = np.broadcast_to(np.where(truth, 1.0, 0.0), (T, M, N)).copy()
    adv = truth.mean(axis=0)
    res = validate_proxies(Traces(np.arange(1, T + 1), loss), z, {"attack": truth, "final_high": adv > 0.2}, adv,
                           WarningOptions(proxies=("loss_mean",)))
    np.testing.assert_allclose(res.summary("loss_mean", "attack", "precision", "truth").mean, 1.0)
    np.testing.assert_allclose(res.summary("loss_mean", "attack", "auc", "all").mean, 1.0)
    has_k = res.truth_size["attack"] >= res.k_used[("attack", "1%")]
    assert has_k.any()
    np.testing.assert_allclose(res.values[("loss_mean", "attack", "precision", "1%")][:, has_k], 1.0)


def test_proxies_validated_in_threads_give_the_same_values():
    """With workers > 1 several proxies are computed at once: every value, key and key order is the one
    of the serial validation, whatever the thread count (more threads than proxies included)."""
    rng = np.random.default_rng(5)
    T, M, N = 6, 4, 400
    z = balanced_membership(rng, M, N)
    loss = rng.exponential(size=(T, M, N)).round(2)  # ties
    tr = Traces(np.arange(1, T + 1), loss, phi=rng.normal(size=(T, M, N)), correct=(rng.random((T, M, N)) < .7) * 1.0)
    truths = {"attack": (rng.random((M, N)) < 0.1) & z, "final_high": rng.random(N) < 0.1}
    adv = rng.random(N)
    serial = validate_proxies(tr, z, truths, adv, WarningOptions())
    assert len(serial.proxies) >= 5
    for workers in (2, 3, 64):
        threaded = validate_proxies(tr, z, truths, adv, WarningOptions(workers=workers))
        assert list(threaded.values) == list(serial.values)
        for key, v in serial.values.items():
            np.testing.assert_array_equal(threaded.values[key], v)
    with pytest.raises(ValueError, match="unknown proxies \\['no_such_proxy'\\]"):
        validate_proxies(tr, z, truths, adv, WarningOptions(proxies=("loss_mean", "no_such_proxy"), workers=2))


def test_the_stage_sizes_its_model_blocks_for_every_proxy_at_once(monkeypatch):
    """Blocks shrink with the proxies validated at once, so the budget holds with threads."""
    from privdyn.pipeline import warning as stage

    monkeypatch.setattr(stage, "MEMORY_BUDGET", 100 * 50 * 1000 * 64)
    assert stage._block_size(50, 1000, 1000, workers=1) == 100  # 24 + 40 bytes per entry
    assert stage._block_size(50, 1000, 1000, workers=4) == 100 * 64 // (24 + 4 * 40)
    assert stage._block_size(50, 64, 10**9, workers=8) == 1  # never below one model
    assert stage.usable_cpus() >= 1


def test_validation_equals_a_loop_over_models_and_epochs():
    """Every value of validate_proxies equals the loop reference on model m's members with the
    proxy computed from m's traces up to t; blocks of models join to the whole."""
    rng = np.random.default_rng(3)
    T, M, N = 4, 4, 60
    z = balanced_membership(rng, M, N)
    epochs = np.arange(0, T + 1)  # e_0 is left out
    loss = rng.exponential(size=(T + 1, M, N)).round(1)  # ties
    phi = rng.normal(size=(T + 1, M, N))
    truth = (rng.random((M, N)) < 0.2) & z
    high = rng.random(N) < 0.15
    adv = rng.random(N).round(1)
    tr = Traces(epochs, loss, phi=phi)
    opt = WarningOptions(proxies=("lt_iqr", "margin_slope"), k_share=0.1)
    res = validate_proxies(tr, z, {"attack": truth, "final_high": high}, adv, opt)
    assert res.epochs.tolist() == [1, 2, 3, 4]
    blocks = ProxyValidation.concat([validate_proxies(
        Traces(epochs, loss[:, b], phi=phi[:, b]), z[b], {"attack": truth[b], "final_high": high}, adv, opt)
        for b in (slice(0, 1), slice(1, 4))])
    for key in res.values:
        np.testing.assert_allclose(blocks.values[key], res.values[key], equal_nan=True)
    for j, t in enumerate(range(1, T + 1)):
        for m in range(M):
            members = np.flatnonzero(z[m])
            head = Traces(epochs[1:t + 1], loss[1:t + 1, m][:, members], phi=phi[1:t + 1, m][:, members])
            k = math.ceil(0.1 * len(members))
            for proxy, fn in (("lt_iqr", lambda h: np.quantile(h.loss, .75, axis=0) - np.quantile(h.loss, .25, axis=0)),
                              ("margin_slope", lambda h: np.polyfit(h.epochs, h.phi, 1)[0] if h.n_epochs > 1
                               else np.full(h.phi.shape[1], np.nan))):
                s = np.asarray(fn(head))
                for name, tm in (("attack", truth[m, members]), ("final_high", high[members])):
                    valid = [True] * len(members)
                    n_truth = int(tm.sum())
                    hits = loop_hits(list(s), list(tm), valid, k)
                    want = {("precision", "1%"): hits / k if n_truth else math.nan,
                            ("precision", "truth"): (loop_hits(list(s), list(tm), valid, n_truth) / n_truth
                                                     if n_truth else math.nan),
                            ("recall", "1%"): hits / n_truth if n_truth else math.nan,
                            ("auc", "all"): loop_auc(list(s), list(tm), valid)}
                    for (metric, kk), w in want.items():
                        got = res.values[(proxy, name, metric, kk)][j, m]
                        assert got == pytest.approx(w, nan_ok=True, rel=1e-6, abs=1e-9), (proxy, name, metric, t, m)
                rho = loop_spearman(list(s), list(adv[members]), valid)
                assert res.values[(proxy, "final_advantage", "spearman", "all")][j, m] == pytest.approx(
                    rho, nan_ok=True, rel=1e-6, abs=1e-9)
    cols = res.columns()
    assert set(cols) >= {"proxy", "truth", "epoch", "k", "metric", "mean", "ci_low", "ci_high", "n_models"}
    assert len({len(v) for v in cols.values()}) == 1


def test_k_mean_averages_the_models_whose_truth_is_not_empty():
    """A model the attack flags nothing on has no metric at k = |truth| (NaN, not counted in
    n_models), so its k = 0 must not pull the table's k_mean down either."""
    rng = np.random.default_rng(5)
    T, M, N = 2, 4, 400
    z = rng.random((M, N)) < np.array([[0.9], [0.5], [0.5], [0.3]])
    truth = z & (rng.random((M, N)) < np.array([[0.0], [0.1], [0.2], [0.3]]))
    res = validate_proxies(Traces(np.arange(1, T + 1), rng.exponential(size=(T, M, N))), z, {"attack": truth},
                           rng.random(N), WarningOptions(proxies=("loss_mean",)))
    table = pd.DataFrame(res.columns()).query("truth == 'attack' and proxy == 'loss_mean'")
    used = truth.sum(axis=1) > 0
    for k, want in (("truth", truth.sum(axis=1)[used].mean()),
                    ("1%", np.ceil(0.01 * z.sum(axis=1)[used]).mean())):
        rows = table[table.k == k]
        assert set(rows.n_models) == {int(used.sum())}
        assert len(rows) >= T and rows.k_mean.tolist() == pytest.approx([want] * len(rows))
    assert table[table.metric == "auc"].k_mean.isna().all()


def test_attack_truth_follows_the_plane_rule():
    rng = np.random.default_rng(4)
    z = balanced_membership(rng, 4, 500)
    s = rng.normal(size=(4, 500))
    tau = np.quantile(s[~z], 0.999)
    np.testing.assert_array_equal(attack_truth(s, z, "fpr:0.001"), (s > tau) & z)
    np.testing.assert_array_equal(attack_truth(s, z, "score:0"), (s > 0) & z)


# --- the loss-tail estimate ---------------------------------------------------------------------

def test_tail_estimate_recovers_a_known_tpr_on_gaussian_losses():
    """Members' losses N(0, 1), non-members' N(d, 1): the LOSS attack's TNR at FNR alpha is
    1 - Phi(z_{1-alpha} - d), which equals the TPR at FPR alpha of the Gaussian test with shift d."""
    rng = np.random.default_rng(5)
    M, N, d = 4, 400_000, 2.0
    z = balanced_membership(rng, M, N)
    loss = rng.normal(size=(M, N)) + d * ~z
    for alpha in (0.001, 0.01):
        known = 1 - norm.cdf(norm.ppf(1 - alpha) - d)
        est = tail_tpr_estimate(loss, z, alpha)
        assert np.abs(est - known).max() < 0.01, (alpha, est, known)
        # the attack that scores -loss has the same TPR at FPR alpha by symmetry of the shift
        np.testing.assert_allclose(per_model_tpr(-loss, z, alpha), known, atol=0.01)


def test_tail_validation_streams_and_matches_per_checkpoint_calls():
    rng = np.random.default_rng(6)
    T, M, N = 3, 4, 2000
    z = balanced_membership(rng, M, N)
    loss = rng.exponential(size=(T, M, N)) * np.where(z, 0.5, 1.0)
    scores = -loss + rng.normal(size=(T, M, N)) * 0.1
    tv = tail_validation(loss, z, scores, np.arange(1, T + 1), (0.001, 0.01))
    for t in range(T):
        np.testing.assert_array_equal(tv.estimate[t, 1], tail_tpr_estimate(loss[t], z, 0.01))
        np.testing.assert_array_equal(tv.measured[t, 0], per_model_tpr(scores[t], z, 0.001))
    no_scores = tail_validation(loss, z, None, np.arange(1, T + 1))
    assert np.isnan(no_scores.measured).all()
    cols = tv.columns()
    assert set(np.unique(cols["quantity"])) == {"estimate", "measured", "abs_error"}
    assert len(cols["epoch"]) == 3 * 2 * T
