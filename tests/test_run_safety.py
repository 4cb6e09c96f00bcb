"""Runs you can trust (issue 12): stale artifacts, paths, the lock, failed starts, kills, and the
review's bugs. Each test reproduces what went wrong before and checks what happens now."""

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from cli_runner import run_cli  # tests/cli_runner.py

import privdyn
from privdyn import pipeline
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
from privdyn.store.arrays import open_array
from privdyn.store.rundir import RunDir

CLI = [sys.executable, "-m", "privdyn.cli"]


def small(tiny_config_source, **changes):
    data = tiny_config_source()
    data["training"]["epochs"] = 3
    data["attacks"] = ["lira_online", "lira_offline_cdf"]
    data["analysis"]["sensitivity"] = False
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def cli(*args):
    """``privdyn ARGS`` in this process (tests of a kill or of two processes use ``subprocess``)."""
    return run_cli(*args)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, tiny_config_source):
    out = tmp_path_factory.mktemp("safety") / "r1"
    pipeline.run_all(config_from_dict(small(tiny_config_source)), out, progress=False)
    return out


def values(run, rel):
    """The content of a checkpoint array of a run, as bytes."""
    return np.asarray(open_array(run / rel)).tobytes()


def written_at(run, rel):
    """When a checkpoint array was (re)written: a rewrite makes a new folder with new metadata."""
    return (run / rel / "zarr.json").stat().st_mtime_ns


def copy_run(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# ----- stale artifacts ------------------------------------------------------------------------
def test_changed_attack_options_are_never_analysed_on_stale_scores(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    before = values(run, "scores/lira_online.zarr")
    proc = cli("analyze", run, "--set", "attack_options.lira_online.center=median")
    assert proc.returncode == 2 and "stale" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(PrivdynError, match="stale"):
        privdyn.open_run(run).scores("lira_online")
    cfg = RunDir(run).load_config()
    assert cfg.options_for("lira_online").center == "median"
    pipeline.run_all(cfg, run, progress=False, with_report=False)
    assert values(run, "scores/lira_online.zarr") != before  # rescored with the median
    assert privdyn.open_run(run).scores("lira_online").shape[0] == 3


def test_score_subset_records_provenance_and_only_stale_attacks_are_rescored(done_run, tmp_path, monkeypatch):
    run = copy_run(done_run, tmp_path / "r")
    assert cli("score", run, "--attacks", "rmia").returncode == 0
    assert privdyn.open_run(run).scores("rmia").shape[:2] == (3, 8)  # recorded: not "stale"
    # a kill after lira_online finished and before lira_offline_cdf did: only the latter reruns
    rd = RunDir(run)
    rd.mark_stage("score", "running", "killed")
    shutil.rmtree(run / "scores" / "lira_offline_cdf.zarr")
    stamp = written_at(run, "scores/lira_online.zarr")
    scored = []
    from privdyn.pipeline import scoring as stage

    real = stage._score_group  # every pass of the stage, one attack or a fused family
    monkeypatch.setattr(stage, "_score_group", lambda cfg, r, group, p: scored.extend(group) or real(cfg, r, group, p))
    pipeline.run_all(rd.load_config(), run, progress=False, with_report=False)
    assert scored == ["lira_offline_cdf"]
    assert written_at(run, "scores/lira_online.zarr") == stamp


# ----- paths and directories ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../victim", "/tmp/abs", "a/b", ".hidden", ""])
def test_run_names_are_slugs(name, tiny_config_source):
    with pytest.raises(PrivdynError, match="name"):
        config_from_dict(small(tiny_config_source, name=name))


def test_never_writes_into_a_folder_that_is_not_a_run(tmp_path, tiny_config_source):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yml").write_text("precious")
    (folder / "summary.json").write_text("precious")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small(tiny_config_source)))
    proc = cli("run", cfg, "--out", folder, "--no-progress")
    assert proc.returncode == 2 and "not a privdyn run directory" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["config.yml", "summary.json"]
    assert (folder / "summary.json").read_text() == "precious"


@pytest.mark.parametrize("marker", ["config.yaml", "manifest.json"])
def test_another_programs_config_or_manifest_does_not_make_a_folder_a_run(marker, tmp_path, tiny_config_source):
    # before: any config.yaml or manifest.json made a folder "a run", and privdyn overwrote it
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / marker).write_text('{"lr": 0.1}  # my own')
    (folder / "notes.txt").write_text("precious")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small(tiny_config_source)))
    proc = cli("run", cfg, "--out", folder, "--no-progress")
    assert proc.returncode == 2 and "not a privdyn run directory" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted([marker, "notes.txt"])  # not even a lock
    assert (folder / marker).read_text() == '{"lr": 0.1}  # my own'


def test_an_edited_config_is_refused_not_trusted(done_run, tmp_path):
    # before: open_run read the edited epochs beside 2-epoch data, and `privdyn train` then stamped
    # the old signals current for the new setup
    run = copy_run(done_run, tmp_path / "r")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 3", "epochs: 4"))
    with pytest.raises(PrivdynError, match="changed after privdyn wrote it"):
        _ = privdyn.open_run(run).config
    manifest = (run / "manifest.json").read_bytes()
    for command in ("train", "score", "report", "run"):
        args = (command, config, "--out", run) if command == "run" else (command, run)
        proc = cli(*args)
        if command == "run":  # a config given by path is the user's file: it is the setup check that refuses
            assert proc.returncode == 2 and "different training setup" in proc.stderr
        else:
            assert proc.returncode == 2 and "changed after privdyn wrote it" in proc.stderr, command
        assert "Traceback" not in proc.stderr
    assert (run / "manifest.json").read_bytes() == manifest


def test_the_report_of_a_stale_analysis_is_refused(done_run, tmp_path):
    # before: `privdyn report` drew the old analysis after a rescore, with exit 0
    run = copy_run(done_run, tmp_path / "r")
    assert cli("score", run, "--set", "attack_options.lira_online.center=median").returncode == 0
    page = (run / "report" / "index.html").read_bytes()
    proc = cli("report", run)
    assert proc.returncode == 2 and "stale (lira_online" in proc.stderr and f"privdyn analyze {run}" in proc.stderr
    assert (run / "report" / "index.html").read_bytes() == page
    assert cli("analyze", run).returncode == 0 and cli("report", run).returncode == 0
    assert (run / "report" / "index.html").read_bytes() != page


def test_a_run_that_is_starting_counts_as_a_run(tmp_path):
    # the moment between a first process's first write and its config.yaml: the folder holds only
    # the lock and that write's temp file and checksum sidecar. A second process must reach the lock
    # (and hear "in use"), not call the folder a stranger's.
    starting = tmp_path / "starting"
    starting.mkdir()
    for name in (".lock", ".config.yaml.crc", ".config.yaml.x1y2.tmp"):
        (starting / name).write_text("")
    RunDir(starting).check_writable()
    (starting / "notes.txt").write_text("mine")
    with pytest.raises(PrivdynError, match="not a privdyn run directory"):
        RunDir(starting).check_writable()


def test_a_second_process_is_refused_while_the_first_holds_the_lock(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from privdyn.store.rundir import RunDir\n"
        f"with RunDir({str(run)!r}).locked():\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = cli("analyze", run)
        assert proc.returncode == 2 and "is in use by privdyn" in proc.stderr and f"process {holder.pid}" in proc.stderr
        with pytest.raises(PrivdynError, match="in use"):
            pipeline.run_all(RunDir(run).load_config(), run, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert cli("analyze", run).returncode == 0  # the lock dies with its process


def test_temp_files_of_killed_writes_are_removed_on_the_next_start(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    junk = run / "scores" / ".shokri.npy.abc123.tmp"
    junk.write_bytes(b"x" * 1000)
    half = run / "scores" / ".shokri.zarr.def456.tmp"  # a killed array write leaves a folder
    (half / "c" / "0").mkdir(parents=True)
    (half / "c" / "0" / "0").write_bytes(b"x" * 1000)
    pipeline.run_all(RunDir(run).load_config(), run, progress=False)
    assert not junk.exists() and not half.exists()


def test_corrupt_manifest_is_a_clear_error(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    (run / "manifest.json").write_text("")
    proc = cli("analyze", run)
    assert proc.returncode == 2 and "manifest.json is" in proc.stderr and "move the run directory aside" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failed_start_does_not_block_the_corrected_config(tmp_path, tiny_config_source):
    out = tmp_path / "r"
    with pytest.raises(PrivdynError, match="unknown dataset 'no_such_dataset'"):  # refused before anything runs
        config_from_dict(small(tiny_config_source, **{"dataset.name": "no_such_dataset"}))
    bad = config_from_dict(small(tiny_config_source, **{"dataset.name": "npz",
                                                        "dataset.options": {"path": str(tmp_path / "none.npz")}}))
    with pytest.raises(PrivdynError, match="none.npz"):  # fails when the stage loads the data
        pipeline.run_all(bad, out, progress=False, with_report=False)
    assert (out / "manifest.json").exists()
    good = config_from_dict(small(tiny_config_source))
    pipeline.run_all(good, out, progress=False, with_report=False)
    assert privdyn.open_run(out).scores("lira_online").shape == (3, 8, 200)


# ----- the review's bugs ----------------------------------------------------------------------
def test_model_level_accuracy_uses_the_identity_query(tmp_path):
    cfg = config_from_dict({
        "dataset": {"name": "digits", "n_pool": 200, "n_test": 100}, "model": {"width": 16, "depth": 1, "norm": "none"},
        "training": {"n_models": 4, "epochs": 2, "batch_size": 50}, "queries": ["hflip", "identity"],
        "attacks": ["loss"], "analysis": {"grid": 2, "sensitivity": False}})
    pipeline.run_all(cfg, tmp_path / "r", progress=False, with_report=False)
    run = privdyn.open_run(tmp_path / "r")
    test_correct = np.asarray(run.signal("correct", "test"))
    summary = run.summary()
    np.testing.assert_allclose(summary["test_accuracy"], test_correct[..., 1].mean(axis=(1, 2)))
    assert not np.allclose(summary["test_accuracy"], test_correct[..., 0].mean(axis=(1, 2)))


def test_summary_keeps_epoch_recall_0_7_whatever_the_levels(tmp_path, tiny_config_source):
    cfg = config_from_dict(small(tiny_config_source, **{"analysis.recall_levels": [0.5]}))
    pipeline.run_all(cfg, tmp_path / "r", progress=False, with_report=False)
    summary = privdyn.open_run(tmp_path / "r").summary()
    assert "epoch_recall_0.7" in summary and "epoch_recall_0.5" in summary


def test_plane_defaults_to_fpr_0_01_and_rules_are_validated(done_run, tmp_path, tiny_config_source):
    run = privdyn.open_run(done_run)
    from privdyn.analysis.plane import compute_plane

    want = compute_plane(run.scores("lira_online"), run.membership, "fpr:0.01")
    fpr, _ = run.plane("lira_online")
    np.testing.assert_array_equal(fpr, want.fpr)
    with pytest.raises(PrivdynError, match="banana"):
        run.tables(rule="banana")
    with pytest.raises(PrivdynError, match="banana"):
        run.plane(rule="banana")


def test_report_with_one_cluster_and_no_silhouette(done_run):
    from privdyn.report import interactive
    from privdyn.report.data import load_run_data

    d = load_run_data(done_run)
    d.summary["silhouette"] = None  # one cluster: silhouette undefined
    assert interactive.clusters(d).key == "clusters"


def test_a_no_op_run_does_not_rebuild_the_report(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    index = run / "report" / "index.html"
    stamp = index.stat().st_mtime_ns
    time.sleep(0.01)
    pipeline.run_all(RunDir(run).load_config(), run, progress=False)
    assert index.stat().st_mtime_ns == stamp
    assert cli("report", run).returncode == 0 and index.stat().st_mtime_ns != stamp  # asked for: rebuilt
    assert json.loads((run / "manifest.json").read_text())["stages"]["report"]["state"] == "done"


# ----- bad input: exit 2 and one paragraph, never a traceback -----------------------------------
@pytest.mark.parametrize("override,message", [
    ("training.epochs=[1,2", "not valid YAML"),
    ("dataset.options.difficulty=abc", "dataset.options.difficulty"),
    ("dataset.options.classes=1", "dataset.options.classes"),
    ("dataset.options.difficulty=-5", "dataset.options.difficulty"),
    ("dataset.options.colour=red", "dataset.options.colour"),
    ("dataset.n_pool=2", "dataset.n_pool"),
    ("dataset.n_pool=100000000000", "far beyond"),
])
def test_bad_input_is_an_exit_2_paragraph(override, message, tmp_path, tiny_config_source):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small(tiny_config_source)))
    proc = cli("run", cfg, "--out", tmp_path / "r", "--no-progress", "--set", override)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("config", "out", "message"), [
    ("binary", "r", "is not UTF-8 text (byte 0xff at offset 0)"),
    ("folder", "r", "is a directory, not a file"),
    ("good", "afile/sub", "cannot use"),  # --out below a regular file: the folder cannot be made
])
def test_unreadable_configs_and_impossible_out_dirs_are_exit_2_paragraphs(config, out, message, tmp_path,
                                                                           tiny_config_source):
    # before: a UnicodeDecodeError or NotADirectoryError traceback (exit 1)
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "good").write_text(yaml.safe_dump(small(tiny_config_source)))
    proc = cli("run", tmp_path / config, "--out", tmp_path / out, "--no-progress")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "afile").read_text() == "mine" and not (tmp_path / "r").exists()


def test_datasets_shows_whole_paths_at_any_width():
    # before: rich cut the "where" and "status" columns to "…" at 80 columns or in a pipe
    proc = run_cli("datasets")
    assert proc.returncode == 0 and "cifar10" in proc.stdout and "…" not in proc.stdout


def test_non_finite_features_and_bad_labels_are_refused_at_load_time():
    from privdyn.data.base import Dataset
    from privdyn.data.registry import check_data

    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    check_data(Dataset("d", "tabular", x, y, x, y, 2))
    xn = x.copy()
    xn[2, 1] = np.nan
    with pytest.raises(PrivdynError, match="NaN or infinite feature values .first in sample 2"):
        check_data(Dataset("d", "tabular", xn, y, x, y, 2))
    with pytest.raises(PrivdynError, match="labels span 0..5"):
        check_data(Dataset("d", "tabular", x, np.array([0, 5, 1, 1]), x, y, 2))


# ----- a full disk ------------------------------------------------------------------------------
def test_disk_full_is_an_exit_2_paragraph_and_the_run_resumes(done_run, tmp_path, monkeypatch, capsys):
    import errno

    from privdyn import cli as cli_module
    from privdyn.store import atomic

    run = copy_run(done_run, tmp_path / "r")
    shutil.rmtree(run / "analysis" / "lira_online")  # make that analysis rerun
    real = atomic.write_parquet

    def full(path, df):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "write_parquet", full)
    monkeypatch.setattr(sys, "argv", ["privdyn", "analyze", str(run)])
    with pytest.raises(SystemExit) as ex:
        cli_module.main()
    assert ex.value.code == 2
    msg = capsys.readouterr().err
    assert "the disk is full" in msg and "run the same command again" in msg
    monkeypatch.setattr(atomic, "write_parquet", real)
    cli_module.main()  # returns normally on success
    assert json.loads((run / "manifest.json").read_text())["stages"]["analyze"]["state"] == "done"


def test_wrapped_disk_full_errors_are_recognised():
    import errno

    from privdyn.store.atomic import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "x"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed "
                                     "writing file data/0: file write failed: No space left on device"))
    assert not is_disk_full(RuntimeError("CUDA out of memory"))


# ----- corruption -------------------------------------------------------------------------------
def flip_byte(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


DAMAGED = {  # what to damage -> the artifact that must be named
    "scores/lira_online.zarr/c/1/0/0": "lira_online.zarr",
    "signals/phi.zarr/c/2/0/0/0": "phi.zarr",
    "analysis/lira_online/fpr_0.01/plane.npz": "plane.npz",
    "summary.json": "summary.json",
}


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "delete"])
@pytest.mark.parametrize("target", list(DAMAGED))
def test_damaged_artifacts_are_detected_and_recomputed(damage, target, done_run, tmp_path):
    """Truncated, bit-flipped, emptied or deleted files (a chunk of an array, or a whole file) are
    refused by the API and by `privdyn verify` with the artifact named; `privdyn run` recomputes
    them and reproduces the undamaged numbers."""
    run = copy_run(done_run, tmp_path / "r")
    path, artifact = run / target, DAMAGED[target]
    original = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(original[: len(original) // 2])
    elif damage == "flip":
        flip_byte(path, len(original) - 9)  # inside the data, past any header
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    proc = cli("verify", run)
    assert proc.returncode == 1 and artifact in proc.stderr and "Traceback" not in proc.stderr
    r = privdyn.open_run(run)
    with pytest.raises(PrivdynError, match=artifact):
        if target.startswith("scores"):
            np.asarray(r.scores("lira_online"))
        elif target.startswith("signals"):
            np.asarray(r.signal("phi"))
        elif target == "summary.json":
            r.summary()
        else:
            from privdyn.store import atomic

            atomic.load_npz(path)
    pipeline.run_all(RunDir(run).load_config(), run, progress=False)
    assert path.read_bytes() == original  # recomputed, identical (deterministic stages)
    assert cli("verify", run).returncode == 0


# ----- fault injection: SIGKILL inside each stage ------------------------------------------------
def _stage_state(run, stage):
    try:
        return json.loads((run / "manifest.json").read_text())["stages"].get(stage, {}).get("state")
    except (OSError, ValueError):
        return None


#: Where each stage is killed: a deterministic point inside it (store.faults), and what it
#: had finished by then, which the rerun must not redo (None: nothing checkable).
KILL_POINTS = {
    "train": ("wrote:t002.npz", None),  # group 0 has written checkpoint 2 of 3
    "score": ("recorded:scores/lira_online.zarr", "scores/lira_online.zarr"),  # one of two attacks done
    "analyze": ("recorded:analysis/lira_online/fpr_0.01", "analysis/lira_online/fpr_0.01/epoch.parquet"),
    "report": ("wrote:index.html", None),  # written, not yet recorded: rebuilt
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_POINTS))
def test_sigkill_inside_a_stage_then_rerun_gives_the_uninterrupted_result(stage, done_run, tmp_path,
                                                                         tiny_config_source):
    """SIGKILL `privdyn run` at a fixed point inside STAGE, run it again: the result is the one
    of the run that was never interrupted, finished work is not redone, no temp file is left."""
    import os

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small(tiny_config_source)))
    run = tmp_path / "killed"
    point, finished = KILL_POINTS[stage]
    killed = subprocess.run([*CLI, "run", str(cfg), "--out", str(run), "--no-progress"], capture_output=True,
                            env={**os.environ, "PRIVDYN_FAULT": point}, timeout=300, check=False)
    assert killed.returncode == -9, killed.stderr  # it reached the point
    assert _stage_state(run, stage) == "running"
    stamp = (run / finished).stat().st_mtime_ns if finished else None
    if finished and finished.endswith(".zarr"):
        stamp = written_at(run, finished)
    again = cli("run", cfg, "--out", run, "--no-progress")
    assert again.returncode == 0, again.stderr
    if finished:
        now = written_at(run, finished) if finished.endswith(".zarr") else (run / finished).stat().st_mtime_ns
        assert now == stamp, f"{finished} was recomputed"
    for name in ("lira_online", "lira_offline_cdf"):
        assert values(run, f"scores/{name}.zarr") == values(done_run, f"scores/{name}.zarr")
    assert json.loads((run / "summary.json").read_text()) == json.loads((done_run / "summary.json").read_text())
    assert not list(run.rglob("*.tmp")) and cli("verify", run).returncode == 0


# ----- per-artifact provenance ------------------------------------------------------------------
def test_the_manifest_records_every_artifact_with_its_inputs_and_content(done_run):
    arts = json.loads((done_run / "manifest.json").read_text())["artifacts"]
    signals = {k for k in arts if k.startswith("signals/")}
    assert "signals/phi.zarr" in signals and "signals/test/loss.zarr" in signals and len(signals) == 18
    expected = {"membership.npy", "epochs.npy", "labels.npy", "scores/lira_online.zarr", "scores/lira_offline_cdf.zarr",
                "analysis/lira_online/fpr_0.01", "analysis/lira_offline_cdf/fpr_0.01", "summary.json", "report"}
    assert expected <= set(arts)
    assert all({"digest", "content", "finished"} <= set(arts[k]) for k in expected | signals)


def test_a_killed_analysis_redoes_only_the_unfinished_attack(done_run, tmp_path, monkeypatch):
    run = copy_run(done_run, tmp_path / "r")
    rd = RunDir(run)
    rd.mark_stage("analyze", "running", "killed")
    shutil.rmtree(run / "analysis" / "lira_offline_cdf")  # it had not finished
    stamp = (run / "analysis" / "lira_online" / "fpr_0.01" / "epoch.parquet").stat().st_mtime_ns
    from privdyn.pipeline import analysis as stage

    done, real = [], stage.analyze_attacks
    monkeypatch.setattr(stage, "analyze_attacks", lambda cfg, r, attacks, rule, m=None, **kw:
                        done.extend(attacks) or real(cfg, r, attacks, rule, m, **kw))
    pipeline.run_all(rd.load_config(), run, progress=False)
    assert done == ["lira_offline_cdf"]
    assert (run / "analysis" / "lira_online" / "fpr_0.01" / "epoch.parquet").stat().st_mtime_ns == stamp
    assert json.loads((run / "summary.json").read_text()) == json.loads((done_run / "summary.json").read_text())


def test_a_changed_analysis_option_reanalyses_without_rescoring_and_the_api_refuses_stale_tables(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    stamp = written_at(run, "scores/lira_online.zarr")
    cfg = RunDir(run).load_config().model_copy(deep=True)
    cfg.analysis.n_bootstrap = 20
    RunDir(run).init(cfg)  # the config changes, the artifacts do not (yet)
    with pytest.raises(PrivdynError, match="stale"):
        privdyn.open_run(run).tables("lira_online")
    pipeline.run_all(cfg, run, progress=False)
    assert written_at(run, "scores/lira_online.zarr") == stamp
    assert len(privdyn.open_run(run).tables("lira_online").sample) == 200


def test_the_report_is_rebuilt_only_when_an_input_or_a_figure_changed(done_run, tmp_path, monkeypatch):
    run = copy_run(done_run, tmp_path / "r")
    from privdyn.report import html

    built, real = [], html.build_report
    monkeypatch.setattr(html, "build_report", lambda cfg, r: built.append(1) or real(cfg, r))
    cfg = RunDir(run).load_config()
    pipeline.run_all(cfg, run, progress=False)
    assert built == []  # nothing changed
    figure = next((run / "report").glob("*.png"))
    figure.write_bytes(figure.read_bytes()[:100])
    pipeline.run_all(cfg, run, progress=False)
    assert built == [1] and cli("verify", run).returncode == 0


@pytest.mark.parametrize("name,options,message", [
    ("npz", {"path": "x.npz", "kind": "table"}, "dataset.options.kind"),
    ("npz", {"path": "x.npz", "layuot": "nchw"}, "dataset.options.layuot"),
    ("npz", {"path": "x.npz", "num_classes": 1}, "dataset.options.num_classes"),
    ("location30", {"test_fraction": 1.5}, "dataset.options.test_fraction"),
    ("location30", {"normalise": "zscore"}, "dataset.options.normalise"),
    ("cifar100", {"labels": "medium"}, "dataset.options.labels"),
    ("imagefolder", {"channels": 2}, "dataset.options.channels"),
    ("mnist", {"pth": "/data"}, "dataset.options.pth"),
])
def test_file_dataset_options_are_validated_before_any_file_is_read(name, options, message, tmp_path):
    from privdyn.data import load_dataset

    with pytest.raises(PrivdynError, match=message) as e:
        load_dataset(name, 10, 10, 0, options, root=str(tmp_path))  # the root is empty: options come first
    assert "Accepted options" in str(e.value)


def test_a_csv_row_with_too_few_fields_is_named(tmp_path):
    from privdyn.data import load_dataset

    rows = ["label,a,b,c"] + [f"{i % 2},1,0,1" for i in range(20)]
    rows[7] = "1,0,1"  # a field short
    (tmp_path / "location30.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(PrivdynError, match=r"line 8 has 3 of 4 fields"):
        load_dataset("location30", 10, 4, 0, {}, root=str(tmp_path))


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs (the real ENOSPC path: no injected error); skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True,
                      check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_really_full_disk_is_an_exit_2_paragraph_and_the_run_resumes(done_run, small_disk):
    run = small_disk / "r"
    copy_run(done_run, run)
    shutil.rmtree(run / "scores")
    shutil.rmtree(run / "report")
    filler = small_disk / "filler"
    with open(filler, "wb") as fh:  # leave about 20 KB free: less than the scores need
        free = shutil.disk_usage(small_disk).free
        fh.write(b"\0" * (free - 20_000))
    proc = cli("run", run / "config.yaml", "--out", run, "--no-progress")
    assert proc.returncode == 2 and "the disk is full" in proc.stderr and "Traceback" not in proc.stderr
    filler.unlink()
    again = cli("run", run / "config.yaml", "--out", run, "--no-progress")
    assert again.returncode == 0, again.stderr
    for name in ("lira_online", "lira_offline_cdf"):
        assert values(run, f"scores/{name}.zarr") == values(done_run, f"scores/{name}.zarr")
    assert cli("verify", run).returncode == 0 and not list(run.rglob("*.tmp"))


def test_two_runs_started_at_once_never_both_write(done_run, tmp_path, tiny_config_source):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small(tiny_config_source)))
    run = tmp_path / "both"
    procs = [subprocess.Popen([*CLI, "run", str(cfg), "--out", str(run), "--no-progress"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # the second either waited out the first or was refused
    for code, err in results:
        assert code == 0 or ("is in use by privdyn" in err and "Traceback" not in err)
    assert json.loads((run / "summary.json").read_text()) == json.loads((done_run / "summary.json").read_text())
    assert cli("verify", run).returncode == 0


def test_the_manifest_records_the_versions_that_run():
    """versions() reads package metadata (so it need not import torch): it must agree with what
    the imported packages say they are."""
    import platform

    import numpy
    import pandas
    import torch

    import privdyn
    from privdyn.store.rundir import versions

    assert versions() == {"privdyn": privdyn.__version__, "python": platform.python_version(),
                          "torch": torch.__version__, "numpy": numpy.__version__, "pandas": pandas.__version__}


# ----- the read API: what a caller can and cannot change, and errors that name the real problem ---
def test_the_cached_membership_epochs_and_config_cannot_be_changed_through_the_api(done_run):
    # before: editing run.membership in place silently changed every later plane()
    run = privdyn.open_run(done_run)
    fpr, _ = run.plane("lira_online")
    with pytest.raises(ValueError, match="read-only"):
        run.membership[0] = ~run.membership[0]
    with pytest.raises(ValueError, match="read-only"):
        run.epochs[:] = 0
    changed = run.config
    changed.training.epochs = 99
    assert run.config.training.epochs == 3 and run.signal("phi").shape[0] == 3
    np.testing.assert_array_equal(run.plane("lira_online")[0], fpr)


def test_unknown_names_splits_and_rules_are_named_as_such(done_run):
    # before: a typo was "missing: its report stage has not finished", a bad split read the pool,
    # score:nan flagged nothing, and fpr:0.010 found no tables although fpr:0.01 was analysed
    run = privdyn.open_run(done_run)
    with pytest.raises(PrivdynError, match="Unknown attack 'lira_onlin'; the registered attacks are"):
        run.scores("lira_onlin")
    with pytest.raises(PrivdynError, match="stores no pool signal 'phii'; it stores .*'phi'"):
        run.signal("phii")
    with pytest.raises(PrivdynError, match="split 'tset'"):
        run.signal("phi", split="tset")
    with pytest.raises(PrivdynError, match="every stage of this run has finished, so its config does not make it"):
        run.scores("rmia")
    for rule in ("score:nan", "score:inf", "fpr:nan"):
        with pytest.raises(PrivdynError, match="finite|alpha"):
            run.plane("lira_online", rule=rule)
    assert len(run.tables(rule="fpr:0.010").sample) == len(run.tables().sample)
    np.testing.assert_array_equal(run.plane("lira_online", rule=None)[1], run.plane("lira_online")[1])
