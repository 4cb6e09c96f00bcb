"""Shokri et al. 2017: an attack classifier trained on reference models' outputs.

Features per (model, sample): for every query the sorted top-3 probabilities and the loss
(4 Q features, standardised). Labels: the references' known membership. To keep the classifier
for target m blind to model m, the models are split into K folds and the classifier for the
models of fold k is trained on every model outside fold k (leave-one-fold-out, K fits per
checkpoint instead of M). Under the balanced reference rules (``pair``, ``balanced``) a fold
holds whole complementary pairs (fold = (m // 2) mod K), so every sample is IN for exactly as many
training models as it is OUT; without pairs each sample's training rows are cut to the same
count per side (the larger side drops the models first in a seeded order; the target is never
among the training rows, so one order serves every sample). Under ``one``: fold = m mod K. Training rows beyond
``max_train_rows`` are subsampled, seeded. The score is the classifier's log-odds.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from pydantic import Field

from privdyn.attacks.base import Attack, AttackOptionsBase, CheckpointData, register
from privdyn.errors import DataError

FEATURES = ("top1", "top2", "top3", "loss")
#: predict_proba of the MLP is clipped to [EPS, 1 - EPS] before taking log-odds.
EPS = 1e-12


class ShokriOptions(AttackOptionsBase):
    """Options of the shadow-model classifier attack."""

    classifier: Literal["logistic", "mlp"] = Field(
        "logistic", description="logistic regression, or a one-hidden-layer MLP (slower)")
    folds: int = Field(4, ge=2, description="K: model folds; min(K, M) classifiers per checkpoint")
    max_train_rows: int = Field(50_000, ge=100, description="rows (model, sample) each classifier trains on")
    hidden: int = Field(64, ge=1, description="hidden units of the MLP")
    seed: int = Field(0, description="seed of the row subsample and the MLP initialisation")


def features(data: CheckpointData) -> np.ndarray:
    """``[M, N, 4 Q]``: per query top1, top2, top3, loss."""
    return np.concatenate([data.pool_signal(f) for f in FEATURES], axis=-1)


def make_classifier(opts: ShokriOptions) -> Any:
    """The attack classifier the options name, with standardised inputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if opts.classifier == "logistic":
        clf = LogisticRegression(max_iter=1000)
    else:
        clf = MLPClassifier(hidden_layer_sizes=(opts.hidden,), batch_size=512, max_iter=100, early_stopping=True,
                            random_state=opts.seed)
    return make_pipeline(StandardScaler(), clf)


def train_rows(n_rows: int, opts: ShokriOptions, fold: int) -> np.ndarray:
    """Indices of the training rows of one fold's classifier (all rows, or a seeded subsample)."""
    if n_rows <= opts.max_train_rows:
        return np.arange(n_rows)
    rng = np.random.default_rng([opts.seed, fold])
    return np.sort(rng.choice(n_rows, size=opts.max_train_rows, replace=False))


def log_odds(clf: Any, x: np.ndarray, opts: ShokriOptions) -> np.ndarray:
    """The classifier's membership log-odds for features ``x``."""
    if opts.classifier == "logistic":
        return clf.decision_function(x)
    p = np.clip(clf.predict_proba(x)[:, 1], EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def folds(n_models: int, opts: ShokriOptions, rule: str) -> np.ndarray:
    """The fold of every model: whole pairs per fold, except under the leave-one-out rule."""
    m = np.arange(n_models)
    return m % min(opts.folds, n_models) if rule == "one" else (m // 2) % min(opts.folds, max(1, n_models // 2))


def balanced_rows(z: np.ndarray, seed: int) -> np.ndarray:
    """Bool ``[M', N]``: per sample, as many IN rows as OUT rows (the smaller side's count); the
    larger side drops the models that come first in a seeded order of the models."""
    order = np.random.default_rng([seed, 0xBA1]).permutation(z.shape[0])
    zo = z[order]
    c = np.minimum(zo.sum(axis=0), (~zo).sum(axis=0))
    keep_o = np.zeros_like(zo)
    for side in (zo, ~zo):
        keep_o |= side & (np.cumsum(side, axis=0) > side.sum(axis=0) - c)  # the last c of the side
    keep = np.empty_like(z)
    keep[order] = keep_o
    return keep


def shokri(data: CheckpointData, opts: ShokriOptions) -> np.ndarray:
    """Shokri et al.: a classifier trained on other models' (features, membership) scores each target."""
    from sklearn.exceptions import ConvergenceWarning

    x, z = features(data), data.membership
    M, N, F = x.shape
    fold = folds(M, opts, data.refs.rule)
    if len(np.unique(fold)) < 2:
        raise DataError(f"shokri needs at least two folds of reference models; M={M} models under the "
                           f"{data.refs.rule!r} reference rule leave one: use at least 4 models")
    s = np.empty((M, N))
    for k in np.unique(fold):  # K fits, each vectorised over its rows
        train, target = fold != k, fold == k
        use = np.ones((int(train.sum()), N), dtype=bool)
        if data.refs.rule == "balanced":
            use = balanced_rows(z[train], opts.seed)
        xt, yt = x[train][use], z[train][use]
        rows = train_rows(len(yt), opts, int(k))
        with warnings.catch_warnings():  # the MLP stops after max_iter epochs by design
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = make_classifier(opts).fit(xt[rows], yt[rows])
        s[target] = log_odds(clf, x[target].reshape(-1, F), opts).reshape(-1, N)
    return s


register(Attack("shokri", shokri, ShokriOptions, FEATURES,
                description="Shokri: attack classifier on top-3 probabilities and loss, leave-one-fold-out",
                source="Shokri et al., Membership Inference Attacks Against Machine Learning Models, IEEE S&P 2017"))
