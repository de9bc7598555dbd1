"""Failure signatures: many runs that fail the same way are one problem, shown once with a count.

A run's signature is its status and, for a run that diverged, the first divergence's rule, event
kind and differing fields (a snapshot's path with the vCPU index dropped), plus the known bug it
was declared as.  Runs skipped as not applicable group by their reason.  Reports list the groups
first (worst status first, then the biggest), so 142 failures that are 12 problems read as 12 lines.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from difftest.verdict.results import ReplayResult
from difftest.verdict.run_status import ORDER, Status

_VCPU = re.compile(r"^vcpu\d+\.")


@dataclass(frozen=True)
class Signature:
    status: Status
    rule: str | None = None
    kind: str | None = None
    fields: str | None = None
    bug: str | None = None
    reason: str | None = None  # SKIP: why not applicable

    def rest(self) -> str:
        """What follows the bug id and the rule: event kind and fields, or why."""
        if self.status is Status.SKIP:
            return f"not applicable: {self.reason}"
        if self.status is Status.XPASS:
            return "declared known divergence did not show"
        return " · ".join(p for p in (self.kind, self.fields) if p)

    def label(self) -> str:
        """One line: 'B16 KVM.CTL snapshot · vcpu*.vmcs01.exit_ctls.load_pkrs'."""
        return " ".join(p for p in (self.bug, self.rule, self.rest()) if p)


def signature(res: ReplayResult) -> Signature:
    """The signature of one run (see the module docstring)."""
    st = res.status
    known = res.verdict.known if res.verdict else None
    bug = known.bug if known and known.verdict == "diverge" else None
    if st is Status.SKIP:
        return Signature(st, reason=known.why if known else "")
    first = res.first
    if first is None:
        return Signature(st, bug=bug)
    kind: str | None
    fields: str | None
    if first.snapshot is not None:
        kind, fields = "snapshot", _VCPU.sub("vcpu*.", first.snapshot.path)
    else:
        kind = first.event.kind if first.event else None
        fields = ",".join(sorted({d.field for d in first.diffs})) or None
    return Signature(st, first.primary_rule, kind, fields, bug)


@dataclass
class Group:
    """Runs sharing one signature, in run order."""

    anchor: str
    signature: Signature
    runs: list[ReplayResult] = field(default_factory=list)

    @property
    def traces(self) -> int:
        return len({r.trace for r in self.runs})

    @property
    def policies(self) -> list[tuple[str, int]]:
        return sorted(Counter(r.policy for r in self.runs).items())


def group_runs(results: Sequence[ReplayResult], statuses: Sequence[Status] = ORDER[:-1]) -> list[Group]:
    """Groups of the runs whose status is in ``statuses`` (default: all but PASS), worst and biggest first."""
    groups: dict[Signature, Group] = {}
    for r in results:
        if r.status not in statuses:
            continue
        sig = signature(r)
        g = groups.get(sig)
        if g is None:
            g = groups[sig] = Group("", sig)
        g.runs.append(r)
    rank = {s: i for i, s in enumerate(ORDER)}
    out = sorted(groups.values(), key=lambda g: (rank[g.signature.status], -len(g.runs), g.signature.label()))
    for n, g in enumerate(out):
        g.anchor = f"g{n}"
    return out
