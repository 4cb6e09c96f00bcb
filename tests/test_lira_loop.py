"""LiRA against a deliberately plain loop implementation (the reference code's layout)."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from privdyn.attacks.base import CheckpointData
from privdyn.attacks.lira import lira_offline_cdf, lira_online, lira_online_fixed
from privdyn.attacks.lira import LiraOptions as AttackOptions  # per-attack options since issue 4
from privdyn.training.membership import balanced_membership


def _loop_scores(phi, z, variant, floor=1e-6):
    """One target, one sample, one query at a time; references = all other models."""
    M, N, Q = phi.shape
    out = np.zeros((M, N))
    for m in range(M):
        if variant == "fixed":
            var_in = np.zeros(Q)
            var_out = np.zeros(Q)
            for q in range(Q):
                vi, vo = [], []
                for i in range(N):
                    ins = [phi[r, i, q] for r in range(M) if r != m and z[r, i]]
                    outs = [phi[r, i, q] for r in range(M) if r != m and not z[r, i]]
                    vi.append(np.var(ins))
                    vo.append(np.var(outs))
                var_in[q], var_out[q] = np.mean(vi), np.mean(vo)
        for i in range(N):
            total = 0.0
            for q in range(Q):
                ins = [phi[r, i, q] for r in range(M) if r != m and z[r, i]]
                outs = [phi[r, i, q] for r in range(M) if r != m and not z[r, i]]
                mu_in, mu_out = np.mean(ins), np.mean(outs)
                if variant == "fixed":
                    s_in, s_out = math.sqrt(var_in[q]), math.sqrt(var_out[q])
                else:
                    s_in, s_out = np.std(ins), np.std(outs)
                s_in, s_out = max(s_in, floor), max(s_out, floor)
                x = phi[m, i, q]
                if variant == "offline":
                    total += norm.logcdf((x - mu_out) / s_out)
                else:
                    total += norm.logpdf(x, mu_in, s_in) - norm.logpdf(x, mu_out, s_out)
            out[m, i] = total
    return out


@pytest.mark.parametrize("variant,fn", [("online", lira_online), ("fixed", lira_online_fixed),
                                        ("offline", lira_offline_cdf)])
@pytest.mark.parametrize("q", [1, 2])
def test_lira_matches_loop(variant, fn, q):
    rng = np.random.default_rng(0)
    M, N = 8, 30
    z = balanced_membership(M, N, 5)
    phi = rng.normal(size=(M, N, q)) * 2 + 3 * z[..., None] + rng.normal(size=(1, N, 1)) * 5
    data = CheckpointData({"phi": phi}, {}, z)
    np.testing.assert_allclose(fn(data, AttackOptions()), _loop_scores(phi, z, variant), rtol=1e-9, atol=1e-9)


def test_lira_separates_members_on_gaussian_signals():
    rng = np.random.default_rng(1)
    M, N = 64, 300
    z = balanced_membership(M, N, 2)
    # per-sample offsets that only a per-sample attack can remove, plus an IN shift of 2
    phi = rng.normal(size=(M, N, 1)) + 2.0 * z[..., None] + rng.normal(size=(1, N, 1)) * 4
    s = lira_online(CheckpointData({"phi": phi}, {}, z), AttackOptions())
    # Gaussians with equal variance and mean gap 2: the optimal AUC is Phi(2 / sqrt(2)) = 0.921
    from privdyn.analysis.model_level import global_auc

    assert abs(global_auc(s, z) - norm.cdf(2 / math.sqrt(2))) < 0.015


def test_lira_needs_four_models():
    from privdyn.errors import PrivdynError

    z = balanced_membership(2, 10, 0)
    with pytest.raises(PrivdynError, match="at least 4 models"):
        lira_online(CheckpointData({"phi": np.zeros((2, 10, 1))}, {}, z), AttackOptions())


def test_zero_variance_sample_gives_finite_scores():
    z = balanced_membership(8, 10, 0)
    phi = np.ones((8, 10, 1))
    for fn in (lira_online, lira_online_fixed, lira_offline_cdf):
        assert np.isfinite(fn(CheckpointData({"phi": phi}, {}, z), AttackOptions())).all()
