"""Open registries: plugins register attacks, models and datasets through entry points, and
the whole pipeline runs with them from the CLI; names cannot be taken twice by accident."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from privdyn.registry import Registry, UnknownName

PLUGIN = Path(__file__).parent / "plugin"


def install_plugin(site: Path) -> dict:
    """Make the plugin package importable and its entry points visible, as pip would."""
    info = site / "privdyn_testplugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: privdyn-testplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[privdyn.attacks]\nlow_loss = privdyn_testplugin:register_attack\n\n"
        "[privdyn.models]\nplugin_linear = privdyn_testplugin:register_model\n\n"
        "[privdyn.datasets]\nblobs = privdyn_testplugin:register_dataset\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGIN)])}


@pytest.mark.slow
def test_a_plugin_attack_model_and_dataset_run_through_the_cli(tmp_path):
    env = install_plugin(tmp_path / "site")
    cfg = {"name": "plugged", "seed": 1,
           "dataset": {"name": "blobs", "n_pool": 200, "n_test": 100, "options": {"gap": 2.0}},
           "model": {"arch": "plugin_linear", "norm": "none"},
           "training": {"n_models": 8, "epochs": 3, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.1}},
           "attacks": ["low_loss", "lira_online"], "analysis": {"grid": 4, "sensitivity": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "privdyn.cli", "run", str(tmp_path / "c.yaml"), "--out", str(out),
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["attacks"]) == {"low_loss", "lira_online"} and summary["model"] == "plugin_linear"
    assert 0.0 <= summary["attacks"]["low_loss"]["final"]["auc"] <= 1.0
    # without the plugin installed, the same config is a clear error, not a traceback
    bare = subprocess.run([sys.executable, "-m", "privdyn.cli", "run", str(tmp_path / "c.yaml"), "--out",
                           str(tmp_path / "other"), "--no-progress"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert bare.returncode == 2 and "unknown dataset 'blobs'" in bare.stderr and "Traceback" not in bare.stderr


def test_names_cannot_be_taken_twice_and_lookups_list_what_exists():
    reg: Registry[int] = Registry("widget", "privdyn.test-widgets")
    reg.register("a", 1)
    reg.register("a", 1)  # the same object again: harmless (a module imported twice)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    reg.register("a", 2, replace=True)
    assert reg["a"] == 2 and "a" in reg and list(reg) == ["a"]
    with pytest.raises(UnknownName, match="unknown widget 'b'; available: a"):
        reg["b"]


def test_an_attack_registered_after_import_is_validated_when_a_config_is_loaded():
    import numpy as np

    from privdyn.attacks import ATTACKS, Attack, AttackOptionsBase, register
    from privdyn.config import config_from_dict
    from privdyn.errors import PrivdynError

    class Opts(AttackOptionsBase):
        scale: float = 1.0

    register(Attack("late_attack", lambda d, o: np.zeros(d.membership.shape), Opts, ("loss",)))
    try:
        cfg = config_from_dict({"attacks": ["late_attack"], "attack_options": {"late_attack": {"scale": 3}}})
        assert cfg.options_for("late_attack").scale == 3.0
        with pytest.raises(PrivdynError, match=r"attack_options\.late_attack\.scale"):
            config_from_dict({"attacks": ["late_attack"], "attack_options": {"late_attack": {"scale": "x"}}})
        with pytest.raises(ValueError, match="already registered"):
            register(Attack("late_attack", lambda d, o: None, Opts, ("loss",)))
    finally:
        ATTACKS.unregister("late_attack")
