"""Open registries: attacks, models, datasets and queries, by name.

One small type for all four. ``register(name, obj)`` refuses a name that is taken (pass
``replace=True`` to override on purpose); a lookup of an unknown name lists what exists. The
built-in entries and plugins are loaded on the first lookup: the built-ins from their modules,
plugins from the entry-point groups ``privdyn.attacks``, ``privdyn.models``, ``privdyn.datasets``
and ``privdyn.queries``. An entry point names a module (importing it registers its entries) or a
function taking no arguments that registers them, e.g. in a plugin's ``pyproject.toml``::

    [project.entry-points."privdyn.attacks"]
    my_attack = "my_package.attacks:register"

This module imports nothing from privdyn, so every layer may use it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Named entries of one kind, with built-ins and plugins loaded on first use."""

    def __init__(self, kind: str, group: str, builtins: tuple[str, ...] = ()):
        self.kind, self.group, self._builtins = kind, group, builtins
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, obj: T, *, replace: bool = False) -> T:
        """Add ``obj`` as ``name``; a taken name is an error unless ``replace``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries and not replace and self._entries[name] is not obj:
            raise ValueError(f"a {self.kind} named {name!r} is already registered; pick another name or pass "
                             "replace=True to override it")
        self._entries[name] = obj
        return obj

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # first: the modules imported below register into this registry
        for module in self._builtins:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            obj = ep.load()
            if ep.attr and callable(obj):
                obj()

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries))}") from None

    def get(self, name: str, default: T | None = None) -> T | None:
        """The entry ``name``, or ``default`` when nothing is registered by that name."""
        self._load()
        return self._entries.get(name, default)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, in registration order."""
        self._load()
        return list(self._entries.items())

    def values(self) -> list[T]:
        """The entries, in registration order."""
        self._load()
        return list(self._entries.values())

    def unregister(self, name: str) -> None:
        """Remove an entry (tests and interactive sessions that registered one)."""
        self._entries.pop(name, None)


# The entry types live in the layers that define them (attacks.Attack, data.DatasetEntry, ...),
# which this module must not import; those modules re-export these with their types.
ATTACKS: Registry[Any] = Registry("attack", "privdyn.attacks", ("privdyn.attacks",))
MODELS: Registry[Any] = Registry("model", "privdyn.models", ("privdyn.models",))
DATASETS: Registry[Any] = Registry("dataset", "privdyn.datasets", ("privdyn.data.registry",))
QUERIES: Registry[Any] = Registry("query", "privdyn.queries", ("privdyn.training.queries",))
