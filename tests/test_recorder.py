"""Recording from a user's own training loop (privdyn.training.recorder), `privdyn assemble`, the
Lightning callback and the import of per-epoch weights."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from privdyn.data import load_dataset
from privdyn.errors import PrivdynError
from privdyn.store.api import open_run
from privdyn.training.recorder import Recorder, import_weights
from privdyn.training.signals import SIGNALS, evaluate_signals

ROOT = Path(__file__).parents[1]
QUERIES = ["identity", "shift:1,0"]
CHECKPOINTS = [0, 2, 3]


@functools.cache
def tiny_data():
    return load_dataset("mnist1d", 200, 100, 0, {})


def tiny_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 24), nn.ReLU(), nn.Dropout(0.1), nn.Linear(24, 10))


def direct(net: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The signals of ``net`` computed without the recorder."""
    net.eval()
    return evaluate_signals(lambda xb: net(xb).unsqueeze(0), 1, torch.from_numpy(x), torch.from_numpy(y),
                            QUERIES, 4096)


def train_and_record(rec: Recorder, models, keep: dict | None = None, epochs: int = 3) -> None:
    """A hand-written loop: model m on exactly rec.train_indices(m), recorded at every checkpoint
    (``keep[(m, e)]`` = the same signals computed directly, when given)."""
    for m in models:
        net = tiny_net(m)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        x, y = (torch.from_numpy(a) for a in rec.train_data(m))
        gen = torch.Generator().manual_seed(m)
        for e in range(epochs + 1):
            if e > 0:
                net.train()
                for idx in torch.randperm(len(y), generator=gen).split(32):
                    opt.zero_grad()
                    nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
                    opt.step()
            if e in rec.checkpoints:
                rec.record(m, e, net)
                assert net.training  # the mode is restored (a new module is in train mode)
                if keep is not None:
                    ds = rec.data
                    keep[m, e] = (direct(net, ds.x_pool, ds.y_pool), direct(net, ds.x_test, ds.y_test))


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`privdyn ARGS` in this process: (exit code, stdout + stderr)."""
    from privdyn import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["privdyn", *map(str, args)])
    code = 0
    try:
        cli_module.main()
    except SystemExit as e:
        code = int(e.code or 0)
    got = capsys.readouterr()
    return code, got.out + got.err


# ----- (a), (b): a hand-written loop, assembled and analysed through the CLI ----------------
@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "run"
    rec = Recorder.create(out, tiny_data(), n_models=4, checkpoints=CHECKPOINTS, queries=QUERIES, seed=1,
                          name="hand-loop", description="tiny MLP, plain SGD loop",
                          attacks=["lira_online", "lira_offline_cdf"])
    keep: dict = {}
    train_and_record(rec, range(4), keep)
    return rec, keep


@pytest.fixture(scope="module")
def assembled(recorded):
    rec, keep = recorded
    mp = pytest.MonkeyPatch()
    try:
        from privdyn import cli as cli_module

        mp.setattr(sys, "argv", ["privdyn", "assemble", str(rec.run.path), "--no-progress"])
        cli_module.main()
    finally:
        mp.undo()
    return rec, keep


def test_hand_loop_assembles_and_analyses_through_the_cli(assembled, monkeypatch, capsys):
    rec, _ = assembled
    path = rec.run.path
    s = json.loads((path / "summary.json").read_text())
    assert s["epochs"] == CHECKPOINTS and s["n_models"] == 4 and s["n_samples"] == 200
    assert len(s["test_accuracy"]) == 3 and len(s["auc"]) == 3
    assert min(s["auc"]) >= 0.0 and max(s["auc"]) <= 1.0
    assert s["train_accuracy"][-1] > s["train_accuracy"][0]  # the models learned something
    assert (path / "report" / "index.html").exists() and not (path / "train").exists()
    run = open_run(path)
    assert run.config.source.kind == "record" and run.epochs.tolist() == CHECKPOINTS
    assert np.array_equal(run.membership, rec.membership)
    assert (run.membership.sum(0) == 2).all()  # balanced: every sample IN for M/2 models
    assert run.scores("lira_online").shape == (3, 4, 200)
    # idempotent: a second assemble does nothing and says where the report is
    code, text = cli(monkeypatch, capsys, "assemble", path, "--no-progress")
    assert code == 0 and "report:" in text
    # recording into an assembled run would be ignored: refused
    with pytest.raises(PrivdynError, match="already assembled"):
        rec.record(0, 0, tiny_net(0))


def test_recorded_signals_equal_a_direct_evaluation_bit_for_bit(assembled):
    rec, keep = assembled
    run = open_run(rec.run.path)
    for split, i in (("pool", 0), ("test", 1)):
        for name in SIGNALS:
            arr = run.signal(name, split)
            assert arr.shape == (3, 4, 200 if split == "pool" else 100, len(QUERIES))
            for (m, e), sig in keep.items():
                np.testing.assert_array_equal(arr[CHECKPOINTS.index(e), m], sig[i][name][0], err_msg=f"{name} {m} {e}")


def test_train_indices_are_the_membership(recorded):
    rec, _ = recorded
    for m in range(4):
        np.testing.assert_array_equal(rec.train_indices(m), np.flatnonzero(rec.membership[m]))
    assert not rec.membership.flags.writeable
    with pytest.raises(PrivdynError, match="0..3"):
        rec.train_indices(4)


def test_record_restores_each_submodules_mode_and_checks_the_output(tmp_path):
    rec = Recorder.create(tmp_path / "r", tiny_data(), n_models=2, checkpoints=[1])
    net = tiny_net(0)
    net.train()
    net[3].eval()  # a user's frozen submodule stays frozen
    rec.record(0, 1, net)
    assert [m.training for m in net] == [True, True, True, False, True]
    with pytest.raises(PrivdynError, match=r"logits \[B, 10\].*\[200, 5\]|logits \[B, 10\]"):
        rec.record(1, 1, nn.Sequential(nn.Flatten(), nn.Linear(40, 5)))
    with pytest.raises(PrivdynError, match=r"epoch=2 is not a checkpoint.*\[1\]"):
        rec.record(0, 2, net)


# ----- (c): two processes record disjoint models into one run ------------------------------
WORKER = """
import sys, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_recorder import train_and_record
from privdyn.training.recorder import Recorder
with np.load({data!r}) as f:
    data = tuple(f[k] for k in ("x_pool", "y_pool", "x_test", "y_test"))
rec = Recorder.create({out!r}, data, n_models=4, checkpoints={ckpts}, queries={queries}, seed=1)
train_and_record(rec, {models})
"""


def test_two_processes_record_disjoint_models_then_assemble(tmp_path, assembled):
    ds, out, data = tiny_data(), tmp_path / "shared", tmp_path / "data.npz"
    np.savez(data, x_pool=ds.x_pool, y_pool=ds.y_pool, x_test=ds.x_test, y_test=ds.y_test)
    # both workers call create: the first makes the run, the second finds it and records beside it
    procs = [subprocess.Popen([sys.executable, "-c", WORKER.format(
                 tests=str(ROOT / "tests"), data=str(data), out=str(out), ckpts=CHECKPOINTS, queries=QUERIES,
                 models=models)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for models in ([0, 1], [2, 3])]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    rec = Recorder.open(out, ds)
    assert rec.missing() == []
    info = rec.assemble()
    assert len(info["checkpoint_writers"]) == 2  # two processes wrote them
    # the same models recorded in one process (the fixture: same seed, same loop) give the same signals
    here = open_run(assembled[0].run.path)
    for name in ("phi", "loss", "correct"):
        np.testing.assert_array_equal(open_run(out).signal(name), here.signal(name))


# ----- (d): incomplete and corrupt recordings ---------------------------------------------------
def test_assemble_names_what_is_missing_and_detects_corrupt_files(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    rec = Recorder.create(out, tiny_data(), n_models=4, checkpoints=[0, 1, 3])
    for m in range(4):
        for e in rec.checkpoints:
            if (m, e) not in ((3, 1), (3, 3), (1, 0)):
                rec.record(m, e, tiny_net(m))
    assert rec.missing() == [(1, 0), (3, 1), (3, 3)]
    code, text = cli(monkeypatch, capsys, "assemble", out, "--no-analysis")
    assert code == 2 and "3 of 12 recorded checkpoints are missing" in text
    assert "model 1: epoch 0; model 3: epochs 1, 3" in text and "Traceback" not in text
    for m, e in rec.missing():
        rec.record(m, e, tiny_net(m))
    victim = rec.path(2, 1)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    code, text = cli(monkeypatch, capsys, "assemble", out, "--no-analysis")
    assert code == 2 and "model 2 epoch 1: does not match its checksum" in text
    assert not (out / "signals").exists()
    rec.record(2, 1, tiny_net(2))  # re-recording replaces it
    code, text = cli(monkeypatch, capsys, "assemble", out, "--no-analysis")
    assert code == 0 and "assembled:" in text and "report:" not in text
    assert open_run(out).signal("loss").shape == (3, 4, 200, 1)


def test_assemble_refuses_a_run_that_is_not_recorded(native, monkeypatch, capsys):
    run, _ = native
    code, text = cli(monkeypatch, capsys, "assemble", run.path)
    assert code == 2 and "not a recorded run" in text and "source.kind is train" in text


# ----- (e): validation -------------------------------------------------------------------------
def test_open_and_create_refuse_other_data_or_settings(tmp_path):
    ds = tiny_data()
    out = tmp_path / "r"
    rec = Recorder.create(out, ds, n_models=4, checkpoints=[1, 2])
    x = ds.x_pool.copy()
    x[7, 0, 3] += 0.5
    other = (x, ds.y_pool, ds.x_test, ds.y_test)  # one value changed
    with pytest.raises(PrivdynError, match="created from other data"):
        Recorder.open(out, other)
    rec.record(0, 1, tiny_net(0))
    with pytest.raises(PrivdynError, match="different training setup"):
        Recorder.create(out, other, n_models=4, checkpoints=[1, 2])
    with pytest.raises(PrivdynError, match="different training setup"):
        Recorder.create(out, ds, n_models=4, checkpoints=[1, 3])
    again = Recorder.create(out, ds, n_models=4, checkpoints=[1, 2])  # the same: reopened
    np.testing.assert_array_equal(again.membership, rec.membership)
    tup = (ds.x_pool.astype(np.float64), ds.y_pool.astype(np.int32), ds.x_test, ds.y_test)
    assert Recorder.open(out, tup).checkpoints == [1, 2]  # the same values in other dtypes are the same data
    with pytest.raises(PrivdynError, match="not a privdyn run"):
        Recorder.open(tmp_path / "nothing", ds)


@pytest.mark.parametrize(("change", "message"), [
    ({"membership": np.ones((4, 200), bool)}, "IN for every model"),
    ({"membership": np.zeros((4, 10), bool)}, r"shape \[n_models, N\] = \[4, 200\]"),
    ({"membership": np.full((4, 200), 2)}, "bool"),
    ({"n_models": 3}, "must be even"),
    ({"checkpoints": [0]}, "at least one epoch >= 1"),
    ({"queries": ["spin"]}, "spin"),
    ({"queries": ["hflip"], "data": (np.zeros((10, 3)), np.arange(10) % 2, np.zeros((5, 3)), np.ones(5, int))},
     "tabular data takes identity only"),
    ({"data": 42}, "a privdyn Dataset, a registered dataset name"),
    ({"data": (np.zeros((10, 3)), np.zeros(10), np.zeros((5, 3)), np.zeros(5, int))}, "integer class labels"),
    ({"data": (np.zeros((10, 3)), np.zeros(9, int), np.zeros((5, 3)), np.zeros(5, int))}, "9 labels"),
    ({"data": (np.full((10, 3), np.nan), np.zeros(10, int), np.zeros((5, 3)), np.ones(5, int))}, "NaN"),
    ({"data": (np.zeros((11, 3)), np.arange(11) % 2, np.zeros((5, 3)), np.ones(5, int))}, "odd number"),
    ({"data": (np.zeros((10, 3)), np.arange(10) - 1, np.zeros((5, 3)), np.ones(5, int))}, "0..C-1"),
])
def test_create_validates_its_inputs(tmp_path, change, message):
    kwargs = {"data": tiny_data(), "n_models": 4, "checkpoints": [1, 2], **change}
    with pytest.raises(PrivdynError, match=message):
        Recorder.create(tmp_path / "r", **kwargs)


def test_a_given_membership_is_used(tmp_path):
    z = np.zeros((4, 200), bool)
    z[0, :150] = z[1, 50:] = z[2, ::2] = z[3, 1::2] = True  # not balanced, every sample IN and OUT
    rec = Recorder.create(tmp_path / "r", tiny_data(), n_models=4, checkpoints=[1], membership=z.astype(int))
    np.testing.assert_array_equal(rec.membership, z)
    assert len(rec.train_indices(0)) == 150


# ----- (f): the Lightning callback ---------------------------------------------------------------
def test_lightning_callback_records_the_checkpoint_epochs(tmp_path):
    lp = pytest.importorskip("lightning.pytorch")
    from privdyn.training.lightning import PrivdynCallback

    class Module(lp.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = tiny_net(0)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Direct(lp.Callback):  # runs after PrivdynCallback, at the same moments
        def __init__(self):
            self.seen = {}

        def on_train_start(self, trainer, module):
            self.seen[0] = direct_of(module)

        def on_train_epoch_end(self, trainer, module):
            self.seen[trainer.current_epoch + 1] = direct_of(module)

    ds = tiny_data()

    def direct_of(module):
        was = module.training
        out = direct(module, ds.x_pool, ds.y_pool)
        module.train(was)
        return out

    rec = Recorder.create(tmp_path / "r", ds, n_models=2, checkpoints=[0, 2, 3], queries=QUERIES)
    x, y = (torch.from_numpy(a) for a in rec.train_data(1))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    cb, seen = PrivdynCallback(rec, 1), Direct()
    trainer = lp.Trainer(max_epochs=3, accelerator="cpu", devices=1, callbacks=[cb, seen], enable_progress_bar=False,
                         logger=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Module(), train_dataloaders=loader)
    assert cb.recorded == [0, 2, 3]
    assert rec.missing() == [(0, 0), (0, 2), (0, 3)]
    for e in cb.recorded:
        with np.load(rec.path(1, e)) as f:
            for name in SIGNALS:
                np.testing.assert_array_equal(f[name], seen.seen[e][name], err_msg=f"{name} epoch {e}")
    assert not np.array_equal(seen.seen[2]["phi"], seen.seen[3]["phi"])  # trained in between
    with pytest.raises(PrivdynError, match="0..1"):
        PrivdynCallback(rec, 2)


# ----- (g): import of per-epoch weights -------------------------------------------------------
@pytest.fixture(scope="module")
def native(tmp_path_factory, tiny_config_source):
    from privdyn import pipeline
    from privdyn.config import config_from_dict
    from privdyn.store.rundir import RunDir

    data = tiny_config_source()
    data["model"]["norm"] = "batch"  # running statistics must load too
    data["training"]["epochs"] = 3
    data["checkpoints"] = {"include_init": True, "save_weights": [0, 1, 2, 3]}
    cfg = config_from_dict(data)
    run = RunDir(tmp_path_factory.mktemp("native") / "run")
    with run.locked():
        run.init(cfg)
        pipeline.train(cfg, run, progress=False)
    return run, cfg


def test_imported_weights_give_the_native_signals(native, tmp_path):
    from privdyn.models import build_model

    run, cfg = native
    ds = load_dataset(cfg.dataset.name, cfg.dataset.n_pool, cfg.dataset.n_test, cfg.seed, cfg.dataset.options)
    mc = cfg.model.model_dump(exclude={"arch"})
    membership = np.load(run.path / "membership.npy")
    rec = import_weights(tmp_path / "imported", lambda: build_model(cfg.model.arch, ds.input_shape, ds.num_classes,
                                                                    **mc),
                         ds, run.path / "weights", membership)
    assert rec.checkpoints == [0, 1, 2, 3] and rec.missing() == []
    mine, theirs = open_run(rec.run.path), open_run(run.path)
    np.testing.assert_array_equal(mine.membership, theirs.membership)
    # Not bit-exact in general: privdyn's own training evaluates the models of a group at once,
    # folded into grouped layers (one batched matmul or grouped convolution over K models), while the
    # import runs each plain module alone; the kernels may add the float32 sums in another order, so
    # the logits may differ in the last bits (for this tiny MLP on the CPU they happen to agree).
    for split in ("pool", "test"):
        a, b = mine.signal("phi", split), theirs.signal("phi", split)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        m_a, m_b = mine.signal("correct", split), theirs.signal("correct", split)
        tiny_margin = np.abs(b) < 1e-4  # phi < 0 <-> wrong, unless another class is close
        assert ((m_a == m_b) | tiny_margin).all()
    # a missing weight file is named; a resumed import keeps what was recorded
    (run.path / "weights" / "epoch_002" / "model_005.safetensors").rename(tmp_path / "moved")
    with pytest.raises(PrivdynError, match="model 5: epoch 2"):
        import_weights(tmp_path / "other", lambda: build_model(cfg.model.arch, ds.input_shape, ds.num_classes, **mc),
                       ds, run.path / "weights", membership)
    (tmp_path / "moved").rename(run.path / "weights" / "epoch_002" / "model_005.safetensors")
    with pytest.raises(PrivdynError, match="does not fit the module"):
        import_weights(tmp_path / "wrong", lambda: nn.Sequential(nn.Flatten(), nn.Linear(8, 3)), ds,
                       run.path / "weights", membership)


# ----- examples ---------------------------------------------------------------------------------
def test_examples_run_at_tiny_size(tmp_path):
    scripts = ["own_training_loop.py"]
    try:
        import lightning.pytorch  # noqa: F401
        scripts.append("lightning_callback.py")
    except ImportError:  # the optional extra is not installed: its example cannot run
        pass
    # both at once: most of their time is importing and loading, which two cores do side by side
    procs = {script: subprocess.Popen([sys.executable, str(ROOT / "examples" / script), "--tiny", "--no-report",
                                       "--out", str(tmp_path / script)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for script in scripts}
    for script, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script}: {err[-3000:]}"
        s = json.loads((tmp_path / script / "summary.json").read_text())
        assert s["n_models"] == 4 and s["epochs"] == [0, 1, 3] and len(s["auc"]) == 3
        assert f"summary: {tmp_path / script / 'summary.json'}" in out


def _small_recorder(tmp_path: Path, checkpoints=(1, 2)) -> Recorder:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return Recorder.create(tmp_path / "run", (x[:64], y[:64], x[64:], y[64:]), n_models=4,
                           checkpoints=list(checkpoints), attacks=["loss"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_are_refused_naming_the_model_and_epoch_before_writing(tmp_path, bad):
    rec = _small_recorder(tmp_path)

    class Diverged(nn.Linear):
        def forward(self, x):
            return super().forward(x) * bad

    with pytest.raises(PrivdynError, match="record: model 3 at epoch 2: .*NaN or infinite logits"):
        rec.record(3, 2, Diverged(8, 2))
    assert not rec.path(3, 2).exists()
    assert (3, 2) in rec.missing()
    with pytest.raises(PrivdynError, match=r"record: model 1 at epoch 1: the model must map a batch \[B, \.\.\.\] "
                                           r"to logits \[B, 2\]"):
        rec.record(1, 1, nn.Linear(8, 3))


def test_fractional_checkpoints_are_refused_not_truncated(tmp_path):
    with pytest.raises(PrivdynError, match="give the epochs as integers"):
        _small_recorder(tmp_path, [1.7, 2.9])
    assert not (tmp_path / "run").exists()
    assert _small_recorder(tmp_path, [1.0, 2]).checkpoints == [1, 2]  # integral values are fine


def test_path_of_an_epoch_that_is_no_checkpoint_is_a_clear_error(tmp_path):
    rec = _small_recorder(tmp_path)
    with pytest.raises(PrivdynError, match=r"path: epoch=7 is not a checkpoint of .*; its checkpoints are \[1, 2\]"):
        rec.path(0, 7)
    assert rec.path(0, 2).name == "t001.npz"
