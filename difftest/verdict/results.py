"""Result objects of a replay: what reporters (text, JSON, HTML, JUnit) consume.

They hold only what a report shows: counts, the divergences, the context around the first one,
the counters and the rule coverage.  Nothing here re-runs the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from difftest.trace.io import Expect, Snapshot
from reference_model.events import Event, Outcome
from reference_model.rules import describe

from .diff import FieldDiff, fmt

CONTEXT = 5  # events of context on each side of the first divergence
MAX_KEPT_DIVERGENCES = 200  # later ones are counted, not kept


@dataclass(slots=True)
class RowResult:
    """One replayed row: the event (or snapshot), what was expected and what the model did."""

    index: int
    seq: int
    event: Event | None
    expect: Expect | None
    outcome: Outcome | None
    snapshot: Snapshot | None = None
    actual_state: int | None = None
    diffs: list[FieldDiff] = field(default_factory=list)
    masked: list[FieldDiff] = field(default_factory=list)
    note: str | None = None
    consequential: bool = False
    status: str = "pass"  # pass | diverge | masked | uncompared | not-modelled

    @property
    def rules(self) -> tuple[str, ...]:
        """Rule ids this row concerns: the model's decision first, then the trace's citation."""
        out = list(self.outcome.rules) if self.outcome else []
        cited = self.expect.rule if self.expect else self.snapshot.rule if self.snapshot else None
        if cited and cited not in out:
            out.append(cited)
        return tuple(out)

    @property
    def primary_rule(self) -> str | None:
        """The rule a reviewer should read first: the trace's citation, else the model's last."""
        if self.expect and self.expect.rule:
            return self.expect.rule
        if self.snapshot is not None and self.snapshot.rule:
            return self.snapshot.rule
        if self.outcome and self.outcome.rules:
            return self.outcome.rules[-1]
        return None

    def describe_event(self) -> str:
        if self.snapshot is not None:
            return f"snapshot {self.snapshot.path}"
        assert self.event is not None
        ev = self.event
        args = " ".join(f"{k}={fmt(k, v)}" for k, v in ev.inputs().items() if k not in ("vcpu", "level"))
        return f"{ev.level}/vcpu{ev.vcpu} {ev.kind} {args}".rstrip()

    def describe_expect(self) -> str:
        if self.snapshot is not None:
            return fmt("value", self.snapshot.value)
        if self.expect is None:
            return "-"
        parts = [self.expect.result or "?"]
        for name in ("pfec", "cr2", "value", "values", "count", "exit_reason", "vm_error", "exit_qual"):
            v = getattr(self.expect, name)
            if v is not None:
                parts.append(f"{name}={fmt(name, v)}")
        return " ".join(parts)

    def describe_actual(self) -> str:
        if self.snapshot is not None:
            return "not modelled" if self.actual_state is None else fmt("value", self.actual_state)
        return self.outcome.brief() if self.outcome else "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seq": self.seq,
            "event": self.describe_event(),
            "expected": self.describe_expect(),
            "actual": self.describe_actual(),
            "status": self.status,
            "rules": list(self.rules),
            "primary_rule": self.primary_rule,
            "diffs": [{"field": d.field, "expected": _j(d.expected), "actual": _j(d.actual)} for d in self.diffs],
            "masked": [{"field": d.field, "expected": _j(d.expected), "actual": _j(d.actual), "mask": d.mask,
                        "reason": d.mask_reason} for d in self.masked],
            "consequential": self.consequential,
            "note": self.note,
        }


def _j(v: object) -> object:
    return list(v) if isinstance(v, tuple) else v


def attach_notes(rows: list[RowResult], notes: dict[int, str]) -> None:
    """Give reported rows the notes the streaming pass left out (see TraceFile.batches)."""
    for r in rows:
        if r.note is None:
            r.note = notes.get(r.index)


@dataclass
class ReplayResult:
    """Everything one replay of one trace under one policy and profile found."""

    trace: str
    trace_name: str
    policy: str
    profile: str
    meta: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    events: int = 0
    compared: int = 0
    snapshots: int = 0
    not_modelled: int = 0
    divergence_count: int = 0
    divergences: list[RowResult] = field(default_factory=list)
    masked_count: int = 0
    masked_by: Counter[str] = field(default_factory=Counter)
    context: list[RowResult] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    rule_hits: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.divergence_count == 0

    @property
    def first(self) -> RowResult | None:
        return self.divergences[0] if self.divergences else None

    def to_json(self) -> dict[str, Any]:
        first = self.first
        return {
            "trace": self.trace,
            "name": self.trace_name,
            "policy": self.policy,
            "profile": self.profile,
            "passed": self.passed,
            "rows": self.rows,
            "events": self.events,
            "compared": self.compared,
            "snapshots": self.snapshots,
            "not_modelled": self.not_modelled,
            "divergences": self.divergence_count,
            "masked": self.masked_count,
            "masked_by": dict(sorted(self.masked_by.items())),
            "first_divergence": first.to_json() if first else None,
            "first_rule": first.primary_rule if first else None,
            "first_rule_text": describe(first.primary_rule) if first and first.primary_rule else None,
            "context": [r.to_json() for r in self.context],
            "later_divergences": [r.to_json() for r in self.divergences[1:]],
            "counters": dict(sorted(self.counters.items())),
            "rule_hits": dict(sorted(self.rule_hits.items())),
            "meta": dict(sorted(self.meta.items())),
        }
