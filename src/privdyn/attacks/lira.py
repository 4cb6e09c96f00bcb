"""LiRA (Carlini et al. 2022), online and offline, with balanced epoch-matched references.

Per target m, sample i and query q, Gaussians are fitted to the signal phi of the IN references
(the target's reference models that trained on i, see :mod:`privdyn.attacks.references`) and of
the OUT references. Standard deviations use ddof = 0
and are floored at ``std_floor``; the centre is the mean (or, as an option, the median).

One kernel, :func:`lira_scores`, computes every variant. It reads phi once for all the variants
it is asked for: block by block over samples (sized to the CPU cache, :data:`LIRA_BLOCK`) it forms
the IN and OUT moments once (under the ``pair`` rule once per complementary pair, whose two
models share their references), then each variant's score from the same residuals
(x - mu) and floored variances. The registered attacks call it with their one variant, so a
single attack and the fused pass (:func:`privdyn.attacks.base.run_fused`) give identical scores:
no result depends on which other variants are computed, nor on how the samples are blocked, except
``lira_online_fixed``'s pooled variances, which are sums over blocks and so move with the block
size by rounding (1e-12 relative; the block size is the constant :data:`LIRA_BLOCK`).

Precision. phi stays in its stored type (float32 in a run) until one block is widened to float64
in the cache: widening is exact, so this loses nothing and reads half the bytes of a float64
copy. Every operation after it is float64. In float32 the results would move far beyond what
the tests hold them to (rtol 1e-9 against a float64 loop, and the golden summary to the last
digit of the float32-stored scores):

- variances are differences of sums of squares (totals minus the excluded terms, then minus the
  squared mean): float32's relative rounding of 6e-8 times (spread / std)^2 is already 1e-6 at
  a spread of 4 std, and the per-sample variance enters every score through 1/var;
- log Phi(t) of tiny probabilities (t = (x - mu)/s far below 0, log Phi ~ -t^2/2) amplifies the
  input's relative error by 2, and a float32 t of -30 is off by about 1e-4 in the log;
- the online score is the difference of two log densities of similar size, which cancels.
``tests/test_lira_fused.py`` checks float32 signals against the float64 computation on the same
(widened) values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np
from pydantic import Field
from scipy.special import log_ndtr

from privdyn.attacks.base import Attack, AttackOptionsBase, CheckpointData, register
from privdyn.attacks.references import (
    References,
    pair_counts,
    ref_counts,
    ref_median,
    require_references,
    side_moments,
    stats_rows,
)
from privdyn.errors import DataError

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)

#: The four variants, in registration order.
LIRA_ATTACKS: tuple[str, ...] = ("lira_online", "lira_online_fixed", "lira_offline_cdf", "lira_offline_pdf")
_ONLINE = ("lira_online", "lira_online_fixed")

#: Elements (models x samples x queries) per block of :func:`lira_scores`: a block's dozen float64
#: temporaries (512 KB each) stay in the L3 cache (8 MB on the 2-core VM) and the per-block Python
#: overhead is a few percent; within 2% of the fastest of 2^13..2^17 there (score_speed.py --blocks).
LIRA_BLOCK = 1 << 16


class LiraOptions(AttackOptionsBase):
    """Options of every LiRA variant."""

    std_floor: float = Field(1e-6, gt=0, description="lower bound on every standard deviation")
    center: Literal["mean", "median"] = Field(
        "mean", description="centre of each Gaussian: the references' mean, or their median "
                            "(the reference code's choice); the spread is the ddof=0 std either way")


class _Block:
    """One block of samples: the shared moments and, on demand, the derived per-target terms.

    Every derived quantity is cached by what it depends on (side, centre, floor), so variants
    with the same options share it and a variant's arithmetic never depends on the others.
    Per-pair arrays are ``[R, 1, n, Q]``, per-target ones ``[R, G, n, Q]`` (G = 2 under ``pair``).
    """

    def __init__(self, x: np.ndarray, z: np.ndarray, refs: References, online: bool) -> None:
        self.x, self.z, self.refs = x, z, refs
        M, n, Q = x.shape
        self.g = stats_rows(refs)
        self.xv = x.reshape(M // self.g, self.g, n, Q)
        self.moments = side_moments(x, z, refs, ("in", "out") if online else ("out",))
        self._cache: dict[tuple[object, ...], np.ndarray] = {}

    def _get(self, key: tuple[object, ...], make: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def var(self, side: str) -> np.ndarray:
        """Per-sample variance of the side's references (unfloored)."""
        return self.moments[side][1]

    def resid(self, side: str, center: str) -> np.ndarray:
        """The residual x - mu, per target."""
        def make() -> np.ndarray:
            if center == "mean":
                mu = self.moments[side][0]
            else:
                w = self.z if side == "in" else ~self.z
                mu = ref_median(self.x, w, self.refs).reshape(self.xv.shape)
            return self.xv - mu
        return self._get(("resid", side, center), make)

    def sq(self, side: str, center: str) -> np.ndarray:
        """(x - mu)^2, per target."""
        def make() -> np.ndarray:
            r = self.resid(side, center)
            return r * r
        return self._get(("sq", side, center), make)

    def vf(self, side: str, floor: float) -> np.ndarray:
        """The floored variance max(var, floor^2) = max(std, floor)^2, per pair."""
        return self._get(("vf", side, floor), lambda: np.maximum(self.var(side), floor * floor))

    def half_sq(self, side: str, center: str, floor: float) -> np.ndarray:
        """((x - mu) / s)^2 / 2, per target."""
        return self._get(("hsq", side, center, floor),
                         lambda: self.sq(side, center) * (0.5 / self.vf(side, floor)))

    def log_ratio(self, floor: float) -> np.ndarray:
        """log(s_out / s_in) = log(vf_out / vf_in) / 2, per pair."""
        return self._get(("lr", floor), lambda: 0.5 * np.log(self.vf("out", floor) / self.vf("in", floor)))

    def dest(self, out: np.ndarray) -> np.ndarray:
        """Where a per-target result goes: with one query, ``out`` ``[M, n]`` itself (viewed per
        target), so no copy is made; else a temporary that :meth:`store` sums over queries."""
        R, G, n, Q = self.xv.shape
        if Q > 1:
            return np.empty(self.xv.shape)
        view = out.view()
        view.shape = (R, G, n, 1)  # a view or an error, never a silent copy
        return view

    def store(self, a: np.ndarray, out: np.ndarray) -> None:
        """Put a result made in ``dest(out)`` into ``out``, summed over queries."""
        if a.shape[-1] > 1:
            out[...] = _sum_q(a.reshape(self.x.shape))


def _sum_q(a: np.ndarray) -> np.ndarray:
    """Sum ``[M, n, Q]`` over queries, one query after another (the same order for every shape)."""
    out = a[..., 0].copy()
    for q in range(1, a.shape[-1]):
        out += a[..., q]
    return out


def _online(b: _Block, o: LiraOptions, out: np.ndarray) -> None:
    s = np.add(b.half_sq("out", o.center, o.std_floor), b.log_ratio(o.std_floor), out=b.dest(out))
    s -= b.half_sq("in", o.center, o.std_floor)
    b.store(s, out)


def _offline_cdf(b: _Block, o: LiraOptions, out: np.ndarray) -> None:
    t = np.multiply(b.resid("out", o.center), 1.0 / np.sqrt(b.vf("out", o.std_floor)), out=b.dest(out))
    b.store(log_ndtr(t, out=t), out)


def _offline_pdf(b: _Block, o: LiraOptions, out: np.ndarray) -> None:
    c = _LOG_SQRT_2PI + 0.5 * np.log(b.vf("out", o.std_floor))
    b.store(np.add(b.half_sq("out", o.center, o.std_floor), c, out=b.dest(out)), out)


_PER_SAMPLE = {"lira_online": _online, "lira_offline_cdf": _offline_cdf, "lira_offline_pdf": _offline_pdf}


def _check_references(data: CheckpointData, online: bool) -> None:
    z, refs = data.membership, data.refs
    if online and data.n_models < 4:
        raise DataError(f"online LiRA needs at least 4 models (an IN and an OUT reference for every "
                        f"target and sample); got M={data.n_models} models.")
    k = pair_counts(refs, data.n_models)
    if k is not None and k >= 1:
        return  # the pair design: every target has M/2 - 1 references on each side
    for side, what in (((z, "IN"),) if online else ()) + ((~z, "OUT"),):
        require_references(ref_counts(side, refs), what, refs)


def _phi(data: CheckpointData) -> np.ndarray:
    """The signal phi ``[M, N, Q]`` in its stored float type (widened block by block), checked to be finite."""
    phi = np.asarray(data.pool["phi"]) if "phi" in data.pool else None
    if phi is None or not np.isfinite(phi).all():
        data.check_finite(("phi",), ())  # raises with the first bad value
    assert phi is not None
    return phi if phi.dtype in (np.float32, np.float64) else phi.astype(np.float64)


def lira_scores(data: CheckpointData, options: Mapping[str, LiraOptions]) -> dict[str, np.ndarray]:
    """The scores ``[M, N]`` of the LiRA variants named in ``options`` (name -> its options), from
    one pass over phi that forms the IN/OUT moments once for all of them.

    Blocks of :data:`LIRA_BLOCK` elements are scored one after another; ``lira_online_fixed``,
    whose variances pool every sample, keeps its squared residuals ``[M, N, Q]`` (float64) until
    the pooled variances are complete, so phi is still read only once.
    """
    unknown = sorted(set(options) - set(LIRA_ATTACKS))
    if unknown:
        raise ValueError(f"not LiRA variants: {unknown}; choose from {LIRA_ATTACKS}")
    if not options:
        return {}
    online = any(v in _ONLINE for v in options)
    _check_references(data, online)
    phi = _phi(data)
    M, N, Q = phi.shape
    step = max(1, LIRA_BLOCK // (M * Q))
    out = {v: np.empty((M, N)) for v in options}
    fixed = options.get("lira_online_fixed")
    if fixed is not None:
        sq_all = {s: np.empty((M, N, Q)) for s in ("in", "out")}
        pooled: dict[str, np.ndarray] = {}
    for start in range(0, N, step):
        blk = slice(start, min(N, start + step))
        x = np.ascontiguousarray(phi[:, blk], dtype=np.float64)
        b = _Block(x, data.membership[:, blk], data.refs.samples(blk), online)
        for v, o in options.items():
            if v in _PER_SAMPLE:
                _PER_SAMPLE[v](b, o, out[v][:, blk])
        if fixed is not None:
            for s in ("in", "out"):
                sq_all[s][:, blk] = b.sq(s, fixed.center).reshape(M, -1, Q)
                part = b.var(s).sum(axis=2)  # [R, 1, Q]
                pooled[s] = part if s not in pooled else pooled[s] + part
    if fixed is not None:
        out["lira_online_fixed"] = _fixed(sq_all, pooled, N, fixed, step)
    return out


def _fixed(sq: dict[str, np.ndarray], pooled: dict[str, np.ndarray], n: int, o: LiraOptions,
           step: int) -> np.ndarray:
    """``lira_online_fixed`` from the stored squared residuals and the pooled variance sums."""
    M, N, Q = sq["in"].shape
    h = {}
    vf = {}
    for s in ("in", "out"):
        vf[s] = np.maximum(pooled[s] / n, o.std_floor * o.std_floor)[:, :, None]  # [R, 1, 1, Q]
        h[s] = 0.5 / vf[s]
    lr = 0.5 * np.log(vf["out"] / vf["in"])
    g = M // pooled["in"].shape[0]
    scores = np.empty((M, N))
    for start in range(0, N, step):
        blk = slice(start, min(N, start + step))
        sq_in, sq_out = (sq[s][:, blk].reshape(M // g, g, -1, Q) for s in ("in", "out"))
        s_ = sq_out * h["out"]
        s_ += lr
        s_ -= sq_in * h["in"]
        scores[:, blk] = _sum_q(s_.reshape(M, -1, Q))
    return scores


def lira_online(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """S = sum_q [log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)], per-sample variances."""
    return lira_scores(data, {"lira_online": opts})["lira_online"]


def lira_online_fixed(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """Online LiRA with one variance per side, target and query: the pooled within-sample variance.

    The IN variance pools the IN spreads and the OUT variance the OUT spreads (the reference
    code's fixed-variance branch uses the IN spread for both; we do not).
    """
    return lira_scores(data, {"lira_online_fixed": opts})["lira_online_fixed"]


def lira_offline_cdf(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """One-sided offline LiRA: s = sum_q log Phi((phi - mu_out) / s_out), OUT references only."""
    return lira_scores(data, {"lira_offline_cdf": opts})["lira_offline_cdf"]


def lira_offline_pdf(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """Two-sided offline LiRA (the reference code's): s = -sum_q log N(phi; mu_out, s_out^2)."""
    return lira_scores(data, {"lira_offline_pdf": opts})["lira_offline_pdf"]


_PAPER = "Carlini et al., Membership Inference Attacks From First Principles, IEEE S&P 2022"
for _fn, _desc, _per_sample in (
    (lira_online, "LiRA online, per-sample IN and OUT Gaussians", True),
    (lira_online_fixed, "LiRA online, one pooled variance per side and query", False),
    (lira_offline_cdf, "LiRA offline, one-sided Gaussian CDF of the OUT references", True),
    (lira_offline_pdf, "LiRA offline, two-sided negative log density (reference code's variant)", True),
):
    register(Attack(_fn.__name__, _fn, LiraOptions, ("phi",), description=_desc, source=_PAPER,
                    per_sample=_per_sample, fused=lira_scores))
