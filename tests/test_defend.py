"""`privdyn defend` (sweep/defend.py, report/defence.py, analysis/defence.py): the generated study
runs end to end at tiny size and writes one comparison; its grid, labels and matching rules."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_runner import run_cli  # tests/cli_runner.py

from privdyn.analysis import defence as core
from privdyn.analysis.population import Bands
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.sweep.defend import BASELINE, build_sweep, parse_grid, run_defend

TINY = {
    "name": "tinydef", "seed": 3,
    "dataset": {"name": "synthetic", "n_pool": 120, "n_test": 60,
                "options": {"dim": 8, "classes": 3, "difficulty": 0.6, "label_noise": 0.1}},
    "model": {"arch": "mlp", "width": 16, "depth": 1, "norm": "none"},
    "training": {"n_models": 4, "epochs": 4, "batch_size": 32, "group_size": 4,
                 "optimizer": {"name": "sgd", "lr": 0.1}},
    "attacks": ["lira_online"],
    "analysis": {"grid": 2, "sensitivity": False, "n_bootstrap": 10, "model_bootstrap": 10,
                 "early_warning": {"enabled": False}},
}


def cli(*args):
    """``privdyn ARGS`` in this process: (exit code, stdout, stderr)."""
    done = run_cli(*args)
    return done.returncode, done.stdout, done.stderr


# ----- the grid --------------------------------------------------------------------------------
def test_the_study_lists_baseline_interventions_controls_oracle_and_dp(tmp_path):
    cfg = config_from_dict(TINY)
    sweep, kinds = build_sweep(cfg, parse_grid(["share=0.05,0.1", "weight=0.2", "dp_noise=0.5,1"]), tmp_path)
    slugs = [p.slug for p in sweep.points]
    assert slugs[0] == BASELINE and kinds[BASELINE] == "baseline"
    assert "remove-lt_iqr-k0.05-t2" in slugs and "remove-random-k0.1-t2" in slugs
    assert "clip-oracle-k0.1-t2-C0.5" in slugs and "weight-lt_iqr-k0.05-t2-w0.2" in slugs
    assert [s for s in slugs if kinds[s] == "dp"] == ["dp-sgd-sigma0.5", "dp-sgd-sigma1"]
    assert len(slugs) == 1 + 3 * 2 * 2 + 2 + 2  # actions x (proxy, oracle) x shares, random x shares, DP
    by = {p.slug: p.config for p in sweep.points}
    assert not by[BASELINE].defence.enabled and not by[BASELINE].training.dp.enabled
    orc = by["remove-oracle-k0.05-t2"].defence
    assert orc.is_oracle and orc.oracle_source()[0] == str((tmp_path / "runs" / BASELINE).resolve())
    assert by["dp-sgd-sigma1"].training.dp.enabled and by["dp-sgd-sigma1"].training.dp.noise_multiplier == 1.0
    assert {kinds[s] for s in slugs} == {"baseline", "intervention", "random", "oracle", "dp"}
    sweep, kinds = build_sweep(cfg, parse_grid(["actions=remove", "oracle=false", "random=", "dp_clip=1,5",
                                                "dp_noise=0.5"]), tmp_path)
    assert [p.slug for p in sweep.points] == [BASELINE, "remove-lt_iqr-k0.05-t2", "dp-sgd-sigma0.5",
                                              "dp-sgd-sigma0.5-C5"]
    assert sweep.points[-1].config.training.dp.max_grad_norm == 5.0
    # the baseline trains exactly as the config alone would (same hash)
    from privdyn.config import TRAIN_SECTIONS

    assert by[BASELINE].section_hash(*TRAIN_SECTIONS) == cfg.section_hash(*TRAIN_SECTIONS)


@pytest.mark.parametrize("items,needle", [
    (["bogus=1"], "--grid bogus: not a grid key"),
    (["share"], "expected KEY=V1,V2"),
    (["actions=remove,explode"], "--grid actions"),
    (["share=0.05,0.05"], "listed twice"),
])
def test_a_bad_grid_names_the_key(items, needle):
    with pytest.raises(PrivdynError) as e:
        parse_grid(items)
    assert needle in str(e.value)


def test_clip_on_a_batchnorm_model_and_a_bad_rule_are_refused_before_anything_runs(tmp_path):
    data = copy.deepcopy(TINY)
    data["model"]["norm"] = "batch"
    with pytest.raises(PrivdynError, match="action clip needs per-sample gradients"):
        build_sweep(config_from_dict(data), parse_grid([]), tmp_path)
    with pytest.raises(PrivdynError, match="no early-warning proxy"):
        build_sweep(config_from_dict(TINY), parse_grid(["rules=nope"]), tmp_path)


def test_a_dp_config_is_refused_rather_than_its_baseline_losing_dp(tmp_path):
    """The study's baseline is non-private; silently dropping the config's DP-SGD would mislabel it."""
    data = copy.deepcopy(TINY)
    data["training"]["dp"] = {"enabled": True, "noise_multiplier": 0.8, "max_grad_norm": 2.0}
    with pytest.raises(PrivdynError, match=r"training.dp.enabled=false.*--grid dp_noise=0.8 --grid dp_clip=2"):
        build_sweep(config_from_dict(data), parse_grid([]), tmp_path)
    assert not any(tmp_path.iterdir())


def test_grid_epochs_outside_the_checkpoints_name_the_valid_ones(tmp_path):
    for bad in ("0", "4"):
        with pytest.raises(PrivdynError, match=r"pick one of \[1, 2, 3\]"):
            build_sweep(config_from_dict(TINY), parse_grid([f"epoch={bad}"]), tmp_path)


# ----- the core ----------------------------------------------------------------------------------
def _plane(adv, fpr=None):
    adv = np.asarray(adv, dtype=float)
    fpr = np.zeros_like(adv) if fpr is None else np.asarray(fpr, dtype=float)
    from privdyn.analysis.population import states

    return core.FinalPlane(fpr, fpr + adv, adv, 0.5 + adv / 2, states(adv, Bands()))


def test_onion_counts_the_samples_the_intervention_exposed():
    base = _plane([0.0, 0.05, 0.2, 0.4, 0.7, 0.8], fpr=[0.1, 0.3, 0, 0, 0, 0])
    run = _plane([0.7, 0.0, 0.65, 0.1, 0.3, 0.9])
    on = core.onion(base, run, grid=4)
    assert on.safe_to_high.tolist() == [True, False, False, False, False, False]
    assert on.new_high.tolist() == [True, False, True, False, False, False]
    assert on.high_to_lower.tolist() == [False, False, False, False, True, False]
    assert on.summary() == {"n_safe_to_high": 1, "n_new_high": 2, "n_high_to_lower": 1, "new_high_from_safe": 1,
                            "new_high_from_low": 1, "new_high_from_medium": 0, "safe_to_high_baseline_fpr": 0.1,
                            "safe_to_high_baseline_tpr": 0.1, "safe_to_high_baseline_auc": 0.5,
                            "safe_baseline_auc": 0.5125}
    assert on.baseline_cells.sum() == 1 and on.baseline_cells[0, 0] == 1  # FPR 0.1, TPR 0.1: the first cell


def test_flagged_effect_and_vulnerability_follow_their_definitions():
    base = _plane([0.0, 0.7, 0.8, 0.1] + [0.0] * 96)
    run = _plane([0.0, 0.2, 0.8, 0.6] + [0.0] * 96)
    rate = np.zeros(100)
    rate[[1, 2]] = [1.0, 0.5]
    rate[3] = 0.25
    eff = core.flagged_effect(base, run, rate)
    assert eff["n_flagged"] == 2 and eff["n_any_flagged"] == 3
    assert eff["flagged_adv_baseline"] == pytest.approx(0.75) and eff["flagged_adv_defended"] == pytest.approx(0.5)
    assert eff["flagged_high_defended"] == pytest.approx(0.5)
    v = core.vulnerability(run, base)
    assert v["n_baseline_vulnerable"] == 2 and v["baseline_vulnerable_adv"] == pytest.approx(0.5)
    assert v["baseline_vulnerable_still_high"] == pytest.approx(0.5)
    assert v["own_top1pct_adv"] == pytest.approx(0.8)  # its own top 1% is sample 2
    assert core.flag_rate(np.array([[[True, False], [False, False]], [[False, False], [True, True]]]),
                          np.array([[True, True], [True, False]])).tolist() == [1.0, 0.0]
    assert core.nearest(np.array([0.5, np.nan, 0.71, 0.69]), 0.7) == 2


# ----- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("defend")
    cfg_file = tmp / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    out = tmp / "study"
    code, stdout, stderr = cli("defend", str(cfg_file), "--out", str(out), "--no-progress",
                               "--grid", "dp_noise=0.5", "--grid", "share=0.1")
    return out, code, stdout, stderr


def test_defend_runs_end_to_end_and_writes_one_comparison(study):
    out, code, stdout, stderr = study
    assert code == 0, stderr
    assert "9 ran, 0 already finished, 0 failed" in stdout
    frontier = pd.read_parquet(out / "defence_frontier.parquet")
    assert frontier["label"].tolist()[0] == BASELINE and len(frontier) == 9
    assert set(frontier["kind"]) == {"baseline", "intervention", "random", "oracle", "dp"}
    for col in ("test_accuracy", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "n_high_final", "own_top1pct_adv",
                "baseline_vulnerable_adv", "n_flagged", "flagged_adv_baseline", "flagged_adv_defended",
                "n_safe_to_high", "n_new_high", "epsilon", "dp_matched"):
        assert col in frontier, col
    assert frontier["dp_matched"].sum() == 1
    assert (frontier.loc[frontier["kind"] == "oracle", "oracle"]).all()
    assert not frontier.loc[frontier["kind"] != "oracle", "oracle"].any()
    assert frontier.loc[frontier["kind"] == "dp", "epsilon"].gt(0).all()
    defended = frontier[frontier["kind"].isin(["intervention", "random", "oracle"])]
    assert (defended["n_any_flagged"] > 0).all()
    oracle_remove = frontier[frontier["label"] == "remove-oracle-k0.1-t2"].iloc[0]
    assert oracle_remove["n_flagged"] >= 1 and oracle_remove["flagged_auc_baseline"] > 0.5  # the riskiest

    flagged = pd.read_parquet(out / "defence_flagged.parquet")
    assert set(flagged["label"]) == set(defended["label"]) and flagged["flag_rate"].between(0, 1).all()
    onion = pd.read_parquet(out / "defence_onion.parquet")
    assert {"label", "sample", "safe_in_baseline", "fpr_baseline", "tpr_baseline"} <= set(onion.columns)
    summary = json.loads((out / "defence_summary.json").read_text())
    assert summary["dp_matched"]["label"] == "dp-sgd-sigma0.5" and "closest" in summary["dp_matched"]["rule"]
    assert "ORACLE" not in summary["judged_on"] and "upper bound" in summary["oracle_note"]
    assert all(("oracle" in v["label"]) == v["oracle"] for v in summary["verdicts"])
    html = (out / "defence_report" / "index.html").read_text()
    for needle in ("Privacy-utility frontier", "Onion effect", "Final vulnerability planes", "ORACLE remove-oracle"):
        assert needle in html, needle
    assert (out / "defence_report" / "defence_frontier.png").exists()
    assert (out / "comparison.parquet").exists()  # the sweep's own tables
    assert json.loads((out / "runs" / "remove-oracle-k0.1-t2" / "defence.json").read_text())["oracle"] is True


def test_defence_summary_stays_valid_json_when_the_matched_dp_point_has_no_epsilon(study):
    """dp_noise=0 clips without noise: its epsilon is infinite (null in dp.json, NaN in the frontier)."""
    from privdyn.sweep.defend import _match_dp, summarise

    out = study[0]
    frontier = pd.read_parquet(out / "defence_frontier.parquet")
    frontier.loc[frontier["kind"] == "dp", "epsilon"] = np.nan
    matched = _match_dp(frontier, "baseline")
    assert matched is not None and np.isnan(matched["epsilon"])
    grid = parse_grid(["dp_noise=0.5", "share=0.1"])
    text = json.dumps(summarise(frontier, matched, {}, "lira_online", config_from_dict(TINY), grid, "tiny"),
                      allow_nan=False)  # raises on NaN or Infinity
    assert json.loads(text)["dp_matched"]["epsilon"] is None


def test_defend_again_skips_every_finished_point(study):
    out, code, _, _ = study
    assert code == 0
    result, paths = run_defend(config_from_dict(TINY), parse_grid(["dp_noise=0.5", "share=0.1"]), out,
                               progress=False, log=lambda s: None)
    assert [o.status for o in result.outcomes] == ["skipped"] * 9 and "frontier" in paths


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_defend_into_a_study_trained_otherwise_is_one_exit_2_paragraph_and_writes_nothing(study, tmp_path):
    """A changed training key would make every finished point fail alike and overwrite the study's
    tables beside its old frontier: refused up front, the folder byte-identical."""
    out, code, _, _ = study
    assert code == 0
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    before = _snapshot(out)
    code, _, stderr = cli("defend", str(cfg_file), "--out", str(out), "--no-progress", "--grid", "dp_noise=0.5",
                          "--grid", "share=0.1", "--set", "training.optimizer.lr=0.2")
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "9 run(s) trained with a different" in lines[0]
    assert "Nothing was written" in lines[0]
    assert _snapshot(out) == before


def test_defend_dry_run_lists_the_points_and_a_bad_grid_exits_2(tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(TINY))
    code, stdout, _ = cli("defend", str(cfg_file), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 0 and "remove-lt_iqr-k0.05-t2" in stdout and "ORACLE" in stdout
    assert not (tmp_path / "o").exists()
    code, _, stderr = cli("defend", str(cfg_file), "--grid", "share=2")
    assert code == 2 and "--grid share" in stderr
