"""Training units: schedules, SAM's per-model ascent, augmentation, checkpoint plans, config checks,
optimizers, devices and the serialisable unit of work."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.config import OptimizerConfig, config_from_dict
from privdyn.errors import PrivdynError
from privdyn.models import build_model
from privdyn.training.augment import draw_flip_crop, flip_crop
from privdyn.training.engine import GroupTask, plan_groups, resolve_device
from privdyn.training.ensemble import EnsembleGroup, model_seed
from privdyn.training.optim import make_optimizer
from privdyn.training.sam import per_model_grad_norm, sam_perturbation
from privdyn.training.schedules import lr_schedule
from privdyn.training.trainer import StackedTrainer


# ----- schedules -----------------------------------------------------------------------------
def test_cosine_known_values():
    lr_at = lr_schedule("cosine", 0.4, steps_per_epoch=10, epochs=5)
    assert lr_at(0) == pytest.approx(0.4)
    assert lr_at(25) == pytest.approx(0.2)
    assert lr_at(50) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(12) == pytest.approx(0.2 * (1 + math.cos(math.pi * 12 / 50)))


def test_step_schedule_matches_torch_multisteplr():
    """Per-step lrs equal torch's MultiStepLR stepped once per epoch."""
    spe, epochs, ms, gamma = 3, 9, [2, 5, 5, 7], 0.5
    lr_at = lr_schedule("step", 1.0, spe, epochs, ms, gamma)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=ms, gamma=gamma)
    for e in range(epochs):
        for s in range(spe):
            assert lr_at(e * spe + s) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def test_constant_schedule():
    assert {lr_schedule("constant", 0.3, 4, 2)(s) for s in range(8)} == {0.3}


# ----- SAM -------------------------------------------------------------------------------------
def test_sam_ascent_uses_each_models_own_norm():
    """A group of K gives the perturbations of K groups of one; each has norm rho."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(4, 3, 5, generator=gen) * torch.tensor([1.0, 10, 0.1, 3]).view(4, 1, 1),
             torch.randn(4, 7, generator=gen)]
    grouped = sam_perturbation(grads, rho=0.05)
    for k in range(4):
        single = sam_perturbation([g[k:k + 1] for g in grads], rho=0.05)
        for a, b in zip(grouped, single):
            torch.testing.assert_close(a[k:k + 1], b)
        norm_k = math.sqrt(sum(float((e[k] ** 2).sum()) for e in grouped))
        assert norm_k == pytest.approx(0.05, rel=1e-5)
    # a norm over the whole stack would not give rho per model
    whole = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert not math.isclose(float(per_model_grad_norm(grads)[0]), whole)


def test_sam_zero_gradient_gives_zero_step():
    e = sam_perturbation([torch.zeros(2, 3)], rho=0.1)
    assert torch.equal(e[0], torch.zeros(2, 3))


def test_sam_step_matches_a_hand_written_reference():
    """One SAM step of the stacked trainer equals Foret et al.'s algorithm on each plain module."""
    shape, n, B, lr, rho = (6,), 16, 8, 0.1, 0.2
    factory = lambda: build_model("mlp", shape, 3, width=5, depth=1, norm="batch")  # noqa: E731
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, *shape, generator=gen), torch.randint(0, 3, (n,), generator=gen)
    in_idx = torch.stack([torch.arange(0, n, 2), torch.arange(1, n, 2)])
    group = EnsembleGroup(factory, [0, 1], seed=5, device=torch.device("cpu"))
    oc = OptimizerConfig(name="sam", base="sgd", rho=rho, lr=lr, momentum=0.0, weight_decay=0.0)
    trainer = StackedTrainer.from_config(group, oc, lambda s: lr, B, False, x, y, in_idx)
    order = in_idx.gather(1, group.epoch_order(n // 2, 1))
    trainer.train_epoch(1, 0)  # n/2 = B: one step
    for k, m in enumerate([0, 1]):
        torch.manual_seed(model_seed(5, m))
        mod = factory().train()
        xb, yb = x[order[k]], y[order[k]]
        params = list(mod.parameters())
        g1 = torch.autograd.grad(torch.nn.functional.cross_entropy(mod(xb), yb), params)
        norm = torch.sqrt(sum((g ** 2).sum() for g in g1))
        stats = {k2: v.clone() for k2, v in mod.named_buffers()}
        with torch.no_grad():
            for p, g in zip(params, g1):
                p.add_(rho * g / (norm + 1e-12))
        g2 = torch.autograd.grad(torch.nn.functional.cross_entropy(mod(xb), yb), params)
        with torch.no_grad():
            for p, ga, gb in zip(params, g1, g2):
                p.sub_(rho * ga / (norm + 1e-12)).sub_(lr * gb)
        for (name, p) in mod.named_parameters():
            torch.testing.assert_close(group.params[name][k], p, rtol=1e-5, atol=1e-6)
        for name, v in stats.items():  # running stats: updated by the first pass only
            torch.testing.assert_close(group.buffers[name][k], v)


# ----- augmentation ----------------------------------------------------------------------------
def flip_crop_loop(x: np.ndarray, params: np.ndarray, pad: int) -> np.ndarray:
    """Reference: pad, cut the window, mirror; one sample at a time."""
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(n):
        xp = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)))
        f, dy, dx = params[i]
        win = xp[:, dy:dy + h, dx:dx + w]
        out[i] = win[:, :, ::-1] if f else win
    return out


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       pad=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_flip_crop_equals_the_per_sample_loop(n, c, h, w, pad, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    params = torch.cat([torch.randint(0, 2, (n, 1), generator=gen),
                        torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)], dim=1)
    got = flip_crop(x, params, pad).numpy()
    np.testing.assert_array_equal(got, flip_crop_loop(x.numpy(), params.numpy(), pad))


def test_flip_crop_identity_and_batched_leading_axes():
    x = torch.randn(2, 3, 1, 5, 5)
    ident = torch.tensor([0, 4, 4]).expand(2, 3, 3)
    assert torch.equal(flip_crop(x, ident), x)
    flip = torch.tensor([1, 4, 4]).expand(2, 3, 3)
    assert torch.equal(flip_crop(x, flip), torch.flip(x, dims=(-1,)))


def test_augmentation_draws_do_not_depend_on_grouping():
    all3 = draw_flip_crop(7, [0, 1, 2], epoch=3, n=50)
    for k, m in enumerate([0, 1, 2]):
        assert torch.equal(all3[k], draw_flip_crop(7, [m], epoch=3, n=50)[0])
    assert not torch.equal(all3[1], draw_flip_crop(7, [1], epoch=4, n=50)[0])
    assert all3[..., 0].min() >= 0 and all3[..., 0].max() <= 1 and all3[..., 1:].max() <= 8


# ----- checkpoint plans and config checks --------------------------------------------------
def ckpts(**kw):
    training = {"epochs": kw.pop("epochs", 20)}
    return config_from_dict({"training": training, "checkpoints": kw}).checkpoint_epochs()


def test_checkpoint_schedules():
    assert ckpts(epochs=5) == [1, 2, 3, 4, 5]
    assert ckpts(epochs=7, every=3) == [3, 6, 7]
    cfg = config_from_dict({"training": {"epochs": 9}, "checkpoints": {"schedule": "list", "epochs": [9, 2, 2]}})
    assert cfg.checkpoint_epochs() == [2, 9]
    assert ckpts(epochs=20, schedule="dense_early", dense_until=4, every_after=5) == [1, 2, 3, 4, 9, 14, 19, 20]
    assert ckpts(epochs=3, schedule="dense_early", dense_until=10) == [1, 2, 3]
    assert ckpts(epochs=12, schedule="dense_early", dense_until=2, every_after=5, include_init=True) == [0, 1, 2, 7, 12]


@settings(max_examples=50, deadline=None)
@given(E=st.integers(1, 60), until=st.integers(1, 70), after=st.integers(1, 9))
def test_dense_early_plan_properties(E, until, after):
    got = ckpts(epochs=E, schedule="dense_early", dense_until=until, every_after=after)
    assert got == sorted(set(got)) and got[-1] == E and got[0] == 1
    assert [e for e in got if e <= until] == list(range(1, min(until, E) + 1))
    gaps = np.diff([e for e in got if e >= min(until, E)])  # sparse part: steps of `after`, a shorter last one
    assert (gaps[:-1] == after).all() and (gaps <= after).all()


@pytest.mark.parametrize("patch,needle", [
    ({"training": {"schedule": "step"}}, "training.milestones"),
    ({"training": {"schedule": "step", "milestones": [0]}}, "outside 1..training.epochs"),
    ({"checkpoints": {"save_weights": [21]}}, "checkpoints.save_weights"),
    ({"training": {"dp": {"enabled": True}}}, "model.norm=group or none"),
    ({"training": {"dp": {"enabled": True}, "optimizer": {"name": "sam"}}, "model": {"norm": "none"}},
     "optimizer.name=sam"),
    ({"model": {"norm": "layer"}}, "model.norm"),
    ({"training": {"optimizer": {"name": "sam", "rho": 0}}}, "rho"),
    ({"training": {"augment": "mixup"}}, "training.augment"),
])
def test_bad_training_config_names_the_field(patch, needle):
    data = {"training": {"epochs": 20}}
    for k, v in patch.items():
        data.setdefault(k, {}).update(v)
    with pytest.raises(PrivdynError, match=needle):
        config_from_dict(data)


# ----- optimizers, devices, tasks --------------------------------------------------------------
def test_optimizers_from_config():
    p = [torch.zeros(3, requires_grad=True)]
    sgd = make_optimizer(p, OptimizerConfig(name="sgd", momentum=0.8, nesterov=True, weight_decay=0.01))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8 and sgd.defaults["weight_decay"] == 0.01
    assert not make_optimizer(p, OptimizerConfig(momentum=0.0, nesterov=True)).defaults["nesterov"]
    assert isinstance(make_optimizer(p, OptimizerConfig(name="adam")), torch.optim.Adam)
    assert type(make_optimizer(p, OptimizerConfig(name="adamw"))) is torch.optim.AdamW
    assert type(make_optimizer(p, OptimizerConfig(name="sam", base="adamw"))) is torch.optim.AdamW


@pytest.mark.parametrize("oc", [
    OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    OptimizerConfig(name="sgd", lr=0.1, momentum=0.0, weight_decay=0.0),
    OptimizerConfig(name="adam", lr=0.01, weight_decay=0.01), OptimizerConfig(name="adamw", lr=0.01, weight_decay=0.1),
])
def test_fused_optimizers_equal_the_textbook_updates(oc):
    """The fused optimizers step exactly like torch's plain for-loop implementations."""
    torch.manual_seed(0)
    w0 = torch.randn(4, 5, dtype=torch.float64)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    fused = make_optimizer([a], oc)
    assert fused.defaults["fused"]
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[oc.name]
    kw = {"momentum": oc.momentum, "nesterov": oc.nesterov and oc.momentum > 0} if oc.name == "sgd" else {}
    plain = cls([b], lr=oc.lr, weight_decay=oc.weight_decay, foreach=False, **kw)
    for _ in range(4):
        g = torch.randn(4, 5, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    torch.testing.assert_close(a, b)


def test_weight_decay_shrinks_weights_without_gradient():
    w = torch.ones(4, requires_grad=True)
    opt = make_optimizer([w], OptimizerConfig(name="sgd", lr=0.5, momentum=0.0, weight_decay=0.1))
    w.grad = torch.zeros(4)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((4,), 1 - 0.5 * 0.1))


def test_device_resolution(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(PrivdynError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(PrivdynError, match="not a device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_group_task_json_roundtrip():
    tasks = plan_groups(10, 4)
    assert [t.model_ids for t in tasks] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    for t in tasks:
        back = GroupTask.from_dict(json.loads(json.dumps(t.to_dict())))
        assert back == t and hash(back) == hash(t)
