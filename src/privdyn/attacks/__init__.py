"""Membership-inference attacks: a registry of pure functions from signals to scores.

Importing the attack modules registers them, in the order of DESIGN.md.
"""

from privdyn.attacks import lira  # noqa: F401, I001  (registration order is the import order)
from privdyn.attacks import rmia  # noqa: F401
from privdyn.attacks import attack_r  # noqa: F401
from privdyn.attacks import baselines  # noqa: F401
from privdyn.attacks import shokri  # noqa: F401
from privdyn.attacks.base import ATTACKS, Attack, AttackOptionsBase, CheckpointData, NoOptions, register

__all__ = ["ATTACKS", "Attack", "AttackOptionsBase", "CheckpointData", "NoOptions", "register"]
