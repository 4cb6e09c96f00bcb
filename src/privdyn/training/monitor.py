"""A training-time monitor for one model: per-sample traces and their early-warning ranking.

Call it in any PyTorch loop with the batch's per-sample losses (``reduction="none"``) and sample
indices; optionally give it an evaluation pass (logits on the training samples) once per epoch.
At any epoch it ranks the training samples by each proxy of :mod:`privdyn.analysis.proxies`
(LT-IQR, mean and slope of the loss, margin mean and slope, forgetting events, early EL2N, and
any proxy a user registers), from this model's own signals alone: no reference models::

    monitor = privdyn.Monitor(len(train_set))            # path="monitor/" streams traces to disk
    for epoch in range(epochs):
        for x, y, idx in loader:                         # the loader also yields sample indices
            losses = F.cross_entropy(model(x), y, reduction="none")
            losses.mean().backward(); opt.step(); opt.zero_grad()
            monitor(idx, losses)                         # = monitor.record(idx, losses)
        monitor.evaluate(model, eval_loader)             # optional: phi, correctness, EL2N
        monitor.end_epoch()
    monitor.top(10, "lt_iqr"); monitor.table()

Traces are kept as float16 ``[epochs, N]`` rows (in memory, or one file per epoch under
``path``, see :class:`~privdyn.store.traces.TraceStore`); the running epoch is accumulated on the
losses' own device (no host synchronisation per batch) and moved to the host once per epoch. A
sample seen several times in an epoch gets the mean of its values, a sample not seen gets NaN
(the proxies skip it). ``state_dict``/``load_state_dict`` resume it, like a PyTorch module.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from privdyn.analysis.proxies import Traces, available_proxies, proxy_scores, top_k
from privdyn.store.traces import TraceStore
from privdyn.training.signals import signals_from_logits

#: The recorded signals: the training-step loss, and what an evaluation pass gives.
SIGNALS = ("loss", "eval_loss", "phi", "correct", "el2n")
#: Bytes of float32 traces the ranking holds at once (samples are ranked in blocks).
RANK_BUDGET = 64 << 20
#: Queued batches per signal before they are added to the running epoch's sums.
FLUSH_EVERY = 64


class Monitor:
    """Per-sample traces of one model's ``n_samples`` training samples, ranked by the proxies.

    Args:
        n_samples: the number of training samples; indices given to :meth:`record` are 0..n-1.
        path: a folder to stream the traces to (one atomically written file per signal and
            epoch); None keeps them in memory.
        dtype: the stored type of a trace value (float16 halves the memory of float32).
        el2n_epoch: the epoch whose EL2N the ``early_el2n`` proxy reads (None: the latest).
    """

    def __init__(self, n_samples: int, *, path: str | Path | None = None, dtype: Any = "float16",
                 el2n_epoch: float | None = None):
        if int(n_samples) < 1:
            raise ValueError(f"a monitor needs at least one sample, got n_samples={n_samples}")
        self.n_samples = int(n_samples)
        self.dtype = np.dtype(dtype)
        self.el2n_epoch = el2n_epoch
        self.store = TraceStore(path, self.n_samples, self.dtype) if path is not None else None
        #: The epochs closed so far, in order.
        self.epochs: list[float] = []
        self._rows: dict[str, dict[int, np.ndarray]] = {s: {} for s in SIGNALS}  # in memory
        self._has: dict[str, set[int]] = {s: set() for s in SIGNALS}  # recorded epochs with a row
        self._buf: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the running epoch: sums, counts
        self._pending: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # queued batches

    # --- recording ------------------------------------------------------------------------------

    def __call__(self, indices: Any, losses: torch.Tensor) -> None:
        """Record a batch's per-sample training losses (:meth:`record`)."""
        self.record(indices, losses)

    def record(self, indices: Any, losses: torch.Tensor) -> None:
        """Record the per-sample training losses ``[B]`` (``reduction="none"``) of the samples
        ``indices`` ``[B]`` in the running epoch. Nothing is synchronised with the device."""
        values = losses.detach() if isinstance(losses, torch.Tensor) else torch.as_tensor(losses)
        self._add("loss", indices, values)

    @torch.no_grad()
    def record_eval(self, indices: Any, logits: torch.Tensor, targets: Any) -> None:
        """Record an evaluation pass on the samples ``indices``: their logits ``[B, C]`` (model in
        eval mode) and labels. Gives the eval loss, the margin phi, correctness and EL2N."""
        y = torch.as_tensor(targets, device=logits.device)
        sig = signals_from_logits(logits.detach(), y)
        for name, key in (("eval_loss", "loss"), ("phi", "phi"), ("correct", "correct"), ("el2n", "el2n")):
            self._add(name, indices, sig[key])

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, loader: Iterable[Any], device: Any = None) -> None:
        """An evaluation pass of ``model`` over ``loader`` (batches ``(x, y, indices, ...)``) in eval
        mode, on ``device`` (None: the model's); the model's train/eval mode is restored after."""
        was_training = model.training
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.eval()
        try:
            for batch in loader:
                x, y, idx = batch[0], batch[1], batch[2]
                self.record_eval(idx, model(x.to(device)), torch.as_tensor(y).to(device))
        finally:
            model.train(was_training)

    def _add(self, name: str, indices: Any, values: torch.Tensor) -> None:
        # the hot path: the batch is only queued (one small copy of the values, no host
        # synchronisation); queued batches are added to the epoch's sums in one operation every
        # FLUSH_EVERY batches. The index tensor is kept as given until then.
        v = values if values.ndim == 1 else values.reshape(-1)
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(indices)
        if idx.ndim != 1:
            idx = idx.reshape(-1)
        if idx.shape[0] != v.shape[0]:
            raise ValueError(f"{name}: {idx.shape[0]} indices for {v.shape[0]} values; give one index per sample "
                             "(losses with reduction='none')")
        queue = self._pending.setdefault(name, [])
        queue.append((idx, v.clone()))  # a copy: the caller may change its loss tensor in place later
        if len(queue) >= FLUSH_EVERY:
            self._flush(name)

    def _flush(self, name: str) -> None:
        queue = self._pending.pop(name, [])
        if not queue:
            return
        device = queue[0][1].device
        v = torch.cat([b.to(device) for _, b in queue]).to(torch.float32)
        idx = torch.cat([a.to(device) for a, _ in queue]).long()
        buf = self._buf.get(name)
        if buf is None or buf[0].device != device:
            old = buf
            buf = (torch.zeros(self.n_samples, dtype=torch.float32, device=device),
                   torch.zeros(self.n_samples, dtype=torch.int32, device=device))
            if old is not None:
                buf[0].add_(old[0].to(device))
                buf[1].add_(old[1].to(device))
            self._buf[name] = buf
        sums, counts = buf
        try:
            sums.index_add_(0, idx, v)
            counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
        except (IndexError, RuntimeError) as e:
            raise ValueError(f"{name}: sample indices must lie in 0..{self.n_samples - 1} ({e})") from None

    def _flush_all(self) -> None:
        for name in list(self._pending):
            self._flush(name)

    def end_epoch(self, epoch: float | None = None) -> float:
        """Close the running epoch (default: the previous epoch + 1, from 1) and store its rows;
        returns the epoch. A sample index outside 0..n-1 is refused here at the latest (batches
        are checked when they are added up, every FLUSH_EVERY batches)."""
        e = float(epoch) if epoch is not None else (self.epochs[-1] + 1.0 if self.epochs else 1.0)
        if self.epochs and e <= self.epochs[-1]:
            raise ValueError(f"epoch {e:g} does not follow the last recorded epoch {self.epochs[-1]:g}")
        j = len(self.epochs)
        self._flush_all()
        for name, (sums, counts) in self._buf.items():
            c = counts.cpu().numpy()
            s = sums.cpu().numpy()
            with np.errstate(invalid="ignore", divide="ignore"):
                row = np.where(c > 0, s / np.maximum(c, 1), np.nan).astype(np.float32)
            if self.store is not None:
                self.store.write_row(name, j, row)
            else:
                self._rows[name][j] = row.astype(self.dtype)
            self._has[name].add(j)
        self.epochs.append(e)
        self._buf = {}
        if self.store is not None:
            self.store.write_meta(self.epochs, [s for s in SIGNALS if self._has[s]])
        return e

    # --- ranking --------------------------------------------------------------------------------

    def _read(self, name: str, samples: slice) -> np.ndarray:
        t = len(self.epochs)
        if self.store is not None:
            return self.store.read(name, t, samples)
        width = len(range(*samples.indices(self.n_samples)))
        out = np.full((t, width), np.nan, dtype=np.float32)
        for j, row in self._rows[name].items():
            if j < t:
                out[j] = row[samples]
        return out

    def traces(self, samples: slice = slice(None)) -> Traces:
        """The traces so far of a block of samples (all by default): the training losses as
        ``loss`` (the eval losses when no training loss was recorded) and the evaluation signals."""
        if not self.epochs:
            raise ValueError("no epoch is recorded yet: call end_epoch() after the epoch's batches")
        loss = "loss" if self._has["loss"] else "eval_loss"
        if not self._has[loss]:
            raise ValueError("nothing is recorded: give per-sample losses to record() or logits to record_eval()")
        extra = {s: self._read(s, samples) for s in ("phi", "correct", "el2n") if self._has[s]}
        return Traces(np.asarray(self.epochs), self._read(loss, samples), **extra)

    def scores(self, proxy: str = "lt_iqr", **opts: Any) -> np.ndarray:
        """Every training sample's score by ``proxy`` ``[N]`` (higher = more at risk), from the
        epochs so far; ``opts`` go to the proxy (``early_el2n`` reads ``el2n_epoch`` by default)."""
        if proxy == "early_el2n" and "epoch" not in opts:
            opts["epoch"] = self.el2n_epoch
        per_sample = 4 * max(1, len(self.epochs)) * (1 + sum(bool(self._has[s]) for s in ("phi", "correct", "el2n")))
        step = max(1, RANK_BUDGET // per_sample)
        out = np.empty(self.n_samples)
        for start in range(0, self.n_samples, step):
            block = slice(start, min(self.n_samples, start + step))
            try:
                out[block] = proxy_scores(proxy, self.traces(block), **opts)
            except ValueError as e:
                if "needs the" in str(e):
                    raise ValueError(f"{e}: record an evaluation pass (evaluate() or record_eval()) each epoch "
                                     "to rank by it") from None
                raise
        return out

    def top(self, k: int, proxy: str = "lt_iqr", **opts: Any) -> np.ndarray:
        """The indices of the k samples most at risk by ``proxy``, highest first (NaN last)."""
        return top_k(self.scores(proxy, **opts), k)

    def proxies(self) -> list[str]:
        """The registered proxies the recorded signals support."""
        return available_proxies(self.traces(slice(0, 1)))

    def table(self, proxies: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per sample: its score by each proxy (all it supports by default), sorted by the
        first proxy, most at risk first, with that proxy's rank (1 = most at risk)."""
        names = list(proxies) if proxies is not None else self.proxies()
        df = pd.DataFrame({"sample": np.arange(self.n_samples), **{p: self.scores(p) for p in names}})
        order = top_k(df[names[0]].to_numpy(), self.n_samples)
        df = df.iloc[order].reset_index(drop=True)
        df.insert(1, f"rank_{names[0]}", np.arange(1, self.n_samples + 1))
        return df

    # --- resuming -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (tensors, lists and numbers only: ``torch.save`` and
        ``torch.load(weights_only=True)`` take it). With ``path``, the rows stay in their files."""
        self._flush_all()
        rows = {} if self.store is not None else {
            name: {j: torch.from_numpy(np.ascontiguousarray(r)) for j, r in got.items()}
            for name, got in self._rows.items()}
        return {"n_samples": self.n_samples, "dtype": self.dtype.name, "epochs": list(self.epochs),
                "el2n_epoch": self.el2n_epoch, "path": None if self.store is None else str(self.store.root),
                "has": {name: sorted(got) for name, got in self._has.items()}, "rows": rows,
                "running": {name: (s.cpu(), c.cpu()) for name, (s, c) in self._buf.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` (rows recorded after that state are dropped)."""
        if int(state["n_samples"]) != self.n_samples:
            raise ValueError(f"this state is of a monitor of {state['n_samples']} samples, not {self.n_samples}")
        if self.store is None and state.get("path"):
            self.store = TraceStore(state["path"], self.n_samples, state["dtype"])
        self.dtype = np.dtype(state["dtype"])
        self.el2n_epoch = state.get("el2n_epoch")
        self.epochs = [float(e) for e in state["epochs"]]
        self._has = {s: set(state["has"].get(s, [])) for s in SIGNALS}
        self._rows = {s: {int(j): r.numpy().astype(self.dtype) for j, r in state["rows"].get(s, {}).items()}
                      for s in SIGNALS}
        self._buf = {name: (s.clone(), c.clone()) for name, (s, c) in state.get("running", {}).items()}
        self._pending = {}
        if self.store is not None:
            self.store.write_meta(self.epochs, [s for s in SIGNALS if self._has[s]])


def monitor(n_samples: int, **kwargs: Any) -> Monitor:
    """A :class:`Monitor` of ``n_samples`` training samples (``privdyn.monitor(len(train_set))``)."""
    return Monitor(n_samples, **kwargs)

