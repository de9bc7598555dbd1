"""The fast engine: record batches evaluated on columns, with the model asked once per distinct state.

Page accesses are checked once per distinct (vCPU state, page, access kind, CPL) through dense tables;
other rows go through a transition cache of the model's own steps.  Same results as the reference
engine, down to rule coverage (``tests/test_fast_replay.py`` and ``tests/test_transition_cache.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difftest.trace.io import TraceFile
from difftest.verdict.profiles import Profile
from reference_model.policies import Policy

if TYPE_CHECKING:
    from difftest.engine.reference import RowObserver
    from difftest.verdict.compare import CompareResult
    from difftest.verdict.results import ReplayResult

__all__ = ["FastEngine", "can_use"]


def can_use(trace: object, observer: object = None) -> bool:
    """The fast engine needs a trace file, no per-row observer and the model as written (numpy loaded only now)."""
    from difftest.engine.fast.replay import can_use as accepts

    return accepts(trace, observer)


class FastEngine:
    """Columns and memoised model steps; needs a trace file, no per-row observer and the model as written."""

    name = "fast"

    def accepts(self, trace: TraceFile, observer: RowObserver | None = None) -> bool:
        return can_use(trace, observer)

    def replay(self, trace: TraceFile, policy: Policy, profile: Profile,
               observer: RowObserver | None = None) -> ReplayResult:
        from difftest.engine.fast.replay import fast_replay_trace

        return fast_replay_trace(trace, policy, profile)

    def compare(self, trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile) -> CompareResult:
        from difftest.engine.fast.compare import fast_compare_trace

        return fast_compare_trace(trace, policy_a, policy_b, profile)
