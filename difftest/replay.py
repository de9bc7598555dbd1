"""Replay: drive a policy's machine with a trace's events and diff every expectation.

One pass, streaming: the engine keeps the last ``CONTEXT`` rows for context, the first
divergence with ``CONTEXT`` rows after it, and at most ``MAX_KEPT_DIVERGENCES`` later ones
(all are counted).  Divergences after the first are marked *possibly consequential*: once the
model and the trace disagree, later disagreements may only echo the first.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from reference_model.machine import Machine
from reference_model.policies import Policy

from .diff import FieldDiff, diff_outcome
from .profiles import Profile
from .results import CONTEXT, MAX_KEPT_DIVERGENCES, ReplayResult, RowResult, attach_notes
from .trace_io import TraceFile, TraceRow

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
    for row in rows:
        if stop_at_first and result.divergence_count:
            break
        result.rows += 1
        rr = step_row(row, machine, profile, result)
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


def step_row(row: TraceRow, machine: Machine, profile: Profile, result: ReplayResult) -> RowResult:
    """One row on ``machine``: its RowResult, counted in ``result`` (all but rows and divergences)."""
    if row.snapshot is not None:
        return _check_snapshot(row, machine, result)
    ev = row.event
    assert ev is not None
    out = machine.step(ev)
    result.events += 1
    result.rule_hits.update(out.rules)
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
    return rr


def _check_snapshot(row: TraceRow, machine: Machine, result: ReplayResult) -> RowResult:
    snap = row.snapshot
    assert snap is not None
    rr = RowResult(row.index, row.seq, None, None, None, snapshot=snap, note=row.note)
    try:
        actual = machine.snapshot(snap.path)
    except KeyError:
        result.not_modelled += 1
        rr.status = "not-modelled"
        return rr
    result.snapshots += 1
    result.compared += 1
    rr.actual_state = actual
    if actual != snap.value:
        rr.diffs = [FieldDiff(snap.path, snap.value, actual)]
        rr.status = "diverge"
    return rr


def replay_trace(trace: TraceFile, policy: Policy, profile: Profile,
                 observer: RowObserver | None = None) -> ReplayResult:
    """Replay one opened trace under ``policy`` with ``profile`` (``observer``: see :func:`replay_rows`).

    A trace file without an observer goes through :mod:`difftest.fast_replay` (same result, record
    batches on columns) unless ``DIFFTEST_REFERENCE=1`` asks for this module's row-by-row path.
    """
    from .fast_replay import can_use, fast_replay_trace

    t0 = time.perf_counter()
    if can_use(trace, observer):
        result = fast_replay_trace(trace, policy, profile)
    else:
        result = ReplayResult(str(trace.path), trace.name, policy.name, profile.name, meta=dict(trace.meta))
        replay_rows(trace.rows(with_notes=False), policy.build(trace.host()), profile, result, observer)
    shown = [*result.context, *result.divergences]
    attach_notes(shown, trace.notes_for(r.index for r in shown))
    result.seconds = time.perf_counter() - t0
    return result
