"""Audit models trained by your own PyTorch loop: record them with privdyn's Recorder.

    python examples/own_training_loop.py            # 16 models, 12 epochs on MNIST-1D (~3 min on 2 cores)
    python examples/own_training_loop.py --tiny     # 4 models, 3 epochs (seconds; what the tests run)

privdyn draws which half of the pool each model trains on (``recorder.train_indices(m)``); the
loop below is entirely the user's (their model class, optimizer, batches); at each checkpoint
epoch it calls ``recorder.record(m, epoch, model)``. The models could equally be trained in M
processes or on M machines sharing the run directory (``Recorder.open(out, data)`` in each).
Then ``assemble`` (the same as ``privdyn assemble RUN``) checks that every model and epoch is
there, builds the signal arrays, scores the attacks, analyses and writes the report.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from privdyn.data import load_dataset
from privdyn.pipeline.assemble import assemble
from privdyn.training.recorder import Recorder


class SmallConv1d(nn.Module):
    """A model privdyn has never seen: two 1-D convolutions, global average pooling, a linear head."""

    def __init__(self, classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.BatchNorm1d(width), nn.ReLU())
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(-1))


def train_one(recorder: Recorder, m: int, epochs: int, batch_size: int = 64) -> None:
    """The user's own loop for model m: Adam, cross-entropy, shuffled batches of its IN samples."""
    torch.manual_seed(m)
    model = SmallConv1d(recorder.data.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = (torch.from_numpy(a) for a in recorder.train_data(m))  # exactly recorder.train_indices(m)
    if 0 in recorder.checkpoints:
        recorder.record(m, 0, model)  # before training
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(len(y)).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        if epoch in recorder.checkpoints:
            recorder.record(m, epoch, model)  # eval mode, no grad, mode restored afterwards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="4 models, 3 epochs, 200 samples (for tests)")
    ap.add_argument("--out", default="runs/own_training_loop", help="the run directory")
    ap.add_argument("--no-report", action="store_true", help="stop after the analysis (no HTML report)")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    if args.tiny:
        data, n_models, epochs, checkpoints = load_dataset("mnist1d", 200, 100, 0, {}), 4, 3, [0, 1, 3]
    else:
        data, n_models, epochs = load_dataset("mnist1d", 2000, 1000, 0, {}), 16, 12
        checkpoints = [0, 1, 2, 3, 4, 6, 8, 10, 12]
    recorder = Recorder.create(args.out, data, n_models=n_models, checkpoints=checkpoints,
                               queries=["identity", "shift:1,0"], name="own-training-loop",
                               description="SmallConv1d, Adam 3e-3, batch 64, own loop")
    for m in sorted({mm for mm, _ in recorder.missing()}):  # a rerun skips the models already recorded
        train_one(recorder, m, epochs)
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
