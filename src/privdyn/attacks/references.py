"""Which models are a target's references (DESIGN.md "References"), and statistics over them.

Target model m is scored on sample i against the other models at the same checkpoint. Leave-one-
out is biased: an IN target then has M/2-1 IN and M/2 OUT references, an OUT target the other
way round, and a Gaussian fitted to fewer points predicts worse, so members score lower by
construction. The reference rule fixes the counts:

- ``pair`` (default): every model except the target and its complementary partner (model
  2j <-> 2j+1 of the pair design): exactly M/2-1 IN and M/2-1 OUT references for every sample.
  A membership without complementary pairs falls back to ``balanced``.
- ``balanced``: for target m on sample i, both sides keep c = the smaller of the other models'
  IN and OUT counts; the side that has more drops the models that come first in the sample's
  seeded permutation (on a balanced matrix without pairs: the larger side drops one). c is
  counted over the other models, and the permutation is drawn per sample, so that which models
  serve as references does not depend on the target's own membership bit (in distribution over
  the samples): the null-model AUC stays 0.5 even when the models differ from each other.
- ``one``: leave-one-out (the target only), for comparison with other tools.

A rule becomes a :class:`References` plan: ``excluded[e, m, i]`` are the models left out for
target m on sample i (the index M pads). Every statistic is formed from
totals over all models minus the excluded terms, so nothing loops over targets.
:func:`side_moments` gives the IN and OUT moments that every LiRA variant shares; under ``pair``
it works per complementary pair, since both models of a pair have the same references.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privdyn.errors import DataError

RULES: tuple[str, ...] = ("pair", "balanced", "one")


@dataclass(frozen=True)
class References:
    """The reference sets of every target and sample.

    ``excluded`` ``[E, M, N]``: models left out for target m on pool sample i (M = padding).
    ``population`` ``[E0, M]``: models left out for target m on population samples (the test
    split), which no model trained on: the target, and its partner under ``pair``.
    ``rule``: the rule in effect (``pair`` may have fallen back to ``balanced``).
    """

    excluded: np.ndarray
    population: np.ndarray
    rule: str

    def samples(self, block: slice) -> References:
        """The plan restricted to a block of pool samples."""
        return References(self.excluded[:, :, block], self.population, self.rule)

    def for_population(self, n: int) -> References:
        """A plan for ``n`` population samples (the same exclusions for every sample)."""
        return References(np.broadcast_to(self.population[:, :, None], (*self.population.shape, n)),
                          self.population, self.rule)


def has_pairs(membership: np.ndarray) -> bool:
    """True when models 2j and 2j+1 are complementary for every j (the pair design)."""
    z = np.asarray(membership, dtype=bool)
    return z.shape[0] % 2 == 0 and bool((z[0::2] == ~z[1::2]).all())


def drop_orders(n_models: int, n_samples: int, seed: int) -> np.ndarray:
    """``[M, N]``: a seeded permutation of the models per sample; the ``balanced`` rule drops a
    side's models in this order. One permutation for every sample would always drop the same
    model when it stands opposite the target, so it would serve only as a reference of the
    target's own side: any model-level offset (calibration, confidence) would then separate
    members from non-members with no membership signal at all."""
    keys = np.random.default_rng([seed, 0xBA1, n_models]).random((n_models, n_samples))
    return np.argsort(keys, axis=0, kind="stable")


def reference_plan(membership: np.ndarray, rule: str = "pair", seed: int = 0) -> References:
    """The :class:`References` plan of ``rule`` for a bool membership matrix ``[M, N]``."""
    z = np.asarray(membership, dtype=bool)
    M, N = z.shape
    own = np.broadcast_to(np.arange(M)[:, None], (M, N))
    if rule not in RULES:
        raise DataError(f"unknown reference rule {rule!r}; choose one of {', '.join(RULES)}")
    if rule == "one":
        return References(own[None].copy(), np.arange(M)[None], "one")
    if rule == "pair" and has_pairs(z):
        return References(np.stack([own, own ^ 1]), np.stack([np.arange(M), np.arange(M) ^ 1]), "pair")
    return _balanced(z, seed)


def _balanced(z: np.ndarray, seed: int) -> References:
    """The ``balanced`` plan. Only the side with more than c other models drops any (d of them);
    the models it drops are the first d of that side in the sample's drop order, skipping the
    target. Every target therefore excludes d + 1 models: a prefix of one side's order, plus the
    target itself unless the prefix already holds it (then the prefix is one longer)."""
    M, N = z.shape
    others_in = z.sum(axis=0) - z  # [M, N]: IN models other than the target
    others_out = M - 1 - others_in
    c = np.minimum(others_in, others_out)  # references kept per side: the others' smaller side
    from_in = others_in > c  # the IN side drops; else the OUT side (or, where d = 0, none)
    d = np.where(from_in, others_in, others_out) - c
    D = int(d.max(initial=0))
    order = drop_orders(M, N, seed)
    target = np.broadcast_to(np.arange(M)[:, None], (M, N))
    place = np.empty_like(order)  # place[m, i]: model m's position in sample i's drop order
    np.put_along_axis(place, order, target, axis=0)
    prefix = np.full((D + 1, M, N), M, dtype=order.dtype)
    bumped = np.zeros((M, N), dtype=bool)  # the target lies in its own prefix of length d
    for side, drops in ((z, from_in), (~z, ~from_in)):
        in_order = np.take_along_axis(side, order, axis=0)
        side_rank = np.cumsum(in_order, axis=0) - 1  # rank within the side, by drop-order position
        pos = np.argsort(~in_order, axis=0, kind="stable")[: D + 1]  # positions of the side's first D+1
        first = np.where(np.take_along_axis(in_order, pos, axis=0), np.take_along_axis(order, pos, axis=0), M)
        np.copyto(bumped, side & (np.take_along_axis(side_rank, place, axis=0) < d), where=drops)
        np.copyto(prefix, first[:, None, :], where=drops)
    length = d + bumped  # prefix length; the target follows it unless the prefix holds it
    k = np.arange(D + 1)[:, None, None]
    ex = np.where(k < length, prefix, np.where((k == length) & ~bumped, target, M))
    return References(ex, np.arange(M)[None], "balanced")


def at_excluded(a: np.ndarray, refs: References) -> np.ndarray:
    """``a[excluded[e, m, i], i, ...]`` ``[E, M, N, ...]``, zero (or False) at padding."""
    if refs.rule in ("pair", "one"):  # the same models for every sample: whole-row gathers
        return a[refs.population]
    pad = np.concatenate([a, np.zeros_like(a[:1])], axis=0)
    return pad[refs.excluded, np.arange(a.shape[1])]


def _side(side: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape[:2], dtype=bool) if side is None else np.asarray(side, dtype=bool)


def ref_counts(side: np.ndarray | None, refs: References) -> np.ndarray:
    """Number of references on ``side`` for every target and sample, ``[M, N]``."""
    w = _side(side, refs.excluded.shape[1:])
    return w.sum(axis=0, keepdims=True) - at_excluded(w, refs).sum(axis=0)


def require_references(n: np.ndarray, what: str, refs: References) -> None:
    """Raise a clear error when some target has no reference of the kind it needs."""
    if (n < 1).any():
        m, i = np.argwhere(n < 1)[0]
        raise DataError(
            f"target model {m} has no {what + ' ' if what else ''}reference for sample {i} "
            f"(M={n.shape[0]} models, reference rule {refs.rule}). Each "
            "target needs at least one reference of that kind on every sample: use more models (at "
            "least 4 with the balanced design) or an attack that needs fewer references."
        )


def _rowsum(a: np.ndarray) -> np.ndarray:
    """Sum over the first axis, row after row, whatever the other axes' size.

    numpy adds the rows of ``a.sum(axis=0)`` one after another when a row has two or more
    elements, but switches to pairwise summation when it has one: a block of one sample and one
    query would then round differently from the same sample inside a larger block. Padding that
    case to two elements keeps every result independent of how the samples are blocked.
    """
    if a.ndim > 1 and a[0].size == 1:
        return np.concatenate([a, a], axis=-1).sum(axis=0)[..., :1]
    return a.sum(axis=0)


def _moments(x: np.ndarray, w: np.ndarray, refs: References, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance ``[M, N, Q]`` of float64 ``x`` over each target's references on ``w``
    (bool ``[M, N]``; ``n`` their counts, all >= 1): totals minus the excluded terms.

    Data are centred per sample on the mean of the models on ``w`` first, so the sums of squares
    hold only the spread of that side and the totals-minus-excluded differences stay accurate
    (absolute error about eps * that side's largest squared deviation).
    """
    wq = w[..., None]
    k = np.maximum(w.sum(axis=0), 1)[:, None]
    centre = _rowsum(np.where(wq, x, 0.0)) / k
    d = np.where(wq, x - centre, 0.0)
    d_ex = at_excluded(d, refs)
    s = _rowsum(d) - _rowsum(d_ex)
    ss = _rowsum(d * d) - _rowsum(d_ex * d_ex)
    nq = n[..., None].astype(np.float64)
    mu = s / nq
    return mu + centre, np.maximum(ss / nq - mu * mu, 0.0)


def _pair_moments(x: np.ndarray, f: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`side_moments` of one side under the ``pair`` rule.

    ``f`` ``[P, N, 1]`` is 1.0 where model 2j of pair j is on the side (then 2j+1 is not) and 0.0
    elsewhere, ``g = 1 - f``. Pair j's model on the side has value y_j = x[2j] f + x[2j+1] g (exact
    for finite values, and cheaper than ``np.where``); targets 2j and 2j+1 use the other
    k = P - 1 values: their mean is (sum y - y_j) / k, the total minus the excluded term, and with
    d = y - mean(y) and SS = sum d^2 their variance is SS/k - d_j^2 P/k^2 (the leave-one-out
    identity; it takes sum d as 0, which leaves a relative error of about
    eps * |mean| / (k * spread), e.g. 1e-14 for a mean 1e4 spreads away from zero).
    """
    P = x.shape[0] // 2
    inv_k = 1.0 / (P - 1)
    y = x[0::2] * f
    y += x[1::2] * g  # [P, N, Q]
    total = _rowsum(y)
    mu = np.subtract(total, y)
    mu *= inv_k
    d = np.subtract(y, total / P, out=y)
    var = np.multiply(d, d, out=d)
    ss = _rowsum(var)
    var *= -P * inv_k * inv_k
    var += ss * inv_k
    np.maximum(var, 0.0, out=var)
    return mu[:, None], var[:, None]


def pair_counts(refs: References, n_models: int) -> int | None:
    """References per side under ``pair`` (M/2 - 1 for every target and sample), else None."""
    return n_models // 2 - 1 if refs.rule == "pair" else None


def stats_rows(refs: References) -> int:
    """Targets served by one row of :func:`side_moments`: 2 under ``pair``, else 1."""
    return 2 if refs.rule == "pair" else 1


def side_moments(x: np.ndarray, membership: np.ndarray, refs: References,
                 sides: tuple[str, ...] = ("in", "out")) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and variance (ddof = 0) of float64 ``x`` ``[M, N, Q]`` over each target's IN (side
    ``"in"``) and OUT (``"out"``) references, as ``[R, 1, N, Q]`` arrays per side.

    Under ``pair`` the two models of a pair have the same references, so R = M/2 and row j serves
    targets 2j and 2j+1 (half the work); otherwise R = M. Broadcast them against a per-target
    array viewed as ``[R, stats_rows(refs), N, Q]``. The caller checks that every target has a
    reference on each side (:func:`require_references`).
    """
    z = np.asarray(membership, dtype=bool)
    if refs.rule == "pair":
        f_in = z[0::2, :, None].astype(np.float64)
        f_out = 1.0 - f_in
        masks = {"in": (f_in, f_out), "out": (f_out, f_in)}
        return {s: _pair_moments(x, *masks[s]) for s in sides}
    out = {}
    for s in sides:
        w = z if s == "in" else ~z
        mu, var = _moments(x, w, refs, ref_counts(w, refs))
        out[s] = (mu[:, None], var[:, None])
    return out


def ref_moments(x: np.ndarray, side: np.ndarray | None, refs: References,
                what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (ddof = 0) of ``x`` ``[M, N, Q]`` over each target's references on ``side``
    (None = all models), computed as totals minus the excluded terms (see :func:`_moments`)."""
    x = np.asarray(x, dtype=np.float64)
    w = _side(side, x.shape)
    n = ref_counts(w, refs)
    require_references(n, what, refs)
    return _moments(x, w, refs, n)


def _sorted_with_excluded_ranks(key: np.ndarray, w: np.ndarray,
                                refs: References) -> tuple[np.ndarray, np.ndarray]:
    """``key`` sorted over models, and each target's excluded models' ranks in that order,
    ascending along the first axis (M for an excluded model that is not on ``side``)."""
    M = key.shape[0]
    order = np.argsort(key, axis=0, kind="stable")
    ranked = np.take_along_axis(key, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(M)[:, None, None], order.shape), axis=0)
    on_side = at_excluded(w, refs)[..., None]
    r = np.where(on_side, at_excluded(rank, refs), M)
    return ranked, np.sort(r, axis=0)


def _skip(j: np.ndarray, excluded_ranks: np.ndarray) -> np.ndarray:
    """The rank of the j-th kept value when the (ascending) excluded ranks are skipped."""
    for r in excluded_ranks:
        j = j + (j >= r)
    return j


def ref_median(x: np.ndarray, side: np.ndarray | None, refs: References, what: str = "") -> np.ndarray:
    """Median over each target's references on ``side`` (numpy's: the mean of the two middle
    values for an even count). Values on ``side`` are sorted once per (sample, query) and the
    excluded models' ranks are skipped."""
    x = np.asarray(x, dtype=np.float64)
    w = _side(side, x.shape)
    n = ref_counts(w, refs)
    require_references(n, what, refs)
    ranked, r = _sorted_with_excluded_ranks(np.where(w[..., None], x, np.inf), w, refs)
    nq = np.broadcast_to(n[..., None], x.shape)
    lo, hi = _skip((nq - 1) // 2, r), _skip(nq // 2, r)
    return 0.5 * (np.take_along_axis(ranked, lo, axis=0) + np.take_along_axis(ranked, hi, axis=0))


#: Below this share of the all-model total, the kept sum is recomputed exactly (see ref_logmeanexp).
CANCELLATION_SHARE = 1e-4


def ref_logmeanexp(x: np.ndarray, side: np.ndarray | None, refs: References, what: str = "") -> np.ndarray:
    """Log of the mean of exp(x) over each target's references on ``side``, computed stably.

    Shifted by the largest value on ``side``, the kept sum is the total minus the excluded terms.
    Where the excluded terms carry almost all of the total (kept share < ``CANCELLATION_SHARE``,
    e.g. an excluded model whose p_y dwarfs every reference's), that difference would cancel, so
    those few entries are recomputed directly over their kept models, shifted by their own maximum.
    """
    x = np.asarray(x, dtype=np.float64)
    w = _side(side, x.shape)
    n = ref_counts(w, refs)
    require_references(n, what, refs)
    wq = np.broadcast_to(w[..., None], x.shape)
    xm = np.where(wq, x, -np.inf)
    top = xm.max(axis=0, keepdims=True)
    with np.errstate(invalid="ignore"):
        e = np.exp(xm - np.where(np.isfinite(top), top, 0.0))
    total = e.sum(axis=0, keepdims=True)
    kept = total - at_excluded(e, refs).sum(axis=0)
    bad = ~(kept > CANCELLATION_SHARE * total)
    with np.errstate(divide="ignore"):
        out = np.log(np.maximum(kept, 0.0)) + top
    if bad.any():
        m, i, q = np.nonzero(bad)
        keep = np.broadcast_to(w[:, i], (x.shape[0], len(i))).copy()  # [M, F]
        ex = refs.excluded[:, m, i]  # [E, F]
        cols = np.broadcast_to(np.arange(len(i)), ex.shape)
        valid = ex < x.shape[0]
        keep[ex[valid], cols[valid]] = False
        vals = np.where(keep, x[:, i, q], -np.inf)
        peak = vals.max(axis=0)
        out[m, i, q] = peak + np.log(np.exp(vals - peak).sum(axis=0))
    return out - np.log(n[..., None].astype(np.float64))
