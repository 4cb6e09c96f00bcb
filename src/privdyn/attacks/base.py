"""What every attack is: a pure function from one checkpoint's signals to scores.

An attack takes :class:`CheckpointData` (signals of all M models at one checkpoint, the
membership matrix) and its own validated options, and returns float64 scores ``[M, N]``, higher
meaning "more likely a member". Reference-model attacks score target m against the models at the
same checkpoint that ``data.references`` names (by default leave-pair-out, see
:mod:`privdyn.attacks.references`). The registry maps attack names to :class:`Attack` entries;
the config builds its ``attack_options`` section from it. Attacks that share a fused scoring
function (``Attack.fused``) can be scored together by :func:`run_fused`, one read of their signals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from privdyn.attacks.references import References, reference_plan
from privdyn.errors import DataError
from privdyn.registry import ATTACKS as _ATTACKS
from privdyn.registry import Registry


class AttackOptionsBase(BaseModel):
    """Base of every attack's options: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoOptions(AttackOptionsBase):
    """For attacks without options."""


@dataclass(frozen=True)
class CheckpointData:
    """Signals at one checkpoint: ``pool[name]`` is ``[M, N, Q]``, ``test[name]`` ``[M, N_test, Q]``.

    ``references``: each target's reference models; None = the default rule (``pair``) for this
    membership. Build it once per run with :func:`reference_plan` and pass it to every checkpoint.
    """

    pool: Mapping[str, np.ndarray]
    test: Mapping[str, np.ndarray]
    membership: np.ndarray
    references: References | None = None

    def __post_init__(self) -> None:
        z = np.asarray(self.membership)
        if z.ndim != 2 or z.dtype != bool:
            raise DataError(f"membership must be a bool [M, N] matrix; got {z.dtype} {z.shape}")
        if self.references is None:
            object.__setattr__(self, "references", reference_plan(z))
        elif self.references.excluded.shape[1:] != z.shape:
            raise DataError(f"the reference plan covers {self.references.excluded.shape[1:]} (models, "
                               f"samples) but the membership is {z.shape}; build it from this membership")
        for split, signals, n in (("pool", self.pool, z.shape[1]), ("test", self.test, None)):
            for name, arr in signals.items():
                if arr.ndim != 3 or arr.shape[0] != z.shape[0] or (n is not None and arr.shape[1] != n):
                    raise DataError(
                        f"{split} signal {name!r} has shape {arr.shape}; expected [M={z.shape[0]}, "
                        f"{'N=' + str(n) if n is not None else 'N_test'}, Q] from the membership matrix "
                        "(signals and membership of different runs?)"
                    )

    @property
    def n_models(self) -> int:
        """M, the number of models."""
        return int(self.membership.shape[0])

    def samples(self, block: slice) -> CheckpointData:
        """The same checkpoint restricted to a block of pool samples (views, no copies)."""
        return CheckpointData({k: v[:, block] for k, v in self.pool.items()}, self.test, self.membership[:, block],
                              self.refs.samples(block))

    @property
    def refs(self) -> References:
        """The reference plan (never None after construction)."""
        assert self.references is not None
        return self.references

    def pool_signal(self, name: str) -> np.ndarray:
        """Pool signal ``[M, N, Q]`` as float64, checked to be finite."""
        return _finite(self.pool, name, "pool")

    def check_finite(self, pool: tuple[str, ...], test: tuple[str, ...]) -> None:
        """Raise for the first NaN or infinite value of the named signals (before any blocking)."""
        for name in pool:
            _check(self.pool, name, "pool")
        for name in test:
            _check(self.test, name, "test")

    def test_signal(self, name: str) -> np.ndarray:
        """Test-split signal ``[M, N_test, Q]`` as float64, checked to be finite and non-empty."""
        x = _finite(self.test, name, "test")
        if x.shape[1] == 0:
            raise DataError(f"test signal {name!r} is empty; this attack needs test samples (a test split "
                            "of at least one sample)")
        return x


def _finite(signals: Mapping[str, np.ndarray], name: str, split: str) -> np.ndarray:
    _check(signals, name, split)
    return np.asarray(signals[name], dtype=np.float64)


def _check(signals: Mapping[str, np.ndarray], name: str, split: str) -> None:
    if name not in signals:
        raise DataError(f"{split} signal {name!r} was not loaded; declare it in the attack's "
                           f"{'needs' if split == 'pool' else 'needs_test'}")
    x = np.asarray(signals[name])
    bad = ~np.isfinite(x)
    if bad.any():
        m, i, q = np.argwhere(bad)[0]
        raise DataError(
            f"{split} signal {name!r} has {int(bad.sum())} NaN or infinite values (first: model {m}, "
            f"sample {i}, query {q}). Non-finite outputs mean training diverged: lower the learning "
            "rate or add gradient clipping, then retrain."
        )


#: elements (models x samples x queries) per block for attacks scored block by block: small
#: enough that the temporaries of one block stay in the CPU cache.
SAMPLE_BLOCK = 1 << 17


#: Above this many (pop, value) pairs per row, :func:`count_below` sorts instead of comparing all.
PAIRWISE_LIMIT = 1 << 12


def count_below(pop: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row r, how many entries of ``pop[r]`` lie strictly below each ``values[r, j]``.

    ``pop`` ``[R, K]`` (any order, may hold +inf), ``values`` ``[R, J]`` finite. Short rows (a few
    models) compare every pair; long ones sort both per row, values first, so that ties do not
    count (numpy's searchsorted has no batched form).
    """
    R, J = values.shape
    if pop.shape[1] * J <= PAIRWISE_LIMIT:
        return (pop[:, :, None] < values[:, None, :]).sum(axis=1)
    order = np.argsort(np.concatenate([values, pop], axis=1), axis=1, kind="stable")
    below = np.cumsum(order >= J, axis=1)
    is_value = order < J
    out = np.empty((R, J), dtype=np.int64)
    np.put_along_axis(out, order[is_value].reshape(R, J), below[is_value].reshape(R, J), axis=1)
    return out


#: Scores several attacks of one family from one pass over their signals: called with each
#: attack's options by name, returns each attack's scores ``[M, N]`` by name (see Attack.fused).
FusedScore = Callable[[CheckpointData, Mapping[str, Any]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Attack:
    """A registry entry: the scoring function, its options model and the signals it reads.

    ``per_sample``: the scores of sample i depend only on sample i's signals, so :meth:`run`
    scores blocks of samples one after another (same result, cache-sized temporaries).
    ``fused``: attacks that share it (the LiRA variants) can be scored together by
    :func:`run_fused`, which reads their signals once and gives each the scores :meth:`run` gives.
    """

    name: str
    score: Callable[[CheckpointData, Any], np.ndarray]
    options: type[AttackOptionsBase]
    needs: tuple[str, ...]
    needs_test: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    per_sample: bool = False
    fused: FusedScore | None = None

    def checked_options(self, opts: AttackOptionsBase | None) -> AttackOptionsBase:
        """``opts`` (None = the defaults), refused when it is not this attack's options type."""
        opts = self.options() if opts is None else opts
        if not isinstance(opts, self.options):
            raise TypeError(f"{self.name} takes {self.options.__name__}, got {type(opts).__name__}")
        return opts

    def checked_scores(self, s: np.ndarray, data: CheckpointData) -> np.ndarray:
        """``s`` as float64, refused unless it is ``[M, N]`` and finite."""
        s = np.asarray(s, dtype=np.float64)
        if s.shape != data.membership.shape:
            raise RuntimeError(f"{self.name} returned shape {s.shape}, expected {data.membership.shape}")
        if not np.isfinite(s).all():
            raise DataError(f"{self.name} produced {int((~np.isfinite(s)).sum())} non-finite scores "
                               "from finite signals; please report this as a bug")
        return s

    def run(self, data: CheckpointData, opts: AttackOptionsBase | None = None) -> np.ndarray:
        """Score one checkpoint; checks the options type, the output shape and finiteness."""
        opts = self.checked_options(opts)
        data.check_finite(self.needs, self.needs_test)
        M, N = data.membership.shape
        q = max((v.shape[-1] for v in data.pool.values()), default=1)
        step = max(1, SAMPLE_BLOCK // (M * q)) if self.per_sample else N
        if step >= N:
            s = np.asarray(self.score(data, opts), dtype=np.float64)
        else:
            s = np.concatenate([np.asarray(self.score(data.samples(slice(i, i + step)), opts), dtype=np.float64)
                                for i in range(0, N, step)], axis=1)
        return self.checked_scores(s, data)


def run_fused(attacks: Sequence[Attack], data: CheckpointData,
              options: Mapping[str, AttackOptionsBase | None] | None = None) -> dict[str, np.ndarray]:
    """Score one checkpoint for several attacks that share one ``fused`` function, in one pass.

    Each attack's options are checked as :meth:`Attack.run` checks them (missing = its defaults),
    the signals are checked once, and each attack gets the scores its own :meth:`Attack.run` gives.
    """
    if not attacks:
        return {}
    fused = attacks[0].fused
    if fused is None or any(a.fused is not fused for a in attacks):
        raise ValueError(f"{[a.name for a in attacks]} do not share one fused scoring function")
    options = options or {}
    opts = {a.name: a.checked_options(options.get(a.name)) for a in attacks}
    data.check_finite(tuple(dict.fromkeys(s for a in attacks for s in a.needs)),
                      tuple(dict.fromkeys(s for a in attacks for s in a.needs_test)))
    scores = fused(data, opts)
    return {a.name: a.checked_scores(scores[a.name], data) for a in attacks}


#: Every attack by name (built-ins in DESIGN.md's order, then plugins: ``privdyn.registry``).
ATTACKS: Registry[Attack] = _ATTACKS


def register(attack: Attack, *, replace: bool = False) -> Attack:
    """Make ``attack`` available by its name to configs, the CLI and the pipeline."""
    return ATTACKS.register(attack.name, attack, replace=replace)
