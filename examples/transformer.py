"""Audit a third-party architecture: PyTorch's own TransformerEncoder on MNIST-1D sequences.

    python examples/transformer.py           # 16 models, 10 epochs (a few minutes on 2 cores)
    python examples/transformer.py --tiny    # toy size (used by the tests)

privdyn probes whether torch.func can batch the model; if not (the encoder's fast paths branch on
their inputs), it trains the models one at a time and says why.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import privdyn


class SequenceTransformer(nn.Module):
    """Patches of MNIST-1D's 40 steps as tokens, a TransformerEncoder, mean pooling, a linear head."""

    def __init__(self, d_model: int = 32, patch: int = 4, classes: int = 10):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch, d_model)
        self.position = nn.Parameter(torch.zeros(40 // patch, d_model))
        layer = nn.TransformerEncoderLayer(d_model, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.reshape(x.shape[0], -1, self.patch)) + self.position
        return self.head(self.encoder(tokens).mean(dim=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="stop after the analysis")
    parser.add_argument("--out", default="runs/transformer")
    args = parser.parse_args()
    n_models, epochs = (4, 2) if args.tiny else (16, 10)
    result = privdyn.audit(
        SequenceTransformer, "mnist1d", out=args.out, n_models=n_models,
        recipe=privdyn.Recipe(optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), epochs=epochs, batch_size=64),
        report=not args.no_report, n_pool=400 if args.tiny else 4000, n_test=200 if args.tiny else 1000,
    )
    final = result.run.summary()["final"]
    print(f"trained {'batched' if result.batched else 'one at a time'} ({result.reason})")
    print(f"TPR at 1% FPR {final['tpr_at_fpr_0.01']:.3f}, AUC {final['auc']:.3f}, "
          f"test accuracy {final['test_accuracy']:.3f}")
    print(f"report: {result.report}")


if __name__ == "__main__":
    main()
