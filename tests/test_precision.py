"""training.precision: bf16 trains under autocast, but every stored signal comes from an fp32
evaluation; the train stage reports how its time splits between training and evaluation."""

from __future__ import annotations

import numpy as np
import torch

from privdyn.config import config_from_dict
from privdyn.pipeline import train
from privdyn.store.api import open_run
from privdyn.store.rundir import RunDir
from privdyn.training.ensemble import EnsembleGroup


def trained(cfg_dict: dict, out):
    cfg = config_from_dict(cfg_dict)
    run = RunDir(out)
    with run.locked():
        run.init(cfg)
        train(cfg, run, progress=False)
    return open_run(out), run.manifest()["stages"]["train"]


def test_bf16_changes_training_but_not_the_precision_of_the_signals(tmp_path, tiny_config_dict):
    fp32, stage = trained(tiny_config_dict, tmp_path / "fp32")
    tiny_config_dict["training"]["precision"] = "bf16"
    bf16, _ = trained(tiny_config_dict, tmp_path / "bf16")
    a, b = np.asarray(fp32.signal("phi")), np.asarray(bf16.signal("phi"))
    assert not np.array_equal(a, b)  # autocast was on while training
    assert np.abs(a - b).mean() < 0.25 * np.abs(a).mean()  # ... and it trained the same models, roughly
    assert stage["train_seconds"] > 0 and stage["eval_seconds"] > 0


def test_the_evaluation_forward_is_fp32_even_for_a_bf16_group():
    group = EnsembleGroup(lambda: torch.nn.Linear(4, 3), [0, 1], 0, torch.device("cpu"), precision="bf16")
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    out = group.evaluate(x, y, ["identity"], 8, with_logits=True)
    direct = group.forward(x, train=False, shared_input=True)
    assert direct.dtype == torch.float32
    np.testing.assert_array_equal(out["logits"][..., 0, :], direct.detach().numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = group.forward(x, train=False, shared_input=True)
    assert not torch.equal(low.float(), direct)  # bf16 would have shown in the stored logits


def test_a_compiled_training_loss_trains_the_same_models(tmp_path, tiny_config_dict):
    tiny_config_dict["training"].update(n_models=2, group_size=2, epochs=2)
    tiny_config_dict["analysis"]["grid"] = 1
    plain, _ = trained(tiny_config_dict, tmp_path / "plain")
    tiny_config_dict["training"]["compile"] = True
    compiled, _ = trained(tiny_config_dict, tmp_path / "compiled")
    np.testing.assert_allclose(np.asarray(compiled.signal("phi")), np.asarray(plain.signal("phi")),
                               rtol=1e-4, atol=1e-5)


def test_bf16_evaluation_is_opt_in_and_close_to_fp32():
    """training.eval_precision: bf16 autocasts the evaluation forward only; the default stays fp32
    (bit-equal to a plain forward) and keeps every run's hash."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    make = lambda: torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))  # noqa: E731
    exact = EnsembleGroup(make, [0, 1], 0, torch.device("cpu")).evaluate(x, y, ["identity"], 16, with_logits=True)
    low = EnsembleGroup(make, [0, 1], 0, torch.device("cpu"), eval_precision="bf16").evaluate(
        x, y, ["identity"], 16, with_logits=True)
    assert low["logits"].dtype == np.float32 and not np.array_equal(low["logits"], exact["logits"])
    np.testing.assert_allclose(low["phi"], exact["phi"], atol=0.05)  # bf16 rounding of the logits only
    assert (low["correct"] == exact["correct"]).mean() > 0.9
    cfg = config_from_dict({"training": {"eval_precision": "fp32"}})
    assert cfg.section_hash("training") == config_from_dict({}).section_hash("training")
    assert config_from_dict({"training": {"eval_precision": "bf16"}}).section_hash("training") != \
        cfg.section_hash("training")
