"""privdyn.audit: a user's model, data and recipe through the whole pipeline.

The reference is a deliberately plain hand-written loop: the same seeds (privdyn's per-model
initialisation seed and per-epoch data order), SGD steps, and the signals computed from the
logits. One-at-a-time training must match it bit for bit; batched training up to float rounding.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import privdyn
from privdyn.errors import PrivdynError
from privdyn.training.custom import Recipe, plan_batching
from privdyn.training.ensemble import epoch_generator, model_seed, stream_seed
from privdyn.training.signals import signals_from_logits
from privdyn.training.trainer import DROPOUT_STREAM

M, E, B, SEED = 4, 3, 16, 7


def make_data(n_pool: int = 96, n_test: int = 32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_pool + n_test, 6)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)).astype(np.int64)
    return x[:n_pool], y[:n_pool], x[n_pool:], y[n_pool:]


class Branchy(nn.Module):
    """A model vmap cannot batch: its forward branches on a tensor's value."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if h.mean() > 100:  # never true here, but vmap cannot know
            h = h * 0
        return self.b(h)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def hand_trained_phi(factory, membership: np.ndarray, data: tuple[np.ndarray, ...]) -> np.ndarray:
    """The margin phi [T, M, N] of M models trained by a plain loop with privdyn's seeds."""
    x, y = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    out = np.empty((E, M, len(y)), dtype=np.float32)
    for m in range(M):
        torch.manual_seed(model_seed(SEED, m))
        model = factory()
        opt = sgd(model.parameters())
        in_idx = torch.from_numpy(np.flatnonzero(membership[m]))
        for epoch in range(1, E + 1):
            torch.manual_seed(stream_seed(SEED, m, epoch, DROPOUT_STREAM))
            order = in_idx[torch.randperm(len(in_idx), generator=epoch_generator(SEED, m, epoch))]
            model.train()
            for idx in order.split(B):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                out[epoch - 1, m] = signals_from_logits(model(x), y)["phi"].numpy()
    return out


def audit(factory, out, **kw):
    kw.setdefault("recipe", Recipe(optimizer=sgd, epochs=E, batch_size=B))
    return privdyn.audit(factory, make_data(), out=out, n_models=M, seed=SEED, attacks=["lira_online", "loss"],
                         progress=False, report=False, **kw)


def test_one_at_a_time_equals_the_hand_written_loop_bit_for_bit(tmp_path):
    res = audit(Branchy, tmp_path / "run")
    assert not res.batched and "torch.func cannot batch" in res.reason
    run = res.run
    phi = np.asarray(run.signal("phi"))[..., 0]
    np.testing.assert_array_equal(phi, hand_trained_phi(Branchy, run.membership, make_data()))
    stage = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["train"]
    assert stage["training_mode"] == "one at a time" and "data-dependent" in stage["mode_reason"]
    assert run.summary()["model"].endswith("Branchy") and run.config.source.kind == "python"


def test_batched_training_matches_the_hand_written_loop_up_to_rounding(tmp_path):
    res = audit(mlp, tmp_path / "run")
    assert res.batched
    phi = np.asarray(res.run.signal("phi"))[..., 0]
    np.testing.assert_allclose(phi, hand_trained_phi(mlp, res.run.membership, make_data()), rtol=1e-4, atol=1e-4)


def test_forcing_one_at_a_time_gives_the_hand_loop_too_and_the_summary_is_complete(tmp_path):
    res = audit(mlp, tmp_path / "run", batched=False)
    assert not res.batched and res.reason == "batched=False was asked for"
    phi = np.asarray(res.run.signal("phi"))[..., 0]
    np.testing.assert_array_equal(phi, hand_trained_phi(mlp, res.run.membership, make_data()))
    s = res.run.summary()
    assert {"tpr_at_fpr_0.001", "auc", "recall_curve", "spearman_difficulty"} <= set(s)
    assert s["optimizer"].endswith("sgd") and len(s["test_accuracy"]) == E


def test_batched_true_is_refused_for_a_model_that_cannot_batch(tmp_path):
    with pytest.raises(PrivdynError, match="cannot train batched"):
        audit(Branchy, tmp_path / "run", batched=True)


def test_the_plan_falls_back_for_custom_steps_coupled_optimizers_and_groups():
    x, y = torch.from_numpy(make_data()[0]), torch.from_numpy(make_data()[1])
    dev = torch.device("cpu")

    def step(model, opt, xb, yb):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()

    assert "train_step" in plan_batching(mlp, Recipe(train_step=step), x, y, 0, dev).reason
    lbfgs = Recipe(optimizer=lambda p: torch.optim.LBFGS(p))
    assert "element by element" in plan_batching(mlp, lbfgs, x, y, 0, dev).reason

    def two_groups(params):
        ps = list(params)
        return torch.optim.SGD([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], lr=0.1)

    assert "parameter groups" in plan_batching(mlp, Recipe(optimizer=two_groups), x, y, 0, dev).reason
    assert plan_batching(mlp, Recipe(), x, y, 0, dev).batched
    # BatchNorm updates its running statistics in the probe's training step: still batchable
    bn = lambda: nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))  # noqa: E731
    assert plan_batching(bn, Recipe(), x, y, 0, dev).batched


def test_a_user_training_epoch_and_scheduler_are_used_and_resumable(tmp_path):
    seen: list[int] = []

    def epoch_fn(model, opt, batches, epoch):
        seen.append(epoch)
        for xb, yb in batches:
            opt.zero_grad()
            (nn.functional.cross_entropy(model(xb), yb) + 1e-3 * sum(p.square().sum() for p in model.parameters())
             ).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

    recipe = Recipe(optimizer=sgd, epochs=E, batch_size=B, train_epoch=epoch_fn,
                    schedule=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    res = audit(mlp, tmp_path / "run", recipe=recipe)
    assert not res.batched and seen == [1, 2, 3] * M
    again = audit(mlp, tmp_path / "run", recipe=recipe)  # everything current: nothing retrains
    assert seen == [1, 2, 3] * M
    np.testing.assert_array_equal(np.asarray(again.run.signal("phi")), np.asarray(res.run.signal("phi")))


def test_torch_datasets_give_the_same_run_as_arrays(tmp_path):
    xp, yp, xt, yt = make_data()
    pair = (torch.utils.data.TensorDataset(torch.from_numpy(xp), torch.from_numpy(yp)),
            torch.utils.data.TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)))
    a = privdyn.audit(mlp, pair, out=tmp_path / "a", n_models=M, seed=SEED, recipe=Recipe(epochs=2, batch_size=B),
                      attacks=["loss"], progress=False, report=False)
    b = privdyn.audit(mlp, make_data(), out=tmp_path / "b", n_models=M, seed=SEED,
                      recipe=Recipe(epochs=2, batch_size=B), attacks=["loss"], progress=False, report=False)
    np.testing.assert_array_equal(np.asarray(a.run.signal("loss")), np.asarray(b.run.signal("loss")))


def test_other_data_or_model_in_the_same_directory_is_refused(tmp_path):
    audit(mlp, tmp_path / "run")
    xp, yp, xt, yt = make_data()
    with pytest.raises(PrivdynError):
        privdyn.audit(mlp, (xp + 1, yp, xt, yt), out=tmp_path / "run", n_models=M, seed=SEED,
                      recipe=Recipe(optimizer=sgd, epochs=E, batch_size=B), attacks=["lira_online", "loss"],
                      progress=False, report=False)
    with pytest.raises(PrivdynError):
        audit(Branchy, tmp_path / "run")


@pytest.mark.parametrize(("data", "match"), [
    ((np.zeros((8, 3), np.float32), np.zeros(7, np.int64), np.zeros((2, 3), np.float32), np.zeros(2, np.int64)),
     "7 labels but x_pool has 8"),
    ((np.zeros((8, 3), np.float32), np.zeros(8, np.float32), np.zeros((2, 3), np.float32), np.zeros(2, np.int64)),
     "integer class labels"),
    ((np.full((8, 3), np.nan, np.float32), np.arange(8) % 2, np.zeros((2, 3), np.float32),
      np.zeros(2, np.int64)), "NaN"),
    ((np.zeros((8, 3), np.float32), np.zeros(8, np.int64), np.zeros((2, 3), np.float32), np.zeros(2, np.int64)),
     "C >= 2 classes"),
    ((np.zeros((8, 3), np.float32), np.zeros(8, np.int64), np.zeros((2, 4), np.float32), np.zeros(2, np.int64)),
     "pool and test samples differ"),
    (42, "registered dataset name"),
])
def test_bad_data_is_a_clear_error(tmp_path, data, match):
    with pytest.raises(PrivdynError, match=match):
        privdyn.audit(mlp, data, out=tmp_path / "run", n_models=M, progress=False)


def test_cli_stages_work_on_an_audited_run_and_train_explains_what_it_cannot_do(tmp_path):
    run = tmp_path / "run"
    audit(mlp, run)
    cli = [sys.executable, "-m", "privdyn.cli"]
    for cmd in (["train", str(run)], ["analyze", str(run)], ["report", str(run)]):
        done = subprocess.run(cli + cmd, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
    page = (run / "report" / "index.html").read_text()
    assert "python: model test_audit.mlp" in page  # the run description names the source, not zoo fields
    assert "IN for 2" in page and "width None" not in page
    (run / "signals" / "phi.zarr" / "zarr.json").write_text("{}")  # damage: privdyn cannot retrain it
    done = subprocess.run(cli + ["train", str(run)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and "privdyn.audit" in done.stderr and "Traceback" not in done.stderr


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_audit import Branchy, audit
audit(Branchy, {out!r})
"""


def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_result(tmp_path):
    from pathlib import Path

    out = tmp_path / "killed"
    script = SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    env = {**__import__("os").environ, "PRIVDYN_FAULT": "wrote:t001.npz"}  # model 0, second checkpoint
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert killed.returncode == -9, killed.stderr
    assert (out / "train" / "group_000" / "t001.npz").exists() and not (out / "epochs.npy").exists()
    resumed = audit(Branchy, out)
    stage = json.loads((out / "manifest.json").read_text())["stages"]["train"]
    assert stage["resumed_epochs"] == 2  # model 0 restarted from its saved state at epoch 2
    whole = audit(Branchy, tmp_path / "whole")
    np.testing.assert_array_equal(np.asarray(resumed.run.signal("phi")), np.asarray(whole.run.signal("phi")))


def negate(x: torch.Tensor) -> torch.Tensor:
    """A user's query: every feature's sign flipped."""
    return -x


def same(x: torch.Tensor) -> torch.Tensor:
    """A user's query that changes nothing."""
    return x.clone()


def test_a_query_given_as_a_function_is_evaluated_and_the_run_reopens_from_the_cli(tmp_path):
    res = audit(mlp, tmp_path / "run", queries=["identity", negate, same])
    assert res.run.config.queries == ["identity", "user.test_audit.negate", "user.test_audit.same"]
    phi = np.asarray(res.run.signal("phi"))
    np.testing.assert_array_equal(phi[..., 2], phi[..., 0])  # the unchanged inputs give the same signal
    assert not np.allclose(phi[..., 1], phi[..., 0])  # the negated ones do not
    done = subprocess.run([sys.executable, "-m", "privdyn.cli", "analyze", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr  # the config loads without the function registered


def test_a_python_recipe_is_refused_on_ray_or_several_devices_instead_of_silently_using_one(tmp_path):
    for setting in ({"training.backend": "ray"}, {"training.devices": ["cpu", "cpu"]}):
        with pytest.raises(PrivdynError, match="train here, on one device"):
            audit(mlp, tmp_path / str(len(setting)) / next(iter(setting)), settings=setting)
