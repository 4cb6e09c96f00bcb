import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privdyn.training.signals import signals_from_logits


def _naive(logits, y):
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    py = p[y]
    others = p.sum() - py
    phi = np.log(py) - np.log(others)
    ent = -(p * np.log(p)).sum()
    ment = -(1 - py) * np.log(py) - sum(p[j] * np.log(1 - p[j]) for j in range(len(p)) if j != y)
    return phi, -np.log(py), ent, ment, np.argmax(logits) == y


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (5,), elements=st.floats(-8, 8)), st.integers(0, 4))
def test_signals_match_naive_formulas_on_moderate_logits(logits, y):
    out = signals_from_logits(torch.tensor(logits)[None], torch.tensor([y]))
    phi, loss, ent, ment, correct = _naive(logits, y)
    np.testing.assert_allclose(out["phi"][0].item(), phi, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["loss"][0].item(), loss, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["entropy"][0].item(), ent, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(out["mentropy"][0].item(), ment, rtol=1e-7, atol=1e-9)
    if np.sort(logits)[-1] != np.sort(logits)[-2]:
        assert bool(out["correct"][0]) == correct


def test_phi_is_finite_and_exact_for_extreme_logits():
    logits = torch.tensor([[200.0, -200.0, 0.0], [-200.0, 200.0, 0.0]])
    out = signals_from_logits(logits, torch.tensor([0, 0]))
    # phi = z_y - logsumexp(others): 200 - 0 (+ e^-200 correction) and -200 - 200
    np.testing.assert_allclose(out["phi"].numpy(), [200.0, -400.0], rtol=1e-12)
    assert torch.isfinite(out["mentropy"]).all() and torch.isfinite(out["loss"]).all()
    np.testing.assert_allclose(out["top1"].numpy(), [1.0, 1.0])
