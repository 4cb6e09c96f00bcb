"""Checkpoint signals computed from logits (float64 inside, stored as float32).

For labels y and logits z: phi = z_y - logsumexp_{y' != y} z_{y'} equals
log p_y - log(sum_{y' != y} p_{y'}) exactly, without forming probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from privdyn.training.queries import apply_query

#: Signals stored per (checkpoint, model, sample, query).
SIGNALS = ("phi", "loss", "correct", "entropy", "mentropy", "top1", "top2", "top3", "el2n")


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, stable at both ends (Maechler 2012)."""
    return torch.where(a > -0.6931471805599453, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def signals_from_logits(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """All stored signals for logits ``[..., C]`` and labels ``[...]``."""
    z = logits.to(torch.float64)
    yi = y.unsqueeze(-1).expand(*z.shape[:-1], 1)
    logp = torch.log_softmax(z, dim=-1)
    logp_y = logp.gather(-1, yi).squeeze(-1)
    z_y = z.gather(-1, yi).squeeze(-1)
    others = z.scatter(-1, yi, float("-inf"))
    phi = z_y - torch.logsumexp(others, dim=-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    entropy = -plogp.sum(-1)
    # Modified entropy (Song & Mittal 2021): -(1-p_y) log p_y - sum_{y'!=y} p_y' log(1-p_y').
    # log(1 - p_j) = log1mexp(log p_j) is exact for every class but the most likely one, where
    # p_j may round to 1: there it is the logsumexp of the other classes' log-probabilities.
    log1m = _log1mexp(logp.clamp(max=0.0))
    top_j = logp.argmax(-1, keepdim=True)
    log1m_top = torch.logsumexp(logp.scatter(-1, top_j, float("-inf")), dim=-1, keepdim=True)
    log1m = log1m.scatter(-1, top_j, log1m_top)
    terms = torch.where(p > 0, p * log1m, torch.zeros_like(p)).scatter(-1, yi, 0.0)
    p_y = logp_y.exp()
    mentropy = -(1 - p_y) * logp_y - terms.sum(-1)
    top = torch.topk(p, k=min(3, p.shape[-1]), dim=-1).values
    if top.shape[-1] < 3:
        top = torch.nn.functional.pad(top, (0, 3 - top.shape[-1]))
    # EL2N (Paul et al. 2021) = ||softmax - onehot||_2 = sqrt((1 - p_y)^2 + sum_{y'!=y} p_y'^2),
    # with 1 - p_y = sum_{y'!=y} p_y' summed in log space, so that it stays exact when p_y rounds to 1.
    log_rest = torch.logsumexp(logp.scatter(-1, yi, float("-inf")), dim=-1)
    el2n = torch.sqrt(torch.exp(2 * log_rest) + (p * p).scatter(-1, yi, 0.0).sum(-1))
    return {
        "phi": phi, "loss": -logp_y, "correct": z.argmax(-1) == y,
        "entropy": entropy, "mentropy": mentropy,
        "top1": top[..., 0], "top2": top[..., 1], "top3": top[..., 2], "el2n": el2n,
    }


@torch.no_grad()
def evaluate_signals(forward: Callable[[torch.Tensor], torch.Tensor], k: int, x: torch.Tensor, y: torch.Tensor,
                     queries: list[str], batch_size: int, with_logits: bool = False) -> dict[str, np.ndarray]:
    """Every signal of ``k`` models on every sample under every query: name -> ``[K, N, Q]``.

    ``forward`` maps a batch ``[B, ...]`` to logits ``[K, B, C]`` (the caller has put the models
    in eval mode). With ``with_logits`` the float32 logits ``[K, N, Q, C]`` come too, so that the
    signals can be recomputed from them exactly (``privdyn export`` and ``privdyn import``).
    """
    n, q = len(y), len(queries)
    out = {s: np.empty((k, n, q), dtype=bool if s == "correct" else np.float32) for s in SIGNALS}
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        for j, name in enumerate(queries):
            logits = forward(apply_query(name, xb))
            if with_logits:
                if "logits" not in out:
                    out["logits"] = np.empty((k, n, q, logits.shape[-1]), dtype=np.float32)
                out["logits"][:, start:start + len(yb), j] = logits.float().cpu().numpy()
            for s, v in signals_from_logits(logits, yb.expand(k, -1)).items():
                out[s][:, start:start + len(yb), j] = v.cpu().numpy()
    return out
