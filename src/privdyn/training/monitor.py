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
(the proxies skip it). A NaN or infinite value is refused (a ValueError when the queued batches
are added up, the epoch's other values kept), and so is a batch with a sample index outside
0..n-1; a finite value beyond the stored type's range is stored as its maximum, with a warning.
``state_dict``/``load_state_dict`` resume it, like a PyTorch module (the state is a copy).
"""

from __future__ import annotations

import math
import operator
import warnings
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
#: The index dtypes a batch may have (a float index would be truncated to another sample).
INDEX_DTYPES = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8} | {
    d for d in (getattr(torch, f"uint{b}", None) for b in (16, 32, 64)) if isinstance(d, torch.dtype)})


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
        try:
            if isinstance(n_samples, bool):
                raise TypeError
            n = operator.index(n_samples)
        except TypeError:
            raise TypeError(f"n_samples must be an integer (the number of training samples, len(train_set)), "
                            f"got {n_samples!r} ({type(n_samples).__name__})") from None
        if n < 1:
            raise ValueError(f"a monitor needs at least one sample, got n_samples={n_samples}")
        self.n_samples = n
        self.dtype = np.dtype(dtype)
        self.el2n_epoch = el2n_epoch
        self.store = TraceStore(path, self.n_samples, self.dtype) if path is not None else None
        #: The epochs closed so far, in order.
        self.epochs: list[float] = []
        self._rows: dict[str, dict[int, np.ndarray]] = {s: {} for s in SIGNALS}  # in memory
        self._has: dict[str, set[int]] = {s: set() for s in SIGNALS}  # recorded epochs with a row
        self._buf: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # the running epoch: sums, counts
        self._pending: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # queued batches
        self._batches: dict[str, int] = {}  # batches flushed per signal in the running epoch

    # --- recording ------------------------------------------------------------------------------

    def __call__(self, indices: Any, losses: torch.Tensor) -> None:
        """Record a batch's per-sample training losses (:meth:`record`)."""
        self.record(indices, losses)

    def record(self, indices: Any, losses: torch.Tensor) -> None:
        """Record the per-sample training losses ``[B]`` (``reduction="none"``) of the samples
        ``indices`` ``[B]`` in the running epoch. Nothing is synchronised with the device."""
        values = losses.detach() if isinstance(losses, torch.Tensor) else torch.as_tensor(losses)
        self._add("loss", indices, values)
        if len(self._pending["loss"]) >= FLUSH_EVERY:
            self._flush_names(["loss"])

    @torch.no_grad()
    def record_eval(self, indices: Any, logits: torch.Tensor, targets: Any) -> None:
        """Record an evaluation pass on the samples ``indices``: their logits ``[B, C]`` (model in
        eval mode) and labels. Gives the eval loss, the margin phi, correctness and EL2N."""
        y = torch.as_tensor(targets, device=logits.device)
        sig = signals_from_logits(logits.detach(), y)
        names = ("eval_loss", "phi", "correct", "el2n")
        for name, key in zip(names, ("loss", "phi", "correct", "el2n")):
            self._add(name, indices, sig[key])
        self._flush_names([n for n in names if len(self._pending[n]) >= FLUSH_EVERY])

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
        # synchronisation); queued batches are checked and added to the epoch's sums in one
        # operation every FLUSH_EVERY batches (the caller flushes). The index tensor is kept as
        # given until then; its dtype is checked here (no synchronisation).
        v = values if values.ndim == 1 else values.reshape(-1)
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(indices)
        if idx.dtype not in INDEX_DTYPES:
            raise TypeError(f"{name}: sample indices must be integers, not {idx.dtype} (a float index would be "
                            "truncated to another sample)")
        if idx.ndim != 1:
            idx = idx.reshape(-1)
        if idx.shape[0] != v.shape[0]:
            raise ValueError(f"{name}: {idx.shape[0]} indices for {v.shape[0]} values; give one index per sample "
                             "(losses with reduction='none')")
        # a copy of the values: the caller may change its loss tensor in place later
        self._pending.setdefault(name, []).append((idx, v.clone()))

    def _running(self) -> str:
        if not self.epochs:
            return "the running epoch (the first)"
        return f"the running epoch (after epoch {self.epochs[-1]:g})"

    def _sift(self, name: str, queue: list[tuple[torch.Tensor, torch.Tensor]], first: int, idx: torch.Tensor,
              v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The slow path of a flush whose check failed: drop each batch with an index outside 0..n-1
        and every non-finite value; the rest is kept. ``first`` is the position in the epoch (from 1)
        of the queue's first batch. Returns what is kept and the messages."""
        problems = []
        in_range = (idx >= 0) & (idx < self.n_samples)
        keep = torch.ones_like(in_range)
        batch_of = torch.empty_like(idx)
        start = 0
        for position, (a, _) in enumerate(queue, first):
            size = a.shape[0]
            batch_of[start:start + size] = position
            seg = in_range[start:start + size]
            if not bool(seg.all()):
                bad = idx[start:start + size][~seg]
                problems.append(f"{name}: batch {position} of {self._running()} has {bad.numel()} sample "
                                f"index(es) outside 0..{self.n_samples - 1} (e.g. {_few(bad)}; sample indices "
                                f"must lie in 0..{self.n_samples - 1}); that batch is dropped, the epoch's other "
                                "batches are kept")
                keep[start:start + size] = False
            start += size
        nonfinite = keep & ~torch.isfinite(v)
        k = int(nonfinite.sum())
        if k:
            samples = idx[nonfinite]
            problems.append(f"{name}: {k} non-finite value(s) (NaN or inf) in {self._running()}, sample(s) "
                            f"{_few(samples)} in batch(es) {_few(batch_of[nonfinite].unique())}; they are not "
                            "recorded (the epoch's other values are kept). A non-finite loss usually means "
                            "that training diverged")
        ok = keep & ~nonfinite
        return idx[ok], v[ok], problems

    def _flush(self, name: str) -> list[str]:
        """Add the queued batches of ``name`` to the running epoch's sums; returns the problems
        found (the offending batches or values are dropped, the rest is added)."""
        queue = self._pending.pop(name, [])
        if not queue:
            return []
        first = self._batches.get(name, 0) + 1
        self._batches[name] = first - 1 + len(queue)
        device = queue[0][1].device
        v = torch.cat([b.to(device) for _, b in queue]).to(torch.float32)
        idx = torch.cat([a.to(device) for a, _ in queue]).long()
        problems: list[str] = []
        if idx.numel():
            # one check per flush (every FLUSH_EVERY batches), the only host synchronisation before
            # end_epoch: the index range, and the sum's finiteness (a NaN or inf makes it non-finite;
            # an overflow of finite values only takes the slow path, which then finds nothing)
            lo, hi = torch.aminmax(idx)
            if not (lo.item() >= 0 and hi.item() < self.n_samples and math.isfinite(v.sum().item())):
                idx, v, problems = self._sift(name, queue, first, idx, v)
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
        sums.index_add_(0, idx, v)
        counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.int32))
        return problems

    def _flush_names(self, names: Iterable[str], prefix: str = "") -> None:
        """Flush every signal of ``names``; then raise one ValueError for all the problems found."""
        problems = [p for name in list(names) for p in self._flush(name)]
        if problems:
            raise ValueError(prefix + "; ".join(problems))

    def _flush_all(self, prefix: str = "") -> None:
        self._flush_names(list(self._pending), prefix)

    def end_epoch(self, epoch: float | None = None) -> float:
        """Close the running epoch (default: the previous epoch + 1, from 1) and store its rows;
        returns the epoch. A batch with a sample index outside 0..n-1 and a NaN or infinite value
        are refused here at the latest (batches are checked when they are added up, every
        FLUSH_EVERY batches): a ValueError says which, the offending batch or values are dropped,
        the epoch's other values kept, and the epoch stays open (call end_epoch again to close it).
        A finite value beyond the stored dtype's range is stored as its maximum, with a warning."""
        e = float(epoch) if epoch is not None else (self.epochs[-1] + 1.0 if self.epochs else 1.0)
        if not math.isfinite(e):
            raise ValueError(f"the epoch must be a finite number, got {epoch!r}")
        if self.epochs and e <= self.epochs[-1]:
            raise ValueError(f"epoch {e:g} does not follow the last recorded epoch {self.epochs[-1]:g}")
        j = len(self.epochs)
        self._flush_all(prefix=f"epoch {e:g} is not closed (call end_epoch() again to close it with the values "
                               "kept): ")
        fmax = float(np.finfo(self.dtype).max)
        saturated = []
        for name, (sums, counts) in self._buf.items():
            c = counts.cpu().numpy()
            s = sums.cpu().numpy()
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                row = np.where(c > 0, s / np.maximum(c, 1), np.nan).astype(np.float32)
            over = np.abs(row) > fmax  # NaN compares False; non-finite values were refused
            if over.any():
                saturated.append(f"{name}: {int(over.sum())} value(s), sample(s) {_few(np.flatnonzero(over))}")
                row = np.clip(row, -fmax, fmax)
            if self.store is not None:
                self.store.write_row(name, j, row)
            else:
                self._rows[name][j] = row.astype(self.dtype)
            self._has[name].add(j)
        if saturated:
            warnings.warn(f"epoch {e:g}: values beyond the {self.dtype.name} range (|value| > {fmax:g}) are stored "
                          f"as +-{fmax:g} ({'; '.join(saturated)}); they still rank highest. "
                          "Monitor(..., dtype='float32') keeps full precision", RuntimeWarning, stacklevel=2)
        self.epochs.append(e)
        self._buf = {}
        self._batches = {}
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
        ``torch.load(weights_only=True)`` take it). With ``path``, the rows stay in their files.
        The state is a copy: it does not change as the monitor records more."""
        self._flush_all()
        rows = {} if self.store is not None else {
            name: {j: torch.from_numpy(np.array(r, copy=True)) for j, r in got.items()}
            for name, got in self._rows.items()}
        return {"n_samples": self.n_samples, "dtype": self.dtype.name, "epochs": list(self.epochs),
                "el2n_epoch": self.el2n_epoch, "path": None if self.store is None else str(self.store.root),
                "has": {name: sorted(got) for name, got in self._has.items()}, "rows": rows,
                "running": {name: (s.detach().to("cpu", copy=True), c.detach().to("cpu", copy=True))
                            for name, (s, c) in self._buf.items()},
                "batches": dict(self._batches)}

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
        self._batches = {str(k): int(v) for k, v in state.get("batches", {}).items()}
        if self.store is not None:
            self.store.write_meta(self.epochs, [s for s in SIGNALS if self._has[s]])


def _few(values: Any, limit: int = 8) -> str:
    """The first ``limit`` of some indices, as a short list."""
    items = [int(x) for x in (values.tolist() if hasattr(values, "tolist") else values)]
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return "[" + ", ".join(map(str, items[:limit])) + more + "]"


def monitor(n_samples: int, **kwargs: Any) -> Monitor:
    """A :class:`Monitor` of ``n_samples`` training samples (``privdyn.monitor(len(train_set))``)."""
    return Monitor(n_samples, **kwargs)

