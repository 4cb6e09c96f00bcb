"""Early-warning proxies: per-sample risk scores from one model's own training signals.

A monitored model sees only its own signals on its own training samples, up to the current
epoch: no reference models (DESIGN.md, "Early warning"). A proxy turns those traces into one
score per sample, **higher = more at risk** of membership inference, so that the top-k samples
by a proxy are the ones to worry about first. Every proxy here is vectorised over the time axis
(axis 0) and works on any middle axes (several models at once): ``[t, ..., N] -> [..., N]``.

Missing entries (NaN, e.g. a sample the monitor did not see in an epoch) are skipped: each
proxy uses the finite entries of a sample's trace, and a sample with too few of them scores
NaN, which :func:`top_k` and the validation rank below every finite score.

Built in (:data:`PROXIES`): ``lt_iqr``, ``loss_mean``, ``loss_slope``, ``margin_mean``,
``margin_slope``, ``forgetting_events``, ``early_el2n``. Users register their own::

    PROXIES.register("loss_max", Proxy(lambda tr: np.nanmax(tr.loss, axis=0), needs=("loss",),
                                       direction="a high worst-case loss marks a hard sample"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from privdyn.analysis.quantiles import sorted_quantile
from privdyn.registry import Registry

#: The signal fields of :class:`Traces` a proxy may need.
SIGNALS = ("loss", "phi", "correct", "el2n")


@dataclass(frozen=True)
class Traces:
    """One or several models' own signals on the samples, time first: arrays ``[t, ..., N]``.

    ``epochs`` ``[t]`` are the checkpoint epochs seen so far (increasing); ``loss`` is required,
    ``phi`` (the LiRA margin), ``correct`` and ``el2n`` are optional. Every given signal has the
    shape of ``loss``.
    """

    epochs: np.ndarray            # [t] checkpoint epochs seen so far
    loss: np.ndarray              # [t, ..., N]
    phi: np.ndarray | None = None
    correct: np.ndarray | None = None
    el2n: np.ndarray | None = None

    def __post_init__(self) -> None:
        epochs = np.asarray(self.epochs, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "epochs", epochs)
        loss = np.asarray(self.loss)
        object.__setattr__(self, "loss", loss)
        if loss.ndim < 2 or loss.shape[0] != len(epochs):
            raise ValueError(f"loss must be [t, ..., N] with t = len(epochs) = {len(epochs)}, got shape {loss.shape}")
        if len(epochs) > 1 and (np.diff(epochs) <= 0).any():
            raise ValueError(f"epochs must increase, got {epochs.tolist()}")
        for name in SIGNALS[1:]:
            v = getattr(self, name)
            if v is None:
                continue
            v = np.asarray(v)
            if v.shape != loss.shape:
                raise ValueError(f"{name} has shape {v.shape}, loss has {loss.shape}: give every signal as [t, ..., N]")
            object.__setattr__(self, name, v)

    @property
    def n_epochs(self) -> int:
        """t, the number of checkpoints in the traces."""
        return len(self.epochs)

    def signal(self, name: str) -> np.ndarray:
        """The signal ``name`` as float64 (correctness as 0/1); an error when it was not given."""
        v = getattr(self, name, None) if name in SIGNALS else None
        if v is None:
            raise ValueError(f"these traces have no {name!r} signal (have: {', '.join(self.available())})")
        return np.asarray(v, dtype=np.float64)

    def available(self) -> tuple[str, ...]:
        """The names of the signals given."""
        return tuple(n for n in SIGNALS if getattr(self, n) is not None)

    def head(self, n: int) -> Traces:
        """The first ``n`` checkpoints (what a monitor had seen at the n-th checkpoint)."""
        if not 1 <= n <= self.n_epochs:
            raise ValueError(f"head({n}): the traces hold {self.n_epochs} checkpoints")
        return self._rows(slice(0, n))

    def since(self, epoch: float | None) -> Traces:
        """Only the checkpoints at or after ``epoch`` (None: all); at least the last one is kept."""
        if epoch is None:
            return self
        first = min(int(np.searchsorted(self.epochs, epoch, side="left")), self.n_epochs - 1)
        return self if first == 0 else self._rows(slice(first, None))

    def _rows(self, rows: slice) -> Traces:
        def cut(v: np.ndarray | None) -> np.ndarray | None:
            return None if v is None else v[rows]

        return Traces(self.epochs[rows], self.loss[rows], cut(self.phi), cut(self.correct), cut(self.el2n))


@dataclass(frozen=True)
class Proxy:
    """One registered proxy: ``score(traces, **opts) -> [..., N]`` (higher = more at risk), the
    signals it ``needs`` from :class:`Traces`, and in ``direction`` why a higher score is riskier.

    ``curve(traces, **opts) -> [t, ..., N]``, optional, gives the score after every prefix of the
    traces at once (row j = ``score(traces.head(j + 1))``); without it :func:`proxy_curve` calls
    ``score`` once per prefix.
    """

    score: Callable[..., np.ndarray]
    needs: tuple[str, ...] = ("loss",)
    direction: str = ""
    curve: Callable[..., np.ndarray] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.needs) - set(SIGNALS)
        if unknown:
            raise ValueError(f"a proxy can need only {', '.join(SIGNALS)}; got {', '.join(sorted(unknown))}")


#: Every proxy by name; :meth:`~privdyn.registry.Registry.register` refuses a taken name unless
#: ``replace=True``. Plugins may register through the entry-point group ``privdyn.proxies``.
PROXIES: Registry[Proxy] = Registry("proxy", "privdyn.proxies")


def proxy_scores(name: str, traces: Traces, **opts: Any) -> np.ndarray:
    """The proxy ``name`` on ``traces``: float64 ``[..., N]``, higher = more at risk.

    Raises a ValueError naming the signal when the traces lack one the proxy needs.
    """
    proxy = PROXIES[name]
    missing = [s for s in proxy.needs if getattr(traces, s) is None]
    if missing:
        raise ValueError(f"proxy {name!r} needs the {', '.join(missing)} signal(s); these traces have "
                         f"{', '.join(traces.available())}")
    out = np.asarray(proxy.score(traces, **opts), dtype=np.float64)
    if out.shape != traces.loss.shape[1:]:
        raise ValueError(f"proxy {name!r} returned shape {out.shape}, expected {traces.loss.shape[1:]}")
    return out


def proxy_curve(name: str, traces: Traces, **opts: Any) -> np.ndarray:
    """The proxy ``name`` after every prefix of ``traces``: float64 ``[t, ..., N]``, row j being
    :func:`proxy_scores` on ``traces.head(j + 1)`` (what a monitor would have ranked by then)."""
    proxy = PROXIES[name]
    if proxy.curve is None:
        return np.stack([proxy_scores(name, traces.head(j + 1), **opts) for j in range(traces.n_epochs)])
    proxy_scores(name, traces.head(1), **opts)  # the same checks of signals and shape
    out = np.asarray(proxy.curve(traces, **opts), dtype=np.float64)
    if out.shape != traces.loss.shape:
        raise ValueError(f"proxy {name!r}'s curve returned shape {out.shape}, expected {traces.loss.shape}")
    return out


def available_proxies(traces: Traces) -> list[str]:
    """The registered proxies whose needed signals ``traces`` has, in registration order."""
    have = set(traces.available())
    return [n for n, p in PROXIES.items() if set(p.needs) <= have]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores along the last axis, highest first; NaN ranks last and
    ties keep the lower index first (a deterministic order for display; the validation's
    metrics do not depend on it)."""
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    order = np.argsort(-s, axis=-1, kind="stable")
    return order[..., :k]


# --- vectorised, NaN-aware reductions along the time axis -------------------------------------

def nan_quantile(x: np.ndarray, q: float) -> np.ndarray:
    """Numpy's linear quantile along axis 0 over the finite entries (NaN where none), without
    ``np.nanquantile``'s per-column Python loop: one sort (NaN sorts last) and one gather."""
    s = np.sort(np.asarray(x, dtype=np.float64), axis=0)
    return sorted_quantile(s, np.isfinite(s).sum(axis=0), q, axis=0)


def nan_mean(x: np.ndarray) -> np.ndarray:
    """Mean along axis 0 over the finite entries; NaN where there are none (no warning)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=0)
    total = np.where(ok, x, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def nan_slope(epochs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``y`` ``[t, ...]`` against ``epochs`` ``[t]`` (per epoch), over the
    finite entries; NaN where fewer than two distinct epochs are finite."""
    ok = np.isfinite(y)
    x = np.broadcast_to(np.asarray(epochs, dtype=np.float64).reshape((-1,) + (1,) * (y.ndim - 1)), y.shape)
    w = ok.astype(np.float64)
    n = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * x).sum(axis=0) / n
        ym = np.where(ok, y, 0.0).sum(axis=0) / n
        dx = np.where(ok, x - xm, 0.0)
        sxx = (dx * dx).sum(axis=0)
        sxy = (dx * np.where(ok, y - ym, 0.0)).sum(axis=0)
        return np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), np.nan)


def cumsum0(y: np.ndarray) -> np.ndarray:
    """``np.cumsum(y, axis=0)`` one time step at a time: each step adds contiguous rows, several
    times faster than numpy's strided accumulation along the first axis of a C-ordered array."""
    out = np.empty(y.shape, dtype=np.result_type(y.dtype, np.float64))
    if len(y):
        out[0] = y[0]
        for j in range(1, len(y)):
            np.add(out[j - 1], y[j], out=out[j])
    return out


def _prefix_sums(epochs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative (over time) count, sum of x, y, x^2 and xy over the finite entries, x being the
    epochs centred on their mean (for conditioning). Without missing entries the count and the
    sums of x are the same for every sample: ``[t, 1, ...]``, broadcasting."""
    e = np.asarray(epochs, dtype=np.float64)
    xc = (e - e.mean()).reshape((-1,) + (1,) * (y.ndim - 1))
    ok = np.isfinite(y)
    if ok.all():
        n = np.cumsum(np.ones_like(xc), axis=0)
        return n, np.cumsum(xc, axis=0), cumsum0(y), np.cumsum(xc * xc, axis=0), cumsum0(xc * y)
    x = np.broadcast_to(xc, y.shape)
    w = ok.astype(np.float64)
    y0 = np.where(ok, y, 0.0)
    return tuple(cumsum0(v) for v in (w, w * x, y0, w * x * x, x * y0))


def _slope_curve(epochs: np.ndarray, y: np.ndarray) -> np.ndarray:
    n, sx, sy, sxx, sxy = _prefix_sums(epochs, np.asarray(y, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        den = n * sxx - sx * sx
        ok = den > 1e-12 * np.maximum(n * sxx, 1e-300)
        return np.broadcast_to(np.where(ok, (n * sxy - sx * sy) / np.where(ok, den, 1.0), np.nan), y.shape)


def _mean_curve(y: np.ndarray) -> np.ndarray:
    ok = np.isfinite(y)
    if ok.all():
        n = np.arange(1, len(y) + 1, dtype=np.float64).reshape((-1,) + (1,) * (y.ndim - 1))
        return cumsum0(y) / n
    n = cumsum0(ok)
    total = cumsum0(np.where(ok, y, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _iqr_curve(loss: np.ndarray, q: tuple[float, float]) -> np.ndarray:
    """Q3 - Q1 of every prefix: the samples as contiguous rows, one sort of each prefix."""
    t = loss.shape[0]
    rows = np.ascontiguousarray(loss.reshape(t, -1).T)  # [samples, t]
    out = np.empty((t, rows.shape[0]))
    for j in range(t):
        s = np.sort(rows[:, :j + 1], axis=1)
        n = np.isfinite(s).sum(axis=1)
        out[j] = sorted_quantile(s, n, q[1], axis=1) - sorted_quantile(s, n, q[0], axis=1)  # NaN where n = 0
    return out.reshape(loss.shape)


def _forgetting_curve(correct: np.ndarray) -> np.ndarray:
    out = np.zeros(correct.shape)
    if correct.shape[0] > 1:
        prev, nxt = correct[:-1], correct[1:]
        ev = np.isfinite(prev) & np.isfinite(nxt) & (prev > 0.5) & (nxt <= 0.5)
        out[1:] = cumsum0(ev)
    return out


# --- the built-in proxies ----------------------------------------------------------------------

def lt_iqr(traces: Traces, since: float | None = None, q: tuple[float, float] = (0.25, 0.75)) -> np.ndarray:
    """LT-IQR (Pollock et al. 2024): the interquartile range Q3 - Q1 of the sample's loss trace.

    Direction: a wide loss range marks a sample whose loss stayed high for a long time and then
    fell (an "easy-to-fit outlier" the model memorised late, the paper's most vulnerable group);
    typical samples fall fast and stay low (a narrow range). Higher = riskier. The paper takes the
    loss of the sample at every training epoch; here every checkpoint in ``traces`` at or after
    ``since`` (None: all of them), linear quantiles as numpy's default.
    """
    loss = traces.since(since).signal("loss")
    return nan_quantile(loss, q[1]) - nan_quantile(loss, q[0])


def loss_mean(traces: Traces, since: float | None = None) -> np.ndarray:
    """The mean of the sample's loss trace.

    Direction: a high average training loss marks a hard or atypical sample, which the model can
    only fit by memorising it; higher = riskier (the loss baseline of Pollock et al.).
    """
    return nan_mean(traces.since(since).signal("loss"))


def loss_slope(traces: Traces, since: float | None = None) -> np.ndarray:
    """Minus the least-squares slope of the loss trace against the epoch: how fast the loss falls.

    Direction: a sample whose loss keeps falling is still being fitted (memorised) while the
    typical ones are already at rest near zero; a steeper fall = riskier.
    """
    tr = traces.since(since)
    return -nan_slope(tr.epochs, tr.signal("loss"))


def margin_mean(traces: Traces, since: float | None = None) -> np.ndarray:
    """Minus the mean of the sample's margin (phi, the LiRA logit of the true class) trace.

    Direction: a sample that spends training at a low or negative margin is fitted late and by
    itself; a low average margin = riskier. Unlike the loss, phi does not saturate at zero for
    fitted samples, so it also ranks the fitted ones by how confidently they are fitted.

    This is the margin proxy to use, rather than :func:`margin_slope`: on the quickstart (16 MLPs
    on MNIST-1D, each model ranking its own members at the end of training) -mean phi finds the
    finally-high set V with AUC 0.80 and LiRA's per-model flags with AUC 0.70, the slope of phi
    with 0.38 and 0.50.
    """
    return -nan_mean(traces.since(since).signal("phi"))


def margin_slope(traces: Traces, since: float | None = None) -> np.ndarray:
    """The least-squares slope of the margin (phi) trace against the epoch: how fast it grows.

    Direction: the margin of a sample the model is memorising climbs from negative to positive,
    a larger rise than the drift of already-fitted samples; a steeper climb = riskier. Measured,
    this does not hold (see :func:`margin_mean`): an easy sample's margin keeps growing as the
    logits scale up, so a steep climb marks confidence on easy samples as much as memorisation.
    It stays registered so that every run shows the comparison.
    """
    tr = traces.since(since)
    return nan_slope(tr.epochs, tr.signal("phi"))


def forgetting_events(traces: Traces) -> np.ndarray:
    """The number of correct -> incorrect transitions between consecutive checkpoints (Toneva et
    al. 2019), over consecutive pairs where both are observed.

    Direction: a sample that is learned and forgotten again sits near the decision boundary, is
    atypical and is held in place by its own gradient; more forgetting = riskier.
    """
    c = traces.signal("correct")
    if c.shape[0] < 2:
        return np.zeros(c.shape[1:])
    prev, nxt = c[:-1], c[1:]
    ok = np.isfinite(prev) & np.isfinite(nxt)
    return (ok & (prev > 0.5) & (nxt <= 0.5)).sum(axis=0).astype(np.float64)


def early_el2n(traces: Traces, epoch: float | None = None) -> np.ndarray:
    """EL2N (||softmax - onehot||_2, Paul et al. 2021) at the last checkpoint at or before
    ``epoch`` (None: the latest checkpoint), i.e. early in training when ``epoch`` is early.

    Direction: a sample the model still gets badly wrong early in training is hard or atypical;
    a high early EL2N = riskier. A sample without a finite value there scores NaN.
    """
    el2n = traces.signal("el2n")
    k = traces.n_epochs - 1 if epoch is None else int(np.searchsorted(traces.epochs, epoch, side="right")) - 1
    return el2n[max(k, 0)].copy()


def _by_prefix(score: Callable[..., np.ndarray], traces: Traces, **opts: Any) -> np.ndarray:
    return np.stack([score(traces.head(j + 1), **opts) for j in range(traces.n_epochs)])


def _lt_iqr_curve(traces: Traces, since: float | None = None, q: tuple[float, float] = (0.25, 0.75)) -> np.ndarray:
    if since is not None:
        return _by_prefix(lt_iqr, traces, since=since, q=q)
    loss = np.asarray(traces.loss)
    return _iqr_curve(loss if loss.dtype.kind == "f" else loss.astype(np.float64), q)  # float32 sorts faster


def _loss_mean_curve(traces: Traces, since: float | None = None) -> np.ndarray:
    return _by_prefix(loss_mean, traces, since=since) if since is not None else _mean_curve(traces.signal("loss"))


def _loss_slope_curve(traces: Traces, since: float | None = None) -> np.ndarray:
    if since is not None:
        return _by_prefix(loss_slope, traces, since=since)
    return -_slope_curve(traces.epochs, traces.signal("loss"))


def _margin_mean_curve(traces: Traces, since: float | None = None) -> np.ndarray:
    return _by_prefix(margin_mean, traces, since=since) if since is not None else -_mean_curve(traces.signal("phi"))


def _margin_slope_curve(traces: Traces, since: float | None = None) -> np.ndarray:
    if since is not None:
        return _by_prefix(margin_slope, traces, since=since)
    return _slope_curve(traces.epochs, traces.signal("phi"))


def _forgetting_events_curve(traces: Traces) -> np.ndarray:
    return _forgetting_curve(traces.signal("correct"))


def _early_el2n_curve(traces: Traces, epoch: float | None = None) -> np.ndarray:
    el2n = traces.signal("el2n")
    rows = np.arange(traces.n_epochs)
    if epoch is not None:
        rows = np.minimum(rows, max(int(np.searchsorted(traces.epochs, epoch, side="right")) - 1, 0))
    return el2n[rows]


for _name, _proxy in {
    "lt_iqr": Proxy(lt_iqr, ("loss",), "a wide loss range: high for long, then fitted (memorised)", _lt_iqr_curve),
    "loss_mean": Proxy(loss_mean, ("loss",), "a high average loss: a hard or atypical sample", _loss_mean_curve),
    "loss_slope": Proxy(loss_slope, ("loss",), "a loss still falling fast: being fitted now", _loss_slope_curve),
    "margin_mean": Proxy(margin_mean, ("phi",), "a low average margin: fitted late", _margin_mean_curve),
    "margin_slope": Proxy(margin_slope, ("phi",), "a margin climbing fast: being memorised", _margin_slope_curve),
    "forgetting_events": Proxy(forgetting_events, ("correct",), "learned and forgotten: near the boundary",
                               _forgetting_events_curve),
    "early_el2n": Proxy(early_el2n, ("el2n",), "far from its label early: hard or atypical", _early_el2n_curve),
}.items():
    PROXIES.register(_name, _proxy)
