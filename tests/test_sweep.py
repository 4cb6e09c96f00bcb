"""Sweeps: grid expansion, skip-finished, failure isolation, comparison tables, and the CLI."""

import itertools
import json
import math
import runpy
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_runner import run_cli  # tests/cli_runner.py
from hypothesis import given, settings
from hypothesis import strategies as st

from privdyn.errors import PrivdynError
from privdyn.store import atomic
from privdyn.sweep import compare, expand, load_sweep, parse_spec, run_sweep, select_points
from privdyn.sweep.tables import (
    METRICS,
    aggregate,
    comparison_table,
    metrics_from_summary,
    recall_at_fraction,
    spearman_columns,
)

TINY = Path(__file__).resolve().parents[1] / "examples" / "sweeps" / "tiny.yaml"


def _spec(**kw):
    return parse_spec({"name": "t", **kw})


# ----- expansion ----------------------------------------------------------------------------

def test_grid_is_the_cartesian_product_with_seeds_innermost():
    sw = expand(_spec(grid={"model.width": [8, 16, 32], "training.epochs": [2, 3]}, seeds=[0, 1]))
    got = [(p.config.model.width, p.config.training.epochs, p.config.seed) for p in sw.points]
    assert got == list(itertools.product([8, 16, 32], [2, 3], [0, 1]))
    assert sw.varying == ["model.width", "training.epochs"]
    assert sw.points[0].slug == "width-8_epochs-2_seed-0"
    assert sw.points[0].values == {"model.width": 8, "training.epochs": 2, "seed": 0}
    assert len({p.slug for p in sw.points}) == len(sw.points)
    assert all(p.config.name == f"t-{p.slug}" for p in sw.points)


def test_zip_groups_vary_together_and_slug_uses_the_fewest_keys_that_tell_entries_apart():
    sw = expand(_spec(
        grid={"training.optimizer.lr": [0.1, 0.01]},
        zip=[{"model.arch": ["mlp", "cnn", "cnn"], "model.depth": [2, 2, 3], "model.width": [64, 16, 16]}]))
    assert len(sw.points) == 6
    triples = {(p.config.model.arch, p.config.model.depth, p.config.model.width) for p in sw.points}
    assert triples == {("mlp", 2, 64), ("cnn", 2, 16), ("cnn", 3, 16)}
    assert [p.slug for p in sw.points[:3]] == ["lr-0.1_arch-mlp_depth-2", "lr-0.1_arch-cnn_depth-2",
                                               "lr-0.1_arch-cnn_depth-3"]
    assert sw.varying == ["training.optimizer.lr", "model.arch", "model.depth", "model.width"]


def test_zip_label_names_the_entries_and_sets_no_config_key():
    sw = expand(_spec(zip=[{"label": ["sgd", "dp-sgd"], "training.optimizer.name": ["sgd", "sgd"],
                            "model.norm": ["batch", "none"]}], seeds=[3]))
    assert [p.slug for p in sw.points] == ["sgd_seed-3", "dp-sgd_seed-3"]
    assert sw.points[1].values == {"label": "dp-sgd", "model.norm": "none", "seed": 3}
    assert "label" not in sw.points[1].config.model_dump()


def test_slug_labels_are_the_shortest_unambiguous_suffix():
    sw = expand(_spec(grid={"dataset.name": ["digits", "synthetic"], "training.optimizer.name": ["sgd", "adam"],
                            "training.optimizer.lr": [0.1, 0.2], "dataset.options.lr": [1, 2]}))
    assert sw.points[0].slug == "dataset-digits_optimizer-sgd_optimizer-lr-0.1_options-lr-1"
    sw = expand(_spec(grid={"dataset.options.dataset": [1, 2], "dataset.name": ["digits", "synthetic"]}))
    assert sw.points[0].slug == "dataset-options-dataset-1_dataset-name-digits"


def test_values_that_render_alike_still_get_unique_slugs():
    sw = expand(_spec(grid={"dataset.options.tag": ["a/b", "a-b", "a b", None, "none", [1, 2]]}))
    slugs = [p.slug for p in sw.points]
    assert len(set(slugs)) == 6
    assert all(set(s) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+-_") for s in slugs)


def test_single_valued_keys_are_fixed_not_varying():
    sw = expand(_spec(grid={"model.width": [8], "training.epochs": [2, 3]}))
    assert sw.varying == ["training.epochs"] and [p.slug for p in sw.points] == ["epochs-2", "epochs-3"]
    assert all(p.config.model.width == 8 for p in sw.points)


_KEYS = ["model.width", "training.epochs", "training.batch_size", "dataset.options.a", "dataset.options.b",
         "analysis.n_bootstrap", "training.optimizer.lr"]


@st.composite
def _sweeps(draw):
    keys = draw(st.permutations(_KEYS))
    n_grid = draw(st.integers(0, 3))
    n_zip = draw(st.integers(0, min(2, len(keys) - n_grid)))
    values = st.integers(10, 40)
    grid = {k: draw(st.lists(values, min_size=1, max_size=3, unique=True)) for k in keys[:n_grid]}
    zlen = draw(st.integers(1, 3))
    zgroup = {k: draw(st.lists(values, min_size=zlen, max_size=zlen)) for k in keys[n_grid:n_grid + n_zip]}
    if zgroup and len(set(zip(*zgroup.values()))) < zlen:  # repeated entries are refused; tested apart
        zgroup = {k: [10 + j for j in range(zlen)] for k in zgroup}
    seeds = draw(st.none() | st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True))
    return grid, ([zgroup] if zgroup else []), seeds


@settings(max_examples=40, deadline=None)
@given(_sweeps())
def test_expansion_properties(sweep):
    grid, zgroups, seeds = sweep
    sw = expand(_spec(grid=grid, zip=zgroups, seeds=seeds))
    n_zip = len(next(iter(zgroups[0].values()))) if zgroups else 1
    assert len(sw.points) == math.prod(len(v) for v in grid.values()) * n_zip * len(seeds or [0])
    assert len({p.slug for p in sw.points}) == len(sw.points)
    zipped = set(zip(*zgroups[0].values())) if zgroups else None
    for p in sw.points:
        data = p.config.model_dump(mode="json")
        got = {}
        for k in [*grid, *(zgroups[0] if zgroups else [])]:
            node = data
            for part in k.split("."):
                node = node[part]
            got[k] = node
            assert k not in grid or node in grid[k]
        if zgroups:
            assert tuple(got[k] for k in zgroups[0]) in zipped
        assert p.config.seed == (p.values["seed"])
        assert {k: got[k] for k in sw.varying} == {k: v for k, v in p.values.items() if k != "seed"}
    if seeds:
        assert sorted({p.config.seed for p in sw.points}) == sorted(seeds)


@pytest.mark.parametrize("data,needle", [
    ({"zip": [{"model.width": [1, 2], "model.depth": [1]}]}, "same, non-zero number of values"),
    ({"grid": {"model.width": [1]}, "zip": [{"model.width": [2]}]}, "varies in both grid and zip group 0"),
    ({"grid": {"seed": [1, 2]}, "seeds": [0]}, "use `seeds` only"),
    ({"grid": {"model.width": []}}, "at least one value"),
    ({"grid": {"name": ["a", "b"]}}, "cannot vary"),
    ({"grid": {"model..width": [1]}}, "not a dotted config key"),
    ({"seeds": [1, 1]}, "distinct seeds"),
    ({"grid": {"model.width": [1, 1]}}, "listed twice"),
    ({"zip": [{"model.width": [1, 2, 1], "model.depth": [3, 4, 3]}]}, "entry is listed twice"),
    ({"zip": [{"label": ["a", "a"], "model.width": [1, 2]}]}, "distinct non-empty strings"),
    ({"grids": {}}, "grids: not a known key; did you mean 'grid'?"),
])
def test_invalid_sweep_files_name_the_problem(data, needle):
    with pytest.raises(PrivdynError) as e:
        parse_spec({"name": "t", **data}, "s.yaml")
    assert needle in str(e.value) and "s.yaml" in str(e.value)


def test_an_invalid_point_is_named_before_anything_runs():
    with pytest.raises(PrivdynError) as e:
        expand(_spec(grid={"training.n_models": [4, 5]}))
    assert "point n_models-5" in str(e.value) and "must be even" in str(e.value)
    with pytest.raises(PrivdynError, match="trainig: not a known key; did you mean 'training'"):
        expand(_spec(grid={"trainig.epochs": [1, 2]}))


def test_base_path_is_relative_to_the_sweep_file_and_data_root_fills_unset_roots(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"training": {"epochs": 7}}))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "name": "b", "base": "base.yaml",
        "zip": [{"dataset.name": ["synthetic", "digits"], "dataset.root": [None, "/elsewhere"]}]}))
    sw = load_sweep(tmp_path / "s.yaml", data_root=tmp_path)
    assert [p.config.training.epochs for p in sw.points] == [7, 7]
    assert [p.config.dataset.root for p in sw.points] == [str(tmp_path.resolve()), "/elsewhere"]
    again = expand(parse_spec(yaml.safe_load(sw.resolved_yaml())))
    assert [p.slug for p in again.points] == [p.slug for p in sw.points]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "b", "base": "missing.yaml"}))
    with pytest.raises(PrivdynError, match="missing.yaml does not exist"):
        load_sweep(tmp_path / "s.yaml")


def test_sweep_files_that_are_not_utf8_text_or_are_folders_name_the_problem(tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(PrivdynError, match=r"Sweep file .*bad.yaml is not UTF-8 text.*save it as UTF-8"):
        load_sweep(tmp_path / "bad.yaml")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "b", "base": "bad.yaml"}))
    with pytest.raises(PrivdynError, match=r"Sweep base config .*bad.yaml is not UTF-8 text"):
        load_sweep(tmp_path / "s.yaml")
    (tmp_path / "d").mkdir()
    with pytest.raises(PrivdynError, match=r"d is a directory, not a file"):
        load_sweep(tmp_path / "d")
    for given_file, named in [("bad.yaml", "bad.yaml"), ("s.yaml", "bad.yaml"), ("d", "d")]:
        proc = run_cli("sweep", str(tmp_path / given_file), "--out", str(tmp_path / "o"))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and f"{tmp_path / named} is" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_configuration_names_are_shared_by_seeds_and_tell_configurations_apart():
    sw = expand(_spec(grid={"model.width": [8, 16]}, seeds=[0, 1]))
    assert [p.configuration for p in sw.points] == ["width-8", "width-8", "width-16", "width-16"]
    assert [p.slug for p in sw.points] == ["width-8_seed-0", "width-8_seed-1", "width-16_seed-0", "width-16_seed-1"]
    assert {p.configuration for p in expand(_spec(seeds=[0, 1])).points} == {"point"}
    alike = expand(_spec(grid={"dataset.options.tag": ["a/b", "a-b"]}, seeds=[0, 1])).points
    names = [p.configuration for p in alike]
    assert names[0] == names[1] != names[2] == names[3]


def test_select_points_by_glob():
    sw = expand(_spec(grid={"model.width": [8, 16]}, seeds=[0, 1]))
    assert [p.slug for p in select_points(sw, ["*seed-1"])] == ["width-8_seed-1", "width-16_seed-1"]
    with pytest.raises(PrivdynError, match="matches no point"):
        select_points(sw, ["nothing*"])


# ----- tables -------------------------------------------------------------------------------

def _loop_recall(recall, epochs, fraction):
    for e, r in zip(epochs, recall):
        if e >= fraction * epochs[-1]:
            return r
    return math.nan


def test_recall_at_fraction_known_answers():
    assert recall_at_fraction([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0], list(range(1, 9))) == 0.2  # 2 >= 0.25*8
    assert recall_at_fraction(list(np.linspace(0, 1, 11)), list(range(11))) == pytest.approx(0.3)  # 3 >= 2.5
    assert recall_at_fraction([0.4, 0.8, 1.0], [5, 10, 20]) == 0.4
    assert recall_at_fraction({"1": 0.1, "4": 0.5, "2": 0.3}, None) == 0.1  # 1 >= 0.25*4
    assert math.isnan(recall_at_fraction([0.1], [1, 2])) and math.isnan(recall_at_fraction(None, [1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=30, unique=True), st.floats(0, 1), st.randoms())
def test_recall_at_fraction_matches_a_loop(epochs, fraction, rnd):
    epochs = sorted(epochs)
    recall = [rnd.random() for _ in epochs]
    got, want = recall_at_fraction(recall, epochs, fraction), _loop_recall(recall, epochs, fraction)
    assert got == want or (math.isnan(got) and math.isnan(want))


def test_metrics_from_summary_reads_finals_and_leaves_missing_keys_nan():
    summary = {
        "epochs": [1, 2, 3, 4], "recall_curve": [0.5, 0.6, 0.9, 1.0],
        "test_accuracy": [0.1, 0.2, 0.3, 0.4], "auc": [0.5, 0.6, 0.7, 0.8],
        "tpr_at_fpr_0.01": [0.0, 0.1, 0.2, 0.3], "final": {"tpr_at_fpr_0.01": 0.33},
        "com_displacement_pp": 12.5, "n_high_final": 7, "peak_p_to_high": None,
        "spearman_difficulty": {"forgetting_events": {"final_advantage": {"rho": 0.4, "ci_low": 0.3, "ci_high": 0.5}},
                                "consistency": {"final_advantage": 0.1, "ci": [-0.2, 0.2]}},
    }
    m = metrics_from_summary(summary)
    assert m["recall_at_25pct"] == 0.5 and m["test_accuracy"] == 0.4 and m["auc"] == 0.8
    assert m["tpr_at_fpr_0.01"] == 0.33 and m["com_displacement_pp"] == 12.5 and m["n_high_final"] == 7
    for k in ("peak_p_to_high", "com_path_pp", "encoding_speed_mean", "delta_entropy_bits", "epoch_recall_0.7"):
        assert math.isnan(m[k]), k
    assert spearman_columns(summary["spearman_difficulty"]) == {
        "spearman_forgetting_events_final_advantage_rho": 0.4,
        "spearman_forgetting_events_final_advantage_ci_low": 0.3,
        "spearman_forgetting_events_final_advantage_ci_high": 0.5,
        "spearman_consistency_final_advantage": 0.1,
        "spearman_consistency_ci_lo": -0.2, "spearman_consistency_ci_hi": 0.2,
    }
    empty = metrics_from_summary({})
    assert set(METRICS) <= set(empty) and all(math.isnan(v) for v in empty.values())


def test_aggregation_over_seeds_matches_a_hand_computation(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for arch, width in [("mlp", 8), ("cnn", None)]:
        for seed in (0, 1, 2):
            rows.append({"slug": f"{arch}-{seed}", "model.arch": arch, "model.width": width, "seed": seed,
                         "status": "done", "com_path_pp": float(rng.random()), "n_high_final": int(rng.integers(9)),
                         "spearman_x_rho": float(rng.random())})
    rows[1]["com_path_pp"] = math.nan  # a key that one run's summary lacked
    rows.append({"slug": "cnn-3", "model.arch": "cnn", "model.width": None, "seed": 3, "status": "failed",
                 "error": "boom"})
    table = comparison_table(rows, ["model.arch", "model.width"])
    assert list(table.columns[:5]) == ["slug", "model.arch", "model.width", "seed", "status"]
    assert set(METRICS) <= set(table.columns) and table["test_accuracy"].isna().all()
    agg = aggregate(table, ["model.arch", "model.width"])
    assert agg["model.arch"].tolist() == ["mlp", "cnn"] and agg["n_runs"].tolist() == [3, 3]
    for arch in ("mlp", "cnn"):
        mine = [r for r in rows if r["model.arch"] == arch and r["status"] == "done"]
        row = agg[agg["model.arch"] == arch].iloc[0]
        for metric in ("com_path_pp", "n_high_final", "spearman_x_rho"):
            vals = [r[metric] for r in mine if not math.isnan(r[metric])]
            assert row[f"{metric}_mean"] == pytest.approx(statistics.mean(vals))
            assert row[f"{metric}_std"] == pytest.approx(statistics.stdev(vals))
    # Parquet round trip with None in a key column
    table.to_parquet(tmp_path / "t.parquet")
    agg.to_parquet(tmp_path / "a.parquet")
    assert pd.read_parquet(tmp_path / "t.parquet").shape == table.shape


def test_aggregation_without_varying_keys_pools_every_seed():
    rows = [{"slug": f"s{s}", "seed": s, "status": "done", "auc": a} for s, a in enumerate([0.5, 0.7, 0.9])]
    agg = aggregate(comparison_table(rows, []), [])
    assert agg["n_runs"].tolist() == [3] and agg["auc_mean"].iloc[0] == pytest.approx(0.7)
    assert agg["auc_std"].iloc[0] == pytest.approx(0.2)


# ----- running ------------------------------------------------------------------------------

def _tiny_base():
    return yaml.safe_load(TINY.read_text())["base"]


def test_failing_point_does_not_stop_the_others_and_interrupted_runs_resume(tmp_path):
    # cifar10 under an empty data root: valid config, fails when the run loads its files
    base = {**_tiny_base(), "dataset": {**_tiny_base()["dataset"], "options": {}, "root": str(tmp_path / "empty")}}
    spec = _spec(base=base, run_reports=False,
                 zip=[{"dataset.name": ["synthetic", "cifar10", "synthetic"], "model.width": [16, 16, 8]}])
    sw = expand(spec)
    out = tmp_path / "sw"
    result = run_sweep(sw, out, progress=False, log=lambda s: None)
    assert [o.status for o in result.outcomes] == ["done", "failed", "done"]
    assert "no usable files" in result.failed[0].error and result.failed[0].slug == "dataset-cifar10_width-16"
    manifest = json.loads((out / "manifest.json").read_text())["points"]
    assert manifest["dataset-cifar10_width-16"]["status"] == "failed"
    assert "cifar10" in manifest["dataset-cifar10_width-16"]["error"]
    paths = compare(sw, out, log=lambda s: None)
    table = pd.read_parquet(paths["table"])
    assert table["status"].tolist() == ["done", "failed", "done"]
    assert table.loc[1, METRICS[0]] != table.loc[1, METRICS[0]]  # NaN for the failed point
    assert table.loc[0, "test_accuracy"] > 0

    # an interrupted run (stage left 'running') is resumed, its trained arrays reused
    good = out / "runs" / "dataset-synthetic_width-8"
    scores = good / "scores" / "lira_online.zarr" / "zarr.json"
    before = scores.stat().st_mtime_ns
    m = json.loads((good / "manifest.json").read_text())
    m["stages"]["analyze"]["state"] = "running"
    atomic.write_json(good / "manifest.json", m)
    again = run_sweep(sw, out, progress=False, log=lambda s: None)
    assert [o.status for o in again.outcomes] == ["skipped", "failed", "done"]
    assert scores.stat().st_mtime_ns == before
    stages = json.loads((good / "manifest.json").read_text())["stages"]
    assert stages["analyze"]["state"] == "done" and "report" not in stages


def test_is_finished_needs_every_stage_done_for_this_config(tmp_path):
    from privdyn.config import ANALYZE_SECTIONS, SCORE_SECTIONS, TRAIN_SECTIONS
    from privdyn.sweep import is_finished

    cfg = expand(_spec(base=_tiny_base())).points[0].config
    h = {"train": cfg.section_hash(*TRAIN_SECTIONS), "score": cfg.section_hash(*SCORE_SECTIONS),
         "analyze": cfg.section_hash(*ANALYZE_SECTIONS), "report": cfg.section_hash(*ANALYZE_SECTIONS)}

    def write(stages, summary=True):
        atomic.write_json(tmp_path / "manifest.json", {"stages": {k: {"state": "done", "hash": h[k]} for k in stages}})
        if summary:
            atomic.write_text(tmp_path / "summary.json", "{}")
        elif (tmp_path / "summary.json").exists():
            (tmp_path / "summary.json").unlink()

    write(["train", "score", "analyze", "report"])
    assert is_finished(cfg, tmp_path) and is_finished(cfg, tmp_path, with_report=False)
    other = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"grid": 2})})
    assert not is_finished(other, tmp_path)  # analysis changed: analyze and report are stale
    write(["train", "score", "analyze"])
    assert not is_finished(cfg, tmp_path) and is_finished(cfg, tmp_path, with_report=False)
    write(["train", "score"])
    assert not is_finished(cfg, tmp_path, with_report=False)
    write(["train", "score", "analyze", "report"], summary=False)
    assert not is_finished(cfg, tmp_path)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    proc = run_cli("sweep", str(TINY), "--out", str(out), "--no-progress")
    return out, proc


def test_cli_sweep_end_to_end_on_tiny(tiny_sweep):
    out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stderr
    assert "8 ran, 0 already finished, 0 failed" in proc.stdout
    table = pd.read_parquet(out / "comparison.parquet")
    assert len(table) == 8 and (table["status"] == "done").all()
    assert list(table.columns[:5]) == ["slug", "dataset.options.difficulty", "model.width", "seed", "status"]
    assert set(METRICS) <= set(table.columns)
    assert table["test_accuracy"].between(0, 1).all() and table["tpr_at_fpr_0.01"].between(0, 1).all()
    assert pd.read_csv(out / "comparison.csv").shape == table.shape
    agg = pd.read_parquet(out / "comparison_agg.parquet")
    assert len(agg) == 4 and (agg["n_runs"] == 2).all()
    first = table[(table["dataset.options.difficulty"] == 0.3) & (table["model.width"] == 16)]
    assert agg.loc[0, "auc_mean"] == pytest.approx(first["auc"].mean())
    assert agg.loc[0, "auc_std"] == pytest.approx(first["auc"].std(ddof=1))
    md = (out / "comparison.md").read_text()
    assert "## Mean over seeds" in md and md.count("| 0.8 | 32 |") == 3  # 1 aggregated + 2 per-run rows
    for slug in table["slug"]:
        assert json.loads((out / "runs" / slug / "summary.json").read_text())["name"] == f"tiny-{slug}"
        assert not (out / "runs" / slug / "report").exists()  # run_reports: false
    assert "report:" in proc.stdout and (out / "report" / "index.html").exists()
    html = (out / "report" / "index.html").read_text()
    for slug in table["slug"]:  # the two seeds of a configuration are one legend group
        configuration = slug.rsplit("_seed-", 1)[0]
        assert html.count(f'"legendgroup":"{configuration}"') >= 2


def test_findings_table_script_summarises_a_sweep(tiny_sweep):
    """docs/findings/sweep_table.py: one row per configuration, mean ± std over its seeds."""
    out, _ = tiny_sweep
    script = runpy.run_path(str(Path(__file__).parents[1] / "docs" / "findings" / "sweep_table.py"))
    lines = script["compact_table"](out).splitlines()
    assert lines[0].startswith("| dataset.options.difficulty | runs | CoM disp. (pp) |") and len(lines) == 2 + 4
    agg = pd.read_parquet(out / "comparison_agg.parquet")
    row = dict(zip(lines[0].strip("| ").split(" | "), lines[2].strip("| ").split(" | "), strict=True))
    assert row["runs"] == "2" and row["AUC"] == f"{agg.loc[0, 'auc_mean']:.3g} ± {agg.loc[0, 'auc_std']:.2g}"


def test_second_invocation_trains_nothing(tiny_sweep, monkeypatch):
    out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stderr
    files = sorted((out / "runs").glob("*/scores/*.zarr/zarr.json")) + sorted((out / "runs").glob("*/summary.json"))
    before = {f: f.stat().st_mtime_ns for f in files}

    def no_training(*a, **k):
        raise AssertionError("run_all called for a finished run")

    monkeypatch.setattr("privdyn.pipeline.run_all", no_training)
    result = run_sweep(load_sweep(TINY), out, progress=False, log=lambda s: None)
    assert [o.status for o in result.outcomes] == ["skipped"] * 8
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert all(p["status"] == "done" for p in json.loads((out / "manifest.json").read_text())["points"].values())


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_sweep_refuses_a_folder_it_does_not_own_and_leaves_it_byte_identical(tmp_path):
    """A folder that holds files and no sweep manifest (a web site, a run directory, a folder with
    any other manifest.json) is refused with exit 2 before anything is written."""
    site = tmp_path / "site"
    atomic.write_text(site / "report" / "index.html", "<h1>my page</h1>")
    (site / "comparison.md").write_text("my notes")
    run = tmp_path / "run"  # a run directory: its manifest.json is privdyn's, but not a sweep's
    atomic.write_json(run / "manifest.json", {"stages": {}, "config_hash": "x"})
    other = tmp_path / "app"  # somebody else's manifest.json
    (other / "manifest.json").parent.mkdir()
    (other / "manifest.json").write_text(json.dumps({"name": "app", "points": [1, 2]}))
    for folder in (site, run, other):
        before = _snapshot(folder)
        proc = run_cli("sweep", str(TINY), "--out", str(folder), "--no-progress")
        assert proc.returncode == 2, proc.stderr
        assert f"The sweep folder {folder} already holds files" in proc.stderr
        assert "new or empty folder" in proc.stderr and "Traceback" not in proc.stderr
        assert _snapshot(folder) == before
        with pytest.raises(PrivdynError, match="not a folder that privdyn sweep wrote"):
            run_sweep(load_sweep(TINY), folder, progress=False, log=lambda s: None)
        assert _snapshot(folder) == before


def test_sweep_refuses_a_file_and_a_folder_it_cannot_create(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    proc = run_cli("sweep", str(TINY), "--out", str(afile), "--no-progress")
    assert proc.returncode == 2 and f"The sweep folder {afile} is a file" in proc.stderr
    proc = run_cli("sweep", str(TINY), "--out", str(afile / "x"), "--no-progress")
    assert proc.returncode == 2 and f"Cannot create the sweep folder {afile / 'x'}" in proc.stderr
    assert "Traceback" not in proc.stderr and afile.read_text() == "mine"


def test_sweep_folder_recognition_is_strict_and_accepts_older_sweep_manifests(tmp_path):
    from privdyn.sweep.runner import SWEEP_FORMAT, prepare_folder, read_sweep_manifest

    assert prepare_folder(tmp_path / "new") == {} and (tmp_path / "new").is_dir()
    leftovers = tmp_path / "leftovers"  # what a kill during the first write leaves counts as empty
    leftovers.mkdir()
    (leftovers / ".manifest.json.abc123.tmp").write_text("{")
    (leftovers / ".manifest.json.crc").write_text("{}")
    assert prepare_folder(leftovers) == {}
    legacy = {"name": "tiny", "created": 1.0, "versions": {"privdyn": "0.1"}, "varying": ["model.width"],
              "points": {"width-8": {"status": "done", "values": {}, "run_dir": "runs/width-8"}}}
    for data, owned in [(legacy, True), ({**legacy, "format": SWEEP_FORMAT}, True),
                        ({"format": SWEEP_FORMAT, "points": {"a": {"status": "done", "run_dir": "runs/a"}}}, True),
                        ({**legacy, "format": "other"}, False), ({**legacy, "versions": {}}, False),
                        ({**legacy, "points": {"a": {"status": "done"}}}, False),
                        ({"stages": {}}, False), ([1, 2], False)]:
        atomic.write_json(tmp_path / "m" / "manifest.json", data)
        assert (read_sweep_manifest(tmp_path / "m") == data) is owned, data
    (tmp_path / "m" / "manifest.json").write_bytes(b"\xff{not json")
    assert read_sweep_manifest(tmp_path / "m") is None
    with pytest.raises(PrivdynError, match="not a folder that privdyn sweep wrote"):
        prepare_folder(tmp_path / "m")


def test_a_sweep_marks_its_folder_and_rewrites_its_own_report(tiny_sweep):
    """The manifest names its format; the sweep's report/ is rewritten even without its marker
    (written by an older privdyn): the folder is the sweep's own."""
    out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "manifest.json").read_text())["format"] == "privdyn-sweep"
    marker = out / "report" / "privdyn-comparison.json"
    assert json.loads(marker.read_text())["format"] == "privdyn-comparison"
    marker.unlink()
    paths = compare(load_sweep(TINY), out, log=lambda s: None)
    assert paths["report"] == out / "report" / "index.html" and marker.exists()


def test_cli_reports_failed_points_with_a_nonzero_exit(tmp_path):
    sweep_file = tmp_path / "bad.yaml"
    base = {**_tiny_base(), "dataset": {**_tiny_base()["dataset"], "options": {}, "root": str(tmp_path / "empty")}}
    sweep_file.write_text(yaml.safe_dump({  # valid points whose data cannot be found at run time
        "name": "bad", "base": base, "grid": {"dataset.name": ["cifar10", "cifar100"], "training.epochs": [2]}}))
    proc = run_cli("sweep", str(sweep_file), "--out", str(tmp_path / "o"), "--no-progress")
    assert proc.returncode == 1
    assert "2 point(s) failed" in proc.stderr and "dataset-cifar10: " in proc.stderr
    assert "dataset-cifar100: " in proc.stderr
    assert "Dataset 'cifar10': no usable files" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "o" / "comparison.csv").exists()
    sweep_file.write_text(yaml.safe_dump({"name": "bad", "grid": {"training.n_models": [4, 5]}}))
    invalid = run_cli("sweep", str(sweep_file), "--dry-run")
    assert invalid.returncode == 2 and "point n_models-5" in invalid.stderr and "must be even" in invalid.stderr
    assert "Traceback" not in invalid.stderr


@pytest.mark.parametrize("name,n_points", [("tiny", 8), ("dataset_complexity", 15), ("architecture", 18),
                                           ("optimizer", 12), ("gpu_paper_scale", 2)])
def test_shipped_sweeps_are_valid(name, n_points):
    sw = load_sweep(TINY.parent / f"{name}.yaml", data_root="/data")
    assert len(sw.points) == n_points and len({p.slug for p in sw.points}) == n_points
    cfgs = [p.config for p in sw.points]
    if name == "gpu_paper_scale":
        assert all(c.training.device == "cuda" and c.training.n_models == 64 and c.dataset.name == "cifar10"
                   and (c.model.arch, c.model.depth, c.model.width) == ("wrn", 28, 2) for c in cfgs)
    elif name != "tiny":
        assert all(c.training.n_models == 16 and c.dataset.root == str(Path("/data").resolve()) for c in cfgs)
        assert sorted({c.seed for c in cfgs}) == [0, 1, 2]


def test_tables_show_the_headline_metrics_at_chosen_rules(tiny_sweep):
    """`--rule` adds METRIC@RULE columns read from each run's sensitivity table at its own grid and
    bands; the run's own rule reproduces the summary's numbers, an unknown rule is an exit-2 error."""
    out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stderr
    proc2 = run_cli("sweep", str(TINY), "--out", str(out), "--no-progress",
                            "--rule", "score:0", "--rule", "fpr:0.01")
    assert proc2.returncode == 0, proc2.stderr
    table = pd.read_parquet(out / "comparison.parquet")
    assert "n_high_final@score:0" in table.columns and "spearman_consistency@fpr:0.01" in table.columns
    np.testing.assert_allclose(table["n_high_final@fpr:0.01"], table["n_high_final"])
    np.testing.assert_allclose(table["com_path_pp@fpr:0.01"], table["com_path_pp"])
    row = table.iloc[0]
    sens = pd.read_parquet(out / row["run_dir"] / "analysis" / "sensitivity.parquet")
    want = sens[(sens.rule == "score:0") & (sens.grid == 4) & (sens.bands == "0.1/0.3/0.6")]
    assert row["n_high_final@score:0"] == want["n_high_final"].iloc[0]
    assert "n_high_final@score:0" in (out / "comparison.md").read_text()
    bad = run_cli("sweep", str(TINY), "--out", str(out), "--rule", "fpr:2")
    assert bad.returncode == 2 and "--rule" in bad.stderr and "Traceback" not in bad.stderr


def test_sensitivity_table_script(tiny_sweep):
    """docs/findings/sensitivity_table.py: its column at the runs' own rule is the seed mean of the
    comparison table's metric; other rules, grids and bands get their own columns."""
    out, proc = tiny_sweep
    assert proc.returncode == 0, proc.stderr
    script = runpy.run_path(str(Path(__file__).parents[1] / "docs" / "findings" / "sensitivity_table.py"))
    table, key = script["run_tables"](out, None)
    assert key == "dataset.options.difficulty"
    md = script["metric_table"](table, key, "n_high_final")
    head, _, *rows = md.splitlines()
    assert head.split(" | ")[1:4] == ["fpr:0.001", "fpr:0.01 ★", "fpr:0.1"]
    assert "score:0" in head and "bands 0.2/0.4/0.7" in head
    agg = pd.read_parquet(out / "comparison.parquet").groupby(key)["n_high_final"].mean()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(agg.loc[float(cells[0])], rel=1e-3)
