"""The DP audit stage on tiny runs: on by default for DP-SGD runs and off otherwise, never above the
accountant's epsilon at any checkpoint, its entries in summary.json, its report panel, and a second
run that reads it back instead of recomputing it."""

import copy
import json

import numpy as np
import pandas as pd
import pytest

from privdyn.config import config_from_dict
from privdyn.pipeline import run_all
from privdyn.pipeline.dp_audit import accountant_epsilon
from privdyn.pipeline.run_level import audit_enabled
from privdyn.report.data import load_run_data
from privdyn.report.dp_audit import dp_audit_panel
from privdyn.report.html import panels
from privdyn.store.rundir import RunDir

N_POOL = 48


def tiny(source, dp):
    d = source()
    d["dataset"].update(n_pool=N_POOL, n_test=16)
    d["model"]["width"] = 8
    d["training"].update(n_models=4, epochs=2, batch_size=8,
                         dp={"enabled": True, "noise_multiplier": 0.8} if dp else {"enabled": False})
    d["attacks"] = ["lira_online", "loss"]
    d["analysis"].update(grid=2, sensitivity=False, n_bootstrap=20, model_bootstrap=10, n_clusters=2,
                         silhouette_sample=10, early_warning={"enabled": False})
    return d


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, tiny_config_source):
    data = tiny(tiny_config_source, dp=True)
    out = tmp_path_factory.mktemp("dpa") / "run"
    run_all(config_from_dict(data), out, progress=False, with_report=False)
    return out, data


def test_on_by_default_for_dp_sgd_only(tiny_config_source):
    dp, plain = tiny(tiny_config_source, True), tiny(tiny_config_source, False)
    assert audit_enabled(config_from_dict(dp)) and not audit_enabled(config_from_dict(plain))
    for data, on in ((plain, True), (dp, False)):
        data = copy.deepcopy(data)
        data["analysis"]["dp_audit"] = {"enabled": on}
        assert audit_enabled(config_from_dict(data)) is on


def test_dp_run_bounds_stay_below_the_accountant(dp_run):
    out, _ = dp_run
    summary = json.loads((out / "summary.json").read_text())
    rec = json.loads((out / "dp.json").read_text())
    entry = summary["dp_audit"]
    assert entry["delta"] == pytest.approx(1 / (N_POOL // 2)) == pytest.approx(rec["delta"])
    assert entry["accountant_epsilon"] == pytest.approx(rec["epsilon_per_checkpoint"])
    assert entry["design"] == "fixed_weight" and entry["exceeds_accountant"] == []
    table = pd.read_parquet(out / "analysis" / "dp_audit.parquet")
    assert set(table.estimator) == {"one_run", "gdp", "clopper_pearson", "best", "strongest"}
    assert set(table.attack) == {"lira_online", "loss", "*"} and set(table.epoch) == {1, 2}
    finite = table[np.isfinite(table.epsilon_lb)]
    assert len(finite) == len(table) and (finite.epsilon_lb >= 0).all()
    assert (finite.epsilon_lb <= finite.accountant_epsilon).all()  # above it, one of them is wrong
    for attack in ("lira_online", "loss"):
        mine = summary["attacks"][attack]["dp_audit"]
        assert mine["epochs"] == [1, 2] and mine["confidence"] == 0.95
        for est in ("one_run", "gdp", "clopper_pearson", "best"):
            assert len(mine[est]["epsilon_lb"]) == 2 and mine[est]["final"] == mine[est]["epsilon_lb"][-1]
    strongest = entry["strongest"]
    assert strongest["confidence"] == pytest.approx(1 - 0.05 / 6)
    assert entry["exceeds_accountant_confidence"] == pytest.approx(1 - 0.05 / (6 * 2))  # over T = 2 epochs too
    assert all(lb <= up for lb, up in zip(strongest["epsilon_lb"], entry["accountant_epsilon"]))


def test_accountant_epsilon_at_another_delta(dp_run):
    from privdyn.training.dp import dp_epsilon

    run = RunDir(dp_run[0])
    rec = json.loads((run.path / "dp.json").read_text())
    epochs = np.array([1, 2])
    assert accountant_epsilon(run, epochs, rec["delta"]) == rec["epsilon_per_checkpoint"]
    other = accountant_epsilon(run, epochs, 1e-5)
    assert other == pytest.approx([dp_epsilon(0.8, rec["sample_rate"], e * rec["steps_per_epoch"], 1e-5)
                                   for e in (1, 2)])
    assert all(a > b for a, b in zip(other, rec["epsilon_per_checkpoint"]))  # smaller delta, larger epsilon


def test_a_second_run_reads_the_audit_back(dp_run):
    out, data = dp_run
    parquet = out / "analysis" / "dp_audit.parquet"
    entry = out / "analysis" / "lira_online" / "fpr_0.01" / "entry.json"
    before = parquet.stat().st_mtime_ns, RunDir(out).manifest()["artifacts"]["analysis/dp_audit.parquet"]
    run_all(config_from_dict(data), out, progress=False, with_report=False)
    assert (parquet.stat().st_mtime_ns, RunDir(out).manifest()["artifacts"]["analysis/dp_audit.parquet"]) == before
    changed = copy.deepcopy(data)
    changed["analysis"]["dp_audit"] = {"confidence": 0.9}
    entry_time = entry.stat().st_mtime_ns if entry.exists() else None
    run_all(config_from_dict(changed), out, progress=False, with_report=False)
    assert parquet.stat().st_mtime_ns != before[0]  # its own option changed: recomputed
    assert (entry.stat().st_mtime_ns if entry.exists() else None) == entry_time  # the attack's analysis kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dp_audit"]["confidence"] == 0.9
    run_all(config_from_dict(data), out, progress=False, with_report=False)  # back to the fixture's state


def test_report_panel_shows_both_curves(dp_run):
    d = load_run_data(dp_run[0])
    panel, = panels(d, 100, 3)["dp_audit"]
    assert not panel.skipped and panel.title == "Differential-privacy audit"
    names = {t.name for t in panel.figure.data}
    assert {"accountant (Opacus RDP)", "one-run (Steinke et al.)", "lira_online", "loss"} <= names
    assert "upper bound" in panel.caption


def test_off_without_dp_sgd_and_on_when_asked(tmp_path, tiny_config_source):
    data = tiny(tiny_config_source, dp=False)
    out = tmp_path / "run"
    run_all(config_from_dict(data), out, progress=False, with_report=False)
    assert not (out / "analysis" / "dp_audit.parquet").exists()
    assert "dp_audit" not in json.loads((out / "summary.json").read_text())
    assert load_run_data(out).table("dp_audit") is None  # so the report has no such section
    data["analysis"]["dp_audit"] = {"enabled": True}
    run_all(config_from_dict(data), out, progress=False, with_report=False)
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["dp_audit"]
    assert entry["accountant_epsilon"] is None and entry["exceeds_accountant"] is None
    assert entry["delta"] == pytest.approx(1 / (N_POOL // 2))
    assert summary["attacks"]["loss"]["dp_audit"]["one_run"]["design"] == "fixed_weight"
    panel = dp_audit_panel(load_run_data(out))
    assert "Not a DP-SGD run" in panel.caption and "accountant (Opacus RDP)" not in {t.name for t in panel.figure.data}


def _strict(text):
    """JSON as other tools read it: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not valid JSON")
    return json.loads(text, parse_constant=refuse)


def test_clipping_without_noise_writes_valid_json_with_a_null_epsilon(tmp_path, tiny_config_source):
    """noise_multiplier 0 (clipping alone) has no finite epsilon: dp.json and summary.json say null,
    and the audit reads it back as infinity (no bound exceeds it)."""
    data = tiny(tiny_config_source, dp=True)
    data["training"]["dp"]["noise_multiplier"] = 0.0
    out = tmp_path / "run"
    run_all(config_from_dict(data), out, progress=False, with_report=False)
    rec = _strict((out / "dp.json").read_text())
    assert rec["epsilon_per_checkpoint"] == [None, None] and "no finite epsilon" in rec["epsilon_note"]
    entry = _strict((out / "summary.json").read_text())["dp_audit"]
    assert entry["accountant_epsilon"] == [None, None] and entry["accountant_epsilon_final"] is None
    assert entry["exceeds_accountant"] == []
    assert accountant_epsilon(RunDir(out), np.array([1, 2]), rec["delta"]) == [np.inf, np.inf]


def test_exceeding_epochs_against_a_loop():
    from privdyn.pipeline.dp_audit import exceeding_epochs

    rng = np.random.default_rng(0)
    bounds = rng.uniform(0, 2, size=(6, 5))
    bounds[rng.random(bounds.shape) < 0.2] = np.nan
    bounds[:, 3] = np.nan  # no bound defined at that epoch: never flagged
    epochs, accountant = np.arange(1, 6), [1.0, 1.9, 0.5, 0.0, 2.5]
    want = [int(e) for t, e in enumerate(epochs)
            if any(np.isfinite(b) and b > accountant[t] + 1e-9 for b in bounds[:, t])]
    assert exceeding_epochs(epochs, bounds, accountant) == want


def test_exceeds_accountant_is_one_verdict_over_all_epochs(dp_run, monkeypatch, tmp_path):
    """With an accountant just below the per-epoch strongest bounds of a leaky attack, the per-epoch
    maxima would flag every epoch; the verdict uses bounds at 1 - beta / (3 A T), which stay below."""
    import shutil

    import privdyn.pipeline.dp_audit as stage
    from privdyn.pipeline.analysis import training_measures

    out = shutil.copytree(dp_run[0], tmp_path / "run")  # the stage rewrites the table: not the fixture's
    run, cfg = RunDir(out), config_from_dict(dp_run[1])
    membership = run.load_array(out / "membership.npy", "membership")
    epochs = run.load_array(out / "epochs.npy", "checkpoint epochs")
    rng = np.random.default_rng(1)
    leaky = membership[None] * 4.0 + rng.normal(size=(len(epochs), *membership.shape))
    monkeypatch.setattr(run, "load_scores", lambda attack: leaky)
    measures = training_measures(cfg, run, membership, epochs)
    first = stage.dp_audit_stage(cfg, run, membership, epochs, measures)["run"]
    strongest = np.array(first["strongest"]["epsilon_lb"])
    assert (strongest > 0.5).all()  # scores no DP-SGD model would give: far above its accountant
    assert first["exceeds_accountant"] == [1, 2]
    monkeypatch.setattr(stage, "accountant_epsilon", lambda *a: list(strongest * 0.999))
    second = stage.dp_audit_stage(cfg, run, membership, epochs, measures)["run"]
    assert second["exceeds_accountant"] == []
    monkeypatch.setattr(stage, "accountant_epsilon", lambda *a: list(strongest * 0.5))
    assert stage.dp_audit_stage(cfg, run, membership, epochs, measures)["run"]["exceeds_accountant"] == [1, 2]
