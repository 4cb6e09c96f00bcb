"""The early-warning stage in a tiny run: on by default, its entries reach summary.json, a second
analyze reads it back instead of redoing it, lira_online is computed when the run does not score it,
and turning it off removes the report section; the section draws in a browser."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from browser import find_chromium, inspect_page  # tests/browser.py (pytest puts tests/ on sys.path)

import privdyn.pipeline.warning as stage
from privdyn.config import config_from_dict
from privdyn.errors import DataError
from privdyn.pipeline import analyze, run_all
from privdyn.pipeline.run_level import run_analyses
from privdyn.report import html
from privdyn.report.data import load_run_data
from privdyn.report.page import document, section
from privdyn.store.rundir import RunDir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_config_source):
    data = tiny_config_source()
    data["analysis"].update({"n_bootstrap": 50, "model_bootstrap": 20, "sensitivity": False})  # fast
    out = tmp_path_factory.mktemp("warning") / "run"
    run_all(config_from_dict(data), out, progress=False, with_report=False)
    return out, data


def section_panels(out):
    """The report's early-warning section as the page would draw it (without writing the figures)."""
    return html.panels(load_run_data(out), max_points=200, max_frames=5)["early_warning"]


def test_the_stage_runs_by_default_and_reaches_the_summary(tiny_run):
    out, data = tiny_run
    cfg = config_from_dict(data)
    assert cfg.analysis.early_warning.enabled and stage.EARLY_WARNING in run_analyses()
    table = pd.read_parquet(out / "analysis" / "early_warning.parquet")
    assert {"proxy", "truth", "epoch", "k", "metric", "mean", "ci_low", "ci_high"} <= set(table.columns)
    assert set(table.proxy) >= {"lt_iqr", "loss_mean", "loss_slope", "margin_mean", "forgetting_events"}
    assert set(table.truth) == {"attack", "final_high", "final_advantage"}
    epochs = np.load(out / "epochs.npy")
    assert sorted(table.epoch.unique()) == [e for e in epochs.tolist() if e > 0]
    model = pd.read_parquet(out / "analysis" / "early_warning_model.parquet")
    assert set(model.quantity) == {"estimate", "measured", "abs_error"} and set(model.alpha) == {0.001, 0.01}
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["early_warning"]
    assert entry["truth_scores"] == "stored" and entry["truth_attack"] == "lira_online"
    for key in ("best_precision_at_25pct", "best_precision_at_50pct", "best_v_precision_at_25pct",
                "best_v_precision_at_50pct"):
        assert set(entry[key]) == {"proxy", "epoch", "fraction", "mean", "ci"}
    assert set(entry["final"]) == set(table.proxy)
    assert entry["final"]["lt_iqr"]["auc"] is None or 0 <= entry["final"]["lt_iqr"]["auc"] <= 1
    assert ("early_warning", "Early warning") in html.SECTIONS
    panels = section_panels(out)
    assert [p.key for p in panels] == ["early-warning", "early-warning-model", "early-warning-final"]
    assert not any(p.skipped for p in panels), [p.skipped for p in panels]
    assert len(panels[0].figure.data) >= 2 * len(set(table.proxy))  # both truths, every proxy (+ shadow)


def test_a_second_analyze_does_not_recompute_it(tiny_run, monkeypatch):
    out, data = tiny_run
    cfg, run = config_from_dict(data), RunDir(out)
    assert stage.EARLY_WARNING.current(cfg, run)
    before = (out / "analysis" / "early_warning.parquet").stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("the early-warning stage was recomputed")

    monkeypatch.setattr(stage, "validate_run", refuse)
    analyze(cfg, run)
    assert (out / "analysis" / "early_warning.parquet").stat().st_mtime_ns == before


def test_computed_truth_and_turning_it_off(tiny_run, tmp_path):
    """Without lira_online among the attacks the stage computes it at the final checkpoint (the
    same flags as the stored scores); switched off, the section and the summary key are gone."""
    out, data = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    stored, source = stage.final_truth_scores(config_from_dict(data), RunDir(copy),
                                              np.load(copy / "membership.npy"))
    assert source == "stored"
    data = {**data, "attacks": ["loss"]}
    cfg = config_from_dict(data)
    computed, source = stage.final_truth_scores(cfg, RunDir(copy), np.load(copy / "membership.npy"))
    assert source == "computed"
    np.testing.assert_allclose(computed, stored, rtol=1e-5, atol=1e-4)  # stored as float32
    run_all(cfg, copy, progress=False, with_report=False)
    entry = json.loads((copy / "summary.json").read_text())["early_warning"]
    assert entry["truth_scores"] == "computed" and entry["tail_measured_by"] == "loss"

    data["analysis"] = {**data.get("analysis", {}), "early_warning": {"enabled": False}}
    run_all(config_from_dict(data), copy, progress=False, with_report=False)
    assert "early_warning" not in json.loads((copy / "summary.json").read_text())
    assert section_panels(copy) == []


def test_config_fields_are_validated():
    with pytest.raises(Exception, match="unknown proxies"):
        config_from_dict({"analysis": {"early_warning": {"proxies": ["no_such_proxy"]}}})
    with pytest.raises(Exception, match="truth_rule"):
        config_from_dict({"analysis": {"early_warning": {"truth_rule": "fpr:2"}}})
    cfg = config_from_dict({"analysis": {"early_warning": {"proxies": ["lt_iqr"], "tail_alphas": [0.01, 0.001]}}})
    assert cfg.analysis.early_warning.tail_alphas == [0.001, 0.01]


def test_the_section_draws_in_a_browser(tiny_run, tmp_path):
    """The section's figures draw in headless Chromium without errors (the page holds the section
    alone, with the report's own styles, plotly and script)."""
    if find_chromium() is None:
        pytest.skip("Chromium is not installed")
    out, _ = tiny_run
    panels = section_panels(out)
    page = tmp_path / "index.html"
    page.write_text(document("early warning", "the section alone", [("early_warning", "Early warning")],
                             section("Early warning", "early_warning", panels)))
    r = inspect_page(page, settle_s=60)
    drawn = {p["id"] for p in r.plots if p["svg"] > 0}
    assert {"plot-early-warning", "plot-early-warning-model"} <= drawn, r.plots
    assert r.errors == [] and r.network_requests == []


def test_without_a_usable_lira_the_stage_validates_against_v_alone(tiny_run, monkeypatch):
    """Too few models for lira_online's references (M = 2) must not stop the analysis."""
    out, data = tiny_run
    cfg, run = config_from_dict(data), RunDir(out)

    def no_lira(*args):
        raise DataError("online LiRA needs at least 4 models")

    monkeypatch.setattr(stage, "final_truth_scores", no_lira)
    z, epochs = np.load(out / "membership.npy"), np.load(out / "epochs.npy")
    validation, tail, about = stage.validate_run(cfg, run, z, epochs, 0)
    assert about["truth_scores"].startswith("unavailable: online LiRA")
    assert {k[1] for k in validation.values} == {"final_high", "final_advantage"}
    entry = stage.summarise(validation, tail, about)
    assert entry["best_precision_at_25pct"]["proxy"] is None and entry["final"]["lt_iqr"]["auc"] is None
    assert entry["final"]["lt_iqr"]["v_auc"] is not None
