"""Attack-R (Ye et al. 2022): the target's loss ranked against its OUT references' losses.

s[m, i] = share of the OUT references of (m, i) whose loss on i is >= the target's loss on i,
losses first averaged over queries. Per sample the OUT losses are sorted once (IN models set to
+inf so they are never counted); one batched ``searchsorted`` counts, for every target, the OUT
losses strictly below its own; the models that are not the target's references (the target
itself, and its partner under the default rule) are then taken out of the count.
"""

from __future__ import annotations

import numpy as np

from privdyn.attacks.base import Attack, CheckpointData, NoOptions, count_below, register
from privdyn.attacks.references import at_excluded, ref_counts, require_references


def attack_r(data: CheckpointData, opts: NoOptions) -> np.ndarray:
    """Share of the target's OUT-reference losses at or above its own loss (Attack-R)."""
    loss = data.pool_signal("loss").mean(axis=-1)
    out = ~data.membership
    refs = data.refs
    n_ref = ref_counts(out, refs)
    require_references(n_ref, "OUT", refs)
    below = count_below(np.where(out, loss, np.inf).T, loss.T).T
    excluded = at_excluded(out, refs) & (at_excluded(loss, refs) >= loss)  # OUT, at or above, not a reference
    return (out.sum(axis=0) - below - excluded.sum(axis=0)) / n_ref


register(Attack("attack_r", attack_r, NoOptions, ("loss",), per_sample=True,
                description="Attack-R: share of OUT-reference losses at or above the target's loss",
                source="Ye et al., Enhanced Membership Inference Attacks against Machine Learning Models, CCS 2022"))
