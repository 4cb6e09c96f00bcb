"""The analyze stage on synthetic run directories (no training): every table, summary key,
DESIGN.md invariant, the CLI, and order independence."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import privdyn
from privdyn import pipeline
from privdyn.analysis.difficulty import MEASURES
from privdyn.cli import app
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.store import atomic, provenance
from privdyn.store.arrays import save_array
from privdyn.store.rundir import RunDir
from privdyn.training.membership import balanced_membership

M, N, T, NTEST = 8, 60, 6, 20
ATTACK = "lira_online"
SUMMARY_KEYS = ("test_accuracy", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "auc", "com_displacement_pp",
                "com_path_pp", "encoding_speed_mean", "encoding_speed_median", "delta_entropy_bits",
                "peak_p_to_high", "n_high_final", "recall_curve", "epoch_recall_0.7", "spearman_difficulty")


def _arrays(seed=0):
    """Scores with planted behaviour: samples 0-9 separate early, 10-19 late, sample 59 never
    (all models give it the same score); signals where hard samples are learned late."""
    rng = np.random.default_rng(seed)
    z = balanced_membership(M, N, seed)
    t = np.arange(T)[:, None, None] / (T - 1)
    strength = np.zeros(N)
    strength[:10], strength[10:20] = 6.0, 6.0
    onset = np.where(np.arange(N) < 10, 0.0, 0.7)
    ramp = np.clip((t - onset) / 0.2, 0, 1)
    scores = rng.normal(size=(T, M, N)) + z * strength * ramp
    scores[:, :, -1] = 0.25
    hardness = rng.uniform(size=N)
    correct = rng.uniform(size=(T, M, N)) > hardness * (1 - t * 0.8)
    loss = (hardness * (1.2 - t) + 0.05 * rng.uniform(size=(T, M, N))).astype(np.float32)
    el2n = (hardness * (1 - 0.5 * t) * np.ones((T, M, N))).astype(np.float32)
    test_correct = rng.uniform(size=(T, M, NTEST)) < 0.5 + 0.3 * t
    test_loss = rng.exponential(size=(T, M, NTEST)).astype(np.float32)
    return {"membership": z, "scores": scores, "correct": correct, "loss": loss, "el2n": el2n,
            "test_correct": test_correct, "test_loss": test_loss}


def _write_run(path, arrays, perm=None, el2n=True, **analysis):
    perm = np.arange(N) if perm is None else perm
    cfg = config_from_dict({
        "name": "synthetic-run", "seed": 1, "dataset": {"name": "synthetic", "n_pool": N, "n_test": NTEST},
        "training": {"n_models": M, "epochs": T}, "attacks": [ATTACK],
        "analysis": {"grid": 4, "n_bootstrap": 50, **analysis},
    })
    run = RunDir(path)
    run.init(cfg)
    atomic.save_npy(path / "membership.npy", arrays["membership"][:, perm])
    atomic.save_npy(path / "epochs.npy", np.arange(T - len(arrays["scores"]) + 1, T + 1))
    save_array(run.score_path(ATTACK), arrays["scores"][:, :, perm])
    for name in ("correct", "loss", "el2n") if el2n else ("correct", "loss"):
        save_array(run.signal_path(name), arrays[name][:, :, perm, None])
    for name in ("correct", "loss"):
        save_array(run.signal_path(name, "test"), arrays[f"test_{name}"][..., None])
    # scores made outside the score stage: record their provenance, as an import would
    provenance.record(run, provenance.score_digest(cfg, run, ATTACK), run.score_path(ATTACK))
    return cfg, run


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "a"
    cfg, run = _write_run(path, _arrays())
    summary = pipeline.analyze(cfg, run)
    return path, summary


def test_summary_has_every_design_key(analysed):
    path, summary = analysed
    on_disk = json.loads((path / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert key in on_disk, key
    assert len(on_disk["recall_curve"]) == T and len(on_disk["test_accuracy"]) == T
    assert set(on_disk["spearman_difficulty"]) == set(MEASURES)
    for m in MEASURES:
        for target in ("final_advantage", "final_auc"):
            e = on_disk["spearman_difficulty"][m][target]
            assert set(e) == {"rho", "ci_low", "ci_high"}
            if e["rho"] is not None:
                assert e["ci_low"] <= e["ci_high"] and -1 <= e["rho"] <= 1
    assert on_disk["recall_curve"][-1] == 1.0
    assert on_disk["epoch_recall_0.7"] in range(1, T + 1)
    assert on_disk["n_high_final"] == summary["n_high_final"] > 0
    assert on_disk["n_clusters"] == len(on_disk["clusters"])


def test_tables_and_invariants(analysed):
    path, summary = analysed
    t = privdyn.open_run(path).tables()
    assert len(t.sample_epoch) == T * N and len(t.sample) == N and len(t.epoch) == T
    se = t.sample_epoch
    alpha = 0.01
    n_out = M * N / 2
    per_epoch = se.groupby("epoch")[["fpr", "tpr"]].mean()
    # mean_i FPR_i = alpha up to one OUT score, and mean_i TPR_i = the global TPR at the threshold
    assert (abs(per_epoch.fpr - alpha) <= 1 / n_out + 1e-12).all()
    np.testing.assert_allclose(per_epoch.tpr.values, t.epoch["tpr_at_fpr_0.01"].values)
    # transitions: every step holds every sample, probabilities of a row sum to one
    tr = t.transitions
    assert (tr.groupby("epoch_from")["count"].sum() == N).all()
    rows = tr.groupby(["epoch_from", "state_from"], observed=True).agg(n=("count", "sum"), p=("probability", "sum"))
    np.testing.assert_allclose(rows.p[rows.n > 0], 1.0)
    # the per-epoch P(non-high -> high) follows from the transitions table
    nh = tr[tr.state_from != "high"]
    up = nh[nh.state_to == "high"].groupby("epoch_from")["count"].sum() / nh.groupby("epoch_from")["count"].sum()
    np.testing.assert_allclose(t.epoch.p_to_high.values[:-1], up.values)
    assert np.isnan(t.epoch.p_to_high.values[-1])
    assert summary["peak_p_to_high"] == pytest.approx(np.nanmax(up.values))
    # per-sample columns agree with the per-sample-epoch table
    s = t.sample.set_index("sample")
    high = se[se.state == "high"].groupby("sample")["epoch"].min()
    np.testing.assert_array_equal(s.time_to_high.dropna().sort_index(), high.sort_index().astype(float))
    assert s.finally_vulnerable.sum() == summary["n_high_final"]
    assert set(MEASURES) <= set(s.columns) and s[list(MEASURES)].notna().all().all()
    assert set(s.cluster_name.unique()) == set(t.clusters.name)
    assert set(t.difficulty_spearman.measure) == set(MEASURES)
    assert set(t.difficulty_deciles.measure) == set(MEASURES)
    assert (t.difficulty_deciles.groupby("measure")["n"].sum() == N).all()
    # planted behaviour: the early group is high and clustered as early-high
    assert s.loc[:9, "final_state"].eq("high").mean() > 0.8
    assert (s.loc[:9, "time_to_high"] < s.loc[10:19, "time_to_high"].min()).mean() > 0.8
    assert "early-high" in set(s.loc[:9, "cluster_name"])


def test_sample_whose_scores_never_separate_stays_safe(analysed):
    path, _ = analysed
    t = privdyn.open_run(path).tables()
    never = t.sample_epoch[t.sample_epoch["sample"] == N - 1]
    assert (never.state == "safe").all() and (never.advantage == 0).all() and (never.auc == 0.5).all()
    row = t.sample.set_index("sample").loc[N - 1]
    assert math.isnan(row.time_to_high) and math.isnan(row.settled_high) and not row.finally_vulnerable
    assert row.encoding_speed == 0 and row.net_encoding_rate == 0


def test_permuting_samples_permutes_the_tables(analysed, tmp_path):
    path, summary = analysed
    perm = np.random.default_rng(7).permutation(N)
    cfg, run = _write_run(tmp_path / "p", _arrays(), perm=perm)
    permuted = pipeline.analyze(cfg, run)
    a, b = privdyn.open_run(path).tables(), privdyn.open_run(tmp_path / "p").tables()
    sa = a.sample.set_index("sample").loc[perm].reset_index(drop=True)
    sb = b.sample.drop(columns="sample")
    pd.testing.assert_frame_equal(sa, sb, check_exact=False, rtol=1e-12)
    exact = [c for c in a.epoch.columns if "_ci" not in c]  # model-level bootstrap CIs: Monte Carlo
    pd.testing.assert_frame_equal(a.epoch[exact], b.epoch[exact], check_exact=False, rtol=1e-12)
    for name in ("transitions", "clusters", "difficulty_deciles"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=False, rtol=1e-12)
    np.testing.assert_allclose(a.difficulty_spearman.rho, b.difficulty_spearman.rho, rtol=1e-12)
    for key in ("encoding_speed_mean", "peak_p_to_high", "silhouette", "epoch_recall_0.7", "n_high_final"):
        assert permuted[key] == pytest.approx(summary[key], rel=1e-12)


def test_cli_analyze_other_rules_and_tables(analysed):
    path, _ = analysed
    runner = CliRunner()
    for rule in ("fpr:0.1", "score:0"):
        res = runner.invoke(app, ["analyze", str(path), "--attack", ATTACK, "--rule", rule])
        assert res.exit_code == 0, res.output
        t = privdyn.open_run(path).tables(ATTACK, rule)
        assert len(t.sample) == N and len(t.transitions) == (T - 1) * 16
    t = privdyn.open_run(path).tables(ATTACK, "fpr:0.1")
    assert (abs(t.sample_epoch.groupby("epoch").fpr.mean() - 0.1) <= 1 / (M * N / 2) + 1e-12).all()
    with pytest.raises(PrivdynError, match="privdyn analyze"):
        privdyn.open_run(path).tables(ATTACK, "fpr:0.2")


def test_run_without_el2n_signal_reports_why(tmp_path):
    cfg, run = _write_run(tmp_path / "old", _arrays(), el2n=False, n_clusters=2)
    out = pipeline.analyze(cfg, run)
    e = out["spearman_difficulty"]["early_el2n"]
    assert e["final_advantage"]["rho"] is None and "el2n" in e["note"]
    assert out["spearman_difficulty"]["consistency"]["final_auc"]["rho"] is not None
    assert out["n_clusters"] == 2
    json.loads((tmp_path / "old" / "summary.json").read_text())  # valid JSON, no NaN


def test_no_high_sample_uses_top_share(tmp_path):
    arrays = _arrays()
    arrays["scores"] = np.random.default_rng(3).normal(size=(T, M, N))  # nothing separates
    cfg, run = _write_run(tmp_path / "flat", arrays)
    out = pipeline.analyze(cfg, run)
    assert out["n_high_final"] == 0 and out["vulnerable_set"] == "top 1% by A(e_T)"
    assert out["n_vulnerable"] >= 1 and out["recall_curve"][-1] == 1.0


def test_single_checkpoint_gives_undefined_rates_not_errors(tmp_path):
    arrays = {k: v[-1:] if k != "membership" else v for k, v in _arrays().items()}
    cfg, run = _write_run(tmp_path / "one", arrays)
    out = pipeline.analyze(cfg, run)
    assert out["encoding_speed_mean"] is None and out["encoding_speed_median"] is None
    assert out["peak_p_to_high"] is None and out["p_to_high"] == [] and out["recall_curve"] == [1.0]
    t = privdyn.open_run(tmp_path / "one").tables()
    assert len(t.transitions) == 0 and len(t.epoch) == 1 and t.sample.encoding_speed.isna().all()
    json.loads((tmp_path / "one" / "summary.json").read_text())


def test_non_finite_scores_are_a_user_error(tmp_path):
    arrays = _arrays()
    arrays["scores"][2, 0, 5] = np.nan
    cfg, run = _write_run(tmp_path / "nan", arrays)
    with pytest.raises(PrivdynError, match="NaN or infinite"):
        pipeline.analyze(cfg, run)


def test_every_run_level_analysis_names_a_function_that_exists():
    """The run-level analyses name their compute functions by module (imported only when one
    runs): each name must resolve, to a function of that module, and names and files are unique."""
    import importlib
    import inspect

    from privdyn.pipeline.run_level import run_analyses

    analyses = run_analyses()
    for x in analyses:
        module, _, function = x.compute.partition(":")
        fn = getattr(importlib.import_module(module), function)
        assert inspect.isfunction(fn) and fn.__module__ == module
        assert list(inspect.signature(fn).parameters) == ["cfg", "run", "membership", "epochs", "measures"]
    files = [f for x in analyses for f in x.files]
    assert len({x.name for x in analyses}) == len(analyses) and len(set(files)) == len(files)
