"""Model objects restore attribute by attribute from a pickle (reference_model/restore.py).

The transition cache and the shrinker restore machines from pickles; a restored object whose
attributes came back through ``__dict__.update`` loses the class's shared attribute layout and steps
slower.  Every object a machine holds must therefore be a Restorable (or have no ``__dict__``), and a
restored machine must hold the same state as the original.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from difftest.trace.io import open_trace
from reference_model.policies import POLICIES, get_policy
from reference_model.restore import Restorable

REPO = Path(__file__).resolve().parents[2]
TRACES = [*sorted((REPO / "traces" / "bugs").glob("B1[0-9]*.parquet"))[:4],
          *sorted((REPO / "traces" / "pkvm").glob("*.parquet"))[:2]]


def _model_objects(obj: Any, seen: set[int]) -> list[Any]:
    """Every object reachable from ``obj`` whose class is the model's (containers walked through)."""
    if id(obj) in seen or isinstance(obj, (int, str, bytes, float, bool, type(None), type)):
        return []
    seen.add(id(obj))
    found: list[Any] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += _model_objects(k, seen) + _model_objects(v, seen)
        return found
    if isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            found += _model_objects(v, seen)
        return found
    if type(obj).__module__.startswith("reference_model."):
        found.append(obj)
    attrs = getattr(obj, "__dict__", None)
    if attrs is not None:
        for v in attrs.values():
            if not callable(v) or hasattr(v, "__dict__"):
                found += _model_objects(v, seen)
    for name in getattr(type(obj), "__slots__", ()):
        found += _model_objects(getattr(obj, name, None), seen)
    return found


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_model_object_a_machine_holds_restores_attribute_by_attribute(policy: str) -> None:
    for path in TRACES:
        trace = open_trace(path)
        machine = get_policy(policy).build(trace.host())
        for row in trace.rows(with_notes=False):
            if row.event is not None:
                machine.step(row.event)
        held = _model_objects(machine, set())
        assert held, "the walk found nothing"
        plain = sorted({type(o).__qualname__ for o in held if hasattr(o, "__dict__") and not isinstance(o, Restorable)})
        assert not plain, f"{policy}: restored through __dict__.update (slower to step): {plain}"
        twin = pickle.loads(pickle.dumps(machine))
        for a, b in zip(held, _model_objects(twin, set()), strict=True):
            assert type(a) is type(b)
            if hasattr(a, "__dict__"):
                assert {k for k in vars(a) if not k.endswith("handlers")} == {k for k in vars(b) if not k.endswith("handlers")}
