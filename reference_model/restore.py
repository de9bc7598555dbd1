"""How the model's objects come back from a pickle (the fast engine's transition cache and the shrinker's
checkpoints restore machines by the thousand).

CPython 3.11+ keeps an instance's attributes in a layout its class shares, as long as they are set one
by one; pickle's default restore (``obj.__dict__.update(state)``) gives every restored object a dict of
its own instead, and each attribute read then takes a slower path: a restored machine stepped about a
quarter slower than the one it was pickled from.  Restoring attribute by attribute keeps the layout.
"""

from __future__ import annotations

from collections.abc import Mapping


def restore(obj: object, state: Mapping[str, object]) -> None:
    """Set ``obj``'s pickled attributes one by one (frozen dataclasses included), as its ``__init__`` did."""
    for name, value in state.items():
        object.__setattr__(obj, name, value)


class Restorable:
    """A model object restored from a pickle with :func:`restore`."""

    def __setstate__(self, state: dict[str, object]) -> None:
        restore(self, state)
