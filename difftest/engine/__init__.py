"""Engines: drive a policy's machine with a trace's rows, chosen by name behind one interface.

``reference`` steps the model row by row (:mod:`difftest.engine.reference`); ``fast`` evaluates record
batches on columns and asks the model only for what it has not seen (:mod:`difftest.engine.fast`).
Both return the same result objects; ``DIFFTEST_REFERENCE=1`` (or ``difftest --reference``) forces the
reference engine, and a per-row observer needs it.
"""

from __future__ import annotations

import time
from typing import Protocol

from difftest.engine.fast import FastEngine, can_use
from difftest.engine.reference import ReferenceEngine, RowObserver
from difftest.trace.io import TraceFile
from difftest.verdict.compare import CompareResult
from difftest.verdict.profiles import Profile
from difftest.verdict.results import ReplayResult, attach_notes
from reference_model.policies import Policy

__all__ = ["ENGINES", "Engine", "RowObserver", "can_use", "compare_trace", "get_engine", "replay_trace"]


class Engine(Protocol):
    """What every engine offers: replay one trace, or compare two policies on it, with the same results."""

    name: str

    def accepts(self, trace: TraceFile, observer: RowObserver | None = None) -> bool:
        """Whether this engine can run ``trace`` (with ``observer``) and give the reference's result."""
        ...

    def replay(self, trace: TraceFile, policy: Policy, profile: Profile,
               observer: RowObserver | None = None) -> ReplayResult:
        """Replay ``trace`` under ``policy``; the divergences, counters and rule hits as :class:`ReplayResult`."""
        ...

    def compare(self, trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile) -> CompareResult:
        """Replay ``trace`` under two policies in lockstep and collect where they differ."""
        ...


ENGINES: dict[str, Engine] = {e.name: e for e in (ReferenceEngine(), FastEngine())}


def get_engine(name: str) -> Engine:
    """The engine registered as ``name`` (``KeyError`` naming the known ones otherwise)."""
    try:
        return ENGINES[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r} (known: {', '.join(sorted(ENGINES))})") from None


def _choose(trace: TraceFile, observer: RowObserver | None, engine: str | None) -> Engine:
    if engine is not None:
        return get_engine(engine)
    fast = ENGINES["fast"]
    return fast if fast.accepts(trace, observer) else ENGINES["reference"]


def replay_trace(trace: TraceFile, policy: Policy, profile: Profile, observer: RowObserver | None = None,
                 engine: str | None = None) -> ReplayResult:
    """Replay one opened trace under ``policy`` with ``profile`` on ``engine`` (default: the fastest that accepts it).

    ``observer`` is called after every row with the row, its result and the machine (reference engine).
    """
    t0 = time.perf_counter()
    result = _choose(trace, observer, engine).replay(trace, policy, profile, observer)
    shown = [*result.context, *result.divergences]
    attach_notes(shown, trace.notes_for(r.index for r in shown))
    result.seconds = time.perf_counter() - t0
    return result


def compare_trace(trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile,
                  engine: str | None = None) -> CompareResult:
    """Replay ``trace`` under both policies in lockstep on ``engine`` and collect their differences."""
    res = _choose(trace, None, engine).compare(trace, policy_a, policy_b, profile)
    shown = [*res.context, *res.differences]
    rows = [r for cr in shown for r in (cr.a, cr.b)] + [
        *res.replay_a.context, *res.replay_a.divergences, *res.replay_b.context, *res.replay_b.divergences]
    attach_notes(rows, trace.notes_for(r.index for r in rows))
    return res
