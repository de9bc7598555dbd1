"""The reference engine: drive a policy's machine with a trace's events and diff every expectation.

One pass, streaming: the engine keeps the last ``CONTEXT`` rows for context, the first
divergence with ``CONTEXT`` rows after it, and at most ``MAX_KEPT_DIVERGENCES`` later ones
(all are counted).  Divergences after the first are marked *possibly consequential*: once the
model and the trace disagree, later disagreements may only echo the first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from difftest.trace.io import TraceFile, TraceRow
from difftest.verdict.compare import CompareResult, CompareRow, new_compare_result, rule_for
from difftest.verdict.diff import FieldDiff, diff_outcome, diff_outcomes
from difftest.verdict.profiles import Profile
from difftest.verdict.results import CONTEXT, MAX_KEPT_DIVERGENCES, ReplayResult, RowResult
from difftest.verdict.snapshot import check_snapshot, compare_snapshot
from reference_model.machine import OBSERVED_STATE, Machine
from reference_model.policies import Policy

RowObserver = Callable[[TraceRow, RowResult, Machine], None]


def replay_rows(rows: Iterable[TraceRow], machine: Machine, profile: Profile, result: ReplayResult,
                observer: RowObserver | None = None, stop_at_first: bool = False) -> ReplayResult:
    """Run ``rows`` on ``machine`` and fill ``result``.

    ``observer`` (optional) is called after every row with the row, its result and the machine, so a
    report can sample state (e.g. PKRS per vCPU) that the result does not keep.  ``stop_at_first``
    ends the replay at the first divergence (the shrinker needs nothing after it).
    """
    recent: deque[RowResult] = deque(maxlen=CONTEXT)
    after_first = -1  # rows still to append to the context after the first divergence
    rule_hits = result.rule_hits
    for row in rows:
        if stop_at_first and result.divergence_count:
            break
        result.rows += 1
        if row.snapshot is not None:
            rr = check_snapshot(row, machine, result)
        else:
            ev = row.event
            assert ev is not None
            out = machine.step(ev)
            result.events += 1
            rule_hits.update(out.rules)
            rr = RowResult(row.index, row.seq, ev, row.expect, out, note=row.note)
            if row.expect is None:
                rr.status = "uncompared"
            else:
                result.compared += 1
                rr.diffs, rr.masked = diff_outcome(row.expect, out, ev, profile)
                if rr.masked:
                    result.masked_count += len(rr.masked)
                    result.masked_by.update(d.mask or "" for d in rr.masked)
                    rr.status = "masked"
                if rr.diffs:
                    rr.status = "diverge"
        if observer is not None:
            observer(row, rr, machine)
        if rr.status == "diverge":
            result.divergence_count += 1
            if result.divergence_count == 1:
                result.context = [*recent, rr]
                after_first = CONTEXT
            else:
                rr.consequential = True
                if len(result.divergences) < MAX_KEPT_DIVERGENCES:
                    result.divergences.append(rr)
                if after_first > 0:
                    result.context.append(rr)
                    after_first -= 1
                continue
            result.divergences.append(rr)
            continue
        if after_first > 0:
            result.context.append(rr)
            after_first -= 1
        else:
            recent.append(rr)
    result.counters.update(machine.counters)
    return result


def compare_rows(trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile,
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
            cr.rule = rule_for(xa, xb, state_rule)
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


class ReferenceEngine:
    """Row by row through the model: the definition of a replay's result, and the fast engine's oracle."""

    name = "reference"

    def accepts(self, trace: TraceFile, observer: RowObserver | None = None) -> bool:
        return True

    def replay(self, trace: TraceFile, policy: Policy, profile: Profile,
               observer: RowObserver | None = None) -> ReplayResult:
        result = ReplayResult(str(trace.path), trace.name, policy.name, profile.name, meta=dict(trace.meta))
        return replay_rows(trace.rows(with_notes=False), policy.build(trace.host()), profile, result, observer)

    def compare(self, trace: TraceFile, policy_a: Policy, policy_b: Policy, profile: Profile) -> CompareResult:
        return compare_rows(trace, policy_a, policy_b, profile)
