"""PyTorch Lightning callbacks: record a model for privdyn at every checkpoint epoch (PrivdynCallback),
and feed a training-time monitor (MonitorCallback).

Needs the optional extra ``privdyn[lightning]``; privdyn itself imports without Lightning (this
module is imported only when the callback is used)::

    rec = privdyn.Recorder.open("runs/mine", data)
    trainer = lightning.pytorch.Trainer(max_epochs=rec.checkpoints[-1],
                                        callbacks=[PrivdynCallback(rec, model_index=m)])
    trainer.fit(module, train_dataloaders=loader_of(rec.train_indices(m)))
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import Callback
except ImportError as e:  # pragma: no cover - exercised only where lightning is absent
    raise ImportError("privdyn's Lightning callback needs Lightning: pip install 'privdyn[lightning]' "
                      f"(or 'lightning>=2.4'); {e}") from e

from privdyn.training.monitor import Monitor
from privdyn.training.recorder import Recorder


class PrivdynCallback(Callback):
    """Records model ``model_index`` with ``recorder`` at each of its checkpoint epochs.

    Epoch 0 (when a checkpoint) is recorded when training starts, before the first step; epoch
    ``e >= 1`` after the e-th training epoch ends (Lightning's ``current_epoch`` is 0-based, so
    that is ``current_epoch + 1``). Under distributed training only global rank 0 records (every
    rank holds the same weights). The module is evaluated on its own device, in eval mode, and its
    train/eval mode is restored afterwards. Train the module on ``recorder.train_indices(model_index)``
    and set ``max_epochs`` to ``recorder.checkpoints[-1]``.
    """

    def __init__(self, recorder: Recorder, model_index: int):
        super().__init__()
        recorder.train_indices(model_index)  # validates the index now, not after an epoch of training
        self.recorder = recorder
        self.model_index = int(model_index)
        #: The epochs this callback recorded, in order (for logs and tests).
        self.recorded: list[int] = []

    def _record(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> None:
        if epoch in self.recorder.checkpoints and trainer.is_global_zero and not trainer.sanity_checking:
            self.recorder.record(self.model_index, epoch, pl_module)
            self.recorded.append(epoch)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record epoch 0 (the initial weights) when it is a checkpoint and training starts from scratch."""
        if trainer.current_epoch == 0 and trainer.global_step == 0:
            self._record(trainer, pl_module, 0)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the epoch just finished (1-based) when it is a checkpoint."""
        self._record(trainer, pl_module, trainer.current_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        """What a Lightning checkpoint keeps of the callback: the epochs recorded so far."""
        return {"recorded": list(self.recorded)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when Lightning resumes from a checkpoint."""
        self.recorded = list(state_dict.get("recorded", []))


class MonitorCallback(Callback):
    """Feeds a :class:`~privdyn.training.monitor.Monitor` from a Lightning training loop.

    After every training batch the callback takes the batch's per-sample losses and sample
    indices from what ``training_step`` returned, by default the keys ``"sample_losses"`` and
    ``"indices"`` of its dict (or pass ``extract(outputs, batch) -> (indices, losses)``)::

        def training_step(self, batch, batch_idx):
            x, y, idx = batch
            losses = F.cross_entropy(self(x), y, reduction="none")
            return {"loss": losses.mean(), "sample_losses": losses.detach(), "indices": idx}

    At the end of each training epoch it runs the optional evaluation pass over ``eval_loader``
    (batches ``(x, y, indices)``) and closes the epoch (Lightning's 0-based ``current_epoch`` + 1).
    Its state is the monitor's, so a Lightning checkpoint resumes the traces. Each process
    records the batches it sees: under distributed training every rank's monitor holds its own
    shard of the samples.
    """

    def __init__(self, monitor: Monitor, eval_loader: Any = None, extract: Any = None,
                 losses_key: str = "sample_losses", indices_key: str = "indices"):
        super().__init__()
        self.monitor = monitor
        self.eval_loader = eval_loader
        self.extract = extract
        self.losses_key, self.indices_key = losses_key, indices_key

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Record the batch's per-sample losses."""
        if self.extract is not None:
            indices, losses = self.extract(outputs, batch)
        else:
            if not isinstance(outputs, dict) or self.losses_key not in outputs or self.indices_key not in outputs:
                raise ValueError(f"MonitorCallback: training_step must return a dict with {self.losses_key!r} "
                                 f"(per-sample losses, reduction='none') and {self.indices_key!r} (the batch's "
                                 "sample indices), or give MonitorCallback(extract=...)")
            indices, losses = outputs[self.indices_key], outputs[self.losses_key]
        self.monitor.record(indices, losses)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The optional evaluation pass, then close the epoch."""
        if trainer.sanity_checking:
            return
        if self.eval_loader is not None:
            self.monitor.evaluate(pl_module, self.eval_loader, device=pl_module.device)
        self.monitor.end_epoch(trainer.current_epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        """The monitor's state (what a Lightning checkpoint keeps)."""
        return dict(self.monitor.state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the monitor from a Lightning checkpoint."""
        self.monitor.load_state_dict(state_dict)
