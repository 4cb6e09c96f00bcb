"""Runs you can trust (issue 12): stale artifacts, paths, the lock, failed starts, kills, and the
review's bugs. Each test reproduces what went wrong before and checks what happens now."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import privdyn
from privdyn import pipeline
from privdyn.config import config_from_dict
from privdyn.errors import PrivdynError
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


def cli(*args, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, tiny_config_source):
    out = tmp_path_factory.mktemp("safety") / "r1"
    pipeline.run_all(config_from_dict(small(tiny_config_source)), out, progress=False)
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# ----- stale artifacts ------------------------------------------------------------------------
def test_changed_attack_options_are_never_analysed_on_stale_scores(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    before = (run / "scores" / "lira_online.npy").read_bytes()
    proc = cli("analyze", run, "--set", "attack_options.lira_online.center=median")
    assert proc.returncode == 2 and "stale" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(PrivdynError, match="stale"):
        privdyn.open_run(run).scores("lira_online")
    cfg = RunDir(run).load_config()
    assert cfg.attack_options.lira_online.center == "median"
    pipeline.run_all(cfg, run, progress=False, with_report=False)
    assert (run / "scores" / "lira_online.npy").read_bytes() != before  # rescored with the median
    assert privdyn.open_run(run).scores("lira_online").shape[0] == 3


def test_score_subset_records_provenance_and_only_stale_attacks_are_rescored(done_run, tmp_path, monkeypatch):
    run = copy_run(done_run, tmp_path / "r")
    assert cli("score", run, "--attacks", "rmia").returncode == 0
    assert privdyn.open_run(run).scores("rmia").shape[:2] == (3, 8)  # recorded: not "stale"
    # a kill after lira_online finished and before lira_offline_cdf did: only the latter reruns
    rd = RunDir(run)
    rd.mark_stage("score", "running", "killed")
    (run / "scores" / "lira_offline_cdf.npy").unlink()
    stamp = (run / "scores" / "lira_online.npy").stat().st_mtime_ns
    scored = []
    from privdyn.attacks import stage

    real = stage.score_attack
    monkeypatch.setattr(stage, "score_attack", lambda cfg, r, a, p=None: scored.append(a) or real(cfg, r, a, p))
    pipeline.run_all(rd.load_config(), run, progress=False, with_report=False)
    assert scored == ["lira_offline_cdf"]
    assert (run / "scores" / "lira_online.npy").stat().st_mtime_ns == stamp


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
    pipeline.run_all(RunDir(run).load_config(), run, progress=False)
    assert not junk.exists()


def test_corrupt_manifest_is_a_clear_error(done_run, tmp_path):
    run = copy_run(done_run, tmp_path / "r")
    (run / "manifest.json").write_text("")
    proc = cli("analyze", run)
    assert proc.returncode == 2 and "manifest.json is" in proc.stderr and "move the run directory aside" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_failed_start_does_not_block_the_corrected_config(tmp_path, tiny_config_source):
    out = tmp_path / "r"
    bad = config_from_dict(small(tiny_config_source, **{"dataset.name": "no_such_dataset"}))
    with pytest.raises(PrivdynError):
        pipeline.run_all(bad, out, progress=False, with_report=False)
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
    np.testing.assert_array_equal(fpr, want["fpr"])
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
    RunDir(run).mark_stage("analyze", "running", "x")  # make the analysis rerun
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


def test_wrapped_disk_full_errors_are_recognised_and_memmaps_reserve_their_blocks(tmp_path):
    import errno

    from privdyn.store.atomic import is_disk_full, open_memmap_atomic

    assert is_disk_full(OSError(errno.ENOSPC, "x"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed "
                                     "writing file data/0: file write failed: No space left on device"))
    assert not is_disk_full(RuntimeError("CUDA out of memory"))
    with open_memmap_atomic(tmp_path / "a.npy", (64, 1024), np.float64) as arr:
        tmp = next(tmp_path.glob(".a.npy.*.tmp"))
        st = tmp.stat()
        assert st.st_blocks * 512 >= st.st_size  # allocated up front, not sparse
        arr[:] = 1.0
    assert np.load(tmp_path / "a.npy").sum() == 64 * 1024


# ----- corruption -------------------------------------------------------------------------------
def flip_byte(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
@pytest.mark.parametrize("target", ["scores/lira_online.npy", "analysis/lira_online/fpr_0.01/plane.npz",
                                    "summary.json", "signals/phi.npy"])
def test_damaged_artifacts_are_detected_and_recomputed(damage, target, done_run, tmp_path):
    """Truncated, bit-flipped or emptied files are refused by the API and by `privdyn verify`
    with the file named; `privdyn run` recomputes them and reproduces the undamaged numbers."""
    run = copy_run(done_run, tmp_path / "r")
    path = run / target
    original = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(original[: len(original) // 2])
    elif damage == "flip":
        flip_byte(path, len(original) - 5)  # inside the data, past any header
    else:
        path.write_bytes(b"")
    proc = cli("verify", run)
    assert proc.returncode == 1 and target.split("/")[-1] in proc.stderr and "Traceback" not in proc.stderr
    r = privdyn.open_run(run)
    with pytest.raises(PrivdynError, match=path.name):
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


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["train", "score", "analyze", "report"])
def test_sigkill_inside_a_stage_then_rerun_gives_the_uninterrupted_result(stage, done_run, tmp_path,
                                                                         tiny_config_source):
    """Kill `privdyn run` while STAGE is running, run it again: the result is the one of the run
    that was never interrupted, and no temp file is left."""
    import os
    import signal

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(small(tiny_config_source)))
    run = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, "run", str(cfg), "--out", str(run), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _stage_state(run, stage) != "running" and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = cli("run", cfg, "--out", run, "--no-progress")
    assert again.returncode == 0, again.stderr
    for name in ("lira_online", "lira_offline_cdf"):
        assert (run / "scores" / f"{name}.npy").read_bytes() == (done_run / "scores" / f"{name}.npy").read_bytes()
    assert json.loads((run / "summary.json").read_text()) == json.loads((done_run / "summary.json").read_text())
    assert not list(run.rglob("*.tmp")) and cli("verify", run).returncode == 0
