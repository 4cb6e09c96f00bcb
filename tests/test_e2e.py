"""The whole pipeline on a tiny config, through the CLI and the Python API."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from cli_runner import run_cli  # tests/cli_runner.py

import privdyn
from privdyn.config import config_from_dict
from privdyn.pipeline import run_all


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_config_source):
    data = tiny_config_source()
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run, index = run_all(config_from_dict(data), out, progress=False)
    return out, index


def test_public_surface(tiny_run):
    out, index = tiny_run
    r = privdyn.open_run(out)
    M, N, T = 8, 200, 4
    assert r.membership.shape == (M, N) and r.membership.dtype == bool
    assert r.epochs.tolist() == [1, 2, 3, 4]
    for name in ("phi", "loss", "correct"):
        assert r.signal(name).shape == (T, M, N, 1)
    assert r.signal("loss", "test").shape == (T, M, 100, 1)
    s = r.scores("lira_online")
    assert s.shape == (T, M, N) and np.isfinite(s).all()
    fpr, tpr = r.plane("lira_online", "fpr:0.1")
    assert fpr.shape == tpr.shape == (T, N)
    assert np.allclose(fpr.mean(axis=1), 0.1, atol=2 / (M * N / 2))
    t = r.tables()
    assert len(t.sample_epoch) == T * N and len(t.sample) == N and len(t.epoch) == T
    assert index.exists() and "data:image/png;base64" in index.read_text()


def test_summary_keys_and_signals_consistent(tiny_run):
    out, _ = tiny_run
    s = json.loads((out / "summary.json").read_text())
    for key in ("test_accuracy", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "auc", "com_displacement_pp",
                "com_path_pp", "delta_entropy_bits", "n_high_final"):
        assert key in s, key
    assert len(s["test_accuracy"]) == 4
    assert set(s["attacks"]) == {"lira_online", "lira_online_fixed", "lira_offline_cdf"}
    r = privdyn.open_run(out)
    # loss and phi agree: p_y = exp(-loss) and phi = log(p_y / (1 - p_y))
    p = np.exp(-r.signal("loss")[..., 0].astype(np.float64))
    with np.errstate(divide="ignore"):
        phi = np.log(p) - np.log1p(-p)
    ok = (p > 1e-4) & (p < 1 - 1e-4)
    np.testing.assert_allclose(r.signal("phi")[..., 0][ok], phi[ok], rtol=1e-3, atol=1e-3)
    m = json.loads((out / "manifest.json").read_text())
    assert all(m["stages"][k]["state"] == "done" for k in ("train", "score", "analyze", "report"))


def test_rerun_is_idempotent_and_changed_training_is_refused(tiny_run, tmp_path):
    out, _ = tiny_run
    cfg = privdyn.open_run(out).config
    before = (out / "scores" / "lira_online.zarr").stat().st_mtime_ns
    run_all(cfg, out, progress=False)
    assert (out / "scores" / "lira_online.zarr").stat().st_mtime_ns == before
    changed = cfg.model_copy(update={"seed": 99})
    from privdyn.errors import PrivdynError

    with pytest.raises(PrivdynError, match="different training setup"):
        run_all(changed, out, progress=False)


def test_cli_run_and_user_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "dataset": {"name": "synthetic", "n_pool": 100, "n_test": 50},
        "model": {"width": 16, "depth": 1},
        "training": {"n_models": 4, "epochs": 2, "batch_size": 50}, "analysis": {"grid": 2},
    }))
    cmd = [sys.executable, "-m", "privdyn.cli"]
    ok = subprocess.run([*cmd, "run", str(cfg), "--out", str(tmp_path / "r"), "--no-progress"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "report:" in ok.stdout and (tmp_path / "r" / "report" / "index.html").exists()
    # user errors, in this process (the run above went through a real interpreter)
    bad = run_cli("run", cfg, "--set", "training.n_models=5")
    assert bad.returncode == 2 and "must be even" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli("analyze", tmp_path / "nothing")
    assert missing.returncode == 2 and "not a privdyn run directory" in missing.stderr
    usage = run_cli("run", "--bogus")
    assert usage.returncode == 2 and "No such option" in usage.stderr and "Traceback" not in usage.stderr


def test_analyze_stage_reads_training_measures_once_for_all_attacks(tiny_run, monkeypatch):
    from privdyn import pipeline
    from privdyn.pipeline import analysis as stage
    from privdyn.store.rundir import RunDir

    out, _ = tiny_run
    cfg = privdyn.open_run(out).config
    cfg = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"rule": "fpr:0.05"})})
    rd = RunDir(out)
    alone = stage.analyze(cfg, rd, "lira_online", "fpr:0.05")  # computes its own measures
    calls = []
    real = stage.training_measures
    monkeypatch.setattr(stage, "training_measures", lambda *a: calls.append(1) or real(*a))
    summary = pipeline.analyze(cfg, rd)
    assert len(calls) == 1 and len(cfg.attacks) == 3
    shared = {k: v for k, v in summary["attacks"]["lira_online"].items() if k != "sensitivity"}  # full stage only
    assert json.dumps(shared, sort_keys=True) == json.dumps(alone, sort_keys=True)


def test_python_dash_m_privdyn_is_the_command_line():
    """``python -m privdyn`` runs the same CLI as the ``privdyn`` script (for checkouts run from src/)."""
    out = subprocess.run([sys.executable, "-m", "privdyn", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and "report" in out.stdout
