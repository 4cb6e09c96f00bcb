"""The training-time monitor: in a plain PyTorch loop and through the Lightning callback its traces
equal the losses the loop saw (and, for the evaluation pass, the losses computed afterwards);
state_dict resumes it; streaming to disk equals keeping the traces in memory."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import privdyn
from privdyn.analysis.proxies import proxy_scores, top_k
from privdyn.store.integrity import CorruptArtifact
from privdyn.training.monitor import Monitor

N, DIM, CLASSES = 96, 6, 3


class Indexed(Dataset):
    """(x, y, index) triples."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(N, DIM, generator=g)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 1).long()

    def __len__(self):
        return N

    def __getitem__(self, i):
        return self.x[i], self.y[i], i


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(DIM, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES))


def train(monitors, epochs=3, seed=0, eval_pass=False, seen=None, stop_after=None):
    """A plain loop that feeds every monitor and keeps what it saw: seen[(epoch, i)] = loss."""
    data = Indexed()
    model = make_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    loader = DataLoader(data, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    seen = {} if seen is None else seen
    for epoch in range(1, epochs + 1):
        for b, (x, y, idx) in enumerate(loader):
            losses = F.cross_entropy(model(x), y, reduction="none")
            losses.mean().backward()
            opt.step()
            opt.zero_grad()
            for mon in monitors:
                mon(idx, losses)
            for i, v in zip(idx.tolist(), losses.detach().tolist()):
                seen[(epoch, i)] = v
            if stop_after == (epoch, b):
                return model, seen
        if eval_pass:
            for mon in monitors:
                mon.evaluate(model, DataLoader(data, batch_size=32))
        for mon in monitors:
            mon.end_epoch()
    return model, seen


def expected(seen, epochs, dtype=np.float16):
    out = np.full((epochs, N), np.nan, dtype=np.float32)
    for (e, i), v in seen.items():
        out[e - 1, i] = v
    return out.astype(dtype).astype(np.float32)


def test_plain_loop_traces_equal_the_losses_the_loop_saw():
    mon = privdyn.monitor(N)
    _, seen = train([mon], epochs=3)
    tr = mon.traces()
    assert mon.epochs == [1.0, 2.0, 3.0] and tr.loss.shape == (3, N) and tr.phi is None
    np.testing.assert_array_equal(tr.loss, expected(seen, 3))
    exact = Monitor(N, dtype="float32")
    _, seen32 = train([exact], epochs=2)
    np.testing.assert_allclose(exact.traces().loss, expected(seen32, 2, np.float32), rtol=1e-6)
    scores = mon.scores("lt_iqr")
    np.testing.assert_array_equal(scores, proxy_scores("lt_iqr", tr))
    np.testing.assert_array_equal(mon.top(5), top_k(scores, 5))
    table = mon.table()
    assert list(table.columns[:2]) == ["sample", "rank_lt_iqr"] and len(table) == N
    assert (np.diff(table["lt_iqr"].to_numpy()) <= 0).all()
    assert set(mon.proxies()) == {"lt_iqr", "loss_mean", "loss_slope"}
    with pytest.raises(ValueError, match="evaluation pass"):
        mon.scores("margin_mean")


def test_eval_pass_equals_losses_computed_afterwards():
    """The evaluation pass gives, per epoch, the signals of the model as it is after the epoch."""
    mon = Monitor(N, dtype="float32")
    data = Indexed()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    after = []
    for _ in range(2):
        for x, y, idx in DataLoader(data, batch_size=16, shuffle=True):
            losses = F.cross_entropy(model(x), y, reduction="none")
            losses.mean().backward()
            opt.step()
            opt.zero_grad()
            mon(idx, losses)
        mon.evaluate(model, DataLoader(data, batch_size=40))
        assert model.training  # restored
        mon.end_epoch()
        with torch.no_grad():
            model.eval()
            logits = model(data.x).double()
            model.train()
        after.append((F.cross_entropy(logits, data.y, reduction="none").numpy(),
                      (logits.argmax(1) == data.y).numpy()))
    tr = mon.traces()
    assert tr.phi is not None and tr.correct is not None and tr.el2n is not None
    np.testing.assert_allclose(mon._read("eval_loss", slice(None)), np.stack([a for a, _ in after]), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(tr.correct, np.stack([c for _, c in after]).astype(np.float32))
    for name in ("margin_mean", "margin_slope", "forgetting_events", "early_el2n"):
        assert mon.scores(name).shape == (N,)


def test_unseen_samples_are_nan_and_repeats_are_averaged():
    mon = Monitor(5, dtype="float32")
    mon.record(torch.tensor([0, 1, 1]), torch.tensor([1.0, 2.0, 4.0]))
    mon.end_epoch(2)
    row = mon.traces().loss[0]
    assert row[0] == 1.0 and row[1] == 3.0 and np.isnan(row[2:]).all()
    with pytest.raises(ValueError, match="does not follow"):
        mon.end_epoch(2)
    mon.record(torch.tensor([7]), torch.tensor([1.0]))  # checked when the batches are added up
    with pytest.raises(ValueError, match="indices must lie"):
        mon.end_epoch()
    with pytest.raises(ValueError, match="one index per sample"):
        mon.record(torch.tensor([0, 1]), torch.tensor(1.0))


def roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("on_disk", [False, True])
def test_resume_from_state_dict_mid_epoch(tmp_path, on_disk):
    """A monitor saved mid-epoch and loaded into a fresh one continues exactly as the original."""
    path = (lambda name: tmp_path / name) if on_disk else (lambda name: None)
    whole = Monitor(N, path=path("whole"))
    _, seen = train([whole], epochs=3)
    first = Monitor(N, path=path("part"))
    seen_part = {}
    train([first], epochs=3, seen=seen_part, stop_after=(2, 2))
    state = roundtrip(first.state_dict())
    resumed = Monitor(N, path=path("part"))
    resumed.load_state_dict(state)
    assert resumed.epochs == [1.0]
    # finish the interrupted run: replay the remaining batches of epoch 2 and epoch 3 from what was seen
    rest = {k: v for k, v in seen.items() if k not in seen_part}
    for epoch in (2, 3):
        items = [(i, v) for (e, i), v in rest.items() if e == epoch]
        if items:
            resumed.record(torch.tensor([i for i, _ in items]), torch.tensor([v for _, v in items]))
        resumed.end_epoch()
    np.testing.assert_array_equal(resumed.traces().loss, whole.traces().loss)


def test_disk_streaming_equals_memory(tmp_path):
    mem, disk = Monitor(N), Monitor(N, path=tmp_path / "mon")
    train([mem, disk], epochs=3, eval_pass=True)
    a, b = mem.traces(), disk.traces()
    for name in ("loss", "phi", "correct", "el2n"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for proxy in mem.proxies():
        np.testing.assert_array_equal(mem.scores(proxy), disk.scores(proxy))
    files = sorted(p.relative_to(tmp_path / "mon").as_posix() for p in (tmp_path / "mon").rglob("*.npy"))
    assert files[:3] == ["correct/000000.npy", "correct/000001.npy", "correct/000002.npy"]
    row = np.load(tmp_path / "mon" / "loss" / "000001.npy", allow_pickle=False)
    assert row.dtype == np.float16 and row.shape == (N,)
    # ranking in blocks of samples (a small budget) gives the same scores
    import privdyn.training.monitor as module

    old = module.RANK_BUDGET
    module.RANK_BUDGET = 200
    try:
        np.testing.assert_array_equal(disk.scores("lt_iqr"), mem.scores("lt_iqr"))
    finally:
        module.RANK_BUDGET = old
    (tmp_path / "mon" / "loss" / "000001.npy").write_bytes(b"\x93NUMPY damaged")
    with pytest.raises(CorruptArtifact, match="monitor trace row"):
        disk.scores("lt_iqr")


def test_lightning_callback_records_what_the_module_saw():
    lightning = pytest.importorskip("lightning.pytorch")
    from privdyn.training.lightning import MonitorCallback

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = make_model()
            self.seen = {}

        def training_step(self, batch, batch_idx):
            x, y, idx = batch
            losses = F.cross_entropy(self.net(x), y, reduction="none")
            for i, v in zip(idx.tolist(), losses.detach().tolist()):
                self.seen[(self.current_epoch + 1, i)] = v
            return {"loss": losses.mean(), "sample_losses": losses.detach(), "indices": idx}

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.2)

    data = Indexed()
    mon = privdyn.Monitor(N)
    cb = MonitorCallback(mon, eval_loader=DataLoader(data, batch_size=48))
    module = Module()
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, DataLoader(data, batch_size=16, shuffle=True))
    assert mon.epochs == [1.0, 2.0]
    np.testing.assert_array_equal(mon.traces().loss, expected(module.seen, 2))
    assert mon.traces().phi is not None
    other = privdyn.Monitor(N)
    privdyn.MonitorCallback(other).load_state_dict(roundtrip(cb.state_dict()))
    np.testing.assert_array_equal(other.traces().loss, mon.traces().loss)
    with pytest.raises(ValueError, match="sample_losses"):
        cb.on_train_batch_end(trainer, module, {"loss": torch.tensor(1.0)}, None, 0)


def test_state_dict_is_a_snapshot():
    """A state taken mid-epoch does not change as training continues, and restores that moment."""
    n = 10
    mon = Monitor(n)
    mon(torch.arange(n), torch.full((n,), 2.0))
    mon.end_epoch()
    mon(torch.arange(n), torch.ones(n))
    snap = mon.state_dict()
    for _ in range(64):  # more than FLUSH_EVERY batches: the running sums are updated in place
        mon(torch.arange(n), torch.full((n,), 9.0))
    sums, counts = snap["running"]["loss"]
    assert sums.tolist() == [1.0] * n and counts.tolist() == [1] * n
    snap["rows"]["loss"][0][:] = 0  # changing the state does not change the monitor
    assert (mon._read("loss", slice(None))[0] == 2.0).all()
    resumed = Monitor(n)
    resumed.load_state_dict(snap)
    resumed.end_epoch()
    np.testing.assert_array_equal(resumed._read("loss", slice(None))[1], np.ones(n, dtype=np.float32))


def test_non_finite_losses_are_refused_and_large_ones_saturate():
    import warnings

    torch.manual_seed(0)
    n = 10
    mon = Monitor(n)
    for e in range(4):
        losses = torch.rand(n) * 0.5
        if e == 0:
            losses[0] = 7e4  # finite, beyond float16's range
        if e == 2:
            losses[1] = float("nan")
        mon(torch.arange(n), losses)
        if e == 0:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mon.end_epoch()
            assert len(caught) == 1  # one warning (no numpy overflow warning besides)
            msg = str(caught[0].message)
            assert "65504" in msg and "dtype='float32'" in msg and "[0]" in msg
        elif e == 2:
            with pytest.raises(ValueError, match=r"epoch 3 is not closed.*1 non-finite value.*sample\(s\) \[1\]"):
                mon.end_epoch()
            assert mon.end_epoch() == 3.0  # closed with the finite values kept
        else:
            mon.end_epoch()
    loss = mon._read("loss", slice(None))
    assert loss[0, 0] == 65504.0 and np.isfinite(loss[:, 0]).all()
    assert np.isnan(loss[2, 1]) and np.isfinite(np.delete(loss[2], 1)).all()
    assert mon.top(3, "loss_mean")[0] == 0
    exact = Monitor(n, dtype="float32")
    exact(torch.arange(n), torch.full((n,), 7e4))
    exact.end_epoch()
    assert (exact._read("loss", slice(None)) == 7e4).all()
    # an evaluation pass with NaN logits: every affected signal is named, in one error
    ev = Monitor(n)
    logits = torch.randn(n, 3)
    logits[4] = float("nan")
    ev.record_eval(torch.arange(n), logits, torch.zeros(n, dtype=torch.long))
    with pytest.raises(ValueError, match=r"eval_loss: 1 non-finite.*\[4\].*phi: 1 non-finite"):
        ev.end_epoch()


def test_out_of_range_index_drops_only_its_batch(monkeypatch):
    mon = Monitor(10)
    mon(torch.arange(5), torch.ones(5))
    mon(torch.tensor([5, 10]), torch.ones(2))
    mon(torch.arange(5, 10), torch.ones(5))
    with pytest.raises(ValueError, match=r"batch 2 of the running epoch.*outside 0\.\.9.*\[10\]"):
        mon.end_epoch()
    assert mon.epochs == []
    mon.end_epoch()
    np.testing.assert_array_equal(mon._read("loss", slice(None))[0], np.ones(10, dtype=np.float32))
    # checked when the queue is added up (here every 2 batches): the error comes from record()
    import privdyn.training.monitor as module

    monkeypatch.setattr(module, "FLUSH_EVERY", 2)
    mon(torch.arange(10), torch.full((10,), 2.0))
    with pytest.raises(ValueError, match=r"batch 2 .*\[-1\]"):
        mon(torch.tensor([-1, 3]), torch.ones(2))
    mon(torch.arange(10), torch.full((10,), 4.0))
    mon.end_epoch()
    np.testing.assert_array_equal(mon._read("loss", slice(None))[1], np.full(10, 3.0, dtype=np.float32))


def test_epochs_sizes_and_indices_must_be_valid():
    mon = Monitor(4)
    mon(torch.arange(4), torch.ones(4))
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="finite"):
            mon.end_epoch(bad)
    assert mon.end_epoch() == 1.0
    for bad in (2.5, 4.0, True, "4"):
        with pytest.raises(TypeError, match="n_samples must be an integer"):
            Monitor(bad)
    assert Monitor(np.int64(4)).n_samples == 4
    for idx in (torch.tensor([0.0, 1.7]), [0.0, 1.0], torch.tensor([True, False])):
        with pytest.raises(TypeError, match="indices must be integers"):
            mon.record(idx, torch.ones(2))
    mon.record(np.array([0, 3], dtype=np.int32), torch.ones(2))
    mon.end_epoch()
    assert mon._read("loss", slice(None))[1].tolist()[::3] == [1.0, 1.0]
