"""Leave-one-out reference statistics, vectorised over targets, samples and queries.

Every function takes a signal ``x`` of shape ``[M, N, Q]`` (model, sample, query) and a boolean
``side`` mask ``[M, N]`` (``side[m, i]``: model m belongs to the reference set of sample i, e.g.
the models that trained on i) and returns, for every target m, the statistic over the models
m' != m with ``side[m', i]``. Totals over all models are formed once and the target's own term is
removed, so no function loops over targets. ``side=None`` means every model.
"""

from __future__ import annotations

import numpy as np

from privdyn.errors import PrivdynError


def _side(side: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    return np.ones(shape, dtype=bool) if side is None else np.asarray(side, dtype=bool)


def loo_counts(side: np.ndarray) -> np.ndarray:
    """Number of references on ``side`` for every target and sample, ``[M, N]``."""
    side = np.asarray(side, dtype=bool)
    return side.sum(axis=0, keepdims=True) - side


def require_references(n: np.ndarray, what: str) -> None:
    """Raise a clear error when some target has no reference of the kind it needs."""
    if (n < 1).any():
        m, i = np.argwhere(n < 1)[0]
        raise PrivdynError(
            f"target model {m} has no {what} reference for sample {i} (M={n.shape[0]} models). "
            "Each target needs at least one reference of that kind on every sample: train more models "
            "(training.n_models >= 4 with the balanced design) or choose an attack that needs fewer."
        )


def loo_moments(x: np.ndarray, side: np.ndarray | None, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out mean and variance (ddof = 0) over the references on ``side``.

    Data are centred on the all-model mean first, so the totals-minus-own-term sums stay
    accurate (absolute error about eps * max squared deviation).
    """
    x = np.asarray(x, dtype=np.float64)
    w = _side(side, x.shape[:2])
    n = loo_counts(w)
    require_references(n, what)
    wq = w[..., None].astype(np.float64)
    centre = x.mean(axis=0, keepdims=True)
    c = x - centre
    cw = c * wq
    s = cw.sum(axis=0, keepdims=True) - cw
    ss = (c * cw).sum(axis=0, keepdims=True) - c * cw
    nq = n[..., None].astype(np.float64)
    mu = s / nq
    var = np.maximum(ss / nq - mu * mu, 0.0)
    return mu + centre, var


def loo_median(x: np.ndarray, side: np.ndarray | None, what: str = "") -> np.ndarray:
    """Leave-one-out median (numpy's: the mean of the two middle values for an even count).

    The values on ``side`` are sorted once per (sample, query); for a target inside the set, its
    own rank r is skipped by shifting every order-statistic index j >= r up by one.
    """
    x = np.asarray(x, dtype=np.float64)
    M = x.shape[0]
    w = _side(side, x.shape[:2])
    n = loo_counts(w)
    require_references(n, what)
    key = np.where(w[..., None], x, np.inf)
    order = np.argsort(key, axis=0, kind="stable")
    ranked = np.take_along_axis(key, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(M)[:, None, None], order.shape), axis=0)
    nq = np.broadcast_to(n[..., None], x.shape)
    lo, hi = (nq - 1) // 2, nq // 2
    inside = np.broadcast_to(w[..., None], x.shape)
    lo = lo + (inside & (lo >= rank))
    hi = hi + (inside & (hi >= rank))
    return 0.5 * (np.take_along_axis(ranked, lo, axis=0) + np.take_along_axis(ranked, hi, axis=0))


def loo_logmeanexp(x: np.ndarray, side: np.ndarray | None, what: str = "") -> np.ndarray:
    """log of the leave-one-out mean of exp(x) over the references on ``side``, computed stably.

    Shifted by the largest value among all models on ``side``: for any target other than that
    maximiser the remaining sum is at least 1, so subtracting the target's own term loses at most
    a relative eps * M. The maximiser's own sum is formed directly, shifted by the second largest.
    """
    x = np.asarray(x, dtype=np.float64)
    M = x.shape[0]
    w = _side(side, x.shape[:2])
    n = loo_counts(w)
    require_references(n, what)
    wq = np.broadcast_to(w[..., None], x.shape)
    xm = np.where(wq, x, -np.inf)
    top = np.argmax(xm, axis=0)
    is_top = np.arange(M)[:, None, None] == top[None]
    c1 = np.take_along_axis(xm, top[None], axis=0)
    x2 = np.where(is_top, -np.inf, xm)
    c2 = x2.max(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        e1 = np.where(wq, np.exp(xm - c1), 0.0)
        s_rest = e1.sum(axis=0, keepdims=True) - e1
        e2 = np.where(np.isfinite(x2), np.exp(x2 - np.where(np.isfinite(c2), c2, 0.0)), 0.0)
        s_top = e2.sum(axis=0, keepdims=True)
        lse = np.where(is_top, c2 + np.log(s_top), c1 + np.log(s_rest))
    return lse - np.log(n[..., None].astype(np.float64))
