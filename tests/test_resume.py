"""Resume and determinism: a `privdyn run` killed with SIGKILL resumes at each group's last
checkpoint, rewrites no finished checkpoint file and ends with the arrays of an uninterrupted run;
the same seed gives the same bits."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from privdyn import pipeline
from privdyn.config import TRAIN_SECTIONS, config_from_dict
from privdyn.store.arrays import open_array
from privdyn.store.rundir import RunDir
from privdyn.training.signals import SIGNALS

#: 2 groups x 12 epochs, a checkpoint every epoch; slow enough (38 steps an epoch) to be killed mid-way.
CONFIG = {
    "name": "resume", "seed": 5,
    "dataset": {"name": "synthetic", "n_pool": 600, "n_test": 100, "options": {"dim": 8, "classes": 3}},
    "model": {"arch": "mlp", "width": 32, "depth": 1, "norm": "none"},
    "training": {"n_models": 4, "epochs": 12, "batch_size": 8, "group_size": 2,
                 "optimizer": {"name": "sgd", "lr": 0.05}},
    "attacks": ["lira_online"], "analysis": {"grid": 2},
}
G, E, T = 2, 12, 12


def privdyn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "privdyn.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def arrays(run_dir) -> dict[str, np.ndarray]:
    run = RunDir(run_dir)
    return {f"{split}/{s}": np.asarray(open_array(run.signal_path(s, split)))
            for s in SIGNALS for split in ("pool", "test")}


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    RunDir(tmp_path / "ref").init(config_from_dict(CONFIG))
    ref = privdyn("train", str(tmp_path / "ref"))
    out = tmp_path / "killed"
    proc = privdyn("run", str(cfg_path), "--out", str(out), "--no-progress")
    target = out / "train" / "group_001" / "t003.npz"  # group 0 done, group 1 part-way
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    # what the kill left behind
    finished = {}
    for g in range(G):
        gdir = out / "train" / f"group_{g:03d}"
        finished[g] = sorted(p.name for p in gdir.glob("t*.npz") if re.fullmatch(r"t\d{3}\.npz", p.name))
    assert (out / "train" / "group_000" / "done").exists() and not (out / "train" / "group_001" / "done").exists()
    state1 = torch.load(out / "train" / "group_001" / "state.pt", weights_only=True)["epoch"]
    assert 4 <= state1 < E
    n_at_kill = sum(len(v) for v in finished.values())
    assert len(finished[0]) == T and n_at_kill >= T + 4
    assert not (out / "signals").exists()

    again = privdyn("train", str(out))  # `privdyn run` resumes the same way, then scores and reports
    assert again.wait(timeout=300) == 0, again.stdout.read()

    stage = json.loads((out / "manifest.json").read_text())["stages"]["train"]
    assert stage["state"] == "done"
    # no checkpoint file written twice: the killed process keeps every file it had finished
    assert stage["checkpoint_writers"] == {str(proc.pid): n_at_kill, str(again.pid): G * T - n_at_kill}
    assert stage["evaluations"] == G * T - n_at_kill
    # group 0 skipped; group 1 resumed at its last state and re-trained only what followed it
    assert stage["resumed_epochs"] == E + state1 and stage["trained_epochs"] == E - state1
    assert not (out / "train").exists() and not (out / ".train.trash").exists()

    a, b = arrays(out), arrays(tmp_path / "ref")
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def tricky(**over) -> dict:
    """Every source of randomness at once: dropout, augmentation, SAM, BatchNorm."""
    data = {"name": "tricky", "seed": 9,
            "dataset": {"name": "digits", "n_pool": 64, "n_test": 30},
            "model": {"arch": "cnn", "width": 4, "depth": 2, "norm": "batch", "dropout": 0.3},
            "training": {"n_models": 4, "epochs": 4, "batch_size": 16, "group_size": 2, "augment": "flip_crop",
                         "optimizer": {"name": "sam", "rho": 0.05, "lr": 0.05}},
            "checkpoints": {"schedule": "list", "epochs": [1, 3, 4], "save_weights": [2]},
            "analysis": {"grid": 2}}
    for k, v in over.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return data


class Recorder:
    """A stand-in for the progress bar that can stop the run after a number of epochs."""

    def __init__(self, stop_after: int | None = None):
        self.total, self.done, self.stop_after = None, 0, stop_after

    def add_task(self, _label, total):
        self.total = total
        return 0

    def advance(self, _task, n=1):
        self.done += n
        if self.stop_after is not None and self.done >= self.stop_after:
            raise KeyboardInterrupt


def train(path, data, progress=None):
    """Train ``data`` into ``path``: the pipeline's stage, or the engine with a progress recorder."""
    from privdyn.data import load_dataset
    from privdyn.training.engine import run_train_stage
    from privdyn.training.membership import balanced_membership

    cfg = config_from_dict(data)
    run = RunDir(path)
    run.init(cfg)
    if progress is None:
        pipeline.train(cfg, run, progress=False)
        return run
    ds = load_dataset(cfg.dataset.name, cfg.dataset.n_pool, cfg.dataset.n_test, cfg.seed)
    return run_train_stage(cfg, run, ds, balanced_membership(cfg.training.n_models, ds.n_pool, cfg.seed), progress)


def signals(run: RunDir) -> dict[str, np.ndarray]:
    return {s: np.asarray(open_array(run.signal_path(s))) for s in SIGNALS}


DP = tricky(model={"norm": "group", "dropout": 0.0}, training={"dp": {"enabled": True}, "optimizer": {"name": "sgd"}})


@pytest.mark.parametrize("data,n_groups", [(tricky(), 2), (DP, 4)], ids=["sam-dropout-augment", "dp-sgd"])
def test_interrupted_and_resumed_equals_uninterrupted_bit_for_bit(tmp_path, data, n_groups):
    ref = signals(train(tmp_path / "ref", data))
    same = signals(train(tmp_path / "same", data))
    for s in SIGNALS:
        assert np.array_equal(ref[s], same[s]), f"same seed, different {s}"
    other = signals(train(tmp_path / "other", {**data, "seed": 10}))
    assert not np.array_equal(ref["phi"], other["phi"])

    path = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):  # group 0 done (4 epochs), group 1 stopped after epoch 2
        train(path, data, Recorder(stop_after=6))
    g1 = path / "train" / "group_001"
    assert sorted(p.name for p in g1.glob("t*.npz")) == ["t000.npz"]
    # a kill between the state of epoch 1 and its signals: the state stays, the file is missing
    (g1 / "t000.npz").unlink()
    bar = Recorder()
    stats = train(path, data, bar)
    resumed = signals(RunDir(path))
    for s in SIGNALS:
        assert np.array_equal(ref[s], resumed[s]), s
    assert bar.done == bar.total == n_groups * 4  # the bar counts the resumed epochs too
    assert stats["resumed_epochs"] == 4 + 1 and stats["resumed_epochs"] + stats["trained_epochs"] == n_groups * 4
    assert stats["evaluations"] == (n_groups - 1) * 3  # all but group 0's three checkpoints


def test_resume_counts_in_the_manifest(tmp_path):
    data = tricky(training={"group_size": 4})
    path = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        train(path, data, Recorder(stop_after=3))
    leftover = path / "weights" / "epoch_002" / ".model_000.safetensors.x1y2.tmp"  # a kill mid-write
    leftover.write_bytes(b"half")
    run = train(path, data)
    assert not leftover.exists()
    stage = run.manifest()["stages"]["train"]
    # epoch 3 is a checkpoint, so its state was saved: only epoch 4 and its checkpoint remain
    assert stage["state"] == "done" and stage["groups"] == 1
    assert stage["resumed_epochs"] == 3 and stage["trained_epochs"] == 1 and stage["evaluations"] == 1
    assert stage["checkpoint_writers"] == {str(os.getpid()): 3}
    assert (path / "weights" / "epoch_002" / "model_003.safetensors").exists()


def test_killed_after_assembling_only_cleans_up(tmp_path):
    """Killed once the arrays were complete but before the stage was marked done: no retraining."""
    data = tricky(training={"group_size": 4, "epochs": 2}, checkpoints={"schedule": "every", "epochs": []})
    run = train(tmp_path / "r", data)
    before = signals(run)
    cfg = config_from_dict(data)
    run.mark_stage("train", "running", cfg.section_hash(*TRAIN_SECTIONS))
    (run.path / "train" / "group_000").mkdir(parents=True)  # what the kill left half deleted
    pipeline.train(cfg, run, progress=False)
    stage = run.manifest()["stages"]["train"]
    assert stage["state"] == "done" and stage["assembled_before"] is True and "trained_epochs" not in stage
    assert not (run.path / "train").exists()
    for s, v in signals(run).items():
        assert np.array_equal(v, before[s])
