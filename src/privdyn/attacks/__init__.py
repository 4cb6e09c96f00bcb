"""Membership-inference attacks: a registry of pure functions from signals to scores."""

from privdyn.attacks import lira  # noqa: F401  (registers the LiRA attacks)
from privdyn.attacks.base import ATTACKS, Attack, CheckpointData, register

__all__ = ["ATTACKS", "Attack", "CheckpointData", "register"]
