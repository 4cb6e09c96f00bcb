"""Null models: with no membership signal every attack gives AUC 0.5 and mean advantage 0.

DESIGN.md "References": leave-one-out references are biased at small M (members score lower
by construction); the default leave-pair-out rule is not. The tolerances come from N and M: the
standard error of a null AUC over n1 = n0 = MN/2 independent pairs is 1/sqrt(3MN); the scores
of one sample share references, which inflates it by at most about 1.3 (measured, see
benchmarks/null_auc.py), so 4.5 standard errors bound it with room. The same tests with
``references: one`` must fail for the attacks whose bias DESIGN.md describes.
"""

import numpy as np
import pytest

from privdyn.analysis.model_level import global_auc
from privdyn.analysis.plane import compute_plane
from privdyn.attacks import ATTACKS, CheckpointData
from privdyn.attacks.references import reference_plan
from privdyn.training.membership import balanced_membership

REFERENCE_ATTACKS = ["lira_online", "lira_online_fixed", "lira_offline_cdf", "lira_offline_pdf",
                     "rmia", "rmia_offline", "attack_r", "shokri"]
N = 6000


def auc_tolerance(M, N):
    return 4.5 / np.sqrt(3 * M * N)


def advantage_tolerance(M, N, alpha):
    """Mean advantage = global TPR - alpha: the binomial spread of the IN flags, 4.5 sigma."""
    return 4.5 * np.sqrt(alpha * (1 - alpha) / (M * N / 2)) + 2 / (M * N)


def null_checkpoint(M, N, rule, seed=0):
    """Signals with per-sample difficulty but no dependence on membership."""
    rng = np.random.default_rng([seed, M])
    z = balanced_membership(M, N, seed)
    offset = rng.normal(size=(1, N, 1)) * 3
    probs = np.sort(rng.dirichlet(np.ones(5), size=(M, N, 1)), axis=-1)[..., ::-1]
    pool = {"phi": rng.normal(size=(M, N, 1)) + offset, "loss": rng.gamma(2.0, 0.5, size=(M, N, 1)) * np.exp(offset),
            "top1": probs[..., 0], "top2": probs[..., 1], "top3": probs[..., 2]}
    test = {"loss": rng.gamma(2.0, 0.5, size=(M, 400, 1))}
    return CheckpointData(pool, test, z, reference_plan(z, rule, seed))


def mean_advantage(scores, z, alpha=0.1):
    plane = compute_plane(scores[None], z, f"fpr:{alpha}")
    return float(plane.adv.mean())


@pytest.mark.parametrize("M", [4, 8, 16, 32])
@pytest.mark.parametrize("attack", REFERENCE_ATTACKS)
def test_null_auc_is_half_with_pair_references(attack, M):
    data = null_checkpoint(M, N, "pair")
    s = ATTACKS[attack].run(data)
    auc = global_auc(s, data.membership)
    assert abs(auc - 0.5) < auc_tolerance(M, N), f"{attack} M={M}: null AUC {auc:.4f}"
    adv = mean_advantage(s, data.membership)
    assert abs(adv) < advantage_tolerance(M, N, 0.1), f"{attack} M={M}: null mean advantage {adv:.4f}"


@pytest.mark.parametrize("attack,M", [("lira_online", 4), ("lira_online", 8), ("lira_online", 16),
                                      ("lira_online", 32), ("lira_online_fixed", 4), ("lira_online_fixed", 8),
                                      ("lira_online_fixed", 16), ("lira_offline_pdf", 4), ("lira_offline_pdf", 8)])
def test_null_auc_shows_the_leave_one_out_bias(attack, M):
    """The same null test fails under leave-one-out (N large enough that the tolerance is
    below the bias, which shrinks like 1/M), and passes on the same signals with pairs."""
    n = 60_000
    for rule, biased in (("one", True), ("pair", False)):
        data = null_checkpoint(M, n, rule)
        auc = global_auc(ATTACKS[attack].run(data), data.membership)
        assert bool(auc < 0.5 - auc_tolerance(M, n)) == biased, f"{attack} M={M} {rule}: null AUC {auc:.4f}"


@pytest.mark.parametrize("M", [4, 8])
def test_null_auc_is_half_without_complementary_pairs(M):
    """A balanced matrix whose pairs are shuffled away falls back to per-sample balancing."""
    rng = np.random.default_rng(2)
    z = balanced_membership(M, N, 1)
    z = np.take_along_axis(z, np.argsort(rng.random(z.shape), axis=0), axis=0)  # shuffle each column
    base = null_checkpoint(M, N, "pair", seed=1)
    data = CheckpointData(base.pool, base.test, z, reference_plan(z, "pair", 1))
    assert data.refs.rule == "balanced"
    for attack in REFERENCE_ATTACKS:
        auc = global_auc(ATTACKS[attack].run(data), z)
        assert abs(auc - 0.5) < auc_tolerance(M, N), f"{attack} M={M}: {auc:.4f}"


def unlike_models_checkpoint(z, seed=0):
    """Null signals from models that differ from each other: a per-model offset (calibration,
    overall confidence) on every signal, as real shadow models have, and still no dependence
    on membership."""
    M, n = z.shape
    rng = np.random.default_rng([seed, M, 7])
    offset, b = rng.normal(size=(1, n, 1)) * 3, rng.normal(size=(M, 1, 1)) * 2
    probs = np.sort(rng.dirichlet(np.ones(5), size=(M, n, 1)), axis=-1)[..., ::-1]
    probs[..., 0] = probs[..., 0] ** np.exp(b / 2)
    pool = {"phi": rng.normal(size=(M, n, 1)) / 2 + offset + b,
            "loss": rng.gamma(8.0, 0.125, size=(M, n, 1)) * np.exp(offset - b),
            "top1": probs[..., 0], "top2": probs[..., 1], "top3": probs[..., 2]}
    test = {"loss": rng.gamma(8.0, 0.125, size=(M, 400, 1)) * np.exp(-b)}
    return CheckpointData(pool, test, z, reference_plan(z, "pair", seed))


def shuffled_columns(M, n, seed):
    """Balanced columns (M/2 IN each) without complementary pairs."""
    z = balanced_membership(M, n, seed)
    return np.take_along_axis(z, np.argsort(np.random.default_rng(seed).random(z.shape), axis=0), axis=0)


@pytest.mark.parametrize("design", ["balanced columns", "iid"])
def test_null_auc_is_half_for_unlike_models_without_pairs(design):
    """The balanced fallback must not let the target's own bit choose its references: with one
    drop order for every sample, the model first in it served only as a reference of the target's
    own side, and with an iid membership the kept count depended on the target's bit (it was
    taken over the whole column): model-level offsets alone gave lira_offline_cdf 0.448, attack_r
    0.451 and rmia_offline 0.478 (balanced columns) and lira_online 0.486 (iid) here. A
    per-sample order and counts taken over the other models keep it 0.5, for balanced columns and
    for an iid membership (the LiRA reference code's keep arrays)."""
    M, n = 8, 30_000
    if design == "balanced columns":
        z = shuffled_columns(M, n, 3)
    else:  # the samples every target can score: at least two models on each side
        z = np.random.default_rng(4).random((M, n)) < 0.5
        k = z.sum(axis=0)
        z = z[:, (k >= 2) & (k <= M - 2)]
        n = z.shape[1]
    data = unlike_models_checkpoint(z, seed=3)
    assert data.refs.rule == "balanced"
    for attack in REFERENCE_ATTACKS:
        s = ATTACKS[attack].run(data)
        auc = global_auc(s, z)
        assert abs(auc - 0.5) < auc_tolerance(M, n), f"{attack} ({design}): null AUC {auc:.4f}"


def test_null_auc_is_half_for_unlike_models_with_pairs():
    """The pair rule never depended on the target's bit: the same unlike models give 0.5."""
    z = balanced_membership(8, N, 3)
    data = unlike_models_checkpoint(z, seed=3)
    assert data.refs.rule == "pair"
    for attack in REFERENCE_ATTACKS:
        auc = global_auc(ATTACKS[attack].run(data), z)
        assert abs(auc - 0.5) < auc_tolerance(8, N), f"{attack}: null AUC {auc:.4f}"


@pytest.mark.slow
def test_quickstart_initialisation_checkpoint_is_null(tmp_path):
    """Real signals with no membership effect: the quickstart's models at initialisation."""
    from privdyn import open_run
    from privdyn.config import load_config
    from privdyn.pipeline import score, train
    from privdyn.store.rundir import RunDir

    attacks = [*REFERENCE_ATTACKS, "loss", "confidence", "entropy", "mentropy"]
    cfg = load_config(None, ["training.epochs=1", "checkpoints.include_init=true", f"attacks={attacks}"])
    rundir = RunDir(tmp_path / "q")
    rundir.init(cfg)
    train(cfg, rundir, progress=False)
    score(cfg, rundir, progress=False)  # the scores are all this test reads
    run = open_run(tmp_path / "q")
    assert run.epochs[0] == 0
    M, n = run.membership.shape
    for attack in attacks:
        auc = global_auc(np.asarray(run.scores(attack)[0]), run.membership)
        assert abs(auc - 0.5) < auc_tolerance(M, n), f"{attack}: epoch-0 AUC {auc:.4f}"
