"""Defences inside every model's training (training/defence.py, the `defence` config section): each
intervention changes only the flagged samples' contribution, the flags follow their rule, the
oracle is labelled, and a killed-and-resumed defended run equals a straight one bit for bit."""

import copy
import json

import numpy as np
import pytest
import torch

from privdyn import pipeline
from privdyn.config import (
    ANALYZE_SECTIONS,
    SCORE_SECTIONS,
    TRAIN_SECTIONS,
    RunConfig,
    config_from_dict,
    load_config,
)
from privdyn.errors import PrivdynError
from privdyn.store.arrays import open_array
from privdyn.store.rundir import RunDir
from privdyn.training.defence import (
    Defence,
    clip_factors,
    clipped_gradient,
    flag_top,
    per_sample_gradients,
    read_flags,
)
from privdyn.training.ensemble import EnsembleGroup
from privdyn.training.signals import SIGNALS
from privdyn.training.trainer import StackedTrainer

TINY = {
    "name": "def", "seed": 3,
    "dataset": {"name": "synthetic", "n_pool": 120, "n_test": 60,
                "options": {"dim": 8, "classes": 3, "difficulty": 0.6, "label_noise": 0.1}},
    "model": {"arch": "mlp", "width": 16, "depth": 1, "norm": "none"},
    "training": {"n_models": 4, "epochs": 4, "batch_size": 16, "group_size": 2,
                 "optimizer": {"name": "sgd", "lr": 0.1}},
    "attacks": ["lira_online"],
    "analysis": {"grid": 2, "sensitivity": False, "n_bootstrap": 10, "model_bootstrap": 10},
}


def cfg_with(**defence) -> dict:
    data = copy.deepcopy(TINY)
    data["defence"] = {"enabled": True, **defence}
    return data


# ----- config --------------------------------------------------------------------------------
def test_defaults_leave_every_existing_hash_unchanged(tiny_config_dict):
    """Values recorded before the defence section existed: old run directories stay current."""
    for cfg, train, score, analyze in [
            (RunConfig(), "d3e7db6921f6926b", "2dbb218941db9e52", "5e69059c41ee46ab"),
            (config_from_dict(tiny_config_dict), "ea3cafa45b0bfdd3", "f719726b728b5ca3", "d7cbc88257410222"),
            (load_config(None), "f25d67cf060721e8", "214f0c0ef7b49196", "e187a05f6edb08f8")]:
        assert cfg.section_hash(*TRAIN_SECTIONS) == train
        assert cfg.section_hash(*SCORE_SECTIONS) == score
        assert cfg.section_hash(*ANALYZE_SECTIONS) == analyze


def test_a_defence_that_is_off_changes_no_hash_and_one_that_is_on_does():
    plain = config_from_dict(TINY)
    off = config_from_dict({**TINY, "defence": {"enabled": False, "action": "clip", "share": 0.2}})
    on = config_from_dict(cfg_with(epoch=2))
    assert plain.section_hash(*TRAIN_SECTIONS) == off.section_hash(*TRAIN_SECTIONS)
    assert on.section_hash(*TRAIN_SECTIONS) != plain.section_hash(*TRAIN_SECTIONS)
    assert on.section_hash("dataset") == plain.section_hash("dataset")


@pytest.mark.parametrize("data,needle", [
    (cfg_with(rule="no_such_proxy"), "defence.rule: 'no_such_proxy' is no early-warning proxy"),
    (cfg_with(rule="lt_iqr", proxy_options={"bogus": 1}), "defence.proxy_options: ['bogus']"),
    (cfg_with(rule="random", proxy_options={"since": 1}), "rule random takes no options"),
    (cfg_with(rule="oracle:"), "oracle needs a run directory"),
    (cfg_with(epoch=4), "defence.epoch=4 is not before the last epoch; pick one of [1, 2, 3]"),
    (cfg_with(epoch=0), "defence.epoch=0 is not a checkpoint epoch, so no signals exist there to flag from; "
                        "pick one of [1, 2, 3]"),
    (cfg_with(epoch=9, rule="oracle:runs/x"), "pick one of [0, 1, 2, 3] (the checkpoint epochs before the last, "
                                              "or 0 for an oracle)"),
    (cfg_with(share=0.4, epoch=1, continuous=True), "would remove all 60 members"),
    # share x 3 flaggings < 1, but k = round(0.33 x 60) = 20 at each of them takes all 60 members
    (cfg_with(share=0.33, epoch=1, continuous=True), "k = max(1, round(share x 60 members)) = 20 removed at "
                                                     "each of 3 flaggings (epochs [1, 2, 3])"),
    (cfg_with(action="clip", epoch=2) | {"training": {**TINY["training"], "dp": {"enabled": True}}},
     "defence.action=clip: DP-SGD already clips"),
    (cfg_with(action="clip", epoch=2) | {"model": {**TINY["model"], "norm": "batch"}}, "BatchNorm mixes them"),
    (cfg_with(action="clip", epoch=2) | {"training": {**TINY["training"], "optimizer": {"name": "sam"}}},
     "SAM's two-pass step"),
    (cfg_with(epoch=2) | {"training": {**TINY["training"], "compile": True}}, "training.compile: not with a defence"),
    (cfg_with(share=0.0), "defence.share"),
])
def test_invalid_defences_name_the_field_and_the_fix(data, needle):
    with pytest.raises(PrivdynError) as e:
        config_from_dict(data)
    assert needle in str(e.value)


def test_a_removal_that_would_empty_a_smaller_pool_is_refused_once_the_data_is_loaded():
    """With dataset.n_pool unset the config cannot count the members; the train stage checks again
    on the loaded pool before any model trains."""
    from types import SimpleNamespace

    from privdyn.training.engine import check_training_data

    cfg = config_from_dict(cfg_with(share=0.3, epoch=1, continuous=True))  # 18 x 3 of 60 members: fine
    check_training_data(cfg, SimpleNamespace(name="synthetic", n_pool=120, input_shape=(8,)))
    with pytest.raises(PrivdynError, match=r"= 2 removed at each of 3 flaggings .* would remove all 5 members"):
        check_training_data(cfg, SimpleNamespace(name="synthetic", n_pool=10, input_shape=(8,)))


def test_the_oracle_rule_parses_its_run_and_attack_and_is_labelled():
    d = config_from_dict(cfg_with(rule="oracle:runs/base:rmia", epoch=2)).defence
    assert d.is_oracle and d.oracle_source() == ("runs/base", "rmia")
    assert config_from_dict(cfg_with(rule="oracle:/a/b", epoch=2)).defence.oracle_source() == ("/a/b", None)
    assert "ORACLE" in d.label()
    assert not config_from_dict(cfg_with(epoch=2)).defence.is_oracle


# ----- flag selection --------------------------------------------------------------------------
def test_flag_top_takes_k_members_only_ties_to_the_lower_index_and_skips_excluded():
    scores = np.array([[5.0, 1.0, 9.0, 9.0, np.nan, 7.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    members = np.array([[0, 1, 3, 4], [1, 2, 4, 5]])  # sample 2 (score 9) is no member of model 0
    flags = flag_top(scores, members, 2)
    assert flags[0].tolist() == [True, False, False, True, False, False]
    assert flags[1].tolist() == [False, True, True, False, False, False]  # ties: lower index first
    again = flag_top(scores, members, 1, exclude=flags)
    assert again[0].tolist() == [False, True, False, False, False, False]  # NaN ranks last
    assert again[1].tolist() == [False, False, False, False, True, False]
    assert not (again & flags).any()
    assert flag_top(scores, members, 10).sum(axis=1).tolist() == [3, 3]  # one member always trains
    assert flag_top(scores, members, 2, exclude=flags).sum(axis=1).tolist() == [1, 1]


def _trained(tmp_path, name, data):
    cfg = config_from_dict(data)
    run = RunDir(tmp_path / name)
    run.init(cfg)
    pipeline.train(cfg, run, progress=False)
    return cfg, run


def test_proxy_flags_are_the_top_k_of_each_models_own_members_by_its_own_signals(tmp_path):
    from privdyn.analysis.proxies import Traces, proxy_scores

    cfg, run = _trained(tmp_path, "p", cfg_with(rule="loss_mean", epoch=2, share=0.1, continuous=True))
    flags, epochs, desc = read_flags(run.path)
    assert epochs.tolist() == [2, 3] and desc["rule_kind"] == "proxy" and desc["oracle"] is False
    z = np.load(run.path / "membership.npy")
    k = round(0.1 * 60)
    loss = np.asarray(open_array(run.signal_path("loss")))[..., 0]  # [T, M, N]
    for j, e in enumerate(epochs):
        assert (flags[j] <= z).all(), "only a model's own members can be flagged"
        for m in range(4):
            members = np.flatnonzero(z[m])
            score = proxy_scores("loss_mean", Traces(np.arange(1, e + 1), loss[:e, m]))
            previous = flags[j - 1, m] if j else np.zeros(z.shape[1], dtype=bool)
            new = flags[j, m] & ~previous
            assert new.sum() == k
            cand = members[~previous[members]]
            top = cand[np.lexsort((cand, -score[cand]))[:k]]
            assert set(np.flatnonzero(new)) == set(top)
    assert flags[1].sum(axis=1).tolist() == [2 * k] * 4  # continuous removal accumulates


def test_random_flags_are_seeded_and_independent_of_the_grouping(tmp_path):
    _, a = _trained(tmp_path, "a", cfg_with(rule="random", epoch=1))
    data = cfg_with(rule="random", epoch=1)
    data["training"]["group_size"] = 4
    _, b = _trained(tmp_path, "b", data)
    fa, fb = read_flags(a.path)[0], read_flags(b.path)[0]
    assert np.array_equal(fa, fb) and fa.sum() == 4 * 3


# ----- the actions on one group ------------------------------------------------------------------
def _group(k=2, seed=0, n=40, dim=6, classes=3, dropout=0.0):
    from privdyn.models import build_model

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    group = EnsembleGroup(lambda: build_model("mlp", (dim,), classes, width=8, depth=1, norm="none", dropout=dropout),
                          list(range(k)), seed, torch.device("cpu"))
    in_idx = torch.stack([torch.randperm(n, generator=g)[: n // 2].sort().values for _ in range(k)])
    return group, x, y, in_idx


def _defence(action, in_idx, n, **kw):
    cfg = config_from_dict(cfg_with(action=action, epoch=2, **kw)).defence
    return Defence(cfg, 0, list(range(in_idx.shape[0])), in_idx.numpy(), n, [1, 2, 3, 4], 4, torch.device("cpu"))


def _flags(in_idx, n, per_model=3, seed=1):
    """Flags on ``per_model`` samples that are members of every model of the group (so a sample
    flagged is flagged wherever it trains), as many per model."""
    common = np.flatnonzero(np.all([np.isin(np.arange(n), row) for row in in_idx.numpy()], axis=0))
    chosen = np.random.default_rng(seed).choice(common, per_model, replace=False)
    flags = np.zeros((in_idx.shape[0], n), dtype=bool)
    flags[:, chosen] = True
    return flags


def _params(group):
    return {k: v.detach().clone() for k, v in group.params.items()}


def _trainer(group, x, y, in_idx, defence=None, batch_size=8, lr=0.1):
    opt = torch.optim.SGD(group.params.values(), lr=lr, momentum=0.9)
    t = StackedTrainer(group, opt, lambda s: lr, batch_size, False, x, y, in_idx)
    t.defence = defence
    return t


def test_removed_samples_receive_no_gradient_after_the_intervention():
    """Scrambling the removed samples' inputs and labels changes nothing; and training with them
    flagged equals training with them absent from the members, bit for bit."""
    n = 40
    runs = []
    for scramble in (False, True):
        group, x, y, in_idx = _group()
        flags = _flags(in_idx, n)
        if scramble:
            mask = torch.from_numpy(flags.any(axis=0))
            x = torch.where(mask.unsqueeze(1), torch.randn_like(x) * 100, x)
            y = torch.where(mask, (y + 1) % 3, y)
        d = _defence("remove", in_idx, n)
        d.set_flags(flags)
        t = _trainer(group, x, y, in_idx, d)
        step = 0
        for e in (1, 2):
            step = t.train_epoch(e, step)
        assert step == 2 * 3  # the schedule advances by epochs: 20 members, batches of 8
        runs.append(_params(group))
    for k in runs[0]:
        assert torch.equal(runs[0][k], runs[1][k]), k

    group, x, y, in_idx = _group()
    kept = torch.stack([row[~torch.from_numpy(flags[k])[row]] for k, row in enumerate(in_idx)])
    t = _trainer(group, x, y, kept)
    for e in (1, 2):
        t.train_epoch(e, 0)
    for k, v in _params(group).items():
        assert torch.equal(v, runs[0][k]), k


def test_removal_under_dp_sgd_drops_the_removed_samples_from_every_batch(tmp_path):
    """The DP path (Opacus, one plain module): scrambling the removed samples changes nothing."""
    from privdyn.data import load_dataset
    from privdyn.training.engine import GroupTask, make_trainer
    from privdyn.training.membership import balanced_membership

    data = cfg_with(epoch=2) | {"training": {**TINY["training"], "dp": {"enabled": True, "noise_multiplier": 0.5}}}
    cfg = config_from_dict(data)
    ds = load_dataset(cfg.dataset.name, cfg.dataset.n_pool, cfg.dataset.n_test, cfg.seed, cfg.dataset.options)
    z = balanced_membership(4, ds.n_pool, cfg.seed)
    out = []
    for scramble in (False, True):
        t = make_trainer(cfg, ds, z, GroupTask(0, (0,)), torch.device("cpu"))
        flags = _flags(t.in_idx, ds.n_pool, per_model=6)
        t.defence.set_flags(flags)
        if scramble:
            mask = torch.from_numpy(flags[0])
            t.x = torch.where(mask.unsqueeze(1), torch.randn_like(t.x) * 100, t.x)
        t.train_epoch(1, 0)
        out.append(t.group.tensors()["params"])
    for k in out[0]:
        assert torch.equal(out[0][k], out[1][k]), k


def _manual_per_sample(group, x, y):
    """Per-sample gradients by plain autograd, one model and one sample at a time."""
    out = []
    for k in range(group.k):
        mod = group.module(k)
        rows = []
        for i in range(x.shape[1]):
            mod.zero_grad()
            torch.nn.functional.cross_entropy(mod(x[k, i:i + 1]), y[k, i:i + 1]).backward()
            rows.append({n: p.grad.detach().clone() for n, p in mod.named_parameters()})
        out.append(rows)
    return out


def test_per_sample_gradients_match_autograd_and_clipping_bounds_their_norms():
    group, x, y, in_idx = _group()
    xb, yb = x[in_idx[:, :6]], y[in_idx[:, :6]]
    grads = per_sample_gradients(group, xb, yb)
    manual = _manual_per_sample(group, xb, yb)
    for k in range(2):
        for i in range(6):
            for n, g in grads.items():
                torch.testing.assert_close(g[k, i], manual[k][i][n], rtol=1e-5, atol=1e-6)
    norms, factor = clip_factors(grads, 0.05)
    assert (norms > 0.05).any()
    clipped = sum((g * factor.view(2, 6, *[1] * (g.dim() - 2))).flatten(2).pow(2).sum(-1) for g in grads.values())
    assert (clipped.sqrt() <= 0.05 + 1e-6).all()
    assert torch.equal(factor[norms <= 0.05], torch.ones_like(factor[norms <= 0.05]))


def test_clipping_changes_only_the_flagged_samples_contribution():
    """The batch gradient is (1/B)(sum of the unflagged per-sample gradients as they are + sum of
    the flagged ones clipped); with a huge bound it is the plain batch gradient."""
    group, x, y, in_idx = _group()
    B = 8
    idx = in_idx[:, :B]
    xb, yb = x[idx], y[idx]
    flagged = torch.zeros(2, B, dtype=torch.bool)
    flagged[0, [1, 4]] = True
    flagged[1, [0, 2, 7]] = True
    manual = _manual_per_sample(group, xb, yb)
    clipped_gradient(group, xb, yb, flagged, clip_norm=0.05)
    got = {n: p.grad.clone() for n, p in group.params.items()}
    for k in range(2):
        norms = [torch.sqrt(sum(g.pow(2).sum() for g in manual[k][i].values())) for i in range(B)]
        for n in got:
            want = sum(manual[k][i][n] * (min(1.0, 0.05 / (float(norms[i]) + 1e-6)) if flagged[k, i] else 1.0)
                       for i in range(B)) / B
            torch.testing.assert_close(got[n][k], want, rtol=1e-4, atol=1e-6)
    for p in group.params.values():
        p.grad = None
    clipped_gradient(group, xb, yb, flagged, clip_norm=1e9)
    loose = {n: p.grad.clone() for n, p in group.params.items()}
    for p in group.params.values():
        p.grad = None
    group.loss(xb, yb).backward()
    for n, p in group.params.items():
        torch.testing.assert_close(loose[n], p.grad, rtol=1e-4, atol=1e-6)


def test_clip_noise_is_seeded_per_model_and_scaled():
    group, x, y, in_idx = _group()
    d = _defence("clip", in_idx, 40, clip_norm=0.5, noise_multiplier=2.0)
    d.set_flags(np.zeros((2, 40), dtype=bool))  # no sample flagged: the gradient is plain plus noise
    idx = in_idx[:, :8]
    grads = []
    for _ in range(2):
        for p in group.params.values():
            p.grad = None
        d.clip_step(group, torch.optim.SGD(group.params.values(), lr=0.1), x[idx], y[idx], idx, d.noise_generators(3))
        grads.append({n: p.grad.clone() for n, p in group.params.items()})
    for p in group.params.values():
        p.grad = None
    group.loss(x[idx], y[idx]).backward()
    noise = {n: (grads[0][n] - p.grad) * 8 for n, p in group.params.items()}  # (1/B) * N(0, (2 * 0.5)^2)
    for n in noise:
        assert torch.equal(grads[0][n], grads[1][n])
    flat = torch.cat([v.flatten() for v in noise.values()])
    assert 0.8 < float(flat.std()) < 1.2


def test_weight_scales_exactly_the_flagged_samples_loss():
    """The gradient under weight w is the unflagged samples' gradient plus w times the flagged ones'."""
    group, x, y, in_idx = _group()
    d = _defence("weight", in_idx, 40, weight=0.25)
    flags = _flags(in_idx, 40)
    d.set_flags(flags)
    idx = in_idx[:, :8]
    xb, yb = x[idx], y[idx]
    flagged = torch.from_numpy(flags).gather(1, idx)

    def grad_of(weights):
        for p in group.params.values():
            p.grad = None
        group.loss(xb, yb, weights=weights).backward()
        return {n: p.grad.clone() for n, p in group.params.items()}

    w = d.loss_weights(idx)
    assert torch.equal(w, torch.where(flagged, 0.25, 1.0))
    got, rest, only = grad_of(w), grad_of((~flagged).float()), grad_of(flagged.float())
    for n in got:
        torch.testing.assert_close(got[n], rest[n] + 0.25 * only[n], rtol=1e-5, atol=1e-7)


def test_weight_under_sam_uses_the_weighted_loss_in_both_passes():
    group, x, y, in_idx = _group()
    d = _defence("weight", in_idx, 40, weight=0.0)
    d.set_flags(_flags(in_idx, 40))
    opt = torch.optim.SGD(group.params.values(), lr=0.1)
    t = StackedTrainer(group, opt, lambda s: 0.1, 8, False, x, y, in_idx, rho=0.05)
    t.defence = d
    t.train_epoch(1, 0)  # runs: the weighted loss reaches both SAM passes
    assert all(torch.isfinite(p).all() for p in group.params.values())


# ----- oracle ------------------------------------------------------------------------------------
def test_the_oracle_reads_the_baseline_plane_and_is_labelled_as_an_oracle(tmp_path):
    from privdyn.analysis.plane import compute_plane

    base_cfg = config_from_dict(TINY)
    base = tmp_path / "base"
    pipeline.run_all(base_cfg, base, progress=False, with_report=False)
    cfg = config_from_dict(cfg_with(rule=f"oracle:{base}", epoch=1, share=0.1))
    run = RunDir(tmp_path / "orc")
    pipeline.run_all(cfg, run.path, progress=False, with_report=False)
    flags, epochs, desc = read_flags(run.path)
    assert desc["oracle"] is True and desc["rule_kind"] == "oracle" and desc["note"].startswith("ORACLE")
    assert "ORACLE" in desc["label"] and desc["oracle_source"]["run"] == str(base.resolve())
    assert desc["oracle_source"]["attack"] == "lira_online"
    scores = RunDir(base).load_scores("lira_online")
    z = np.load(base / "membership.npy")
    plane = compute_plane(np.asarray(scores[len(scores) - 1])[None], z, base_cfg.analysis.rule)
    adv, auc = plane.adv[0], plane.auc[0]
    for m in range(4):
        members = np.flatnonzero(z[m])
        order = members[np.lexsort((members, -auc[members], -adv[members]))]
        assert set(np.flatnonzero(flags[0, m])) == set(order[:6])
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert "defence.npz" in json.dumps(manifest["artifacts"]) and "defence.json" in json.dumps(manifest["artifacts"])


@pytest.mark.parametrize("rule,needle", [("oracle:{tmp}/nothing", "is not a privdyn run directory"),
                                         ("oracle:{tmp}/other", "has another pool")])
def test_an_oracle_that_cannot_work_is_refused_with_one_paragraph(tmp_path, rule, needle):
    other = {**copy.deepcopy(TINY), "seed": 4}
    RunDir(tmp_path / "other").init(config_from_dict(other))
    cfg = config_from_dict(cfg_with(rule=rule.format(tmp=tmp_path), epoch=1))
    run = RunDir(tmp_path / "r")
    run.init(cfg)
    with pytest.raises(PrivdynError) as e:
        pipeline.train(cfg, run, progress=False)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ----- resume --------------------------------------------------------------------------------------
class StopAfter:
    """A progress stand-in that interrupts the train stage after a number of epochs."""

    def __init__(self, n=None):
        self.n, self.done = n, 0

    def add_task(self, _label, total):
        return 0

    def advance(self, _task, k=1):
        self.done += k
        if self.n is not None and self.done >= self.n:
            raise KeyboardInterrupt


def _train_stage(path, data, progress=None):
    from privdyn.data import load_dataset
    from privdyn.pipeline import ensure_membership
    from privdyn.training.engine import run_train_stage

    cfg = config_from_dict(data)
    run = RunDir(path)
    run.init(cfg)
    ds = load_dataset(cfg.dataset.name, cfg.dataset.n_pool, cfg.dataset.n_test, cfg.seed, cfg.dataset.options)
    run_train_stage(cfg, run, ds, ensure_membership(cfg, run, ds.n_pool), progress)
    return run


@pytest.mark.parametrize("defence", [
    {"rule": "lt_iqr", "epoch": 1, "share": 0.1, "continuous": True},
    {"rule": "margin_slope", "epoch": 2, "action": "clip", "clip_norm": 0.1, "noise_multiplier": 0.5,
     "continuous": True},
    {"rule": "loss_mean", "epoch": 2, "action": "weight", "weight": 0.2},
], ids=["remove-continuous", "clip-noise", "weight"])
def test_a_killed_and_resumed_defended_run_equals_a_straight_one_bit_for_bit(tmp_path, defence):
    data = cfg_with(**defence)
    ref = _train_stage(tmp_path / "ref", data)
    path = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):  # group 0 done, group 1 stopped after its epoch 2
        _train_stage(path, data, StopAfter(6))
    g1 = path / "train" / "group_001"
    assert torch.load(g1 / "state.pt", weights_only=True)["epoch"] == 2
    (g1 / "t001.npz").unlink()  # killed between the state of epoch 2 and its signals
    _train_stage(path, data, StopAfter())
    for s in SIGNALS:
        a, b = (np.asarray(open_array(RunDir(p).signal_path(s))) for p in (ref.path, path))
        assert np.array_equal(a, b), s
    fa, fb = read_flags(ref.path), read_flags(path)
    assert np.array_equal(fa[0], fb[0]) and np.array_equal(fa[1], fb[1])
    plain = _train_stage(tmp_path / "plain", copy.deepcopy(TINY))
    assert not np.array_equal(np.asarray(open_array(plain.signal_path("phi"))),
                              np.asarray(open_array(ref.signal_path("phi"))))
