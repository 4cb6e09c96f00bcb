"""A report of N = 50,000 samples over 50 checkpoints stays small and opens in a browser; tiny
and single-checkpoint runs still render.

No training: the plane is drawn at random (flag counts of 8 IN and 8 OUT models per sample, a
share of samples drifting towards membership), and the dynamics tables come from the analysis's
own functions on that plane, so the report reads the same schema as after a real run.
"""

import json
import re

import numpy as np
import pandas as pd
import pytest
from browser import find_chromium, inspect_page  # tests/browser.py (pytest puts tests/ on sys.path)

from privdyn.analysis import clusters, difficulty, dynamics, early, population
from privdyn.analysis.plane import Plane
from privdyn.config import config_from_dict
from privdyn.pipeline.analysis import pool_inputs, save_gallery
from privdyn.report.html import build_report
from privdyn.store import atomic
from privdyn.store.rundir import RunDir

N, T, M = 50_000, 50, 16


def fake_run(path, n=N, t=T, m=M, seed=0) -> RunDir:
    cfg = config_from_dict({"name": "large", "seed": seed, "dataset": {"name": "synthetic", "n_pool": n},
                            "training": {"n_models": m, "epochs": t}, "attacks": ["lira_online"],
                            "analysis": {"grid": 8, "n_clusters": 3, "sensitivity": False}})
    rd = RunDir(path)
    rd.init(cfg)
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, t + 1)
    half = m // 2
    leak = rng.beta(0.3, 3.0, size=n) * np.linspace(0.05, 1, t)[:, None]     # [T, N] chance an IN model flags
    tpr = rng.binomial(half, np.clip(0.01 + leak, 0, 1)) / half
    fpr = rng.binomial(half, 0.01, size=(t, n)) / half
    adv = tpr - fpr
    auc = np.clip(0.5 + adv / 2 + rng.normal(0, 0.05, size=(t, n)), 0, 1)
    st = population.states(adv, cfg.analysis.states)
    atomic.save_npz(rd.analysis_dir("lira_online", "fpr:0.01") / "plane.npz", fpr=fpr, tpr=tpr, adv=adv, auc=auc,
                    tau=np.zeros(t), epochs=epochs)
    atomic.save_npy(rd.path / "labels.npy", rng.integers(0, 4, size=n))
    speed, net = dynamics.encoding_speed(fpr, tpr, epochs)
    counts = dynamics.transition_counts(st)
    first, settled = dynamics.time_to_high(st, epochs)
    clus = clusters.cluster_trajectories(adv, 3, seed, 500)
    names = clusters.describe_clusters(clus.labels, adv, first, epochs, cfg.analysis.states)
    measures = {k: rng.normal(size=n) + adv[-1] for k in difficulty.MEASURES}
    vulnerable = early.final_vulnerable(adv[-1], st[-1] == 3)
    com = population.centre_of_mass(fpr, tpr)
    acc = np.linspace(0.3, 0.9, t)
    adir = rd.analysis_dir("lira_online", "fpr:0.01")
    atomic.write_parquet(adir / "sample.parquet", pd.DataFrame({
        "sample": np.arange(n), "final_fpr": fpr[-1], "final_tpr": tpr[-1], "final_advantage": adv[-1],
        "final_auc": auc[-1], "final_state": pd.Categorical.from_codes(st[-1], population.STATE_NAMES),
        "max_advantage": adv.max(axis=0), "encoding_speed": speed, "net_encoding_rate": net,
        "time_to_high": first, "settled_high": settled, "cluster": clus.labels,
        "cluster_name": pd.Categorical.from_codes(clus.labels, list(names["name"])),
        "finally_vulnerable": vulnerable, **measures}))
    atomic.write_parquet(adir / "epoch.parquet", pd.DataFrame({
        "epoch": epochs, "com_fpr": com[:, 0], "com_tpr": com[:, 1],
        "entropy_bits": population.spatial_entropy(fpr, tpr, 8), "auc": auc.mean(axis=1),
        "tpr_at_fpr_0.001": tpr.mean(axis=1) / 10, "tpr_at_fpr_0.01": tpr.mean(axis=1),
        "train_accuracy": acc, "test_accuracy": acc * 0.8,
        **{f"n_{s}": (st == k).sum(axis=1) for k, s in enumerate(population.STATE_NAMES)},
        "recall": early.recall_curve(adv, vulnerable), "spearman_to_final": early.spearman_to_final(adv),
        "p_to_high": np.append(dynamics.p_to_high(counts), np.nan)}))
    # what the analysis stores for the gallery: for tabular data, why there is no picture
    plane = Plane.from_arrays({"fpr": fpr, "tpr": tpr, "adv": adv, "auc": auc, "tau": np.zeros(t)})
    save_gallery(adir / "gallery.npz", plane, pool_inputs(cfg, rd))
    atomic.write_parquet(adir / "transitions.parquet", dynamics.transitions_table(counts, epochs))
    atomic.write_parquet(adir / "clusters.parquet", names)
    atomic.write_parquet(adir / "difficulty_deciles.parquet",
                         difficulty.decile_table(measures, adv[-1], auc[-1], st[-1] == 3))
    atomic.write_parquet(adir / "difficulty_spearman.parquet",
                         difficulty.spearman_table(measures, {"final_advantage": adv[-1]}, 10, seed))
    atomic.write_json(rd.summary_path, {"name": "large", "default_attack": "lira_online", "n_samples": n,
                                        "n_high_final": int((st[-1] == 3).sum()), "train_accuracy": acc.tolist(),
                                        "final": {"test_accuracy": acc[-1] * 0.8},
                                        # the analysis writes null speeds for a single checkpoint
                                        "encoding_speed_mean": None if t == 1 else 0.05,
                                        "encoding_speed_median": None if t == 1 else 0.03})
    return rd


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    rd = fake_run(tmp_path_factory.mktemp("large") / "run")
    return rd, build_report(rd.load_config(), rd)


def test_large_report_stays_small_and_says_it_subsamples(large):
    rd, index = large
    size = index.stat().st_size
    assert size < 20_000_000, f"{size / 1e6:.1f} MB"
    html = index.read_text()
    assert html.count("Showing a random 4,000 of 50,000 samples") == 2   # both animated planes say so
    assert "A random 4,000 of 50,000 samples is shown." in html          # and the difficulty scatter
    assert re.findall(r"Not shown: [^<]*", html) == ["Not shown: synthetic is tabular data, which has no picture."]
    spec = html[html.index('data-target="plot-plane">') + len('data-target="plot-plane">'):]
    fig = json.loads(spec[:spec.index("</script>")])
    assert len(fig["frames"]) == T and len(fig["data"]) == 5


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_large_report_opens_in_chromium(large):
    _, index = large
    r = inspect_page(index, settle_s=120)
    assert r.plots and all(p["svg"] > 0 for p in r.plots)
    assert r.errors == [] and r.network_requests == []


@pytest.mark.parametrize("n,t", [(40, 1), (7, 3)])
def test_tiny_and_single_checkpoint_runs_render(tmp_path, n, t):
    rd = fake_run(tmp_path / "run", n=n, t=t)
    html = build_report(rd.load_config(), rd).read_text()
    notes = re.findall(r"Not shown: [^<]*", html)
    if t == 1:   # no step between checkpoints: no transitions and no speed, said in place
        assert "Not shown: a run with one checkpoint has no transitions." in notes
        assert "Not shown: no sample has a value of encoding_speed or net_encoding_rate." in notes
    ids = re.findall(r'<tr><td data-v="\d+">\d+</td><td data-v="(\d+)">', html)
    assert len(ids) == n and sorted(map(int, ids)) == list(range(n))   # every sample in the table
    assert 'data-target="plot-plane"' in html
