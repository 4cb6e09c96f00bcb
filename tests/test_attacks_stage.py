"""The score stage (only the declared signals, streamed, options from the config) and every attack
through the whole pipeline and the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from privdyn import pipeline
from privdyn.attacks import ATTACKS, CheckpointData
from privdyn.attacks.rmia import RmiaOptions
from privdyn.cli import app
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.store import atomic
from privdyn.store.arrays import open_array, save_array
from privdyn.store.rundir import RunDir
from privdyn.training.membership import balanced_membership


def fake_run(path, attacks, options=None, signals=("phi", "loss")):
    """A run directory holding only some signals, written by hand (no training)."""
    cfg = config_from_dict({"name": "fake", "training": {"n_models": 6}, "attacks": attacks,
                            "attack_options": options or {}})
    run = RunDir(path)
    run.init(cfg)
    rng = np.random.default_rng(0)
    T, M, N, Nt = 3, 6, 40, 12
    z = balanced_membership(M, N, 0)
    atomic.save_npy(path / "membership.npy", z)
    atomic.save_npy(path / "epochs.npy", np.array([1, 2, 5]))
    for s in signals:
        save_array(run.signal_path(s), np.abs(rng.normal(size=(T, M, N, 2))).astype(np.float32))
    save_array(run.signal_path("loss", "test"), np.abs(rng.normal(size=(T, M, Nt, 2))).astype(np.float32))
    return cfg, run, z


def test_score_stage_reads_only_declared_signals_and_uses_config_options(tmp_path):
    cfg, run, z = fake_run(tmp_path, ["lira_online", "rmia"], {"rmia": {"gamma": 2.0}})
    pipeline.score(cfg, run, progress=False)
    phi = np.asarray(open_array(run.signal_path("phi")))
    loss = np.asarray(open_array(run.signal_path("loss")))
    loss_t = np.asarray(open_array(run.signal_path("loss", "test")))
    for name, opts, pool, test in (("lira_online", None, {"phi": phi}, {}),
                                   ("rmia", RmiaOptions(gamma=2.0), {"loss": loss}, {"loss": loss_t})):
        got = np.asarray(open_array(run.score_path(name)))
        assert got.shape == (3, 6, 40) and got.dtype == np.float32  # computed in float64, stored as float32
        for t in range(3):
            data = CheckpointData({k: v[t] for k, v in pool.items()}, {k: v[t] for k, v in test.items()}, z)
            np.testing.assert_array_equal(got[t], ATTACKS[name].run(data, opts).astype(np.float32))


def test_missing_signal_names_the_attack(tmp_path):
    cfg, run, _ = fake_run(tmp_path, ["entropy"])
    with pytest.raises(PrivdynError, match="signal entropy.*needed by entropy"):
        pipeline.score(cfg, run, progress=False)


def test_non_finite_signal_names_the_epoch(tmp_path):
    cfg, run, _ = fake_run(tmp_path, ["loss"])
    loss = np.asarray(open_array(run.signal_path("loss")))
    loss[2, 1, 3, 0] = np.nan
    save_array(run.signal_path("loss"), loss)
    with pytest.raises(PrivdynError, match="loss at epoch 5: pool signal 'loss' has 1 NaN"):
        pipeline.score(cfg, run, progress=False)


@pytest.mark.slow
def test_every_attack_through_pipeline_and_cli(tiny_config_dict, tmp_path):
    data = {**tiny_config_dict, "attacks": list(ATTACKS),
            "analysis": {**tiny_config_dict["analysis"], "model_bootstrap": 50}}
    out = tmp_path / "run"
    pipeline.run_all(config_from_dict(data), out, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["attacks"]) == set(ATTACKS)
    for name, entry in summary["attacks"].items():
        ba = np.array(entry["balanced_accuracy"])
        assert ba.shape == (4,) and ((ba >= 0.5) & (ba <= 1)).all(), name
        for a in ("0.001", "0.01"):
            ci, point = np.array(entry[f"tpr_at_fpr_{a}_ci"]), np.array(entry[f"tpr_at_fpr_{a}"])
            assert ci.shape == (4, 2) and point.shape == (4,) and (ci[:, 0] <= ci[:, 1]).all(), name
            assert entry["final"][f"tpr_at_fpr_{a}_ci"] == ci[-1].tolist()
    import pandas as pd

    epoch = pd.read_parquet(out / "analysis" / "rmia" / "fpr_0.01" / "epoch.parquet")
    assert {"balanced_accuracy", "tpr_at_fpr_0.01_ci_low", "tpr_at_fpr_0.01_ci_high"} <= set(epoch.columns)

    runner = CliRunner()
    before = np.asarray(open_array(out / "scores" / "attack_r.zarr"))
    res = runner.invoke(app, ["score", str(out), "--attacks", "rmia,attack_r"])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.asarray(open_array(out / "scores" / "attack_r.zarr")), before)
    res = runner.invoke(app, ["analyze", str(out), "--attack", "rmia", "--rule", "fpr:0.1"])
    assert res.exit_code == 0, res.output
    assert (out / "analysis" / "rmia" / "fpr_0.1" / "epoch.parquet").exists()


def test_attack_options_are_validated_per_attack():
    cfg = config_from_dict({"attack_options": {"rmia_offline": {"a": 0.5}, "lira_online": {"center": "median"}}})
    assert cfg.options_for("rmia_offline").a == 0.5 and cfg.options_for("rmia").gamma == 1.0
    assert cfg.options_for("lira_online").center == "median" and cfg.options_for("lira_offline_cdf").center == "mean"
    for bad, field in (({"rmia_offline": {"a": 1.5}}, "attack_options.rmia_offline.a"),
                       ({"lira_online": {"centre": "mean"}}, "attack_options.lira_online.centre"),
                       ({"shokri": {"folds": 1}}, "attack_options.shokri.folds"),
                       ({"no_such_attack": {}}, "attack_options.no_such_attack")):
        with pytest.raises(PrivdynError, match=field.replace(".", r"\.")):
            config_from_dict({"attack_options": bad})
    with pytest.raises(PrivdynError, match="unknown.*available"):
        config_from_dict({"attacks": ["lira_online", "lira"]})
