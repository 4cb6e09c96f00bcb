"""The array type the streaming core functions read: anything with a shape that gives one
checkpoint as a numpy array by ``x[t]`` (a numpy array, or the store's checkpoint array)."""

from __future__ import annotations

from typing import Any, Protocol


class Checkpoints(Protocol):
    """A ``[T, ...]`` array read one checkpoint at a time."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape, checkpoints first."""
        ...

    def __getitem__(self, key: Any, /) -> Any:
        """``x[t]``: one checkpoint as a numpy array (and numpy's other indexing)."""
        ...
