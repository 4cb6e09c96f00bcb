"""Sensitivity of the headline dynamics: the default row reproduces the main analysis, and the
variants are the ones DESIGN.md names."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from privdyn.analysis import sensitivity
from privdyn.analysis.population import Bands
from privdyn.config import config_from_dict
from privdyn.pipeline import run_all


@pytest.fixture(scope="module")
def sensitivity_run(tmp_path_factory, tiny_config_source):
    data = tiny_config_source()
    data["training"]["n_models"] = 12  # M/2 = 6: grid 5 is allowed, 10 and 20 are not
    data["attacks"] = ["lira_online", "attack_r"]
    out = tmp_path_factory.mktemp("sens") / "run"
    run_all(config_from_dict(data), out, progress=False, with_report=True)
    return out


def test_variants_follow_design():
    v = sensitivity.variants_for("lira_online", 16, "fpr:0.01", 8, Bands())
    assert v.rules == ("fpr:0.001", "fpr:0.01", "fpr:0.1", "score:0")
    assert v.grids == (5, 8)
    assert v.bands == (Bands(0.1, 0.3, 0.6), Bands(0.2, 0.4, 0.7))
    other = sensitivity.variants_for("rmia", 64, "fpr:0.05", 10, Bands(0.2, 0.4, 0.7))
    assert other.rules == ("fpr:0.001", "fpr:0.01", "fpr:0.1", "fpr:0.05")  # no natural zero for RMIA
    assert other.grids == (5, 10, 20) and len(other.bands) == 2


def test_default_row_reproduces_the_main_analysis(sensitivity_run):
    table = pd.read_parquet(sensitivity_run / "analysis" / "sensitivity.parquet")
    summary = json.loads((sensitivity_run / "summary.json").read_text())
    for attack, t in table.groupby("attack"):
        n_rules = 4 if attack == "lira_online" else 3
        assert len(t) == n_rules * 2 * 2  # rules x grids {5, 6} x two band sets
        default = t[t.is_default]
        assert len(default) == 1
        main = summary["attacks"][attack]
        for key in ("com_displacement_pp", "com_path_pp", "delta_entropy_bits", "n_high_final",
                    "peak_p_to_high", "encoding_speed_mean", "epoch_recall_0.7"):
            want = main[key]
            got = float(default[key].iloc[0])
            if want is None:
                assert not np.isfinite(got), key
            else:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-12), (attack, key)
        assert main["sensitivity"]["n_high_final"]["default"] == main["n_high_final"]
        entry = main["sensitivity"]["com_displacement_pp"]
        assert entry["min"] <= entry["default"] <= entry["max"]
    assert summary["sensitivity"] == summary["attacks"]["lira_online"]["sensitivity"]
    page = (sensitivity_run / "report" / "index.html").read_text()
    assert "Sensitivity to the operating point, grid and bands" in page and "score:0" in page


def test_known_answers_on_a_synthetic_plane():
    """Scores that separate IN from OUT perfectly for the first half of the samples."""
    T, M, N = 3, 8, 40
    rng = np.random.default_rng(0)
    z = np.zeros((M, N), dtype=bool)
    z[::2], z[1::2] = rng.random((M // 2, N)) < 0.5, False
    z[1::2] = ~z[::2]
    scores = rng.normal(size=(T, M, N))
    scores[:, :, : N // 2] += 100 * z[:, : N // 2] * np.arange(T)[:, None, None]  # leak grows after epoch 1
    consistency = np.linspace(0, 1, N)
    v = sensitivity.Variants(("fpr:0.01", "score:50"), (2, 4), (Bands(),), "fpr:0.01", 4, Bands())
    t = sensitivity.sensitivity_table(scores, z, np.array([1, 2, 3]), consistency, v)
    assert len(t) == 4 and t.is_default.sum() == 1
    # at epochs 2 and 3 the leaky half is exactly at (FPR, TPR) = (0, 1): advantage 1, high
    assert (t["n_high_final"] == N // 2).all()
    score_rule = t[t.rule == "score:50"].iloc[0]
    assert score_rule["com_displacement_pp"] == pytest.approx(50.0)  # TPR mean 0 -> 0.5, FPR 0 throughout
    assert score_rule["epoch_recall_0.7"] == 2
    assert score_rule["peak_p_to_high"] == pytest.approx(0.5)
    adv_final = np.r_[np.ones(N // 2), np.zeros(N // 2)]
    assert score_rule["spearman_consistency"] == pytest.approx(spearmanr(consistency, adv_final).statistic)
