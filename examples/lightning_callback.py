"""Audit models trained with PyTorch Lightning: privdyn's callback records them at every checkpoint.

    pip install 'privdyn[lightning]'
    python examples/lightning_callback.py           # 8 models, 12 epochs on MNIST-1D (~2 min on 2 cores)
    python examples/lightning_callback.py --tiny    # 4 models, 3 epochs (seconds; what the tests run)

One ``Trainer.fit`` per model, each on exactly ``recorder.train_indices(m)``, with
``PrivdynCallback(recorder, m)``: it records epoch 0 when training starts and epoch e after the
e-th training epoch, whenever e is a checkpoint. The fits could run in separate processes or on
separate machines (``Recorder.open(out, data)`` in each); then ``privdyn assemble RUN``, here
called from Python, builds the signals, scores, analyses and reports.
"""

from __future__ import annotations

import argparse
import json

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privdyn.data import load_dataset
from privdyn.pipeline.assemble import assemble
from privdyn.training.lightning import PrivdynCallback
from privdyn.training.recorder import Recorder


class SmallConv1d(pl.LightningModule):
    """A user's LightningModule: two 1-D convolutions, global average pooling, a linear head, AdamW."""

    def __init__(self, classes: int = 10, width: int = 32, lr: float = 3e-3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.BatchNorm1d(width), nn.ReLU())
        self.head = nn.Linear(width, classes)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(-1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y, label_smoothing=0.05)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-4)


def fit_one(recorder: Recorder, m: int) -> None:
    """Train model m with Lightning on its IN samples; the callback records it."""
    pl.seed_everything(m, verbose=False)
    x, y = (torch.from_numpy(a) for a in recorder.train_data(m))
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    trainer = pl.Trainer(max_epochs=recorder.checkpoints[-1], accelerator="cpu", devices=1,
                         callbacks=[PrivdynCallback(recorder, m)], enable_progress_bar=False, logger=False,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(SmallConv1d(recorder.data.num_classes), train_dataloaders=loader)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="4 models, 3 epochs, 200 samples (for tests)")
    ap.add_argument("--out", default="runs/lightning_callback", help="the run directory")
    ap.add_argument("--no-report", action="store_true", help="stop after the analysis (no HTML report)")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    if args.tiny:
        data, n_models, checkpoints = load_dataset("mnist1d", 200, 100, 0, {}), 4, [0, 1, 3]
    else:
        data, n_models, checkpoints = load_dataset("mnist1d", 2000, 1000, 0, {}), 8, [0, 1, 2, 3, 4, 6, 8, 10, 12]
    recorder = Recorder.create(args.out, data, n_models=n_models, checkpoints=checkpoints, queries=["identity"],
                               name="lightning-callback", description="SmallConv1d LightningModule, AdamW")
    for m in sorted({mm for mm, _ in recorder.missing()}):  # a rerun skips the models already recorded
        fit_one(recorder, m)
        print(f"model {m} recorded at epochs {recorder.checkpoints}")

    run, report = assemble(args.out, report=not args.no_report, progress=False)
    s = json.loads(run.summary_path.read_text())
    final = s["final"]
    print(f"{s['default_attack']}: final TPR at 1% FPR {final['tpr_at_fpr_0.01']:.3f}, AUC {final['auc']:.3f}, "
          f"test accuracy {final['test_accuracy']:.3f}")
    print(f"summary: {run.summary_path}")
    if report is not None:
        print(f"report: {report}")


if __name__ == "__main__":
    main()
