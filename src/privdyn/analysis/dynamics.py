"""How samples move on the plane: encoding speed, state transitions, time to vulnerability.

Inputs are ``[T, N]`` arrays over the stored checkpoints (the first one is e_0 = 0 when the run
scores the initialisation, else e_1). All functions are vectorised over samples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from privdyn.analysis.population import STATE_NAMES

HIGH = len(STATE_NAMES) - 1


def _span(epochs: np.ndarray) -> float:
    """e_T - e_1, or NaN with a single checkpoint (no rate is defined)."""
    span = float(epochs[-1] - epochs[0])
    return span if span > 0 else float("nan")


def encoding_speed(fpr: np.ndarray, tpr: np.ndarray, epochs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: path speed v_i = sum_t ||p_i(t+1) - p_i(t)|| / (e_T - e_1), in plane units per
    epoch, and net rate (A_i(e_T) - A_i(e_1)) / (e_T - e_1). NaN with one checkpoint."""
    span = _span(epochs)
    path = np.hypot(np.diff(fpr, axis=0), np.diff(tpr, axis=0)).sum(axis=0)
    adv = tpr - fpr
    return path / span, (adv[-1] - adv[0]) / span


def speed_summary(speed: np.ndarray, high_final: np.ndarray) -> dict[str, float]:
    """Population mean and median of v_i, and its mean over the finally-high samples (NaN if none)."""
    return {
        "mean": float(np.mean(speed)), "median": float(np.median(speed)),
        "high_mean": float(np.mean(speed[high_final])) if high_final.any() else float("nan"),
    }


def transition_counts(st: np.ndarray, n_states: int = len(STATE_NAMES)) -> np.ndarray:
    """``counts[t, a, b]``: samples in state a at checkpoint t and state b at t + 1, ``[T-1, S, S]``."""
    T = st.shape[0]
    code = (np.arange(T - 1)[:, None] * n_states + st[:-1]) * n_states + st[1:]
    return np.bincount(code.ravel(), minlength=(T - 1) * n_states * n_states).reshape(
        T - 1, n_states, n_states)


def transition_probabilities(counts: np.ndarray) -> np.ndarray:
    """P_ab(t) = counts[t, a, b] / sum_b counts[t, a, b]; NaN for rows with no sample in state a."""
    rows = counts.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, counts / np.maximum(rows, 1), np.nan)


def p_to_high(counts: np.ndarray) -> np.ndarray:
    """P(non-high -> high)(t): the share of samples not high at t that are high at t + 1 ``[T-1]``.

    NaN at steps where every sample is already high.
    """
    non_high = counts[:, :HIGH, :]
    total = non_high.sum(axis=(1, 2))
    up = non_high[:, :, HIGH].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, up / np.maximum(total, 1), np.nan)


def peak(values: np.ndarray) -> float:
    """The largest finite value, NaN if there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else float("nan")


def transitions_table(counts: np.ndarray, epochs: np.ndarray) -> pd.DataFrame:
    """Long table of every step and state pair: epoch_from, epoch_to, state_from, state_to,
    count, probability (NaN when no sample was in state_from)."""
    steps, S, _ = counts.shape
    t, a, b = (g.ravel() for g in np.meshgrid(np.arange(steps), np.arange(S), np.arange(S), indexing="ij"))
    names = list(STATE_NAMES[:S])
    return pd.DataFrame({
        "epoch_from": epochs[:-1][t], "epoch_to": epochs[1:][t],
        "state_from": pd.Categorical.from_codes(a, names),
        "state_to": pd.Categorical.from_codes(b, names),
        "count": counts.ravel().astype(np.int64),
        "probability": transition_probabilities(counts).ravel(),
    })


def time_to_high(st: np.ndarray, epochs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the first checkpoint epoch in the high state, and the settled epoch (first
    epoch from which it stays high to the end). Both NaN for samples never (or not finally) high."""
    high = st == HIGH
    T = high.shape[0]
    ever = high.any(axis=0)
    first = np.where(ever, epochs[np.argmax(high, axis=0)].astype(np.float64), np.nan)
    # last non-high index + 1, found from the reversed array; T when the last checkpoint is not high
    not_high_rev = ~high[::-1]
    has_non_high = not_high_rev.any(axis=0)
    settle_idx = np.where(has_non_high, T - np.argmax(not_high_rev, axis=0), 0)
    settled = np.where(settle_idx < T, epochs[np.minimum(settle_idx, T - 1)].astype(np.float64), np.nan)
    return first, settled
