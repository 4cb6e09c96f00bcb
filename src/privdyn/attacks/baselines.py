"""No-reference baselines: a score from the target's own output only, averaged over queries.

``loss``: -loss (Yeom et al. 2018); ``confidence``: p_y = exp(-loss); ``entropy``: -entropy of the
predicted distribution; ``mentropy``: -modified entropy (Song & Mittal 2021). Higher = member.
"""

from __future__ import annotations

import numpy as np

from privdyn.attacks.base import Attack, CheckpointData, NoOptions, register


def loss(data: CheckpointData, opts: NoOptions) -> np.ndarray:
    """Negated mean loss: members have lower loss."""
    return -data.pool_signal("loss").mean(axis=-1)


def confidence(data: CheckpointData, opts: NoOptions) -> np.ndarray:
    """Probability of the true class, exp(-loss)."""
    return np.exp(-data.pool_signal("loss")).mean(axis=-1)


def entropy(data: CheckpointData, opts: NoOptions) -> np.ndarray:
    """Negated prediction entropy: members get sharper predictions."""
    return -data.pool_signal("entropy").mean(axis=-1)


def mentropy(data: CheckpointData, opts: NoOptions) -> np.ndarray:
    """Negated modified entropy (Song and Mittal 2021)."""
    return -data.pool_signal("mentropy").mean(axis=-1)


_YEOM = "Yeom et al., Privacy Risk in Machine Learning, CSF 2018"
_SONG = "Song & Mittal, Systematic Evaluation of Privacy Risks of Machine Learning Models, USENIX Security 2021"
register(Attack("loss", loss, NoOptions, ("loss",), per_sample=True,
                description="LOSS: minus the target's loss", source=_YEOM))
register(Attack("confidence", confidence, NoOptions, ("loss",), per_sample=True,
                description="confidence p_y of the true label", source=_SONG))
register(Attack("entropy", entropy, NoOptions, ("entropy",), per_sample=True,
                description="minus the prediction entropy", source=_SONG))
register(Attack("mentropy", mentropy, NoOptions, ("mentropy",), per_sample=True,
                description="minus the modified prediction entropy", source=_SONG))
