"""privdyn.audit: what it is given is checked before anything is written, and the run's fingerprint
covers what the model factory and recipe build (values they close over included), not only their
source text. Tiny: 64 pool samples, 4 models, 2 epochs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import privdyn
from privdyn.errors import PrivdynError
from privdyn.training.custom import Recipe, build_digest

SETTINGS = {"analysis.grid": 2, "analysis.sensitivity": False, "analysis.early_warning.enabled": False}


def four_class_data(n_pool: int = 64) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    return x[:n_pool], y[:n_pool], x[64:], y[64:]


def closure_audit(out: Path, lr: float, width: int):
    """The tester's reproduction: width and learning rate only in the closures' cells."""
    make = lambda: nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 4))  # noqa: E731
    opt = lambda p: torch.optim.SGD(p, lr=lr)  # noqa: E731
    return privdyn.audit(make, four_class_data(), out=out, n_models=4, settings=SETTINGS, progress=False,
                         report=False, attacks=["loss"], recipe=Recipe(optimizer=opt, epochs=2, batch_size=32))


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_closure_with_another_width_or_learning_rate_is_refused_and_the_same_call_reuses(tmp_path):
    out = tmp_path / "run"
    first = closure_audit(out, 0.05, 16)
    signals = _mtimes(out / "signals")
    again = closure_audit(out, 0.05, 16)  # identical: same fingerprint, nothing retrained
    assert again.run.config.source.fingerprint == first.run.config.source.fingerprint
    assert _mtimes(out / "signals") == signals
    np.testing.assert_array_equal(np.asarray(again.run.signal("loss")), np.asarray(first.run.signal("loss")))
    for lr, width in ((5.0, 16), (0.05, 32)):
        with pytest.raises(PrivdynError, match="holds the signals of another model, recipe or data: the model or "
                                               "recipe differs"):
            closure_audit(out, lr, width)
    assert _mtimes(out / "signals") == signals
    assert privdyn.open_run(out).config.source.fingerprint == first.run.config.source.fingerprint


def test_the_build_digest_sees_closed_over_values_and_the_schedule():
    def recipe(lr: float, gamma: float | None = None) -> Recipe:
        sched = (lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=gamma)) if gamma else None  # noqa: E731
        return Recipe(optimizer=lambda p: torch.optim.SGD(p, lr=lr), schedule=sched)

    def make(width: int):
        return lambda: nn.Sequential(nn.Linear(8, width), nn.Linear(width, 4))

    base = build_digest(make(16), recipe(0.1))
    assert build_digest(make(16), recipe(0.1)) == base
    assert len({base, build_digest(make(17), recipe(0.1)), build_digest(make(16), recipe(0.2)),
                build_digest(make(16), recipe(0.1, 0.5)), build_digest(make(16), recipe(0.1, 0.9))}) == 5
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    build_digest(make(16), recipe(0.1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone


DIGEST_SCRIPT = """
import torch
from torch import nn
from privdyn.training.custom import Recipe, build_digest

class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fn = lambda t: t  # its repr holds a memory address
        self.body = nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6), nn.Linear(6, 4))
        self.register_buffer("scratch", torch.empty(1000))  # uninitialised: differs between builds
    def extra_repr(self):
        return f"fn={self.fn}, obj={object()}"
    def forward(self, x):
        return self.body(x)

recipe = Recipe(optimizer=lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.8, 0.99)),
                schedule=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10))
print(build_digest(Holder, recipe))
"""


def test_the_build_digest_is_the_same_in_two_processes():
    def digest(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", DIGEST_SCRIPT], capture_output=True, text=True, env=env,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    a, b = digest("1"), digest("2")
    assert a == b and len(a) == 16


class Outputs(nn.Module):
    """A model whose output has another shape than logits [B, 4]."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape
        self.lin = nn.Linear(8, int(np.prod(shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).reshape(len(x), *self.shape)


@pytest.mark.parametrize("shape", [(7,), (3,), (2, 2)])
def test_a_model_with_the_wrong_output_shape_is_refused_before_training(tmp_path, shape):
    got = ", ".join(map(str, shape))
    with pytest.raises(PrivdynError, match=r"privdyn\.audit: the model must map a batch \[B, \.\.\.\] to logits "
                                           r"\[B, 4\] \(one per class\); it returned \[4, " + got):
        privdyn.audit(lambda: Outputs(shape), four_class_data(), out=tmp_path / "run", n_models=4,
                      recipe=Recipe(epochs=1, batch_size=32), progress=False, report=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("model", "recipe", "n_pool", "match"), [
    (lambda: "x", None, 64, "the model factory must return a torch.nn.Module, got str"),
    (lambda: nn.Linear(8, 4), Recipe(optimizer=lambda p: None, epochs=1),
     64, "recipe.optimizer must return a torch.optim.Optimizer, got NoneType"),
    (lambda: nn.Linear(8, 4), None, 63, r"odd number of samples \(63\).*Drop one pool sample"),
])
def test_bad_factories_optimizers_and_odd_pools_are_clear_errors_that_write_nothing(tmp_path, model, recipe,
                                                                                    n_pool, match):
    with pytest.raises(PrivdynError, match=match):
        privdyn.audit(model, four_class_data(n_pool), out=tmp_path / "run", n_models=4, recipe=recipe,
                      progress=False, report=False)
    assert not (tmp_path / "run").exists()
