"""The result of comparing two policies on one trace, and which rule a difference concerns.

An engine replays both machines in lockstep; after each event the outcomes are diffed field by
field and the observable PKRS state of the vCPU (``Machine.observe``: the guest's effective PKRS,
the host's PKRS after the last exit) is compared.  Snapshot rows compare the named state under
both.  Each side is also diffed against the trace's expectations, so one result tells both "do A
and B differ" and "which of them is right".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from difftest.trace.io import TraceFile
from reference_model.policies import Policy
from reference_model.rules import describe

from .diff import FieldDiff
from .profiles import Profile
from .results import ReplayResult, RowResult


@dataclass
class CompareRow:
    """One row under both policies."""

    a: RowResult
    b: RowResult
    diffs: list[FieldDiff] = field(default_factory=list)
    rule: str | None = None
    consequential: bool = False

    @property
    def index(self) -> int:
        return self.a.index

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.a.index,
            "seq": self.a.seq,
            "event": self.a.describe_event(),
            "a": self.a.describe_actual(),
            "b": self.b.describe_actual(),
            "a_rules": list(self.a.rules),
            "b_rules": list(self.b.rules),
            "diffs": [{"field": d.field, "a": _j(d.expected), "b": _j(d.actual)} for d in self.diffs],
            "rule": self.rule,
            "consequential": self.consequential,
        }


def _j(v: object) -> object:
    return list(v) if isinstance(v, tuple) else v


@dataclass
class CompareResult:
    """Everything a comparison of two policies on one trace found."""

    trace: str
    trace_name: str
    policy_a: str
    policy_b: str
    replay_a: ReplayResult
    replay_b: ReplayResult
    events: int = 0
    difference_count: int = 0
    differences: list[CompareRow] = field(default_factory=list)
    context: list[CompareRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def differ(self) -> bool:
        return self.difference_count > 0

    @property
    def first(self) -> CompareRow | None:
        return self.differences[0] if self.differences else None

    def to_json(self) -> dict[str, Any]:
        first = self.first
        return {
            "trace": self.trace,
            "name": self.trace_name,
            "policy_a": self.policy_a,
            "policy_b": self.policy_b,
            "differ": self.differ,
            "events": self.events,
            "differences": self.difference_count,
            "first_difference": first.to_json() if first else None,
            "first_rule": first.rule if first else None,
            "first_rule_text": describe(first.rule) if first and first.rule else None,
            "context": [r.to_json() for r in self.context],
            "later_differences": [r.to_json() for r in self.differences[1:]],
            "counters_a": dict(sorted(self.replay_a.counters.items())),
            "counters_b": dict(sorted(self.replay_b.counters.items())),
            "expectations_a": {"divergences": self.replay_a.divergence_count, "compared": self.replay_a.compared},
            "expectations_b": {"divergences": self.replay_b.divergence_count, "compared": self.replay_b.compared},
        }


_KVM_FAMILIES = ("KVM.", "PKVM.")


def rule_for(a: RowResult, b: RowResult, state_rule: str | None) -> str | None:
    """The rule a difference concerns, as a reviewer would name it.

    Outcome differences: a KVM/pKVM rule only one side cited (policy A's first), else a KVM rule both
    cited for the event whose architectural consequence differs, else any rule only one side cited.
    State-only differences: the host's PKRS after an exit is KVM.HOST's; the guest's PKRS is the
    event's own KVM rule (INIT -> KVM.RESET, a nested-state restore -> KVM.NESTED.ENTRY), else
    VMX.ENTRY.LOAD.  The trace's own citation decides snapshot rows.
    """
    if a.snapshot is not None:
        return a.primary_rule
    ra = a.outcome.rules if a.outcome else ()
    rb = b.outcome.rules if b.outcome else ()
    only = [r for r in (*ra, *rb) if (r in ra) != (r in rb)]
    shared_kvm = [r for r in ra if r in rb and r.startswith(_KVM_FAMILIES)]
    if only:
        kvm_only = [r for r in only if r.startswith(_KVM_FAMILIES)]
        if kvm_only:
            return kvm_only[0]
        return shared_kvm[-1] if shared_kvm else only[0]
    if state_rule == "KVM.HOST":
        return state_rule
    own = [r for r in ra if r.startswith(_KVM_FAMILIES)]
    if own:
        return own[0]
    if a.expect and a.expect.rule:
        return a.expect.rule
    return state_rule or a.primary_rule


def new_compare_result(trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile) -> CompareResult:
    """An empty CompareResult for ``trace``, with each side's ReplayResult."""
    ra = ReplayResult(str(trace.path), trace.name, policy_a.name, profile.name, meta=dict(trace.meta))
    rb = ReplayResult(str(trace.path), trace.name, policy_b.name, profile.name, meta=dict(trace.meta))
    return CompareResult(str(trace.path), trace.name, policy_a.name, policy_b.name, ra, rb)


