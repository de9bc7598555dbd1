"""Snapshot rows: a trace's claim about named state, checked against one machine or two."""

from __future__ import annotations

from difftest.trace.io import TraceRow
from difftest.verdict.diff import FieldDiff
from difftest.verdict.results import ReplayResult, RowResult
from reference_model.machine import Machine


def check_snapshot(row: TraceRow, machine: Machine, result: ReplayResult) -> RowResult:
    """A snapshot row against the machine's state, counted in ``result`` (unknown paths: not modelled)."""
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
