"""Compare two policies on one trace: lockstep replay, per-event outcome and state differences.

Both machines see every event; after each one the outcomes are diffed field by field and the
observable PKRS state of the vCPU (``Machine.observe``: the guest's effective PKRS, the host's
PKRS after the last exit) is compared.  Snapshot rows compare the named state under both.  The
same pass also diffs each policy against the trace's expectations, so one run tells both "do A
and B differ" and "which of them is right".
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from reference_model.machine import OBSERVED_STATE, Machine
from reference_model.policies import Policy
from reference_model.rules import describe

from .diff import FieldDiff, diff_outcome, diff_outcomes, fmt
from .profiles import Profile
from .results import CONTEXT, MAX_KEPT_DIVERGENCES, ReplayResult, RowResult, attach_notes
from .trace_io import TraceFile, TraceRow


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


def _rule_for(a: RowResult, b: RowResult, state_rule: str | None) -> str | None:
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


def compare_trace(trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile) -> CompareResult:
    """Replay ``trace`` under both policies in lockstep and collect their differences.

    A trace file goes through :mod:`difftest.fast_compare` (same result, record batches on
    columns) unless ``DIFFTEST_REFERENCE=1`` asks for this row-by-row path.
    """
    from .fast_replay import can_use

    if can_use(trace):
        from .fast_compare import fast_compare_trace

        return _with_notes(trace, fast_compare_trace(trace, policy_a, policy_b, profile))
    return _with_notes(trace, _compare_rows(trace, policy_a, policy_b, profile))


def _with_notes(trace: TraceFile, res: CompareResult) -> CompareResult:
    """Attach the notes of the reported rows (the streaming pass leaves the note column out)."""
    shown = [*res.context, *res.differences]
    rows = [r for cr in shown for r in (cr.a, cr.b)] + [
        *res.replay_a.context, *res.replay_a.divergences, *res.replay_b.context, *res.replay_b.divergences]
    attach_notes(rows, trace.notes_for(r.index for r in rows))
    return res


def new_compare_result(trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile) -> CompareResult:
    """An empty CompareResult for ``trace``, with each side's ReplayResult."""
    ra = ReplayResult(str(trace.path), trace.name, policy_a.name, profile.name, meta=dict(trace.meta))
    rb = ReplayResult(str(trace.path), trace.name, policy_b.name, profile.name, meta=dict(trace.meta))
    return CompareResult(str(trace.path), trace.name, policy_a.name, policy_b.name, ra, rb)


def compare_snapshot(row: TraceRow, machines: tuple[Machine, Machine],
                     reps: tuple[ReplayResult, ReplayResult]) -> tuple[RowResult, RowResult, list[FieldDiff]]:
    """A snapshot row on both machines: each side's result (counted in its replay) and their difference."""
    snap = row.snapshot
    assert snap is not None
    sides = []
    for m, rep in zip(machines, reps, strict=True):
        rr = RowResult(row.index, row.seq, None, None, None, snapshot=snap, note=row.note)
        try:
            rr.actual_state = m.snapshot(snap.path)
            rep.snapshots += 1
            rep.compared += 1
            if rr.actual_state != snap.value:
                rr.diffs = [FieldDiff(snap.path, snap.value, rr.actual_state)]
                rr.status = "diverge"
                rep.divergence_count += 1
        except KeyError:
            rr.status = "not-modelled"
            rep.not_modelled += 1
        sides.append(rr)
    xa, xb = sides
    diffs = []
    if xa.actual_state is not None and xb.actual_state is not None and xa.actual_state != xb.actual_state:
        diffs.append(FieldDiff(snap.path, xa.actual_state, xb.actual_state))
    return xa, xb, diffs


def compare_row(row: TraceRow, machines: tuple[Machine, Machine], res: CompareResult, profile: Profile) -> CompareRow:
    """One row on both machines: its CompareRow (with its rule if the sides differ), counted in ``res``'s replays."""
    ma, mb = machines
    ra, rb = res.replay_a, res.replay_b
    state_rule = None
    if row.snapshot is not None:
        xa, xb, diffs = compare_snapshot(row, (ma, mb), (ra, rb))
    else:
        ev = row.event
        assert ev is not None
        oa, ob = ma.step(ev), mb.step(ev)
        res.events += 1
        ra.events += 1
        rb.events += 1
        ra.rule_hits.update(oa.rules)
        rb.rule_hits.update(ob.rules)
        xa = RowResult(row.index, row.seq, ev, row.expect, oa, note=row.note)
        xb = RowResult(row.index, row.seq, ev, row.expect, ob, note=row.note)
        if row.expect is not None:
            for rr, rep in ((xa, ra), (xb, rb)):
                rep.compared += 1
                rr.diffs, rr.masked = diff_outcome(row.expect, rr.outcome, ev, profile)  # type: ignore[arg-type]
                rep.masked_count += len(rr.masked)
                if rr.diffs:
                    rr.status = "diverge"
                    rep.divergence_count += 1
        diffs = diff_outcomes(oa, ob)
        sa, sb = ma.observe(ev.vcpu), mb.observe(ev.vcpu)
        for (name, rule), va, vb in zip(OBSERVED_STATE, sa, sb, strict=False):
            if va is not None and vb is not None and va != vb:
                diffs.append(FieldDiff(f"vcpu{ev.vcpu}.{name}", va, vb))
                state_rule = state_rule or rule
    cr = CompareRow(xa, xb, diffs)
    if diffs:
        cr.rule = _rule_for(xa, xb, state_rule)
    return cr


def _compare_rows(trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile,
                  stop_at_first: bool = False) -> CompareResult:
    """The row-by-row reference comparison (``stop_at_first``: end at the first difference, for the shrinker)."""
    t0 = time.perf_counter()
    host = trace.host()
    ma, mb = policy_a.build(host), policy_b.build(host)
    res = new_compare_result(trace, policy_a, policy_b, profile)
    ra, rb = res.replay_a, res.replay_b
    recent: deque[CompareRow] = deque(maxlen=CONTEXT)
    after_first = 0
    for row in trace.rows(with_notes=False):
        if stop_at_first and res.difference_count:
            break
        ra.rows += 1
        rb.rows += 1
        cr = compare_row(row, (ma, mb), res, profile)
        if cr.diffs:
            res.difference_count += 1
            if res.difference_count == 1:
                res.context = [*recent, cr]
                after_first = CONTEXT
            else:
                cr.consequential = True
                if after_first > 0:
                    res.context.append(cr)
                    after_first -= 1
            if len(res.differences) < MAX_KEPT_DIVERGENCES:
                res.differences.append(cr)
            continue
        if after_first > 0:
            res.context.append(cr)
            after_first -= 1
        else:
            recent.append(cr)
    ra.counters.update(ma.counters)
    rb.counters.update(mb.counters)
    res.seconds = time.perf_counter() - t0
    return res


def render_compare(res: CompareResult) -> str:
    """Text form of a comparison: verdict, first difference with context and rule, counters side by side."""
    a, b = res.policy_a, res.policy_b
    out = [f"{res.trace}  ({a} vs {b})"]
    out.append(f"  {res.events} events, {res.difference_count} differing row(s); "
               f"against the trace's expectations: {a} {res.replay_a.divergence_count} divergence(s), "
               f"{b} {res.replay_b.divergence_count}")
    first = res.first
    if first is not None:
        out.append(f"  first difference at event {first.index} (seq {first.a.seq}): {first.a.describe_event()}")
        if first.rule:
            out.append(f"    {first.rule}: {describe(first.rule)}")
        for d in first.diffs:
            out.append(f"    {d.field}: {a} {fmt(d.field, d.expected)}, {b} {fmt(d.field, d.actual)}")
        out.append("  context:")
        for r in res.context:
            mark = ">" if r is first else ("~" if r.diffs else " ")
            line = f" {mark} {r.index:>6}  {r.a.describe_event()}"
            if r.a.outcome is not None or r.a.snapshot is not None:
                line += f"  | {a}: {r.a.describe_actual()} | {b}: {r.b.describe_actual()}"
            out.append(line)
        if res.difference_count > 1:
            out.append(f"  {res.difference_count - 1} later difference(s), possibly consequential")
    keys = sorted(set(res.replay_a.counters) | set(res.replay_b.counters))
    if keys:
        width = max(len(k) for k in keys)
        out.append(f"  counters{'':<{width - 6}}  {a:>12} {b:>12}")
        for k in keys:
            out.append(f"    {k:<{width}}  {res.replay_a.counters.get(k, 0):>12} {res.replay_b.counters.get(k, 0):>12}")
    return "\n".join(out)
