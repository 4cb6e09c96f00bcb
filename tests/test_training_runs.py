"""Training through the train stage on tiny configs: batched groups equal the one-model path,
several queries per sample, safetensors weights, DP-SGD, and the checks that need the data."""

import json
import math

import numpy as np
import pytest
import torch

from privdyn import pipeline
from privdyn.config import config_from_dict
from privdyn.data import load_dataset
from privdyn.errors import PrivdynError
from privdyn.models import build_model
from privdyn.store.arrays import open_array
from privdyn.store.rundir import RunDir
from privdyn.training.ensemble import EnsembleGroup, model_seed
from privdyn.training.signals import SIGNALS, signals_from_logits
from privdyn.training.weights import load_weights, save_weights, weights_path


def base(**over):
    """A tiny image config (digits, 8x8, one channel); ``over`` merges into its sections."""
    data = {"name": "t", "seed": 4,
            "dataset": {"name": "digits", "n_pool": 96, "n_test": 40},
            "model": {"arch": "cnn", "width": 4, "depth": 2, "norm": "batch"},
            "training": {"n_models": 4, "epochs": 3, "batch_size": 16, "group_size": 4,
                         "optimizer": {"name": "sgd", "lr": 0.05}},
            "analysis": {"grid": 2}}
    for k, v in over.items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    return data


def train(tmp_path, data, name="run"):
    cfg = config_from_dict(data)
    run = RunDir(tmp_path / name)
    run.init(cfg)
    pipeline.train(cfg, run, progress=False)
    return run, {s: np.asarray(open_array(run.signal_path(s))) for s in SIGNALS}


@pytest.mark.parametrize("model", [
    {"arch": "mlp", "width": 16, "depth": 1, "norm": "batch"},
    {"arch": "cnn", "width": 4, "depth": 2, "norm": "batch"},
])
@pytest.mark.parametrize("optimizer", [{"name": "sgd", "lr": 0.05, "nesterov": True},
                                       {"name": "sam", "rho": 0.1, "lr": 0.05}])
def test_group_of_four_equals_groups_of_one(tmp_path, model, optimizer):
    over = {"model": model}
    training = {**base()["training"], "optimizer": optimizer}
    _, four = train(tmp_path, base(**over, training={**training, "group_size": 4}), "g4")
    _, one = train(tmp_path, base(**over, training={**training, "group_size": 1}), "g1")
    for s in ("phi", "loss", "top1"):
        np.testing.assert_allclose(four[s], one[s], rtol=1e-4, atol=1e-4, err_msg=s)
    assert (four["correct"] != one["correct"]).mean() < 0.01


def test_augmentation_and_schedule_do_not_depend_on_grouping(tmp_path):
    training = {**base()["training"], "augment": "flip_crop", "schedule": "step", "milestones": [1],
                "optimizer": {"name": "adamw", "lr": 0.01}}
    _, two = train(tmp_path, base(training={**training, "group_size": 2}), "g2")
    _, one = train(tmp_path, base(training={**training, "group_size": 1}), "g1")
    np.testing.assert_allclose(two["phi"], one["phi"], rtol=1e-4, atol=1e-4)
    _, plain = train(tmp_path, base(training={**training, "augment": "none"}), "plain")
    assert not np.allclose(plain["phi"], one["phi"], atol=1e-3)  # augmentation did something


def test_several_queries_end_to_end(tmp_path):
    """Q = 4 queries: stored per query, each equal to the identity query on transformed inputs."""
    queries = ["identity", "hflip", "shift:1,0", "shift:-2,1"]
    data = base(queries=queries, checkpoints={"save_weights": [3]})
    cfg = config_from_dict(data)
    run, sig = train(tmp_path, data)
    T, M, N, Q = sig["phi"].shape
    assert (T, M, Q) == (3, 4, 4) and N == 96
    assert np.asarray(open_array(run.signal_path("loss", "test"))).shape == (3, 4, 40, 4)
    # rebuild model 2 from its saved weights; query q's signal = identity on the transformed batch
    ds = load_dataset("digits", 96, 40, cfg.seed)
    sd, _ = load_weights(weights_path(run.path, 3, 2))
    mod = build_model("cnn", ds.input_shape, ds.num_classes, width=4, depth=2, norm="batch")
    mod.load_state_dict(sd)
    mod.eval()
    x = ds.x_pool
    def shifted(dx, dy):  # reference shift with zero fill, one sample at a time
        out = np.zeros_like(x)
        for i in range(len(x)):
            for r in range(8):
                for c in range(8):
                    if 0 <= r - dy < 8 and 0 <= c - dx < 8:
                        out[i, :, r, c] = x[i, :, r - dy, c - dx]
        return out
    views = [x, x[..., ::-1].copy(), shifted(1, 0), shifted(-2, 1)]
    for q, v in enumerate(views):
        with torch.no_grad():
            ref = signals_from_logits(mod(torch.from_numpy(v)), torch.from_numpy(ds.y_pool))
        np.testing.assert_allclose(sig["phi"][-1, 2, :, q], ref["phi"].numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(sig["phi"][..., 0], sig["phi"][..., 1])
    # the attacks take Q > 1 (LiRA sums over queries)
    pipeline.score(cfg, run, progress=False)
    assert np.isfinite(np.asarray(open_array(run.score_path("lira_online")))).all()


def test_saved_weights_rebuild_the_models(tmp_path):
    data = base(checkpoints={"save_weights": [0, 2]})
    run, sig = train(tmp_path, data)
    ds = load_dataset("digits", 96, 40, 4)
    for m in range(4):
        init, meta = load_weights(weights_path(run.path, 0, m))
        torch.manual_seed(model_seed(4, m))
        fresh = build_model("cnn", ds.input_shape, 10, width=4, depth=2, norm="batch")
        for k, v in fresh.state_dict().items():
            assert torch.equal(init[k], v), k
        assert meta["epoch"] == "0" and meta["model"] == str(m)
        sd, meta = load_weights(weights_path(run.path, 2, m))
        mc = json.loads(meta["model_config"])
        mod = build_model(mc.pop("arch"), tuple(json.loads(meta["input_shape"])), int(meta["num_classes"]), **mc)
        mod.load_state_dict(sd)
        mod.eval()
        with torch.no_grad():
            ref = signals_from_logits(mod(torch.from_numpy(ds.x_pool)), torch.from_numpy(ds.y_pool))
        np.testing.assert_allclose(sig["phi"][1, m, :, 0], ref["phi"].numpy(), rtol=1e-4, atol=1e-4)
    assert not list((run.path / "weights").rglob("*.tmp"))
    assert sorted(p.name for p in (run.path / "weights").iterdir()) == ["epoch_000", "epoch_002"]


def test_existing_weight_files_are_never_rewritten(tmp_path):
    group = EnsembleGroup(lambda: build_model("mlp", (3,), 2, width=2), [0, 1], 0, torch.device("cpu"))
    sds = group.model_state_dicts()
    assert save_weights(tmp_path, 1, [0, 1], sds, {}) == 2
    before = weights_path(tmp_path, 1, 0).stat().st_mtime_ns
    assert save_weights(tmp_path, 1, [0, 1], sds, {}) == 0
    assert weights_path(tmp_path, 1, 0).stat().st_mtime_ns == before


def test_augmentation_needs_images(tmp_path):
    data = base(dataset={"name": "synthetic", "n_pool": 40, "n_test": 20}, model={"arch": "mlp", "width": 4},
                training={**base()["training"], "augment": "flip_crop"})
    with pytest.raises(PrivdynError, match="training.augment=none"):
        train(tmp_path, data)


# ----- DP-SGD -----------------------------------------------------------------------------------
def dp_config(**dp):
    return base(dataset={"name": "synthetic", "n_pool": 64, "n_test": 20, "options": {"dim": 6, "classes": 3}},
                model={"arch": "mlp", "width": 8, "depth": 1, "norm": "none"},
                training={**base()["training"], "epochs": 2, "batch_size": 8, "group_size": 4,
                          "dp": {"enabled": True, **dp}})


def test_dp_run_records_epsilon_and_keeps_the_layout(tmp_path):
    from opacus.accountants import RDPAccountant

    run, sig = train(tmp_path, dp_config(noise_multiplier=1.1, max_grad_norm=0.5))
    assert sig["phi"].shape == (2, 4, 64, 1) and np.isfinite(sig["phi"]).all()
    rep = json.loads((run.path / "dp.json").read_text())
    n_train = 32
    assert rep["delta"] == pytest.approx(1 / n_train) and rep["sample_rate"] == pytest.approx(8 / 32)
    acc = RDPAccountant()
    for e, eps in zip([1, 2], rep["epsilon_per_checkpoint"]):
        while sum(h[2] for h in acc.history) < e * 4:  # 32 / 8 = 4 steps per epoch, one at a time
            acc.step(noise_multiplier=1.1, sample_rate=0.25)
        assert eps == pytest.approx(acc.get_epsilon(1 / n_train))
    assert set(rep["epsilon"]) == {"0", "1", "2", "3"}
    train_stage = run.manifest()["stages"]["train"]
    assert train_stage["group_size"] == 1 and train_stage["groups"] == 4


def test_dp_step_clips_each_sample_like_a_loop(tmp_path):
    """No noise, a tiny clipping norm, one step over every sample: w -= lr * mean_i clip(g_i)."""
    from privdyn.config import DPConfig, OptimizerConfig
    from privdyn.training.dp import DPTrainer

    gen = torch.Generator().manual_seed(0)
    n, C, lr = 12, 0.01, 0.5
    x, y = torch.randn(n, 5, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    factory = lambda: build_model("mlp", (5,), 3, width=4, depth=1, norm="group")  # noqa: E731
    group = EnsembleGroup(factory, [1], seed=2, device=torch.device("cpu"))
    ref = group.module(0)
    oc = OptimizerConfig(name="sgd", lr=lr, momentum=0.0, weight_decay=0.0)
    trainer = DPTrainer(group, oc, DPConfig(enabled=True, noise_multiplier=0.0, max_grad_norm=C),
                        lambda s: lr, n, False, x, y, torch.arange(n)[None])
    trainer.train_epoch(1, 0)  # batch_size = n: q = 1, one step over all samples
    params = list(ref.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(n):
        g = torch.autograd.grad(torch.nn.functional.cross_entropy(ref(x[i:i + 1]), y[i:i + 1]), params)
        norm = math.sqrt(sum(float((gi ** 2).sum()) for gi in g))
        for t, gi in zip(total, g):
            t += gi * min(1.0, C / (norm + 1e-6))
    for (name, p), t in zip(ref.named_parameters(), total):
        torch.testing.assert_close(group.params[name][0], p.detach() - lr * t / n, rtol=1e-5, atol=1e-7)
