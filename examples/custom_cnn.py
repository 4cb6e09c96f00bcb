"""Audit a model class privdyn has never seen, trained by your own epoch function.

python examples/custom_cnn.py            # 16 models, 12 epochs on MNIST-1D (about 2 minutes on 2 cores)
python examples/custom_cnn.py --tiny     # the same at toy size (seconds; used by the tests)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import privdyn


class SmallCNN(nn.Module):
    """A 1-D CNN for MNIST-1D's [1, 40] sequences: two conv blocks and a linear head."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.GroupNorm(4, width), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(width, width, 3, padding=1), nn.GroupNorm(4, width), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train_epoch(model, optimizer, batches, epoch):
    """My recipe: label smoothing and gradient clipping, which privdyn's own trainer does not do."""
    for x, y in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y, label_smoothing=0.1).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="stop after the analysis")
    parser.add_argument("--out", default="runs/custom_cnn")
    args = parser.parse_args()
    n_models, epochs = (4, 2) if args.tiny else (16, 12)
    result = privdyn.audit(
        SmallCNN, "mnist1d", out=args.out, n_models=n_models,
        recipe=privdyn.Recipe(optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3, weight_decay=1e-4),
                              schedule=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs),
                              epochs=epochs, batch_size=128, train_epoch=train_epoch),
        attacks=["lira_online", "rmia", "loss"], report=not args.no_report,
        n_pool=400 if args.tiny else 4000, n_test=200 if args.tiny else 1000,
    )
    final = result.run.summary()["final"]
    print(f"trained {'batched' if result.batched else 'one at a time'} ({result.reason})")
    print(f"TPR at 1% FPR {final['tpr_at_fpr_0.01']:.3f}, AUC {final['auc']:.3f}, "
          f"test accuracy {final['test_accuracy']:.3f}")
    print(f"report: {result.report}")


if __name__ == "__main__":
    main()
