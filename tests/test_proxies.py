"""The early-warning proxies against plain loop implementations, known answers and properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privdyn.analysis.proxies import (
    PROXIES,
    Proxy,
    Traces,
    available_proxies,
    nan_quantile,
    proxy_curve,
    proxy_scores,
    top_k,
)

# --- loop references: one sample's trace at a time, Python lists -------------------------------


def _finite(values):
    return [v for v in values if not math.isnan(v)]


def _quantile(values, q):
    v = sorted(values)
    if not v:
        return math.nan
    h = (len(v) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (h - lo)


def _slope(xs, ys):
    pts = [(x, y) for x, y in zip(xs, ys) if not math.isnan(y)]
    if len({x for x, _ in pts}) < 2:
        return math.nan
    xm = sum(x for x, _ in pts) / len(pts)
    ym = sum(y for _, y in pts) / len(pts)
    return sum((x - xm) * (y - ym) for x, y in pts) / sum((x - xm) ** 2 for x, _ in pts)


def loop_reference(name, epochs, trace):
    """The proxy on one sample's trace (a list over checkpoints)."""
    f = _finite(trace)
    if name == "lt_iqr":
        return _quantile(f, 0.75) - _quantile(f, 0.25)
    if name == "loss_mean":
        return sum(f) / len(f) if f else math.nan
    if name == "loss_slope":
        return -_slope(epochs, trace)
    if name == "margin_mean":
        return -(sum(f) / len(f)) if f else math.nan
    if name == "margin_slope":
        return _slope(epochs, trace)
    if name == "forgetting_events":
        n = 0
        for a, b in zip(trace[:-1], trace[1:]):
            if not (math.isnan(a) or math.isnan(b)) and a > 0.5 and b <= 0.5:
                n += 1
        return float(n)
    if name == "early_el2n":
        return trace[-1]
    raise KeyError(name)


SIGNAL_OF = {"lt_iqr": "loss", "loss_mean": "loss", "loss_slope": "loss", "margin_mean": "phi",
             "margin_slope": "phi", "forgetting_events": "correct", "early_el2n": "el2n"}
BUILTIN = list(SIGNAL_OF)


def random_traces(rng, t=6, m=3, n=40, nan_share=0.0):
    epochs = np.sort(rng.choice(np.arange(1, 50), size=t, replace=False)).astype(float)
    loss = rng.exponential(size=(t, m, n))
    phi = rng.normal(size=(t, m, n)) * 3
    correct = (rng.random((t, m, n)) < 0.6).astype(float)
    el2n = rng.random((t, m, n)) * 1.4
    if nan_share:
        for a in (loss, phi, correct, el2n):
            a[rng.random(a.shape) < nan_share] = np.nan
    return Traces(epochs, loss, phi=phi, correct=correct, el2n=el2n)


def loop_scores(name, tr):
    sig = getattr(tr, SIGNAL_OF[name])
    t, m, n = sig.shape
    out = np.empty((m, n))
    for j in range(m):
        for i in range(n):
            out[j, i] = loop_reference(name, list(tr.epochs), [float(sig[k, j, i]) for k in range(t)])
    return out


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("nan_share", [0.0, 0.3])
def test_every_proxy_equals_its_loop_reference(name, nan_share):
    tr = random_traces(np.random.default_rng(1), nan_share=nan_share)
    got = proxy_scores(name, tr)
    want = loop_scores(name, tr)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_lt_iqr_equals_numpy_without_nan():
    tr = random_traces(np.random.default_rng(2))
    want = np.quantile(tr.loss, 0.75, axis=0) - np.quantile(tr.loss, 0.25, axis=0)
    np.testing.assert_allclose(proxy_scores("lt_iqr", tr), want)


def test_known_answers_on_three_archetypes():
    """An easy sample (low at once), a memorised outlier (high, then falls late) and a hard one
    (stays high): LT-IQR ranks the memorised outlier first, mean loss the hard one."""
    epochs = np.arange(1, 9)
    easy = [0.1, 0.05, 0.04, 0.03, 0.02, 0.02, 0.01, 0.01]
    memorised = [2.3, 2.2, 2.1, 1.5, 0.6, 0.1, 0.02, 0.01]
    hard = [2.3, 2.2, 2.2, 2.1, 2.1, 2.0, 2.0, 2.0]
    tr = Traces(epochs, np.array([easy, memorised, hard]).T)
    iqr = proxy_scores("lt_iqr", tr)
    assert np.argmax(iqr) == 1 and np.argmin(iqr) == 0
    # memorised: sorted [0.01 0.02 0.1 0.6 1.5 2.1 2.2 2.3]; Q1 at h=1.75, Q3 at h=5.25
    assert iqr[1] == pytest.approx((2.1 + 0.25 * 0.1) - (0.02 + 0.75 * 0.08))
    assert np.argmax(proxy_scores("loss_mean", tr)) == 2
    assert np.argmax(proxy_scores("loss_slope", tr)) == 1


def test_known_slope_and_forgetting():
    epochs = np.array([0.0, 1.0, 2.0, 4.0])
    loss = np.array([[8.0], [6.0], [4.0], [0.0]])  # exactly -2 per epoch
    phi = np.array([[-1.0], [0.0], [1.0], [3.0]])  # +1 per epoch
    correct = np.array([[1.0], [0.0], [1.0], [0.0]])  # two forgetting events
    el2n = np.array([[1.2], [0.9], [0.5], [0.1]])
    tr = Traces(epochs, loss, phi=phi, correct=correct, el2n=el2n)
    assert proxy_scores("loss_slope", tr)[0] == pytest.approx(2.0)
    assert proxy_scores("margin_slope", tr)[0] == pytest.approx(1.0)
    assert proxy_scores("margin_mean", tr)[0] == pytest.approx(-0.75)
    assert proxy_scores("forgetting_events", tr)[0] == 2
    assert proxy_scores("early_el2n", tr, epoch=1.5)[0] == pytest.approx(0.9)  # last at or before 1.5
    assert proxy_scores("early_el2n", tr)[0] == pytest.approx(0.1)
    assert proxy_scores("lt_iqr", tr, since=2.0)[0] == pytest.approx(2.0)  # [4, 0]: 3 - 1


def test_middle_axes_are_independent():
    """A proxy on [t, M, N] equals the proxy on each model's [t, N] alone (no mixing of models)."""
    tr = random_traces(np.random.default_rng(3), m=4)
    for name in BUILTIN:
        whole = proxy_scores(name, tr)
        for j in range(4):
            one = Traces(tr.epochs, tr.loss[:, j], phi=tr.phi[:, j], correct=tr.correct[:, j], el2n=tr.el2n[:, j])
            np.testing.assert_allclose(whole[j], proxy_scores(name, one), equal_nan=True)


def test_missing_signal_and_bad_shapes_are_clear_errors():
    tr = Traces(np.arange(3), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="needs the phi"):
        proxy_scores("margin_mean", tr)
    with pytest.raises(ValueError, match="t = len"):
        Traces(np.arange(2), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="shape"):
        Traces(np.arange(3), np.zeros((3, 5)), phi=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="increase"):
        Traces(np.array([2, 1, 3]), np.zeros((3, 5)))
    assert available_proxies(tr) == ["lt_iqr", "loss_mean", "loss_slope"]


def test_register_refuses_a_taken_name_and_user_proxies_work():
    with pytest.raises(ValueError, match="already registered"):
        PROXIES.register("lt_iqr", Proxy(lambda tr: tr.loss[-1]))
    mine = Proxy(lambda tr: np.nanmax(tr.loss, axis=0), needs=("loss",), direction="worst loss")
    PROXIES.register("test_loss_max", mine)
    try:
        tr = random_traces(np.random.default_rng(4))
        np.testing.assert_array_equal(proxy_scores("test_loss_max", tr), tr.loss.max(axis=0))
        with pytest.raises(ValueError, match="returned shape"):
            PROXIES.register("test_bad", Proxy(lambda tr: tr.loss[:, 0]))
            proxy_scores("test_bad", tr)
    finally:
        PROXIES.unregister("test_loss_max")
        PROXIES.unregister("test_bad")
    with pytest.raises(ValueError, match="can need only"):
        Proxy(lambda tr: tr.loss[-1], needs=("logits",))


def test_head_is_what_a_monitor_saw():
    tr = random_traces(np.random.default_rng(5))
    h = tr.head(3)
    assert h.n_epochs == 3 and h.phi is not None and h.phi.shape[0] == 3
    np.testing.assert_array_equal(proxy_scores("loss_mean", h), tr.loss[:3].mean(axis=0))


def test_top_k_ranks_nan_last_and_ties_by_index():
    s = np.array([0.5, np.nan, 2.0, 0.5, 2.0])
    np.testing.assert_array_equal(top_k(s, 5), [2, 4, 0, 3, 1])


# --- properties ---------------------------------------------------------------------------------

floats = st.one_of(st.just(np.nan), st.floats(min_value=-1e3, max_value=1e3, width=32))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 3), st.integers(1, 7)), elements=floats))
def test_shapes_nan_and_loop_agreement(values):
    t = values.shape[0]
    loss = np.abs(values)
    correct = np.where(np.isnan(values), np.nan, (values > 0).astype(float))
    tr = Traces(np.arange(1, t + 1), loss, phi=values, correct=correct, el2n=loss)
    for name in BUILTIN:
        got = proxy_scores(name, tr)
        assert got.shape == values.shape[1:]
        np.testing.assert_allclose(got, loop_scores(name, tr), rtol=1e-9, atol=1e-9, equal_nan=True)
        all_nan = np.isnan(values).all(axis=0)
        if name not in ("forgetting_events",):
            assert np.isnan(got[all_nan]).all()  # a sample never observed has no score


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 5), st.floats(0, 10))
def test_constant_traces(t, n, c):
    """A constant trace has no spread, no slope and no forgetting."""
    tr = Traces(np.arange(t), np.full((t, n), c), phi=np.full((t, n), c), correct=np.ones((t, n)),
                el2n=np.full((t, n), c))
    assert (proxy_scores("lt_iqr", tr) == 0).all()
    assert (proxy_scores("forgetting_events", tr) == 0).all()
    np.testing.assert_allclose(proxy_scores("loss_mean", tr), c)
    slope = proxy_scores("loss_slope", tr)
    assert (np.isnan(slope) if t < 2 else np.abs(slope) < 1e-9).all()


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 7), st.integers(1, 6)),
              elements=st.one_of(st.just(np.nan), st.floats(-5, 5))), st.floats(0, 1))
def test_nan_quantile_equals_numpy_nanquantile(x, q):
    want = np.full(x.shape[1], np.nan)
    for i in range(x.shape[1]):
        col = x[:, i][~np.isnan(x[:, i])]
        if col.size:
            want[i] = np.quantile(col, q)
    np.testing.assert_allclose(nan_quantile(x, q), want, rtol=1e-12, atol=1e-12, equal_nan=True)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(3, 9), st.data())
def test_ties_and_sample_order(t, n, data):
    """Permuting the samples permutes every proxy's scores the same way (no order dependence),
    also with tied traces."""
    base = data.draw(arrays(np.float64, (t, n), elements=st.sampled_from([0.0, 0.5, 1.0, 2.0])))
    perm = np.random.default_rng(data.draw(st.integers(0, 100))).permutation(n)
    tr = Traces(np.arange(t), base, phi=base, correct=(base > 0.7).astype(float), el2n=base)
    trp = Traces(np.arange(t), base[:, perm], phi=base[:, perm], correct=(base[:, perm] > 0.7).astype(float),
                 el2n=base[:, perm])
    for name in BUILTIN:
        np.testing.assert_array_equal(proxy_scores(name, tr)[perm], proxy_scores(name, trp))


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("nan_share", [0.0, 0.25])
def test_curve_equals_the_score_of_every_prefix(name, nan_share):
    """proxy_curve's fast paths (prefix sorts, cumulative sums) equal the score of each head."""
    tr = random_traces(np.random.default_rng(6), t=7, nan_share=nan_share)
    opts = {"epoch": float(tr.epochs[2])} if name == "early_el2n" else {}
    curve = proxy_curve(name, tr, **opts)
    assert curve.shape == tr.loss.shape
    for j in range(tr.n_epochs):
        np.testing.assert_allclose(curve[j], proxy_scores(name, tr.head(j + 1), **opts), rtol=1e-8, atol=1e-10,
                                   equal_nan=True)


def test_curve_with_since_and_without_a_fast_path():
    tr = random_traces(np.random.default_rng(7), t=5)
    since = float(tr.epochs[2])
    curve = proxy_curve("lt_iqr", tr, since=since)
    for j in range(tr.n_epochs):
        np.testing.assert_allclose(curve[j], proxy_scores("lt_iqr", tr.head(j + 1), since=since))
    PROXIES.register("test_last_loss", Proxy(lambda tr: tr.loss[-1]))
    try:
        np.testing.assert_array_equal(proxy_curve("test_last_loss", tr), tr.loss)
    finally:
        PROXIES.unregister("test_last_loss")
